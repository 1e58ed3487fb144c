-- RLS at scale: with 100,000 agents and 100,000 calls across 1,000
-- organizations, a member's `select *` reads their organization's rows
-- through an org_id index, comparing org_id = ANY (an array computed once,
-- an InitPlan), and calls no function per row.
begin;
select plan(14);

-- 1,000 organizations, one member each (viewer), 100 agents and 100 calls
-- each. Triggers (audit, foreign keys) are off while generating: the rows
-- are consistent by construction, and auditing 100,000 inserts would only
-- make this slower. A role that may not set session_replication_role (postgres
-- on a Supabase project) generates them with the triggers on, more slowly.
do $$
begin
  perform set_config('session_replication_role', 'replica', true);
exception when insufficient_privilege then
  raise notice 'generating the rows with triggers on: %', sqlerrm;
end
$$;
insert into auth.users (id, email)
select tests.id('perf_user_' || i), 'perf-' || i || '@example.test' from generate_series(1, 1000) i;
insert into public.organizations (id, slug, name)
select tests.id('perf_org_' || i), 'perf-' || i, 'Perf ' || i from generate_series(1, 1000) i;
insert into public.memberships (org_id, user_id, role)
select tests.id('perf_org_' || i), tests.id('perf_user_' || i), 'viewer' from generate_series(1, 1000) i;
insert into public.agents (org_id, name)
select tests.id('perf_org_' || (i % 1000 + 1)), 'Agent ' || i from generate_series(1, 100000) i;
insert into public.calls (org_id, status, started_at)
select tests.id('perf_org_' || (i % 1000 + 1)), 'completed', now() - i * interval '1 minute'
  from generate_series(1, 100000) i;
do $$
begin
  perform set_config('session_replication_role', 'origin', true);
exception when insufficient_privilege then
  null;
end
$$;
analyze auth.users, public.organizations, public.memberships, public.agents, public.calls;

select is((select count(*) from public.agents), 100000::bigint, '100,000 agents');
select is((select count(*) from public.calls), 100000::bigint, '100,000 calls');

-- The plan's nodes that scan `tbl` through an index led by org_id, with
-- org_id = ANY ($n) as the index condition.
create function pg_temp.org_index_scans(plan jsonb, tbl regclass) returns setof jsonb
language sql stable
as $$
  select n from tests.plan_nodes(plan) n
   where n ->> 'Node Type' in ('Index Scan', 'Index Only Scan', 'Bitmap Index Scan')
     and n ->> 'Index Cond' ~ '\morg_id = ANY \(\$[0-9]+\)'
     and exists (select 1 from pg_index i
                  join pg_class ic on ic.oid = i.indexrelid
                  join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
                 where i.indrelid = tbl and ic.relname = n ->> 'Index Name' and a.attname = 'org_id')
$$;

-- Signs of per-row work: a SubPlan, or a switchboard function in any
-- condition.
create function pg_temp.per_row_calls(plan jsonb) returns setof text
language sql stable
as $$
  select coalesce(n ->> 'Parent Relationship', '') || ' ' || coalesce(c.value, '')
    from tests.plan_nodes(plan) n
    left join lateral jsonb_each_text(n) c
      on c.key in ('Filter', 'Index Cond', 'Recheck Cond', 'Join Filter', 'Hash Cond', 'One-Time Filter')
   where n ->> 'Parent Relationship' = 'SubPlan'
      or c.value ~ '(SubPlan|switchboard\.)'
$$;

select tests.act_as_user(tests.id('perf_user_500'));
select tests.plan('select * from public.agents') as agents_plan \gset
select tests.plan('select * from public.calls') as calls_plan \gset

select isnt_empty(format('select pg_temp.org_index_scans(%L, %L)', :'agents_plan', 'public.agents'),
  'agents: read through an org_id index with org_id = ANY ($n)');
select is_empty(format($$select n from tests.plan_nodes(%L) n
                          where n ->> 'Node Type' = 'Seq Scan' and n ->> 'Relation Name' = 'agents'$$, :'agents_plan'),
  'agents: no sequential scan');
select is_empty(format('select pg_temp.per_row_calls(%L)', :'agents_plan'),
  'agents: no SubPlan and no switchboard function per row');
select isnt_empty(format($$select n from tests.plan_nodes(%L) n where n ->> 'Parent Relationship' = 'InitPlan'$$, :'agents_plan'),
  'agents: the member''s organizations are computed once (InitPlan)');

select isnt_empty(format('select pg_temp.org_index_scans(%L, %L)', :'calls_plan', 'public.calls'),
  'calls: read through an org_id index with org_id = ANY ($n)');
select is_empty(format($$select n from tests.plan_nodes(%L) n
                          where n ->> 'Node Type' = 'Seq Scan' and n ->> 'Relation Name' = 'calls'$$, :'calls_plan'),
  'calls: no sequential scan');
select is_empty(format('select pg_temp.per_row_calls(%L)', :'calls_plan'),
  'calls: no SubPlan and no switchboard function per row');
select isnt_empty(format($$select n from tests.plan_nodes(%L) n where n ->> 'Parent Relationship' = 'InitPlan'$$, :'calls_plan'),
  'calls: the member''s organizations are computed once (InitPlan)');

select results_eq($$select count(*), bool_and(org_id = tests.id('perf_org_500')) from public.agents$$,
                  $$values (100::bigint, true)$$,
                  'the member reads their organization''s 100 agents, and only those');
select results_eq($$select count(*), bool_and(org_id = tests.id('perf_org_500')) from public.calls$$,
                  $$values (100::bigint, true)$$,
                  'the member reads their organization''s 100 calls, and only those');
select tests.act('superuser');

-- a sanity check of the checks: a policy calling a function per row is caught
select is(
  (select count(*) from pg_temp.per_row_calls(tests.plan(
     $$select * from public.agents where switchboard.is_member(org_id)$$))) > 0,
  true, 'the per-row check does spot a switchboard function in a filter');
select is(
  (select count(*) from pg_temp.org_index_scans(tests.plan(
     $$select * from public.agents where name = 'Agent 1'$$), 'public.agents')),
  0::bigint, 'the index check does not accept a plan without an org_id index scan');

select * from finish();
rollback;
