-- The recorder's batch write as a function. A batch of call and usage
-- events is one statement (see src/store/calls.rs for what it merges and
-- why it is idempotent). Sent as text through a transaction-mode pooler,
-- which keeps no prepared statement, that statement would be parsed and
-- planned again for every batch: for a batch of a few dozen calls, a large
-- share of the database's time for it. PL/pgSQL keeps the plan of a
-- statement in a function for the life of the server connection, which
-- the pooler keeps open, so each batch is only executed.
--
-- The function runs with the caller's rights (security invoker): the
-- daemon's role writes the rows under its own grants and row level security,
-- as before. Nobody else may call it.

create or replace function switchboard.write_events(
  call_ids uuid[],
  call_orgs uuid[],
  gateway_call_ids text[],
  called_numbers text[],
  caller_numbers text[],
  agent_ids uuid[],
  customer_ids uuid[],
  statuses text[],
  started timestamptz[],
  answered timestamptz[],
  ended timestamptz[],
  end_reasons text[],
  usage_ids uuid[],
  usage_orgs uuid[],
  usage_calls uuid[],
  usage_metrics text[],
  usage_quantities float8[],
  usage_occurred timestamptz[])
returns void
language plpgsql
security invoker
set search_path = ''
as $$
begin
  with call_rows as (
    select *
      from unnest(call_ids, call_orgs, gateway_call_ids, called_numbers, caller_numbers,
                  agent_ids, customer_ids, statuses, started, answered, ended, end_reasons)
        as c(id, org_id, gateway_call_id, called_number, caller_number, agent_id,
             customer_id, status, started_at, answered_at, ended_at, end_reason)
  ), written_calls as (
    insert into public.calls as calls
           (id, org_id, gateway_call_id, called_number, caller_number, agent_id,
            customer_id, status, started_at, answered_at, ended_at, end_reason)
    select c.id, c.org_id, c.gateway_call_id, c.called_number, c.caller_number, a.id,
           cu.id, c.status, c.started_at, c.answered_at, c.ended_at, c.end_reason
      from call_rows c
      join public.organizations o on o.id = c.org_id
      left join public.agents a on a.org_id = c.org_id and a.id = c.agent_id
      left join public.customers cu on cu.org_id = c.org_id and cu.id = c.customer_id
     order by c.id
    on conflict (id) do update set
      gateway_call_id = coalesce(calls.gateway_call_id, excluded.gateway_call_id),
      called_number = coalesce(calls.called_number, excluded.called_number),
      caller_number = coalesce(calls.caller_number, excluded.caller_number),
      agent_id = coalesce(calls.agent_id, excluded.agent_id),
      customer_id = coalesce(calls.customer_id, excluded.customer_id),
      started_at = coalesce(calls.started_at, excluded.started_at),
      answered_at = coalesce(calls.answered_at, excluded.answered_at),
      -- the first recorded end decides the outcome
      status = case when calls.ended_at is null and excluded.ended_at is not null
                    then excluded.status else calls.status end,
      end_reason = case when calls.ended_at is null then excluded.end_reason
                        else calls.end_reason end,
      ended_at = coalesce(calls.ended_at, excluded.ended_at)
    -- a repeated event rewrites nothing
    where (calls.started_at is null and excluded.started_at is not null)
       or (calls.answered_at is null and excluded.answered_at is not null)
       or (calls.ended_at is null and excluded.ended_at is not null)
    returning 1
  )
  insert into public.usage_events (id, org_id, call_id, metric, quantity, occurred_at)
  select u.id, u.org_id, u.call_id, u.metric, u.quantity::numeric, u.occurred_at
    from unnest(usage_ids, usage_orgs, usage_calls, usage_metrics, usage_quantities,
                usage_occurred)
      as u(id, org_id, call_id, metric, quantity, occurred_at)
    join public.organizations o on o.id = u.org_id
   order by u.id
  on conflict (id) do nothing;
end
$$;

revoke all on function switchboard.write_events from public, anon, authenticated, service_role;
grant execute on function switchboard.write_events to switchboard_daemon;
