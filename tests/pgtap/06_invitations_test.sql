-- Invitations: public.invite_member issues a token (admins; owners for the
-- owner role) of which only the hash is stored; public.accept_invitation
-- turns a valid token into a membership for the invited address and refuses
-- every other.
begin;
select plan(46);

select tests.seed();
select tests.create_user('new_member', 'New.Member@Example.test');
select tests.create_user('late', 'late@example.test');
select tests.create_user('revoked', 'revoked@example.test');
select tests.create_user('twice', 'twice@example.test');

-- issuing ------------------------------------------------------------------------------

select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), ' New.Member@Example.TEST ', 'manager') as manager_token \gset
select matches(:'manager_token'::text, '^[0-9a-f]{64}$', 'invite_member returns a 256-bit token, in hex');
select tests.act('superuser');
select row_eq(
  format($$select email, role::text, invited_by, token_hash = sha256(convert_to(%L, 'UTF8')),
                  expires_at = now() + interval '7 days'
             from public.invitations where org_id = tests.id('org_a') and email = 'new.member@example.test'$$,
         :'manager_token'),
  row('new.member@example.test'::text, 'manager'::text, tests.id('admin_a'), true, true),
  'the invitation stores the normalized address, the role, the inviter, a week''s validity and the token''s sha256');
select is_empty(
  format($$select 1 from public.invitations i where to_jsonb(i)::text like '%%' || %L || '%%'$$, :'manager_token'),
  'no column of invitations holds the token');
select is_empty(
  format($$select 1 from public.audit_log a where to_jsonb(a)::text like '%%' || %L || '%%'$$, :'manager_token'),
  'nor does the audit log');

select tests.act('manager_a');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'x@example.test')$$,
  '42501', 'only admins and owners can invite members', 'a manager cannot invite');
select tests.act('viewer_a');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'x@example.test')$$,
  '42501', 'only admins and owners can invite members', 'a viewer cannot invite');
select tests.act('owner_b');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'x@example.test')$$,
  '42501', 'only admins and owners can invite members', 'the owner of B cannot invite to A');
select tests.act('outsider');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'x@example.test')$$,
  '42501', 'only admins and owners can invite members', 'a user in no organization cannot invite');
select tests.act('admin_a');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'x@example.test', 'owner')$$,
  '42501', 'only owners can invite owners', 'an admin cannot invite an owner');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'not-an-address', 'viewer')$$,
  '22023', 'not an email address: not-an-address', 'an invitation needs an email address');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'x@example.test', 'viewer', interval '31 days')$$,
  '22023', 'an invitation is valid for up to 30 days', 'an invitation is valid for at most 30 days');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'x@example.test', 'viewer', interval '-1 day')$$,
  '22023', 'an invitation is valid for up to 30 days', 'an invitation cannot be valid for a negative time');
select throws_ok($$insert into public.invitations (org_id, email, token_hash, expires_at)
                   values (tests.id('org_a'), 'x@example.test', sha256('known'), now() + interval '1 day')$$,
  '42501', 'permission denied for table invitations', 'an admin cannot insert an invitation with a hash of their choosing');
select tests.act('owner_a');
select public.invite_member(tests.id('org_a'), 'outsider@example.test', 'owner') as owner_token \gset
select matches(:'owner_token'::text, '^[0-9a-f]{64}$', 'an owner invites an owner');
select tests.act('anon');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'x@example.test')$$,
  '42501', 'permission denied for function invite_member', 'anon cannot call invite_member');
select tests.act('daemon');
select throws_ok($$select public.invite_member(tests.id('org_a'), 'x@example.test')$$,
  '42501', 'permission denied for function invite_member', 'the daemon cannot call invite_member');
select tests.act('superuser');
select is((select count(*) from public.invitations where email = 'x@example.test'), 0::bigint,
          'none of the refused invitations was stored');

-- accepting -------------------------------------------------------------------------

select tests.act('new_member');
select is(public.accept_invitation(:'manager_token'), tests.id('org_a'),
          'the invited user accepts (their address differs only in case) and learns the organization');
select is(tests.visible_as('new_member', 'public.agents'), 'org_a', 'the new member reads the organization''s agents');
select tests.act('superuser');
select is((select role::text from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('new_member')),
          'manager', 'the new member has the invited role');
select row_eq(
  format($$select accepted_by, accepted_at is not null from public.invitations
            where token_hash = sha256(convert_to(%L, 'UTF8'))$$, :'manager_token'),
  row(tests.id('new_member'), true),
  'the invitation is marked accepted, by the new member');
select tests.act('new_member');
select throws_ok(format('select public.accept_invitation(%L)', :'manager_token'),
  '22023', 'invitation already used', 'a used token cannot be used again');
select tests.act('outsider');
select throws_ok(format('select public.accept_invitation(%L)', :'manager_token'),
  '22023', 'invitation already used', 'nor by anyone else');

select tests.act('outsider');
select is(public.accept_invitation(:'owner_token'), tests.id('org_a'), 'an invited owner accepts');
select tests.act('superuser');
select is((select role::text from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('outsider')),
          'owner', 'and is an owner');

-- wrong address
select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'someone.else@example.test', 'admin') as other_token \gset
select tests.act('extra_b');
select throws_ok(format('select public.accept_invitation(%L)', :'other_token'),
  '42501', 'invitation is for a different email address', 'a token for another address is refused');
select tests.act('superuser');
select is((select count(*) from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('extra_b')),
          0::bigint, 'and makes no membership');
select is((select accepted_at from public.invitations where token_hash = sha256(convert_to(:'other_token', 'UTF8'))),
          null, 'and stays open for its addressee');

-- expired
select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'late@example.test') as late_token \gset
select tests.act('superuser');
update public.invitations set expires_at = now() - interval '1 second'
 where token_hash = sha256(convert_to(:'late_token', 'UTF8'));
select tests.act('late');
select throws_ok(format('select public.accept_invitation(%L)', :'late_token'),
  '22023', 'invitation expired', 'an expired token is refused');

-- revoked by an admin
select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'revoked@example.test') as revoked_token \gset
select is(tests.affected($$update public.invitations set revoked_at = now() where email = 'revoked@example.test'$$),
          1::bigint, 'an admin revokes an invitation');
select tests.act('revoked');
select throws_ok(format('select public.accept_invitation(%L)', :'revoked_token'),
  '22023', 'invitation revoked', 'a revoked token is refused');

-- replaced by a newer invitation to the same address
select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'twice@example.test', 'viewer') as first_token \gset
select public.invite_member(tests.id('org_a'), 'twice@example.test', 'manager') as second_token \gset
select tests.act('twice');
select throws_ok(format('select public.accept_invitation(%L)', :'first_token'),
  '22023', 'invitation revoked', 'inviting the same address again revokes the earlier token');
select is(public.accept_invitation(:'second_token'), tests.id('org_a'), 'the newer token works');
select tests.act('superuser');
select is((select role::text from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('twice')),
          'manager', 'with the newer invitation''s role');
select is((select count(*) from public.memberships where user_id in (tests.id('late'), tests.id('revoked'))),
          0::bigint, 'refused tokens made no membership');

-- unknown
select tests.act('outsider');
select throws_ok($$select public.accept_invitation('0000000000000000000000000000000000000000000000000000000000000000')$$,
  'P0002', 'invitation not found', 'an unknown token is refused');
select throws_ok($$select public.accept_invitation(null)$$,
  'P0002', 'invitation not found', 'a null token is refused');
select throws_ok(format('select public.accept_invitation(%L)', upper(:'other_token')),
  'P0002', 'invitation not found', 'tokens are matched exactly');
select tests.act('anon');
select throws_ok(format('select public.accept_invitation(%L)', :'other_token'),
  '42501', 'permission denied for function accept_invitation', 'anon cannot call accept_invitation');

-- existing members keep the higher role
select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'viewer_a@example.test', 'manager') as promote_token \gset
select public.invite_member(tests.id('org_a'), 'manager_a@example.test', 'viewer') as demote_token \gset
select tests.act('viewer_a');
select lives_ok(format('select public.accept_invitation(%L)', :'promote_token'),
  'a viewer accepts an invitation to become manager');
select tests.act('manager_a');
select lives_ok(format('select public.accept_invitation(%L)', :'demote_token'),
  'a manager accepts an invitation as viewer');
select tests.act('superuser');
select is((select role::text from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('viewer_a')),
          'manager', 'the viewer is now a manager, as the admin invited them');
select is((select role::text from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('manager_a')),
          'manager', 'the manager stays a manager');

-- the seeded invitation's token
select tests.create_user('invitee_b', 'invitee-b@example.test');
select tests.act('invitee_b');
select is(public.accept_invitation('token-b'), tests.id('org_b'), 'an invitee joins B with the token they were sent');
select tests.act('superuser');
select is(tests.visible_as('invitee_b', 'public.organizations', 'id'), 'org_b', 'and reads B (only)');

-- an invitation to an organization soft-deleted since
select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'late@example.test') as gone_token \gset
select tests.act('superuser');
update public.organizations set deleted_at = now() where id = tests.id('org_a');
select tests.act('late');
select throws_ok(format('select public.accept_invitation(%L)', :'gone_token'),
  '22023', 'the organization no longer exists',
  'an invitation to a soft-deleted organization is refused');

select * from finish();
rollback;
