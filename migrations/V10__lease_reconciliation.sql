-- Lease reconciliation: the daemon rebuilds its concurrency leases in Redis
-- from the call records (docs/scale-out.md). Every few seconds one replica
-- reads the calls still open and the calls ended in the last minutes; these
-- two partial indexes keep both reads proportional to what they return,
-- however long the calls table grows.

-- Open calls: few at any time (the ones in progress, and any never ended).
create index if not exists calls_open_idx
  on public.calls (started_at)
  where ended_at is null;

-- Calls by when they ended, for "ended since the last reconciliation".
create index if not exists calls_ended_idx
  on public.calls (ended_at)
  where ended_at is not null;
