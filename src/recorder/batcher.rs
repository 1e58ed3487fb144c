//! The batcher: the one task that writes events, to PostgreSQL or to the
//! spool.
//!
//! It alone owns the spool, so ordering needs no lock. Events reach
//! PostgreSQL in the order they were taken: what the spool holds, then what
//! is held in memory, then new batches. While the spool holds anything, new
//! batches are appended behind it. Once PostgreSQL answers again the spool
//! is replayed oldest first, chunk after chunk without a pause (between two
//! chunks the RPCs that arrived meanwhile are answered, their batch appended
//! behind), then what is held; after that batches go straight to PostgreSQL
//! again. Only a failed attempt waits the retry interval.
//!
//! When neither PostgreSQL nor the spool can take a batch, the RPCs waiting
//! for it are refused and their events dropped (the contract in the module
//! above). Only the events nobody waits for (call openings, acknowledged
//! already) are held in memory, at most `queue_capacity` of them, and go to
//! the spool as soon as a replay makes room. While the spool refuses,
//! `stalled` says so, and durable RPCs are refused before they queue.
//!
//! While nothing is spooled or held, up to `writers` batches are written at
//! once (`pipeline`); a batch that fails goes to the spool, and from then on
//! everything follows the order above until the spool is replayed.
//!
//! While catching up, every database write races the queue: envelopes that
//! arrive meanwhile are taken into the next batch, and the write is given
//! up as soon as the earliest waiter of either batch must be spooled.
//!
//! A batch the database refuses (a data or integrity error, which a retry
//! would repeat) is retried event by event, and the events it still refuses
//! go to the dead-letter file instead of blocking everything behind them.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};

mod pipeline;

use pipeline::{write_events, Writes};

use super::{
    batch::Batch,
    dead_letter,
    event::{self, Event},
    spool::{Spool, SpoolError},
    Envelope, RecordError, RecorderSettings, Stall,
};
use crate::store::{calls::WriteError, PgStore};
use crate::telemetry::{outage::SPOOL, series::EventOutcome};

pub(super) struct Batcher {
    store: PgStore,
    settings: RecorderSettings,
    spool: Arc<Mutex<Spool>>,
    /// Whether the spool holds unreplayed events (mirrors `Spool::is_empty`
    /// without a blocking call).
    spooled: bool,
    queue: mpsc::Receiver<Envelope>,
    /// Events nobody waits for (call openings) that neither PostgreSQL nor
    /// the spool could take; written before anything newer. Never more
    /// than `max_waiting` but for one batch: at that size the queue is not
    /// read, so it fills and new RPCs are refused at once.
    held: Vec<Event>,
    /// When to try PostgreSQL again after a failure, for the spool or the
    /// held events.
    next_attempt: Instant,
    /// Why the spool refuses events, while it does (PostgreSQL unreachable
    /// and the spool full or failing). Always set while `held` is not
    /// empty.
    stall: Option<RecordError>,
    /// Mirrors `stall` for the RPCs (see `Recorder::stalled`).
    stalled: Arc<Stall>,
}

impl Batcher {
    pub(super) fn new(
        store: PgStore,
        settings: RecorderSettings,
        spool: Spool,
        queue: mpsc::Receiver<Envelope>,
        stalled: Arc<Stall>,
    ) -> Self {
        let spooled = !spool.is_empty();
        if spooled {
            tracing::info!(
                bytes = spool.bytes(),
                "spool holds events from an earlier run; replaying them"
            );
        }
        Self {
            store,
            settings,
            spool: Arc::new(Mutex::new(spool)),
            spooled,
            queue,
            held: Vec::new(),
            next_attempt: Instant::now(),
            stall: None,
            stalled,
        }
    }

    /// Runs until `stop` is raised, then drains within `grace`.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>, grace: Duration) {
        metrics::gauge!("switchboard_recorder_spooling").set(f64::from(u8::from(self.spooled)));
        // envelopes taken from the queue while a write was waiting
        let mut next = Batch::default();
        // batches being written straight to PostgreSQL
        let mut writes = Writes::default();
        loop {
            // a dropped sender (the application is gone) also means stop
            if *stop.borrow() || stop.has_changed().is_err() {
                break;
            }
            if !self.retrying() || !writes.is_empty() {
                // new batches go straight to PostgreSQL; once something is
                // spooled, the writes under way finish before catching up
                let launch = !self.retrying();
                if !self.step(&mut writes, &mut next, launch, &mut stop).await {
                    break;
                }
                continue;
            }
            if Instant::now() >= self.next_attempt {
                self.recover(None, &mut next).await;
            } else if next.is_empty() {
                if self.held.len() >= self.max_waiting() {
                    // the queue is not read: it fills and RPCs are refused
                    // at once, so memory stays bounded
                    tokio::select! {
                        () = tokio::time::sleep_until(self.next_attempt.into()) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                self.collect(&mut next, Some(self.next_attempt), &mut stop)
                    .await;
            }
            if !next.is_empty() {
                let batch = next.take_front(self.settings.batch_size);
                self.persist(batch, None, &mut next).await;
            }
        }
        // what is being written is answered before anything else drains
        while let Some(ended) = writes.tasks.join_next().await {
            self.settle(ended).await;
        }
        self.drain(next, Instant::now() + grace).await;
    }

    /// Whether anything waits for PostgreSQL (or for room in the spool)
    /// before new batches may go there.
    fn retrying(&self) -> bool {
        self.spooled || !self.held.is_empty() || self.stall.is_some()
    }

    /// Most events kept in memory out of the queue, held or taken while a
    /// write waits, before the queue is no longer read.
    fn max_waiting(&self) -> usize {
        self.settings.queue_capacity.max(self.settings.batch_size)
    }

    fn retry_later(&mut self) {
        self.next_attempt = Instant::now() + self.settings.retry_interval;
    }

    /// Waits for a first envelope (until `wake`, if given, or a stop), then
    /// up to the flush interval for the batch to fill, never past the time
    /// its earliest waiter must be written by. Once an envelope is taken
    /// nothing cancels the batch: it stays in `batch`.
    async fn collect(
        &mut self,
        batch: &mut Batch,
        wake: Option<Instant>,
        stop: &mut watch::Receiver<bool>,
    ) {
        let wake = wake.map_or_else(far_future, tokio::time::Instant::from);
        // `recv` is cancel-safe: losing the race takes nothing off the queue
        let first = tokio::select! {
            envelope = self.queue.recv() => envelope,
            () = tokio::time::sleep_until(wake) => None,
            _ = stop.changed() => None,
        };
        let Some(first) = first else { return };
        let mut flush_at = Instant::now() + self.settings.flush_interval;
        take_into(batch, first, &mut flush_at);
        while batch.events.len() < self.settings.batch_size {
            tokio::select! {
                // what is queued already joins the batch before it is due
                biased;
                envelope = self.queue.recv() => match envelope {
                    Some(envelope) => take_into(batch, envelope, &mut flush_at),
                    None => break,
                },
                () = tokio::time::sleep_until(flush_at.into()) => break,
                // a stop cuts the wait short; the batch is still kept
                _ = stop.changed() => break,
            }
        }
        metrics::gauge!("switchboard_recorder_queue_depth").set(self.queue.len() as f64);
    }

    /// Makes one batch durable, or refuses it: PostgreSQL when nothing
    /// waits before it, else (or when PostgreSQL does not answer in time)
    /// the spool. When neither takes it, its waiting RPCs are refused and
    /// their events dropped; the rest is held. `shutdown` bounds the
    /// database write while draining.
    async fn persist(&mut self, mut batch: Batch, shutdown: Option<Instant>, next: &mut Batch) {
        abandon(&mut batch);
        if batch.is_empty() {
            return;
        }
        metrics::histogram!("switchboard_recorder_batch_size").record(batch.events.len() as f64);
        if !self.retrying() {
            let write_by = [batch.write_by(), shutdown].into_iter().flatten().min();
            match self.write(&batch.events, write_by, next).await {
                Ok(()) => return written(batch),
                // logged by the store as PostgreSQL's outage; spooling shows
                // in switchboard_recorder_spooling
                Err(_) => self.retry_later(),
            }
        }
        self.spool_or_refuse(batch).await;
    }

    /// The spool takes `batch`, or, when it cannot, its waiting RPCs are
    /// refused and their events dropped; the rest is held.
    async fn spool_or_refuse(&mut self, mut batch: Batch) {
        // who gave up during the write is not spooled
        abandon(&mut batch);
        if batch.is_empty() {
            return;
        }
        let error = match self.stall.clone() {
            // behind held events, which go to the spool first once it has room
            Some(error) if !self.held.is_empty() => error,
            _ => match self.append(&batch.events).await {
                Ok(()) => {
                    self.set_stall(None);
                    batch.acknowledge();
                    return;
                }
                Err(error) => error,
            },
        };
        self.set_stall(Some(error.clone()));
        let refused = batch.take_durable();
        count(refused.events.len(), EventOutcome::Refused);
        refused.refuse(&error);
        self.held.append(&mut batch.events);
    }

    /// Writes `events` (rows the database refuses go to the dead letters)
    /// while taking envelopes that arrive meanwhile into `next`. Gives up
    /// after the write timeout, at `write_by`, or when the earliest waiter
    /// in `next` must be spooled, whichever comes first. An error means
    /// nothing of it can be written now.
    async fn write(
        &mut self,
        events: &[Event],
        write_by: Option<Instant>,
        next: &mut Batch,
    ) -> Result<(), WriteError> {
        let started = Instant::now();
        let mut cutoff = [write_by, next.write_by()]
            .into_iter()
            .flatten()
            .fold(started + self.settings.write_timeout, Instant::min);
        if cutoff <= started {
            return Err(WriteError::Unavailable(
                "no time left to wait for PostgreSQL".into(),
            ));
        }
        let max_waiting = self.max_waiting();
        let Self {
            store,
            settings,
            queue,
            held,
            ..
        } = self;
        // dropped unfinished when the cutoff comes first: the store then
        // closes its connection, so the statement is never run late
        let write = write_events(store, &settings.spool_dir, events, settings.write_timeout);
        tokio::pin!(write);
        let mut open = true;
        let result = loop {
            tokio::select! {
                biased;
                result = &mut write => break result,
                () = tokio::time::sleep_until(cutoff.into()) => {
                    break Err(WriteError::Unavailable(format!(
                        "no answer within {:?}",
                        cutoff - started
                    )));
                }
                // beyond one batch, so that no waiter's deadline goes unseen
                envelope = queue.recv(),
                    if open && next.events.len() < max_waiting && held.len() < max_waiting =>
                {
                    match envelope {
                        Some(envelope) => {
                            if let Some(waiter) = &envelope.durable {
                                cutoff = cutoff.min(waiter.write_by);
                            }
                            next.push(envelope);
                        }
                        None => open = false,
                    }
                }
            }
        };
        metrics::histogram!("switchboard_recorder_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Appends to the spool (one fsync for the whole group).
    async fn append(&mut self, events: &[Event]) -> Result<(), RecordError> {
        let records: Vec<Vec<u8>> = events.iter().map(event::encode).collect();
        let result = self
            .with_spool(move |spool| spool.append(&records))
            .await
            .map_err(|error| match error {
                SpoolError::Full { .. } => RecordError::SpoolFull(error.to_string()),
                other => RecordError::SpoolFailed(other.to_string()),
            });
        if result.is_ok() && !events.is_empty() {
            SPOOL.succeeded();
            count(events.len(), EventOutcome::Spooled);
            if !self.spooled {
                self.spooled = true;
                metrics::gauge!("switchboard_recorder_spooling").set(1.0);
            }
        }
        result
    }

    /// One step of catching up, once PostgreSQL is due another try: the
    /// oldest spooled chunk, else what is held. A failure makes the next try
    /// wait the retry interval; a success leaves it due, so the caller goes
    /// on at once, chunk after chunk, answering the RPCs taken into `next`
    /// meanwhile between two steps.
    async fn recover(&mut self, shutdown: Option<Instant>, next: &mut Batch) {
        if self.spooled {
            if !self.replay_chunk(shutdown, next).await {
                self.retry_later();
            }
            return;
        }
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            if let Err(error) = self.write(&held, shutdown, next).await {
                tracing::debug!(%error, "PostgreSQL still unreachable; events still held");
                self.held = held;
                self.retry_later();
                // a spool that failed may take them now
                self.release_held().await;
                return;
            }
            count(held.len(), EventOutcome::Written);
        }
        // nothing spooled or held: the next batch may try the spool again
        self.set_stall(None);
    }

    /// Shutdown's catching up: steps until nothing is spooled or held, a
    /// step fails, or `deadline` passes.
    async fn catch_up(&mut self, deadline: Instant, next: &mut Batch) {
        while self.retrying() && Instant::now() < deadline {
            self.recover(Some(deadline), next).await;
            if Instant::now() < self.next_attempt {
                break;
            }
        }
    }

    /// Appends the held events to the spool if it takes them now. The stall
    /// ends once nothing is held.
    async fn release_held(&mut self) {
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            if let Err(error) = self.append(&held).await {
                self.held = held;
                self.set_stall(Some(error));
                return;
            }
        }
        self.set_stall(None);
    }

    /// Records whether the spool refuses events, and logs it when that
    /// changes.
    fn set_stall(&mut self, stall: Option<RecordError>) {
        match (&self.stall, &stall) {
            // the spool's outage log: its start, summaries and end
            (_, Some(error)) => SPOOL.failed(error),
            (Some(_), None) => tracing::info!("the spool takes events again"),
            (None, None) => {}
        }
        self.stalled.set(stall.as_ref());
        self.stall = stall;
    }

    /// Replays the oldest spooled chunk into PostgreSQL, taking envelopes
    /// that arrive meanwhile into `next`, and ends a stall once that makes
    /// room. False when it could not.
    async fn replay_chunk(&mut self, shutdown: Option<Instant>, next: &mut Batch) -> bool {
        let limit = self.settings.batch_size;
        let read = self
            .with_spool(move |spool| spool.read(limit).map(|records| (records, spool.bytes())))
            .await;
        let (records, held_bytes) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, "cannot read the spool");
                return false;
            }
        };
        let events = decode(&self.settings.spool_dir, &records).await;
        if let Err(error) = self.write(&events, shutdown, next).await {
            tracing::debug!(%error, "PostgreSQL still unreachable; spool kept");
            return false;
        }
        count(events.len(), EventOutcome::Replayed);
        let consumed = records.len();
        match self
            .with_spool(move |spool| {
                spool
                    .consume(consumed)
                    .map(|()| (spool.is_empty(), spool.bytes()))
            })
            .await
        {
            Ok((empty, bytes)) => {
                if empty {
                    self.spooled = false;
                    metrics::gauge!("switchboard_recorder_spooling").set(0.0);
                    tracing::info!("spool replayed; writing to PostgreSQL directly again");
                }
                // files are deleted whole: room comes back file by file
                if bytes < held_bytes {
                    self.release_held().await;
                }
                true
            }
            Err(error) => {
                // replayed but not marked: it will be replayed again, which
                // the idempotent writes absorb
                tracing::error!(%error, "cannot mark spooled events as written");
                false
            }
        }
    }

    /// Shutdown: no new events. What is held gets one more attempt (behind
    /// the spool), everything queued is written, or spooled once the
    /// deadline is near, then the spool is replayed while time and
    /// PostgreSQL allow.
    async fn drain(&mut self, mut next: Batch, deadline: Instant) {
        self.queue.close();
        if !self.held.is_empty() {
            // what is held goes before the queue: the spool first, then it
            self.catch_up(deadline, &mut next).await;
        }
        let mut drained = 0;
        loop {
            // the queue is closed: `recv` returns what is left, then None
            while next.events.len() < self.settings.batch_size {
                match self.queue.recv().await {
                    Some(envelope) => next.push(envelope),
                    None => break,
                }
            }
            if next.is_empty() {
                break;
            }
            let batch = next.take_front(self.settings.batch_size);
            drained += batch.events.len();
            self.persist(batch, Some(deadline), &mut next).await;
        }
        self.catch_up(deadline, &mut next).await;
        if !self.held.is_empty() {
            tracing::error!(
                events = self.held.len(),
                "stopping with events that are neither written nor spooled"
            );
        } else if self.spooled {
            tracing::warn!(
                "stopping with events in the spool; they are replayed at the next start"
            );
        }
        tracing::info!(events = drained, "recorder drained");
    }

    async fn with_spool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || {
            let mut spool = spool
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut spool)
        })
        .await
        .unwrap_or_else(|join| {
            Err(SpoolError::Io {
                context: "spool task".into(),
                source: std::io::Error::other(join.to_string()),
            })
        })
    }
}

/// Decodes spooled records; those that no longer decode go to the dead
/// letters, durably before this returns (so before they are consumed).
async fn decode(spool_dir: &Path, records: &[Vec<u8>]) -> Vec<Event> {
    let mut events = Vec::with_capacity(records.len());
    let mut undecodable = Vec::new();
    for record in records {
        match event::decode(record) {
            Ok(event) => events.push(event),
            Err(error) => undecodable.push(dead_letter::undecodable(record, &error.to_string())),
        }
    }
    if !undecodable.is_empty() {
        count(undecodable.len(), EventOutcome::DeadLettered);
        dead_letter::keep(spool_dir, undecodable).await;
    }
    events
}

/// Adds an envelope to the batch being collected, whose flush must not
/// wait past the time its waiter must be written by.
/// Adds `envelope` to the batch. An RPC waiting for its events to be
/// durable does not wait for the batch to fill: the batch goes as soon as
/// the queue holds nothing more. Under load that still writes many events
/// per commit (group commit): whatever arrives while one batch is written
/// is the next batch.
fn take_into(batch: &mut Batch, envelope: Envelope, flush_at: &mut Instant) {
    if envelope.durable.is_some() {
        *flush_at = (*flush_at).min(Instant::now());
    }
    batch.push(envelope);
}

/// Acknowledges a batch PostgreSQL committed.
fn written(batch: Batch) {
    // events are durable again: a spool outage is over
    SPOOL.succeeded();
    count(batch.events.len(), EventOutcome::Written);
    batch.acknowledge();
}

/// Drops the parts whose RPC gave up: they were not acknowledged, so their
/// events must not be recorded.
fn abandon(batch: &mut Batch) {
    let gone = batch.take_gone();
    if !gone.is_empty() {
        count(gone.events.len(), EventOutcome::Abandoned);
        gone.abandon();
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

fn count(events: usize, outcome: EventOutcome) {
    metrics::counter!("switchboard_recorder_events_total", "outcome" => <&str>::from(outcome))
        .increment(events as u64);
}
