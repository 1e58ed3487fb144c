//! Peeking, for explain: what `resolve` would answer now and which tier
//! would answer it, changing nothing.

use super::{storage::Lookup, RouteCache};
use crate::domain::{Peeked, ResolveError, Resolver, Tier, E164};

impl<R: Resolver> RouteCache<R> {
    /// [`Resolver::peek`]: L1's answer when `resolve` would serve it, else
    /// the tiers below, peeked the same way.
    pub(super) async fn peek_tiers(&self, number: &E164) -> Result<Peeked, ResolveError> {
        if !self.enabled() {
            return self.inner.peek(number).await;
        }
        let in_l1 = |route, stale| Peeked {
            tier: Tier::L1,
            route,
            stale,
        };
        let stale = match self.cached(number).await {
            Lookup::Hit(route) => return Ok(in_l1(route, false)),
            Lookup::Stale(route, true) => return Ok(in_l1(Some(route), true)),
            Lookup::Stale(route, false) => Some(route),
            Lookup::Miss | Lookup::Partial(_) => None,
        };
        let servable = stale.is_some() && self.servable(self.numbers.get(number).await.as_ref());
        if let (Some(route), true, true) = (&stale, servable, self.is_confirmed()) {
            // as `resolve` would: answered from L1, refreshed behind
            return Ok(in_l1(Some(route.clone()), true));
        }
        match (self.inner.peek(number).await, stale) {
            // as in `resolve`: stale-if-error, up to the maximum age
            (Err(ResolveError::Timeout(_) | ResolveError::Unavailable(_)), Some(route))
                if servable =>
            {
                Ok(in_l1(Some(route), true))
            }
            (below, _) => below,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::routing::cache::test_support::*;

    #[tokio::test]
    async fn peeking_reads_the_tiers_without_filling_or_evicting() {
        let cache = cache_over(Some("Reception"), None, settings());
        // cold: the source answers each time, and nothing is cached
        for _ in 0..2 {
            let peeked = cache.peek(&number()).await.unwrap();
            assert_eq!(peeked.tier, Tier::L3);
            assert_eq!(peeked.route.unwrap().agent.name, "Reception");
        }
        assert_eq!(cache.inner().reads(), 2);
        cache.resolve(&number()).await.unwrap();
        let peeked = cache.peek(&number()).await.unwrap();
        assert_eq!((peeked.tier, peeked.stale), (Tier::L1, false));
        assert_eq!(cache.inner().reads(), 3);
        // a resolve after the peeks still hits: nothing was evicted
        cache.resolve(&number()).await.unwrap();
        assert_eq!(cache.inner().reads(), 3);

        let unknown = E164::from_canonical("+14155550199").unwrap();
        assert_eq!(cache.peek(&unknown).await.unwrap().tier, Tier::L3);
        cache.resolve(&unknown).await.unwrap();
        let peeked = cache.peek(&unknown).await.unwrap();
        assert_eq!(peeked.tier, Tier::L1, "the negative entry answers");
        assert!(peeked.route.is_none());
    }

    #[tokio::test]
    async fn a_stale_entry_is_peeked_as_resolve_would_serve_it() {
        let cache = cache_over(Some("Reception"), None, due_at_once());
        cache.resolve(&number()).await.unwrap();
        // due a refresh, with the feed live: answered from L1
        let peeked = cache.peek(&number()).await.unwrap();
        assert_eq!((peeked.tier, peeked.stale), (Tier::L1, true));
        assert_eq!(cache.inner().reads(), 1, "peeking reads nothing");
        // with the feed down it is reread first: the source is the answer
        cache.set_confirmed(false);
        let peeked = cache.peek(&number()).await.unwrap();
        assert_eq!((peeked.tier, peeked.stale), (Tier::L3, false));
        // and with the source down too, the stale copy
        cache.inner().down.store(true, Ordering::SeqCst);
        let peeked = cache.peek(&number()).await.unwrap();
        assert_eq!((peeked.tier, peeked.stale), (Tier::L1, true));
        assert_eq!(peeked.route.unwrap().agent.name, "Reception");
    }
}
