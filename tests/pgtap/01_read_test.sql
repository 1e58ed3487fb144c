-- Who reads what: every table, as every kind of caller. Each cell lists the
-- fixtures (tests.seed()) the caller sees, by org_id (organizations and
-- profiles: by id), or 'denied' when the caller may not read the table at
-- all. '' means the query succeeds and returns nothing.
--
-- Callers: anon; viewer_a, manager_a, admin_a, owner_a (org A); owner_b (in
-- org B only); dual (viewer in A, manager in B); outsider (signed in, in no
-- org); service_role; daemon (switchboard_daemon).
begin;
select plan(120);

select tests.seed();

with grid (tbl, col, anon, viewer_a, manager_a, admin_a, owner_a, owner_b, dual, outsider, service_role, daemon) as (
  values
  ('organizations',  'id',     'denied', 'org_a', 'org_a', 'org_a', 'org_a', 'org_b', 'org_a,org_b', '', 'org_a,org_b', 'org_a,org_b'),
  ('memberships',    'org_id', 'denied', 'org_a', 'org_a', 'org_a', 'org_a', 'org_b', 'org_a,org_b', '', 'org_a,org_b', 'denied'),
  ('agents',         'org_id', 'denied', 'org_a', 'org_a', 'org_a', 'org_a', 'org_b', 'org_a,org_b', '', 'org_a,org_b', 'org_a,org_b'),
  ('phone_numbers',  'org_id', 'denied', 'org_a', 'org_a', 'org_a', 'org_a', 'org_b', 'org_a,org_b', '', 'org_a,org_b', 'org_a,org_b'),
  ('customers',      'org_id', 'denied', 'org_a', 'org_a', 'org_a', 'org_a', 'org_b', 'org_a,org_b', '', 'org_a,org_b', 'org_a,org_b'),
  ('calls',          'org_id', 'denied', 'org_a', 'org_a', 'org_a', 'org_a', 'org_b', 'org_a,org_b', '', 'org_a,org_b', 'org_a,org_b'),
  ('usage_events',   'org_id', 'denied', 'org_a', 'org_a', 'org_a', 'org_a', 'org_b', 'org_a,org_b', '', 'org_a,org_b', 'org_a,org_b'),
  ('usage_daily',    'org_id', 'denied', 'org_a', 'org_a', 'org_a', 'org_a', 'org_b', 'org_a,org_b', '', 'org_a,org_b', 'denied'),
  ('knowledge_base', 'org_id', 'denied', 'org_a', 'org_a', 'org_a', 'org_a', 'org_b', 'org_a,org_b', '', 'org_a,org_b', 'denied'),
  -- admins and owners only
  ('invitations',    'org_id', 'denied', '',      '',      'org_a', 'org_a', 'org_b', '',            '', 'org_a,org_b', 'denied'),
  ('audit_log',      'org_id', 'denied', '',      '',      'org_a', 'org_a', 'org_b', '',            '', 'org_a,org_b', 'denied'),
  -- your own profile and those of the people you share an organization with
  ('profiles',       'id',     'denied',
   'admin_a,dual,extra_a,manager_a,owner_a,viewer_a',
   'admin_a,dual,extra_a,manager_a,owner_a,viewer_a',
   'admin_a,dual,extra_a,manager_a,owner_a,viewer_a',
   'admin_a,dual,extra_a,manager_a,owner_a,viewer_a',
   'dual,extra_b,owner_b',
   'admin_a,dual,extra_a,extra_b,manager_a,owner_a,owner_b,viewer_a',
   'outsider',
   'admin_a,dual,extra_a,extra_b,manager_a,outsider,owner_a,owner_b,viewer_a',
   'denied')
)
select is(tests.visible_as(c.who, ('public.' || g.tbl)::regclass, g.col), c.expected,
          format('%s reads public.%s: %s', c.who, g.tbl,
                 case c.expected when 'denied' then 'permission denied'
                                 when '' then 'no rows'
                                 else 'rows of ' || c.expected end))
  from grid g
  cross join lateral (values ('anon', g.anon), ('viewer_a', g.viewer_a), ('manager_a', g.manager_a),
                             ('admin_a', g.admin_a), ('owner_a', g.owner_a), ('owner_b', g.owner_b),
                             ('dual', g.dual), ('outsider', g.outsider),
                             ('service_role', g.service_role), ('daemon', g.daemon)) c(who, expected);

select * from finish();
rollback;
