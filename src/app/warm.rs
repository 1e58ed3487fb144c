//! Warm start: the route cache filled before the daemon reports ready.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use super::AppResolver;
use crate::store::PgStore;

/// Warm start's progress, reported by `/readyz`.
#[derive(Debug, Default)]
pub struct WarmStart {
    finished: AtomicBool,
}

impl WarmStart {
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

/// Preloads every active route into L1 when there are at most `limit`.
/// Waits for the invalidation listener first, so no change can fall between
/// the preload and the feed that keeps it fresh. Finishes (and lets the
/// daemon report ready) whatever happens: a failed preload means a cold
/// start, not an unready daemon. A panic is a bug, not a cold start: the
/// run supervises this task and stops the daemon with an error.
pub(super) async fn warm_start(
    store: PgStore,
    cache: AppResolver,
    limit: usize,
    warm: Arc<WarmStart>,
) {
    if limit > 0 {
        while !cache.is_confirmed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match store.active_routes(limit).await {
            Ok(Some(routes)) => {
                let loaded = cache.preload(routes).await;
                tracing::info!(routes = loaded, "warm start: routes preloaded");
            }
            Ok(None) => tracing::info!(
                limit,
                "warm start skipped: more active numbers than the limit"
            ),
            Err(error) => tracing::warn!(%error, "warm start failed; starting cold"),
        }
        match cache.warm_ranges().await {
            Ok(ranges) => tracing::info!(ranges, "warm start: number ranges loaded"),
            Err(error) => tracing::warn!(%error, "number ranges not loaded; loaded when needed"),
        }
    }
    warm.finished.store(true, Ordering::Release);
    if limit > 0 {
        keep_directory(store, cache).await;
    }
}

/// Most numbers the directory holds (16 bytes each): beyond, every number
/// nobody provisioned is looked up below L1, as without one.
const DIRECTORY_LIMIT: usize = 5_000_000;
/// Wait before loading the directory again after a failed load.
const DIRECTORY_RETRY: Duration = Duration::from_secs(1);

/// Loads the route cache's directory of provisioned numbers, and again
/// whenever it stops being complete (changes may have been missed). Runs
/// for the daemon's life, once the invalidation feed is live (a change
/// committed during a load is added by the feed).
async fn keep_directory(store: PgStore, cache: AppResolver) {
    loop {
        cache.directory_lost().await;
        while !cache.is_confirmed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let epoch = cache.directory_epoch();
        match store.provisioned_numbers(DIRECTORY_LIMIT).await {
            Ok(Some(numbers)) => {
                let count = numbers.len();
                if cache.install_directory(numbers, epoch) {
                    tracing::info!(numbers = count, "directory of provisioned numbers loaded");
                }
            }
            Ok(None) => {
                tracing::info!(
                    limit = DIRECTORY_LIMIT,
                    "more provisioned numbers than the directory holds: unknown numbers are looked up"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "directory of provisioned numbers not loaded; retrying");
                tokio::time::sleep(DIRECTORY_RETRY).await;
            }
        }
    }
}
