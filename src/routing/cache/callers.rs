//! Callers: whether the caller is a known customer of the route's
//! organization, asked on every call that shows a caller id.
//!
//! Kept in L1 as numbers are, one entry per organization and phone, "not a
//! customer" included, and under the same rules: concurrent misses share
//! one read of the tiers below; a change from the change log (a customer
//! added, edited or removed) evicts the entry, bumps its stripe so that a
//! load racing it is not kept, and settles once the tiers below have
//! forgotten it too; an entry past its TTL is answered while the
//! invalidation feed is live and reread behind the answer; with the feed
//! down it is reread first, and answered stale (up to `max_stale`) if the
//! tiers below cannot be read.
//!
//! A "not a customer" entry lives as long as a customer's: adding a
//! customer is in the change log, which evicts it, so strangers who call
//! again do not reach the database either.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use moka::future::Cache;

use super::{
    settle::{stripe, Kind},
    stats, CacheSettings, RouteCache,
};
use crate::domain::{Customer, OrgId, ResolveError, Resolver, E164};

/// An organization and a caller's number.
pub(super) type CallerKey = (OrgId, E164);

/// What L1 keeps for a caller: the customer, or `None` for a stranger.
pub(super) type Caller = Option<Arc<Customer>>;

/// After a refresh behind an answer failed, the stale entry is not
/// refreshed again for this long (the store logs the outage meanwhile).
const REFRESH_BACKOFF: Duration = Duration::from_secs(1);

/// The callers' entries, kept (for stale-if-error) up to the maximum age.
pub(super) fn callers(settings: &CacheSettings) -> Cache<CallerKey, super::storage::Entry<Caller>> {
    Cache::builder()
        .max_capacity(settings.capacity)
        .time_to_live(settings.max_stale.max(settings.ttl))
        .build()
}

/// Reads of callers in flight, one per key, shared by every request that
/// waits for it; an entry lives only as long as its read.
pub(super) fn caller_reads(settings: &CacheSettings) -> Cache<CallerKey, Caller> {
    Cache::builder().max_capacity(settings.capacity).build()
}

impl<R: Resolver> RouteCache<R> {
    /// The caller as L1 answers it, reading the tiers below when it must.
    pub(super) async fn caller(&self, org_id: OrgId, phone: &E164) -> Result<Caller, ResolveError> {
        let started = Instant::now();
        let key = (org_id, phone.clone());
        let entry = self.callers.get(&key).await;
        if let Some(entry) = &entry {
            let now = Instant::now();
            let age = now.saturating_duration_since(entry.loaded_at);
            if self.fresh(entry, now) {
                self.count_caller_hit(started);
                return Ok(entry.value.clone());
            }
            if self.is_confirmed() && age < self.settings.max_stale {
                // past its TTL, but the feed would have evicted a change
                if entry.retry_after.is_none_or(|t| now >= t) {
                    self.refresh_caller_behind(key);
                }
                self.count_caller_hit(started);
                return Ok(entry.value.clone());
            }
        }
        metrics::counter!("switchboard_caller_cache_misses_total", "tier" => "l1").increment(1);
        match Box::pin(self.read_caller(key)).await {
            Ok(caller) => Ok(caller),
            Err(error) => match entry.filter(|e| e.loaded_at.elapsed() < self.settings.max_stale) {
                Some(stale) => {
                    stats::count_stale_caller();
                    Ok(stale.value)
                }
                None => Err(error),
            },
        }
    }

    /// What [`Self::caller`] would answer now, changing nothing: L1's
    /// entry while it is fresh, else the tiers below, peeked.
    pub(super) async fn peek_cached_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> Result<Caller, ResolveError> {
        let key = (org_id, phone.clone());
        match self.callers.get(&key).await {
            Some(entry) if self.fresh(&entry, Instant::now()) => Ok(entry.value),
            _ => Box::pin(self.inner.peek_caller(org_id, phone)).await,
        }
    }

    /// Reads a caller from the tiers below, once for every request waiting
    /// for it, and keeps it unless a change to it ran meanwhile.
    async fn read_caller(&self, key: CallerKey) -> Result<Caller, ResolveError> {
        let read = self
            .caller_reads
            .try_get_with(key.clone(), self.read_and_keep(key.clone()))
            .await
            .map_err(|e| (*e).clone());
        self.caller_reads.invalidate(&key).await;
        read
    }

    async fn read_and_keep(&self, key: CallerKey) -> Result<Caller, ResolveError> {
        let (org_id, phone) = (&key.0, &key.1);
        let stripe = stripe(Kind::Caller, &key);
        let started_at = self.snapshot();
        // while a change to it settles, the tiers below may still hold the
        // old copy: read the source, past them
        let caller = if self.settling[stripe].load(Ordering::Acquire) > 0 {
            self.inner.source().resolve_caller(*org_id, phone).await?
        } else {
            self.inner.resolve_caller(*org_id, phone).await?
        };
        if !self.unsettled(&started_at, &[stripe]) {
            let entry = super::storage::Entry::new(caller.clone(), Instant::now());
            self.callers.insert(key.clone(), entry).await;
            // an eviction may have run between the check and the insertion
            if self.changed_since(&started_at, &[stripe]) {
                self.callers.invalidate(&key).await;
            }
        }
        Ok(caller)
    }

    /// Rereads a caller past its TTL behind the answer just given, if a
    /// refresh slot is free (else a later call does).
    fn refresh_caller_behind(&self, key: CallerKey) {
        let Some(cache) = self.me.upgrade() else {
            return;
        };
        let Ok(slot) = self.refreshes.clone().try_acquire_owned() else {
            stats::refreshed("busy");
            return;
        };
        self.spawn(async move {
            let result = match cache.read_caller(key.clone()).await {
                Ok(_) => "kept",
                Err(_) => {
                    cache.back_off_caller(&key).await;
                    "failed"
                }
            };
            stats::refreshed(result);
            drop(slot);
        });
    }

    /// Keeps a caller's stale entry after a failed refresh, marked so that
    /// it is not refreshed again for a moment, unless a change evicted it.
    async fn back_off_caller(&self, key: &CallerKey) {
        let started_at = self.snapshot();
        let stripe = stripe(Kind::Caller, key);
        if let Some(mut entry) = self.callers.get(key).await {
            entry.retry_after = Some(Instant::now() + REFRESH_BACKOFF);
            self.callers.insert(key.clone(), entry).await;
            if self.changed_since(&started_at, &[stripe]) {
                self.callers.invalidate(key).await;
            }
        }
    }

    /// Evicts a caller from L1 (a change to it).
    pub(super) async fn forget_caller(&self, org_id: OrgId, phone: &E164) {
        self.callers.invalidate(&(org_id, phone.clone())).await;
    }

    fn count_caller_hit(&self, started: Instant) {
        self.caller_l1_hits.increment(1);
        self.caller_l1_lookup_seconds
            .record(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{atomic::Ordering, Arc},
        time::Duration,
    };

    use tokio::sync::Notify;
    use uuid::Uuid;

    use crate::{
        domain::{Customer, OrgId},
        routing::cache::{test_support::*, RouteCache},
    };

    fn org() -> OrgId {
        OrgId(Uuid::from_u128(1))
    }

    fn caller() -> E164 {
        E164::from_canonical("+14155550199").unwrap()
    }

    fn customer(name: &str) -> Customer {
        Customer {
            id: Uuid::from_u128(7),
            phone: caller(),
            name: Some(name.into()),
            email: None,
        }
    }

    fn add_customer(cache: &RouteCache<Table>, name: &str) {
        let mut customers = cache.inner().customers.lock().unwrap();
        customers.push((org(), customer(name)));
    }

    fn caller_reads(cache: &RouteCache<Table>) -> usize {
        cache.inner().caller_reads.load(Ordering::SeqCst)
    }

    fn name_of(found: Option<Arc<Customer>>) -> Option<String> {
        found.and_then(|c| c.name.clone())
    }

    /// A lookup of `caller()` at `org()`, in a task of its own.
    fn caller_in_task(cache: &Arc<RouteCache<Table>>) -> tokio::task::JoinHandle<Option<String>> {
        let cache = cache.clone();
        tokio::spawn(async move { name_of(cache.resolve_caller(org(), &caller()).await.unwrap()) })
    }

    #[tokio::test]
    async fn customers_and_strangers_are_read_once() {
        let cache = cache_over(None, None, settings());
        add_customer(&cache, "Ada");
        let stranger = E164::from_canonical("+14155550142").unwrap();
        for _ in 0..3 {
            let found = cache.resolve_caller(org(), &caller()).await.unwrap();
            assert_eq!(name_of(found).as_deref(), Some("Ada"));
            assert!(cache
                .resolve_caller(org(), &stranger)
                .await
                .unwrap()
                .is_none());
        }
        assert_eq!(caller_reads(&cache), 2, "one read each, then L1");
        // the same phone at another organization is another caller
        let other = OrgId(Uuid::from_u128(99));
        assert!(cache
            .resolve_caller(other, &caller())
            .await
            .unwrap()
            .is_none());
        assert_eq!(caller_reads(&cache), 3);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_read() {
        let gate = Arc::new(Notify::new());
        let cache = cache_over(None, Some(gate.clone()), settings());
        let waiting: Vec<_> = (0..50).map(|_| caller_in_task(&cache)).collect();
        // on this test's one thread, every task has asked by the time the
        // first read wakes it
        cache.inner().entered.notified().await;
        gate.notify_one();
        for task in waiting {
            assert_eq!(task.await.unwrap(), None);
        }
        assert_eq!(caller_reads(&cache), 1);
    }

    #[tokio::test]
    async fn a_customer_change_evicts_the_caller() {
        let cache = cache_over(None, None, settings());
        assert!(cache
            .resolve_caller(org(), &caller())
            .await
            .unwrap()
            .is_none());
        // the stranger becomes a customer, then is renamed, then removed
        for name in [Some("Ada"), Some("Ada Lovelace"), None] {
            {
                let mut customers = cache.inner().customers.lock().unwrap();
                customers.clear();
                customers.extend(name.map(|n| (org(), customer(n))));
            }
            cache.apply(&Change::Customer(org(), caller())).await;
            let found = cache.resolve_caller(org(), &caller()).await.unwrap();
            assert_eq!(name_of(found).as_deref(), name);
        }
        assert_eq!(caller_reads(&cache), 4);
    }

    #[tokio::test]
    async fn a_slow_read_racing_a_change_is_not_kept() {
        let gate = Arc::new(Notify::new());
        let cache = cache_over(None, Some(gate.clone()), settings());
        let slow = caller_in_task(&cache);
        cache.inner().entered.notified().await; // it read "a stranger"
        add_customer(&cache, "Ada");
        cache.apply(&Change::Customer(org(), caller())).await;
        gate.notify_one();
        assert_eq!(slow.await.unwrap(), None, "answered with what it read");
        // the next lookup reads again rather than trust the raced read
        let next = caller_in_task(&cache);
        tokio::time::timeout(Duration::from_secs(5), cache.inner().entered.notified())
            .await
            .expect("the raced read was not kept");
        gate.notify_one();
        assert_eq!(next.await.unwrap().as_deref(), Some("Ada"));
    }

    #[tokio::test]
    async fn a_stale_caller_is_served_when_the_source_is_down() {
        let cache = cache_over(None, None, distrustful());
        add_customer(&cache, "Ada");
        cache.resolve_caller(org(), &caller()).await.unwrap();
        cache.set_confirmed(false);
        cache.inner().down.store(true, Ordering::SeqCst);
        let found = cache.resolve_caller(org(), &caller()).await.unwrap();
        assert_eq!(name_of(found).as_deref(), Some("Ada"), "stale-if-error");
        assert_eq!(caller_reads(&cache), 2, "reread first, as unconfirmed");
        let unknown = E164::from_canonical("+14155550142").unwrap();
        assert!(
            cache.resolve_caller(org(), &unknown).await.is_err(),
            "nothing cached: the source's error"
        );
    }

    #[tokio::test]
    async fn a_caller_past_its_ttl_is_answered_and_reread_behind() {
        let cache = cache_over(None, None, due_at_once());
        cache.resolve_caller(org(), &caller()).await.unwrap();
        add_customer(&cache, "Ada");
        let found = cache.resolve_caller(org(), &caller()).await.unwrap();
        assert!(found.is_none(), "answered from L1 at once");
        cache.refreshes_done().await;
        assert_eq!(caller_reads(&cache), 2, "reread behind the answer");
    }

    #[tokio::test]
    async fn peeking_a_caller_changes_nothing() {
        let cache = cache_over(None, None, settings());
        cache.peek_caller(org(), &caller()).await.unwrap();
        cache.peek_caller(org(), &caller()).await.unwrap();
        assert_eq!(caller_reads(&cache), 2, "nothing kept");
        cache.resolve_caller(org(), &caller()).await.unwrap();
        cache.peek_caller(org(), &caller()).await.unwrap();
        assert_eq!(caller_reads(&cache), 3, "answered from L1");
    }
}
