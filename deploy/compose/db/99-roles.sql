-- Supavisor looks client passwords up (`auth_query`) as the `pgbouncer`
-- role the Supabase image creates; give it the password pooler.exs uses.
\set pgpass `echo "$POSTGRES_PASSWORD"`

alter user pgbouncer with password :'pgpass';
