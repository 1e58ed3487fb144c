-- Call workflows (V9): schedules, caller lists, number ranges, routing
-- rules and their split agents. Every role × verb on every new table, the
-- refusals across tenants, the checks made when a policy is written, what
-- the change log records, and the policy the daemon reads.
begin;
select plan(254);

select tests.seed();

-- One row of each workflow table for org A and org B (`<table>_a`, `_b`
-- in the ids), as the superuser. A's rule uses A's schedule and list, and
-- splits A's calls between its two agents.
create function pg_temp.seed_workflows() returns void
language plpgsql
as $$
declare
  o text;
begin
  foreach o in array array['a', 'b'] loop
    insert into public.schedules (id, org_id, name, time_zone)
    values (tests.id('schedules_' || o), tests.id('org_' || o), 'Office hours', 'America/New_York');
    insert into public.schedule_windows (id, org_id, schedule_id, weekday, opens, closes)
    values (tests.id('schedule_windows_' || o), tests.id('org_' || o), tests.id('schedules_' || o), 1, '09:00', '17:00');
    insert into public.schedule_exceptions (id, org_id, schedule_id, on_date, name)
    values (tests.id('schedule_exceptions_' || o), tests.id('org_' || o), tests.id('schedules_' || o),
            '2026-12-25', 'Christmas');
    insert into public.caller_lists (id, org_id, name)
    values (tests.id('caller_lists_' || o), tests.id('org_' || o), 'Blocked');
    insert into public.caller_list_entries (id, org_id, list_id, number)
    values (tests.id('caller_list_entries_' || o), tests.id('org_' || o), tests.id('caller_lists_' || o),
            '+19005550100');
    insert into public.number_ranges (id, org_id, agent_id, prefix)
    values (tests.id('number_ranges_' || o), tests.id('org_' || o), tests.id('agent_' || o),
            case o when 'a' then '+1646555' else '+1718555' end);
    insert into public.routing_rules (id, org_id, position, name, schedule_id, schedule_open,
                                      caller_not_in_list, action)
    values (tests.id('routing_rules_' || o), tests.id('org_' || o), 10, 'A/B test',
            tests.id('schedules_' || o), true, tests.id('caller_lists_' || o), 'split');
    insert into public.routing_rule_agents (id, org_id, rule_id, agent_id, weight)
    values (tests.id('routing_rule_agents_' || o), tests.id('org_' || o), tests.id('routing_rules_' || o),
            tests.id('agent_' || o), 90),
           (tests.id('routing_rule_agents_spare_' || o), tests.id('org_' || o), tests.id('routing_rules_' || o),
            tests.id('spare_agent_' || o), 10);
  end loop;
end
$$;
select pg_temp.seed_workflows();

-- The tables, and a harmless update of each (a column every row has).
create function pg_temp.workflow_tables() returns table (tbl text, touch text)
language sql immutable
as $$
  values ('schedules', 'name = name || ''!'''),
         ('schedule_windows', 'closes = ''18:00'''),
         ('schedule_exceptions', 'name = ''Holiday'''),
         ('caller_lists', 'name = name || ''!'''),
         ('caller_list_entries', 'note = ''spam'''),
         ('number_ranges', 'is_active = false'),
         ('routing_rules', 'name = name || ''!'''),
         ('routing_rule_agents', 'weight = 50')
$$;

-- reading ------------------------------------------------------------------------------

select is(tests.visible_as(w.who, ('public.' || t.tbl)::regclass), w.sees,
          format('%s reads %s of %s', w.who, t.tbl, coalesce(nullif(w.sees, ''), 'no organization')))
  from pg_temp.workflow_tables() t
 cross join (values ('viewer_a', 'org_a'), ('outsider', ''), ('dual', 'org_a,org_b'),
                    ('daemon', 'org_a,org_b')) w(who, sees)
 order by t.tbl, w.who;

select is(tests.visible_as('anon', ('public.' || t.tbl)::regclass), 'denied',
          format('anon cannot read %s', t.tbl))
  from pg_temp.workflow_tables() t order by t.tbl;

-- writing ------------------------------------------------------------------------------

-- a viewer changes nothing, a manager of A changes A's rows and none of B's
select is(tests.try_as('viewer_a', format('update public.%I set %s where id = tests.id(%L)',
                                          t.tbl, t.touch, t.tbl || '_a')),
          '0', format('a viewer updates no row of %s', t.tbl))
  from pg_temp.workflow_tables() t order by t.tbl;
select is(tests.try_as('manager_a', format('update public.%I set %s where id = tests.id(%L)',
                                           t.tbl, t.touch, t.tbl || '_a')),
          '1', format('a manager updates their organization''s %s', t.tbl))
  from pg_temp.workflow_tables() t order by t.tbl;
select is(tests.try_as('manager_a', format('update public.%I set %s where id = tests.id(%L)',
                                           t.tbl, t.touch, t.tbl || '_b')),
          '0', format('a manager of A updates nothing of B''s %s', t.tbl))
  from pg_temp.workflow_tables() t order by t.tbl;
-- (only the platform deletes ranges: denied outright)
select is(tests.try_as('viewer_a', format('delete from public.%I where id = tests.id(%L)', t.tbl, t.tbl || '_a')),
          case t.tbl when 'number_ranges' then 'denied' else '0' end,
          format('a viewer deletes no row of %s', t.tbl))
  from pg_temp.workflow_tables() t order by t.tbl;
select is(tests.try_as('manager_a', format('delete from public.%I where id = tests.id(%L)', t.tbl, t.tbl || '_b')),
          case t.tbl when 'number_ranges' then 'denied' else '0' end,
          format('a manager of A deletes nothing of B''s %s', t.tbl))
  from pg_temp.workflow_tables() t order by t.tbl;
select is(tests.try_as('anon', format('delete from public.%I', t.tbl)), 'denied',
          format('anon cannot delete from %s', t.tbl))
  from pg_temp.workflow_tables() t order by t.tbl;

-- inserting: every table, by every kind of caller (for organization A's
-- fixtures, and by a manager of A for B's)
create function pg_temp.insert_into(tbl text, o text) returns text
language sql immutable
as $$
  select format(case tbl
    when 'schedules' then $i$insert into public.schedules (org_id, name, time_zone)
                            values (tests.id('org_%1$s'), 'New', 'UTC')$i$
    when 'schedule_windows' then $i$insert into public.schedule_windows (org_id, schedule_id, weekday, opens, closes)
                            values (tests.id('org_%1$s'), tests.id('schedules_%1$s'), 3, '09:00', '10:00')$i$
    when 'schedule_exceptions' then $i$insert into public.schedule_exceptions (org_id, schedule_id, on_date)
                            values (tests.id('org_%1$s'), tests.id('schedules_%1$s'), '2027-01-01')$i$
    when 'caller_lists' then $i$insert into public.caller_lists (org_id, name)
                            values (tests.id('org_%1$s'), 'New')$i$
    when 'caller_list_entries' then $i$insert into public.caller_list_entries (org_id, list_id, number)
                            values (tests.id('org_%1$s'), tests.id('caller_lists_%1$s'), '+19005550999')$i$
    when 'number_ranges' then $i$insert into public.number_ranges (org_id, agent_id, prefix)
                            values (tests.id('org_%1$s'), tests.id('agent_%1$s'), '+1917555')$i$
    when 'routing_rules' then $i$insert into public.routing_rules (org_id, position, name, action, reject_reason)
                            values (tests.id('org_%1$s'), 99, 'New', 'reject', 'busy')$i$
    when 'routing_rule_agents' then $i$with rule as (
                              insert into public.routing_rules (org_id, position, name, action)
                              values (tests.id('org_%1$s'), 98, 'New split', 'split') returning id)
                            insert into public.routing_rule_agents (org_id, rule_id, agent_id, weight)
                            select tests.id('org_%1$s'), rule.id, tests.id('agent_%1$s'), 5 from rule$i$
  end, o)
$$;

select is(tests.try_as(w.who, pg_temp.insert_into(t.tbl, w.org)),
          case when t.tbl = 'number_ranges' and w.who <> 'service_role' then 'denied' else w.outcome end,
          format('%s inserting into %s of organization %s', w.who, t.tbl, upper(w.org)))
  from pg_temp.workflow_tables() t
 cross join (values ('anon', 'a', 'denied'), ('viewer_a', 'a', 'rls'), ('manager_a', 'a', '1'),
                    ('admin_a', 'a', '1'), ('manager_a', 'b', 'rls'), ('outsider', 'a', 'rls'),
                    ('daemon', 'a', 'denied'), ('service_role', 'a', '1')) w(who, org, outcome)
 order by t.tbl, w.who, w.org;

-- the daemon reads, and writes nothing
select is(tests.try_as('daemon', format('update public.%I set %s where id = tests.id(%L)',
                                        t.tbl, t.touch, t.tbl || '_a')),
          'denied', format('the daemon cannot update %s', t.tbl))
  from pg_temp.workflow_tables() t order by t.tbl;
select is(tests.try_as('daemon', format('delete from public.%I where id = tests.id(%L)', t.tbl, t.tbl || '_a')),
          'denied', format('the daemon cannot delete from %s', t.tbl))
  from pg_temp.workflow_tables() t order by t.tbl;

select is(tests.try_as('manager_a', $$delete from public.routing_rules where id = tests.id('routing_rules_a')$$),
          '1', 'a manager deletes their rule (and its split agents with it)');
select is(tests.try_as('manager_a',
            $$insert into public.schedules (org_id, name, time_zone) values (tests.id('org_a'), 'Weekend', 'Europe/London')$$),
          '1', 'a manager adds a schedule');
select is(tests.try_as('viewer_a',
            $$insert into public.schedules (org_id, name, time_zone) values (tests.id('org_a'), 'Weekend', 'Europe/London')$$),
          'rls', 'a viewer cannot add one');
select is(tests.try_as('manager_a',
            $$insert into public.schedules (org_id, name, time_zone) values (tests.id('org_b'), 'Weekend', 'Europe/London')$$),
          'rls', 'nor a manager of A one for B');
select is(tests.try_as('manager_a',
            $$update public.routing_rules set org_id = tests.id('org_b') where id = tests.id('routing_rules_a')$$),
          'error 42501: a row of routing_rules cannot move to another organization',
          'a rule never moves to another organization');

-- dual manages B and reads A: pointing B's rule at A's schedule, list or
-- agent is refused by the composite keys, whatever the policies allow
select is(left(tests.try_as('dual', format(
            'update public.routing_rules set %s where id = tests.id(''routing_rules_b'')', c.assignment)), 10),
          'error 2350', format('B''s rule cannot use A''s %s', c.what))
  from (values ('schedule', 'schedule_id = tests.id(''schedules_a'')'),
               ('caller list', 'caller_in_list = tests.id(''caller_lists_a'')'),
               ('agent', 'action = ''agent'', agent_id = tests.id(''agent_a'')')) c(what, assignment);
select is(left(tests.try_as('dual',
            $$insert into public.routing_rule_agents (org_id, rule_id, agent_id, weight)
              values (tests.id('org_b'), tests.id('routing_rules_b'), tests.id('agent_a'), 5)$$), 10),
          'error 2350', 'nor split B''s calls to A''s agent');
select is(left(tests.try_as('dual',
            $$update public.number_ranges set agent_id = tests.id('agent_a') where id = tests.id('number_ranges_b')$$), 10),
          'error 2350', 'nor route B''s range to A''s agent');

-- checks made when written -----------------------------------------------------------------

select is(tests.try_as('manager_a', format(
            'insert into public.schedules (org_id, name, time_zone) values (tests.id(''org_a''), ''x'', %L)', z)),
          format('error 22023: unknown time zone %s', z), format('the time zone %s is refused', z))
  from unnest(array['Mars/Olympus_Mons', 'EST', 'EST5EDT,M3.2.0,M11.1.0', 'america/new_york', '']) z;
select is(tests.try_as('manager_a',
            $$update public.schedules set time_zone = 'Asia/Kolkata' where id = tests.id('schedules_a')$$),
          '1', 'a known one is accepted');

select is(left(tests.try_as('manager_a', format(
            'insert into public.schedule_windows (org_id, schedule_id, weekday, opens, closes)
             values (tests.id(''org_a''), tests.id(''schedules_a''), %s, %L, %L)', w.weekday, w.opens, w.closes)), 10),
          w.outcome, w.what)
  from (values (1, '12:00', '13:00', 'error 23P0', 'a window inside another is refused'),
               (1, '08:00', '09:01', 'error 23P0', 'a window overlapping another by a minute is refused'),
               (1, '17:00', '24:00', '1', 'a window right after another is accepted, up to midnight'),
               (2, '12:00', '13:00', '1', 'the same hours on another day are accepted'),
               (1, '13:00', '12:00', 'error 2351', 'a window that closes before it opens is refused'),
               (8, '09:00', '10:00', 'error 2351', 'weekday 8 is refused')) w(weekday, opens, closes, outcome, what);

select is(left(tests.try_as('manager_a', format(
            'insert into public.schedule_exceptions (org_id, schedule_id, on_date, opens, closes)
             values (tests.id(''org_a''), tests.id(''schedules_a''), %L, %L, %L)', e.on_date, e.opens, e.closes)), 10),
          e.outcome, e.what)
  from (values ('2026-12-25', '10:00', '12:00', 'error 23P0', 'an open window on a day closed all day is refused'),
               ('2026-12-24', '09:00', '12:00', '1', 'a short day is accepted'),
               ('2026-12-24', null, '12:00', 'error 2351', 'a window needs both ends')) e(on_date, opens, closes, outcome, what);

select is(left(tests.try_as('manager_a', format(
            'insert into public.routing_rules (org_id, position, name, action, %s) values (tests.id(''org_a''), 20, ''x'', %L, %s)',
            r.col, r.action, r.val)), 10),
          r.outcome, r.what)
  from (values ('transfer_to', 'transfer', '''+14155550199''', '1', 'a transfer to an E.164 number is accepted'),
               ('transfer_to', 'transfer', '''sip:frontdesk@pbx.example.com;transport=tls''', '1', 'a transfer to a SIP URI is accepted'),
               ('transfer_to', 'transfer', '''415 555 0199''', 'error 2351', 'a transfer to a national number is refused'),
               ('transfer_to', 'transfer', '''sip:no host''', 'error 2351', 'a transfer to a malformed SIP URI is refused'),
               ('transfer_to', 'transfer', '''http://example.com''', 'error 2351', 'a transfer to a web address is refused'),
               ('reject_reason', 'reject', '''busy''', '1', 'a rejection as busy is accepted'),
               ('reject_reason', 'reject', '''rude''', 'error 2351', 'an unknown rejection reason is refused'),
               ('reject_reason', 'transfer', '''busy''', 'error 2351', 'a transfer without a destination is refused'),
               ('caller_countries', 'reject', 'array[''gb'']', 'error 2351', 'a lowercase country is refused'),
               ('agent_id', 'agent', 'tests.id(''agent_b'')', 'error 2350', 'another organization''s agent is refused'))
       r(col, action, val, outcome, what);

select is(left(tests.try_as('manager_a',
            $$insert into public.routing_rules (org_id, position, name, action, agent_id)
              values (tests.id('org_a'), 10, 'Same place', 'agent', tests.id('agent_a'))$$), 11),
          'error 23505', 'two organization-wide rules cannot share a position');
select is(tests.try_as('manager_a',
            $$insert into public.routing_rules (org_id, phone_number_id, position, name, action, agent_id)
              values (tests.id('org_a'), tests.id('phone_a'), 10, 'Same place, other list', 'agent', tests.id('agent_a'))$$),
          '1', 'a number''s rule may take the position of an organization-wide one');
select is(tests.try_as('manager_a',
            $$insert into public.routing_rules (org_id, position, name, action, reject_reason)
              values (tests.id('org_a'), 20, 'Closed', 'reject', 'unavailable');
              update public.routing_rules set position = 15 where id = tests.id('routing_rules_a');
              update public.routing_rules set position = 10
               where org_id = tests.id('org_a') and phone_number_id is null and position = 20;
              update public.routing_rules set position = 20 where id = tests.id('routing_rules_a');
              select * from public.routing_rules
               where org_id = tests.id('org_a') and phone_number_id is null and position in (10, 20)$$),
          '2', 'rules swap places through a free position');
select is(tests.try_as('manager_a',
            $$insert into public.routing_rules (id, org_id, position, name, action, reject_reason)
              values (tests.id('routing_rules_a'), tests.id('org_a'), 10, 'Again', 'reject', 'busy')
              on conflict do nothing$$),
          '0', 'an insert that conflicts does nothing with on conflict do nothing');

-- splits, checked at commit
select is(tests.try_as('manager_a',
            $$update public.routing_rule_agents set weight = 0 where rule_id = tests.id('routing_rules_a');
              set constraints check_split immediate;
              select 1$$),
          format('error 23514: the split rule %s needs agents whose weights add up to more than 0', tests.id('routing_rules_a')),
          'a split whose weights add up to 0 is refused');
select matches(tests.try_as('manager_a',
            $$insert into public.routing_rules (org_id, position, name, action)
              values (tests.id('org_a'), 30, 'Empty split', 'split');
              set constraints check_split immediate;
              select 1$$),
          '^error 23514: the split rule .* needs agents', 'a split without agents is refused');
select is(tests.try_as('manager_a',
            $$update public.routing_rule_agents set weight = 0 where id = tests.id('routing_rule_agents_spare_a');
              set constraints check_split immediate;
              select 1$$),
          '1', 'an agent drained to weight 0 stays in a split that still has weight');
select matches(tests.try_as('manager_a',
            $$update public.routing_rules set action = 'reject', reject_reason = 'busy' where id = tests.id('routing_rules_a');
              set constraints check_split immediate;
              select 1$$),
          '^error 23514: the rule .* is not a split rule', 'a rule with split agents cannot stop being a split');
select is(tests.try_as('manager_a',
            $$delete from public.routing_rule_agents where rule_id = tests.id('routing_rules_a');
              update public.routing_rules set action = 'reject', reject_reason = 'busy' where id = tests.id('routing_rules_a');
              set constraints check_split immediate;
              select 1$$),
          '1', 'without them it can');

-- deleting what a rule uses is refused, not half-applied
select is(left(tests.try_as('manager_a', format('delete from public.%I where id = tests.id(%L)', d.tbl, d.id)), 10),
          'error 2350', format('a %s a rule uses cannot be deleted', d.what))
  from (values ('schedules', 'schedules_a', 'schedule'),
               ('caller_lists', 'caller_lists_a', 'caller list')) d(tbl, id, what);

-- quotas: one organization cannot make every daemon hold a policy of any size
select is(tests.try_as('manager_a',
            $$insert into public.caller_lists (org_id, name)
              select tests.id('org_a'), 'List ' || i from generate_series(1, 999) i$$),
          '999', 'an organization may have 1,000 caller lists');
select is(tests.try_as('manager_a',
            $$insert into public.caller_lists (org_id, name)
              select tests.id('org_a'), 'List ' || i from generate_series(1, 1000) i$$),
          'error 54000: at most 1000 caller lists per org', 'but not 1,001');
select is(tests.try_as('service_role',
            $$insert into public.caller_lists (org_id, name)
              select tests.id('org_a'), 'List ' || i from generate_series(1, 1000) i$$),
          'error 54000: at most 1000 caller lists per org', 'not even through the platform''s role');

-- numbers and ranges belong to one organization -----------------------------------------------

select is(tests.try_as(c.who, c.stmt), c.outcome, c.what)
  from (values
    ('service_role', $$insert into public.number_ranges (org_id, agent_id, prefix)
                    values (tests.id('org_a'), tests.id('agent_a'), '+17185551')$$,
     'error 23P01: the range +17185551 overlaps numbers another organization owns',
     'a range inside another organization''s range is refused'),
    ('service_role', $$insert into public.number_ranges (org_id, agent_id, prefix)
                    values (tests.id('org_a'), tests.id('agent_a'), '+1718')$$,
     'error 23P01: the range +1718 overlaps numbers another organization owns',
     'a range around another organization''s range is refused'),
    ('service_role', $$insert into public.number_ranges (org_id, agent_id, prefix)
                    values (tests.id('org_a'), tests.id('agent_a'), '+141555501')$$,
     'error 23P01: the range +141555501 overlaps numbers another organization owns',
     'a range around another organization''s number (+14155550102) is refused'),
    ('manager_a', $$insert into public.phone_numbers (org_id, agent_id, number)
                    values (tests.id('org_a'), tests.id('agent_a'), '+17185550100')$$,
     'error 23P01: the number +17185550100 overlaps numbers another organization owns',
     'a number inside another organization''s range is refused'),
    ('manager_a', $$update public.phone_numbers set number = '+17185550101' where id = tests.id('phone_a')$$,
     'error 23P01: the number +17185550101 overlaps numbers another organization owns',
     'so is renumbering into it'),
    ('service_role', $$insert into public.number_ranges (org_id, agent_id, prefix)
                    values (tests.id('org_a'), tests.id('agent_a'), '+16465551')$$,
     '1', 'a range inside the organization''s own range is accepted'),
    ('manager_a', $$insert into public.phone_numbers (org_id, agent_id, number)
                    values (tests.id('org_a'), tests.id('agent_a'), '+16465550100')$$,
     '1', 'so is a number inside it'),
    ('dual', $$insert into public.phone_numbers (org_id, agent_id, number)
                    values (tests.id('org_b'), tests.id('agent_b'), '+141555501020')$$,
     '1', 'a longer number that starts with another organization''s number is its own number'),
    ('service_role', $$insert into public.number_ranges (org_id, agent_id, prefix)
                    values (tests.id('org_a'), tests.id('agent_a'), '+1719')$$,
     '1', 'a range next to another organization''s is accepted'),
    ('service_role', $$insert into public.number_ranges (org_id, agent_id, prefix)
                    values (tests.id('org_a'), tests.id('agent_a'), '+1646555')$$,
     'error 23505: duplicate key value violates unique constraint "number_ranges_prefix_key"',
     'the same prefix twice is refused'),
    ('service_role', $$insert into public.number_ranges (org_id, agent_id, prefix)
                    values (tests.id('org_a'), tests.id('agent_a'), '14155')$$,
     'error 23514: new row for relation "number_ranges" violates check constraint "number_ranges_prefix_check"',
     'a prefix without + is refused')
  ) c(who, stmt, outcome, what);

-- ranges are the platform's to hand out
select is(tests.try_as(c.who, c.stmt), 'denied', c.what)
  from (values
    ('manager_a', $$insert into public.number_ranges (org_id, agent_id, prefix)
                    values (tests.id('org_a'), tests.id('agent_a'), '+1')$$,
     'a manager cannot claim a range'),
    ('manager_a', $$update public.number_ranges set prefix = '+1' where id = tests.id('number_ranges_a')$$,
     'nor widen one'),
    ('owner_a', $$delete from public.number_ranges where id = tests.id('number_ranges_a')$$,
     'nor may an owner release one')) c(who, stmt, what);
select is(tests.try_as('manager_a',
            $$update public.number_ranges set agent_id = tests.id('spare_agent_a'), concurrency_limit = 5
               where id = tests.id('number_ranges_a')$$),
          '1', 'a manager routes their range to another agent and caps it');

-- a released range frees its numbers for another organization
select is(tests.try_as('service_role',
            $$delete from public.number_ranges where id = tests.id('number_ranges_b');
              insert into public.number_ranges (org_id, agent_id, prefix)
              values (tests.id('org_b'), tests.id('agent_b'), '+17185')$$),
          '1', 'a released range''s numbers can be claimed again');

select is(tests.visible_as(w.who, 'switchboard.number_claims'), 'denied',
          format('%s cannot read the claims', w.who))
  from (values ('anon'), ('viewer_a'), ('service_role'), ('daemon')) w(who);

-- per-agent and per-number limits ---------------------------------------------------------

select is(tests.try_as('manager_a',
            $$update public.agents set concurrency_limit = 3 where id = tests.id('agent_a')$$),
          '1', 'a manager caps an agent''s concurrent calls');
select is(tests.try_as('manager_a',
            $$update public.phone_numbers set concurrency_limit = 2 where id = tests.id('phone_a')$$),
          '1', 'and a number''s');
select is(left(tests.try_as('manager_a',
            $$update public.agents set concurrency_limit = -1 where id = tests.id('agent_a')$$), 10),
          'error 2351', 'a negative limit is refused');

-- the change log --------------------------------------------------------------------------

select results_eq(
  $$select * from tests.logged_by('manager_a',
      $q$insert into public.caller_list_entries (org_id, list_id, number)
         select tests.id('org_a'), tests.id('caller_lists_a'), '+1900556' || lpad(i::text, 4, '0')
           from generate_series(1, 500) i$q$)$$,
  array['organization ' || tests.id('org_a')],
  'adding 500 callers to a list logs the organization once');
select results_eq(
  $$select * from tests.logged_by('dual',
      $q$update public.schedule_windows set closes = '16:00'
          where schedule_id in (tests.id('schedules_a'), tests.id('schedules_b'))$q$)$$,
  array['organization ' || tests.id('org_b')],
  'a statement logs each organization it changed (dual manages only B)');
select results_eq(
  $$select * from tests.logged_by('manager_a',
      $q$delete from public.routing_rule_agents where id = tests.id('routing_rule_agents_spare_a')$q$)$$,
  array['organization ' || tests.id('org_a')],
  'removing an agent from a split logs the organization');
select results_eq(
  $$select * from tests.logged_by('service_role',
      $q$update public.number_ranges set prefix = '+1646556' where id = tests.id('number_ranges_a')$q$)$$,
  array['range +1646555', 'range +1646556'],
  'moving a range logs the old and the new prefix');
select results_eq(
  $$select * from tests.logged_by('manager_a',
      $q$update public.agents set concurrency_limit = 4 where id = tests.id('agent_a')$q$)$$,
  array['agent ' || tests.id('agent_a')],
  'an agent''s limit is logged as a change to the agent');

-- the audit trail
select ok(exists (select 1 from public.audit_log
                   where table_name = 'routing_rule_agents' and action = 'DELETE'
                     and org_id = tests.id('org_a')),
          'workflow changes are in the audit log');

-- the policy the daemon reads -------------------------------------------------------------------

select tests.act('daemon');
select is(switchboard.routing_policy(tests.id('org_a')) -> 'rules' -> 0 ->> 'action', 'split',
          'the daemon reads the policy');
select is(switchboard.routing_policy(tests.id('org_a')) -> 'rules' -> 0 -> 'split',
          jsonb_build_array(jsonb_build_array(tests.id('agent_a'), 90)),
          'with the split''s agents and weights (the spare removed above)');
select is(switchboard.routing_policy(tests.id('org_a')) -> 'schedules' -> 0 -> 'windows',
          '[[1, 32400, 61200]]'::jsonb, 'and the schedules its rules use, in seconds of the day');
select is(switchboard.routing_policy(tests.id('org_a')) -> 'schedules' -> 0 -> 'exceptions',
          '[["2026-12-25", null, null]]'::jsonb, 'with their exceptions');
select tests.act('superuser');
update public.routing_rules set is_active = false where org_id = tests.id('org_a');
select tests.act('daemon');
select is(switchboard.routing_policy(tests.id('org_a')), null, 'an organization without active rules has no policy');
select tests.act('superuser');

select is(tests.try_as(w.who, $$select switchboard.routing_policy(tests.id('org_a'))$$), 'denied',
          format('%s cannot call routing_policy', w.who))
  from (values ('anon'), ('viewer_a'), ('service_role')) w(who);

select * from finish();
rollback;
