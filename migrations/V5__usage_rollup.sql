-- Usage rolled up per organization, UTC day and metric: what a billing
-- dashboard reads, one row per day instead of every event.
--
-- Statement-level triggers on usage_events keep it exact. Their transition
-- tables hold only the rows a statement really inserted, updated or
-- deleted, so the daemon's idempotent writes (`insert … on conflict (id) do
-- nothing`), retried or replayed, add nothing twice.

create table if not exists public.usage_daily (
  org_id uuid not null references public.organizations (id) on delete cascade,
  -- the UTC day of usage_events.occurred_at
  day date not null,
  metric text not null check (metric in (
    'call_seconds', 'llm_tokens_in', 'llm_tokens_out', 'tts_characters', 'stt_seconds')),
  quantity numeric not null,
  -- how many usage events the quantity sums
  events bigint not null,
  updated_at timestamptz not null default now(),
  primary key (org_id, day, metric)
);

-- One function for the three triggers: `old_rows` and `new_rows` are the
-- statement's transition tables (only those of its own event exist).
create or replace function switchboard.roll_up_usage() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  if tg_op in ('UPDATE', 'DELETE') then
    -- an update, never an insert: after an organization's deletion its
    -- rollup rows are gone with it, and there is nothing to subtract from
    update public.usage_daily d
       set quantity = d.quantity - o.quantity,
           events = d.events - o.events,
           updated_at = now()
      from (select org_id, (occurred_at at time zone 'utc')::date as day, metric,
                   sum(quantity) as quantity, count(*) as events
              from old_rows
             group by 1, 2, 3) o
     where d.org_id = o.org_id and d.day = o.day and d.metric = o.metric;
    -- a day and metric without events has no row, as if never metered
    delete from public.usage_daily d
     where d.events = 0
       and (d.org_id, d.day, d.metric) in
           (select org_id, (occurred_at at time zone 'utc')::date, metric from old_rows);
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    -- in key order, so concurrent batches lock rows in the same order
    insert into public.usage_daily as d (org_id, day, metric, quantity, events)
    select org_id, (occurred_at at time zone 'utc')::date, metric, sum(quantity), count(*)
      from new_rows
     group by 1, 2, 3
     order by 1, 2, 3
    on conflict (org_id, day, metric) do update
      set quantity = d.quantity + excluded.quantity,
          events = d.events + excluded.events,
          updated_at = now();
  end if;
  return null;
end
$$;
revoke execute on function switchboard.roll_up_usage() from public;

create or replace trigger usage_daily_insert after insert on public.usage_events
  referencing new table as new_rows
  for each statement execute function switchboard.roll_up_usage();
create or replace trigger usage_daily_update after update on public.usage_events
  referencing old table as old_rows new table as new_rows
  for each statement execute function switchboard.roll_up_usage();
create or replace trigger usage_daily_delete after delete on public.usage_events
  referencing old table as old_rows
  for each statement execute function switchboard.roll_up_usage();

-- what an adopted database already metered (the triggers above hold off
-- concurrent writers until this migration commits)
insert into public.usage_daily (org_id, day, metric, quantity, events)
select org_id, (occurred_at at time zone 'utc')::date, metric, sum(quantity), count(*)
  from public.usage_events
 group by 1, 2, 3
on conflict (org_id, day, metric) do nothing;

-- written only by the triggers; members read their organizations' rows,
-- like the usage itself
alter table public.usage_daily enable row level security;
revoke all on public.usage_daily from anon;
revoke insert, update, delete, truncate, references, trigger on public.usage_daily
  from authenticated, service_role;
grant select on public.usage_daily to authenticated, service_role;
drop policy if exists usage_daily_select on public.usage_daily;
create policy usage_daily_select on public.usage_daily for select to authenticated
  using (org_id = any ((select switchboard.org_ids('viewer'))::uuid[]));

-- the daemon writes usage with `on conflict do nothing` only: an update
-- would rewrite billed quantities
revoke update on public.usage_events from switchboard_daemon;
