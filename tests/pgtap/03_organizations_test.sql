-- Organizations: founding, owners' edits, billing columns, soft delete.
begin;
select plan(36);

select tests.seed();

-- founding -----------------------------------------------------------------------

select tests.act('outsider');
select lives_ok(
  $$insert into public.organizations (slug, name) values ('founded', 'Founded by outsider')$$,
  'a signed-in user in no organization founds one');
select results_eq(
  $$select slug from public.organizations$$,
  $$values ('founded')$$,
  'the founder reads the new organization (and no other)');
select results_eq(
  $$select m.role::text from public.memberships m join public.organizations o on o.id = m.org_id
     where o.slug = 'founded'$$,
  $$values ('owner')$$,
  'the founder is its owner, and its only member');
select is(tests.affected($$update public.organizations set name = 'Renamed by founder' where slug = 'founded'$$),
          1::bigint, 'the founder, as owner, renames it');
select throws_ok(
  $$insert into public.organizations (slug, name, concurrency_limit) values ('greedy', 'Greedy', 1000)$$,
  '42501', 'permission denied for table organizations',
  'a founder cannot set billing columns (concurrency_limit) on a new organization');

select tests.act('anon');
select throws_ok(
  $$insert into public.organizations (slug, name) values ('anonymous', 'Anonymous')$$,
  '42501', 'permission denied for table organizations',
  'anon cannot found an organization');

-- billing columns: the platform's, not the owner's --------------------------------------

select tests.act('owner_a');
select throws_ok(
  $$update public.organizations set plan_tier = 'enterprise' where id = tests.id('org_a')$$,
  '42501', 'permission denied for table organizations',
  'an owner cannot change the plan tier');
select throws_ok(
  $$update public.organizations set concurrency_limit = 1000 where id = tests.id('org_a')$$,
  '42501', 'permission denied for table organizations',
  'an owner cannot change the concurrency limit');
select throws_ok(
  $$update public.organizations set is_active = true where id = tests.id('org_a')$$,
  '42501', 'permission denied for table organizations',
  'an owner cannot suspend or reactivate the organization (is_active)');
select throws_ok(
  $$update public.organizations set name = 'Both', plan_tier = 'pro' where id = tests.id('org_a')$$,
  '42501', 'permission denied for table organizations',
  'an owner cannot slip a billing column into an allowed update');
select tests.act('superuser');
select row_eq(
  $$select plan_tier::text, concurrency_limit, is_active, name from public.organizations where id = tests.id('org_a')$$,
  row('starter'::text, null::integer, true, 'Organization A'::text),
  'org A''s billing columns and name are unchanged');

select tests.act('service_role');
select is(tests.affected($$update public.organizations set plan_tier = 'pro', concurrency_limit = 50, is_active = false
                            where id = tests.id('org_a')$$),
          1::bigint, 'service_role changes the billing columns');
select tests.act('superuser');
select row_eq(
  $$select plan_tier::text, concurrency_limit, is_active from public.organizations where id = tests.id('org_a')$$,
  row('pro'::text, 50, false),
  'org A is now on pro, limited to 50 calls, suspended');
select is(tests.visible_as('viewer_a', 'public.organizations', 'id'), 'org_a',
          'a suspended organization stays visible to its members');

-- what USING filters out is silently not changed ----------------------------------------

select tests.act('admin_a');
select is(tests.affected($$update public.organizations set name = 'By admin' where id = tests.id('org_a')$$),
          0::bigint, 'an admin''s rename of their organization affects no row');
select tests.act('owner_b');
select is(tests.affected($$update public.organizations set name = 'By owner_b' where id = tests.id('org_a')$$),
          0::bigint, 'owner of B renaming org A affects no row');
select tests.act('owner_a');
select is(tests.affected($$delete from public.organizations where id = tests.id('org_a')$$),
          0::bigint, 'an owner''s delete of their organization affects no row (the platform deletes)');
select tests.act('superuser');
select is((select name from public.organizations where id = tests.id('org_a')), 'Organization A',
          'org A still exists, name unchanged');

select tests.act('owner_a');
select is(tests.affected($$update public.organizations set name = 'Renamed A' where id = tests.id('org_a')$$),
          1::bigint, 'the owner renames org A');
select throws_ok(
  $$update public.organizations set slug = 'Not A Slug' where id = tests.id('org_a')$$,
  '23514', null, 'slugs are checked');

-- soft delete -------------------------------------------------------------------------

select tests.act('admin_a');
select is(tests.affected($$update public.organizations set deleted_at = now() where id = tests.id('org_a')$$),
          0::bigint, 'an admin cannot soft-delete the organization');
select tests.act('owner_a');
select is(tests.affected($$update public.organizations set deleted_at = now() where id = tests.id('org_a')$$),
          1::bigint, 'the owner soft-deletes org A');
select tests.act('superuser');
select isnt((select deleted_at from public.organizations where id = tests.id('org_a')), null,
            'org A is still there, marked deleted');
select is(tests.visible_as('owner_a', 'public.organizations', 'id'), '',
          'a soft-deleted organization disappears for its owner');
select is(tests.visible_as('viewer_a', 'public.organizations', 'id'), '',
          'a soft-deleted organization disappears for its viewers');
select is(tests.visible_as('dual', 'public.organizations', 'id'), 'org_b',
          'a member of A and B now sees only B');
select is(tests.visible_as('manager_a', 'public.agents'), '',
          'the agents of a soft-deleted organization disappear');
select is(tests.visible_as('admin_a', 'public.audit_log'), '',
          'so does its audit log');
select is(tests.try_as('manager_a', $$insert into public.agents (org_id, name) values (tests.id('org_a'), 'Late')$$),
          'rls', 'nobody adds agents to a soft-deleted organization');
select is(tests.try_as('owner_a', $$update public.organizations set deleted_at = null where id = tests.id('org_a')$$),
          '0', 'the owner cannot restore it through the API');
select tests.act('owner_a');
select throws_ok(
  $$select public.invite_member(tests.id('org_a'), 'late@example.test')$$,
  '42501', 'only admins and owners can invite members',
  'nobody invites members to a soft-deleted organization');

select tests.act('service_role');
select is(tests.affected($$update public.organizations set deleted_at = null where id = tests.id('org_a')$$),
          1::bigint, 'service_role restores it');
select tests.act('superuser');
select is(tests.visible_as('viewer_a', 'public.organizations', 'id'), 'org_a',
          'a restored organization is visible to its members again');

-- create_organization: founding that returns the row (supabase-js .insert().select())
select tests.act('outsider');
select is((public.create_organization('via-rpc', 'Via RPC')).slug, 'via-rpc',
          'create_organization returns the new organization to its founder');
select results_eq(
  $$select m.role::text from public.memberships m join public.organizations o on o.id = m.org_id
     where o.slug = 'via-rpc'$$,
  $$values ('owner')$$,
  'and makes the founder its owner');
select tests.act('anon');
select throws_ok($$select public.create_organization('anon-org', 'Anon')$$,
  '42501', null, 'anon cannot create organizations');

select * from finish();
rollback;
