-- After adopting the voice-agent case study's database
-- (tests/fixtures/case_study.sql): every user sees their own organization's
-- rows and nothing else, the case study's super admin is an owner of their
-- own organization only, nobody can write themselves into an organization
-- through the legacy profile columns, and the legacy helpers are gone.
--
-- Run by deploy/local/pgtap --non-superuser --fixture tests/fixtures/case_study.sql
-- (deploy/local/test does), as the database's owner.
begin;
select plan(77);

-- The organizations whose rows `uid` sees in `tbl`, as the API shows them.
create function tests.orgs_seen(uid uuid, tbl text) returns uuid[]
language plpgsql
as $$
declare
  seen uuid[];
begin
  perform tests.act_as_user(uid);
  execute format('select coalesce(array_agg(distinct %s order by %1$s), ''{}'') from public.%I',
                 case when tbl = 'organizations' then 'id' else 'org_id' end, tbl)
    into seen;
  perform tests.act('superuser');
  return seen;
end
$$;

-- The organizations among `orgs` that have rows in `tbl` (read as the owner).
create function tests.orgs_with_rows(orgs uuid[], tbl text) returns uuid[]
language plpgsql
as $$
declare
  found uuid[];
begin
  execute format('select coalesce(array_agg(distinct %s order by %1$s), ''{}'') from public.%I where %1$s = any ($1)',
                 case when tbl = 'organizations' then 'id' else 'org_id' end, tbl)
    into found using orgs;
  return found;
end
$$;

-- 70 tests: ten users by seven tables
select is(tests.orgs_seen(u.id, t.tbl), tests.orgs_with_rows(u.orgs, t.tbl),
          format('%s sees only %s in %s', u.name, coalesce(u.orgs::text, 'nothing'), t.tbl))
  from (values
    ('the case study''s super admin', '0b000000-0000-4000-8000-000000000001'::uuid, array['00000000-0000-0000-0000-000000000000']::uuid[]),
    ('alice (admin, owner)',  '0b000000-0000-4000-8000-000000000002'::uuid, array['0a000000-0000-4000-8000-000000000001']::uuid[]),
    ('sam (manager)',         '0b000000-0000-4000-8000-000000000003'::uuid, array['0a000000-0000-4000-8000-000000000001']::uuid[]),
    ('val (viewer)',          '0b000000-0000-4000-8000-000000000004'::uuid, array['0a000000-0000-4000-8000-000000000001']::uuid[]),
    ('bob (admin, owner)',    '0b000000-0000-4000-8000-000000000005'::uuid, array['0a000000-0000-4000-8000-000000000002']::uuid[]),
    ('bea (admin)',           '0b000000-0000-4000-8000-000000000006'::uuid, array['0a000000-0000-4000-8000-000000000002']::uuid[]),
    ('vic (no role)',         '0b000000-0000-4000-8000-000000000007'::uuid, array['0a000000-0000-4000-8000-000000000002']::uuid[]),
    ('cam (manager)',         '0b000000-0000-4000-8000-000000000008'::uuid, array['0a000000-0000-4000-8000-000000000003']::uuid[]),
    ('nora (no organization)','0b000000-0000-4000-8000-000000000009'::uuid, array[]::uuid[]),
    ('ops (configured owner)','0b000000-0000-4000-8000-00000000000a'::uuid, array['0a000000-0000-4000-8000-000000000003']::uuid[])
  ) u(name, id, orgs)
  cross join unnest(array['organizations', 'memberships', 'agents', 'phone_numbers',
                          'customers', 'calls', 'knowledge_base']) t(tbl)
 order by u.id, t.tbl;

-- profiles: co-members, or only oneself
select tests.act_as_user('0b000000-0000-4000-8000-000000000002');
select results_eq(
  $$ select id::text from public.profiles order by 1 $$,
  $$ values ('0b000000-0000-4000-8000-000000000002'), ('0b000000-0000-4000-8000-000000000003'),
            ('0b000000-0000-4000-8000-000000000004') $$,
  'alice sees the profiles of Sunrise Dental''s members');
select tests.act_as_user('0b000000-0000-4000-8000-000000000009');
select results_eq(
  $$ select id::text from public.profiles $$,
  $$ values ('0b000000-0000-4000-8000-000000000009') $$,
  'nora sees her own profile only');

-- the legacy columns no longer let a user into an organization
select throws_ok(
  $$ update public.profiles set org_id = '0a000000-0000-4000-8000-000000000001', role = 'admin'
      where id = '0b000000-0000-4000-8000-000000000009' $$,
  '42501', null,
  'nora cannot write herself into an organization through profiles.org_id and role');
select tests.act('superuser');
select tests.act_as_user('0b000000-0000-4000-8000-000000000009');
select lives_ok(
  $$ update public.profiles set full_name = 'Nora Q.' where id = '0b000000-0000-4000-8000-000000000009' $$,
  'nora still edits her name');
select tests.act('superuser');

select hasnt_function('public', 'get_my_org_id', 'the case study''s get_my_org_id() is gone');
select hasnt_function('public', 'is_super_admin', 'the case study''s is_super_admin() is gone');
select is_empty(
  $$ select o.slug from public.organizations o
      where not exists (select 1 from public.memberships m where m.org_id = o.id and m.role = 'owner') $$,
  'every organization has an owner');

select * from finish();
rollback;
