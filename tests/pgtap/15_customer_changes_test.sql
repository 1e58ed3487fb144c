-- Customers in the routing change log (V7): every change to what RouteCall
-- answers about a caller (the organization, the phone, the name, the email)
-- logs the (organization, phone) it affects, whoever makes it, through the
-- API under row level security included; nothing else logs anything, and
-- nobody but the daemon reads the log.
begin;
select plan(9);

select tests.seed();

select results_eq(
  $$select * from tests.logged_by('manager_a',
      $q$insert into public.customers (org_id, phone, name)
         values (tests.id('org_a'), '+14155550300', 'New')$q$)$$,
  array['customer ' || tests.id('org_a') || ':+14155550300'],
  'a manager adding a customer through the API logs it');

select results_eq(
  $$select * from tests.logged_by('manager_a',
      $q$update public.customers set name = 'Renamed' where id = tests.id('customer_a')$q$)$$,
  array['customer ' || tests.id('org_a') || ':+14155550201'],
  'renaming a customer logs it');

select results_eq(
  $$select * from tests.logged_by('manager_a',
      $q$update public.customers set email = 'c@example.test' where id = tests.id('customer_a')$q$)$$,
  array['customer ' || tests.id('org_a') || ':+14155550201'],
  'changing a customer''s email logs it');

select results_eq(
  $$select * from tests.logged_by('manager_a',
      $q$update public.customers set phone = '+14155550301' where id = tests.id('customer_a')$q$)$$,
  array['customer ' || tests.id('org_a') || ':+14155550201',
        'customer ' || tests.id('org_a') || ':+14155550301'],
  'moving a customer to another phone logs both phones');

select is_empty(
  $$select * from tests.logged_by('manager_a',
      $q$update public.customers set name = name, updated_at = now()
          where id = tests.id('customer_a')$q$)$$,
  'rewriting a customer unchanged logs nothing');

select results_eq(
  $$select * from tests.logged_by('manager_a',
      $q$delete from public.customers where id = tests.id('customer_a')$q$)$$,
  array['customer ' || tests.id('org_a') || ':+14155550301'],
  'removing a customer logs it');

select is_empty(
  $$select * from tests.logged_by('manager_a',
      $q$update public.customers set name = 'Not mine' where id = tests.id('customer_b')$q$)$$,
  'a change row level security filters out logs nothing');

select throws_ok(
  $$insert into switchboard.routing_changes (entity, key) values ('invoice', 'x')$$,
  '23514', null,
  'the log takes only the entities the daemon knows');

select is(
  tests.try_as('manager_a', $$select 1 from switchboard.routing_changes$$),
  'denied',
  'a tenant cannot read the change log');

select * from finish();
rollback;
