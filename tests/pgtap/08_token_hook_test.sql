-- The custom access token hook puts the user's organizations and roles into
-- the JWT (claims.app_metadata.orgs). They are hints for the client: the
-- policies read memberships, so a removed member loses access at once,
-- whatever their token still says.
begin;
select plan(13);

select tests.seed();

-- Runs the hook as Supabase Auth does (role supabase_auth_admin) for `who`.
create function pg_temp.hook(who text, claims jsonb default null) returns jsonb
language plpgsql
as $$
declare
  event jsonb;
begin
  begin
    perform set_config('role', 'supabase_auth_admin', true);
  exception when insufficient_privilege then
    -- a Supabase project may not let postgres become supabase_auth_admin:
    -- the hook's logic is then checked as postgres (00_catalog_test checks
    -- that supabase_auth_admin may execute it)
    null;
  end;
  event := public.custom_access_token_hook(jsonb_build_object(
    'user_id', tests.id(who),
    'claims', coalesce(claims, jsonb_build_object(
      'sub', tests.id(who), 'role', 'authenticated', 'aud', 'authenticated',
      'app_metadata', jsonb_build_object('provider', 'email')))));
  perform set_config('role', 'none', true);
  return event;
end
$$;

select is(pg_temp.hook('dual') -> 'claims' -> 'app_metadata' -> 'orgs',
          jsonb_build_object(tests.id('org_a'), 'viewer', tests.id('org_b'), 'manager'),
          'the hook lists a member''s organizations with their role in each');
select is(pg_temp.hook('owner_a') -> 'claims' -> 'app_metadata' -> 'orgs',
          jsonb_build_object(tests.id('org_a'), 'owner'),
          'the owner of A gets {A: owner}');
select is(pg_temp.hook('outsider') -> 'claims' -> 'app_metadata' -> 'orgs', '{}'::jsonb,
          'a user in no organization gets an empty map');
select is(pg_temp.hook('dual') -> 'claims' -> 'app_metadata' ->> 'provider', 'email',
          'the hook keeps the existing app_metadata');
select is(pg_temp.hook('dual') -> 'claims' ->> 'sub', tests.id('dual')::text,
          'the hook keeps the other claims');
select is(pg_temp.hook('dual', jsonb_build_object('sub', tests.id('dual'))) -> 'claims' -> 'app_metadata' -> 'orgs',
          jsonb_build_object(tests.id('org_a'), 'viewer', tests.id('org_b'), 'manager'),
          'the hook adds app_metadata when the claims have none');
select is(pg_temp.hook('dual') ->> 'user_id', tests.id('dual')::text,
          'the hook returns the whole event');

update public.organizations set deleted_at = now() where id = tests.id('org_b');
select is(pg_temp.hook('dual') -> 'claims' -> 'app_metadata' -> 'orgs',
          jsonb_build_object(tests.id('org_a'), 'viewer'),
          'soft-deleted organizations are left out');
update public.organizations set deleted_at = null where id = tests.id('org_b');

-- who may call it
select tests.act('viewer_a');
select throws_ok($$select public.custom_access_token_hook('{"user_id": "00000000-0000-0000-0000-000000000000"}')$$,
  '42501', 'permission denied for function custom_access_token_hook',
  'authenticated cannot call the hook (it would read anyone''s memberships)');
select tests.act('anon');
select throws_ok($$select public.custom_access_token_hook('{"user_id": "00000000-0000-0000-0000-000000000000"}')$$,
  '42501', 'permission denied for function custom_access_token_hook', 'anon cannot call the hook');
select tests.act('superuser');

-- stale claims grant nothing
select pg_temp.hook('manager_a') -> 'claims' as stale_claims \gset
delete from public.memberships where org_id = tests.id('org_a') and user_id = tests.id('manager_a');
select tests.act_with_claims(:'stale_claims');
select ok((auth.jwt() -> 'app_metadata' -> 'orgs') ? tests.id('org_a')::text,
          'a removed manager''s token still lists org A');
select is((select count(*) from public.agents), 0::bigint,
          'but the removed manager reads none of A''s agents at once');
select is(tests.affected($$update public.agents set name = 'Stale' where org_id = tests.id('org_a')$$), 0::bigint,
          'and changes none');
select tests.act('superuser');

select * from finish();
rollback;
