-- Call workflows: what a call to a number actually does, per organization.
-- Opening hours (schedules), caller lists, ordered routing rules per number
-- (or number range) with an organization-wide default, weighted splits
-- between agents, blocks of numbers owned by prefix, and concurrent-call
-- limits per agent and per number. Everything is checked when written, so
-- the daemon never discovers a bad policy at call time. See
-- docs/workflows.md for how the daemon evaluates a policy, and
-- migrations/README.md ("Call workflows") for the tables.

-- Exclusion constraints below compare uuids and integers with `=` / `<>` in
-- a GiST index: btree_gist, a trusted extension on PostgreSQL 13+ and on
-- Supabase, where extensions live in the schema `extensions`.
create schema if not exists extensions;
create extension if not exists btree_gist with schema extensions;

-- limits per agent and per number --------------------------------------------

-- An agent (or a number, or a range of numbers) may take at most this many
-- calls at once, within the organization's own limit. Null: no limit of its
-- own. Set by the organization's managers, unlike the organization's limit,
-- which is billing.
alter table public.agents
  add column if not exists concurrency_limit integer check (concurrency_limit >= 0);
alter table public.phone_numbers
  add column if not exists concurrency_limit integer check (concurrency_limit >= 0);

-- number ranges ---------------------------------------------------------------

-- A block of numbers owned by prefix (written by the platform, see the
-- grants at the end): every number that starts with
-- `prefix` and is not provisioned on its own routes to `agent_id`. An exact
-- number beats a range, and a longer prefix beats a shorter one.
create table if not exists public.number_ranges (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  agent_id uuid not null,
  -- '+' and 1 to 14 digits: shorter than the longest E.164 number
  prefix text not null unique check (prefix ~ '^\+[1-9][0-9]{0,13}$'),
  is_active boolean not null default true,
  -- calls to all the range's numbers together
  concurrency_limit integer check (concurrency_limit >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, agent_id) references public.agents (org_id, id)
);
create index if not exists number_ranges_org_agent_idx on public.number_ranges (org_id, agent_id);

-- Claims: every number and every range an organization owns, as a span
-- of numbers: two organizations' spans may never overlap, so a number
-- inside another organization's range, or ranges nested across
-- organizations, are refused when written, whatever writes them. Within one
-- organization they may nest (the more specific one wins).
--
-- A span is a numrange over the digits read as a fraction, each digit d
-- written as the pair "1d" (so "+1415" is 0.11141115): a number is the
-- point of its digits, a prefix every fraction its digits start (the pair
-- encoding keeps "+1415" and "+14150" apart, and a prefix's span holds
-- exactly the numbers that start with it).
create table if not exists switchboard.number_claims (
  org_id uuid not null,
  phone_number_id uuid unique references public.phone_numbers (id) on delete cascade,
  number_range_id uuid unique references public.number_ranges (id) on delete cascade,
  span numrange not null,
  check (num_nonnulls(phone_number_id, number_range_id) = 1),
  constraint number_claims_one_owner exclude using gist (span with &&, org_id with <>)
);
revoke all on switchboard.number_claims from public;

-- The span of a number (`is_prefix` false) or a prefix, '+' and digits.
create or replace function switchboard.number_span_of(digits text, is_prefix boolean)
returns numrange
language sql immutable
set search_path = ''
as $$
  select case when is_prefix then pg_catalog.numrange(v, v + ('1e-' || 2 * (length(digits) - 1))::numeric, '[)')
              else pg_catalog.numrange(v, v, '[]') end
    from (select ('0.' || regexp_replace(substr(digits, 2), '([0-9])', '1\1', 'g'))::numeric as v) x
$$;

-- Keeps number_claims in step with phone_numbers (tg_argv[0] = 'number')
-- and number_ranges ('range'); a claim that overlaps another
-- organization's is refused with a message naming the number or prefix.
create or replace function switchboard.claim_numbers() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  is_range boolean := tg_argv[0] = 'range';
  digits text;
begin
  if tg_op = 'DELETE' then
    return null; -- the claim goes with the row (on delete cascade)
  end if;
  digits := case when is_range then to_jsonb(new) ->> 'prefix' else to_jsonb(new) ->> 'number' end;
  if digits !~ '^\+[1-9][0-9]*$' then
    -- a legacy number no check caught (an adopted database): no daemon can
    -- route it, so it claims nothing
    delete from switchboard.number_claims c where c.phone_number_id = new.id;
    return null;
  end if;
  begin
    if is_range then
      insert into switchboard.number_claims (org_id, number_range_id, span)
      values (new.org_id, new.id, switchboard.number_span_of(digits, true))
      on conflict (number_range_id) do update set org_id = excluded.org_id, span = excluded.span;
    else
      insert into switchboard.number_claims (org_id, phone_number_id, span)
      values (new.org_id, new.id, switchboard.number_span_of(digits, false))
      on conflict (phone_number_id) do update set org_id = excluded.org_id, span = excluded.span;
    end if;
  exception when exclusion_violation then
    raise exception '% % overlaps numbers another organization owns',
                    case when is_range then 'the range' else 'the number' end, digits
      using errcode = 'exclusion_violation',
            hint = 'a number or range belongs to one organization; release it there first';
  end;
  return null;
end
$$;

insert into switchboard.number_claims (org_id, phone_number_id, span)
select p.org_id, p.id, switchboard.number_span_of(p.number, false)
  from public.phone_numbers p
 where p.number ~ '^\+[1-9][0-9]*$'
on conflict do nothing;

create or replace trigger claim_numbers
  after insert or update of org_id, number on public.phone_numbers
  for each row execute function switchboard.claim_numbers('number');
create or replace trigger claim_numbers
  after insert or update of org_id, prefix on public.number_ranges
  for each row execute function switchboard.claim_numbers('range');

-- schedules -------------------------------------------------------------------

-- Opening hours: weekly windows in the schedule's IANA time zone, plus
-- dated exceptions (holidays, special days) that replace the windows of
-- their date. Windows are local wall-clock times: 09:00–17:00 stays
-- 09:00–17:00 across a DST change.
create table if not exists public.schedules (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  name text not null check (length(name) between 1 and 200 and name !~ '[[:cntrl:]\u202a-\u202e\u2066-\u2069]'),
  -- an IANA name ('Europe/London'); checked by check_time_zone
  time_zone text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id)
);
create index if not exists schedules_org_idx on public.schedules (org_id);

-- A time zone must be an IANA region name PostgreSQL knows ('America/New_York',
-- 'UTC'), not an abbreviation ('EST') or a POSIX rule ('EST5EDT,M3.2.0,...'),
-- whose meaning depends on the reader.
create or replace function switchboard.check_time_zone() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.time_zone !~ '^([A-Za-z_]+(/[A-Za-z0-9_+-]+){1,2}|UTC)$'
     or not exists (select 1 from pg_catalog.pg_timezone_names z where z.name = new.time_zone) then
    raise exception 'unknown time zone %', left(new.time_zone, 100)
      using errcode = 'invalid_parameter_value',
            hint = 'use an IANA time zone name such as America/New_York, Europe/London or UTC';
  end if;
  return new;
end
$$;
create or replace trigger check_time_zone
  before insert or update of time_zone on public.schedules
  for each row execute function switchboard.check_time_zone();

create table if not exists public.schedule_windows (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null,
  schedule_id uuid not null,
  -- ISO weekday: 1 = Monday … 7 = Sunday
  weekday smallint not null check (weekday between 1 and 7),
  -- local time; closes may be '24:00' (open until midnight). A window over
  -- midnight is two windows, one on each day.
  opens time not null,
  closes time not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (opens < closes),
  -- seconds of the week it covers, for the overlap check
  span int4range generated always as (
    -- (least: a reversed window is refused by the check above, not here)
    int4range(weekday * 86400 + least(extract(epoch from opens), extract(epoch from closes))::integer,
              weekday * 86400 + extract(epoch from closes)::integer)) stored,
  unique (org_id, id),
  foreign key (org_id, schedule_id) references public.schedules (org_id, id) on delete cascade,
  constraint schedule_windows_no_overlap exclude using gist (schedule_id with =, span with &&)
);

-- A dated exception: on `on_date` (local), the schedule is open only in the
-- exception's windows; a row without opens and closes closes the whole day.
create table if not exists public.schedule_exceptions (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null,
  schedule_id uuid not null,
  on_date date not null,
  opens time,
  closes time,
  name text check (length(name) <= 200 and name !~ '[[:cntrl:]\u202a-\u202e\u2066-\u2069]'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((opens is null) = (closes is null)),
  check (opens < closes),
  span int4range generated always as (
    case when opens is null then int4range(0, 86400)
         else int4range(least(extract(epoch from opens), extract(epoch from closes))::integer,
                        extract(epoch from closes)::integer) end) stored,
  unique (org_id, id),
  foreign key (org_id, schedule_id) references public.schedules (org_id, id) on delete cascade,
  -- a closed day has no windows; windows of one day do not overlap
  constraint schedule_exceptions_no_overlap
    exclude using gist (schedule_id with =, on_date with =, span with &&)
);

-- caller lists ------------------------------------------------------------------

-- Named lists of callers (a block list, VIPs, an allow list), by exact
-- number or by prefix ('+44', '+1900'): a rule's condition names a list.
create table if not exists public.caller_lists (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  name text not null check (length(name) between 1 and 200 and name !~ '[[:cntrl:]\u202a-\u202e\u2066-\u2069]'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id)
);
create index if not exists caller_lists_org_idx on public.caller_lists (org_id);

create table if not exists public.caller_list_entries (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null,
  list_id uuid not null,
  -- a whole E.164 number, or (is_prefix) '+' and its first digits
  number text not null,
  is_prefix boolean not null default false,
  note text check (length(note) <= 200),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (case when is_prefix then number ~ '^\+[1-9][0-9]{0,14}$'
              else number ~ '^\+[1-9][0-9]{6,14}$' end),
  unique (list_id, number, is_prefix),
  unique (org_id, id),
  foreign key (org_id, list_id) references public.caller_lists (org_id, id) on delete cascade
);
create index if not exists caller_list_entries_org_idx on public.caller_list_entries (org_id);

-- routing rules -------------------------------------------------------------------

-- Ordered rules, first match wins. A rule belongs to one number, one range,
-- or (neither) the whole organization: a call is checked against its
-- number's (or range's) rules, then the organization's; when none matches
-- it goes to the number's own agent. Its conditions must all hold (a rule
-- without any always matches). Overflow rules (`when_at_limit`) are
-- considered only once admission has refused the call at that level.
create table if not exists public.routing_rules (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  phone_number_id uuid,
  number_range_id uuid,
  position integer not null check (position >= 0),
  name text not null check (length(name) between 1 and 200 and name !~ '[[:cntrl:]\u202a-\u202e\u2066-\u2069]'),
  is_active boolean not null default true,

  -- conditions; null: not a condition of this rule
  caller_in_list uuid,
  caller_not_in_list uuid,
  -- ISO 3166-1 alpha-2 regions of the caller's number ('US', 'GB')
  caller_countries text[] check (cardinality(caller_countries) between 1 and 300
                                 and array_position(caller_countries, null) is null
                                 and array_to_string(caller_countries, ',') ~ '^[A-Z]{2}(,[A-Z]{2})*$'),
  -- true: the caller is a known customer; false: they are not
  caller_known boolean,
  -- true: no usable caller number (withheld, anonymous); false: there is one
  caller_withheld boolean,
  schedule_id uuid,
  -- with schedule_id: true while open, false while closed
  schedule_open boolean,
  -- true: only while the number's own agent is switched off
  when_agent_inactive boolean,
  -- an overflow rule: only when admission refused the call at this level
  when_at_limit text check (when_at_limit in ('organization', 'agent', 'number')),

  -- what the call does
  action text not null check (action in ('agent', 'split', 'transfer', 'reject')),
  agent_id uuid,
  -- E.164 ('+14155550199') or a SIP URI ('sip:frontdesk@pbx.example.com')
  transfer_to text check (length(transfer_to) <= 256
                          and (transfer_to ~ '^\+[1-9][0-9]{6,14}$'
                               or transfer_to ~* '^sips?:[^[:space:][:cntrl:]@<>"]+@[a-z0-9.-]+(:[0-9]{1,5})?(;[^[:space:][:cntrl:]<>"]*)?$')),
  -- mapped to SIP by the gateway: busy 486, decline 603, unavailable 480
  reject_reason text check (reject_reason in ('busy', 'decline', 'unavailable')),

  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (num_nonnulls(phone_number_id, number_range_id) <= 1),
  check ((schedule_id is null) = (schedule_open is null)),
  check (caller_in_list is null or caller_not_in_list is null or caller_in_list <> caller_not_in_list),
  check (case action
           when 'agent' then agent_id is not null and transfer_to is null and reject_reason is null
           when 'split' then agent_id is null and transfer_to is null and reject_reason is null
           when 'transfer' then transfer_to is not null and agent_id is null and reject_reason is null
           when 'reject' then reject_reason is not null and agent_id is null and transfer_to is null
         end),
  unique (org_id, id),
  -- one rule per place in a list (not deferrable: a deferrable key cannot
  -- serve `on conflict`, which every upsert needs; leave gaps, 10, 20, …)
  constraint routing_rules_position_key unique nulls not distinct
    (org_id, phone_number_id, number_range_id, position),
  foreign key (org_id, phone_number_id) references public.phone_numbers (org_id, id) on delete cascade,
  foreign key (org_id, number_range_id) references public.number_ranges (org_id, id) on delete cascade,
  foreign key (org_id, caller_in_list) references public.caller_lists (org_id, id),
  foreign key (org_id, caller_not_in_list) references public.caller_lists (org_id, id),
  foreign key (org_id, schedule_id) references public.schedules (org_id, id),
  foreign key (org_id, agent_id) references public.agents (org_id, id)
);
create index if not exists routing_rules_org_idx on public.routing_rules (org_id);
create index if not exists routing_rules_number_idx on public.routing_rules (phone_number_id);
create index if not exists routing_rules_range_idx on public.routing_rules (number_range_id);
create index if not exists routing_rules_agent_idx on public.routing_rules (org_id, agent_id);
create index if not exists routing_rules_schedule_idx on public.routing_rules (org_id, schedule_id);
create index if not exists routing_rules_in_list_idx on public.routing_rules (org_id, caller_in_list);
create index if not exists routing_rules_not_in_list_idx on public.routing_rules (org_id, caller_not_in_list);

-- The agents of a split rule and their weights: a call goes to an agent
-- with probability weight / total, chosen by its gateway call id (the same
-- call lands on the same agent on every replica). A weight of 0 keeps an
-- agent in the split while draining it.
create table if not exists public.routing_rule_agents (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null,
  rule_id uuid not null,
  agent_id uuid not null,
  weight integer not null check (weight between 0 and 10000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (rule_id, agent_id),
  unique (org_id, id),
  foreign key (org_id, rule_id) references public.routing_rules (org_id, id) on delete cascade,
  foreign key (org_id, agent_id) references public.agents (org_id, id)
);
create index if not exists routing_rule_agents_org_agent_idx on public.routing_rule_agents (org_id, agent_id);

-- At commit: a split rule has agents whose weights add up to more than 0,
-- and only a split rule has any. Deferred, so that a rule and its agents
-- are written in one transaction in any order.
create or replace function switchboard.check_split() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  rules uuid[];
  rule uuid;
  kind text;
  total bigint;
  agents bigint;
begin
  -- (a record has only its own table's fields, and there is no `new` on
  -- delete: each case names only what it has)
  if tg_table_name = 'routing_rules' then
    rules := array[new.id];
  elsif tg_op = 'DELETE' then
    rules := array[old.rule_id];
  elsif tg_op = 'UPDATE' then
    rules := array[old.rule_id, new.rule_id];
  else
    rules := array[new.rule_id];
  end if;
  foreach rule in array rules loop
    select r.action into kind from public.routing_rules r where r.id = rule;
    continue when not found; -- the rule is gone, its agents with it
    select coalesce(sum(s.weight), 0), count(*) into total, agents
      from public.routing_rule_agents s where s.rule_id = rule;
    if kind = 'split' and total = 0 then
      raise exception 'the split rule % needs agents whose weights add up to more than 0', rule
        using errcode = 'check_violation';
    end if;
    if kind <> 'split' and agents > 0 then
      raise exception 'the rule % is not a split rule; remove its split agents first', rule
        using errcode = 'check_violation';
    end if;
  end loop;
  return null;
end
$$;
drop trigger if exists check_split on public.routing_rules;
create constraint trigger check_split
  after insert or update of action on public.routing_rules
  deferrable initially deferred
  for each row execute function switchboard.check_split();
drop trigger if exists check_split on public.routing_rule_agents;
create constraint trigger check_split
  after insert or update or delete on public.routing_rule_agents
  deferrable initially deferred
  for each row execute function switchboard.check_split();

-- The policy of an organization as the daemon caches it: the active rules
-- with their split agents, and the schedules and caller lists they use.
-- Read with the organization (src/store/postgres.rs), so a change to any
-- of these tables is logged as a change to the organization (below).
create or replace function switchboard.routing_policy(org uuid) returns jsonb
language sql stable
set search_path = ''
as $$
  with rules as (
    select r.* from public.routing_rules r where r.org_id = org and r.is_active
  )
  select case when not exists (select 1 from rules) then null else jsonb_build_object(
    'rules', (
      select jsonb_agg(jsonb_build_object(
               'id', r.id, 'name', r.name, 'number_id', r.phone_number_id,
               'range_id', r.number_range_id, 'position', r.position,
               'caller_in_list', r.caller_in_list, 'caller_not_in_list', r.caller_not_in_list,
               'caller_countries', r.caller_countries, 'caller_known', r.caller_known,
               'caller_withheld', r.caller_withheld, 'schedule_id', r.schedule_id,
               'schedule_open', r.schedule_open, 'when_agent_inactive', r.when_agent_inactive,
               'when_at_limit', r.when_at_limit, 'action', r.action, 'agent_id', r.agent_id,
               'transfer_to', r.transfer_to, 'reject_reason', r.reject_reason,
               'split', (select coalesce(jsonb_agg(jsonb_build_array(s.agent_id, s.weight)
                                                   order by s.agent_id), '[]')
                           from public.routing_rule_agents s where s.rule_id = r.id))
             order by r.position, r.id)
        from rules r),
    'schedules', (
      select coalesce(jsonb_agg(jsonb_build_object(
               'id', s.id, 'name', s.name, 'time_zone', s.time_zone,
               'windows', (select coalesce(jsonb_agg(jsonb_build_array(
                                    w.weekday, extract(epoch from w.opens)::integer,
                                    extract(epoch from w.closes)::integer)
                                  order by w.weekday, w.opens), '[]')
                             from public.schedule_windows w where w.schedule_id = s.id),
               'exceptions', (select coalesce(jsonb_agg(jsonb_build_array(
                                    e.on_date, extract(epoch from e.opens)::integer,
                                    extract(epoch from e.closes)::integer)
                                  order by e.on_date, e.opens), '[]')
                                from public.schedule_exceptions e
                               where e.schedule_id = s.id
                                 -- past days never apply again
                                 and e.on_date >= current_date - 2))), '[]')
        from public.schedules s
       where s.id in (select r.schedule_id from rules r)),
    'caller_lists', (
      select coalesce(jsonb_agg(jsonb_build_object(
               'id', l.id,
               'numbers', (select coalesce(jsonb_agg(e.number order by e.number), '[]')
                             from public.caller_list_entries e
                            where e.list_id = l.id and not e.is_prefix),
               'prefixes', (select coalesce(jsonb_agg(e.number order by e.number), '[]')
                              from public.caller_list_entries e
                             where e.list_id = l.id and e.is_prefix))), '[]')
        from public.caller_lists l
       where l.id in (select r.caller_in_list from rules r
                      union select r.caller_not_in_list from rules r))
  ) end
$$;

-- changes reach every daemon ------------------------------------------------------

-- A change to any of an organization's workflow tables is a change to the
-- organization's cached policy: one row in the routing change log per
-- statement and organization (entity `organization`), however many rows
-- the statement wrote, so importing a block list of 10,000 numbers rings
-- each daemon once.
create or replace function switchboard.log_policy_change() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  orgs uuid[];
  org uuid;
  change_id bigint;
  changed timestamptz;
begin
  -- each statement is planned when first run: a branch never names a
  -- transition table its event does not have
  if tg_op = 'INSERT' then
    orgs := array(select distinct n.org_id from new_rows n);
  elsif tg_op = 'DELETE' then
    orgs := array(select distinct o.org_id from old_rows o);
  else
    orgs := array(select n.org_id from new_rows n union select o.org_id from old_rows o);
  end if;
  foreach org in array orgs
  loop
    insert into switchboard.routing_changes (entity, key) values ('organization', org::text)
    returning id, changed_at into change_id, changed;
    perform pg_notify('switchboard_routing_changes',
                      json_build_object('id', change_id, 'entity', 'organization', 'key', org,
                                        'at', extract(epoch from changed))::text);
  end loop;
  return null;
end
$$;

-- number ranges are routing data like numbers: entity `range`, keyed by prefix
alter table switchboard.routing_changes drop constraint if exists routing_changes_entity_check;
alter table switchboard.routing_changes
  add constraint routing_changes_entity_check
  check (entity in ('number', 'agent', 'organization', 'customer', 'range'));

do $$
declare
  t text;
begin
  foreach t in array array['schedules', 'schedule_windows', 'schedule_exceptions', 'caller_lists',
                           'caller_list_entries', 'routing_rules', 'routing_rule_agents']
  loop
    execute format($f$
      create or replace trigger log_policy_insert after insert on public.%1$I
        referencing new table as new_rows
        for each statement execute function switchboard.log_policy_change();
      create or replace trigger log_policy_update after update on public.%1$I
        referencing old table as old_rows new table as new_rows
        for each statement execute function switchboard.log_policy_change();
      create or replace trigger log_policy_delete after delete on public.%1$I
        referencing old table as old_rows
        for each statement execute function switchboard.log_policy_change();
    $f$, t);
  end loop;
end
$$;

create or replace trigger log_routing_change
  after insert or update or delete on public.number_ranges
  for each row execute function switchboard.log_routing_change('range');

-- V6's function keys a change by `number` or `id`; a range by its prefix
create or replace function switchboard.log_routing_change() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  entity text := tg_argv[0];
  key_column text := case tg_argv[0] when 'number' then 'number' when 'range' then 'prefix' else 'id' end;
  k text;
  change_id bigint;
  changed timestamptz;
begin
  if tg_op = 'UPDATE' and (to_jsonb(old) - 'updated_at') = (to_jsonb(new) - 'updated_at') then
    return null;
  end if;
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

-- an agent's limit is part of what it answers
drop trigger if exists log_routing_change on public.agents;
create trigger log_routing_change
  after update of org_id, name, voice_id, llm_config, is_active, concurrency_limit or delete on public.agents
  for each row execute function switchboard.log_routing_change('agent');

-- quotas -----------------------------------------------------------------------------

-- Every daemon holds each organization's whole policy in memory and in Redis
-- (see routing_policy): one tenant must not be able to make it as large as it
-- likes. After each insert statement, the rows of each organization (or rule)
-- it wrote to are counted against the quota (tg_argv: the quota, the column
-- it is per, and what the rows are called), through the column's index.
create or replace function switchboard.enforce_quota() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  quota bigint := tg_argv[0]::bigint;
  per text := tg_argv[1];
  over record;
begin
  execute format(
    'select t.%1$I as owner, count(*) as n from %2$s t
      where t.%1$I in (select distinct n.%1$I from new_rows n)
      group by t.%1$I having count(*) > $1 limit 1',
    per, tg_relid::regclass)
    into over using quota;
  if over.owner is not null then
    raise exception 'at most % % per %', quota, tg_argv[2], replace(per, '_id', '')
      using errcode = 'program_limit_exceeded',
            detail = format('%s %s has %s', replace(per, '_id', ''), over.owner, over.n);
  end if;
  return null;
end
$$;
revoke all on function switchboard.enforce_quota() from public;

do $$
declare
  q record;
begin
  for q in
    select * from (values
      ('caller_list_entries', 100000, 'org_id', 'caller list entries'),
      ('routing_rules', 20000, 'org_id', 'routing rules'),
      ('routing_rule_agents', 100, 'rule_id', 'agents'),
      ('schedules', 1000, 'org_id', 'schedules'),
      ('schedule_windows', 10000, 'org_id', 'schedule windows'),
      ('schedule_exceptions', 10000, 'org_id', 'schedule exceptions'),
      ('caller_lists', 1000, 'org_id', 'caller lists')) v(tbl, quota, per, what)
  loop
    execute format($f$
      create or replace trigger enforce_quota after insert on public.%1$I
        referencing new table as new_rows
        for each statement execute function switchboard.enforce_quota(%2$L, %3$L, %4$L)
    $f$, q.tbl, q.quota, q.per, q.what);
  end loop;
end
$$;

-- housekeeping like every tenant table ------------------------------------------------

do $$
declare
  t text;
begin
  foreach t in array array['number_ranges', 'schedules', 'schedule_windows', 'schedule_exceptions',
                           'caller_lists', 'caller_list_entries', 'routing_rules', 'routing_rule_agents']
  loop
    execute format($f$
      create or replace trigger touch_updated_at before update on public.%1$I
        for each row execute function switchboard.touch_updated_at();
      create or replace trigger keep_org_id before update of org_id on public.%1$I
        for each row execute function switchboard.keep_org_id();
      create or replace trigger audit after insert or update or delete on public.%1$I
        for each row execute function switchboard.audit();
      alter table public.%1$I enable row level security;
      revoke all on public.%1$I from anon;
      revoke truncate, references, trigger on public.%1$I from authenticated, service_role;
      -- viewers read, managers write, as for agents and numbers
      drop policy if exists %1$s_select on public.%1$I;
      create policy %1$s_select on public.%1$I for select to authenticated
        using (org_id = any ((select switchboard.org_ids('viewer'))::uuid[]));
      drop policy if exists %1$s_insert on public.%1$I;
      create policy %1$s_insert on public.%1$I for insert to authenticated
        with check (org_id = any ((select switchboard.org_ids('manager'))::uuid[]));
      drop policy if exists %1$s_update on public.%1$I;
      create policy %1$s_update on public.%1$I for update to authenticated
        using (org_id = any ((select switchboard.org_ids('manager'))::uuid[]))
        with check (org_id = any ((select switchboard.org_ids('manager'))::uuid[]));
      drop policy if exists %1$s_delete on public.%1$I;
      create policy %1$s_delete on public.%1$I for delete to authenticated
        using (org_id = any ((select switchboard.org_ids('manager'))::uuid[]));
      -- the daemon reads them all
      grant select on public.%1$I to switchboard_daemon;
      drop policy if exists %1$s_daemon on public.%1$I;
      create policy %1$s_daemon on public.%1$I for select to switchboard_daemon using (true);
    $f$, t);
  end loop;
end
$$;

revoke all on function switchboard.claim_numbers(), switchboard.check_time_zone(),
                       switchboard.enforce_quota(),
                       switchboard.check_split(), switchboard.log_policy_change(),
                       switchboard.log_routing_change(), switchboard.routing_policy(uuid)
  from public;
grant execute on function switchboard.routing_policy(uuid) to switchboard_daemon;
-- A range is a block of numbers the platform bought from a carrier: only
-- the platform (service_role) adds, moves or releases one. A prefix as
-- short as '+1' claimed by a tenant would lock every other tenant out of a
-- country. The organization's managers choose its agent, switch it off and
-- cap it.
revoke insert, update, delete on public.number_ranges from authenticated;
grant update (agent_id, is_active, concurrency_limit) on public.number_ranges to authenticated;

-- the span helper serves claim_numbers (as its owner) alone
revoke all on function switchboard.number_span_of(text, boolean) from public;
