-- The catalog: RLS everywhere, policies for the right roles, locked-down
-- functions, no dangerous table or sequence privileges (today's and the
-- defaults for tomorrow's), indexed tenant keys. These hold for any table or
-- function added later, not only for today's.
--
-- Only the project's own schemas (public, switchboard) are scanned: on a
-- Supabase project the others (auth, storage, extensions, …) are Supabase's.
begin;
select plan(24);

-- row level security ------------------------------------------------------------

select isnt_empty(
  $$select 1 from pg_class where relnamespace = 'public'::regnamespace and relkind in ('r', 'p')$$,
  'schema public has tables (the checks below are not vacuous)');

select is_empty(
  $$select c.relname from pg_class c
     where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
       and not c.relrowsecurity$$,
  'every table in schema public has row level security enabled');

select is_empty(
  $$select c.relname from pg_class c
     where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
       and not exists (select 1 from pg_policy p where p.polrelid = c.oid)$$,
  'every table in schema public has at least one policy');

select is_empty(
  $$select c.relname from pg_class c
     where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
       and not exists (select 1 from pg_policies p
                        where p.schemaname = 'public' and p.tablename = c.relname
                          and 'authenticated' = any (p.roles))$$,
  'every table in schema public has a policy for authenticated');

select is_empty(
  $$select tablename || '.' || policyname from pg_policies
     where schemaname = 'public' and ('public' = any (roles) or 'anon' = any (roles))$$,
  'no policy in schema public applies to anon or to every role (PUBLIC)');

select is_empty(
  $$select c.relname from pg_class c
     where c.relnamespace = 'public'::regnamespace and c.relkind in ('v', 'm', 'f')$$,
  'schema public has no views or foreign tables (they would bypass RLS)');

-- table privileges ----------------------------------------------------------------

select is_empty(
  $$select c.relname || ': ' || p.privilege
      from pg_class c
      cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p(privilege)
     where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
       and has_table_privilege('anon', c.oid, p.privilege)$$,
  'anon holds no privilege on any table in schema public');

select is_empty(
  $$select c.relname || ': ' || p.privilege
      from pg_class c
      cross join unnest(array['TRUNCATE', 'REFERENCES', 'TRIGGER']) p(privilege)
     where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
       and has_table_privilege('authenticated', c.oid, p.privilege)$$,
  'authenticated cannot truncate, reference or put triggers on any table in schema public');

select is_empty(
  $$select c.relname || ': ' || r.rolname || ' ' || p.privilege
      from pg_class c
      cross join unnest(array['anon', 'authenticated', 'service_role', 'switchboard_daemon']) r(rolname)
      cross join unnest(array['REFERENCES', 'TRIGGER']) p(privilege)
     where c.relnamespace in ('public'::regnamespace, 'switchboard'::regnamespace)
       and c.relkind in ('r', 'p')
       and has_table_privilege(r.rolname, c.oid, p.privilege)$$,
  'no API role nor the daemon can reference or put triggers on any table');

select is_empty(
  $$select r.rolname from unnest(array['anon', 'authenticated', 'service_role', 'switchboard_daemon']) r(rolname)
     where has_table_privilege(r.rolname, 'public.audit_log', 'TRUNCATE,INSERT,UPDATE,DELETE')$$,
  'no API role nor the daemon can write, truncate or hook into the audit log');

select is_empty(
  $$select n.nspname from pg_namespace n
     where n.nspname in ('public', 'switchboard')
       and (has_schema_privilege('anon', n.oid, 'CREATE')
            or has_schema_privilege('authenticated', n.oid, 'CREATE'))$$,
  'anon and authenticated cannot create objects in the project''s schemas');

-- sequences and default privileges ------------------------------------------------

select isnt_empty(
  $$select 1 from pg_class where relnamespace = 'public'::regnamespace and relkind = 'S'$$,
  'schema public has sequences (the check below is not vacuous)');

-- setval (UPDATE) and reading (SELECT) on no sequence; nextval (USAGE) only
-- on a serial column's, of a table of the project's own in public (identity
-- columns, as all of ours are, need none)
select is_empty(
  $$select c.oid::regclass::text || ': ' || r.rolname || ' ' || p.privilege
      from pg_class c
      cross join unnest(array['anon', 'authenticated', 'service_role', 'switchboard_daemon']) r(rolname)
      cross join unnest(array['USAGE', 'SELECT', 'UPDATE']) p(privilege)
     where c.relnamespace in ('public'::regnamespace, 'switchboard'::regnamespace)
       and c.relkind = 'S'
       and has_sequence_privilege(r.rolname, c.oid, p.privilege)
       and (p.privilege <> 'USAGE'
            or c.relnamespace = 'switchboard'::regnamespace
            or exists (select 1 from pg_depend d
                        where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'i'))$$,
  'no API role nor the daemon can setval or read a sequence, nor nextval an identity column''s');

-- What tables and sequences created later by the role that owns ours will
-- grant, in the project's schemas or everywhere.
create temporary view future_grants as
  select d.defaclobjtype as objtype, g.rolname, a.privilege_type
    from pg_default_acl d
    cross join lateral aclexplode(d.defaclacl) a
    join pg_roles g on g.oid = a.grantee
   where d.defaclrole = (select relowner from pg_class where oid = 'public.audit_log'::regclass)
     and (d.defaclnamespace = 0
          or d.defaclnamespace in ('public'::regnamespace, 'switchboard'::regnamespace));

select is_empty(
  $$select rolname || ' ' || privilege_type from future_grants
     where objtype = 'S' and rolname in ('anon', 'authenticated', 'service_role')
       and privilege_type in ('SELECT', 'UPDATE')$$,
  'future sequences grant the API roles at most nextval (usage): no setval, no reading');

select is_empty(
  $$select rolname || ' ' || privilege_type from future_grants
     where objtype = 'r'
       and ((rolname in ('anon', 'authenticated') and privilege_type in ('TRUNCATE', 'REFERENCES', 'TRIGGER'))
            or (rolname = 'service_role' and privilege_type in ('REFERENCES', 'TRIGGER')))$$,
  'future tables grant no API role triggers or references, nor truncate to anon and authenticated');

-- functions -------------------------------------------------------------------------

select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where p.prosecdef
       and n.nspname in ('public', 'switchboard')
       and not exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%')$$,
  'every security definer function in the project''s schemas has a fixed search_path');

select isnt_empty(
  $$select 1 from pg_proc where prosecdef and pronamespace = 'switchboard'::regnamespace$$,
  'schema switchboard has security definer functions (the check above is not vacuous)');

select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
     where p.pronamespace = 'switchboard'::regnamespace
       and has_function_privilege('anon', p.oid, 'EXECUTE')$$,
  'anon cannot execute any function in schema switchboard');

select is_empty(
  $$select f from unnest(array['public.invite_member(uuid, text, public.member_role, interval)',
                               'public.accept_invitation(text)',
                               'public.create_organization(text, text, jsonb)',
                               'public.transfer_ownership(uuid, uuid)',
                               'public.last_active_org()',
                               'public.custom_access_token_hook(jsonb)']) f
     where to_regprocedure(f) is null or has_function_privilege('anon', to_regprocedure(f), 'EXECUTE')$$,
  'our functions in schema public exist and anon can execute none of them');

select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
     where p.pronamespace in ('public'::regnamespace, 'switchboard'::regnamespace)
       and not exists (select 1 from pg_depend d
                        where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
       and has_function_privilege('anon', p.oid, 'EXECUTE')$$,
  'anon can execute no function of the project''s schemas (revoke it from every function you add)');

select ok(
  not has_function_privilege('authenticated', 'public.custom_access_token_hook(jsonb)', 'EXECUTE')
  and has_function_privilege('supabase_auth_admin', 'public.custom_access_token_hook(jsonb)', 'EXECUTE'),
  'only supabase_auth_admin (not authenticated) can execute the access token hook');

select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
     where p.pronamespace = 'switchboard'::regnamespace
       and has_function_privilege('authenticated', p.oid, 'EXECUTE')
       and p.oid <> all (array_remove(array[
             to_regprocedure('switchboard.org_ids(public.member_role, boolean)'),
             to_regprocedure('switchboard.has_role(uuid, public.member_role)'),
             to_regprocedure('switchboard.is_member(uuid)'),
             -- called by check constraints, with the writer's privileges
             to_regprocedure('switchboard.check_tenant_json(jsonb, text, integer)'),
             to_regprocedure('switchboard.is_secret_key(text)')]::oid[], null))$$,
  'authenticated can execute no switchboard function beyond the policy helpers and the checks'' functions');

-- tenant keys are indexed ---------------------------------------------------------------

-- Every org_id (and memberships.user_id) that a policy of its table compares
-- must lead an index, or each query scans the table.
create temporary view tenant_keys as
  select c.oid as relid, c.relname, a.attnum, a.attname
    from pg_class c
    join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
   where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
     and (a.attname = 'org_id' or (c.relname = 'memberships' and a.attname = 'user_id'))
     and exists (select 1 from pg_policies p
                  where p.schemaname = 'public' and p.tablename = c.relname
                    and concat_ws(' ', p.qual, p.with_check) ~ ('\m' || a.attname || '\M'));

select set_has(
  $$select relname || '.' || attname from tenant_keys$$,
  $$select unnest(array['agents.org_id', 'audit_log.org_id', 'calls.org_id', 'customers.org_id',
                        'invitations.org_id', 'knowledge_base.org_id', 'memberships.org_id',
                        'memberships.user_id', 'phone_numbers.org_id', 'usage_events.org_id'])$$,
  'policies compare the tenant keys of every tenant table');

select is_empty(
  $$select relname || '.' || attname from tenant_keys k
     where not exists (select 1 from pg_index i
                        where i.indrelid = k.relid and i.indkey[0] = k.attnum)$$,
  'every tenant key a policy compares (org_id, memberships.user_id) leads an index');

select * from finish();
rollback;
