-- Customers in the routing change log. Every daemon caches, per
-- organization and caller number, whether the caller is a known customer
-- (and which): a `RouteCall` from a caller it has seen asks the database
-- nothing. Adding, editing or removing a customer must therefore reach
-- every replica as routing changes do: a row in switchboard.routing_changes
-- (entity `customer`, key `<org id>:<phone>`) and a NOTIFY.
--
-- Only what a `RouteCall` answers is logged: the organization, the phone,
-- the name and the email. A CRM sync that touches other columns, or
-- rewrites a row unchanged, logs nothing; NOTIFY serializes committing
-- transactions, so the log costs only what changes an answer (see
-- docs/cache.md for the measured cost).

alter table switchboard.routing_changes drop constraint if exists routing_changes_entity_check;
alter table switchboard.routing_changes
  add constraint routing_changes_entity_check
  check (entity in ('number', 'agent', 'organization', 'customer'));

-- Row trigger on public.customers: logs the old and the new (organization,
-- phone), when they differ, or the one that is there.
create or replace function switchboard.log_customer_change() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  k text;
  change_id bigint;
  changed timestamptz;
begin
  for k in
    select distinct x
      from unnest(array[
             case when tg_op <> 'INSERT' and old.phone is not null
                  then old.org_id::text || ':' || old.phone end,
             case when tg_op <> 'DELETE' and new.phone is not null
                  then new.org_id::text || ':' || new.phone end]) as x
     where x is not null
  loop
    insert into switchboard.routing_changes (entity, key) values ('customer', k)
    returning id, changed_at into change_id, changed;
    perform pg_notify('switchboard_routing_changes',
                      json_build_object('id', change_id, 'entity', 'customer', 'key', k,
                                        'at', extract(epoch from changed))::text);
  end loop;
  return null;
end
$$;

revoke all on function switchboard.log_customer_change() from public;

drop trigger if exists log_customer_change on public.customers;
create trigger log_customer_change
  after insert or delete on public.customers
  for each row execute function switchboard.log_customer_change();

drop trigger if exists log_customer_update on public.customers;
create trigger log_customer_update
  after update of org_id, phone, name, email on public.customers
  for each row
  when ((old.org_id, old.phone, old.name, old.email)
        is distinct from (new.org_id, new.phone, new.name, new.email))
  execute function switchboard.log_customer_change();
