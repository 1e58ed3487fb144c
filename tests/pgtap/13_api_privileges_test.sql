-- What the API roles and the daemon may no longer do (issue 17): touch a
-- sequence (item 4), move rows between organizations (item 7), read a
-- co-member's last active organization (item 8), write calls columns
-- beyond its own or non-finite usage (item 9), hook into or reference the
-- audit log (item 10).
begin;
-- 41 assertions, and 18 per sequence of the project's schemas
select plan((select 41 + 18 * count(*)::integer from pg_class
              where relkind = 'S' and relnamespace in ('public'::regnamespace, 'switchboard'::regnamespace)));

select tests.seed();

-- item 4: sequences -------------------------------------------------------------------------------

-- every sequence of the project's schemas, by every caller: no setval, no
-- nextval, no reading
select is(tests.try_as(w.who, format(s.stmt, c.seq)), 'denied',
          format('%s: %s on %s → permission denied', w.who, s.what, c.seq))
  from (select c.oid::regclass::text as seq from pg_class c
         where c.relkind = 'S' and c.relnamespace in ('public'::regnamespace, 'switchboard'::regnamespace)) c
 cross join (values ('setval', 'select setval(%L, 1)'),
                    ('nextval', 'select nextval(%L)'),
                    ('read', 'select last_value from %s')) s(what, stmt)
 cross join (values ('anon'), ('viewer_a'), ('admin_a'), ('owner_a'), ('service_role'), ('daemon')) w(who)
 order by c.seq, s.what, w.who;

-- a table of the project's own, added later with a serial key: Supabase's
-- defaults still let the API insert into it (nextval), never setval it
create table public.own_things (id serial primary key);
select is(tests.try_as('viewer_a', $$select nextval('public.own_things_id_seq')$$), '1',
          'a later serial column''s sequence still serves nextval to the API');
select is(tests.try_as('viewer_a', $$select setval('public.own_things_id_seq', 1)$$), 'denied',
          'but not setval (default privileges)');
select is(tests.try_as('anon', $$select last_value from public.own_things_id_seq$$), 'denied',
          'nor reading it');
drop table public.own_things;

-- the audit log still numbers its rows, whoever writes
select tests.act('manager_a');
select lives_ok($$insert into public.agents (org_id, name) values (tests.id('org_a'), 'Audited')$$,
  'an audited write by a member still works (the trigger uses the sequence as its owner)');
select tests.act('superuser');

-- item 7: org_id never changes through the API ------------------------------------------------------

-- dual manages both A and B, so row level security lets them move rows
-- between the two: the trigger does not
update public.memberships set role = 'manager' where org_id = tests.id('org_a') and user_id = tests.id('dual');
select is(tests.try_as('dual', format($$update public.%I set org_id = tests.id('org_b') where id = tests.id(%L)$$, t, r)),
          format('error 42501: a row of %s cannot move to another organization', t),
          format('a manager of A and B cannot move a row of %s from A to B', t))
  from (values ('agents', 'spare_agent_a'), ('customers', 'customer_a'), ('knowledge_base', 'kb_a')) v(t, r);
select is(tests.try_as('service_role', format($$update public.%I set org_id = tests.id('org_b') where id = tests.id(%L)$$, t, r)),
          format('error 42501: a row of %s cannot move to another organization', t),
          format('service_role cannot move a row of %s from A to B', t))
  from (values ('agents', 'spare_agent_a'), ('customers', 'customer_a'), ('knowledge_base', 'kb_a'),
               ('calls', 'call_a'), ('usage_events', 'usage_a'), ('phone_numbers', 'phone_a')) v(t, r);
select is(tests.try_as('dual',
            $$insert into public.agents (id, org_id, name) values (tests.id('agent_a'), tests.id('org_a'), 'Upserted')
              on conflict (id) do update set org_id = excluded.org_id, name = excluded.name$$),
          '1', 'an upsert that writes the same org_id (supabase-js .upsert()) still works');
select is(tests.try_as('superuser', $$update public.agents set org_id = tests.id('org_b') where id = tests.id('spare_agent_a')$$),
          '1', 'postgres, the operator, still moves rows (README: Splitting a tenant)');

-- item 8: last_active_org_id is the user's own -----------------------------------------------------------

update public.profiles set last_active_org_id = tests.id('org_b') where id = tests.id('dual');
select is(tests.try_as('viewer_a', $$select last_active_org_id from public.profiles where id = tests.id('dual')$$),
          'denied', 'a co-member cannot read which organization dual last switched to (another tenant)');
select is(tests.try_as('owner_b', $$select last_active_org_id from public.profiles where id = tests.id('dual')$$),
          'denied', 'nor can a member of the other organization');
select is(tests.try_as('viewer_a', $$select full_name from public.profiles where id = tests.id('dual')$$),
          '1', 'but still reads their name');
select is(tests.try_as('viewer_a', $$select id from public.profiles where last_active_org_id = tests.id('org_b')$$),
          'denied', 'nor probe it in a filter');
select is(tests.try_as('dual', $$select 1 where public.last_active_org() = tests.id('org_b')$$),
          '1', 'the user reads their own through last_active_org()');
select tests.act('dual');
select is(tests.affected($$update public.profiles set last_active_org_id = tests.id('org_a') where id = tests.id('dual')$$),
          1::bigint, 'and still switches');
select tests.act('superuser');
select is(tests.try_as('dual', $$select 1 where public.last_active_org() = tests.id('org_a')$$),
          '1', 'to the organization they chose');
select is(tests.try_as('viewer_a', $$select 1 where public.last_active_org() is null$$),
          '1', 'last_active_org() returns only the caller''s own');
select is(tests.try_as('anon', $$select public.last_active_org()$$), 'denied', 'anon cannot call last_active_org()');

-- item 9: the daemon writes exactly its columns; usage is finite ---------------------------------------------

select is(tests.try_as('daemon', $$update public.calls set org_id = tests.id('org_b') where id = tests.id('call_a')$$),
          'denied', 'the daemon cannot move a call to another organization');
select is(tests.try_as('daemon', $$update public.calls set created_at = now() - interval '1 year' where id = tests.id('call_a')$$),
          'denied', 'nor rewrite a call''s created_at');
select is(tests.try_as('daemon', $$insert into public.calls (org_id, status, created_at) values (tests.id('org_a'), 'ringing', now())$$),
          'denied', 'nor insert one with its own created_at');
select is(tests.try_as('daemon',
            $$select switchboard.write_events(
                array[tests.id('call_a')], array[tests.id('org_a')], array['gw-a'], array['+14155550101'],
                array['+14155550201'], array[tests.id('agent_a')], array[tests.id('customer_a')],
                array['completed'], array[now()], array[now()], array[now()], array['caller_hangup'],
                '{}', '{}', '{}', '{}', '{}', '{}')$$),
          '1', 'the daemon''s batch write of a call (switchboard.write_events) still works');
select is(tests.try_as('daemon',
            $$insert into public.usage_events (id, org_id, call_id, metric, quantity, occurred_at)
              values (gen_random_uuid(), tests.id('org_a'), tests.id('call_a'), 'call_seconds', 12.5, now())
              on conflict (id) do nothing$$),
          '1', 'and so does its insert of usage');
select is(left(tests.try_as(w.who, format($$insert into public.usage_events (id, org_id, metric, quantity)
                                       values (gen_random_uuid(), tests.id('org_a'), 'call_seconds', %L)$$, q)), 11),
          'error 23514', format('%s: a usage quantity of %s is refused (23514)', w.who, q))
  from (values ('daemon'), ('service_role')) w(who)
 cross join (values ('NaN'), ('Infinity'), ('-Infinity')) v(q);
select is((select count(*) from public.usage_daily where quantity = 'NaN' or quantity = 'Infinity'), 0::bigint,
          'usage_daily holds finite sums only');

-- item 10: the audit log cannot be extended -------------------------------------------------------------------

create function tests.noop_trigger() returns trigger language plpgsql as $$ begin return null; end $$;
select is(tests.try_as('service_role',
            $$create trigger hook after insert on public.audit_log for each row execute function tests.noop_trigger()$$),
          'denied', 'service_role cannot put a trigger on the audit log');
select ok(not has_table_privilege(r, 'public.audit_log', 'TRIGGER, REFERENCES, TRUNCATE'),
          format('%s holds neither TRIGGER, REFERENCES (a foreign key pinning its rows) nor TRUNCATE on the audit log', r))
  from unnest(array['anon', 'authenticated', 'service_role', 'switchboard_daemon']) r;

select * from finish();
rollback;
