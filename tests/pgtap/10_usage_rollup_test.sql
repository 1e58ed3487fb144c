-- The daily usage rollup: exact under inserts, idempotent retries, updates
-- and deletes, per organization, UTC day and metric.
begin;
select plan(9);

select tests.seed();

-- The rollup of org A, as (day, metric, quantity, events).
create function pg_temp.rollup_a()
returns table (day date, metric text, quantity numeric, events bigint)
language sql stable
as $$
  select day, metric, quantity, events
    from public.usage_daily
   where org_id = tests.id('org_a')
   order by day, metric
$$;

-- the seed's one event (100 llm_tokens_in, today) is rolled up
select results_eq(
  $$select metric, quantity, events from pg_temp.rollup_a()$$,
  $$values ('llm_tokens_in'::text, 100::numeric, 1::bigint)$$,
  'events inserted before are rolled up');

delete from public.usage_events where org_id = tests.id('org_a');

-- two events either side of midnight UTC, whatever the session's time zone
set local timezone = 'America/Los_Angeles';
insert into public.usage_events (id, org_id, metric, quantity, occurred_at) values
  (tests.id('u1'), tests.id('org_a'), 'call_seconds', 30, '2026-03-01 23:59:59+00'),
  (tests.id('u2'), tests.id('org_a'), 'call_seconds', 12.5, '2026-03-02 00:00:00+00'),
  (tests.id('u3'), tests.id('org_a'), 'call_seconds', 7.5, '2026-03-02 08:00:00+00'),
  (tests.id('u4'), tests.id('org_a'), 'stt_seconds', 4, '2026-03-02 08:00:00+00');
select results_eq(
  $$select * from pg_temp.rollup_a()$$,
  $$values ('2026-03-01'::date, 'call_seconds'::text, 30::numeric, 1::bigint),
           ('2026-03-02', 'call_seconds', 20, 2),
           ('2026-03-02', 'stt_seconds', 4, 1)$$,
  'one row per UTC day and metric, with the sum and the number of events');

-- the daemon's retried batch: duplicates are skipped and not counted
set local role switchboard_daemon;
insert into public.usage_events (id, org_id, metric, quantity, occurred_at) values
  (tests.id('u2'), tests.id('org_a'), 'call_seconds', 12.5, '2026-03-02 00:00:00+00'),
  (tests.id('u3'), tests.id('org_a'), 'call_seconds', 7.5, '2026-03-02 08:00:00+00'),
  (tests.id('u5'), tests.id('org_a'), 'call_seconds', 1, '2026-03-02 09:00:00+00')
on conflict (id) do nothing;
reset role;
select results_eq(
  $$select quantity, events from pg_temp.rollup_a() where day = '2026-03-02' and metric = 'call_seconds'$$,
  $$values (21::numeric, 3::bigint)$$,
  'a retried insert (on conflict do nothing) adds only the new event');

update public.usage_events set quantity = 100, occurred_at = '2026-03-01 12:00:00+00'
 where id = tests.id('u5');
select results_eq(
  $$select * from pg_temp.rollup_a() where metric = 'call_seconds'$$,
  $$values ('2026-03-01'::date, 'call_seconds'::text, 130::numeric, 2::bigint),
           ('2026-03-02', 'call_seconds', 20, 2)$$,
  'an update moves the quantity between days');

delete from public.usage_events where id in (tests.id('u1'), tests.id('u4'));
select results_eq(
  $$select * from pg_temp.rollup_a()$$,
  $$values ('2026-03-01'::date, 'call_seconds'::text, 100::numeric, 1::bigint),
           ('2026-03-02', 'call_seconds', 20, 2)$$,
  'a delete subtracts, and a day and metric left without events has no row');

select is(
  (select sum(quantity) from public.usage_daily where org_id = tests.id('org_b')),
  100::numeric,
  'other organizations are untouched');

-- the rollup equals the events, summed the slow way
select results_eq(
  $$select org_id, day, metric, quantity, events from public.usage_daily order by 1, 2, 3$$,
  $$select org_id, (occurred_at at time zone 'utc')::date, metric, sum(quantity), count(*)
      from public.usage_events group by 1, 2, 3 order by 1, 2, 3$$,
  'the rollup matches the events');

-- a viewer of org A reads A's rollup and nothing of B's
select tests.act('viewer_a');
select is(
  (select array_agg(distinct org_id) from public.usage_daily),
  array[tests.id('org_a')],
  'members read only their organizations'' rollup');
select tests.act('superuser');

-- deleting an organization takes its usage and rollup with it, without error
select lives_ok(
  $$delete from public.organizations where id = tests.id('org_b')$$,
  'an organization''s deletion cascades through its usage and rollup');

select * from finish();
rollback;
