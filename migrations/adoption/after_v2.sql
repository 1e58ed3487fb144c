-- Adopting a multi-tenant database (migrations/README.md, "Adopting a
-- multi-tenant database"), step 2 of 3: after V2 has created the tenancy
-- tables, before V3 puts its policies over them.
--
-- Users and their roles move from profiles.org_id/role into memberships,
-- agents' numbers into phone_numbers, customers' phones become E.164, and
-- the application's foreign keys give way to V2's. Every statement is
-- re-entrant: a row already converted is left alone, an issue already
-- recorded for a row is not recorded twice. Settings read:
-- switchboard.adopt_owner_email, switchboard.adopt_calling_code.

insert into switchboard.adoption_issues (table_name, row_id, issue)
select table_name, row_id, issue from pg_temp.adoption_notes;

-- Records an issue about a row unless one is recorded for it already.
create or replace procedure pg_temp.note(table_name text, row_id uuid, issue text)
language sql
as $$
  insert into switchboard.adoption_issues (table_name, row_id, issue)
  select $1, $2, $3
   where not exists (select 1 from switchboard.adoption_issues i
                      where i.table_name = $1 and i.row_id is not distinct from $2 and i.issue = $3);
$$;

do $$
declare
  -- '+44' is read as 44
  calling_code text := ltrim(coalesce(nullif(current_setting('switchboard.adopt_calling_code', true), ''), '1'), '+');
  owner_email text := nullif(current_setting('switchboard.adopt_owner_email', true), '');
  r record;
  holder uuid;
begin
  if calling_code !~ '^[1-9][0-9]{0,2}$' then
    raise exception 'switchboard.adopt_calling_code must be a country calling code such as 1 or 44, not %',
      calling_code using errcode = 'invalid_parameter_value';
  end if;

  -- agents ------------------------------------------------------------------

  -- the case study's is_active may be null; "default true" is what it meant
  update public.agents set is_active = true where is_active is null;
  alter table public.agents
    alter column is_active set default true,
    alter column is_active set not null;

  -- profiles → memberships ----------------------------------------------------

  -- admin, manager and viewer keep their names; in each organization the
  -- admin who joined first (profiles.created_at, then id) becomes its owner.
  -- No role is viewer (the case study's default); another role becomes
  -- viewer and is recorded.
  insert into public.memberships (org_id, user_id, role)
  select p.org_id, p.id,
         case when p.role = 'admin' and p.admin_rank = 1 then 'owner'
              when p.role in ('admin', 'manager', 'viewer') then p.role
              else 'viewer'
         end::public.member_role
    from (select q.id, q.org_id, lower(btrim(to_jsonb(q) ->> 'role')) as role,
                 row_number() over (partition by q.org_id, lower(btrim(to_jsonb(q) ->> 'role')) = 'admin'
                                    order by q.created_at, q.id) as admin_rank
            from public.profiles q
           where q.org_id is not null) p
  on conflict (org_id, user_id) do nothing;

  for r in
    select q.id, q.org_id, to_jsonb(q) ->> 'role' as role from public.profiles q
  loop
    if r.org_id is null then
      call pg_temp.note('public.profiles', r.id, 'no organization (org_id is null): no membership created');
    elsif lower(btrim(r.role)) not in ('admin', 'manager', 'viewer') then
      call pg_temp.note('public.profiles', r.id,
                        format('role %L is not admin, manager or viewer: member as viewer', r.role));
    end if;
  end loop;

  -- the organization the user belonged to is the one they last worked in
  update public.profiles set last_active_org_id = org_id
   where last_active_org_id is null and org_id is not null;

  -- the configured user owns every organization no admin profile owns
  if owner_email is not null then
    if not exists (select 1 from auth.users u where lower(u.email) = lower(owner_email)) then
      call pg_temp.note('public.memberships', null,
                        format('no user has the email %L: it owns no organization', owner_email));
    end if;
    insert into public.memberships (org_id, user_id, role)
    select o.id, u.id, 'owner'
      from public.organizations o
      cross join auth.users u
     where lower(u.email) = lower(owner_email)
       and o.deleted_at is null
       and not exists (select 1 from public.memberships m where m.org_id = o.id and m.role = 'owner')
    on conflict (org_id, user_id) do update set role = 'owner';
  end if;

  -- agents.phone_number → phone_numbers -------------------------------------

  -- Normalized to E.164 with the configured calling code. Two spellings of
  -- one number (in one organization or in two): the agent created first
  -- (created_at, then id) keeps it, the other is recorded. The column stays
  -- for the application, no longer required and no longer read.
  if exists (select 1 from pg_attribute
              where attrelid = 'public.agents'::regclass and attname = 'phone_number' and not attisdropped) then
    execute $sql$
      insert into public.phone_numbers (org_id, agent_id, number, is_active)
      select a.org_id, a.id, switchboard.legacy_number_to_e164(a.phone_number, $1), a.is_active
        from public.agents a
       where switchboard.legacy_number_to_e164(a.phone_number, $1) is not null
       order by a.created_at, a.id
      on conflict (number) do nothing
    $sql$ using calling_code;
    for r in
      execute $sql$
        select a.id, a.phone_number, switchboard.legacy_number_to_e164(a.phone_number, $1) as e164
          from public.agents a
         where a.phone_number is not null
      $sql$ using calling_code
    loop
      if r.e164 is null then
        call pg_temp.note('public.agents', r.id,
                          format('phone_number %L is not a usable E.164 number: not routed', r.phone_number));
      else
        select p.agent_id into holder from public.phone_numbers p where p.number = r.e164 and p.agent_id <> r.id;
        if found then
          call pg_temp.note('public.agents', r.id, format(
            'phone_number %L is %s, which agent %s (created earlier) has: not routed', r.phone_number, r.e164, holder));
        end if;
      end if;
    end loop;
    alter table public.agents alter column phone_number drop not null;
  end if;

  -- customers' phones -----------------------------------------------------------

  -- Normalized, except onto a phone another customer of the same
  -- organization has; of two spellings of one phone in one organization the
  -- customer created first keeps it. The rest are recorded.
  with normalized as (
    select c.id, c.org_id, c.created_at, switchboard.legacy_number_to_e164(c.phone, calling_code) as phone
      from public.customers c
     where c.phone !~ '^\+[1-9][0-9]{6,14}$'
  ), winners as (
    select distinct on (n.org_id, n.phone) n.id, n.phone
      from normalized n
     where n.phone is not null
       and not exists (select 1 from public.customers d where d.org_id = n.org_id and d.phone = n.phone)
     order by n.org_id, n.phone, n.created_at, n.id
  )
  update public.customers c set phone = w.phone from winners w where c.id = w.id;
  for r in
    select c.id, c.org_id, c.phone, switchboard.legacy_number_to_e164(c.phone, calling_code) as e164
      from public.customers c
     where c.phone is null or c.phone !~ '^\+[1-9][0-9]{6,14}$'
  loop
    call pg_temp.note('public.customers', r.id, case
      when r.phone is null then 'no phone: kept, never matched to a caller'
      when r.e164 is null then format('phone %L is not a usable E.164 number: kept as it is, never matched to a caller', r.phone)
      else format('phone %L is %s, which another customer of the organization has: kept as it is, never matched to a caller',
                  r.phone, r.e164)
    end);
  end loop;

  -- foreign keys ------------------------------------------------------------------

  -- Single-column keys to agents and customers: the composite ones V2 added
  -- (the referenced row is of the same organization) replace them, and
  -- deleting an agent clears calls.agent_id instead of failing.
  for r in
    select con.conrelid::regclass as tbl, con.conname
      from pg_constraint con
     where con.contype = 'f'
       and con.conrelid in ('public.calls'::regclass, 'public.knowledge_base'::regclass)
       and con.confrelid in ('public.agents'::regclass, 'public.customers'::regclass)
       and cardinality(con.conkey) = 1
  loop
    execute format('alter table %s drop constraint %I', r.tbl, r.conname);
  end loop;

  -- Keys to organizations that would stop an organization from being
  -- deleted: its rows go with it, as in a schema V2 created; a profile keeps
  -- the user and forgets the organization.
  for r in
    select con.conrelid::regclass as tbl, cls.relname, con.conname
      from pg_constraint con
      join pg_class cls on cls.oid = con.conrelid
     where con.contype = 'f'
       and con.confrelid = 'public.organizations'::regclass
       and cls.relnamespace = 'public'::regnamespace
       and cls.relname in ('agents', 'customers', 'calls', 'knowledge_base', 'profiles')
       and con.conkey = array[(select attnum from pg_attribute where attrelid = con.conrelid and attname = 'org_id')]
       and con.confdeltype <> case when cls.relname = 'profiles' then 'n' else 'c' end
  loop
    execute format('alter table %s drop constraint %I', r.tbl, r.conname);
    execute format('alter table %s add constraint %I foreign key (org_id) references public.organizations (id) on delete %s',
                   r.tbl, r.relname || '_org_id_fkey', case when r.relname = 'profiles' then 'set null' else 'cascade' end);
  end loop;

  -- checks V2 left NOT VALID because of rows converted above hold now
  for r in
    select con.conrelid::regclass as tbl, con.conname
      from pg_constraint con
     where con.connamespace = 'public'::regnamespace and not con.convalidated
  loop
    begin
      execute format('alter table %s validate constraint %I', r.tbl, r.conname);
      delete from switchboard.adoption_issues
       where starts_with(issue, format('existing rows violate %s (', r.conname));
    exception when check_violation or foreign_key_violation then
      null; -- still violated: its issue stays
    end;
  end loop;
end
$$;
