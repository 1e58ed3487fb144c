//! The recorder: call records and metered usage, written behind the call.
//!
//! ```text
//! RPC ──▶ bounded queue ──▶ batcher ──▶ one idempotent statement per batch ──▶ PostgreSQL
//!                              └──▶ spool on disk while PostgreSQL is unreachable,
//!                                   replayed in order when it answers again
//! ```
//!
//! The acknowledgement point (what is durable when an RPC returns):
//!
//! * `RouteCall` never waits for a write: its call-opened event is accepted
//!   into the in-memory queue and the call goes ahead. It reaches PostgreSQL
//!   (or the spool) within one flush interval; a crash of the process inside
//!   that window loses the opening details (the row is still created by the
//!   call's `EndCall` or usage). While neither PostgreSQL nor the spool can
//!   take it, it is held in memory and written once either can.
//! * `EndCall` and `RecordUsage` ([`Recorder::record_durably`]) answer within
//!   their deadline, one of two ways:
//!   - **acknowledged**: their events are committed to PostgreSQL, or
//!     written and fsynced to the spool. What they acknowledge survives
//!     `SIGKILL` and power loss.
//!   - **refused** ([`RecordError`]): nothing of them was recorded and
//!     nothing will be: their events are dropped, not kept for later. The
//!     caller retries; until then the RPC has no effect (`EndCall` keeps
//!     its lease).
//!
//! A batch with RPCs waiting does not wait for PostgreSQL past the earliest
//! waiter's deadline less a margin for spooling (`Waiter::write_by`): a
//! frozen pooler turns into a spooled, acknowledged batch, not into RPCs
//! that run out their deadline while their events land later. A statement
//! abandoned that way has its connection closed, so a pooler that was
//! holding it never sends it, and an RPC that gave up before its batch was
//! written or spooled has its events dropped. What is left is a window, not
//! a rule: a statement PostgreSQL itself had begun, or an fsync slower than
//! the margin, can still complete after its RPC was answered `deadline`; the
//! events then land although the RPC failed, and its retry changes nothing.
//!
//! Every write is idempotent (see `store::calls`), so retries, replays and a
//! crash in the middle of a replay never duplicate a row. A full queue
//! refuses new events at once (`RESOURCE_EXHAUSTED`); memory is bounded by
//! the queue, the batches being written (`writers` of them at most) and, out of the queue, at most
//! `queue_capacity` events more (taken while a write waits) and as many
//! held call openings.
//!
//! Metrics: `switchboard_recorder_events_total{outcome}` counts events
//! `written`, `spooled`, `replayed`, `dead_lettered`, `refused` (dropped
//! with their RPC's refusal: neither PostgreSQL nor the spool could take
//! them) and `abandoned` (dropped because their RPC had already given up:
//! its deadline passed or its client went away). Refused RPCs are counted in
//! `switchboard_recorder_refused_total{reason}` by [`RecordError::reason`].

mod batch;
mod batcher;
mod dead_letter;
pub mod spool;

/// The events, as `event::…` for the spool's encoding.
use crate::domain::{event, Event};

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

pub use spool::{Spool, SpoolError, SpoolSettings};

use crate::{store::PgStore, telemetry::series::RecorderRefusal};

/// Recorder settings.
#[derive(Debug, Clone)]
pub struct RecorderSettings {
    /// Most RPCs' events waiting in memory.
    pub queue_capacity: usize,
    /// Most events written by one statement.
    pub batch_size: usize,
    /// Most batches written to PostgreSQL at once (each on a pooled
    /// connection of its own).
    pub writers: usize,
    /// Longest an event no RPC waits for (a call opened) waits for its
    /// batch to fill; a durable RPC's batch goes once the queue is empty.
    pub flush_interval: Duration,
    /// Longest wait for one batch's statement before it goes to the spool
    /// (shorter when an RPC waiting for the batch has less time left).
    pub write_timeout: Duration,
    /// Pause after a failed attempt to reach PostgreSQL while spooling (a
    /// replay that succeeds goes on without one).
    pub retry_interval: Duration,
    /// Where undecodable and refused events are kept (the spool's
    /// directory).
    pub spool_dir: PathBuf,
}

impl From<&RecordError> for RecorderRefusal {
    fn from(error: &RecordError) -> Self {
        match error {
            RecordError::QueueFull => RecorderRefusal::QueueFull,
            RecordError::Closed => RecorderRefusal::Closed,
            RecordError::SpoolFull(_) => RecorderRefusal::SpoolFull,
            RecordError::SpoolFailed(_) => RecorderRefusal::SpoolFailed,
            RecordError::Expired => RecorderRefusal::Deadline,
        }
    }
}

/// Why events were not accepted, or not made durable. Whatever the
/// variant, nothing of the RPC was recorded, nor will be: a retry is
/// needed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The queue is full: the database and the spool are not keeping up.
    #[error("recorder queue is full")]
    QueueFull,
    /// The daemon is shutting down and takes no more events.
    #[error("recorder is shutting down")]
    Closed,
    /// PostgreSQL is unreachable and the spool has no room.
    #[error("spool is full: {0}")]
    SpoolFull(String),
    /// PostgreSQL is unreachable and the spool cannot be written.
    #[error("spool cannot be written: {0}")]
    SpoolFailed(String),
    /// The RPC's deadline passed before its events could be made durable.
    #[error("the events could not be made durable within the request's deadline")]
    Expired,
}

impl RecordError {
    /// Label of `switchboard_recorder_refused_total`.
    pub fn reason(&self) -> &'static str {
        RecorderRefusal::from(self).into()
    }

    /// Counts one refused RPC.
    fn count(&self) {
        metrics::counter!("switchboard_recorder_refused_total", "reason" => self.reason())
            .increment(1);
    }
}

/// Time kept back from a waiting RPC's deadline to spool its batch (one
/// fsync) and answer, when PostgreSQL has not answered by then; at most a
/// quarter of the time the RPC has left when it is recorded.
const SPOOL_MARGIN: Duration = Duration::from_millis(200);

/// An RPC waiting for its events to be durable.
struct Waiter {
    reply: oneshot::Sender<Result<(), RecordError>>,
    /// When the RPC is answered `deadline` by the API layer, whatever
    /// happens here.
    deadline: Instant,
    /// When its batch stops waiting for PostgreSQL and goes to the spool.
    write_by: Instant,
}

impl Waiter {
    fn new(reply: oneshot::Sender<Result<(), RecordError>>, deadline: Instant) -> Self {
        let margin = SPOOL_MARGIN.min(deadline.saturating_duration_since(Instant::now()) / 4);
        Self {
            reply,
            deadline,
            write_by: deadline - margin,
        }
    }

    /// Whether nobody waits for the answer any more: the RPC gave up (its
    /// deadline passed, or its client went away), so it was not
    /// acknowledged and its events must not be recorded.
    fn gone(&self, now: Instant) -> bool {
        self.reply.is_closed() || self.deadline <= now
    }
}

/// Whether, and why, the batcher's spool refuses events while PostgreSQL is
/// unreachable: set by the batcher, read by every RPC before it queues.
#[derive(Default)]
struct Stall(AtomicU8);

impl Stall {
    const NONE: u8 = 0;
    const FULL: u8 = 1;
    const FAILED: u8 = 2;

    fn set(&self, cause: Option<&RecordError>) {
        let value = match cause {
            None => Self::NONE,
            Some(RecordError::SpoolFailed(_)) => Self::FAILED,
            Some(_) => Self::FULL,
        };
        self.0.store(value, Ordering::Release);
    }

    /// The refusal a durable record gets at once, while the spool refuses.
    fn refusal(&self) -> Option<RecordError> {
        match self.0.load(Ordering::Acquire) {
            Self::NONE => None,
            Self::FAILED => Some(RecordError::SpoolFailed(
                "PostgreSQL is unreachable and the spool cannot be written".into(),
            )),
            _ => Some(RecordError::SpoolFull(
                "PostgreSQL is unreachable and the spool has no room".into(),
            )),
        }
    }
}

/// Events of one RPC, and who waits for them to be durable.
struct Envelope {
    events: Vec<Event>,
    durable: Option<Waiter>,
}

/// The handle RPCs record through; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Envelope>,
    /// Set by the batcher while the spool refuses events and PostgreSQL is
    /// unreachable: a durable record cannot be promised, so it is refused
    /// at once, for the same reason, instead of queueing for a certain
    /// refusal.
    stalled: Arc<Stall>,
}

/// Room for one RPC's events, reserved before the RPC commits to anything
/// (a call takes its concurrency lease only once its record has room).
pub struct Permit<'a>(mpsc::Permit<'a, Envelope>);

impl Permit<'_> {
    /// Hands the events over without waiting for them to be written.
    pub fn record(self, events: Vec<Event>) {
        self.0.send(Envelope {
            events,
            durable: None,
        });
    }
}

impl Recorder {
    /// Starts the batcher on an opened spool. It runs until `stop` is
    /// raised, then drains the queue (and the spool, while PostgreSQL
    /// answers) within `grace` before it returns.
    pub fn start(
        store: PgStore,
        settings: RecorderSettings,
        spool: Spool,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> (Recorder, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(settings.queue_capacity.max(1));
        let stalled = Arc::new(Stall::default());
        let batcher = batcher::Batcher::new(store, settings, spool, receiver, stalled.clone());
        let task = tokio::spawn(batcher.run(stop, grace));
        (Recorder { queue, stalled }, task)
    }

    /// Reserves room for one RPC's events, or refuses at once.
    pub fn reserve(&self) -> Result<Permit<'_>, RecordError> {
        match self.queue.try_reserve() {
            Ok(permit) => Ok(Permit(permit)),
            Err(mpsc::error::TrySendError::Full(())) => {
                RecordError::QueueFull.count();
                Err(RecordError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                RecordError::Closed.count();
                Err(RecordError::Closed)
            }
        }
    }

    /// Records `events` and waits until they are durable (committed to
    /// PostgreSQL or fsynced to the spool), answering before `deadline`:
    /// the RPC's own, after which nobody waits for the answer. On an error
    /// nothing was recorded, and nothing will be.
    pub async fn record_durably(
        &self,
        events: Vec<Event>,
        deadline: Instant,
    ) -> Result<(), RecordError> {
        if let Some(refused) = self.stalled.refusal() {
            refused.count();
            return Err(refused);
        }
        let permit = self.reserve()?;
        let (reply, written) = oneshot::channel();
        permit.0.send(Envelope {
            events,
            durable: Some(Waiter::new(reply, deadline)),
        });
        written.await.unwrap_or(Err(RecordError::Closed))
    }
}

/// Where undecodable or refused events are kept for an operator: one JSON
/// object per line, next to the spool.
pub fn dead_letter_path(spool_dir: &std::path::Path) -> PathBuf {
    spool_dir.join("dead-letters.jsonl")
}
