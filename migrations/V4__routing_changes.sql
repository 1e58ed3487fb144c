-- The routing change log. Every change to what a number resolves to (its
-- binding, its agent, its organization) appends a row here and rings
-- `pg_notify('switchboard_routing_changes', …)` with the row's id. Each
-- daemon replica LISTENs and evicts what changed from its caches; after a
-- reconnect it replays this log from the last id it saw, so a notification
-- lost while it was away still takes effect. NOTIFY is the doorbell, this
-- table is the truth.
--
-- Only configuration changes write here (rare); call-rate tables never do,
-- because NOTIFY takes a global lock at commit.

create table if not exists switchboard.routing_changes (
  id bigint generated always as identity primary key,
  entity text not null check (entity in ('number', 'agent', 'organization')),
  -- the E.164 number, or the agent's / organization's id
  key text not null,
  changed_at timestamptz not null default clock_timestamp()
);
create index if not exists routing_changes_changed_at_idx on switchboard.routing_changes (changed_at);

-- Row trigger: tg_argv[0] names the entity. A renumbering logs both the
-- old and the new number.
create or replace function switchboard.log_routing_change() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  entity text := tg_argv[0];
  key_column text := case tg_argv[0] when 'number' then 'number' else 'id' end;
  k text;
  change_id bigint;
  changed timestamptz;
begin
  for k in
    select distinct x
      from unnest(array[to_jsonb(old) ->> key_column, to_jsonb(new) ->> key_column]) as x
     where x is not null
  loop
    insert into switchboard.routing_changes (entity, key) values (entity, k)
    returning id, changed_at into change_id, changed;
    -- `at` (epoch seconds) lets each replica measure how late it applies it
    perform pg_notify('switchboard_routing_changes',
                      json_build_object('id', change_id, 'entity', entity, 'key', k,
                                        'at', extract(epoch from changed))::text);
  end loop;
  return null;
end
$$;

create or replace trigger log_routing_change
  after insert or update or delete on public.phone_numbers
  for each row execute function switchboard.log_routing_change('number');
-- an agent or org matters once a number points at it: inserts need no entry
create or replace trigger log_routing_change
  after update of org_id, name, voice_id, llm_config, is_active or delete on public.agents
  for each row execute function switchboard.log_routing_change('agent');
create or replace trigger log_routing_change
  after update of slug, name, plan_tier, settings, concurrency_limit, is_active, deleted_at
     or delete on public.organizations
  for each row execute function switchboard.log_routing_change('organization');

revoke all on function switchboard.log_routing_change() from public;
grant usage on schema switchboard to switchboard_daemon;
grant select on switchboard.routing_changes to switchboard_daemon;
