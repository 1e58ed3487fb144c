//! Warm start: L1 filled with every route in one go, dropped whole if a
//! change arrives meanwhile.

use std::{sync::atomic::Ordering, time::Instant};

use super::RouteCache;
use crate::domain::{Resolver, Route};

impl<R: Resolver> RouteCache<R> {
    /// Fills the cache with `routes` (warm start) and returns how many it
    /// kept. If an invalidation arrives meanwhile, the preload is dropped
    /// (part of it may predate the change) and routes load on demand.
    pub async fn preload(&self, routes: Vec<Route>) -> usize {
        if !self.enabled() {
            return 0;
        }
        let started_at = self.generation.load(Ordering::Acquire);
        let loaded_at = Instant::now();
        let mut inserted = 0;
        for route in routes {
            if self.generation.load(Ordering::Acquire) != started_at {
                break;
            }
            self.keep_preloaded(route, loaded_at).await;
            inserted += 1;
        }
        if self.generation.load(Ordering::Acquire) != started_at {
            // the last insertions may have raced the eviction
            self.flush();
            return 0;
        }
        inserted
    }
}

#[cfg(test)]
mod tests {
    use crate::routing::cache::{storage::PRELOAD_TTL_SPREAD, test_support::*};

    #[tokio::test]
    async fn warm_start_entries_fall_due_over_half_the_ttl() {
        let cache = cache_over(None, None, settings());
        let routes: Vec<Route> = (0..100)
            .map(|i| route(&format!("+1415555{i:04}"), "Reception"))
            .collect();
        let numbers: Vec<E164> = routes.iter().map(|r| r.number.clone()).collect();
        assert_eq!(cache.preload(routes).await, 100);
        let mut shares = Vec::new();
        for number in &numbers {
            shares.push(cache.numbers.get(number).await.unwrap().ttl_share);
        }
        let earliest = shares.iter().copied().fold(1.0, f64::min);
        assert!(
            earliest < 1.0 - PRELOAD_TTL_SPREAD * 0.9,
            "the earliest of 100 preloaded numbers falls due at {earliest} of the TTL"
        );
        assert!(shares.iter().all(|s| *s >= 1.0 - PRELOAD_TTL_SPREAD));
    }
}
