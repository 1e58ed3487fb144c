-- Supabase's internal database, where Supavisor keeps its tenants
-- (as in Supabase's own self-hosting compose file).
\set pguser `echo "$POSTGRES_USER"`

create database _supabase with owner :pguser;
