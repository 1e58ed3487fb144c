//! Writing straight to PostgreSQL, up to `writers` batches at once, while
//! nothing is spooled or held, each on a pooled connection of its own: a
//! batch an `EndCall` waits for goes as soon as the queue is empty, without
//! waiting for the batch before it to commit (their order does not matter:
//! every write is an idempotent upsert). A batch is answered when its
//! statement commits, and spooled when its write fails or is given up (its
//! connection closed, see `store::postgres`) because its earliest waiter
//! must be spooled to be answered within its deadline; a batch that finds
//! every writer busy is spooled at that moment instead of waiting for one.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use tokio::{
    sync::watch,
    task::{JoinError, JoinSet},
};

use super::{abandon, count, dead_letter, far_future, written, Batch, Batcher, Event};
use crate::store::{calls::WriteError, PgStore};
use crate::telemetry::series::EventOutcome;

impl Batcher {
    /// One step of writing straight to PostgreSQL: starts writing what is
    /// ready in `next` while a writer is free (when `launch`), then waits
    /// for whichever comes first: a write's end (answered or spooled), an
    /// envelope (taken into `next`), the moment `next` is due, or a stop.
    /// False once the queue is closed and nothing is left to wait for.
    pub(super) async fn step(
        &mut self,
        writes: &mut Writes,
        next: &mut Batch,
        launch: bool,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        // a batch spooled at launch (no time left) ends launching: what
        // follows it goes behind the spool
        while launch && !self.retrying() && writes.tasks.len() < self.settings.writers {
            let now = Instant::now();
            let ready = next.events.len() >= self.settings.batch_size
                || writes.flush_at.is_some_and(|at| at <= now)
                || (next.write_by().is_some() && self.queue.is_empty());
            if next.is_empty() || !ready {
                break;
            }
            let batch = next.take_front(self.settings.batch_size);
            self.launch(writes, batch).await;
            writes.flush_at = (!next.is_empty()).then(|| now + self.settings.flush_interval);
        }
        // a waiter that no writer can take in time is spooled instead
        let busy = !launch || writes.tasks.len() >= self.settings.writers;
        let spool_at = next.write_by().filter(|_| busy);
        let flush_at = writes.flush_at.filter(|_| !busy && !next.is_empty());
        let wake = [flush_at, spool_at]
            .into_iter()
            .flatten()
            .min()
            .map_or_else(far_future, tokio::time::Instant::from);
        let room = next.events.len() < self.max_waiting();
        if writes.is_empty() && !writes.open {
            return false;
        }
        tokio::select! {
            biased;
            Some(ended) = writes.tasks.join_next(), if !writes.is_empty() => {
                self.settle(ended).await;
            }
            envelope = self.queue.recv(), if room && writes.open => match envelope {
                Some(envelope) => {
                    if next.is_empty() {
                        writes.flush_at = Some(Instant::now() + self.settings.flush_interval);
                    }
                    next.push(envelope);
                }
                None => writes.open = false,
            },
            () = tokio::time::sleep_until(wake) => {
                if spool_at.is_some_and(|at| at <= Instant::now()) {
                    let waiting = next.take_durable();
                    self.spool_or_refuse(waiting).await;
                }
            }
            _ = stop.changed() => {}
        }
        true
    }

    /// Starts writing `batch` on a writer of its own, bounded by its
    /// earliest waiter's time to spool. A batch with no time left is
    /// spooled without being sent.
    async fn launch(&mut self, writes: &mut Writes, mut batch: Batch) {
        abandon(&mut batch);
        if batch.is_empty() {
            return;
        }
        metrics::histogram!("switchboard_recorder_batch_size").record(batch.events.len() as f64);
        let started = Instant::now();
        let cutoff = batch
            .write_by()
            .map_or(started + self.settings.write_timeout, |at| {
                at.min(started + self.settings.write_timeout)
            });
        if cutoff <= started {
            self.retry_later();
            self.spool_or_refuse(batch).await;
            return;
        }
        let store = self.store.clone();
        let spool_dir = self.settings.spool_dir.clone();
        let timeout = self.settings.write_timeout;
        writes.tasks.spawn(async move {
            // dropped unfinished at the cutoff: the store then closes its
            // connection, so the statement is never run late
            let write = write_events(&store, &spool_dir, &batch.events, timeout);
            let result = match tokio::time::timeout_at(cutoff.into(), write).await {
                Ok(result) => result,
                Err(_) => Err(WriteError::Unavailable(format!(
                    "no answer within {:?}",
                    cutoff - started
                ))),
            };
            metrics::histogram!("switchboard_recorder_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            (batch, result)
        });
    }

    /// Answers a batch whose write ended: acknowledged if written, else
    /// spooled (or refused).
    pub(super) async fn settle(
        &mut self,
        ended: Result<(Batch, Result<(), WriteError>), JoinError>,
    ) {
        match ended {
            Ok((batch, Ok(()))) => written(batch),
            // logged by the store as PostgreSQL's outage; spooling shows in
            // switchboard_recorder_spooling
            Ok((batch, Err(_))) => {
                self.retry_later();
                self.spool_or_refuse(batch).await;
            }
            // its waiters hear `Closed` as their reply is dropped
            Err(error) => {
                tracing::error!(%error, "a batch's write failed unexpectedly; its events are lost")
            }
        }
    }
}

/// The batches being written straight to PostgreSQL, each returning with
/// its outcome.
pub(super) struct Writes {
    pub(super) tasks: JoinSet<(Batch, Result<(), WriteError>)>,
    /// When the envelopes in `next` are due to be written even though none
    /// waits (a call opened waits at most the flush interval).
    flush_at: Option<Instant>,
    /// Whether the queue can still deliver envelopes.
    open: bool,
}

impl Default for Writes {
    fn default() -> Self {
        Self {
            tasks: JoinSet::new(),
            flush_at: None,
            open: true,
        }
    }
}

impl Writes {
    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// One batch's statement; when the database refuses its rows, event by
/// event, sending those still refused to the dead letters.
pub(super) async fn write_events(
    store: &PgStore,
    spool_dir: &Path,
    events: &[Event],
    timeout: Duration,
) -> Result<(), WriteError> {
    match store.write_events(events, timeout).await {
        Err(WriteError::Refused(reason)) => {
            tracing::warn!(%reason, "batch refused by the database; writing its events one by one");
            for event in events {
                match store
                    .write_events(std::slice::from_ref(event), timeout)
                    .await
                {
                    Ok(()) => {}
                    Err(WriteError::Refused(reason)) => {
                        count(1, EventOutcome::DeadLettered);
                        let letter = dead_letter::refused(event, &reason);
                        dead_letter::keep(spool_dir, vec![letter]).await;
                    }
                    Err(unavailable) => return Err(unavailable),
                }
            }
            Ok(())
        }
        other => other,
    }
}
