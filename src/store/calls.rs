//! Writing call records and usage: one statement per batch, idempotent.
//!
//! A batch of events becomes one `insert … select from unnest(…)` per
//! table, chained in a single statement (one round trip, atomic, no
//! transaction to hold across the pooler):
//!
//! * `calls` gets one row per call in the batch, merged from whatever the
//!   batch knows about it (opened, ended, or only that usage exists). The
//!   upsert fills only columns that are still empty, so events may arrive in
//!   any order and any number of times: an end recorded before its open
//!   still ends up as one correct row, and the first outcome recorded wins.
//! * `usage_events` rows are keyed by their own id: `on conflict do
//!   nothing`. A usage row's call row is written by the same statement, so
//!   the foreign key holds even when the usage arrives first.
//!
//! Rows for an organization that no longer exists are dropped (its calls
//! went with it); an agent or customer deleted since the call was routed is
//! recorded as unknown, as the foreign keys' `on delete set null` would
//! have left it.

use std::{collections::HashMap, time::Duration, time::SystemTime};

use tokio_postgres::types::Type;
use uuid::Uuid;

use super::postgres::{describe, transient, Failure, PgStore};
use crate::domain::{AgentId, CallId, EndReason, Event, OrgId, ResolveError, Usage};
use crate::telemetry::series::Query;

const WRITE_EVENTS_SQL: &str = "
    with call_rows as (
      select *
        from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[],
                    $7::uuid[], $8::text[], $9::timestamptz[], $10::timestamptz[],
                    $11::timestamptz[], $12::text[])
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
      from unnest($13::uuid[], $14::uuid[], $15::uuid[], $16::text[], $17::float8[],
                  $18::timestamptz[])
        as u(id, org_id, call_id, metric, quantity, occurred_at)
      join public.organizations o on o.id = u.org_id
     order by u.id
    on conflict (id) do nothing";

const CALL_ORG_SQL: &str = "select org_id from public.calls where id = $1";

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Not now: the database is unreachable, slow, overloaded or refusing
    /// this role (a grant fixed later lets the same rows through). Retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused these rows (a data or integrity error): the
    /// same rows would fail the same way again.
    #[error("rows refused: {0}")]
    Refused(String),
}

/// Everything the batch says about one call.
#[derive(Default)]
struct CallRow {
    org_id: OrgId,
    gateway_call_id: Option<String>,
    called_number: Option<String>,
    caller_number: Option<String>,
    agent_id: Option<AgentId>,
    customer_id: Option<Uuid>,
    started_at: Option<SystemTime>,
    answered_at: Option<SystemTime>,
    ended_at: Option<SystemTime>,
    end_reason: Option<EndReason>,
}

impl CallRow {
    /// The status a row inserted from this state starts with.
    fn status(&self) -> &'static str {
        match (self.end_reason, self.started_at) {
            (Some(reason), _) => reason.status(),
            (None, Some(_)) => "ringing",
            // only usage is known so far: the call is under way
            (None, None) => "in_progress",
        }
    }
}

/// One row per call, the first of each event kind winning (an end written
/// twice keeps the first outcome), and each usage event once.
fn merge(events: &[Event]) -> (HashMap<CallId, CallRow>, HashMap<Uuid, &Usage>) {
    let mut calls: HashMap<CallId, CallRow> = HashMap::new();
    let mut usage: HashMap<Uuid, &Usage> = HashMap::new();
    for event in events {
        let row = calls.entry(event.call_id()).or_insert_with(|| CallRow {
            org_id: event.org_id(),
            ..CallRow::default()
        });
        match event {
            Event::CallOpened(e) if row.started_at.is_none() => {
                row.gateway_call_id = Some(e.gateway_call_id.clone());
                row.called_number = Some(e.called_number.clone());
                row.caller_number.clone_from(&e.caller_number);
                row.agent_id = Some(e.agent_id);
                row.customer_id = e.customer_id;
                row.started_at = Some(e.started_at);
            }
            Event::CallEnded(e) if row.ended_at.is_none() => {
                row.end_reason = Some(e.reason);
                row.ended_at = Some(e.ended_at);
                row.answered_at = e.answered_at;
            }
            Event::Usage(e) => {
                usage.entry(e.id).or_insert(e);
            }
            _ => {}
        }
    }
    (calls, usage)
}

/// Refused (the data itself) or unavailable (worth retrying).
fn write_error(failure: Failure, timeout: Duration) -> WriteError {
    match failure {
        Failure::Pool(e) => WriteError::Unavailable(e.to_string()),
        Failure::Timeout => WriteError::Unavailable(format!("no answer within {timeout:?}")),
        Failure::Query(e) if refused(&e) => WriteError::Refused(describe(&e)),
        Failure::Query(e) => WriteError::Unavailable(describe(&e)),
    }
}

impl PgStore {
    /// Writes a batch of events in one statement within `timeout`. Safe to
    /// repeat with any overlap of events already written.
    pub async fn write_events(
        &self,
        events: &[Event],
        timeout: Duration,
    ) -> Result<(), WriteError> {
        let (calls, usage) = merge(events);

        let mut ids = Vec::with_capacity(calls.len());
        let mut org_ids = Vec::with_capacity(calls.len());
        let mut gateway_call_ids = Vec::with_capacity(calls.len());
        let mut called_numbers = Vec::with_capacity(calls.len());
        let mut caller_numbers = Vec::with_capacity(calls.len());
        let mut agent_ids = Vec::with_capacity(calls.len());
        let mut customer_ids = Vec::with_capacity(calls.len());
        let mut statuses = Vec::with_capacity(calls.len());
        let mut started = Vec::with_capacity(calls.len());
        let mut answered = Vec::with_capacity(calls.len());
        let mut ended = Vec::with_capacity(calls.len());
        let mut reasons = Vec::with_capacity(calls.len());
        for (id, row) in &calls {
            ids.push(id.uuid());
            org_ids.push(row.org_id.uuid());
            gateway_call_ids.push(row.gateway_call_id.as_deref());
            called_numbers.push(row.called_number.as_deref());
            caller_numbers.push(row.caller_number.as_deref());
            agent_ids.push(row.agent_id.map(AgentId::uuid));
            customer_ids.push(row.customer_id);
            statuses.push(row.status());
            started.push(row.started_at);
            answered.push(row.answered_at);
            ended.push(row.ended_at);
            reasons.push(row.end_reason.map(EndReason::as_str));
        }
        let mut usage_ids = Vec::with_capacity(usage.len());
        let mut usage_orgs = Vec::with_capacity(usage.len());
        let mut usage_calls = Vec::with_capacity(usage.len());
        let mut metrics = Vec::with_capacity(usage.len());
        let mut quantities = Vec::with_capacity(usage.len());
        let mut occurred = Vec::with_capacity(usage.len());
        for u in usage.values() {
            usage_ids.push(u.id);
            usage_orgs.push(u.org_id.uuid());
            usage_calls.push(u.call_id.uuid());
            metrics.push(u.metric.as_str());
            quantities.push(u.quantity);
            occurred.push(u.occurred_at);
        }

        self.run_typed(
            Query::WriteEvents,
            WRITE_EVENTS_SQL,
            &[
                (&ids, Type::UUID_ARRAY),
                (&org_ids, Type::UUID_ARRAY),
                (&gateway_call_ids, Type::TEXT_ARRAY),
                (&called_numbers, Type::TEXT_ARRAY),
                (&caller_numbers, Type::TEXT_ARRAY),
                (&agent_ids, Type::UUID_ARRAY),
                (&customer_ids, Type::UUID_ARRAY),
                (&statuses, Type::TEXT_ARRAY),
                (&started, Type::TIMESTAMPTZ_ARRAY),
                (&answered, Type::TIMESTAMPTZ_ARRAY),
                (&ended, Type::TIMESTAMPTZ_ARRAY),
                (&reasons, Type::TEXT_ARRAY),
                (&usage_ids, Type::UUID_ARRAY),
                (&usage_orgs, Type::UUID_ARRAY),
                (&usage_calls, Type::UUID_ARRAY),
                (&metrics, Type::TEXT_ARRAY),
                (&quantities, Type::FLOAT8_ARRAY),
                (&occurred, Type::TIMESTAMPTZ_ARRAY),
            ],
            timeout,
        )
        .await
        .map(drop)
        .map_err(|failure| write_error(failure, timeout))
    }

    /// The organization of a recorded call, if the call is recorded.
    pub async fn find_call_org(&self, call_id: CallId) -> Result<Option<OrgId>, ResolveError> {
        let rows = self
            .query_typed(
                Query::CallOrg,
                CALL_ORG_SQL,
                &[(&call_id.uuid(), Type::UUID)],
            )
            .await?;
        rows.first()
            .map(|row| {
                row.try_get(0)
                    .map(OrgId)
                    .map_err(|e| ResolveError::Corrupt(format!("calls.org_id: {e}")))
            })
            .transpose()
    }
}

/// Data exceptions (22) and integrity violations (23) are about the rows;
/// everything else (a connection, a missing grant, a migration not yet
/// run) can heal, so the rows wait.
fn refused(e: &tokio_postgres::Error) -> bool {
    !transient(e)
        && e.as_db_error()
            .is_some_and(|db| ["22", "23"].iter().any(|c| db.code().code().starts_with(c)))
}
