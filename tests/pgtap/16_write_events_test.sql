-- The recorder's batch write (V8): only the daemon may call it; it writes
-- with the daemon's own rights, merges what a batch knows about a call, and
-- a batch written twice changes nothing.
begin;
select plan(8);

select tests.seed();

-- A batch for one call of org_a, as the daemon sends it: opened (ended too,
-- when `reason` is given) and, when `seconds` is given, one usage event.
create function pg_temp.batch(call uuid, reason text default null, seconds float8 default null)
returns text
language sql
as $$
  select format(
    $q$select switchboard.write_events(
         array[%1$L]::uuid[], array[%2$L]::uuid[], array['gw-' || %1$L], array['+14155550100'],
         array['+14155550201'], array[null]::uuid[], array[null]::uuid[],
         array[case when %3$L is null then 'ringing' else 'completed' end],
         array[timestamptz '2026-01-01 10:00'], array[null]::timestamptz[],
         array[case when %3$L is null then null else timestamptz '2026-01-01 10:05' end],
         array[%3$L]::text[],
         case when %4$L is null then '{}' else array[%5$L]::uuid[] end,
         case when %4$L is null then '{}' else array[%2$L]::uuid[] end,
         case when %4$L is null then '{}' else array[%1$L]::uuid[] end,
         case when %4$L is null then '{}' else array['call_seconds'] end,
         case when %4$L is null then '{}' else array[%4$L]::float8[] end,
         case when %4$L is null then '{}' else array[timestamptz '2026-01-01 10:01'] end)$q$,
    call, tests.id('org_a'), reason, seconds, md5(call::text || 'usage')::uuid)
$$;

select is(tests.try_as('anon', pg_temp.batch(gen_random_uuid())), 'denied',
          'anon cannot call the batch write');
select is(tests.try_as('manager_a', pg_temp.batch(gen_random_uuid())), 'denied',
          'a signed-in user cannot call the batch write');
select is(tests.try_as('service_role', pg_temp.batch(gen_random_uuid())), 'denied',
          'service_role cannot call the batch write');
select is((select prosecdef from pg_proc
            where proname = 'write_events' and pronamespace = 'switchboard'::regnamespace),
          false, 'the batch write runs with its caller''s rights, not its owner''s');

-- the daemon: open, open again, end with usage, end again
create temp table written (call uuid);
insert into written values (gen_random_uuid());
grant select on written to switchboard_daemon;

create function pg_temp.as_daemon(statement text) returns void
language plpgsql
as $$
begin
  perform tests.act('daemon');
  execute statement;
  perform tests.act('superuser');
end
$$;

select pg_temp.as_daemon(pg_temp.batch(call)) from written;
select pg_temp.as_daemon(pg_temp.batch(call)) from written;
select results_eq(
  $$select status::text, ended_at is null from public.calls where id = (select call from written)$$,
  $$values ('ringing', true)$$,
  'the daemon opens a call, once however often the batch is written');

select pg_temp.as_daemon(pg_temp.batch(call, 'caller_hangup', 42)) from written;
select pg_temp.as_daemon(pg_temp.batch(call, 'caller_hangup', 42)) from written;
select results_eq(
  $$select status::text, end_reason, ended_at from public.calls where id = (select call from written)$$,
  $$values ('completed', 'caller_hangup', timestamptz '2026-01-01 10:05')$$,
  'an end merges into the open call''s row');
select results_eq(
  $$select count(*), sum(quantity) from public.usage_events where call_id = (select call from written)$$,
  $$values (1::bigint, 42::numeric)$$,
  'a usage event is written once however often its batch is');
select results_eq(
  $$select quantity, events from public.usage_daily
     where org_id = tests.id('org_a') and day = '2026-01-01' and metric = 'call_seconds'$$,
  $$values (42::numeric, 1::bigint)$$,
  'the daily rollup counts it once');

select * from finish();
rollback;
