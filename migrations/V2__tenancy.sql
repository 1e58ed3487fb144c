-- The multi-tenant data model: tenants (organizations), their members, AI
-- agents, phone numbers, customers, calls, usage, knowledge base,
-- invitations and the audit log.
--
-- This file also adopts an existing single-tenant database in place, so it
-- is written to run on both an empty schema and a legacy one:
--
--   phase 1  create the tenancy tables;
--   phase 2  create or extend the tenant tables, `org_id` nullable;
--   phase 3  backfill: a default organization owns every legacy row, and
--            agents' phone numbers move into `phone_numbers`;
--   phase 4  `org_id` not null, composite keys and checks.
--
-- Row Level Security and policies follow in V3. See migrations/README.md.
-- Settings read here (set by `switchboard migrate`): switchboard.adopt_org_slug,
-- switchboard.adopt_org_name, switchboard.adopt_owner_email,
-- switchboard.adopt_calling_code.

-- helpers for idempotent DDL ----------------------------------------------

-- Adds a constraint unless one of that name exists. Checks on data that may
-- predate them are added NOT VALID and then validated; if legacy rows break
-- a check, the constraint stays NOT VALID (enforced for new and changed rows)
-- and the problem is recorded in switchboard.adoption_issues.
create or replace procedure switchboard.ensure_constraint(
  tbl regclass, name text, definition text, validate_existing boolean default false
)
language plpgsql
set search_path = ''
as $$
begin
  if exists (select 1 from pg_catalog.pg_constraint where conrelid = tbl and conname = name) then
    return;
  end if;
  if validate_existing then
    execute format('alter table %s add constraint %I %s not valid', tbl, name, definition);
    begin
      execute format('alter table %s validate constraint %I', tbl, name);
    exception when check_violation or foreign_key_violation then
      insert into switchboard.adoption_issues (table_name, issue)
      values (tbl::text, format('existing rows violate %s (%s); enforced for new rows only: %s',
                                name, definition, sqlerrm));
    end;
  else
    execute format('alter table %s add constraint %I %s', tbl, name, definition);
  end if;
end
$$;

create table if not exists switchboard.adoption_issues (
  id bigint generated always as identity primary key,
  table_name text not null,
  row_id uuid,
  issue text not null,
  recorded_at timestamptz not null default now()
);

-- Keeps updated_at honest whoever writes the row.
create or replace function switchboard.touch_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

-- phase 1: tenancy ---------------------------------------------------------

do $$
begin
  if not exists (select 1 from pg_type where typname = 'plan_tier' and typnamespace = 'public'::regnamespace) then
    create type public.plan_tier as enum ('starter', 'pro', 'enterprise');
  end if;
  -- declared in rank order: comparisons (role >= 'manager') follow it
  if not exists (select 1 from pg_type where typname = 'member_role' and typnamespace = 'public'::regnamespace) then
    create type public.member_role as enum ('viewer', 'manager', 'admin', 'owner');
  end if;
end
$$;

create table if not exists public.organizations (
  id uuid primary key default gen_random_uuid(),
  slug text not null unique
    check (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
  name text not null check (length(name) between 1 and 200),
  plan_tier public.plan_tier not null default 'starter',
  settings jsonb not null default '{}'::jsonb
    check (jsonb_typeof(settings) = 'object'),
  -- overrides the plan tier's concurrent-call limit when set
  concurrency_limit integer check (concurrency_limit >= 0),
  -- false: suspended (takes no calls) but still visible to its members
  is_active boolean not null default true,
  -- soft delete: hidden from members, takes no calls, restorable
  deleted_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table if not exists public.memberships (
  org_id uuid not null references public.organizations (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  role public.member_role not null default 'viewer',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, user_id)
);
-- "which orgs is this user in": the lookup behind every policy
create index if not exists memberships_user_idx on public.memberships (user_id, org_id, role);

create table if not exists public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  full_name text check (length(full_name) <= 200),
  -- the org the user last switched to (team switching)
  last_active_org_id uuid references public.organizations (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists profiles_last_active_org_idx on public.profiles (last_active_org_id);

-- phase 2: tenant tables, created or extended --------------------------------

create table if not exists public.agents (id uuid primary key default gen_random_uuid());
alter table public.agents
  add column if not exists org_id uuid,
  add column if not exists name text,
  add column if not exists voice_id text not null default '',
  -- model, prompt, tools; provider secrets never live here (check below)
  add column if not exists llm_config jsonb not null default '{}'::jsonb,
  add column if not exists is_active boolean not null default true,
  add column if not exists created_at timestamptz not null default now(),
  add column if not exists updated_at timestamptz not null default now();

create table if not exists public.customers (id uuid primary key default gen_random_uuid());
alter table public.customers
  add column if not exists org_id uuid,
  add column if not exists phone text,
  add column if not exists name text,
  add column if not exists email text,
  add column if not exists created_at timestamptz not null default now(),
  add column if not exists updated_at timestamptz not null default now();

create table if not exists public.phone_numbers (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null,
  agent_id uuid not null,
  -- canonical E.164, unique across the platform: one number, one route
  number text not null unique check (number ~ '^\+[1-9][0-9]{6,14}$'),
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- One row per call, keyed by the daemon's call_id. Written by the daemon.
create table if not exists public.calls (id uuid primary key default gen_random_uuid());
alter table public.calls
  add column if not exists org_id uuid,
  add column if not exists gateway_call_id text,
  add column if not exists called_number text,
  add column if not exists caller_number text,
  add column if not exists agent_id uuid,
  add column if not exists customer_id uuid,
  add column if not exists status text,
  add column if not exists started_at timestamptz,
  add column if not exists answered_at timestamptz,
  add column if not exists ended_at timestamptz,
  add column if not exists end_reason text,
  add column if not exists created_at timestamptz not null default now(),
  add column if not exists updated_at timestamptz not null default now();

-- Metered usage; `id` is the event's idempotency key.
create table if not exists public.usage_events (
  id uuid primary key,
  org_id uuid not null,
  call_id uuid,
  metric text not null check (metric in (
    'call_seconds', 'llm_tokens_in', 'llm_tokens_out', 'tts_characters', 'stt_seconds')),
  quantity numeric not null check (quantity >= 0),
  occurred_at timestamptz not null default now(),
  created_at timestamptz not null default now()
);

create table if not exists public.knowledge_base (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null,
  -- null: shared by all the org's agents
  agent_id uuid,
  title text not null check (length(title) between 1 and 500),
  content text not null,
  metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table if not exists public.invitations (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  email text not null check (email = lower(email) and email like '%_@_%'),
  role public.member_role not null default 'viewer',
  -- sha256 of the token; the token itself is shown once, to the inviter
  token_hash bytea not null unique,
  invited_by uuid references auth.users (id) on delete set null,
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid references auth.users (id) on delete set null,
  revoked_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists invitations_org_idx on public.invitations (org_id);
-- one open invitation per person and org
create unique index if not exists invitations_open_idx on public.invitations (org_id, email)
  where accepted_at is null and revoked_at is null;

-- Append-only (V3 enforces it). No foreign key to organizations: the trail
-- outlives what it describes.
create table if not exists public.audit_log (
  id bigint generated always as identity primary key,
  org_id uuid,
  actor_id uuid,
  actor_role text,
  action text not null check (action in ('INSERT', 'UPDATE', 'DELETE')),
  table_name text not null,
  row_id text,
  old_row jsonb,
  new_row jsonb,
  at timestamptz not null default now()
);
create index if not exists audit_log_org_idx on public.audit_log (org_id, at desc);

-- phase 3: backfill legacy rows ------------------------------------------------

-- Normalizes a number as stored by a legacy app: digits with an optional
-- '+'; a number without one is read as national and given the configured
-- calling code (a leading trunk 0 dropped). Null when it cannot be E.164.
-- With calling code 1 (north america) a national number is ten digits,
-- perhaps after the 1, and 011 dials abroad.
create or replace function switchboard.legacy_number_to_e164(raw text, calling_code text)
returns text
language sql immutable
set search_path = ''
as $$
  with cleaned as (
    select regexp_replace(coalesce(raw, ''), '[^0-9+]', '', 'g') as n
  ), candidate as (
    select case
      when n ~ '^\+' then n
      when n ~ '^00' then '+' || substr(n, 3)
      when calling_code = '1' and n ~ '^011' then '+' || substr(n, 4)
      when calling_code = '1' then case when n ~ '^1?[2-9][0-9]{9}$' then '+1' || right(n, 10) end
      when calling_code <> '' and n ~ ('^' || calling_code) and length(n) > 10 then '+' || n
      when calling_code <> '' then '+' || calling_code || ltrim(n, '0')
      else null
    end as e164
    from cleaned
  )
  select e164 from candidate where e164 ~ '^\+[1-9][0-9]{6,14}$'
$$;

do $$
declare
  org uuid;
  -- '+44' is read as 44
  calling_code text := ltrim(coalesce(nullif(current_setting('switchboard.adopt_calling_code', true), ''), '1'), '+');
  owner_email text := nullif(current_setting('switchboard.adopt_owner_email', true), '');
  moved integer;
begin
  if not exists (select 1 from public.agents where org_id is null)
     and not exists (select 1 from public.customers where org_id is null)
     and not exists (select 1 from public.calls where org_id is null) then
    return; -- nothing legacy to adopt
  end if;
  if calling_code !~ '^[1-9][0-9]{0,2}$' then
    raise exception 'switchboard.adopt_calling_code must be a country calling code such as 1 or 44, not %',
      calling_code using errcode = 'invalid_parameter_value';
  end if;

  insert into public.organizations (slug, name)
  values (
    coalesce(nullif(current_setting('switchboard.adopt_org_slug', true), ''), 'default'),
    coalesce(nullif(current_setting('switchboard.adopt_org_name', true), ''), 'Default organization')
  )
  on conflict (slug) do update set slug = excluded.slug
  returning id into org;
  raise notice 'adopting single-tenant rows into organization %', org;

  update public.agents set org_id = org where org_id is null;
  update public.customers set org_id = org where org_id is null;
  update public.calls set org_id = org where org_id is null;
  -- legacy calls are over; their timing columns stay as the legacy app kept them
  update public.calls set status = 'completed' where status is null;
  update public.agents set name = 'Agent ' || left(id::text, 8) where name is null;
  -- the daemon reads voice_id as text; '' is "no voice chosen"
  update public.agents set voice_id = '' where voice_id is null;

  if owner_email is not null then
    insert into public.memberships (org_id, user_id, role)
    select org, u.id, 'owner' from auth.users u where lower(u.email) = lower(owner_email)
    on conflict (org_id, user_id) do update set role = 'owner';
    if not found then
      insert into switchboard.adoption_issues (table_name, issue)
      values ('public.memberships', format('no user has the email %L; the organization has no owner', owner_email));
    end if;
  end if;

  -- the legacy prompt becomes llm_config.system_prompt; the column stays
  if exists (select 1 from information_schema.columns
              where table_schema = 'public' and table_name = 'agents' and column_name = 'system_prompt') then
    execute $sql$
      update public.agents
         set llm_config = llm_config || jsonb_build_object('system_prompt', system_prompt)
       where system_prompt is not null and not llm_config ? 'system_prompt'
    $sql$;
  end if;

  -- agents.phone_number (legacy: one number per agent) → phone_numbers. The
  -- legacy column is left in place for the legacy app; it is no longer read.
  if exists (select 1 from information_schema.columns
              where table_schema = 'public' and table_name = 'agents' and column_name = 'phone_number') then
    execute $sql$
      insert into public.phone_numbers (org_id, agent_id, number, is_active)
      select a.org_id, a.id, switchboard.legacy_number_to_e164(a.phone_number, $1), a.is_active
        from public.agents a
       where switchboard.legacy_number_to_e164(a.phone_number, $1) is not null
       order by a.created_at, a.id -- two spellings of one number: the oldest agent keeps it
      on conflict (number) do nothing
    $sql$ using calling_code;
    get diagnostics moved = row_count;
    raise notice 'moved % agent phone numbers into phone_numbers', moved;
    execute $sql$
      insert into switchboard.adoption_issues (table_name, row_id, issue)
      select 'public.agents', a.id, format('phone_number %L is not a usable E.164 number; not routed', a.phone_number)
        from public.agents a
       where a.phone_number is not null
         and switchboard.legacy_number_to_e164(a.phone_number, $1) is null
    $sql$ using calling_code;
    execute $sql$
      insert into switchboard.adoption_issues (table_name, row_id, issue)
      select 'public.agents', a.id, format('phone_number %L is %s, which routes to agent %s; not routed',
                                           a.phone_number, p.number, p.agent_id)
        from public.agents a
        join public.phone_numbers p on p.number = switchboard.legacy_number_to_e164(a.phone_number, $1)
       where p.agent_id <> a.id
    $sql$ using calling_code;
  end if;

  -- customers' phones, normalized where possible: not onto a phone another
  -- customer has (the first of two spellings wins); the rest are recorded
  with normalized as (
    select c.id, switchboard.legacy_number_to_e164(c.phone, calling_code) as phone
      from public.customers c
     where c.phone !~ '^\+[1-9][0-9]{6,14}$'
  ), winners as (
    select distinct on (n.phone) n.id, n.phone
      from normalized n
     where n.phone is not null
       and not exists (select 1 from public.customers d where d.phone = n.phone)
     order by n.phone, n.id
  )
  update public.customers c set phone = w.phone from winners w where c.id = w.id;
  insert into switchboard.adoption_issues (table_name, row_id, issue)
  select 'public.customers', c.id,
         case when c.phone is null then 'no phone; kept, never matched to a caller'
              else format('phone %L is not a usable E.164 number, or another customer has it; kept, never matched to a caller', c.phone)
         end
    from public.customers c
   where c.phone is null or c.phone !~ '^\+[1-9][0-9]{6,14}$';

  -- legacy uniqueness of customers.phone across the whole table would stop
  -- two tenants from knowing the same caller; (org_id, phone) replaces it
  declare
    legacy_unique record;
  begin
    for legacy_unique in
      select con.conname
        from pg_constraint con
       where con.conrelid = 'public.customers'::regclass and con.contype = 'u'
         and con.conkey = array[(select attnum from pg_attribute
                                  where attrelid = 'public.customers'::regclass and attname = 'phone')]
    loop
      execute format('alter table public.customers drop constraint %I', legacy_unique.conname);
    end loop;
  end;

  -- legacy single-column foreign keys from calls would block deleting an
  -- agent or customer; the composite ones below replace them
  declare
    legacy_fk record;
  begin
    for legacy_fk in
      select con.conname
        from pg_constraint con
       where con.conrelid = 'public.calls'::regclass and con.contype = 'f'
         and con.confrelid in ('public.agents'::regclass, 'public.customers'::regclass)
         and cardinality(con.conkey) = 1
    loop
      execute format('alter table public.calls drop constraint %I', legacy_fk.conname);
    end loop;
  end;
end
$$;

-- phase 4: tenancy is enforced -----------------------------------------------

alter table public.agents
  alter column org_id set not null,
  alter column name set not null,
  alter column voice_id set default '',
  alter column voice_id set not null;
alter table public.customers alter column org_id set not null;
do $$
begin
  if exists (select 1 from public.customers where phone is null) then
    -- legacy customers without a phone stay (recorded above); new ones need one
    call switchboard.ensure_constraint('public.customers', 'customers_phone_not_null',
      'check (phone is not null)', true);
  else
    alter table public.customers alter column phone set not null;
  end if;
end
$$;
alter table public.calls
  alter column org_id set not null,
  alter column status set default 'ringing',
  alter column status set not null,
  alter column started_at set default now();

call switchboard.ensure_constraint('public.agents', 'agents_org_id_fkey',
  'foreign key (org_id) references public.organizations (id) on delete cascade');
-- target of composite foreign keys: a row that names an agent must name the
-- agent's own organization
call switchboard.ensure_constraint('public.agents', 'agents_org_id_id_key', 'unique (org_id, id)');
call switchboard.ensure_constraint('public.agents', 'agents_name_check',
  'check (length(name) between 1 and 200)', true);
call switchboard.ensure_constraint('public.agents', 'agents_llm_config_check',
  'check (jsonb_typeof(llm_config) = ''object'')', true);
-- provider credentials belong in a secret store, never in llm_config
call switchboard.ensure_constraint('public.agents', 'agents_llm_config_no_secrets',
  'check (not jsonb_path_exists(llm_config, ''lax $.** ? (@.type() == "object").keyvalue() ? (@.key like_regex "^(api_?key|secret|client_secret|password|token|access_token|refresh_token|private_key)$" flag "i")''))',
  true);

call switchboard.ensure_constraint('public.customers', 'customers_org_id_fkey',
  'foreign key (org_id) references public.organizations (id) on delete cascade');
call switchboard.ensure_constraint('public.customers', 'customers_org_id_id_key', 'unique (org_id, id)');
call switchboard.ensure_constraint('public.customers', 'customers_org_id_phone_key', 'unique (org_id, phone)');
call switchboard.ensure_constraint('public.customers', 'customers_phone_check',
  'check (phone ~ ''^\+[1-9][0-9]{6,14}$'')', true);

call switchboard.ensure_constraint('public.phone_numbers', 'phone_numbers_org_id_fkey',
  'foreign key (org_id) references public.organizations (id) on delete cascade');
call switchboard.ensure_constraint('public.phone_numbers', 'phone_numbers_org_id_id_key', 'unique (org_id, id)');
call switchboard.ensure_constraint('public.phone_numbers', 'phone_numbers_agent_fkey',
  'foreign key (org_id, agent_id) references public.agents (org_id, id)');
create index if not exists phone_numbers_org_agent_idx on public.phone_numbers (org_id, agent_id);

call switchboard.ensure_constraint('public.calls', 'calls_org_id_fkey',
  'foreign key (org_id) references public.organizations (id) on delete cascade');
call switchboard.ensure_constraint('public.calls', 'calls_org_id_id_key', 'unique (org_id, id)');
call switchboard.ensure_constraint('public.calls', 'calls_agent_fkey',
  'foreign key (org_id, agent_id) references public.agents (org_id, id) on delete set null (agent_id)', true);
call switchboard.ensure_constraint('public.calls', 'calls_customer_fkey',
  'foreign key (org_id, customer_id) references public.customers (org_id, id) on delete set null (customer_id)', true);
call switchboard.ensure_constraint('public.calls', 'calls_status_check',
  'check (status in (''ringing'', ''in_progress'', ''completed'', ''failed'', ''rejected''))', true);
create index if not exists calls_org_started_idx on public.calls (org_id, started_at desc);
create index if not exists calls_gateway_call_id_idx on public.calls (gateway_call_id);
create index if not exists calls_org_agent_idx on public.calls (org_id, agent_id);
create index if not exists calls_org_customer_idx on public.calls (org_id, customer_id);

call switchboard.ensure_constraint('public.usage_events', 'usage_events_org_id_fkey',
  'foreign key (org_id) references public.organizations (id) on delete cascade');
call switchboard.ensure_constraint('public.usage_events', 'usage_events_call_fkey',
  'foreign key (org_id, call_id) references public.calls (org_id, id)');
create index if not exists usage_events_org_occurred_idx on public.usage_events (org_id, occurred_at);
create index if not exists usage_events_org_call_idx on public.usage_events (org_id, call_id);

call switchboard.ensure_constraint('public.knowledge_base', 'knowledge_base_org_id_fkey',
  'foreign key (org_id) references public.organizations (id) on delete cascade');
call switchboard.ensure_constraint('public.knowledge_base', 'knowledge_base_agent_fkey',
  'foreign key (org_id, agent_id) references public.agents (org_id, id) on delete cascade');
create index if not exists knowledge_base_org_agent_idx on public.knowledge_base (org_id, agent_id);

create index if not exists agents_org_idx on public.agents (org_id);
create index if not exists customers_org_idx on public.customers (org_id);

do $$
declare
  t text;
begin
  foreach t in array array['organizations', 'memberships', 'profiles', 'agents', 'customers',
                           'phone_numbers', 'calls', 'knowledge_base', 'invitations']
  loop
    execute format('create or replace trigger touch_updated_at before update on public.%I
                      for each row execute function switchboard.touch_updated_at()', t);
  end loop;
end
$$;
