//! What the cache counts: hits (through handles registered once, on the
//! hot path), misses and the time they took, stale routes served, and
//! refreshes behind answers.

use std::time::Instant;

use super::RouteCache;
use crate::domain::Resolver;

impl<R: Resolver> RouteCache<R> {
    /// Counts a lookup L1 answered.
    pub(super) fn count_hit(&self, started: Instant) {
        self.l1_hits.increment(1);
        self.l1_lookup_seconds
            .record(started.elapsed().as_secs_f64());
    }
}

/// Counts a lookup L1 could not answer alone.
pub(super) fn count_miss() {
    metrics::counter!("switchboard_cache_misses_total", "tier" => "l1").increment(1);
}

/// Records how long a lookup that read the tiers below took.
pub(super) fn count_source_lookup(started: Instant) {
    metrics::histogram!("switchboard_cache_lookup_seconds", "tier" => "source")
        .record(started.elapsed().as_secs_f64());
}

/// Counts a refresh behind an answer, by how it went.
pub(super) fn refreshed(result: &'static str) {
    metrics::counter!("switchboard_cache_background_refreshes_total", "result" => result)
        .increment(1);
}

/// Counts a stale route served. Not logged: during an outage that would be
/// a line per call; the store logs the outage (telemetry::outage).
pub(super) fn count_stale() {
    metrics::counter!("switchboard_cache_stale_served_total").increment(1);
}

/// Counts a stale caller served (as [`count_stale`] for routes).
pub(super) fn count_stale_caller() {
    metrics::counter!("switchboard_caller_cache_stale_served_total").increment(1);
}
