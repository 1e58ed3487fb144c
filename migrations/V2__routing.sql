-- Routing data: tenants, their AI agents, the numbers that reach them, and
-- the callers they know. Switchboard reads these; people manage them through
-- Supabase. Row Level Security is on for every table, so until policies
-- grant access, API users (anon, authenticated) see nothing.

create type public.plan_tier as enum ('starter', 'pro', 'enterprise');

-- Keeps updated_at honest whoever writes the row.
create function switchboard.touch_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create table public.organizations (
  id uuid primary key default gen_random_uuid(),
  slug text not null unique
    check (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
  name text not null check (length(name) between 1 and 200),
  plan_tier public.plan_tier not null default 'starter',
  settings jsonb not null default '{}'::jsonb
    check (jsonb_typeof(settings) = 'object'),
  -- false: the organization takes no calls (suspended for billing, ...)
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table public.agents (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  name text not null check (length(name) between 1 and 200),
  voice_id text not null,
  -- model, prompt, tools; provider secrets never live here
  llm_config jsonb not null default '{}'::jsonb
    check (jsonb_typeof(llm_config) = 'object'),
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- target of composite foreign keys: a row that names an agent must name
  -- the agent's own organization
  unique (org_id, id)
);

create table public.phone_numbers (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  agent_id uuid not null,
  -- canonical E.164, unique across the platform: one number, one route
  number text not null unique check (number ~ '^\+[1-9][0-9]{6,14}$'),
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, agent_id) references public.agents (org_id, id)
);
create index phone_numbers_org_agent_idx on public.phone_numbers (org_id, agent_id);

create table public.customers (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  phone text not null check (phone ~ '^\+[1-9][0-9]{6,14}$'),
  name text,
  email text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, phone),
  unique (org_id, id)
);

create trigger touch_updated_at before update on public.organizations
  for each row execute function switchboard.touch_updated_at();
create trigger touch_updated_at before update on public.agents
  for each row execute function switchboard.touch_updated_at();
create trigger touch_updated_at before update on public.phone_numbers
  for each row execute function switchboard.touch_updated_at();
create trigger touch_updated_at before update on public.customers
  for each row execute function switchboard.touch_updated_at();

alter table public.organizations enable row level security;
alter table public.agents enable row level security;
alter table public.phone_numbers enable row level security;
alter table public.customers enable row level security;
