-- Memberships: nobody raises their own role, admins manage members but not
-- owners, an organization keeps at least one owner, anyone may leave.
begin;
select plan(37);

select tests.seed();

create function pg_temp.role_in(org text, who text) returns text
language sql stable
as $$
  select m.role::text from public.memberships m
   where m.org_id = tests.id(org) and m.user_id = tests.id(who)
$$;

-- nobody raises their own role ---------------------------------------------------------

select tests.act('viewer_a');
select is(tests.affected($$update public.memberships set role = 'admin'
                            where org_id = tests.id('org_a') and user_id = tests.id('viewer_a')$$),
          0::bigint, 'a viewer''s attempt to make themselves admin affects no row');
select tests.act('manager_a');
select is(tests.affected($$update public.memberships set role = 'admin'
                            where org_id = tests.id('org_a') and user_id = tests.id('manager_a')$$),
          0::bigint, 'a manager''s attempt to make themselves admin affects no row');
select tests.act('dual');
select is(tests.affected($$update public.memberships set role = 'owner'
                            where org_id = tests.id('org_b') and user_id = tests.id('dual')$$),
          0::bigint, 'a manager of B''s attempt to make themselves owner affects no row');
select tests.act('admin_a');
select throws_ok(
  $$update public.memberships set role = 'owner' where org_id = tests.id('org_a') and user_id = tests.id('admin_a')$$,
  '42501', 'you cannot raise your own role',
  'an admin cannot make themselves owner');
select tests.act('superuser');
select is(pg_temp.role_in('org_a', 'viewer_a'), 'viewer', 'the viewer is still a viewer');
select is(pg_temp.role_in('org_a', 'manager_a'), 'manager', 'the manager is still a manager');
select is(pg_temp.role_in('org_b', 'dual'), 'manager', 'dual is still a manager of B');
select is(pg_temp.role_in('org_a', 'admin_a'), 'admin', 'the admin is still an admin');

-- admins manage members, not owners ---------------------------------------------------------

select tests.act('admin_a');
select is(tests.affected($$update public.memberships set role = 'admin'
                            where org_id = tests.id('org_a') and user_id = tests.id('extra_a')$$),
          1::bigint, 'an admin promotes a viewer to admin');
select is(tests.affected($$update public.memberships set role = 'viewer'
                            where org_id = tests.id('org_a') and user_id = tests.id('extra_a')$$),
          1::bigint, 'an admin demotes an admin to viewer');
select throws_ok(
  $$update public.memberships set role = 'owner' where org_id = tests.id('org_a') and user_id = tests.id('extra_a')$$,
  '42501', 'new row violates row-level security policy for table "memberships"',
  'an admin cannot make a member owner');
select throws_ok(
  $$insert into public.memberships (org_id, user_id, role) values (tests.id('org_a'), tests.id('outsider'), 'owner')$$,
  '42501', 'new row violates row-level security policy for table "memberships"',
  'an admin cannot add an owner');
select is(tests.affected($$update public.memberships set role = 'viewer'
                            where org_id = tests.id('org_a') and user_id = tests.id('owner_a')$$),
          0::bigint, 'an admin''s attempt to demote the owner affects no row');
select is(tests.affected($$delete from public.memberships
                            where org_id = tests.id('org_a') and user_id = tests.id('owner_a')$$),
          0::bigint, 'an admin''s attempt to remove the owner affects no row');
select throws_ok(
  $$update public.memberships set user_id = tests.id('outsider') where org_id = tests.id('org_a') and user_id = tests.id('extra_a')$$,
  '42501', 'permission denied for table memberships',
  'an admin cannot hand a membership to someone else (user_id)');
select is(tests.affected($$update public.memberships set role = 'viewer'
                            where org_id = tests.id('org_b') and user_id = tests.id('dual')$$),
          0::bigint, 'an admin of A changing a membership of B affects no row');
select throws_ok(
  $$insert into public.memberships (org_id, user_id, role) values (tests.id('org_b'), tests.id('outsider'), 'viewer')$$,
  '42501', 'new row violates row-level security policy for table "memberships"',
  'an admin of A cannot add members to B');
select tests.act('dual');
select throws_ok(
  $$insert into public.memberships (org_id, user_id, role) values (tests.id('org_b'), tests.id('outsider'), 'viewer')$$,
  '42501', 'new row violates row-level security policy for table "memberships"',
  'a manager cannot add members');
select tests.act('superuser');
select is(pg_temp.role_in('org_a', 'owner_a'), 'owner', 'the owner of A is still owner');
select is(pg_temp.role_in('org_b', 'dual'), 'manager', 'dual is still a manager of B');
select is(pg_temp.role_in('org_a', 'extra_a'), 'viewer', 'extra_a is a viewer again');
select is(pg_temp.role_in('org_b', 'outsider'), null, 'outsider was not added to B');

-- the last owner stays --------------------------------------------------------------------

select tests.act('owner_a');
select throws_ok(
  $$update public.memberships set role = 'admin' where org_id = tests.id('org_a') and user_id = tests.id('owner_a')$$,
  '23514', 'an organization must keep at least one owner',
  'the last owner cannot demote themselves');
select throws_ok(
  $$delete from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('owner_a')$$,
  '23514', 'an organization must keep at least one owner',
  'the last owner cannot leave');
select tests.act('service_role');
select throws_ok(
  $$delete from public.memberships where org_id = tests.id('org_b') and user_id = tests.id('owner_b')$$,
  '23514', 'an organization must keep at least one owner',
  'not even service_role removes the last owner');

select tests.act('owner_a');
select is(tests.affected($$update public.memberships set role = 'owner'
                            where org_id = tests.id('org_a') and user_id = tests.id('admin_a')$$),
          1::bigint, 'an owner makes an admin owner');
select is(tests.affected($$delete from public.memberships
                            where org_id = tests.id('org_a') and user_id = tests.id('owner_a')$$),
          1::bigint, 'with another owner in place, the first owner leaves');
select tests.act('admin_a');
select throws_ok(
  $$update public.memberships set role = 'viewer' where org_id = tests.id('org_a') and user_id = tests.id('admin_a')$$,
  '23514', 'an organization must keep at least one owner',
  'the new sole owner cannot demote themselves');
select tests.act('superuser');
select results_eq(
  $$select user_id from public.memberships where org_id = tests.id('org_a') and role = 'owner'$$,
  $$values (tests.id('admin_a'))$$,
  'org A has exactly one owner: the former admin');

-- anyone may leave ------------------------------------------------------------------------

select tests.act('viewer_a');
select is(tests.affected($$delete from public.memberships
                            where org_id = tests.id('org_a') and user_id = tests.id('viewer_a')$$),
          1::bigint, 'a viewer leaves org A');
select is(tests.affected($$delete from public.memberships
                            where org_id = tests.id('org_a') and user_id = tests.id('extra_a')$$),
          0::bigint, 'a viewer cannot remove another member');
select tests.act('superuser');
select is(tests.visible_as('viewer_a', 'public.agents'), '', 'having left, they no longer read its agents');
select is(tests.visible_as('viewer_a', 'public.memberships'), '', 'nor its memberships');
select is(pg_temp.role_in('org_a', 'extra_a'), 'viewer', 'the other member is still there');

select tests.act('dual');
select is(tests.affected($$delete from public.memberships
                            where org_id = tests.id('org_b') and user_id = tests.id('dual')$$),
          1::bigint, 'a member of two organizations leaves one (B)');
select tests.act('superuser');
select is(tests.visible_as('dual', 'public.agents'), 'org_a', 'and still reads the other (A)');
select is(tests.visible_as('dual', 'public.profiles', 'id'), 'admin_a,dual,extra_a,manager_a',
          'and sees only the profiles of the members they still share an organization with');

select * from finish();
rollback;
