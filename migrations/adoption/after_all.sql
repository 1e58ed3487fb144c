-- Adopting a multi-tenant database (migrations/README.md, "Adopting a
-- multi-tenant database"), step 3 of 3: after the last migration, when the
-- policies no longer use what the application left behind.

-- The case study's helpers are SECURITY DEFINER without a fixed search_path
-- and executable by anon and authenticated; no policy uses them any more.
-- They are dropped, or, where something else of the application's still
-- depends on them, kept but closed to the API roles and given a search_path.
do $$
declare
  f record;
begin
  for f in
    select p.oid::regprocedure::text as sig
      from pg_proc p
     where p.pronamespace = 'public'::regnamespace
       and p.proname in ('get_my_org_id', 'is_super_admin')
       and p.pronargs = 0
  loop
    begin
      execute format('drop function %s', f.sig);
      call pg_temp.note('public', null, format('dropped the function %s: no policy uses it any more', f.sig));
    exception when dependent_objects_still_exist then
      execute format('revoke all on function %s from public, anon, authenticated', f.sig);
      execute format('alter function %s set search_path = public, pg_temp', f.sig);
      call pg_temp.note('public', null, format(
        'kept the function %s, which other objects use: execute revoked from anon and authenticated, search_path fixed; %s',
        f.sig, sqlerrm));
    end;
  end loop;

  -- any other SECURITY DEFINER function of the application without a fixed
  -- search_path is listed for review, not changed
  for f in
    select p.oid::regprocedure::text as sig
      from pg_proc p
     where p.pronamespace = 'public'::regnamespace
       and p.prosecdef
       and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')
  loop
    call pg_temp.note('public', null, format(
      'the function %s is SECURITY DEFINER without a fixed search_path: left as it is, review it', f.sig));
  end loop;
end
$$;

-- profiles.org_id and profiles.role stay for the application but no longer
-- grant anything here. A user must not be able to rewrite them on their own
-- profile through the API: an application that still trusts them would hand
-- out another tenant's data.
revoke insert, update on public.profiles from authenticated;
grant insert (id, full_name, last_active_org_id), update (full_name, last_active_org_id)
  on public.profiles to authenticated;

-- done: a later `switchboard migrate` does not convert profiles again (a
-- membership removed since stays removed)
create table if not exists switchboard.adoptions (
  shape text primary key,
  adopted_at timestamptz not null default now()
);
insert into switchboard.adoptions (shape) values ('multi_tenant') on conflict do nothing;
