-- Shared fixtures and helpers for the pgTAP suite, in schema `tests`.
-- deploy/local/pgtap loads this once into a freshly migrated database; each
-- *_test.sql then runs in its own transaction and rolls back.
--
--   tests.id('org_a')            deterministic id of a fixture (org, user, row)
--   tests.seed()                 orgs A and B, their members and one row of
--                                everything (run as the superuser)
--   tests.act('viewer_a')        become someone for the rest of the
--                                transaction, as PostgREST does: a user of
--                                tests.seed(), or anon, service_role, daemon,
--                                superuser
--   tests.try_as(who, sql)       run a statement as someone and undo it: the
--                                number of rows it affected, 'rls' (a WITH
--                                CHECK violation), 'denied' (no privilege) or
--                                the error
--   tests.visible_as(who, table) which fixtures someone can read there
--   tests.logged_by(who, sql)    what a statement logged in the routing
--                                change log

-- re-runnable: on a Supabase project the schema outlives a run (drop it
-- afterwards, see migrations/README.md)
set client_min_messages = warning;
drop schema if exists tests cascade;
reset client_min_messages;
create schema tests;
grant usage on schema tests to public;

-- fixtures --------------------------------------------------------------------

-- Every fixture name tests.seed() creates, in the order labels are resolved.
create function tests.names() returns text[]
language sql immutable
as $$
  select array[
    'org_a', 'org_b',
    'owner_a', 'admin_a', 'manager_a', 'viewer_a', 'extra_a',
    'owner_b', 'extra_b', 'dual', 'outsider',
    'agent_a', 'agent_b', 'spare_agent_a', 'spare_agent_b',
    'phone_a', 'phone_b', 'customer_a', 'customer_b', 'call_a', 'call_b',
    'usage_a', 'usage_b', 'kb_a', 'kb_b', 'invitation_a', 'invitation_b'
  ]
$$;

create function tests.id(name text) returns uuid
language sql immutable
as $$ select md5('switchboard-pgtap:' || name)::uuid $$;

-- The fixture name of an id, or the id itself.
create function tests.label(id uuid) returns text
language sql stable
as $$
  select coalesce((select n from unnest(tests.names()) n where tests.id(n) = id), id::text)
$$;

create function tests.create_user(name text, email text default null) returns uuid
language sql
as $$
  insert into auth.users (id, email, raw_user_meta_data)
  values (tests.id(name), coalesce(email, name || '@example.test'),
          jsonb_build_object('full_name', initcap(replace(name, '_', ' '))))
  returning id
$$;

-- Two organizations:
--   A: owner_a (owner), admin_a (admin), manager_a (manager), viewer_a and
--      extra_a (viewers), dual (viewer)
--   B: owner_b (owner), dual (manager), extra_b (viewer)
-- and outsider, signed in but in no organization. Each org has two agents
-- (agent_x with a phone number, spare_agent_x with nothing depending on it),
-- a phone number, a customer, a call, a usage event, a knowledge base entry
-- and an open invitation (token 'token-a' / 'token-b').
create function tests.seed() returns void
language plpgsql
as $$
declare
  o text;
begin
  perform tests.create_user(u)
     from unnest(array['owner_a', 'admin_a', 'manager_a', 'viewer_a', 'extra_a',
                       'owner_b', 'extra_b', 'dual', 'outsider']) u;
  foreach o in array array['a', 'b'] loop
    insert into public.organizations (id, slug, name)
    values (tests.id('org_' || o), 'org-' || o, 'Organization ' || upper(o));
    insert into public.agents (id, org_id, name)
    values (tests.id('agent_' || o), tests.id('org_' || o), 'Agent ' || upper(o)),
           (tests.id('spare_agent_' || o), tests.id('org_' || o), 'Spare agent ' || upper(o));
    insert into public.phone_numbers (id, org_id, agent_id, number)
    values (tests.id('phone_' || o), tests.id('org_' || o), tests.id('agent_' || o),
            case o when 'a' then '+14155550101' else '+14155550102' end);
    insert into public.customers (id, org_id, phone, name)
    values (tests.id('customer_' || o), tests.id('org_' || o),
            case o when 'a' then '+14155550201' else '+14155550202' end, 'Customer ' || upper(o));
    insert into public.calls (id, org_id, gateway_call_id, agent_id, customer_id, status)
    values (tests.id('call_' || o), tests.id('org_' || o), 'gw-' || o,
            tests.id('agent_' || o), tests.id('customer_' || o), 'completed');
    insert into public.usage_events (id, org_id, metric, quantity)
    values (tests.id('usage_' || o), tests.id('org_' || o), 'llm_tokens_in', 100);
    insert into public.knowledge_base (id, org_id, title, content)
    values (tests.id('kb_' || o), tests.id('org_' || o), 'Opening hours', 'Nine to five.');
    insert into public.invitations (id, org_id, email, role, token_hash, expires_at)
    values (tests.id('invitation_' || o), tests.id('org_' || o), 'invitee-' || o || '@example.test',
            'viewer', sha256(convert_to('token-' || o, 'UTF8')), now() + interval '7 days');
  end loop;
  insert into public.memberships (org_id, user_id, role)
  values (tests.id('org_a'), tests.id('owner_a'), 'owner'),
         (tests.id('org_a'), tests.id('admin_a'), 'admin'),
         (tests.id('org_a'), tests.id('manager_a'), 'manager'),
         (tests.id('org_a'), tests.id('viewer_a'), 'viewer'),
         (tests.id('org_a'), tests.id('extra_a'), 'viewer'),
         (tests.id('org_a'), tests.id('dual'), 'viewer'),
         (tests.id('org_b'), tests.id('owner_b'), 'owner'),
         (tests.id('org_b'), tests.id('dual'), 'manager'),
         (tests.id('org_b'), tests.id('extra_b'), 'viewer');
end
$$;

-- acting as someone -------------------------------------------------------------

-- For the rest of the transaction (or until the next call), act as `who`:
--   'anon'          role anon, no JWT claims
--   'service_role'  role service_role, claims {"role": "service_role"}
--   'daemon'        role switchboard_daemon, no claims (it has no JWT)
--   'superuser'     back to the session user, no claims
--   anything else   role authenticated with claims {"sub": tests.id(who),
--                   "role": "authenticated"}, as PostgREST sets them
create function tests.act(who text) returns void
language plpgsql
as $$
begin
  case who
    when 'superuser' then
      perform set_config('role', 'none', true);
      perform set_config('request.jwt.claims', '', true);
    when 'anon' then
      perform set_config('role', 'anon', true);
      perform set_config('request.jwt.claims', '', true);
    when 'service_role' then
      perform set_config('role', 'service_role', true);
      perform set_config('request.jwt.claims', '{"role": "service_role"}', true);
    when 'daemon' then
      perform set_config('role', 'switchboard_daemon', true);
      perform set_config('request.jwt.claims', '', true);
    else
      perform tests.act_as_user(tests.id(who));
  end case;
end
$$;

-- Acts as the authenticated user `uid`.
create function tests.act_as_user(uid uuid) returns void
language plpgsql
as $$
begin
  perform tests.act_with_claims(jsonb_build_object('sub', uid, 'role', 'authenticated'));
end
$$;

-- Acts as role authenticated with exactly these JWT claims.
create function tests.act_with_claims(claims jsonb) returns void
language plpgsql
as $$
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims', claims::text, true);
end
$$;

-- Runs `statement` as `who` and undoes it. Returns the number of rows it
-- affected ('0', '1', …), 'rls' (row level security rejected a new row),
-- 'denied' (a missing privilege) or 'error <sqlstate>: <message>'.
create function tests.try_as(who text, statement text) returns text
language plpgsql
as $$
declare
  n bigint;
  outcome text;
begin
  begin
    perform tests.act(who);
    execute statement;
    get diagnostics n = row_count;
    raise exception using errcode = 'TSTUN', message = n; -- undo
  exception
    when sqlstate 'TSTUN' then outcome := sqlerrm;
    when insufficient_privilege then
      outcome := case
        when sqlerrm like 'new row violates row-level security policy%' then 'rls'
        when sqlerrm like 'permission denied%' then 'denied'
        else 'error 42501: ' || sqlerrm
      end;
    when others then outcome := 'error ' || sqlstate || ': ' || sqlerrm;
  end;
  return outcome;
end
$$;

-- The fixtures `who` can read in `tbl`, by column `col` (org_id by
-- default): their labels, sorted and comma-separated; 'denied' without the
-- privilege to read it.
create function tests.visible_as(who text, tbl regclass, col text default 'org_id') returns text
language plpgsql
as $$
declare
  outcome text;
begin
  begin
    perform tests.act(who);
    execute format(
      'select coalesce(string_agg(l, '','' order by l), '''')
         from (select distinct tests.label(%I) collate "C" as l from %s) s', col, tbl)
      into outcome;
    raise exception using errcode = 'TSTUN', message = outcome; -- back to the caller's role
  exception
    when sqlstate 'TSTUN' then outcome := sqlerrm;
    when insufficient_privilege then outcome := 'denied';
  end;
  return outcome;
end
$$;

-- The changes `sql`, run as `who` (and kept: no undo), logged in the
-- routing change log: `<entity> <key>`, in order.
create function tests.logged_by(who text, sql text) returns setof text
language plpgsql
as $$
declare
  before bigint := (select coalesce(max(id), 0) from switchboard.routing_changes);
begin
  perform tests.act(who);
  execute sql;
  perform tests.act('superuser');
  return query
    select entity || ' ' || key from switchboard.routing_changes
     where id > before order by id;
end
$$;

-- Number of rows a statement affects, run as the current role (not undone).
create function tests.affected(statement text) returns bigint
language plpgsql
as $$
declare
  n bigint;
begin
  execute statement;
  get diagnostics n = row_count;
  return n;
end
$$;

-- EXPLAIN (FORMAT JSON) of a query, as the current role.
create function tests.plan(query text) returns jsonb
language plpgsql
as $$
declare
  p json;
begin
  execute 'explain (format json) ' || query into p;
  return p::jsonb;
end
$$;

-- Every node of a plan, flattened.
create function tests.plan_nodes(plan jsonb) returns setof jsonb
language sql immutable
as $$
  select n from jsonb_path_query(plan, 'strict $.**') n
   where jsonb_typeof(n) = 'object' and n ? 'Node Type'
$$;
