-- The audit log: every insert, update and delete on organizations,
-- memberships, agents, phone_numbers and invitations is recorded with its
-- actor and the row before and after; credentials never; nobody changes it;
-- admins read their organization's.
begin;
select plan(30);

select tests.seed();

-- The audit rows of one table row, oldest first (read as the superuser).
create function pg_temp.trail(tbl text, rid text)
returns table (action text, actor_id uuid, actor_role text, org_id uuid, old_row jsonb, new_row jsonb)
language sql stable
as $$
  select a.action, a.actor_id, a.actor_role, a.org_id, a.old_row, a.new_row
    from public.audit_log a
   where a.table_name = tbl and a.row_id = rid
   order by a.id
$$;

-- agents and phone numbers, by a manager ---------------------------------------------------

select tests.act('manager_a');
insert into public.agents (id, org_id, name) values (tests.id('audited_agent'), tests.id('org_a'), 'Audited');
update public.agents set name = 'Audited v2' where id = tests.id('audited_agent');
insert into public.phone_numbers (id, org_id, agent_id, number)
values (tests.id('audited_phone'), tests.id('org_a'), tests.id('audited_agent'), '+14155550177');
update public.phone_numbers set is_active = false where id = tests.id('audited_phone');
delete from public.phone_numbers where id = tests.id('audited_phone');
delete from public.agents where id = tests.id('audited_agent');
select tests.act('superuser');

select results_eq(
  $$select action, actor_id, actor_role, org_id, old_row ->> 'name', new_row ->> 'name'
      from pg_temp.trail('agents', tests.id('audited_agent')::text)$$,
  $$values ('INSERT', tests.id('manager_a'), 'authenticated', tests.id('org_a'), null, 'Audited'),
           ('UPDATE', tests.id('manager_a'), 'authenticated', tests.id('org_a'), 'Audited', 'Audited v2'),
           ('DELETE', tests.id('manager_a'), 'authenticated', tests.id('org_a'), 'Audited v2', null)$$,
  'agents: insert, update and delete are audited with the manager as actor and the row before and after');
select ok(
  (select bool_and(coalesce(new_row, old_row) ?& array['id', 'org_id', 'name', 'voice_id', 'llm_config', 'is_active'])
     from pg_temp.trail('agents', tests.id('audited_agent')::text)),
  'agents: the whole row is recorded');
select results_eq(
  $$select action, actor_id, org_id, old_row ->> 'is_active', new_row ->> 'is_active', coalesce(new_row, old_row) ->> 'number'
      from pg_temp.trail('phone_numbers', tests.id('audited_phone')::text)$$,
  $$values ('INSERT', tests.id('manager_a'), tests.id('org_a'), null, 'true', '+14155550177'),
           ('UPDATE', tests.id('manager_a'), tests.id('org_a'), 'true', 'false', '+14155550177'),
           ('DELETE', tests.id('manager_a'), tests.id('org_a'), 'false', null, '+14155550177')$$,
  'phone_numbers: insert, update and delete are audited with the manager as actor and the row before and after');

-- memberships, by an admin -------------------------------------------------------------------

select tests.act('admin_a');
insert into public.memberships (org_id, user_id, role) values (tests.id('org_a'), tests.id('outsider'), 'viewer');
update public.memberships set role = 'manager' where org_id = tests.id('org_a') and user_id = tests.id('outsider');
delete from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('outsider');
select tests.act('superuser');
select results_eq(
  $$select action, actor_id, org_id, old_row ->> 'role', new_row ->> 'role', coalesce(new_row, old_row) ->> 'user_id'
      from pg_temp.trail('memberships', tests.id('org_a') || ':' || tests.id('outsider'))$$,
  $$values ('INSERT', tests.id('admin_a'), tests.id('org_a'), null, 'viewer', tests.id('outsider')::text),
           ('UPDATE', tests.id('admin_a'), tests.id('org_a'), 'viewer', 'manager', tests.id('outsider')::text),
           ('DELETE', tests.id('admin_a'), tests.id('org_a'), 'manager', null, tests.id('outsider')::text)$$,
  'memberships: adding, changing and removing a member are audited with the admin as actor, keyed org:user');

-- organizations: founded and edited by a user, deleted by the platform ----------------------------

select tests.act('outsider');
insert into public.organizations (slug, name) values ('audited', 'Audited');
update public.organizations set name = 'Audited v2' where slug = 'audited';
update public.organizations set deleted_at = now() where slug = 'audited';
select tests.act('service_role');
delete from public.organizations where slug = 'audited';
select tests.act('superuser');
select results_eq(
  $$select a.action, a.actor_id, a.actor_role, a.org_id = (coalesce(a.new_row, a.old_row) ->> 'id')::uuid,
           a.old_row ->> 'name', a.new_row ->> 'name', a.new_row ->> 'deleted_at' is not null
      from public.audit_log a
     where a.table_name = 'organizations' and coalesce(a.new_row, a.old_row) ->> 'slug' = 'audited'
     order by a.id$$,
  $$values ('INSERT', tests.id('outsider'), 'authenticated', true, null, 'Audited', false),
           ('UPDATE', tests.id('outsider'), 'authenticated', true, 'Audited', 'Audited v2', false),
           ('UPDATE', tests.id('outsider'), 'authenticated', true, 'Audited v2', 'Audited v2', true),
           ('DELETE', null, 'service_role', true, 'Audited v2', null, false)$$,
  'organizations: founding, renaming and soft-deleting are audited with the user as actor, the platform''s delete as service_role');
select results_eq(
  $$select a.action, a.actor_id, a.new_row ->> 'role'
      from public.audit_log a
     where a.table_name = 'memberships' and a.action = 'INSERT'
       and a.org_id = (select (new_row ->> 'id')::uuid from public.audit_log
                        where table_name = 'organizations' and action = 'INSERT' and new_row ->> 'slug' = 'audited')$$,
  $$values ('INSERT', tests.id('outsider'), 'owner')$$,
  'the founder''s owner membership is audited with the founder as actor');

-- invitations, through the functions and by an admin ---------------------------------------------

select tests.act('admin_a');
select public.invite_member(tests.id('org_a'), 'outsider@example.test', 'viewer') as token \gset
update public.invitations set revoked_at = now() where email = 'outsider@example.test';
select public.invite_member(tests.id('org_a'), 'outsider@example.test', 'viewer') as token \gset
select tests.act('outsider');
select public.accept_invitation(:'token') is not null as accepted \gset
select tests.act('admin_a');
delete from public.invitations where email = 'outsider@example.test' and revoked_at is not null;
select tests.act('superuser');
select results_eq(
  $$select action, actor_id, old_row ->> 'revoked_at' is not null, new_row ->> 'revoked_at' is not null,
           new_row ->> 'accepted_by'
      from public.audit_log
     where table_name = 'invitations' and coalesce(new_row, old_row) ->> 'email' = 'outsider@example.test'
     order by id$$,
  $$values ('INSERT', tests.id('admin_a'), false, false, null),
           ('UPDATE', tests.id('admin_a'), false, true, null),
           ('INSERT', tests.id('admin_a'), false, false, null),
           ('UPDATE', tests.id('outsider'), false, false, tests.id('outsider')::text),
           ('DELETE', tests.id('admin_a'), true, false, null)$$,
  'invitations: issuing, revoking, accepting and deleting are audited with who did it');
select results_eq(
  $$select action, actor_id from public.audit_log
     where table_name = 'memberships' and row_id = tests.id('org_a') || ':' || tests.id('outsider')
       and action = 'INSERT' order by id desc limit 1$$,
  $$values ('INSERT', tests.id('outsider'))$$,
  'joining by invitation is audited with the new member as actor');

-- credentials never reach the trail
select isnt_empty($$select 1 from public.audit_log where table_name = 'invitations'$$,
                  'invitations are audited (the next checks are not vacuous)');
select is_empty(
  $$select id from public.audit_log
     where table_name = 'invitations' and (old_row ? 'token_hash' or new_row ? 'token_hash')$$,
  'no audit row of an invitation has a token_hash');
select is_empty(
  $$select a.id from public.audit_log a, public.invitations i
     where position(encode(i.token_hash, 'hex') in to_jsonb(a)::text) > 0$$,
  'no audit row contains any invitation''s token hash');
select is_empty(
  format($$select id from public.audit_log a where position(%L in to_jsonb(a)::text) > 0$$, :'token'),
  'no audit row contains a token');

-- append-only --------------------------------------------------------------------------------

select count(*) as audit_rows from public.audit_log \gset
select throws_ok($$update public.audit_log set actor_id = null$$,
  '42501', 'audit_log is append-only', 'not even the superuser updates the audit log');
select throws_ok($$delete from public.audit_log$$,
  '42501', 'audit_log is append-only', 'not even the superuser deletes from the audit log');
select throws_ok($$truncate public.audit_log$$,
  '42501', 'audit_log is append-only', 'not even the superuser truncates the audit log');
select tests.act('service_role');
select throws_ok($$update public.audit_log set actor_id = null$$,
  '42501', 'permission denied for table audit_log', 'service_role cannot update the audit log');
select throws_ok($$delete from public.audit_log$$,
  '42501', 'permission denied for table audit_log', 'service_role cannot delete from the audit log');
select throws_ok($$truncate public.audit_log$$,
  '42501', 'permission denied for table audit_log', 'service_role cannot truncate the audit log');
select throws_ok($$insert into public.audit_log (action, table_name) values ('DELETE', 'agents')$$,
  '42501', 'permission denied for table audit_log', 'service_role cannot forge audit rows');
select tests.act('admin_a');
select throws_ok($$update public.audit_log set actor_id = null$$,
  '42501', 'permission denied for table audit_log', 'an admin cannot update the audit log');
select throws_ok($$delete from public.audit_log$$,
  '42501', 'permission denied for table audit_log', 'an admin cannot delete from the audit log');
select throws_ok($$truncate public.audit_log$$,
  '42501', 'permission denied for table audit_log', 'an admin cannot truncate the audit log');
select throws_ok($$insert into public.audit_log (org_id, action, table_name) values (tests.id('org_a'), 'DELETE', 'agents')$$,
  '42501', 'permission denied for table audit_log', 'an admin cannot forge audit rows');
select tests.act('superuser');
select is((select count(*) from public.audit_log), :audit_rows::bigint, 'the audit log is unchanged');

-- who reads it ----------------------------------------------------------------------------------

select count(*) as org_a_rows from public.audit_log where org_id = tests.id('org_a') \gset
select count(*) as org_b_rows from public.audit_log where org_id = tests.id('org_b') \gset
select tests.act('admin_a');
select results_eq($$select count(*), bool_and(org_id = tests.id('org_a')) from public.audit_log$$,
                  format('values (%s::bigint, true)', :org_a_rows),
                  'an admin of A reads every audit row of A, and only those');
select tests.act('owner_a');
select results_eq($$select count(*), bool_and(org_id = tests.id('org_a')) from public.audit_log$$,
                  format('values (%s::bigint, true)', :org_a_rows),
                  'the owner of A reads every audit row of A, and only those');
select tests.act('owner_b');
select results_eq($$select count(*), bool_and(org_id = tests.id('org_b')) from public.audit_log$$,
                  format('values (%s::bigint, true)', :org_b_rows),
                  'the owner of B reads every audit row of B, and only those');
select tests.act('manager_a');
select is((select count(*) from public.audit_log), 0::bigint, 'a manager reads no audit rows');
select tests.act('viewer_a');
select is((select count(*) from public.audit_log), 0::bigint, 'a viewer reads no audit rows');
select tests.act('dual');
select is((select count(*) from public.audit_log), 0::bigint, 'a viewer of A and manager of B reads no audit rows');
select tests.act('superuser');

select * from finish();
rollback;
