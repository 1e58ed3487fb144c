-- Adopting a multi-tenant database (migrations/README.md, "Adopting a
-- multi-tenant database"), step 1 of 3: before V2.
--
-- V2 creates its tables with `create table if not exists`, which leaves a
-- table the database already has as it is. Here the organizations, profiles,
-- calls and knowledge base a multi-tenant application built get the columns
-- that V2's keys and indexes, V3's policies and V4's triggers need, with the
-- defaults a new row gets. `switchboard migrate` runs this only on such a
-- database (profiles carrying org_id), in the transaction that applies the
-- migrations; on a database V2 was already applied to, every statement finds
-- its work done. Reasons for what cannot be converted are kept in
-- pg_temp.adoption_notes until V2 has created switchboard.adoption_issues.

create temporary table if not exists adoption_notes (
  table_name text not null,
  row_id uuid,
  issue text not null
) on commit drop;

-- V2's plan tier type; V2 skips it when it exists
do $$
begin
  if not exists (select 1 from pg_type where typname = 'plan_tier' and typnamespace = 'public'::regnamespace) then
    create type public.plan_tier as enum ('starter', 'pro', 'enterprise');
  end if;
end
$$;

alter table public.organizations
  add column if not exists settings jsonb not null default '{}'::jsonb,
  add column if not exists concurrency_limit integer,
  add column if not exists is_active boolean not null default true,
  add column if not exists deleted_at timestamptz,
  add column if not exists created_at timestamptz not null default now(),
  add column if not exists updated_at timestamptz not null default now();

-- A plan tier kept as text ('Starter', 'Pro', 'Enterprise', as the case study
-- documents it) becomes the enum, case-insensitively; another value becomes
-- 'starter' and is recorded with what it was.
do $$
declare
  tier_type regtype;
begin
  select a.atttypid::regtype into tier_type
    from pg_attribute a
   where a.attrelid = 'public.organizations'::regclass and a.attname = 'plan_tier' and not a.attisdropped;
  if tier_type is null then
    alter table public.organizations add column plan_tier public.plan_tier not null default 'starter';
  elsif tier_type <> 'public.plan_tier'::regtype then
    insert into pg_temp.adoption_notes (table_name, row_id, issue)
    select 'public.organizations', o.id,
           format('plan_tier %L is not starter, pro or enterprise; set to starter', o.plan_tier)
      from public.organizations o
     where lower(btrim(o.plan_tier::text)) not in ('starter', 'pro', 'enterprise') or o.plan_tier is null;
    alter table public.organizations alter column plan_tier drop default;
    alter table public.organizations alter column plan_tier type public.plan_tier using (
      case when lower(btrim(plan_tier::text)) in ('starter', 'pro', 'enterprise')
           then lower(btrim(plan_tier::text)) else 'starter' end)::public.plan_tier;
    alter table public.organizations
      alter column plan_tier set default 'starter',
      alter column plan_tier set not null;
  end if;
end
$$;

alter table public.profiles
  add column if not exists last_active_org_id uuid references public.organizations (id) on delete set null,
  add column if not exists created_at timestamptz not null default now(),
  add column if not exists updated_at timestamptz not null default now();

do $$
begin
  if to_regclass('public.agents') is not null then
    -- V2 makes both required; the case study already does
    alter table public.agents
      add column if not exists name text,
      add column if not exists voice_id text;
    update public.agents set name = 'Agent ' || left(id::text, 8) where name is null;
    update public.agents set voice_id = '' where voice_id is null;
  end if;

  if to_regclass('public.knowledge_base') is not null then
    alter table public.knowledge_base
      add column if not exists agent_id uuid,
      add column if not exists title text,
      add column if not exists content text,
      add column if not exists metadata jsonb not null default '{}'::jsonb,
      add column if not exists created_at timestamptz not null default now(),
      add column if not exists updated_at timestamptz not null default now();
  end if;

  if to_regclass('public.calls') is not null then
    alter table public.calls
      add column if not exists agent_id uuid,
      add column if not exists status text;
    -- the application's calls are over; V2 makes status required
    update public.calls set status = 'completed' where status is null;
    -- a call the application filed without its organization belongs to its agent's
    if to_regclass('public.agents') is not null
       and exists (select 1 from pg_attribute
                    where attrelid = 'public.calls'::regclass and attname = 'org_id' and not attisdropped) then
      update public.calls c set org_id = a.org_id
        from public.agents a
       where c.org_id is null and a.id = c.agent_id;
    end if;
  end if;
end
$$;
