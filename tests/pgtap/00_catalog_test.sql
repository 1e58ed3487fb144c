-- The catalog: RLS everywhere, policies for the right roles, locked-down
-- functions, no dangerous table privileges, indexed tenant keys. These hold
-- for any table or function added later, not only for today's.
begin;
select plan(17);

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
  $$select n.nspname from pg_namespace n
     where n.nspname !~ '^(pg_|information_schema$)'
       and (has_schema_privilege('anon', n.oid, 'CREATE')
            or has_schema_privilege('authenticated', n.oid, 'CREATE'))$$,
  'anon and authenticated cannot create objects in any schema');

-- functions -------------------------------------------------------------------------

select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where p.prosecdef
       and n.nspname !~ '^(pg_|information_schema$)'
       and not exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%')$$,
  'every security definer function outside the system schemas has a fixed search_path');

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
                               'public.custom_access_token_hook(jsonb)']) f
     where has_function_privilege('anon', f::regprocedure, 'EXECUTE')$$,
  'anon cannot execute invite_member, accept_invitation or custom_access_token_hook');

select ok(
  not has_function_privilege('authenticated', 'public.custom_access_token_hook(jsonb)', 'EXECUTE')
  and has_function_privilege('supabase_auth_admin', 'public.custom_access_token_hook(jsonb)', 'EXECUTE'),
  'only supabase_auth_admin (not authenticated) can execute the access token hook');

select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
     where p.pronamespace = 'switchboard'::regnamespace
       and has_function_privilege('authenticated', p.oid, 'EXECUTE')
       and p.oid not in ('switchboard.org_ids(public.member_role, boolean)'::regprocedure,
                         'switchboard.has_role(uuid, public.member_role)'::regprocedure,
                         'switchboard.is_member(uuid)'::regprocedure)$$,
  'authenticated can execute no switchboard function beyond org_ids, has_role and is_member');

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
