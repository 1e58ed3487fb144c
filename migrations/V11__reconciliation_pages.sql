-- Lease reconciliation reads the call records in pages (docs/scale-out.md):
-- open calls in the order they started, ended calls in the order they
-- ended, each page continuing after the last call of the one before it
-- (its time, then its id). An index in exactly that order lets every page
-- stop after the calls it returns; V10's indexes, on the time alone, made
-- each page sort every call after the cursor first. These replace them.
--
-- Building an index holds writes to `calls` while it builds. The open
-- calls' index is small (only calls in progress, and any never ended). The
-- ended calls' index covers every ended call: on a large existing table,
-- create it first with `create index concurrently` under the same name and
-- definition, and this migration keeps it.

create index if not exists calls_open_page_idx
  on public.calls (started_at, id)
  where ended_at is null;

create index if not exists calls_ended_page_idx
  on public.calls (ended_at, id)
  where ended_at is not null;

drop index if exists public.calls_open_idx;
drop index if exists public.calls_ended_idx;
