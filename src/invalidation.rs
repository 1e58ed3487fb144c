//! Keeps every replica's route cache fresh: one dedicated session on the
//! direct connection (`DATABASE_DIRECT_URL`; a transaction pooler would hand
//! `LISTEN` to whichever server connection it likes and silently lose
//! notifications) listens on `switchboard_routing_changes` and evicts what
//! each change names.
//!
//! NOTIFY is the doorbell, `switchboard.routing_changes` is the truth: after
//! every (re)connect the listener replays the log from the last id it saw,
//! so nothing committed while it was away is missed. When it cannot prove
//! that (first start, or a pruned log), it flushes the cache. Whether it is
//! connected is the cache's `is_confirmed`: while it is not, the cache
//! trusts entries only briefly, and `/readyz` says so.
//!
//! A fleet whose direct connections are budgeted runs the [`relay`]
//! instead: a few replicas listen and republish on Redis, the rest follow.
//!
//! A changed agent or organization the cache holds is swapped for its new
//! version, which the listener reads itself, on its session, as soon as
//! the notification arrives: notifications waiting together are read
//! together (one statement per kind), and the swap waits neither for the
//! pool nor for the request runtime.
//!
//! The listener runs on an OS thread of its own ([`spawn`]): on a runtime
//! busy with requests, a notification would wait behind them to be read,
//! and then again for the eviction; and a session as long as the daemon's
//! life has no place in the blocking pool, whose threads are lent for a
//! while. What an eviction sets going in the tiers below (a Redis write)
//! runs on the cache's runtime.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, Client, Notification};

use crate::{
    domain::{Change, Resolver, Versions},
    routing::{RouteCache, SWAP_WITHIN},
    store::{
        describe, postgres,
        routing_changes::{self, LogReader},
        PgTarget,
    },
    telemetry::{outage::LISTENER, series::VersionRead},
};

pub mod relay;

/// The channel the change-log trigger notifies.
pub const CHANNEL: &str = "switchboard_routing_changes";
/// Changes committed out of id order (a transaction that took its id early
/// and committed late) are caught by replaying this far back in time too.
const REPLAY_OVERLAP: Duration = Duration::from_secs(10);
/// `application_name` of the listening session.
pub const APPLICATION_NAME: &str = "switchboard-listener";
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most notifications applied together, their agents and organizations
/// read in one statement per kind.
const BATCH: usize = 256;
/// Name of the listener's thread (in `top -H`, debuggers and panics).
pub const THREAD_NAME: &str = "switchboard-invalidation";

/// What the listener remembers across sessions: the highest change id
/// applied. None before the first session, unless L1 was restored from a
/// last-known-good copy: then the copy's, so that the first session
/// replays from there. Shared with whoever copies L1, who records it with
/// the copy.
pub struct Progress {
    last_id: AtomicI64,
    /// The changes applied lately: a replay reaches [`REPLAY_OVERLAP`] back
    /// before the last id for changes committed out of order, and skips
    /// those it finds here (the relay replays every few seconds: without
    /// this, every change of the last seconds would be applied again each
    /// time, evicting and tombstoning what it names).
    applied: std::sync::Mutex<Applied>,
}

/// Ids applied within the last two [`REPLAY_OVERLAP`]s.
#[derive(Default)]
struct Applied {
    ids: std::collections::HashSet<i64>,
    order: std::collections::VecDeque<(std::time::Instant, i64)>,
}

/// `Progress::last_id` before anything was seen (ids start at 1).
const NOTHING_SEEN: i64 = i64::MIN;

impl Progress {
    /// Progress from `last_seen`: `None` for a cache that starts empty.
    pub fn starting_at(last_seen: Option<i64>) -> Arc<Self> {
        Arc::new(Progress {
            last_id: AtomicI64::new(last_seen.unwrap_or(NOTHING_SEEN)),
            applied: std::sync::Mutex::new(Applied::default()),
        })
    }

    /// Records that change `id` was applied now; false if it already was.
    fn apply_once(&self, id: i64) -> bool {
        let now = std::time::Instant::now();
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(at, old)) = applied.order.front() {
            if now.duration_since(at) < REPLAY_OVERLAP * 2 {
                break;
            }
            applied.order.pop_front();
            applied.ids.remove(&old);
        }
        let fresh = applied.ids.insert(id);
        if fresh {
            applied.order.push_back((now, id));
        }
        fresh
    }

    /// The highest change id applied, if any.
    pub fn last_seen(&self) -> Option<i64> {
        Some(self.last_id.load(Ordering::Acquire)).filter(|id| *id != NOTHING_SEEN)
    }

    fn saw(&self, id: i64) {
        self.last_id.fetch_max(id, Ordering::AcqRel);
    }
}

/// Starts [`run`] on an OS thread of its own ([`THREAD_NAME`]), with a
/// runtime of its own. The thread stops at `stop`; the returned
/// [`ListenerThread`] resolves when it has ended.
pub fn spawn<R: Resolver>(
    direct_url: String,
    cache: Arc<RouteCache<R>>,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<ListenerThread> {
    on_own_thread(move || run(direct_url, cache, progress, stop))
}

/// Runs the future `make` makes on a new thread, in a runtime of its own,
/// and reports how the thread ended: a panic is caught and told.
fn on_own_thread<F, Fut>(make: F) -> std::io::Result<ListenerThread>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ended, outcome) = oneshot::channel();
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(make())));
            let _ = ended.send(ran.map_err(|panic| {
                let message = (panic.downcast_ref::<&str>().copied())
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a panic without a message");
                format!("thread {THREAD_NAME} panicked: {message}")
            }));
        })?;
    Ok(ListenerThread { outcome })
}

/// Runs `task` on the current runtime, reported like the listener's thread.
fn on_task(task: impl Future<Output = ()> + Send + 'static) -> ListenerThread {
    use futures::FutureExt;
    let (ended, outcome) = oneshot::channel();
    tokio::spawn(async move {
        let ran = AssertUnwindSafe(task).catch_unwind().await;
        let _ = ended.send(ran.map_err(|_| "the invalidation relay panicked".to_string()));
    });
    ListenerThread { outcome }
}

/// The listener's thread, awaited: resolves once the thread has ended,
/// with an error if it panicked.
pub struct ListenerThread {
    outcome: oneshot::Receiver<Result<(), String>>,
}

impl Future for ListenerThread {
    type Output = Result<(), String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.outcome).poll(cx).map(|outcome| {
            outcome.unwrap_or_else(|_| Err(format!("thread {THREAD_NAME} ended without a word")))
        })
    }
}

/// Runs the listener until `stop` is raised (or its sender dropped),
/// reconnecting with backoff.
async fn run<R: Resolver>(
    direct_url: String,
    cache: Arc<RouteCache<R>>,
    status: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = RECONNECT_MIN;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            result = session(&direct_url, &cache, &status) => {
                // one line per outage, not per reconnect attempt
                if let Err(error) = result {
                    LISTENER.failed(&error);
                }
            }
        }
        if cache.is_confirmed() {
            // it was connected: start the backoff over
            backoff = RECONNECT_MIN;
        }
        cache.set_confirmed(false);
        metrics::gauge!("switchboard_invalidation_listener_connected").set(0.0);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// A session that has run `LISTEN` on the change channel.
struct Listening {
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
    /// Polls the connection; ends with why the connection did.
    driver: tokio::task::JoinHandle<String>,
}

impl Listening {
    /// Connects to `url` (the direct connection) and listens.
    async fn start(url: &str) -> Result<Self, String> {
        let mut target = PgTarget::parse(url).map_err(|e| format!("DATABASE_DIRECT_URL {e}"))?;
        // visible in pg_stat_activity, so an operator can tell this session apart
        target.config.application_name(APPLICATION_NAME);
        let (client, mut connection) = tokio::time::timeout(CONNECT_TIMEOUT, target.connect())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {}", describe(&e)))?;
        let (tx, notifications) = mpsc::unbounded_channel::<Notification>();
        // The connection must be polled for the client to work; poll_message
        // also yields the notifications.
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n);
                    }
                    Ok(_) => {}
                    Err(e) => return format!("connection: {}", describe(&e)),
                }
            }
            "connection closed".to_string()
        });
        client
            .batch_execute(&format!("listen {CHANNEL}"))
            .await
            .map_err(|e| format!("listen: {e}"))?;
        Ok(Self {
            client,
            notifications,
            driver,
        })
    }

    /// The next notification's payload and those that arrived with it, up
    /// to [`BATCH`]; an error once the connection ends.
    async fn next_batch(&mut self) -> Result<Vec<String>, String> {
        let mut batch = vec![self.next().await?];
        while batch.len() < BATCH {
            match self.notifications.try_recv() {
                Ok(n) => batch.push(n.payload().to_owned()),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// The next notification's payload; an error once the connection ends.
    async fn next(&mut self) -> Result<String, String> {
        tokio::select! {
            notification = self.notifications.recv() => match notification {
                Some(n) => Ok(n.payload().to_owned()),
                None => Err((&mut self.driver)
                    .await
                    .unwrap_or_else(|e| format!("driver task died: {e}"))),
            },
            ended = &mut self.driver => {
                Err(ended.unwrap_or_else(|e| format!("driver task died: {e}")))
            }
        }
    }
}

/// One listening session: connect, LISTEN, replay, then apply notifications
/// until the connection ends.
async fn session<R: Resolver>(
    url: &str,
    cache: &RouteCache<R>,
    status: &Progress,
) -> Result<(), String> {
    let mut listening = Listening::start(url).await?;
    replay(&listening.client, cache, status).await?;
    cache.set_confirmed(true);
    metrics::gauge!("switchboard_invalidation_listener_connected").set(1.0);
    LISTENER.recovered();
    tracing::info!("invalidation listener connected");
    loop {
        let payloads = listening.next_batch().await?;
        apply_payloads(&payloads, cache, status, Some(&listening.client)).await;
    }
}

/// Applies every change the log holds past what this replica has seen,
/// reaching [`REPLAY_OVERLAP`] back for changes committed out of order.
async fn replay<R: Resolver>(
    reader: &impl LogReader,
    cache: &RouteCache<R>,
    status: &Progress,
) -> Result<(), String> {
    replay_within(reader, cache, status, REPLAY_OVERLAP).await
}

/// [`replay`], reaching `overlap` back.
async fn replay_within<R: Resolver>(
    reader: &impl LogReader,
    cache: &RouteCache<R>,
    status: &Progress,
    overlap: Duration,
) -> Result<(), String> {
    let last = status.last_seen();
    let log = routing_changes::since(reader, last, overlap)
        .await
        .map_err(|e| format!("replay: {e}"))?;
    let gap_unprovable = match (last, log.oldest_id) {
        (None, _) => true,
        (Some(last), Some(oldest)) => oldest > last + 1,
        // an empty log after we saw changes: it was pruned
        (Some(last), None) => last > 0,
    };
    if gap_unprovable {
        // First session, or the log no longer reaches back to what we saw:
        // the gap cannot be proven closed.
        cache.flush();
        tracing::info!("route cache flushed: change log gap cannot be proven closed");
        // the flush covers every change so far, those of the overlap before
        // the newest too: the next replay must not apply them again
        if let Some(newest) = log.newest_id {
            let covered = routing_changes::since(reader, Some(newest), REPLAY_OVERLAP)
                .await
                .map_err(|e| format!("replay: {e}"))?;
            for logged in &covered.changes {
                status.apply_once(logged.id);
            }
        }
    }
    let mut applied = 0usize;
    for logged in &log.changes {
        status.saw(logged.id);
        if !status.apply_once(logged.id) {
            continue;
        }
        if let Some(change) = &logged.change {
            cache.apply(change).await;
            applied += 1;
        }
    }
    status.saw(log.newest_id.unwrap_or(0));
    metrics::counter!("switchboard_invalidations_replayed_total").increment(applied as u64);
    Ok(())
}

/// One notification: the trigger's JSON (`id`, `entity`, `key`, `at`).
struct Notice {
    change: Change,
    /// The change's id in the log.
    id: Option<i64>,
    /// When it was logged (epoch seconds).
    at: Option<f64>,
}

impl Notice {
    /// The notification `payload` names, or None (with a warning) if it
    /// names nothing known.
    fn parse(payload: &str) -> Option<Self> {
        metrics::counter!("switchboard_invalidations_received_total").increment(1);
        let Ok(payload) = serde_json::from_str::<Value>(payload) else {
            tracing::warn!("ignoring a malformed routing change notification");
            return None;
        };
        let change = payload["entity"]
            .as_str()
            .zip(payload["key"].as_str())
            .and_then(|(entity, key)| routing_changes::parse(entity, key));
        let Some(change) = change else {
            tracing::warn!("ignoring a routing change notification naming nothing known");
            return None;
        };
        Some(Notice {
            change,
            id: payload["id"].as_i64(),
            at: payload["at"].as_f64(),
        })
    }
}

/// Applies notifications' payloads, from the listening session or from the
/// relay, in order. With `session` (the listener's own), the new versions
/// of the agents and organizations they change that the cache holds are
/// read on it first, to be swapped in without a read of the cache's own.
async fn apply_payloads<R: Resolver>(
    payloads: &[String],
    cache: &RouteCache<R>,
    status: &Progress,
    session: Option<&Client>,
) {
    let notices: Vec<Notice> = payloads.iter().filter_map(|p| Notice::parse(p)).collect();
    let versions = match session {
        Some(client) => new_versions(client, cache, &notices).await,
        None => Versions::default(),
    };
    for notice in &notices {
        // applied even if seen (a notification is the change itself,
        // fresh); remembered, so that a replay does not apply it again
        cache.apply_with(&notice.change, &versions).await;
        if let Some(id) = notice.id {
            status.apply_once(id);
            status.saw(id);
        }
        metrics::counter!("switchboard_invalidations_applied_total").increment(1);
        if let Some(at) = notice.at {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            metrics::histogram!("switchboard_invalidation_lag_seconds").record((now - at).max(0.0));
        }
    }
}

/// The new versions of the agents and organizations `notices` change that
/// the cache holds, read on `client` within [`SWAP_WITHIN`]; none if the
/// read fails (the cache then reads them itself, as for a relayed change).
async fn new_versions<R: Resolver>(
    client: &Client,
    cache: &RouteCache<R>,
    notices: &[Notice],
) -> Versions {
    let mut agents = Vec::new();
    let mut organizations = Vec::new();
    for notice in notices.iter().filter(|n| cache.would_swap(&n.change)) {
        match notice.change {
            Change::Agent(id) if !agents.contains(&id) => agents.push(id),
            Change::Organization(id) if !organizations.contains(&id) => organizations.push(id),
            _ => {}
        }
    }
    if agents.is_empty() && organizations.is_empty() {
        return Versions::default();
    }
    let read = postgres::read_versions(client, &agents, &organizations, SWAP_WITHIN).await;
    let outcome = match &read {
        Ok(_) => VersionRead::Read,
        Err(error) => {
            tracing::debug!(%error, "changed agents and organizations not read by the listener");
            VersionRead::Failed
        }
    };
    metrics::counter!("switchboard_invalidation_version_reads_total",
        "outcome" => <&str>::from(outcome))
    .increment(1);
    read.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_applied_is_not_applied_again_by_a_replay() {
        let progress = Progress::starting_at(None);
        assert!(progress.apply_once(7));
        assert!(!progress.apply_once(7), "the second time is a repeat");
        assert!(progress.apply_once(6), "an older id committed late is new");
    }

    #[tokio::test]
    async fn the_thread_is_named_and_its_end_reported() {
        let ended = on_own_thread(|| async {
            assert_eq!(std::thread::current().name(), Some(THREAD_NAME));
        })
        .unwrap()
        .await;
        assert_eq!(ended, Ok(()));
    }

    #[tokio::test]
    async fn a_panic_on_the_thread_is_reported_with_its_message() {
        let ended = on_own_thread(|| async { panic!("the listener broke") })
            .unwrap()
            .await;
        assert_eq!(
            ended,
            Err(format!("thread {THREAD_NAME} panicked: the listener broke"))
        );
    }
}
