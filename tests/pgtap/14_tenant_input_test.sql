-- What tenants write is bounded and clean (issue 17): jsonb sizes and depth
-- checked cheaply before any walk (item 5), credentials refused in every
-- free-form config (item 6), names, lengths and invitation addresses
-- (item 11), no-op updates that ring nobody (item 11), and sign-ups that
-- never fail on their metadata (item 11).
begin;
select plan(45);

select tests.seed();

-- item 5: size and depth first -------------------------------------------------------------------

-- the review's value: 64 KB nested 4,000 deep (an object of arrays)
create function pg_temp.deep(levels integer, filler integer default 0) returns jsonb
language sql immutable
as $$ select (repeat('{"a":[', levels / 2) || to_json(repeat('x', filler))::text || repeat(']}', levels / 2))::jsonb $$;
select cmp_ok(octet_length(pg_temp.deep(4000, 40000)::text), '>', 50000, 'the deep value is over 50 KB of JSON');

select tests.act('manager_a');
select throws_ok(
  $$insert into public.agents (org_id, name, llm_config) values (tests.id('org_a'), 'Deep', pg_temp.deep(4000, 40000))$$,
  '23514', 'agents.llm_config is nested too deeply (at most 32 levels)',
  'an llm_config nested 4,000 deep is refused by the depth bound');
select throws_ok(
  $$insert into public.knowledge_base (org_id, title, content, metadata)
    values (tests.id('org_a'), 'Deep', 'x', pg_temp.deep(4000, 40000))$$,
  '23514', 'knowledge_base.metadata is nested too deeply (at most 32 levels)',
  'so is knowledge base metadata');
select throws_ok(
  $$insert into public.agents (org_id, name, llm_config)
    values (tests.id('org_a'), 'Big', jsonb_build_object('system_prompt', repeat('x', 140000)))$$,
  '23514', 'agents.llm_config is too large: 140021 bytes of JSON (at most 131072)',
  'an llm_config over 128 KiB is refused');
select lives_ok(
  $$insert into public.agents (org_id, name, llm_config)
    values (tests.id('org_a'), 'Long prompt', jsonb_build_object('system_prompt', repeat('x', 120000), 'tools', pg_temp.deep(30)))$$,
  'a 120 KB system prompt with tools nested 30 deep is fine');
select tests.act('owner_a');
select throws_ok(
  $$update public.organizations set settings = pg_temp.deep(4000, 40000) where id = tests.id('org_a')$$,
  '23514', 'organizations.settings is nested too deeply (at most 32 levels)',
  'organization settings nested 4,000 deep are refused');
select throws_ok(
  $$update public.organizations set settings = jsonb_build_object('note', repeat('x', 70000)) where id = tests.id('org_a')$$,
  '23514', 'organizations.settings is too large: 70012 bytes of JSON (at most 65536)',
  'organization settings over 64 KiB are refused');
select tests.act('service_role');
select throws_ok(
  $$update public.agents set llm_config = pg_temp.deep(4000, 40000) where id = tests.id('agent_b')$$,
  '23514', 'agents.llm_config is nested too deeply (at most 32 levels)',
  'the bounds hold for service_role too');
select tests.act('superuser');

-- item 6: credentials, by pattern, everywhere ---------------------------------------------------------

select throws_ok(
  format($$update public.agents set llm_config = %L where id = tests.id('agent_a')$$, v),
  '23514', format('agents.llm_config must not hold credentials (key "%s")', k),
  format('llm_config refuses %s', v))
  from (values ('api-key', '{"api-key": "sk-1"}'),
               ('openai_api_key', '{"openai_api_key": "sk-1"}'),
               ('Authorization', '{"headers": {"Authorization": "Bearer sk-1"}}'),
               ('apiSecret', '{"apiSecret": "s"}'),
               ('secret_key', '{"secret_key": "s"}'),
               ('credentials', '{"credentials": {"user": "u"}}'),
               ('X-API-KEY', '{"tools": [{"name": "crm", "headers": {"X-API-KEY": "k"}}]}'),
               ('refresh_token', '{"oauth": {"refresh_token": "r"}}'),
               ('Password', '{"sip": {"Password": "p"}}'),
               ('private_key', '{"private_key": "-----BEGIN"}')) v(k, v);
select throws_ok(
  $$update public.organizations set settings = '{"crm": {"apiKey": "k"}}' where id = tests.id('org_a')$$,
  '23514', 'organizations.settings must not hold credentials (key "apiKey")',
  'organization settings refuse credentials');
select throws_ok(
  $$update public.knowledge_base set metadata = '{"source": {"access_token": "t"}}' where id = tests.id('kb_a')$$,
  '23514', 'knowledge_base.metadata must not hold credentials (key "access_token")',
  'knowledge base metadata refuses credentials');
select lives_ok(
  $$update public.agents set llm_config = '{"model": "gpt-4o", "max_tokens": 512, "api_key_ref": "openai-prod",
                                           "vault_secret_id": "b7c1", "client_secret": null,
                                           "tools": [{"name": "crm", "auth": {"type": "bearer", "token_ref": "crm-prod"}}],
                                           "redact_secrets": true}'
     where id = tests.id('agent_a')$$,
  'references to secrets (…_ref, …_id, …_name), max_tokens and boolean or null flags are fine');

-- item 11: names, lengths, addresses -------------------------------------------------------------------

select tests.act('owner_a');
select throws_ok(format($$update public.organizations set name = %L where id = tests.id('org_a')$$, n),
  '23514', null, format('an organization name with %s is refused', what))
  from (values ('a right-to-left override (U+202E)', E'Acme \u202Egnp.exe'),
               ('a first-strong isolate (U+2068)', E'Acme \u2068x'),
               ('a newline', E'Acme\nDental'),
               ('a NUL-like control character (U+0001)', E'Acme\u0001')) v(what, n);
select lives_ok($$update public.organizations set name = 'Café Zürich — 東京 🦷' where id = tests.id('org_a')$$,
  'an organization name in any script, with emoji, is fine');
select tests.act('manager_a');
select throws_ok($$update public.agents set name = E'Reception\u202E' where id = tests.id('agent_a')$$,
  '23514', null, 'an agent name with a bidi override is refused');
select throws_ok($$update public.agents set name = E'Reception\t' where id = tests.id('agent_a')$$,
  '23514', null, 'an agent name with a tab is refused');
select throws_ok($$update public.agents set voice_id = repeat('v', 201) where id = tests.id('agent_a')$$,
  '23514', null, 'a voice_id over 200 characters is refused');
select throws_ok($$update public.knowledge_base set content = repeat('x', 1048577) where id = tests.id('kb_a')$$,
  '23514', null, 'a knowledge base document over 1 MiB is refused');
select lives_ok($$update public.knowledge_base set content = repeat('x', 1000000) where id = tests.id('kb_a')$$,
  'a document of a million characters is fine');
select throws_ok($$update public.customers set name = repeat('n', 201) where id = tests.id('customer_a')$$,
  '23514', null, 'a customer name over 200 characters is refused');
select throws_ok($$update public.customers set email = repeat('e', 320) || '@x.test' where id = tests.id('customer_a')$$,
  '23514', null, 'a customer email over 320 characters is refused');

select tests.act('superuser');
create function pg_temp.invite(address text) returns text
language plpgsql
as $$
begin
  return public.invite_member(tests.id('org_a'), address);
exception when others then
  return 'error ' || sqlstate || ': ' || sqlerrm;
end
$$;
select tests.act('admin_a');
select pg_temp.invite(E'\u00a0\u200b New.Person@Example.test\u200b\u00a0 ') as padded_invitation \gset
select tests.act('superuser');
select is((select string_agg(email, ', ') from public.invitations where email like '%new.person@example.test%'),
          'new.person@example.test',
          'an invitation address is trimmed of blanks, no-break and zero-width spaces, and lowercased');
select tests.act('admin_a');
select throws_ok(format('select public.invite_member(tests.id(%L), %L)', 'org_a', a), '22023', null,
                 format('an invitation to %s is refused', what))
  from (values ('an address with a zero-width space inside', E'new\u200bperson@example.test'),
               ('an address with a no-break space inside', E'new\u00a0person@example.test'),
               ('an address of 300 characters', repeat('a', 288) || '@example.test'),
               ('two @', 'a@b@example.test')) v(what, a);
select tests.act('superuser');
select is(tests.try_as('service_role',
            $$insert into public.invitations (org_id, email, token_hash, expires_at)
              values (tests.id('org_a'), E'x\u200b@example.test', '\x01', now() + interval '1 day')$$),
          'error 23514: new row for relation "invitations" violates check constraint "invitations_email_clean"',
          'the table refuses an unclean address whoever writes it');

-- item 11: a no-op update rings nobody -------------------------------------------------------------------

create function pg_temp.changes() returns bigint
language sql as $$ select count(*) from switchboard.routing_changes $$;
select pg_temp.changes() as before_noop \gset
select tests.act('manager_a');
update public.agents set name = name, llm_config = llm_config where id = tests.id('agent_a');
update public.phone_numbers set is_active = is_active where id = tests.id('phone_a');
select tests.act('owner_a');
update public.organizations set settings = settings, name = name where id = tests.id('org_a');
select tests.act('superuser');
select is(pg_temp.changes(), :'before_noop'::bigint,
          'updates that change nothing (set name = name) log no routing change, so no NOTIFY either');
select tests.act('manager_a');
update public.agents set is_active = false where id = tests.id('agent_a');
select tests.act('superuser');
select is(pg_temp.changes(), :'before_noop'::bigint + 1, 'a real change still logs one');

-- item 11: sign-up never fails on its metadata ------------------------------------------------------------------

select lives_ok(
  $$insert into auth.users (id, email, raw_user_meta_data)
    values (tests.id('verbose'), 'verbose@example.test', jsonb_build_object('full_name', repeat('Long ', 2000)))$$,
  'a sign-up with a 10,000-character full_name succeeds');
select is((select length(full_name) from public.profiles where id = tests.id('verbose')), 200,
          'its profile keeps the first 200 characters');
select lives_ok(
  $$insert into auth.users (id, email, raw_user_meta_data)
    values (tests.id('blank'), 'blank@example.test', '{"full_name": "   "}')$$,
  'a sign-up with a blank full_name succeeds');
select is((select full_name from public.profiles where id = tests.id('blank')), null, 'with no name');

select * from finish();
rollback;
