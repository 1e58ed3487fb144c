-- Who may see and change what. Row Level Security is the only thing between
-- one tenant and another's data for anyone using the Supabase API, so every
-- table in `public` has RLS on and policies for `authenticated` only (`anon`
-- gets nothing), plus narrow policies for the daemon's own role.
--
-- Roles rank owner > admin > manager > viewer:
--   viewer   reads the org's data
--   manager  also manages agents, numbers, customers and the knowledge base
--   admin    also manages members and invitations, reads the audit log
--   owner    also the organization itself
-- Billing fields (plan_tier, concurrency_limit, is_active) are changed by the
-- platform (service_role), never through the API.

-- helpers: in `switchboard`, which the API does not expose ---------------------

-- The orgs the calling user belongs to with at least `min_role`, as an
-- array. Policies compare `org_id = any ((select switchboard.org_ids(…))::uuid[])`:
-- the sub-select is evaluated once per query (an InitPlan) and the
-- comparison can use the org_id index, instead of a function call per row.
create or replace function switchboard.org_ids(
  min_role public.member_role default 'viewer', include_deleted boolean default false
) returns uuid[]
language sql stable security definer
set search_path = ''
as $$
  select coalesce(array_agg(m.org_id), '{}')
    from public.memberships m
    join public.organizations o on o.id = m.org_id
   where m.user_id = (select auth.uid())
     and m.role >= min_role
     and (include_deleted or o.deleted_at is null)
$$;

create or replace function switchboard.has_role(org uuid, min_role public.member_role)
returns boolean
language sql stable security definer
set search_path = ''
as $$
  select exists (
    select 1
      from public.memberships m
      join public.organizations o on o.id = m.org_id
     where m.org_id = org
       and m.user_id = (select auth.uid())
       and m.role >= min_role
       and o.deleted_at is null
  )
$$;

create or replace function switchboard.is_member(org uuid) returns boolean
language sql stable security definer
set search_path = ''
as $$
  select switchboard.has_role(org, 'viewer')
$$;

revoke all on all functions in schema switchboard from public;
revoke all on all procedures in schema switchboard from public;
grant usage on schema switchboard to authenticated;
grant execute on function switchboard.org_ids(public.member_role, boolean),
                          switchboard.has_role(uuid, public.member_role),
                          switchboard.is_member(uuid)
  to authenticated;

-- the daemon's role ----------------------------------------------------------

-- Reads routing data, writes calls and usage; nothing else. `switchboard
-- migrate` gives it LOGIN and its password when configured to.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'switchboard_daemon') then
    begin
      create role switchboard_daemon nologin noinherit;
    exception when duplicate_object or unique_violation then null;
    end;
  end if;
end
$$;
grant usage on schema public to switchboard_daemon;
grant select on public.organizations, public.agents, public.phone_numbers, public.customers
  to switchboard_daemon;
grant select, insert, update on public.calls, public.usage_events to switchboard_daemon;

-- table privileges: what RLS then filters --------------------------------------

revoke all on public.organizations, public.memberships, public.profiles, public.agents,
              public.customers, public.phone_numbers, public.calls, public.usage_events,
              public.knowledge_base, public.invitations, public.audit_log
  from anon;

revoke insert, update on public.organizations from authenticated;
grant insert (slug, name, settings) on public.organizations to authenticated;
grant update (slug, name, settings, deleted_at) on public.organizations to authenticated;
revoke update on public.memberships from authenticated;
grant update (role) on public.memberships to authenticated;
revoke insert, update, delete, truncate on public.calls, public.usage_events from authenticated;
revoke insert, update on public.invitations from authenticated;
grant update (revoked_at) on public.invitations to authenticated;
revoke insert, update, delete, truncate on public.audit_log
  from authenticated, service_role, switchboard_daemon;
-- truncate bypasses RLS; trigger would let a user hook code into every
-- tenant's writes
revoke truncate, references, trigger on all tables in schema public from authenticated;

-- row level security ------------------------------------------------------------

-- An adopted database may carry the single-tenant app's own policies, which
-- would widen access (policies of a command are OR-ed). Drop them.
do $$
declare
  p record;
begin
  for p in
    select schemaname, tablename, policyname
      from pg_policies
     where schemaname = 'public'
       and tablename in ('organizations', 'memberships', 'profiles', 'agents', 'customers',
                         'phone_numbers', 'calls', 'usage_events', 'knowledge_base',
                         'invitations', 'audit_log')
  loop
    execute format('drop policy %I on %I.%I', p.policyname, p.schemaname, p.tablename);
    insert into switchboard.adoption_issues (table_name, issue)
    values (p.schemaname || '.' || p.tablename, format('dropped pre-existing policy %I', p.policyname));
  end loop;
end
$$;

alter table public.organizations enable row level security;
alter table public.memberships enable row level security;
alter table public.profiles enable row level security;
alter table public.agents enable row level security;
alter table public.customers enable row level security;
alter table public.phone_numbers enable row level security;
alter table public.calls enable row level security;
alter table public.usage_events enable row level security;
alter table public.knowledge_base enable row level security;
alter table public.invitations enable row level security;
alter table public.audit_log enable row level security;

-- organizations
create policy organizations_select on public.organizations for select to authenticated
  using (id = any ((select switchboard.org_ids('viewer'))::uuid[]));
-- anyone signed in may found an organization; they become its owner (trigger below)
create policy organizations_insert on public.organizations for insert to authenticated
  with check ((select auth.uid()) is not null);
-- owners edit and soft-delete (deleted_at) their organization
create policy organizations_update on public.organizations for update to authenticated
  using (id = any ((select switchboard.org_ids('owner'))::uuid[]))
  with check (id = any ((select switchboard.org_ids('owner', true))::uuid[]));

-- memberships
create policy memberships_select on public.memberships for select to authenticated
  using (org_id = any ((select switchboard.org_ids('viewer'))::uuid[])
         or user_id = (select auth.uid()));
-- admins add members; only owners make owners
create policy memberships_insert on public.memberships for insert to authenticated
  with check (org_id = any ((select switchboard.org_ids('admin'))::uuid[])
              and (role < 'owner' or org_id = any ((select switchboard.org_ids('owner'))::uuid[])));
create policy memberships_update on public.memberships for update to authenticated
  using (org_id = any ((select switchboard.org_ids('admin'))::uuid[])
         and (role < 'owner' or org_id = any ((select switchboard.org_ids('owner'))::uuid[])))
  with check (org_id = any ((select switchboard.org_ids('admin'))::uuid[])
              and (role < 'owner' or org_id = any ((select switchboard.org_ids('owner'))::uuid[])));
-- admins remove members (owners only by owners); anyone may leave
create policy memberships_delete on public.memberships for delete to authenticated
  using (user_id = (select auth.uid())
         or (org_id = any ((select switchboard.org_ids('admin'))::uuid[])
             and (role < 'owner' or org_id = any ((select switchboard.org_ids('owner'))::uuid[]))));

-- profiles: your own, and those of people you share an org with
create policy profiles_select on public.profiles for select to authenticated
  using (id = (select auth.uid())
         or id in (select m.user_id from public.memberships m
                    where m.org_id = any ((select switchboard.org_ids('viewer'))::uuid[])));
create policy profiles_insert on public.profiles for insert to authenticated
  with check (id = (select auth.uid())
              and (last_active_org_id is null
                   or last_active_org_id = any ((select switchboard.org_ids('viewer'))::uuid[])));
create policy profiles_update on public.profiles for update to authenticated
  using (id = (select auth.uid()))
  with check (id = (select auth.uid())
              and (last_active_org_id is null
                   or last_active_org_id = any ((select switchboard.org_ids('viewer'))::uuid[])));

-- agents, phone numbers, customers, knowledge base: viewers read, managers write
do $$
declare
  t text;
begin
  foreach t in array array['agents', 'phone_numbers', 'customers', 'knowledge_base']
  loop
    execute format($p$
      create policy %1$s_select on public.%1$I for select to authenticated
        using (org_id = any ((select switchboard.org_ids('viewer'))::uuid[]));
      create policy %1$s_insert on public.%1$I for insert to authenticated
        with check (org_id = any ((select switchboard.org_ids('manager'))::uuid[]));
      create policy %1$s_update on public.%1$I for update to authenticated
        using (org_id = any ((select switchboard.org_ids('manager'))::uuid[]))
        with check (org_id = any ((select switchboard.org_ids('manager'))::uuid[]));
      create policy %1$s_delete on public.%1$I for delete to authenticated
        using (org_id = any ((select switchboard.org_ids('manager'))::uuid[]));
    $p$, t);
  end loop;
end
$$;

-- calls and usage: written by the daemon, read by the org
create policy calls_select on public.calls for select to authenticated
  using (org_id = any ((select switchboard.org_ids('viewer'))::uuid[]));
create policy usage_events_select on public.usage_events for select to authenticated
  using (org_id = any ((select switchboard.org_ids('viewer'))::uuid[]));

-- invitations: admins see, revoke (revoked_at) and delete; created and
-- accepted through the functions below
create policy invitations_select on public.invitations for select to authenticated
  using (org_id = any ((select switchboard.org_ids('admin'))::uuid[]));
create policy invitations_update on public.invitations for update to authenticated
  using (org_id = any ((select switchboard.org_ids('admin'))::uuid[]))
  with check (org_id = any ((select switchboard.org_ids('admin'))::uuid[]));
create policy invitations_delete on public.invitations for delete to authenticated
  using (org_id = any ((select switchboard.org_ids('admin'))::uuid[]));

-- audit log: admins and owners read their org's trail
create policy audit_log_select on public.audit_log for select to authenticated
  using (org_id = any ((select switchboard.org_ids('admin'))::uuid[]));

-- the daemon
create policy organizations_daemon on public.organizations for select to switchboard_daemon using (true);
create policy agents_daemon on public.agents for select to switchboard_daemon using (true);
create policy phone_numbers_daemon on public.phone_numbers for select to switchboard_daemon using (true);
create policy customers_daemon on public.customers for select to switchboard_daemon using (true);
create policy calls_daemon on public.calls for all to switchboard_daemon using (true) with check (true);
create policy usage_events_daemon on public.usage_events for all to switchboard_daemon
  using (true) with check (true);

-- invariants kept by triggers ------------------------------------------------

-- The founder of an organization becomes its owner.
create or replace function switchboard.add_founder_as_owner() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  if (select auth.uid()) is not null then
    insert into public.memberships (org_id, user_id, role)
    values (new.id, (select auth.uid()), 'owner')
    on conflict do nothing;
  end if;
  return new;
end
$$;
create or replace trigger add_founder_as_owner after insert on public.organizations
  for each row execute function switchboard.add_founder_as_owner();

-- Nobody raises their own role (but accepting an open invitation grants its
-- role); an organization never loses its last owner (except when the
-- organization itself is being deleted).
create or replace function switchboard.guard_membership() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' and new.user_id = (select auth.uid()) and new.role > old.role
     and not exists (
       select 1
         from public.invitations i
         join auth.users u on lower(u.email) = i.email
        where u.id = new.user_id and i.org_id = new.org_id and i.role >= new.role
          and i.accepted_at is null and i.revoked_at is null and i.expires_at > now()
     ) then
    raise exception 'you cannot raise your own role'
      using errcode = 'insufficient_privilege';
  end if;
  if old.role = 'owner' and (tg_op = 'DELETE' or new.role <> 'owner' or new.org_id <> old.org_id) then
    -- lock the organization: two owners demoting each other concurrently
    -- must not both succeed
    perform 1 from public.organizations where id = old.org_id for update;
    if found and not exists (
      select 1 from public.memberships
       where org_id = old.org_id and role = 'owner' and user_id <> old.user_id
    ) then
      raise exception 'an organization must keep at least one owner'
        using errcode = 'check_violation',
              hint = 'make another member owner first';
    end if;
  end if;
  return coalesce(new, old);
end
$$;
create or replace trigger guard_membership before update or delete on public.memberships
  for each row execute function switchboard.guard_membership();

-- Every user gets a profile.
create or replace function switchboard.create_profile() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  insert into public.profiles (id, full_name)
  values (new.id, new.raw_user_meta_data ->> 'full_name')
  on conflict (id) do nothing;
  return new;
end
$$;
create or replace trigger create_profile after insert on auth.users
  for each row execute function switchboard.create_profile();

-- audit log -----------------------------------------------------------------

-- Records who (the JWT's user), what, and the row before and after.
create or replace function switchboard.audit() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  old_row jsonb := case when tg_op <> 'INSERT' then to_jsonb(old) end;
  new_row jsonb := case when tg_op <> 'DELETE' then to_jsonb(new) end;
  row_data jsonb := coalesce(new_row, old_row);
begin
  -- never copy credentials into the trail
  old_row := old_row - 'token_hash';
  new_row := new_row - 'token_hash';
  insert into public.audit_log (org_id, actor_id, actor_role, action, table_name, row_id, old_row, new_row)
  values (
    case when tg_table_name = 'organizations' then (row_data ->> 'id')::uuid
         else (row_data ->> 'org_id')::uuid end,
    (select auth.uid()),
    coalesce(nullif((select auth.role()), ''), session_user::text),
    tg_op,
    tg_table_name,
    coalesce(row_data ->> 'id', concat_ws(':', row_data ->> 'org_id', row_data ->> 'user_id')),
    old_row,
    new_row
  );
  return null;
end
$$;

do $$
declare
  t text;
begin
  foreach t in array array['organizations', 'memberships', 'agents', 'phone_numbers', 'invitations']
  loop
    execute format('create or replace trigger audit after insert or update or delete on public.%I
                      for each row execute function switchboard.audit()', t);
  end loop;
end
$$;

-- append-only, even for the table owner
create or replace function switchboard.forbid_change() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception '% is append-only', tg_table_name using errcode = 'insufficient_privilege';
end
$$;
create or replace trigger append_only before update or delete on public.audit_log
  for each row execute function switchboard.forbid_change();
create or replace trigger append_only_truncate before truncate on public.audit_log
  for each statement execute function switchboard.forbid_change();

-- invitations ---------------------------------------------------------------

-- Invites `email` to `org` with `role` and returns the token, once; only
-- its hash is stored. Admins invite up to admin, owners also owners. An open
-- invitation to the same address is replaced.
create or replace function public.invite_member(
  org uuid, email text, role public.member_role default 'viewer',
  valid_for interval default interval '7 days'
) returns text
language plpgsql security definer
set search_path = ''
as $$
declare
  token text := encode(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()), 'hex');
  address text := lower(trim(email));
begin
  if not switchboard.has_role(org, 'admin') then
    raise exception 'only admins and owners can invite members' using errcode = 'insufficient_privilege';
  end if;
  if role = 'owner' and not switchboard.has_role(org, 'owner') then
    raise exception 'only owners can invite owners' using errcode = 'insufficient_privilege';
  end if;
  if address !~ '^[^@\s]+@[^@\s]+$' then
    raise exception 'not an email address: %', email using errcode = 'invalid_parameter_value';
  end if;
  if valid_for <= interval '0' or valid_for > interval '30 days' then
    raise exception 'an invitation is valid for up to 30 days' using errcode = 'invalid_parameter_value';
  end if;
  update public.invitations i set revoked_at = now()
   where i.org_id = org and i.email = address and i.accepted_at is null and i.revoked_at is null;
  insert into public.invitations (org_id, email, role, token_hash, invited_by, expires_at)
  values (org, address, role, sha256(convert_to(token, 'UTF8')), (select auth.uid()), now() + valid_for);
  return token;
end
$$;

-- Accepts an invitation for the signed-in user, whose email must be the
-- invited one, and returns the organization joined. An existing member
-- keeps the higher of the two roles.
create or replace function public.accept_invitation(token text) returns uuid
language plpgsql security definer
set search_path = ''
as $$
declare
  uid uuid := (select auth.uid());
  inv public.invitations;
  user_email text;
begin
  if uid is null then
    raise exception 'sign in to accept an invitation' using errcode = 'insufficient_privilege';
  end if;
  select * into inv from public.invitations
   where token_hash = sha256(convert_to(coalesce(token, ''), 'UTF8'))
   for update;
  if not found then
    raise exception 'invitation not found' using errcode = 'no_data_found';
  end if;
  if inv.accepted_at is not null then
    raise exception 'invitation already used' using errcode = 'invalid_parameter_value';
  end if;
  if inv.revoked_at is not null then
    raise exception 'invitation revoked' using errcode = 'invalid_parameter_value';
  end if;
  if exists (select 1 from public.organizations o where o.id = inv.org_id and o.deleted_at is not null) then
    raise exception 'the organization no longer exists' using errcode = 'invalid_parameter_value';
  end if;
  if inv.expires_at <= now() then
    raise exception 'invitation expired' using errcode = 'invalid_parameter_value';
  end if;
  select lower(u.email) into user_email from auth.users u where u.id = uid;
  if user_email is distinct from inv.email then
    raise exception 'invitation is for a different email address' using errcode = 'insufficient_privilege';
  end if;

  insert into public.memberships (org_id, user_id, role)
  values (inv.org_id, uid, inv.role)
  on conflict (org_id, user_id)
    do update set role = greatest(public.memberships.role, excluded.role);
  update public.invitations set accepted_at = now(), accepted_by = uid where id = inv.id;
  return inv.org_id;
end
$$;

-- Creates an organization owned by the caller and returns it. A plain
-- insert works too, but cannot return the row: RLS checks the new row
-- against the select policy before the founder's membership exists
-- (supabase-js `.insert().select()` fails; this does not).
create or replace function public.create_organization(
  slug text, name text, settings jsonb default '{}'::jsonb
) returns public.organizations
language plpgsql security definer
set search_path = ''
as $$
declare
  created public.organizations;
begin
  if (select auth.uid()) is null then
    raise exception 'sign in to create an organization' using errcode = 'insufficient_privilege';
  end if;
  insert into public.organizations (slug, name, settings)
  values (create_organization.slug, create_organization.name, coalesce(create_organization.settings, '{}'::jsonb))
  returning * into created;
  -- the founder trigger has made the caller its owner
  return created;
end
$$;

revoke all on function public.invite_member(uuid, text, public.member_role, interval),
                       public.accept_invitation(text),
                       public.create_organization(text, text, jsonb)
  from public, anon;
grant execute on function public.invite_member(uuid, text, public.member_role, interval),
                          public.accept_invitation(text),
                          public.create_organization(text, text, jsonb)
  to authenticated;

-- Supabase Auth custom access token hook ----------------------------------------

-- Adds the user's organizations and roles to the JWT (`app_metadata.orgs`,
-- {org id: role}) so a client can show the team switcher without a query.
-- Hints only: every policy reads memberships, so a removed member loses
-- access at once, whatever their token says. Enable it in the dashboard
-- (Authentication → Hooks) or config.toml ([auth.hook.custom_access_token]).
create or replace function public.custom_access_token_hook(event jsonb) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  claims jsonb := coalesce(event -> 'claims', '{}'::jsonb);
  orgs jsonb;
begin
  select coalesce(jsonb_object_agg(m.org_id, m.role), '{}'::jsonb) into orgs
    from public.memberships m
    join public.organizations o on o.id = m.org_id
   where m.user_id = (event ->> 'user_id')::uuid
     and o.deleted_at is null;
  claims := jsonb_set(claims, '{app_metadata}', coalesce(claims -> 'app_metadata', '{}'::jsonb));
  claims := jsonb_set(claims, '{app_metadata,orgs}', orgs);
  return jsonb_set(event, '{claims}', claims);
end
$$;

revoke all on function public.custom_access_token_hook(jsonb) from public, anon, authenticated;
-- functions created since the revoke at the top got PUBLIC's default
-- EXECUTE; triggers fire without it
revoke all on all functions in schema switchboard from public;
grant execute on function public.custom_access_token_hook(jsonb) to supabase_auth_admin;
grant usage on schema public to supabase_auth_admin;
grant select on public.memberships, public.organizations to supabase_auth_admin;
create policy memberships_auth_hook on public.memberships for select to supabase_auth_admin using (true);
create policy organizations_auth_hook on public.organizations for select to supabase_auth_admin using (true);
