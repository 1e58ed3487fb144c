-- Who writes what: every table, every kind of caller, insert / update /
-- delete in their own organization and in another. Each statement runs as
-- the caller and is undone (tests.try_as), so every cell starts from the
-- same fixtures (tests.seed()). A cell is the number of rows affected
-- ('0': row level security filtered the target row out, silently), 'rls'
-- (row level security rejected the new row: 42501) or 'denied' (no
-- privilege on the table or column: 42501).
--
-- Callers: anon; viewer_a, manager_a, admin_a, owner_a (org A); owner_b (in
-- org B only); dual (viewer in A, manager in B); outsider (signed in, in no
-- org); service_role; daemon (switchboard_daemon).
begin;
select plan(722);

select tests.seed();

with grid (what, stmt, anon, viewer_a, manager_a, admin_a, owner_a, owner_b, dual, outsider, service_role, daemon) as (
  values
  -- agents, phone numbers, customers, knowledge base: viewers read, managers write
  ('insert an agent into org A',
   $$insert into public.agents (org_id, name) values (tests.id('org_a'), 'New agent')$$,
   'denied', 'rls', '1', '1', '1', 'rls', 'rls', 'rls', '1', 'denied'),
  ('insert an agent into org B',
   $$insert into public.agents (org_id, name) values (tests.id('org_b'), 'New agent')$$,
   'denied', 'rls', 'rls', 'rls', 'rls', '1', '1', 'rls', '1', 'denied'),
  ('update an agent of org A',
   $$update public.agents set name = 'Renamed' where id = tests.id('agent_a')$$,
   'denied', '0', '1', '1', '1', '0', '0', '0', '1', 'denied'),
  ('update an agent of org B',
   $$update public.agents set name = 'Renamed' where id = tests.id('agent_b')$$,
   'denied', '0', '0', '0', '0', '1', '1', '0', '1', 'denied'),
  -- nobody moves rows between organizations through the API (V6)
  ('move an agent of org A to org B',
   $$update public.agents set org_id = tests.id('org_b') where id = tests.id('spare_agent_a')$$,
   'denied', '0', 'error 42501', 'error 42501', 'error 42501', '0', '0', '0', 'error 42501', 'denied'),
  ('delete an agent of org A',
   $$delete from public.agents where id = tests.id('spare_agent_a')$$,
   'denied', '0', '1', '1', '1', '0', '0', '0', '1', 'denied'),
  ('delete an agent of org B',
   $$delete from public.agents where id = tests.id('spare_agent_b')$$,
   'denied', '0', '0', '0', '0', '1', '1', '0', '1', 'denied'),

  ('insert a phone number into org A',
   $$insert into public.phone_numbers (org_id, agent_id, number)
     values (tests.id('org_a'), tests.id('agent_a'), '+14155550111')$$,
   'denied', 'rls', '1', '1', '1', 'rls', 'rls', 'rls', '1', 'denied'),
  ('insert a phone number into org B',
   $$insert into public.phone_numbers (org_id, agent_id, number)
     values (tests.id('org_b'), tests.id('agent_b'), '+14155550112')$$,
   'denied', 'rls', 'rls', 'rls', 'rls', '1', '1', 'rls', '1', 'denied'),
  ('update a phone number of org A',
   $$update public.phone_numbers set is_active = false where id = tests.id('phone_a')$$,
   'denied', '0', '1', '1', '1', '0', '0', '0', '1', 'denied'),
  ('update a phone number of org B',
   $$update public.phone_numbers set is_active = false where id = tests.id('phone_b')$$,
   'denied', '0', '0', '0', '0', '1', '1', '0', '1', 'denied'),
  ('delete a phone number of org A',
   $$delete from public.phone_numbers where id = tests.id('phone_a')$$,
   'denied', '0', '1', '1', '1', '0', '0', '0', '1', 'denied'),
  ('delete a phone number of org B',
   $$delete from public.phone_numbers where id = tests.id('phone_b')$$,
   'denied', '0', '0', '0', '0', '1', '1', '0', '1', 'denied'),

  ('insert a customer into org A',
   $$insert into public.customers (org_id, phone) values (tests.id('org_a'), '+14155550211')$$,
   'denied', 'rls', '1', '1', '1', 'rls', 'rls', 'rls', '1', 'denied'),
  ('insert a customer into org B',
   $$insert into public.customers (org_id, phone) values (tests.id('org_b'), '+14155550212')$$,
   'denied', 'rls', 'rls', 'rls', 'rls', '1', '1', 'rls', '1', 'denied'),
  ('update a customer of org A',
   $$update public.customers set name = 'Renamed' where id = tests.id('customer_a')$$,
   'denied', '0', '1', '1', '1', '0', '0', '0', '1', 'denied'),
  ('update a customer of org B',
   $$update public.customers set name = 'Renamed' where id = tests.id('customer_b')$$,
   'denied', '0', '0', '0', '0', '1', '1', '0', '1', 'denied'),
  ('delete a customer of org A',
   $$delete from public.customers where id = tests.id('customer_a')$$,
   'denied', '0', '1', '1', '1', '0', '0', '0', '1', 'denied'),
  ('delete a customer of org B',
   $$delete from public.customers where id = tests.id('customer_b')$$,
   'denied', '0', '0', '0', '0', '1', '1', '0', '1', 'denied'),

  ('insert a knowledge base entry into org A',
   $$insert into public.knowledge_base (org_id, title, content) values (tests.id('org_a'), 'FAQ', 'Yes.')$$,
   'denied', 'rls', '1', '1', '1', 'rls', 'rls', 'rls', '1', 'denied'),
  ('insert a knowledge base entry into org B',
   $$insert into public.knowledge_base (org_id, title, content) values (tests.id('org_b'), 'FAQ', 'Yes.')$$,
   'denied', 'rls', 'rls', 'rls', 'rls', '1', '1', 'rls', '1', 'denied'),
  ('update a knowledge base entry of org A',
   $$update public.knowledge_base set content = 'Closed.' where id = tests.id('kb_a')$$,
   'denied', '0', '1', '1', '1', '0', '0', '0', '1', 'denied'),
  ('update a knowledge base entry of org B',
   $$update public.knowledge_base set content = 'Closed.' where id = tests.id('kb_b')$$,
   'denied', '0', '0', '0', '0', '1', '1', '0', '1', 'denied'),
  ('delete a knowledge base entry of org A',
   $$delete from public.knowledge_base where id = tests.id('kb_a')$$,
   'denied', '0', '1', '1', '1', '0', '0', '0', '1', 'denied'),
  ('delete a knowledge base entry of org B',
   $$delete from public.knowledge_base where id = tests.id('kb_b')$$,
   'denied', '0', '0', '0', '0', '1', '1', '0', '1', 'denied'),

  -- calls and usage: written by the daemon (and the platform), never by users
  ('insert a call into org A',
   $$insert into public.calls (org_id, status) values (tests.id('org_a'), 'ringing')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', '1'),
  ('insert a call into org B',
   $$insert into public.calls (org_id, status) values (tests.id('org_b'), 'ringing')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', '1'),
  ('update a call of org A',
   $$update public.calls set status = 'failed' where id = tests.id('call_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', '1'),
  ('update a call of org B',
   $$update public.calls set status = 'failed' where id = tests.id('call_b')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', '1'),
  ('delete a call of org A',
   $$delete from public.calls where id = tests.id('call_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  ('delete a call of org B',
   $$delete from public.calls where id = tests.id('call_b')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),

  ('insert a usage event into org A',
   $$insert into public.usage_events (id, org_id, metric, quantity)
     values (gen_random_uuid(), tests.id('org_a'), 'call_seconds', 1)$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', '1'),
  ('insert a usage event into org B',
   $$insert into public.usage_events (id, org_id, metric, quantity)
     values (gen_random_uuid(), tests.id('org_b'), 'call_seconds', 1)$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', '1'),
  ('update a usage event of org A',
   $$update public.usage_events set quantity = 2 where id = tests.id('usage_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  ('update a usage event of org B',
   $$update public.usage_events set quantity = 2 where id = tests.id('usage_b')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  ('delete a usage event of org A',
   $$delete from public.usage_events where id = tests.id('usage_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  ('delete a usage event of org B',
   $$delete from public.usage_events where id = tests.id('usage_b')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  -- the daily rollup: written by its triggers alone
  ('insert a daily usage row into org A',
   $$insert into public.usage_daily (org_id, day, metric, quantity, events)
     values (tests.id('org_a'), '2026-01-01', 'call_seconds', 1, 1)$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied'),
  ('update the daily usage of org A',
   $$update public.usage_daily set quantity = 0 where org_id = tests.id('org_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied'),
  ('delete the daily usage of org A',
   $$delete from public.usage_daily where org_id = tests.id('org_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied'),

  -- organizations: anyone signed in founds one; owners edit theirs; billing
  -- columns and deletion belong to the platform
  ('found an organization',
   $$insert into public.organizations (slug, name) values ('new-org', 'New org')$$,
   'denied', '1', '1', '1', '1', '1', '1', '1', '1', 'denied'),
  ('found an organization with a plan tier',
   $$insert into public.organizations (slug, name, plan_tier) values ('new-org', 'New org', 'enterprise')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  ('rename org A',
   $$update public.organizations set name = 'Renamed' where id = tests.id('org_a')$$,
   'denied', '0', '0', '0', '1', '0', '0', '0', '1', 'denied'),
  ('rename org B',
   $$update public.organizations set name = 'Renamed' where id = tests.id('org_b')$$,
   'denied', '0', '0', '0', '0', '1', '0', '0', '1', 'denied'),
  ('change the plan tier of org A',
   $$update public.organizations set plan_tier = 'enterprise' where id = tests.id('org_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  ('change the concurrency limit of org A',
   $$update public.organizations set concurrency_limit = 1000 where id = tests.id('org_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  ('suspend or reactivate org A (is_active)',
   $$update public.organizations set is_active = false where id = tests.id('org_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  ('delete org A',
   $$delete from public.organizations where id = tests.id('org_a')$$,
   'denied', '0', '0', '0', '0', '0', '0', '0', '1', 'denied'),
  ('delete org B',
   $$delete from public.organizations where id = tests.id('org_b')$$,
   'denied', '0', '0', '0', '0', '0', '0', '0', '1', 'denied'),

  -- memberships: admins manage members, only owners manage owners
  ('add a viewer to org A',
   $$insert into public.memberships (org_id, user_id, role) values (tests.id('org_a'), tests.id('outsider'), 'viewer')$$,
   'denied', 'rls', 'rls', '1', '1', 'rls', 'rls', 'rls', '1', 'denied'),
  ('add a viewer to org B',
   $$insert into public.memberships (org_id, user_id, role) values (tests.id('org_b'), tests.id('outsider'), 'viewer')$$,
   'denied', 'rls', 'rls', 'rls', 'rls', '1', 'rls', 'rls', '1', 'denied'),
  ('add an owner to org A',
   $$insert into public.memberships (org_id, user_id, role) values (tests.id('org_a'), tests.id('outsider'), 'owner')$$,
   'denied', 'rls', 'rls', 'rls', '1', 'rls', 'rls', 'rls', '1', 'denied'),
  ('change the role of a member of org A',
   $$update public.memberships set role = 'manager' where org_id = tests.id('org_a') and user_id = tests.id('extra_a')$$,
   'denied', '0', '0', '1', '1', '0', '0', '0', '1', 'denied'),
  ('change the role of a member of org B',
   $$update public.memberships set role = 'manager' where org_id = tests.id('org_b') and user_id = tests.id('extra_b')$$,
   'denied', '0', '0', '0', '0', '1', '0', '0', '1', 'denied'),
  ('make a member of org A owner',
   $$update public.memberships set role = 'owner' where org_id = tests.id('org_a') and user_id = tests.id('extra_a')$$,
   'denied', '0', '0', 'rls', '1', '0', '0', '0', '1', 'denied'),
  ('move a membership of org A to org B',
   $$update public.memberships set org_id = tests.id('org_b') where org_id = tests.id('org_a') and user_id = tests.id('extra_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'error 42501', 'denied'),
  ('remove a member from org A',
   $$delete from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('extra_a')$$,
   'denied', '0', '0', '1', '1', '0', '0', '0', '1', 'denied'),
  ('remove a member from org B',
   $$delete from public.memberships where org_id = tests.id('org_b') and user_id = tests.id('extra_b')$$,
   'denied', '0', '0', '0', '0', '1', '0', '0', '1', 'denied'),

  -- profiles: your own only; nobody deletes one through the API
  ('create a profile for another user',
   $$insert into public.profiles (id) values (tests.id('new_user'))$$,
   'denied', 'rls', 'rls', 'rls', 'rls', 'rls', 'rls', 'rls', 'error 23503', 'denied'),
  ('update the profile of viewer_a',
   $$update public.profiles set full_name = 'Renamed' where id = tests.id('viewer_a')$$,
   'denied', '1', '0', '0', '0', '0', '0', '0', '1', 'denied'),
  ('update the profile of owner_b',
   $$update public.profiles set full_name = 'Renamed' where id = tests.id('owner_b')$$,
   'denied', '0', '0', '0', '0', '1', '0', '0', '1', 'denied'),
  ('delete the profile of viewer_a',
   $$delete from public.profiles where id = tests.id('viewer_a')$$,
   'denied', '0', '0', '0', '0', '0', '0', '0', '1', 'denied'),

  -- invitations: created and accepted through the functions; admins revoke
  -- (revoked_at) and delete
  ('insert an invitation into org A directly',
   $$insert into public.invitations (org_id, email, token_hash, expires_at)
     values (tests.id('org_a'), 'someone@example.test', '\x00', now() + interval '1 day')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', '1', 'denied'),
  ('revoke an invitation of org A',
   $$update public.invitations set revoked_at = now() where id = tests.id('invitation_a')$$,
   'denied', '0', '0', '1', '1', '0', '0', '0', '1', 'denied'),
  ('revoke an invitation of org B',
   $$update public.invitations set revoked_at = now() where id = tests.id('invitation_b')$$,
   'denied', '0', '0', '0', '0', '1', '0', '0', '1', 'denied'),
  ('change the role of an invitation of org A',
   $$update public.invitations set role = 'owner' where id = tests.id('invitation_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'error 42501', 'denied'),
  ('delete an invitation of org A',
   $$delete from public.invitations where id = tests.id('invitation_a')$$,
   'denied', '0', '0', '1', '1', '0', '0', '0', '1', 'denied'),
  ('delete an invitation of org B',
   $$delete from public.invitations where id = tests.id('invitation_b')$$,
   'denied', '0', '0', '0', '0', '1', '0', '0', '1', 'denied'),

  -- audit log: written by triggers only, never changed
  ('insert an audit row',
   $$insert into public.audit_log (org_id, action, table_name) values (tests.id('org_a'), 'INSERT', 'agents')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied'),
  ('update audit rows of org A',
   $$update public.audit_log set action = 'DELETE' where org_id = tests.id('org_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied'),
  ('delete audit rows of org A',
   $$delete from public.audit_log where org_id = tests.id('org_a')$$,
   'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied', 'denied')
)
select is(case when c.expected like 'error %' then left(t.got, length(c.expected)) else t.got end,
          c.expected,
          format('%s: %s → %s', c.who, g.what,
                 case c.expected when 'rls' then 'rejected by row level security (42501)'
                                 when 'denied' then 'permission denied (42501)'
                                 when '0' then '0 rows, silently'
                                 when '1' then '1 row'
                                 else c.expected end))
  from grid g
  cross join lateral (values ('anon', g.anon), ('viewer_a', g.viewer_a), ('manager_a', g.manager_a),
                             ('admin_a', g.admin_a), ('owner_a', g.owner_a), ('owner_b', g.owner_b),
                             ('dual', g.dual), ('outsider', g.outsider),
                             ('service_role', g.service_role), ('daemon', g.daemon)) c(who, expected)
  cross join lateral (select tests.try_as(c.who, g.stmt) as got) t;

-- The same, spelled out: the exact error, and the other org's row unchanged
-- afterwards (read back as the superuser).
select tests.act('manager_a');
select throws_ok(
  $$insert into public.agents (org_id, name) values (tests.id('org_b'), 'Planted')$$,
  '42501', 'new row violates row-level security policy for table "agents"',
  'a manager of A cannot insert an agent into B');
select throws_ok(
  $$insert into public.knowledge_base (org_id, title, content) values (tests.id('org_b'), 'Planted', 'x')$$,
  '42501', 'new row violates row-level security policy for table "knowledge_base"',
  'a manager of A cannot insert knowledge into B');
select throws_ok(
  $$update public.customers set org_id = tests.id('org_b') where id = tests.id('customer_a')$$,
  '42501', 'a row of customers cannot move to another organization',
  'a manager of A cannot move a customer into B');
select is(tests.affected($$update public.agents set name = 'Hijacked' where id = tests.id('agent_b')$$), 0::bigint,
          'a manager of A renaming B''s agent affects no row');
select is(tests.affected($$update public.phone_numbers set agent_id = tests.id('agent_a') where id = tests.id('phone_b')$$), 0::bigint,
          'a manager of A re-routing B''s number affects no row');
select is(tests.affected($$delete from public.customers where id = tests.id('customer_b')$$), 0::bigint,
          'a manager of A deleting B''s customer affects no row');
select is(tests.affected($$delete from public.knowledge_base where org_id = tests.id('org_b')$$), 0::bigint,
          'a manager of A deleting B''s knowledge base affects no row');
select tests.act('superuser');
select is((select name from public.agents where id = tests.id('agent_b')), 'Agent B', 'B''s agent is unchanged');
select is((select agent_id from public.phone_numbers where id = tests.id('phone_b')), tests.id('agent_b'),
          'B''s number still routes to B''s agent');
select is((select count(*) from public.customers where id = tests.id('customer_b')), 1::bigint, 'B''s customer is still there');
select is((select count(*) from public.knowledge_base where org_id = tests.id('org_b')), 1::bigint, 'B''s knowledge base is still there');
select is((select count(*) from public.agents where name = 'Planted'), 0::bigint, 'no agent was planted');

select * from finish();
rollback;
