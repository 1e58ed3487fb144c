//! Stale-if-error: a stale route that cannot be trusted without a reread
//! (the invalidation feed is down, or it is past the maximum age) is reread
//! once for every request waiting for it; if the source cannot be read, the
//! stale copy answers them all, up to the maximum age, and is not reread
//! again for a moment.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{
    load::Below,
    stats,
    storage::{Binding, Entry},
    RouteCache,
};
use crate::domain::{ResolveError, Resolver, Route, E164};

/// After a failed refresh, a stale entry is served without retrying the
/// source for this long, so an outage does not cost every call a timeout.
const STALE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl<R: Resolver> RouteCache<R> {
    /// Keeps a stale binding after its refresh failed, not to be retried
    /// for [`STALE_RETRY_AFTER`], unless an eviction ran since `generation`.
    pub(super) async fn keep_stale(
        &self,
        number: &E164,
        binding: Entry<Option<Binding>>,
        generation: u64,
    ) {
        if self.generation.load(Ordering::Acquire) == generation {
            let kept = Entry {
                retry_after: Some(Instant::now() + STALE_RETRY_AFTER),
                ..binding
            };
            self.numbers.insert(number.clone(), kept).await;
        }
    }

    /// A stale route that must be checked against the tiers below before it
    /// is answered (the invalidation feed is down, or the copy is past the
    /// maximum age): reread it, one reread per number however many requests
    /// wait for it. The stale entry stays where it is until the reread
    /// replaces it, so a request arriving meanwhile finds it too and waits
    /// for the same reread; if the source is unreachable, each of them is
    /// answered from it (stale-if-error, up to the maximum age), and it is
    /// not reread again for a moment.
    pub(super) async fn reread_stale(
        &self,
        number: &E164,
        route: Route,
        binding: Option<Entry<Option<Binding>>>,
        started: Instant,
    ) -> Result<Option<Route>, ResolveError> {
        stats::count_miss();
        let generation = self.generation.load(Ordering::Acquire);
        let started_at = self.snapshot();
        let reread = self
            .rereads
            .try_get_with_by_ref(number, async {
                match self.read_below(number, &started_at).await? {
                    Below::Keep(read) => {
                        self.keep_reread(number, read.as_ref(), &started_at).await;
                        Ok(read)
                    }
                    // a change to what it names is settling: the source's
                    // answer, not kept (as in `load`)
                    Below::Settling => self.inner.source().resolve(number).await,
                }
            })
            .await;
        // the answer is for the requests that waited for it, not a cache
        self.rereads.invalidate(number).await;
        stats::count_source_lookup(started);
        match reread {
            Ok(read) => Ok(read),
            // Stale-if-error: the source is unreachable, the copy is within
            // the maximum age. Keep it, and do not retry for a moment.
            Err(error) => match (&*error, binding) {
                (ResolveError::Timeout(_) | ResolveError::Unavailable(_), Some(binding))
                    if self.servable(Some(&binding)) =>
                {
                    self.keep_stale(number, binding, generation).await;
                    stats::count_stale();
                    Ok(Some(route))
                }
                _ => Err((*error).clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{atomic::Ordering, Arc},
        time::Duration,
    };

    use tokio::sync::Notify;

    use crate::routing::cache::{test_support::*, CacheSettings};

    #[tokio::test]
    async fn every_request_waiting_for_a_failed_reread_is_answered_from_the_stale_copy() {
        // the feed is down, so a stale entry is reread before it is served
        let gate = Arc::new(Notify::new());
        let cache = cache_over(Some("Reception"), Some(gate.clone()), distrustful());
        gate.notify_one();
        cache.resolve(&number()).await.unwrap();
        cache.set_confirmed(false);
        cache.inner().down.store(true, Ordering::SeqCst);

        // (a current-thread runtime: every lookup below runs up to its
        // first wait before this test goes on)
        let lookups: Vec<_> = (0..20).map(|_| resolve_in_task(&cache)).collect();
        tokio::time::timeout(Duration::from_secs(5), cache.inner().entered.notified())
            .await
            .expect("the stale entry is reread");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for lookup in lookups {
            let route = lookup.await.unwrap();
            assert_eq!(
                route
                    .expect("stale-if-error for every waiting request")
                    .unwrap()
                    .agent
                    .name,
                "Reception"
            );
        }
        assert_eq!(cache.inner().reads(), 2, "one reread for all of them");
    }

    #[tokio::test]
    async fn stale_routes_are_served_while_the_source_is_down_up_to_the_maximum_age() {
        // every entry is due a refresh at once
        let cache = cache_over(Some("Reception"), None, due_at_once());
        cache.resolve(&number()).await.unwrap();
        cache.inner().down.store(true, Ordering::SeqCst);

        let stale = cache.resolve(&number()).await.unwrap().unwrap();
        assert_eq!(stale.agent.name, "Reception");
        cache.refreshes_done().await;
        let reads = cache.inner().reads();
        assert_eq!(reads, 2, "the refresh was tried");
        // within the back-off the source is not tried again
        cache.resolve(&number()).await.unwrap().unwrap();
        assert_eq!(cache.inner().reads(), reads);

        // past the maximum age: the source's error
        let strict = cache_over(
            Some("Reception"),
            None,
            CacheSettings {
                max_stale: Duration::ZERO,
                ..due_at_once()
            },
        );
        strict.resolve(&number()).await.unwrap();
        strict.inner().down.store(true, Ordering::SeqCst);
        assert!(strict.resolve(&number()).await.is_err());
    }
}
