//! The last-known-good copy of the route cache on the spool's volume
//! (`routing::snapshot`): restored when the daemon starts, written every
//! `SWITCHBOARD_ROUTE_SNAPSHOT_INTERVAL` while the invalidation feed
//! confirms the cache, and once more at shutdown.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::watch;

use super::AppResolver;
use crate::{invalidation::Progress, routing::snapshot, telemetry::series::SnapshotWrite};

/// What was restored at start, for `/readyz`.
#[derive(Debug, Default)]
pub struct Restored {
    /// Numbers restored; 0 when nothing was.
    numbers: AtomicU64,
    /// When the restored copy was taken, ms since the epoch.
    written_at_ms: AtomicU64,
}

impl Restored {
    /// Numbers restored and the copy's age, if a copy was restored.
    pub fn restored(&self) -> Option<(u64, Duration)> {
        let numbers = self.numbers.load(Ordering::Acquire);
        (numbers > 0).then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let written = self.written_at_ms.load(Ordering::Acquire);
            (numbers, Duration::from_millis(now.saturating_sub(written)))
        })
    }
}

/// Restores the copy in `dir` into `cache`, if there is one young enough,
/// and returns the listener's progress to start from: the copy's change, so
/// that the first session replays from there.
pub(super) async fn restore(cache: &AppResolver, dir: &Path, restored: &Restored) -> Arc<Progress> {
    let read = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || snapshot::read(&dir)).await
    };
    let copy = match read {
        Ok(Ok(Some(copy))) => copy,
        Ok(Ok(None)) => return Progress::starting_at(None),
        Ok(Err(error)) => {
            tracing::warn!(%error, "last-known-good routes not restored");
            metrics::counter!("switchboard_route_snapshot_unusable_total").increment(1);
            return Progress::starting_at(None);
        }
        Err(panicked) => {
            tracing::error!(%panicked, "reading the last-known-good routes panicked");
            return Progress::starting_at(None);
        }
    };
    let (change_id, written_at_ms, age) = (copy.change_id, copy.written_at_ms, copy.age());
    let numbers = cache.restore(copy).await;
    if numbers == 0 {
        tracing::info!(
            ?age,
            "last-known-good routes too old to serve: starting empty"
        );
        return Progress::starting_at(None);
    }
    restored.numbers.store(numbers as u64, Ordering::Release);
    restored
        .written_at_ms
        .store(written_at_ms, Ordering::Release);
    metrics::gauge!("switchboard_route_snapshot_restored_numbers").set(numbers as f64);
    tracing::info!(
        numbers,
        ?age,
        change_id,
        "last-known-good routes restored: served while the database cannot be read"
    );
    Progress::starting_at(change_id)
}

/// Writes the copy every `interval` while the cache is confirmed and has
/// changed since the last one, until `stop`.
pub(super) async fn keep(
    cache: AppResolver,
    progress: Arc<Progress>,
    dir: PathBuf,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut written = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let version = cache.contents_version();
        if !cache.is_confirmed() || written == Some(version) || !cache.holds_routes() {
            continue;
        }
        if write(&cache, &progress, &dir).await {
            written = Some(version);
        }
    }
}

/// Writes the copy now (at shutdown, whatever the feed's state: entries
/// keep their own ages, and the change id its own position). Whether it
/// was written.
pub(super) async fn write(cache: &AppResolver, progress: &Progress, dir: &Path) -> bool {
    // the position first: what the copy holds is at least as new
    let copy = cache.last_known_good(progress.last_seen());
    let numbers = copy.numbers();
    let dir = dir.to_path_buf();
    let written = tokio::task::spawn_blocking(move || snapshot::write(&dir, &copy)).await;
    match written {
        Ok(Ok(bytes)) => {
            count_write(SnapshotWrite::Written);
            metrics::gauge!("switchboard_route_snapshot_bytes").set(bytes as f64);
            tracing::debug!(numbers, bytes, "last-known-good routes written");
            true
        }
        Ok(Err(error)) => {
            count_write(SnapshotWrite::Failed);
            tracing::warn!(%error, "last-known-good routes not written");
            false
        }
        Err(panicked) => {
            count_write(SnapshotWrite::Failed);
            tracing::error!(%panicked, "writing the last-known-good routes panicked");
            false
        }
    }
}

fn count_write(outcome: SnapshotWrite) {
    metrics::counter!("switchboard_route_snapshot_writes_total", "outcome" => <&str>::from(outcome))
        .increment(1);
}
