-- After adopting a single-tenant database (tests/fixtures/single_tenant.sql):
-- its rows belong to one organization, owned by the configured user, who
-- sees them all; another user and anon see nothing; the legacy "allow all"
-- policy is gone; the organization can be renamed and change plans.
--
-- Run by deploy/local/pgtap --non-superuser --fixture tests/fixtures/single_tenant.sql
-- (deploy/local/test does), as the database's owner.
begin;
select plan(12);

select results_eq(
  $$ select o.slug, u.email from public.memberships m
       join public.organizations o on o.id = m.org_id
       join auth.users u on u.id = m.user_id where m.role = 'owner' $$,
  $$ values ('default', 'Owner@Clinic.test') $$,
  'the configured user owns the one organization');

select tests.act_as_user('1b000000-0000-4000-8000-000000000001');
select is((select count(*) from public.agents), 3::bigint, 'the owner sees every agent');
select is((select count(*) from public.phone_numbers), 2::bigint, 'and both routable numbers');
select is((select count(*) from public.customers), 3::bigint, 'and every customer');
select is((select count(*) from public.calls), 2::bigint, 'and every call');
select tests.act('superuser');

select tests.act_as_user('1b000000-0000-4000-8000-000000000002');
select is((select count(*) from public.agents), 0::bigint, 'a stranger sees no agent (the legacy policy is gone)');
select is((select count(*) from public.customers), 0::bigint, 'nor any customer');
select is((select count(*) from public.organizations), 0::bigint, 'nor the organization');
select tests.act('superuser');

select tests.act('anon');
select throws_ok($$ select count(*) from public.agents $$, '42501', null, 'anon reads nothing');
select tests.act('superuser');

select is_empty($$ select 1 from pg_policies where policyname = 'allow all' $$,
                'the legacy policy was dropped');
select lives_ok($$ update public.organizations set name = 'Mission Clinic', plan_tier = 'pro' $$,
                'the organization can be renamed and change plans');
select lives_ok($$ update public.customers set name = 'Ida M.' where id = '1d000000-0000-4000-8000-000000000001' $$,
                'an adopted customer can be edited');

select * from finish();
rollback;
