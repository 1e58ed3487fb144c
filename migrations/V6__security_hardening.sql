-- Security hardening (issue 17): invitation and membership states that only
-- move forward, no org_id changes through the API, sequences and default
-- privileges locked down, bounded and secret-free tenant JSON, column-exact
-- grants for the daemon, and what happens when a last owner's account is
-- deleted. See migrations/README.md ("What V6 guarantees").

-- invitations: a state machine that only moves forward ------------------------

-- open → accepted, open → revoked, and nothing else, for every writer
-- (service_role and postgres included). An invitation's identity (org, email,
-- role, token) never changes; its expiry never moves later; revocation and
-- acceptance are final. The foreign keys' `on delete set null` may still
-- clear invited_by and accepted_by when a user is deleted; an open
-- invitation whose inviter is deleted is revoked.
create or replace function switchboard.guard_invitation() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if (new.id, new.org_id, new.email, new.role, new.token_hash, new.created_at)
     is distinct from (old.id, old.org_id, old.email, old.role, old.token_hash, old.created_at)
     or (new.invited_by is distinct from old.invited_by and new.invited_by is not null) then
    raise exception 'an invitation cannot be changed, only revoked or deleted'
      using errcode = 'insufficient_privilege';
  end if;
  if new.expires_at > old.expires_at then
    raise exception 'an invitation''s expiry cannot be extended; invite again'
      using errcode = 'insufficient_privilege';
  end if;
  if old.revoked_at is not null and new.revoked_at is distinct from old.revoked_at then
    raise exception 'revoking an invitation is final'
      using errcode = 'insufficient_privilege';
  end if;
  if old.accepted_at is not null
     and (new.accepted_at is distinct from old.accepted_at
          or (new.accepted_by is distinct from old.accepted_by and new.accepted_by is not null)) then
    raise exception 'an accepted invitation is final'
      using errcode = 'insufficient_privilege';
  end if;
  if old.accepted_at is null and (new.accepted_at is not null or new.accepted_by is not null) then
    if new.accepted_at is null or new.accepted_by is null then
      raise exception 'an invitation is accepted by someone, at some time'
        using errcode = 'insufficient_privilege';
    end if;
    if old.revoked_at is not null or new.revoked_at is not null or old.expires_at <= now() then
      raise exception 'only an open invitation can be accepted'
        using errcode = 'insufficient_privilege';
    end if;
  end if;
  if old.revoked_at is null and new.revoked_at is not null then
    if old.accepted_at is not null then
      raise exception 'an accepted invitation cannot be revoked; remove the member instead'
        using errcode = 'insufficient_privilege';
    end if;
    -- the revocation's time is when it happened, whatever the writer said
    new.revoked_at := now();
  end if;
  -- an open invitation lapses with its inviter's account (see accept_invitation)
  if old.invited_by is not null and new.invited_by is null
     and new.accepted_at is null and new.revoked_at is null then
    new.revoked_at := now();
  end if;
  return new;
end
$$;
create or replace trigger guard_invitation before update on public.invitations
  for each row execute function switchboard.guard_invitation();

-- Accepting marks the invitation accepted first, then grants the role: the
-- membership guard lets a user's own role rise only through an invitation
-- they accepted in this very transaction, which no API caller can forge
-- (accepted_at and accepted_by are not writable through the API).
--
-- An invitation is only as good as its inviter: it is refused when the
-- inviter has since lost the right to invite to its role (demoted or
-- removed), so an admin cannot leave invitations behind that outlive their
-- own role, and nobody accepts an invitation they issued themself. One
-- issued by the platform (no inviter) stands on its own; one whose
-- inviter's account is deleted is revoked (guard_invitation).
create or replace function public.accept_invitation(token text) returns uuid
language plpgsql security definer
set search_path = ''
as $$
declare
  uid uuid := (select auth.uid());
  inv public.invitations;
  user_email text;
begin
  if uid is null then
    raise exception 'sign in to accept an invitation' using errcode = 'insufficient_privilege';
  end if;
  select * into inv from public.invitations
   where token_hash = sha256(convert_to(coalesce(token, ''), 'UTF8'))
   for update;
  if not found then
    raise exception 'invitation not found' using errcode = 'no_data_found';
  end if;
  if inv.accepted_at is not null then
    raise exception 'invitation already used' using errcode = 'invalid_parameter_value';
  end if;
  if inv.revoked_at is not null then
    raise exception 'invitation revoked' using errcode = 'invalid_parameter_value';
  end if;
  if exists (select 1 from public.organizations o where o.id = inv.org_id and o.deleted_at is not null) then
    raise exception 'the organization no longer exists' using errcode = 'invalid_parameter_value';
  end if;
  if inv.expires_at <= now() then
    raise exception 'invitation expired' using errcode = 'invalid_parameter_value';
  end if;
  select lower(u.email) into user_email from auth.users u where u.id = uid;
  if user_email is distinct from inv.email then
    raise exception 'invitation is for a different email address' using errcode = 'insufficient_privilege';
  end if;
  if inv.invited_by = uid then
    raise exception 'you cannot accept an invitation you issued' using errcode = 'insufficient_privilege';
  end if;
  if inv.invited_by is not null and not exists (
       select 1 from public.memberships m
        where m.org_id = inv.org_id and m.user_id = inv.invited_by
          and m.role >= greatest('admin'::public.member_role, inv.role)
     ) then
    raise exception 'invitation no longer valid: its inviter can no longer invite to this role'
      using errcode = 'invalid_parameter_value';
  end if;

  update public.invitations set accepted_at = now(), accepted_by = uid where id = inv.id;
  insert into public.memberships (org_id, user_id, role)
  values (inv.org_id, uid, inv.role)
  on conflict (org_id, user_id)
    do update set role = greatest(public.memberships.role, excluded.role);
  return inv.org_id;
end
$$;

-- memberships: no self-promotion; the last owner; deleting a user ---------------

-- Nobody raises their own role, except by accepting an invitation (in the
-- same transaction, see accept_invitation). A live organization never loses
-- its last owner, not even when that owner's account is deleted through
-- Supabase Auth: the deletion is refused with a message saying what to do
-- (transfer_ownership below, or soft-delete the organization). A
-- soft-deleted organization lets its last owner's account go.
create or replace function switchboard.guard_membership() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  user_gone boolean;
  org_deleted_at timestamptz;
  org_slug text;
begin
  if tg_op = 'UPDATE' and new.user_id = (select auth.uid()) and new.role > old.role
     and not exists (
       select 1
         from public.invitations i
        where i.org_id = new.org_id and i.accepted_by = new.user_id
          and i.accepted_at = now() and i.role >= new.role
     ) then
    raise exception 'you cannot raise your own role'
      using errcode = 'insufficient_privilege';
  end if;
  if old.role = 'owner' and (tg_op = 'DELETE' or new.role <> 'owner' or new.org_id <> old.org_id) then
    -- lock the organization: two owners demoting each other concurrently
    -- must not both succeed
    select o.deleted_at, o.slug into org_deleted_at, org_slug
      from public.organizations o where o.id = old.org_id for update;
    if found and not exists (
      select 1 from public.memberships
       where org_id = old.org_id and role = 'owner' and user_id <> old.user_id
    ) then
      -- a deleted user's memberships go with the auth.users row (cascade)
      user_gone := tg_op = 'DELETE'
                   and not exists (select 1 from auth.users u where u.id = old.user_id);
      if user_gone and org_deleted_at is not null then
        return old;
      end if;
      if user_gone then
        raise exception 'user % is the last owner of organization % (%) and cannot be deleted',
          old.user_id, org_slug, old.org_id
          using errcode = 'check_violation',
                hint = 'transfer ownership first (public.transfer_ownership), '
                       'or soft-delete the organization (set deleted_at)';
      end if;
      raise exception 'an organization must keep at least one owner'
        using errcode = 'check_violation',
              hint = 'make another member owner first';
    end if;
  end if;
  return coalesce(new, old);
end
$$;

-- Makes `new_owner`, a member of `org`, its owner, and the calling owner an
-- admin, in one step: what a last owner does before leaving or deleting
-- their account.
create or replace function public.transfer_ownership(org uuid, new_owner uuid) returns void
language plpgsql security definer
set search_path = ''
as $$
declare
  uid uuid := (select auth.uid());
begin
  if not switchboard.has_role(org, 'owner') then
    raise exception 'only an owner can transfer ownership' using errcode = 'insufficient_privilege';
  end if;
  if new_owner = uid then
    raise exception 'you already own this organization' using errcode = 'invalid_parameter_value';
  end if;
  update public.memberships set role = 'owner' where org_id = org and user_id = new_owner;
  if not found then
    raise exception 'the new owner must be a member of the organization'
      using errcode = 'invalid_parameter_value';
  end if;
  update public.memberships set role = 'admin' where org_id = org and user_id = uid;
end
$$;
revoke all on function public.transfer_ownership(uuid, uuid) from public, anon;
grant execute on function public.transfer_ownership(uuid, uuid) to authenticated;

-- org_id never changes through the API ------------------------------------------

-- Moving a tenant's rows to another organization would leave no trace in
-- the one they left. It is an operator's job (see "Splitting a tenant" in
-- migrations/README.md, run as postgres); the API roles and the daemon
-- cannot do it, whatever the policies and grants say. An upsert that
-- rewrites org_id with its own value is not a change and still works.
create or replace function switchboard.keep_org_id() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.org_id is distinct from old.org_id
     and current_user in ('anon', 'authenticated', 'service_role', 'switchboard_daemon') then
    raise exception 'a row of % cannot move to another organization', tg_table_name
      using errcode = 'insufficient_privilege',
            hint = 'moving data between organizations is an operator action (run as postgres)';
  end if;
  return new;
end
$$;
do $$
declare
  t text;
begin
  foreach t in array array['memberships', 'agents', 'phone_numbers', 'customers', 'calls',
                           'usage_events', 'knowledge_base', 'invitations']
  loop
    execute format('create or replace trigger keep_org_id before update of org_id on public.%I
                      for each row execute function switchboard.keep_org_id()', t);
  end loop;
end
$$;

-- sequences and default privileges ------------------------------------------------

-- No API caller needs setval (update) or to read a sequence (select), on
-- any sequence: setval on audit_log's would make every audited write fail.
-- nextval (usage) serves only inserts into a serial column, which a
-- project's own tables in public may have; an identity column needs no
-- privilege on its sequence, so those (all of ours) grant nothing at all.
revoke select, update on all sequences in schema public from anon, authenticated, service_role;
do $$
declare
  seq regclass;
begin
  for seq in
    select s.objid::regclass
      from pg_depend s
      join pg_class c on c.oid = s.objid and c.relkind = 'S'
     where s.classid = 'pg_class'::regclass and s.refclassid = 'pg_class'::regclass
       and s.deptype = 'i' -- a sequence an identity column owns
       and c.relnamespace in ('public'::regnamespace, 'switchboard'::regnamespace)
  loop
    execute format('revoke all on %s from anon, authenticated, service_role', seq);
  end loop;
end
$$;
-- Supabase's defaults grant everything on future sequences to the API
-- roles; keep nextval (usage) for tables you add with serial keys, never
-- setval (update) or reading them (select).
alter default privileges in schema public
  revoke select, update on sequences from anon, authenticated, service_role;
-- nor may the API roles truncate, reference or put triggers on future tables
alter default privileges in schema public
  revoke truncate, references, trigger on tables from anon, authenticated;
alter default privileges in schema public
  revoke references, trigger on tables from service_role;

-- the audit log is append-only and cannot be hooked into (trigger) or
-- pinned by a foreign key (references), by any API role
revoke truncate, references, trigger on public.audit_log
  from anon, authenticated, service_role, switchboard_daemon;
revoke references, trigger on all tables in schema public from service_role;

-- tenant JSON: bounded, then free of credentials ------------------------------------

-- Whether a JSON object key names a credential: case-insensitive, ignoring
-- separators (api_key, api-key, apiKey, openai_api_key, x-api-key,
-- client_secret, apiSecret, secret_key, password, credentials,
-- Authorization, private_key, aws_access_key, refresh_token, …). A key
-- ending in ref, id or name refers to a secret kept elsewhere and is
-- allowed (api_key_ref, vault_secret_id, secret_name).
-- (No `set search_path`: it would stop PostgreSQL from inlining it into the
-- key walk below; it calls only pg_catalog functions.)
create or replace function switchboard.is_secret_key(key text) returns boolean
language sql immutable
as $$
  select regexp_replace(lower(key), '[^a-z0-9]', '', 'g') !~ '(ref|id|name)$'
     and regexp_replace(lower(key), '[^a-z0-9]', '', 'g')
         ~ '(apikey|secret|passw|passphrase|credential|privatekey|accesskey|authorization|bearer|cookie|token$|^pass$|^pwd$)'
$$;

-- Checks a jsonb value a tenant writes: at most `max_bytes` of JSON text and
-- 32 levels of nesting, checked first and cheaply (the depth walk stops at
-- level 32), so that the key walk after them is bounded; then no key naming
-- a credential, at any depth, unless its value is a boolean or null. Raises
-- check_violation saying which rule failed; true otherwise.
create or replace function switchboard.check_tenant_json(value jsonb, what text, max_bytes integer)
returns boolean
language plpgsql immutable
set search_path = ''
as $$
declare
  bytes integer;
  key text;
begin
  if value is null then
    return true;
  end if;
  bytes := octet_length(value::text);
  if bytes > max_bytes then
    raise exception '% is too large: % bytes of JSON (at most %)', what, bytes, max_bytes
      using errcode = 'check_violation';
  end if;
  if jsonb_path_exists(value, 'strict $.**{32}') then
    raise exception '% is nested too deeply (at most 32 levels)', what
      using errcode = 'check_violation';
  end if;
  select e.key into key
    from jsonb_path_query(value, 'strict $.** ? (@.type() == "object")') o
   cross join lateral jsonb_each(o) e
   where jsonb_typeof(e.value) not in ('boolean', 'null')
     and switchboard.is_secret_key(e.key)
   limit 1;
  if key is not null then
    raise exception '% must not hold credentials (key "%")', what, key
      using errcode = 'check_violation',
            hint = 'keep secrets in Supabase Vault or your secret manager and store a reference (a key ending in _ref, _id or _name)';
  end if;
  return true;
end
$$;

-- the old check walked `lax $.**` first, unbounded: its cost grew
-- super-linearly with nesting
alter table public.agents drop constraint if exists agents_llm_config_no_secrets;
-- a system prompt can be long: 128 KiB (some 30,000 tokens); settings and
-- metadata 64 KiB. At these bounds the key walk takes at most about a tenth
-- of a second; a usual config, well under a millisecond.
call switchboard.ensure_constraint('public.agents', 'agents_llm_config_safe',
  'check (switchboard.check_tenant_json(llm_config, ''agents.llm_config'', 131072))', true);
call switchboard.ensure_constraint('public.organizations', 'organizations_settings_safe',
  'check (switchboard.check_tenant_json(settings, ''organizations.settings'', 65536))', true);
call switchboard.ensure_constraint('public.knowledge_base', 'knowledge_base_metadata_safe',
  'check (switchboard.check_tenant_json(metadata, ''knowledge_base.metadata'', 65536))', true);

-- bounds and hygiene of text the API writes ---------------------------------------------

-- names shown to people: no control characters, no bidi embeddings,
-- overrides or isolates (U+202A–U+202E, U+2066–U+2069), which make a name
-- display as something it is not
call switchboard.ensure_constraint('public.organizations', 'organizations_name_printable',
  'check (name !~ ''[[:cntrl:]\u202a-\u202e\u2066-\u2069]'')', true);
call switchboard.ensure_constraint('public.agents', 'agents_name_printable',
  'check (name !~ ''[[:cntrl:]\u202a-\u202e\u2066-\u2069]'')', true);
call switchboard.ensure_constraint('public.agents', 'agents_voice_id_length',
  'check (length(voice_id) <= 200)', true);
call switchboard.ensure_constraint('public.customers', 'customers_name_length',
  'check (length(name) <= 200)', true);
call switchboard.ensure_constraint('public.customers', 'customers_email_length',
  'check (length(email) <= 320)', true);
-- a document of 1 MiB is a book; split longer ones
call switchboard.ensure_constraint('public.knowledge_base', 'knowledge_base_content_length',
  'check (octet_length(content) <= 1048576)', true);
-- an address is at most 254 characters (RFC 5321) and has no blanks,
-- invisible or control characters
call switchboard.ensure_constraint('public.invitations', 'invitations_email_clean',
  'check (length(email) <= 254 and email !~ ''[[:space:][:cntrl:]\u00a0\u200b-\u200d\u2060\ufeff]'')', true);

-- Invitation addresses are normalized: lowercase, trimmed of blanks,
-- no-break spaces and zero-width characters; one left inside the address
-- is refused. Nobody invites themself (see accept_invitation).
create or replace function public.invite_member(
  org uuid, email text, role public.member_role default 'viewer',
  valid_for interval default interval '7 days'
) returns text
language plpgsql security definer
set search_path = ''
as $$
declare
  token text := encode(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()), 'hex');
  address text := lower(regexp_replace(coalesce(email, ''),
                        '^[[:space:]\u00a0\u200b-\u200d\u2060\ufeff]+|[[:space:]\u00a0\u200b-\u200d\u2060\ufeff]+$',
                        '', 'g'));
begin
  if not switchboard.has_role(org, 'admin') then
    raise exception 'only admins and owners can invite members' using errcode = 'insufficient_privilege';
  end if;
  if role = 'owner' and not switchboard.has_role(org, 'owner') then
    raise exception 'only owners can invite owners' using errcode = 'insufficient_privilege';
  end if;
  if address !~ '^[^@]+@[^@]+$' or length(address) > 254
     or address ~ '[[:space:][:cntrl:]\u00a0\u200b-\u200d\u2060\ufeff]' then
    raise exception 'not an email address: %', left(email, 300) using errcode = 'invalid_parameter_value';
  end if;
  if valid_for <= interval '0' or valid_for > interval '30 days' then
    raise exception 'an invitation is valid for up to 30 days' using errcode = 'invalid_parameter_value';
  end if;
  if exists (select 1 from auth.users u where u.id = (select auth.uid()) and lower(u.email) = address) then
    raise exception 'you cannot invite yourself' using errcode = 'insufficient_privilege';
  end if;
  update public.invitations i set revoked_at = now()
   where i.org_id = org and i.email = address and i.accepted_at is null and i.revoked_at is null;
  insert into public.invitations (org_id, email, role, token_hash, invited_by, expires_at)
  values (org, address, role, sha256(convert_to(token, 'UTF8')), (select auth.uid()), now() + valid_for);
  return token;
end
$$;

-- A sign-up never fails on its metadata: the profile keeps the first 200
-- characters of full_name.
create or replace function switchboard.create_profile() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  insert into public.profiles (id, full_name)
  values (new.id, left(nullif(btrim(new.raw_user_meta_data ->> 'full_name'), ''), 200))
  on conflict (id) do nothing;
  return new;
end
$$;

-- routing changes: only real changes ----------------------------------------------------

-- As in V4, but an update that changes nothing (`set name = name`; only
-- updated_at moves) logs nothing and rings nobody.
create or replace function switchboard.log_routing_change() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  entity text := tg_argv[0];
  key_column text := case tg_argv[0] when 'number' then 'number' else 'id' end;
  k text;
  change_id bigint;
  changed timestamptz;
begin
  if tg_op = 'UPDATE' and (to_jsonb(old) - 'updated_at') = (to_jsonb(new) - 'updated_at') then
    return null;
  end if;
  for k in
    select distinct x
      from unnest(array[to_jsonb(old) ->> key_column, to_jsonb(new) ->> key_column]) as x
     where x is not null
  loop
    insert into switchboard.routing_changes (entity, key) values (entity, k)
    returning id, changed_at into change_id, changed;
    -- `at` (epoch seconds) lets each replica measure how late it applies it
    perform pg_notify('switchboard_routing_changes',
                      json_build_object('id', change_id, 'entity', entity, 'key', k,
                                        'at', extract(epoch from changed))::text);
  end loop;
  return null;
end
$$;

-- profiles: last_active_org_id is the user's own business ----------------------------

-- Co-members read each other's name, not which organization (possibly
-- another tenant) each last switched to. Row Level Security cannot hide a
-- column per row, so the column is not readable through the API at all;
-- the user reads their own with public.last_active_org().
revoke select on public.profiles from authenticated;
grant select (id, full_name, created_at, updated_at) on public.profiles to authenticated;

create or replace function public.last_active_org() returns uuid
language sql stable security definer
set search_path = ''
as $$
  select p.last_active_org_id from public.profiles p where p.id = (select auth.uid())
$$;
revoke all on function public.last_active_org() from public, anon;
grant execute on function public.last_active_org() to authenticated;

-- the daemon: exactly the columns it writes ------------------------------------------

-- src/store/calls.rs inserts these columns and, on conflict, updates all of
-- them but id and org_id; usage events are inserted only
revoke insert, update on public.calls from switchboard_daemon;
grant insert (id, org_id, gateway_call_id, called_number, caller_number, agent_id, customer_id,
              status, started_at, answered_at, ended_at, end_reason)
  on public.calls to switchboard_daemon;
grant update (gateway_call_id, called_number, caller_number, agent_id, customer_id,
              status, started_at, answered_at, ended_at, end_reason)
  on public.calls to switchboard_daemon;
revoke insert on public.usage_events from switchboard_daemon;
grant insert (id, org_id, call_id, metric, quantity, occurred_at)
  on public.usage_events to switchboard_daemon;

-- NaN and Infinity pass `quantity >= 0` (NaN sorts above every number) and
-- one such row poisons usage_daily's sums
call switchboard.ensure_constraint('public.usage_events', 'usage_events_quantity_finite',
  'check (quantity < ''Infinity'')', true);

-- the test suite on a Supabase project ----------------------------------------------------

-- Where the migrating role is not a superuser (Supabase's postgres), make it
-- a member of the daemon's role, so that it can `set role
-- switchboard_daemon` to check what the daemon may do. It owns every table
-- the daemon touches already: this gives it nothing new.
do $$
begin
  if not (select rolsuper from pg_roles where rolname = current_user)
     and not pg_has_role(current_user, 'switchboard_daemon', 'member') then
    execute format('grant switchboard_daemon to %I', current_user);
  end if;
exception when insufficient_privilege then
  raise notice 'could not grant switchboard_daemon to %: the pgTAP tests that act as the daemon will fail', current_user;
end
$$;

-- functions created above got PUBLIC's default EXECUTE; triggers run
-- without it
revoke all on all functions in schema switchboard from public;
-- but a check constraint's function is executed with the writer's
-- privileges: the API roles that write tenant JSON need these two (pure
-- functions)
grant execute on function switchboard.check_tenant_json(jsonb, text, integer),
                          switchboard.is_secret_key(text)
  to authenticated, service_role;
