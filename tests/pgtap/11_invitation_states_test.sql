-- Invitations only move forward (open → accepted, open → revoked) and
-- nobody raises their own role by any path (issue 17, item 1). Every writer
-- is tried: admins through the API, service_role, and postgres itself.
begin;
select plan(37);

select tests.seed();

create function pg_temp.role_in(org text, who text) returns text
language sql stable
as $$
  select m.role::text from public.memberships m
   where m.org_id = tests.id(org) and m.user_id = tests.id(who)
$$;

create function pg_temp.invitation(token text) returns uuid
language sql stable
as $$ select id from public.invitations where token_hash = sha256(convert_to(token, 'UTF8')) $$;

-- the review's attack: an admin un-revokes an owner invitation and accepts it -----------

select tests.act('owner_a');
select public.invite_member(tests.id('org_a'), 'admin_a@example.test', 'owner') as owner_token \gset
update public.invitations set revoked_at = now() where id = pg_temp.invitation(:'owner_token');
select tests.act('superuser');
select isnt((select revoked_at from public.invitations where id = pg_temp.invitation(:'owner_token')), null,
            'the owner revoked the owner invitation to the admin');

select tests.act('admin_a');
select throws_ok(
  format($$update public.invitations set revoked_at = null where id = %L$$, pg_temp.invitation(:'owner_token')),
  '42501', 'revoking an invitation is final',
  'the admin cannot un-revoke it');
select throws_ok(
  format($$update public.invitations set revoked_at = now() + interval '1 day' where id = %L$$, pg_temp.invitation(:'owner_token')),
  '42501', 'revoking an invitation is final',
  'nor move its revocation');
select throws_ok(format('select public.accept_invitation(%L)', :'owner_token'),
  '22023', 'invitation revoked', 'so accepting it is refused');
select tests.act('superuser');
select is(pg_temp.role_in('org_a', 'admin_a'), 'admin', 'the admin is still an admin');

select is(tests.try_as(w.who, format($$update public.invitations set revoked_at = null where id = %L$$,
                                     pg_temp.invitation(:'owner_token'))),
          w.expected, format('%s cannot un-revoke it either (%s)', w.who, w.expected))
  from (values ('anon', 'denied'), ('viewer_a', '0'), ('manager_a', '0'), ('owner_b', '0'), ('dual', '0'))
       w(who, expected);
select is(tests.try_as('service_role',
            format($$update public.invitations set revoked_at = null where id = %L$$, pg_temp.invitation(:'owner_token'))),
          'error 42501: revoking an invitation is final', 'service_role cannot un-revoke an invitation');
select is(tests.try_as('superuser',
            format($$update public.invitations set revoked_at = null where id = %L$$, pg_temp.invitation(:'owner_token'))),
          'error 42501: revoking an invitation is final', 'nor can postgres');

-- revoking ------------------------------------------------------------------------------------

select tests.act('admin_a');
select is(tests.affected($$update public.invitations set revoked_at = '2100-01-01' where id = tests.id('invitation_a')$$),
          1::bigint, 'an admin revokes an open invitation');
select tests.act('superuser');
select is((select revoked_at from public.invitations where id = tests.id('invitation_a')), now(),
          'its revocation time is when it happened, not the time the admin wrote');

-- accepted invitations are final --------------------------------------------------------------

select tests.create_user('joiner', 'joiner@example.test');
select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'joiner@example.test', 'manager') as joiner_token \gset
select tests.act('joiner');
select is(public.accept_invitation(:'joiner_token'), tests.id('org_a'), 'an invited user joins');
select tests.act('superuser');
select is(tests.try_as('service_role',
            format($$update public.invitations set accepted_at = null, accepted_by = null where id = %L$$,
                   pg_temp.invitation(:'joiner_token'))),
          'error 42501: an accepted invitation is final', 'nobody makes an accepted invitation open again');
select is(tests.try_as('service_role',
            format($$update public.invitations set accepted_by = tests.id('outsider') where id = %L$$,
                   pg_temp.invitation(:'joiner_token'))),
          'error 42501: an accepted invitation is final', 'nor hands it to someone else');
select is(tests.try_as('admin_a',
            format($$update public.invitations set revoked_at = now() where id = %L$$, pg_temp.invitation(:'joiner_token'))),
          'error 42501: an accepted invitation cannot be revoked; remove the member instead',
          'revoking an accepted invitation is refused (it would change nothing)');

-- expired invitations stay expired --------------------------------------------------------------

select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'late@example.test', 'admin') as late_token \gset
select tests.act('superuser');
update public.invitations set expires_at = now() - interval '1 second' where id = pg_temp.invitation(:'late_token');
select is(tests.try_as('admin_a',
            format($$update public.invitations set expires_at = now() + interval '1 day' where id = %L$$,
                   pg_temp.invitation(:'late_token'))),
          'denied', 'an admin cannot extend an invitation (no privilege on expires_at)');
select is(tests.try_as('service_role',
            format($$update public.invitations set expires_at = now() + interval '1 day' where id = %L$$,
                   pg_temp.invitation(:'late_token'))),
          'error 42501: an invitation''s expiry cannot be extended; invite again',
          'nor can service_role');
select is(tests.try_as('service_role',
            format($$update public.invitations set accepted_at = now(), accepted_by = tests.id('outsider') where id = %L$$,
                   pg_temp.invitation(:'late_token'))),
          'error 42501: only an open invitation can be accepted',
          'an expired invitation cannot be marked accepted');

-- an invitation's identity never changes -------------------------------------------------------------

select is(tests.try_as('service_role',
            $$update public.invitations set role = 'owner' where id = tests.id('invitation_b')$$),
          'error 42501: an invitation cannot be changed, only revoked or deleted',
          'service_role cannot change an open invitation''s role');
select is(tests.try_as('service_role',
            $$update public.invitations set email = 'me@example.test' where id = tests.id('invitation_b')$$),
          'error 42501: an invitation cannot be changed, only revoked or deleted',
          'nor its address');
select is(tests.try_as('service_role',
            $$update public.invitations set token_hash = sha256('known') where id = tests.id('invitation_b')$$),
          'error 42501: an invitation cannot be changed, only revoked or deleted',
          'nor its token');
select is(tests.try_as('admin_a',
            $$update public.invitations set email = 'me@example.test' where id = tests.id('invitation_a')$$),
          'denied', 'an admin cannot change an invitation''s address');

-- nobody raises their own role -------------------------------------------------------------------

-- An open invitation is not a licence: only accepting it raises a role. A
-- security definer function acting for the user (postgres, with the user's
-- JWT), as any future RPC would, cannot promote them merely because an
-- invitation is waiting.
select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'viewer_a@example.test', 'admin') as waiting_token \gset
select tests.act('superuser');
select set_config('request.jwt.claims', jsonb_build_object('sub', tests.id('viewer_a'), 'role', 'authenticated')::text, true);
select throws_ok(
  $$update public.memberships set role = 'admin' where org_id = tests.id('org_a') and user_id = tests.id('viewer_a')$$,
  '42501', 'you cannot raise your own role',
  'a waiting invitation does not let its invitee raise their own role outside accept_invitation');
select set_config('request.jwt.claims', '', true);
select is(pg_temp.role_in('org_a', 'viewer_a'), 'viewer', 'the viewer is still a viewer');
select tests.act('viewer_a');
select lives_ok(format('select public.accept_invitation(%L)', :'waiting_token'),
  'accepting the invitation is the way up');
select tests.act('superuser');
select is(pg_temp.role_in('org_a', 'viewer_a'), 'admin', 'and makes the viewer an admin');

select is(tests.try_as('admin_a',
            $$insert into public.memberships (org_id, user_id, role) values (tests.id('org_a'), tests.id('admin_a'), 'owner')
              on conflict (org_id, user_id) do update set role = excluded.role$$),
          'rls', 'an admin cannot make themselves owner by upsert');
select is(tests.try_as('admin_a', $$select public.transfer_ownership(tests.id('org_a'), tests.id('admin_a'))$$),
          'error 42501: only an owner can transfer ownership', 'nor by transfer_ownership');

-- nor by an invitation that outlives its inviter's role: to oneself, or to
-- an accomplice, issued while admin and accepted after a demotion
select tests.act('admin_a');
select throws_ok($$select public.invite_member(tests.id('org_a'), ' Admin_A@Example.test', 'admin')$$,
  '42501', 'you cannot invite yourself', 'an admin cannot invite themself');
select public.invite_member(tests.id('org_a'), 'accomplice@example.test', 'admin') as accomplice_token \gset
select tests.act('superuser');
-- a self-invitation issued before this rule existed
insert into public.invitations (org_id, email, role, token_hash, invited_by, expires_at)
values (tests.id('org_a'), 'admin_a@example.test', 'admin', sha256(convert_to('self-token', 'UTF8')),
        tests.id('admin_a'), now() + interval '7 days')
on conflict do nothing; -- (where the self-invitation above went through)
select tests.act('owner_a');
update public.memberships set role = 'viewer' where org_id = tests.id('org_a') and user_id = tests.id('admin_a');
select tests.act('admin_a');
select throws_ok($$select public.accept_invitation('self-token')$$,
  '42501', 'you cannot accept an invitation you issued',
  'the demoted admin cannot climb back through an invitation they issued themself');
select tests.act('superuser');
select is(pg_temp.role_in('org_a', 'admin_a'), 'viewer', 'the demoted admin stays a viewer');
select tests.create_user('accomplice', 'accomplice@example.test');
select tests.act('accomplice');
select throws_ok(format('select public.accept_invitation(%L)', :'accomplice_token'),
  '22023', 'invitation no longer valid: its inviter can no longer invite to this role',
  'an admin invitation from an inviter who is no longer admin is refused');
select tests.act('superuser');
select is(pg_temp.role_in('org_a', 'accomplice'), null, 'and makes no membership');
select tests.act('owner_a');
select public.invite_member(tests.id('org_a'), 'accomplice@example.test', 'viewer') as fresh_token \gset
select tests.act('accomplice');
select is(public.accept_invitation(:'fresh_token'), tests.id('org_a'), 'an invitation from a current owner works');

select * from finish();
rollback;
