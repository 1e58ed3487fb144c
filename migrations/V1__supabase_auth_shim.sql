-- What Supabase provides and plain PostgreSQL lacks: the API roles and the
-- `auth` schema with `auth.users`, `auth.uid()`, `auth.jwt()` and
-- `auth.role()`, defined as Supabase defines them (they read the JWT claims
-- PostgREST puts into `request.jwt.claims`). On a Supabase project all of
-- this exists already and every step below is skipped, so the same
-- migrations run unchanged on both.

do $shim$
begin
  -- Roles are cluster-wide: another database's migration may create them
  -- concurrently, hence the exception handlers after the check.
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    begin
      create role anon nologin noinherit;
    exception when duplicate_object or unique_violation then null;
    end;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    begin
      create role authenticated nologin noinherit;
    exception when duplicate_object or unique_violation then null;
    end;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    begin
      create role service_role nologin noinherit bypassrls;
    exception when duplicate_object or unique_violation then null;
    end;
  end if;
  -- the role Supabase Auth runs its hooks as
  if not exists (select 1 from pg_roles where rolname = 'supabase_auth_admin') then
    begin
      create role supabase_auth_admin nologin noinherit;
    exception when duplicate_object or unique_violation then null;
    end;
  end if;

  if exists (select 1 from pg_namespace where nspname = 'auth') then
    return; -- Supabase (or an earlier shim): leave it alone
  end if;

  create schema auth;
  grant usage on schema auth to anon, authenticated, service_role;

  create table auth.users (
    id uuid primary key default gen_random_uuid(),
    email text unique,
    raw_app_meta_data jsonb not null default '{}'::jsonb,
    raw_user_meta_data jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
  );

  execute $fn$
    create function auth.uid() returns uuid
    language sql stable
    as $body$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $body$
  $fn$;

  execute $fn$
    create function auth.role() returns text
    language sql stable
    as $body$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
      )::text
    $body$
  $fn$;

  execute $fn$
    create function auth.jwt() returns jsonb
    language sql stable
    as $body$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $body$
  $fn$;

  grant execute on function auth.uid(), auth.role(), auth.jwt()
    to anon, authenticated, service_role;

  -- Supabase grants the API roles everything on `public` by default and
  -- leaves isolation to Row Level Security. Do the same here, so tests on
  -- plain PostgreSQL face the same defaults as a real project.
  grant usage on schema public to anon, authenticated, service_role;
  alter default privileges in schema public
    grant all on tables to anon, authenticated, service_role;
  alter default privileges in schema public
    grant all on sequences to anon, authenticated, service_role;
  alter default privileges in schema public
    grant all on functions to anon, authenticated, service_role;
end
$shim$;
