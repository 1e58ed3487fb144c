//! The batcher: the one task that writes events, to PostgreSQL or to the
//! spool.
//!
//! It alone owns the spool, so ordering needs no lock: while the spool holds
//! anything, new batches are appended behind it, and the spool is replayed
//! oldest first, one batch-sized chunk at a time between new batches. Once
//! it is empty, batches go straight to PostgreSQL again.
//!
//! A batch the database refuses (a data or integrity error, which a retry
//! would repeat) is retried event by event, and the events it still refuses
//! go to the dead-letter file instead of blocking everything behind them.

use std::{
    fs::OpenOptions,
    io::Write,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{mpsc, watch};

use super::{
    dead_letter_path,
    event::{self, Event},
    spool::{Spool, SpoolError},
    Envelope, RecordError, RecorderSettings,
};
use crate::store::{calls::WriteError, PgStore};
use crate::telemetry::outage::SPOOL;

/// Events taken from the queue together, with whoever waits for them.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    waiters: Vec<tokio::sync::oneshot::Sender<Result<(), RecordError>>>,
}

impl Batch {
    fn push(&mut self, envelope: Envelope) {
        self.events.extend(envelope.events);
        self.waiters.extend(envelope.durable);
    }

    /// Tells every waiter how it went. Waiters that gave up are ignored.
    fn acknowledge(&mut self, result: Result<(), RecordError>) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

pub(super) struct Batcher {
    store: PgStore,
    settings: RecorderSettings,
    spool: Arc<Mutex<Spool>>,
    /// Whether the spool holds unreplayed events (mirrors `Spool::is_empty`
    /// without a blocking call).
    spooled: bool,
    queue: mpsc::Receiver<Envelope>,
    /// Events neither written nor spooled (PostgreSQL down and the spool
    /// full or failing). While there are any, the queue is not read, so it
    /// fills and new RPCs are refused: memory stays bounded.
    held: Vec<Event>,
    /// When to try PostgreSQL again for the spool or the held events.
    next_attempt: Instant,
    /// Raised while `held` is not empty (see `Recorder::stalled`).
    stalled: Arc<AtomicBool>,
}

impl Batcher {
    pub(super) fn new(
        store: PgStore,
        settings: RecorderSettings,
        spool: Spool,
        queue: mpsc::Receiver<Envelope>,
        stalled: Arc<AtomicBool>,
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
            stalled,
        }
    }

    /// Runs until `stop` is raised, then drains within `grace`.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>, grace: Duration) {
        metrics::gauge!("switchboard_recorder_spooling").set(f64::from(u8::from(self.spooled)));
        loop {
            // a dropped sender (the application is gone) also means stop
            if *stop.borrow() || stop.has_changed().is_err() {
                break;
            }
            if !self.held.is_empty() {
                self.retry_held().await;
                self.stalled
                    .store(!self.held.is_empty(), std::sync::atomic::Ordering::Release);
                if !self.held.is_empty() {
                    tokio::select! {
                        () = tokio::time::sleep_until(self.next_attempt.into()) => {}
                        _ = stop.changed() => {}
                    }
                }
                continue;
            }
            if self.spooled && Instant::now() >= self.next_attempt {
                self.replay_chunk(None).await;
            }
            let wake = self.spooled.then_some(self.next_attempt);
            if let Some(batch) = self.collect(wake, &mut stop).await {
                self.persist(batch, None).await;
            }
        }
        self.drain(Instant::now() + grace).await;
    }

    /// The next batch: waits for a first event (until `wake`, if given, or
    /// a stop), then up to the flush interval for the batch to fill. Once an
    /// event is taken nothing cancels the batch: it is always returned.
    async fn collect(
        &mut self,
        wake: Option<Instant>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Batch> {
        let wake = wake.map_or_else(far_future, tokio::time::Instant::from);
        // `recv` is cancel-safe: losing the race takes nothing off the queue
        let first = tokio::select! {
            envelope = self.queue.recv() => envelope?,
            () = tokio::time::sleep_until(wake) => return None,
            _ = stop.changed() => return None,
        };
        let mut batch = Batch::default();
        batch.push(first);
        let flush_at = tokio::time::Instant::now() + self.settings.flush_interval;
        while batch.events.len() < self.settings.batch_size {
            tokio::select! {
                envelope = self.queue.recv() => match envelope {
                    Some(envelope) => batch.push(envelope),
                    None => break,
                },
                () = tokio::time::sleep_until(flush_at) => break,
                // a stop cuts the wait short; the batch is still returned
                _ = stop.changed() => break,
            }
        }
        metrics::gauge!("switchboard_recorder_queue_depth").set(self.queue.len() as f64);
        Some(batch)
    }

    /// Makes one batch durable: PostgreSQL when nothing is spooled, else (or
    /// when PostgreSQL fails) the spool. `deadline` bounds the database
    /// write during shutdown.
    async fn persist(&mut self, mut batch: Batch, deadline: Option<Instant>) {
        metrics::histogram!("switchboard_recorder_batch_size").record(batch.events.len() as f64);
        if !self.spooled {
            // on failure the store logs PostgreSQL's outage, and spooling
            // shows in switchboard_recorder_spooling
            if self.write(&batch.events, deadline).await.is_ok() {
                // events are durable again: a spool outage is over
                SPOOL.succeeded();
                count(batch.events.len(), "written");
                batch.acknowledge(Ok(()));
                return;
            }
        }
        let events = std::mem::take(&mut batch.events);
        match self.append(&events).await {
            Ok(()) => batch.acknowledge(Ok(())),
            Err(error) => {
                // events held in memory; refusals counted by reason
                SPOOL.failed(&error);
                batch.acknowledge(Err(error));
                self.held = events;
                self.stalled
                    .store(true, std::sync::atomic::Ordering::Release);
                self.next_attempt = Instant::now() + self.settings.retry_interval;
            }
        }
    }

    /// Writes a batch, sending rows the database refuses to the dead
    /// letters. An error means nothing of it can be written now.
    async fn write(&self, events: &[Event], deadline: Option<Instant>) -> Result<(), WriteError> {
        let timeout = match deadline {
            Some(deadline) => self
                .settings
                .write_timeout
                .min(deadline.saturating_duration_since(Instant::now())),
            None => self.settings.write_timeout,
        };
        let started = Instant::now();
        let result = self.store.write_events(events, timeout).await;
        metrics::histogram!("switchboard_recorder_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Err(WriteError::Refused(reason)) => {
                tracing::warn!(%reason, "batch refused by the database; writing its events one by one");
                for event in events {
                    match self
                        .store
                        .write_events(std::slice::from_ref(event), timeout)
                        .await
                    {
                        Ok(()) => {}
                        Err(WriteError::Refused(reason)) => self.dead_letter(event, &reason),
                        Err(unavailable) => return Err(unavailable),
                    }
                }
                Ok(())
            }
            other => other,
        }
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
        if result.is_ok() {
            SPOOL.succeeded();
            count(events.len(), "spooled");
            if !self.spooled {
                self.spooled = true;
                self.next_attempt = Instant::now() + self.settings.retry_interval;
                metrics::gauge!("switchboard_recorder_spooling").set(1.0);
            }
        }
        result
    }

    /// Replays the oldest spooled chunk into PostgreSQL. On failure, waits
    /// the retry interval before the next attempt.
    async fn replay_chunk(&mut self, deadline: Option<Instant>) {
        let limit = self.settings.batch_size;
        let records = match self.with_spool(move |spool| spool.read(limit)).await {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, "cannot read the spool");
                self.next_attempt = Instant::now() + self.settings.retry_interval;
                return;
            }
        };
        let mut events = Vec::with_capacity(records.len());
        for record in &records {
            match event::decode(record) {
                Ok(event) => events.push(event),
                Err(error) => self.dead_letter_raw(record, &error.to_string()),
            }
        }
        if let Err(error) = self.write(&events, deadline).await {
            tracing::debug!(%error, "PostgreSQL still unreachable; spool kept");
            self.next_attempt = Instant::now() + self.settings.retry_interval;
            return;
        }
        count(events.len(), "replayed");
        let consumed = records.len();
        match self
            .with_spool(move |spool| spool.consume(consumed).map(|()| spool.is_empty()))
            .await
        {
            Ok(true) => {
                self.spooled = false;
                metrics::gauge!("switchboard_recorder_spooling").set(0.0);
                tracing::info!("spool replayed; writing to PostgreSQL directly again");
            }
            Ok(false) => {}
            Err(error) => {
                // replayed but not marked: it will be replayed again, which
                // the idempotent writes absorb
                tracing::error!(%error, "cannot mark spooled events as written");
                self.next_attempt = Instant::now() + self.settings.retry_interval;
            }
        }
    }

    /// Held events go where new ones would.
    async fn retry_held(&mut self) {
        if Instant::now() < self.next_attempt {
            return;
        }
        let events = std::mem::take(&mut self.held);
        let mut batch = Batch {
            events,
            waiters: Vec::new(),
        };
        if self.spooled {
            // make room first, if the database is back
            self.replay_chunk(None).await;
        }
        if !self.spooled && self.write(&batch.events, None).await.is_ok() {
            count(batch.events.len(), "written");
            return;
        }
        let events = std::mem::take(&mut batch.events);
        if self.append(&events).await.is_err() {
            self.held = events;
            self.next_attempt = Instant::now() + self.settings.retry_interval;
        }
    }

    /// Shutdown: no new events; everything queued is written, or spooled
    /// once the deadline is near; then the spool is replayed while time and
    /// PostgreSQL allow.
    async fn drain(&mut self, deadline: Instant) {
        self.queue.close();
        let mut batch = Batch {
            events: std::mem::take(&mut self.held),
            waiters: Vec::new(),
        };
        let mut drained = batch.events.len();
        loop {
            let next = self.queue.recv().await;
            let full = batch.events.len() >= self.settings.batch_size;
            if (full || next.is_none()) && !batch.events.is_empty() {
                self.persist(std::mem::take(&mut batch), Some(deadline))
                    .await;
                if !self.held.is_empty() {
                    // neither database nor spool: nothing more can be done
                    break;
                }
            }
            match next {
                Some(envelope) => {
                    drained += envelope.events.len();
                    batch.push(envelope);
                }
                None => break,
            }
        }
        while self.spooled && Instant::now() < deadline {
            self.replay_chunk(Some(deadline)).await;
            if Instant::now() < self.next_attempt {
                break;
            }
        }
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

    fn dead_letter(&self, event: &Event, reason: &str) {
        let line = serde_json::json!({ "reason": reason, "event": event });
        self.write_dead_letter(&line);
    }

    fn dead_letter_raw(&self, record: &[u8], reason: &str) {
        let hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
        let line = serde_json::json!({ "reason": reason, "record_hex": hex });
        self.write_dead_letter(&line);
    }

    fn write_dead_letter(&self, line: &serde_json::Value) {
        count(1, "dead_lettered");
        let mut line = line.clone();
        line["at"] =
            serde_json::json!(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
        let path = dead_letter_path(&self.settings.spool_dir);
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| {
                writeln!(file, "{line}")?;
                file.sync_data()
            });
        match written {
            Ok(()) => {
                tracing::error!(path = %path.display(), "event refused by the database, kept in the dead-letter file")
            }
            Err(error) => {
                tracing::error!(%error, %line, "event refused by the database and the dead-letter file cannot be written")
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

fn count(events: usize, outcome: &'static str) {
    metrics::counter!("switchboard_recorder_events_total", "outcome" => outcome)
        .increment(events as u64);
}
