//! Lease reconciliation: the call records in PostgreSQL are the truth about
//! which calls are up; the leases in Redis are a fast copy of it that Redis
//! can lose (asynchronous replication loses the last writes in a failover;
//! a restarted or flushed Redis loses them all) or keep too long (an
//! `EndCall` whose release was lost). Left alone, a lost lease lets an
//! organization exceed its limit until its calls end, and a kept one holds
//! a slot until the lease expires, hours later.
//!
//! So, every interval, one replica (whichever takes the turn, a short lock
//! in Redis) reads calls from the records in pages ([`PgStore::calls_page`],
//! [`PAGE`] calls each, so no read grows with the number of open calls;
//! the turn is held while it does) and
//! per organization, in one script over its slot ([`RECONCILE_LEASES`]):
//!
//! * gives each open call without a lease its lease back, expiring where
//!   the original would have (its start plus the longest call), and
//!   remembers its scope for `EndCall`;
//! * removes the lease of each ended call from every set.
//!
//! Which calls a pass reads depends on what Redis may have lost:
//!
//! * **Redis holds no record of a pass** (the fleet's first, or Redis was
//!   restarted or flushed and lost everything): every open call, page after
//!   page, in this pass.
//! * **Otherwise** (a failover loses only the last writes): the open calls
//!   started since the last pass (with a margin), and [`SWEEP_PAGES`] more
//!   pages of a sweep through every open call, from where the last pass left it (the
//!   cursor is kept in Redis, so whichever replica takes the turn goes on):
//!   anything else lost comes back within a sweep.
//! * Either way, the calls ended since the last pass, to remove their
//!   leases.
//!
//! A lease of a call the records do not know yet (recorded a few
//! milliseconds later, or spooled while PostgreSQL is away) is left alone:
//! it is taken by the call it counts, and expires if that call never ends.
//! The drift found and corrected is counted
//! (`switchboard_lease_drift_total{kind}`), and so are the passes
//! (`switchboard_lease_reconciliations_total{outcome}`).
//!
//! After Redis restarts or is flushed, the counts are exact again within
//! one interval plus one pass (plus the recorder's lag for calls routed just
//! before the loss); after a failover, likewise for the calls started since
//! the last pass, and within a sweep for any older lease it lost. A call
//! ended while a pass read the records may get its lease back for one
//! interval: the next pass sees it ended.
//!
//! [`RECONCILE_LEASES`]: super::scripts::RECONCILE_LEASES

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use redis::{AsyncCommands, Script};
use tokio::sync::watch;
use uuid::Uuid;

use super::{Admission, AdmissionError, AdmissionMode, LeaseScope, CALL_ORG_GRACE, LAYOUT};
use crate::store::redis_link::{CommandError, Connection, RENEW_IF_HELD};
use crate::{
    domain::{AgentId, OrgId},
    store::{
        calls::{CallsCursor, CallsPage, RecentCall},
        PgStore,
    },
    telemetry::series::{LeaseDrift, ReconcileOutcome},
};

/// Calls per script: bounds the time one script holds its Redis node (a
/// fraction of a millisecond), which answers calls meanwhile.
const CALLS_PER_SCRIPT: usize = 100;

/// Longest wait for one of a pass's Redis commands. A pass is background
/// work: it waits longer than a call's admission
/// (`SWITCHBOARD_ADMISSION_TIMEOUT`) would, rather than fail whenever Redis
/// is busy answering calls.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Calls per read of the records: bounds each statement (well within the
/// query timeout, on a busy database), and the memory a pass holds,
/// whatever the number of open calls.
const PAGE: usize = 1_000;

/// Pages of the sweep through every open call read per pass.
const SWEEP_PAGES: usize = 5;

/// What one pass found and corrected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drift {
    /// Open calls that had no lease.
    pub missing: u64,
    /// Leases held by calls that had ended.
    pub ended: u64,
}

impl std::ops::AddAssign for Drift {
    fn add_assign(&mut self, other: Self) {
        self.missing += other.missing;
        self.ended += other.ended;
    }
}

impl Admission {
    /// Brings the leases in line with `calls` (open ones and ended ones),
    /// organization by organization.
    pub async fn reconcile(&self, calls: &[RecentCall]) -> Result<Drift, AdmissionError> {
        let mut by_org: BTreeMap<OrgId, Vec<&RecentCall>> = BTreeMap::new();
        for call in calls {
            by_org.entry(call.org_id).or_default().push(call);
        }
        let mut drift = Drift::default();
        for (org_id, calls) in by_org {
            for chunk in calls.chunks(CALLS_PER_SCRIPT) {
                drift += self.reconcile_org(org_id, chunk).await?;
            }
        }
        Ok(drift)
    }

    async fn reconcile_org(
        &self,
        org_id: OrgId,
        calls: &[&RecentCall],
    ) -> Result<Drift, AdmissionError> {
        let scope_of = |call: &RecentCall| LeaseScope {
            org_id,
            // a call without an agent or a number any more still counts at
            // the organization; its other sets are placeholders
            agent_id: call.agent_id.unwrap_or(AgentId(Uuid::nil())),
            number_id: call.number_id.unwrap_or(Uuid::nil()),
        };
        // KEYS: the organization's set, then each agent's and number's once
        let mut keys: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut key_index = |key: String| -> usize {
            let next = index.len() + 1;
            *index.entry(key.clone()).or_insert_with(|| {
                keys.push(key);
                next
            })
        };
        let (open, ended): (Vec<&RecentCall>, Vec<&RecentCall>) =
            calls.iter().partition(|call| !call.ended);
        let mut invocation = self.reconcile_leases.prepare_invoke();
        invocation
            .arg(self.settings.max_call_duration.as_millis() as u64)
            .arg(open.len());
        let mut ended_args = Vec::with_capacity(ended.len());
        for call in calls {
            let [org, agent, number] = self.lease_keys(&scope_of(call));
            key_index(org);
            let (agent, number) = (key_index(agent), key_index(number));
            if call.ended {
                ended_args.push((call.call_id, agent, number));
            } else {
                invocation
                    .arg(call.call_id.to_string())
                    .arg(call.started_ms)
                    .arg(agent)
                    .arg(number);
            }
        }
        for (call_id, agent, number) in ended_args {
            invocation.arg(call_id.to_string()).arg(agent).arg(number);
        }
        for key in keys {
            invocation.key(key);
        }
        let (missing, removed): (u64, u64) = self
            .background(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        if missing > 0 {
            self.remember_scopes(open.iter().map(|call| (call.call_id, scope_of(call))))
                .await;
        }
        Ok(Drift {
            missing,
            ended: removed,
        })
    }

    /// Writes the call → scope mapping `EndCall` reads, where none stands.
    async fn remember_scopes(
        &self,
        calls: impl Iterator<Item = (crate::domain::CallId, LeaseScope)>,
    ) {
        let ttl = (self.settings.max_call_duration + CALL_ORG_GRACE).as_secs();
        let writes: Vec<_> = calls
            .map(|(call_id, scope)| (self.call_key(call_id), scope.encode()))
            .collect();
        let written: Result<(), _> = self
            .background(|c| async move {
                // keys of many slots: one command each, sent together
                let sets = writes.into_iter().map(|(key, scope)| {
                    let mut c = c.clone();
                    let options = redis::SetOptions::default()
                        .conditional_set(redis::ExistenceCheck::NX)
                        .with_expiration(redis::SetExpiry::EX(ttl));
                    async move {
                        c.set_options::<_, _, redis::Value>(key, scope, options)
                            .await
                    }
                });
                futures::future::try_join_all(sets).await.map(drop)
            })
            .await;
        if let Err(error) = written {
            tracing::debug!(%error, "reconciled leases' scopes not remembered; EndCall falls back to the records");
        }
    }

    /// Takes this interval's turn to reconcile, if no replica has it: the
    /// turn's token, which only this pass holds.
    async fn take_turn(&self, interval: Duration) -> Result<Option<String>, AdmissionError> {
        if !self.connection.is_connected() {
            return Err(CommandError::NotConnected.into());
        }
        let key = self.turn_key();
        // a little short of the interval, so the next tick finds it free
        let hold = interval.mul_f64(0.9).as_millis().max(1) as u64;
        let token = Uuid::new_v4().to_string();
        let taken: Option<String> = self
            .background(|mut c| {
                let token = token.clone();
                async move {
                    let options = redis::SetOptions::default()
                        .conditional_set(redis::ExistenceCheck::NX)
                        .with_expiration(redis::SetExpiry::PX(hold));
                    c.set_options(key, token, options).await
                }
            })
            .await?;
        Ok(taken.map(|_| token))
    }

    /// One of a pass's Redis commands, bounded by [`COMMAND_TIMEOUT`].
    async fn background<T, F>(&self, run: impl FnOnce(Connection) -> F) -> Result<T, AdmissionError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        Ok(self.connection.run(COMMAND_TIMEOUT, run).await?)
    }

    /// Holds the turn `token` names for another `interval` (less a
    /// little), for a pass that reads page after page: no other replica
    /// starts the same pass meanwhile. False if the turn is not this
    /// pass's any more (a page outlasted the hold, and another replica
    /// took it).
    async fn keep_turn(&self, token: &str, interval: Duration) -> Result<bool, AdmissionError> {
        let key = self.turn_key();
        let hold = interval.mul_f64(0.9).as_millis().max(1) as u64;
        let token = token.to_owned();
        let kept: i64 = self
            .background(|mut c| async move {
                Script::new(RENEW_IF_HELD)
                    .key(key)
                    .arg(token)
                    .arg(hold)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(kept == 1)
    }

    /// When the last pass finished (ms since the epoch), if Redis knows.
    async fn last_pass(&self) -> Result<Option<u64>, AdmissionError> {
        let key = self.last_pass_key();
        self.background(|mut c| async move { c.get(key).await })
            .await
    }

    async fn record_pass(&self, at_ms: u64) -> Result<(), AdmissionError> {
        let key = self.last_pass_key();
        let ttl = self.settings.max_call_duration.as_secs().max(1);
        self.background(|mut c| async move { c.set_ex(key, at_ms, ttl).await })
            .await
    }

    fn turn_key(&self) -> String {
        format!("{}:{LAYOUT}:reconciler", self.settings.key_prefix)
    }

    fn last_pass_key(&self) -> String {
        format!("{}:{LAYOUT}:reconciled", self.settings.key_prefix)
    }

    /// Where the sweep through the open calls stands, if one is under way.
    async fn cursor(&self, resume: Resume) -> Result<Option<CallsCursor>, AdmissionError> {
        let key = self.cursor_key(resume);
        let at: Option<String> = self
            .background(|mut c| async move { c.get(key).await })
            .await?;
        Ok(at.as_deref().and_then(CallsCursor::decode))
    }

    /// Keeps where `resume` goes on from, for `ttl`; `None`: it starts
    /// again.
    async fn keep_cursor(
        &self,
        resume: Resume,
        cursor: Option<CallsCursor>,
        ttl: Duration,
    ) -> Result<(), AdmissionError> {
        let key = self.cursor_key(resume);
        let ttl = ttl.as_secs().max(1);
        match cursor {
            Some(cursor) => {
                let at = cursor.encode();
                self.background(|mut c| async move { c.set_ex(key, at, ttl).await })
                    .await
            }
            None => {
                self.background(|mut c| async move { c.del(key).await })
                    .await
            }
        }
    }

    fn cursor_key(&self, resume: Resume) -> String {
        let which = match resume {
            Resume::Sweep => "reconcile-sweep",
            Resume::Full => "reconcile-full",
        };
        format!("{}:{LAYOUT}:{which}", self.settings.key_prefix)
    }
}

/// A read through every open call, page by page over passes, whose cursor
/// Redis keeps so that any replica's next pass goes on from it.
#[derive(Debug, Clone, Copy)]
enum Resume {
    /// The sweep: a few pages each pass, round and round.
    Sweep,
    /// A full pass (no record of a pass) that did not finish: the next
    /// pass, if within a few intervals, goes on from its last page instead
    /// of the first.
    Full,
}

/// How long a full pass's cursor is kept: a pass that failed part-way is
/// gone on from by the next few; past that, a full pass starts over.
const FULL_CURSOR_INTERVALS: u32 = 3;

/// How far back a pass looks for ended calls with no record of a last pass
/// (the fleet's first pass, or Redis lost the record with everything else).
const WITHOUT_A_LAST_PASS: Duration = Duration::from_secs(300);

/// How far back a pass looks for ended calls: back to the last pass (the
/// releases of calls ended since may have been lost), with a margin, and at
/// least three intervals; with no record of a last pass,
/// [`WITHOUT_A_LAST_PASS`]; at most the longest call, after which every
/// lease has expired anyway.
fn ended_window(
    interval: Duration,
    longest_call: Duration,
    since_last: Option<Duration>,
) -> Duration {
    let floor = interval * 3;
    let window = match since_last {
        Some(since) => (since + interval * 2).max(floor),
        None => WITHOUT_A_LAST_PASS.max(floor),
    };
    window.min(longest_call.max(floor))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One replica's reconciler: every `interval`, takes the turn if it is free
/// and runs a pass. Stops when `stop` is raised.
pub async fn run(
    admission: Admission,
    store: PgStore,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if admission.settings.mode == AdmissionMode::Off || interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // the first pass one interval after start, once Redis is connected
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let outcome = match pass(&admission, &store, interval).await {
            Ok(Some(drift)) => {
                count_drift(drift);
                ReconcileOutcome::Done
            }
            Ok(None) => ReconcileOutcome::NotMyTurn,
            Err(error) => {
                tracing::debug!(%error, "lease reconciliation skipped");
                ReconcileOutcome::Failed
            }
        };
        metrics::counter!("switchboard_lease_reconciliations_total", "outcome" => <&str>::from(outcome))
            .increment(1);
    }
}

/// One pass, if it is this replica's turn: the drift found and corrected.
async fn pass(
    admission: &Admission,
    store: &PgStore,
    interval: Duration,
) -> anyhow::Result<Option<Drift>> {
    let Some(turn) = admission.take_turn(interval).await? else {
        return Ok(None);
    };
    let clock = Instant::now();
    let started = now_ms();
    let since_last = admission
        .last_pass()
        .await?
        .map(|at| Duration::from_millis(started.saturating_sub(at)));
    let longest = admission.settings.max_call_duration;
    let window = ended_window(interval, longest, since_last);
    // every page of the pass reaches back from when the pass began
    let now = SystemTime::now();
    let back = |by: Duration| now.checked_sub(by).unwrap_or(UNIX_EPOCH);
    let every_open_call = CallsPage::Open {
        started_after: back(longest),
    };
    let mut reader = Pages {
        admission,
        store,
        interval,
        turn,
        drift: Drift::default(),
        calls: 0,
    };
    let full_kept = interval * FULL_CURSOR_INTERVALS;
    if since_last.is_none() {
        // Redis may have lost every lease: all of them, now (going on from
        // where a full pass that failed lately stopped)
        let from = admission.cursor(Resume::Full).await?;
        let resumed = Some((Resume::Full, full_kept));
        reader
            .read(
                every_open_call,
                from.unwrap_or(CallsCursor::START),
                None,
                resumed,
            )
            .await?;
        admission.keep_cursor(Resume::Full, None, full_kept).await?;
        admission.keep_cursor(Resume::Sweep, None, longest).await?;
    } else {
        let lately_started = CallsPage::Open {
            started_after: back(window),
        };
        reader
            .read(lately_started, CallsCursor::START, None, None)
            .await?;
        let from = admission
            .cursor(Resume::Sweep)
            .await?
            .unwrap_or(CallsCursor::START);
        let next = reader
            .read(every_open_call, from, Some(SWEEP_PAGES), None)
            .await?;
        admission.keep_cursor(Resume::Sweep, next, longest).await?;
    }
    let ended = CallsPage::Ended {
        ended_after: back(window),
    };
    reader.read(ended, CallsCursor::START, None, None).await?;
    admission.record_pass(started).await?;
    let Pages { drift, calls, .. } = reader;
    metrics::gauge!("switchboard_lease_reconcile_pass_seconds").set(clock.elapsed().as_secs_f64());
    metrics::gauge!("switchboard_lease_reconcile_calls_read").set(calls as f64);
    if drift != Drift::default() {
        tracing::warn!(
            missing = drift.missing,
            ended = drift.ended,
            "leases differed from the call records: corrected"
        );
    }
    Ok(Some(drift))
}

/// A pass's reads of the records, page by page, and what they found.
struct Pages<'a> {
    admission: &'a Admission,
    store: &'a PgStore,
    interval: Duration,
    /// The token of this pass's turn.
    turn: String,
    drift: Drift,
    /// Calls read so far.
    calls: usize,
}

impl Pages<'_> {
    /// Reconciles `which` calls after `from`, page by page: all of them, or
    /// at most `pages`; with `resumed`, keeping the cursor after each page
    /// (for as long as it says). Where to go on from (`None`: the last
    /// page was read).
    async fn read(
        &mut self,
        which: CallsPage,
        from: CallsCursor,
        pages: Option<usize>,
        resumed: Option<(Resume, Duration)>,
    ) -> anyhow::Result<Option<CallsCursor>> {
        let mut after = from;
        let mut read = 0;
        loop {
            let calls = self.store.calls_page(which, after, PAGE).await?;
            self.drift += self.admission.reconcile(&calls).await?;
            self.calls += calls.len();
            read += 1;
            match calls.last() {
                Some(last) if calls.len() == PAGE => after = last.cursor,
                _ => return Ok(None),
            }
            if pages.is_some_and(|pages| read >= pages) {
                return Ok(Some(after));
            }
            if let Some((resume, kept)) = resumed {
                self.admission
                    .keep_cursor(resume, Some(after), kept)
                    .await?;
            }
            // more to read: the turn stays this replica's meanwhile
            anyhow::ensure!(
                self.admission.keep_turn(&self.turn, self.interval).await?,
                "another replica took the turn to reconcile: a page took longer than it was held"
            );
        }
    }
}

fn count_drift(drift: Drift) {
    for (kind, found) in [
        (LeaseDrift::Missing, drift.missing),
        (LeaseDrift::Ended, drift.ended),
    ] {
        metrics::counter!("switchboard_lease_drift_total", "kind" => <&str>::from(kind))
            .increment(found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ended_window_reaches_back_to_the_last_pass_within_bounds() {
        let interval = Duration::from_secs(10);
        let longest = Duration::from_secs(4 * 3600);
        // no record of a pass: the last five minutes
        assert_eq!(
            ended_window(interval, longest, None),
            Duration::from_secs(300)
        );
        // a recent pass: still three intervals
        let recent = Some(Duration::from_secs(5));
        assert_eq!(ended_window(interval, longest, recent), interval * 3);
        // passes missed for a while: back to the last, with a margin
        let outage = Some(Duration::from_secs(600));
        assert_eq!(
            ended_window(interval, longest, outage),
            Duration::from_secs(620)
        );
        // never past the longest call
        let ages = Some(Duration::from_secs(24 * 3600));
        assert_eq!(ended_window(interval, longest, ages), longest);
    }
}
