//! Writing call records and usage: one statement per batch, idempotent.
//!
//! A batch of events becomes one `insert … select from unnest(…)` per
//! table, chained in a single statement (one round trip, atomic, no
//! transaction to hold across the pooler), kept in the database as the
//! function `switchboard.write_events`:
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

/// One batch: the statement described above, kept in a function
/// (`migrations/V8__write_events_function.sql`) so that PostgreSQL plans it
/// once per server connection; sent as text through a transaction-mode
/// pooler, which keeps no prepared statement, it would be parsed and
/// planned for every batch.
const WRITE_EVENTS_SQL: &str = "
    select switchboard.write_events(
      $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[],
      $7::uuid[], $8::text[], $9::timestamptz[], $10::timestamptz[],
      $11::timestamptz[], $12::text[],
      $13::uuid[], $14::uuid[], $15::uuid[], $16::text[], $17::float8[],
      $18::timestamptz[])";

const CALL_ORG_SQL: &str = "select org_id from public.calls where id = $1";

/// One page of the calls a concurrency lease may stand for, with what the
/// lease is held against: the organization, the agent, and the number's row
/// or else the longest range that holds it. `$1` picks the calls (since
/// `$2`); `$3`, `$4` is where the last page ended; `$5` the page's size.
/// Pages are in the order of the partial index each kind reads (V11), so
/// every page costs what it returns, however many calls there are.
///
/// * `open`: not ended, started after `$2`, by start;
/// * `ended`: ended after `$2`, by end.
const CALLS_PAGE_SQL: &str = "
    with page as (
      (select id, org_id, agent_id, called_number, started_at, false as ended,
              started_at as page_at
         from public.calls
        where $1 = 'open' and ended_at is null
          and started_at > $2
          and started_at >= $3 and (started_at, id) > ($3, $4)
        order by started_at, id
        limit $5)
      union all
      (select id, org_id, agent_id, called_number, started_at, true,
              ended_at
         from public.calls
        where $1 = 'ended'
          and ended_at > $2
          and ended_at >= $3 and (ended_at, id) > ($3, $4)
        order by ended_at, id
        limit $5)
    )
    select c.id, c.org_id, c.agent_id, coalesce(n.id, r.id),
           (extract(epoch from c.started_at) * 1000)::int8, c.ended, c.page_at
      from page c
      left join public.phone_numbers n on n.number = c.called_number and n.org_id = c.org_id
      left join lateral (
        select nr.id from public.number_ranges nr
         where nr.org_id = c.org_id
           and left(c.called_number, length(nr.prefix)) = nr.prefix
         order by length(nr.prefix) desc
         limit 1
      ) r on n.id is null
     order by c.page_at, c.id";

/// Which calls a page of [`PgStore::calls_page`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallsPage {
    /// Open calls started after this, in the order they started.
    Open { started_after: SystemTime },
    /// Calls ended after this, in the order they ended.
    Ended { ended_after: SystemTime },
}

/// Where a page ended: the last call's start (open calls) or end (ended
/// ones), and its id. The next page begins after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallsCursor {
    pub at: SystemTime,
    pub call_id: CallId,
}

impl CallsCursor {
    /// Before every call.
    pub const START: Self = Self {
        at: SystemTime::UNIX_EPOCH,
        call_id: CallId(Uuid::nil()),
    };

    /// `micros:uuid`, to keep between passes.
    pub fn encode(&self) -> String {
        let micros = self
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        format!("{micros}:{}", self.call_id.uuid())
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once(':')?;
        let micros: u64 = micros.parse().ok()?;
        Some(Self {
            at: SystemTime::UNIX_EPOCH + Duration::from_micros(micros),
            call_id: CallId(id.parse().ok()?),
        })
    }
}

/// A call as lease reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentCall {
    pub call_id: CallId,
    pub org_id: OrgId,
    /// `None`: the call has no agent (any more).
    pub agent_id: Option<AgentId>,
    /// `phone_numbers.id` or `number_ranges.id`; `None` when neither holds
    /// the called number any more.
    pub number_id: Option<Uuid>,
    /// When it started, milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// Ended (in the window asked for), or still open.
    pub ended: bool,
    /// Where it stands in its page's order.
    pub cursor: CallsCursor,
}

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

    /// Up to `limit` calls of `which`, after `after` in the page's order,
    /// for lease reconciliation. Fewer than `limit`: the last page.
    pub async fn calls_page(
        &self,
        which: CallsPage,
        after: CallsCursor,
        limit: usize,
    ) -> Result<Vec<RecentCall>, ResolveError> {
        let (kind, since) = match which {
            CallsPage::Open { started_after } => ("open", started_after),
            CallsPage::Ended { ended_after } => ("ended", ended_after),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query_typed(
                Query::RecentCalls,
                CALLS_PAGE_SQL,
                &[
                    (&kind, Type::TEXT),
                    (&since, Type::TIMESTAMPTZ),
                    (&after.at, Type::TIMESTAMPTZ),
                    (&after.call_id.uuid(), Type::UUID),
                    (&limit, Type::INT8),
                ],
            )
            .await?;
        let corrupt = |e: tokio_postgres::Error| ResolveError::Corrupt(format!("calls: {e}"));
        rows.iter()
            .map(|row| {
                let call_id = CallId(row.try_get(0).map_err(corrupt)?);
                Ok(RecentCall {
                    call_id,
                    org_id: OrgId(row.try_get(1).map_err(corrupt)?),
                    agent_id: row
                        .try_get::<_, Option<Uuid>>(2)
                        .map_err(corrupt)?
                        .map(AgentId),
                    number_id: row.try_get(3).map_err(corrupt)?,
                    started_ms: row.try_get(4).map_err(corrupt)?,
                    ended: row.try_get(5).map_err(corrupt)?,
                    cursor: CallsCursor {
                        at: row.try_get(6).map_err(corrupt)?,
                        call_id,
                    },
                })
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_its_encoding() {
        let cursor = CallsCursor {
            at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_000_000_123_456),
            call_id: CallId(Uuid::from_u128(0xabc)),
        };
        assert_eq!(CallsCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(
            CallsCursor::decode(&CallsCursor::START.encode()),
            Some(CallsCursor::START)
        );
        for garbage in [
            "",
            "12",
            "x:00000000-0000-0000-0000-000000000abc",
            "12:nope",
        ] {
            assert_eq!(CallsCursor::decode(garbage), None, "{garbage}");
        }
    }
}
