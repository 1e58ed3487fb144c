-- Deleting a user through Supabase Auth (a delete from auth.users, whose
-- cascade removes their memberships) when they are the last owner of an
-- organization (issue 17, item 13). Decided: refused, with a message that
-- says what to do, for a live organization; transfer_ownership hands the
-- organization over first. A soft-deleted organization lets its last
-- owner's account go.
begin;
select plan(20);

select tests.seed();

-- refused for a live organization's last owner ------------------------------------------------

select throws_ok(
  format('delete from auth.users where id = %L', tests.id('owner_b')),
  '23514',
  format('user %s is the last owner of organization org-b (%s) and cannot be deleted', tests.id('owner_b'), tests.id('org_b')),
  'deleting the last owner of a live organization is refused, naming the organization');
select is((select count(*) from auth.users where id = tests.id('owner_b')), 1::bigint, 'the user is still there');
select is((select role::text from public.memberships where org_id = tests.id('org_b') and user_id = tests.id('owner_b')),
          'owner', 'and still owns B');

-- what to do instead: transfer ownership ----------------------------------------------------------

select is(tests.try_as('anon', $$select public.transfer_ownership(tests.id('org_b'), tests.id('dual'))$$),
          'denied', 'anon cannot transfer ownership');
select is(tests.try_as('dual', $$select public.transfer_ownership(tests.id('org_b'), tests.id('dual'))$$),
          'error 42501: only an owner can transfer ownership', 'a manager cannot take ownership');
select is(tests.try_as('owner_a', $$select public.transfer_ownership(tests.id('org_b'), tests.id('owner_a'))$$),
          'error 42501: only an owner can transfer ownership', 'the owner of A cannot take B');
select is(tests.try_as('owner_b', $$select public.transfer_ownership(tests.id('org_b'), tests.id('outsider'))$$),
          'error 22023: the new owner must be a member of the organization',
          'ownership goes only to a member');
select tests.act('owner_b');
select lives_ok($$select public.transfer_ownership(tests.id('org_b'), tests.id('dual'))$$,
  'the owner of B hands B to a member');
select tests.act('superuser');
select results_eq(
  $$select user_id, role::text from public.memberships
     where org_id = tests.id('org_b') and user_id in (tests.id('owner_b'), tests.id('dual')) order by role desc$$,
  $$values (tests.id('dual'), 'owner'), (tests.id('owner_b'), 'admin')$$,
  'the member is now owner, the former owner an admin');
select lives_ok(format('delete from auth.users where id = %L', tests.id('owner_b')),
  'now the former owner''s account can be deleted');
select results_eq(
  $$select user_id from public.memberships where org_id = tests.id('org_b') and role = 'owner'$$,
  $$values (tests.id('dual'))$$,
  'and B keeps its new owner');

-- other members go with their account as before ------------------------------------------------------

select tests.create_user('leaver', 'leaver@example.test');
select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'leaver@example.test') as leaver_token \gset
select public.invite_member(tests.id('org_a'), 'pending@example.test', 'admin') as pending_token \gset
select tests.act('leaver');
select public.accept_invitation(:'leaver_token') as leaver_org \gset
select tests.act('superuser');
select lives_ok(format('delete from auth.users where id in (%L, %L)', tests.id('leaver'), tests.id('admin_a')),
  'deleting a user who invited someone and one who accepted an invitation works');
select is((select row(invited_by, accepted_by, accepted_at is not null)::text from public.invitations
            where token_hash = sha256(convert_to(:'leaver_token', 'UTF8'))),
          '(,,t)', 'their invitation stays accepted, without the deleted users'' ids');
select isnt((select revoked_at from public.invitations where token_hash = sha256(convert_to(:'pending_token', 'UTF8'))),
            null, 'and the open invitation the deleted admin issued is revoked');
select lives_ok(format('delete from auth.users where id = %L', tests.id('viewer_a')),
  'deleting a member who is not the last owner works');
select is((select count(*) from public.memberships where user_id = tests.id('viewer_a')), 0::bigint,
          'and removes their memberships');

-- a soft-deleted organization lets its last owner go ------------------------------------------------------

select tests.create_user('solo');
select tests.act('solo');
select (public.create_organization('solo-org', 'Solo')).id as solo_org \gset
update public.organizations set deleted_at = now() where id = :'solo_org';
select tests.act('superuser');
select lives_ok(format('delete from auth.users where id = %L', tests.id('solo')),
  'the last owner of a soft-deleted organization can delete their account');
select isnt((select deleted_at from public.organizations where id = :'solo_org'), null,
            'the organization stays, soft-deleted, for the platform to purge or restore');
select is((select count(*) from public.memberships where org_id = :'solo_org'), 0::bigint,
          'without members');

-- leaving is still refused for a last owner, soft-deleted organization or not
select tests.act('owner_a');
select throws_ok(
  $$delete from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('owner_a')$$,
  '23514', 'an organization must keep at least one owner',
  'the last owner still cannot leave a live organization');

select * from finish();
rollback;
