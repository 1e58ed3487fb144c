-- Profiles: everyone gets one; you edit only yours; last_active_org_id is
-- always an organization you belong to. (Who reads which: 01_read_test.)
begin;
select plan(17);

select tests.seed();

select tests.create_user('new_user');
select row_eq(
  $$select full_name, last_active_org_id from public.profiles where id = tests.id('new_user')$$,
  row('New User'::text, null::uuid),
  'a new user gets a profile, named from their sign-up metadata');

-- your own profile only ---------------------------------------------------------------

select tests.act('viewer_a');
select is(tests.affected($$update public.profiles set full_name = 'Vera Viewer' where id = tests.id('viewer_a')$$),
          1::bigint, 'a user renames themselves');
select is(tests.affected($$update public.profiles set full_name = 'Mallory' where id = tests.id('manager_a')$$),
          0::bigint, 'a user''s rename of a co-member affects no row');
select throws_ok(
  $$update public.profiles set id = tests.id('new_user') where id = tests.id('viewer_a')$$,
  '42501', 'new row violates row-level security policy for table "profiles"',
  'a user cannot turn their profile into someone else''s');
select throws_ok(
  $$insert into public.profiles (id, full_name) values (tests.id('new_user'), 'Not mine')$$,
  '42501', 'new row violates row-level security policy for table "profiles"',
  'a user cannot create a profile for someone else');
select tests.act('superuser');
select is((select full_name from public.profiles where id = tests.id('manager_a')), 'Manager A',
          'the co-member''s profile is unchanged');
select is((select full_name from public.profiles where id = tests.id('new_user')), 'New User',
          'the other user''s profile is unchanged');

-- last_active_org_id: only an organization you belong to -----------------------------------

select tests.act('viewer_a');
select is(tests.affected($$update public.profiles set last_active_org_id = tests.id('org_a') where id = tests.id('viewer_a')$$),
          1::bigint, 'a member of A switches to A');
select throws_ok(
  $$update public.profiles set last_active_org_id = tests.id('org_b') where id = tests.id('viewer_a')$$,
  '42501', 'new row violates row-level security policy for table "profiles"',
  'a member of A cannot switch to B');
select tests.act('dual');
select is(tests.affected($$update public.profiles set last_active_org_id = tests.id('org_b') where id = tests.id('dual')$$),
          1::bigint, 'a member of A and B switches to B');
select tests.act('outsider');
select throws_ok(
  $$update public.profiles set last_active_org_id = tests.id('org_a') where id = tests.id('outsider')$$,
  '42501', 'new row violates row-level security policy for table "profiles"',
  'a user in no organization cannot switch to one');
select tests.act('superuser');
select is((select last_active_org_id from public.profiles where id = tests.id('viewer_a')), tests.id('org_a'),
          'the member of A stayed on A');

-- a user without a profile (created before the trigger, say) creates their own
delete from public.profiles where id = tests.id('viewer_a');
select tests.act('viewer_a');
select throws_ok(
  $$insert into public.profiles (id, last_active_org_id) values (tests.id('viewer_a'), tests.id('org_b'))$$,
  '42501', 'new row violates row-level security policy for table "profiles"',
  'a user cannot create their profile pointing at an organization they are not in');
select throws_ok(
  $$insert into public.profiles (id, last_active_org_id) values (tests.id('viewer_a'), tests.id('org_b'))
    on conflict (id) do update set last_active_org_id = excluded.last_active_org_id$$,
  '42501', 'permission denied for table profiles',
  'nor by upsert (which would read last_active_org_id, a column the API cannot read)');
select lives_ok(
  $$insert into public.profiles (id, full_name, last_active_org_id) values (tests.id('viewer_a'), 'Vera', tests.id('org_a'))$$,
  'a user creates their own profile pointing at their organization');
select tests.act('superuser');
select row_eq(
  $$select full_name, last_active_org_id from public.profiles where id = tests.id('viewer_a')$$,
  row('Vera'::text, tests.id('org_a')),
  'the profile holds what the user wrote');

-- profiles stay (the API deletes none)
select is(tests.try_as('viewer_a', $$delete from public.profiles where id = tests.id('viewer_a')$$),
          '0', 'a user cannot delete their profile');

select * from finish();
rollback;
