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
//!   call's `EndCall` or usage).
//! * `EndCall` and `RecordUsage` return only once their events are durable:
//!   committed to PostgreSQL, or written and fsynced to the spool. What they
//!   acknowledge survives `SIGKILL` and power loss.
//!
//! Every write is idempotent (see `store::calls`), so retries, replays and a
//! crash in the middle of a replay never duplicate a row. A full queue
//! refuses new events at once (`RESOURCE_EXHAUSTED`); memory is bounded by
//! the queue and one batch.

mod batcher;
mod event;
pub mod spool;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

pub use event::{CallEnded, CallOpened, EndReason, Event, Metric, Usage};
pub use spool::{Spool, SpoolError, SpoolSettings};

use crate::store::PgStore;

/// Recorder settings.
#[derive(Debug, Clone)]
pub struct RecorderSettings {
    /// Most RPCs' events waiting in memory.
    pub queue_capacity: usize,
    /// Most events written by one statement.
    pub batch_size: usize,
    /// Longest an event waits for its batch to fill.
    pub flush_interval: Duration,
    /// Longest wait for one batch's statement before it goes to the spool.
    pub write_timeout: Duration,
    /// Pause between attempts to reach PostgreSQL again while spooling.
    pub retry_interval: Duration,
    /// Where undecodable and refused events are kept (the spool's
    /// directory).
    pub spool_dir: PathBuf,
}

/// Why events were not accepted, or not made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The queue is full: the database and the spool are not keeping up.
    #[error("recorder queue is full")]
    QueueFull,
    /// The daemon is shutting down and takes no more events.
    #[error("recorder is shutting down")]
    Closed,
    /// PostgreSQL is unreachable and the spool has no room. The events are
    /// kept in memory and written once either recovers; a retry is safe.
    #[error("spool is full: {0}")]
    SpoolFull(String),
    /// PostgreSQL is unreachable and the spool cannot be written.
    #[error("spool cannot be written: {0}")]
    SpoolFailed(String),
}

/// Events of one RPC, and who waits for them to be durable.
struct Envelope {
    events: Vec<Event>,
    durable: Option<oneshot::Sender<Result<(), RecordError>>>,
}

/// The handle RPCs record through; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Envelope>,
    /// Raised by the batcher while it holds events it can neither write nor
    /// spool: a durable record cannot be promised, so it is refused at once
    /// instead of waiting out its deadline.
    stalled: Arc<AtomicBool>,
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
        let stalled = Arc::new(AtomicBool::new(false));
        let batcher = batcher::Batcher::new(store, settings, spool, receiver, stalled.clone());
        let task = tokio::spawn(batcher.run(stop, grace));
        (Recorder { queue, stalled }, task)
    }

    /// Reserves room for one RPC's events, or refuses at once.
    pub fn reserve(&self) -> Result<Permit<'_>, RecordError> {
        match self.queue.try_reserve() {
            Ok(permit) => Ok(Permit(permit)),
            Err(mpsc::error::TrySendError::Full(())) => {
                metrics::counter!("switchboard_recorder_refused_total", "reason" => "queue_full")
                    .increment(1);
                Err(RecordError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                metrics::counter!("switchboard_recorder_refused_total", "reason" => "closed")
                    .increment(1);
                Err(RecordError::Closed)
            }
        }
    }

    /// Records `events` and waits until they are durable: committed to
    /// PostgreSQL or fsynced to the spool.
    pub async fn record_durably(&self, events: Vec<Event>) -> Result<(), RecordError> {
        if self.stalled.load(Ordering::Acquire) {
            metrics::counter!("switchboard_recorder_refused_total", "reason" => "spool_full")
                .increment(1);
            return Err(RecordError::SpoolFull(
                "PostgreSQL is unreachable and the spool has no room".into(),
            ));
        }
        let permit = self.reserve()?;
        let (durable, written) = oneshot::channel();
        permit.0.send(Envelope {
            events,
            durable: Some(durable),
        });
        written.await.unwrap_or(Err(RecordError::Closed))
    }
}

/// Where undecodable or refused events are kept for an operator: one JSON
/// object per line, next to the spool.
pub fn dead_letter_path(spool_dir: &std::path::Path) -> PathBuf {
    spool_dir.join("dead-letters.jsonl")
}
