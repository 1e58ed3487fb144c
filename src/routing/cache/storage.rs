//! What L1 keeps: a number's binding, its agent and its organization, each
//! an [`Entry`] with the instant it was read and its share of the TTL; how
//! long moka keeps them; and what L1 alone knows about a number
//! ([`Lookup`]).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use moka::{future::Cache, Expiry};

use super::{CacheSettings, RouteCache};
use crate::domain::{AgentId, OrgId, Provisioned, Resolver, Route, E164};

/// A number's binding: what the number points at.
#[derive(Debug, Clone)]
pub(super) struct Binding {
    pub(super) number_active: bool,
    pub(super) org_id: OrgId,
    pub(super) agent_id: AgentId,
    /// The number's own row.
    pub(super) provisioned: Provisioned,
}

impl Binding {
    /// What `route`'s number points at.
    pub(super) fn of(route: &Route) -> Self {
        Binding {
            number_active: route.number_active,
            org_id: route.organization.id,
            agent_id: route.agent.id,
            provisioned: route.provisioned.clone(),
        }
    }
}

/// Entries loaded together (after a flush, every number is reloaded within
/// moments) would all fall due together one TTL later, and refresh in one
/// storm against the database: each entry's TTL is shortened by up to this
/// share.
const TTL_JITTER: f64 = 0.1;

/// The same for warm start, which loads every route in one go: its entries
/// fall due over the last half of the TTL. With a tenth, 100 000 preloaded
/// numbers would all reload within 30 s of each other (3 300 reads/s at the
/// default TTL), a storm that under load turns every refresh into a
/// timeout.
pub(super) const PRELOAD_TTL_SPREAD: f64 = 0.5;

/// Numbers entries as they are made, for their jitter.
static ENTRIES_MADE: AtomicU64 = AtomicU64::new(0);

/// A cached value and when it was read from the source.
#[derive(Debug, Clone)]
pub(super) struct Entry<T> {
    pub(super) value: T,
    pub(super) loaded_at: Instant,
    /// Set on a stale entry kept after a failed refresh: no new refresh
    /// before this instant.
    pub(super) retry_after: Option<Instant>,
    /// The share of the TTL this entry is fresh for, in `[1 - jitter, 1]`
    /// ([`TTL_JITTER`], [`PRELOAD_TTL_SPREAD`]): consecutive entries spread
    /// evenly over it.
    pub(super) ttl_share: f64,
}

impl<T> Entry<T> {
    pub(super) fn new(value: T, loaded_at: Instant) -> Self {
        Self::jittered(value, loaded_at, TTL_JITTER)
    }

    fn preloaded(value: T, loaded_at: Instant) -> Self {
        Self::jittered(value, loaded_at, PRELOAD_TTL_SPREAD)
    }

    fn jittered(value: T, loaded_at: Instant, jitter: f64) -> Self {
        // the golden-ratio sequence: any run of consecutive entries covers
        // the interval evenly, no random source needed
        let n = ENTRIES_MADE.fetch_add(1, Ordering::Relaxed);
        let spread = (n as f64 * 0.618_033_988_749_895).fract();
        Self {
            value,
            loaded_at,
            retry_after: None,
            ttl_share: 1.0 - jitter * spread,
        }
    }
}

/// Negative entries expire after `negative_ttl`, positive ones after `ttl`.
struct BindingExpiry {
    /// Positive entries: kept (for stale-if-error) up to the maximum age.
    max_age: Duration,
    negative_ttl: Duration,
}

impl Expiry<E164, Entry<Option<Binding>>> for BindingExpiry {
    fn expire_after_create(
        &self,
        _key: &E164,
        entry: &Entry<Option<Binding>>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if entry.value.is_some() {
            self.max_age
        } else {
            self.negative_ttl
        })
    }
}

/// The numbers' bindings, kept as [`BindingExpiry`] says.
pub(super) fn numbers(settings: &CacheSettings) -> Cache<E164, Entry<Option<Binding>>> {
    Cache::builder()
        .max_capacity(settings.capacity)
        .expire_after(BindingExpiry {
            max_age: settings.max_stale.max(settings.ttl),
            negative_ttl: settings.negative_ttl,
        })
        .build()
}

/// Agents or organizations, kept (for stale-if-error) up to the maximum age.
pub(super) fn parts<K, T>(settings: &CacheSettings) -> Cache<K, Entry<Arc<T>>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(settings.capacity)
        .time_to_live(settings.max_stale.max(settings.ttl))
        .build()
}

/// What L1 alone knows about a number.
pub(super) enum Lookup {
    /// Every part cached and trusted; `None` is a cached "no such number".
    Hit(Option<Route>),
    /// Every part cached, but past its TTL or unconfirmed: refresh it, and
    /// serve this copy if the refresh fails. `true` when a refresh failed
    /// moments ago and must not be retried yet.
    Stale(Route, bool),
    Miss,
    /// The binding is cached, its agent or organization is not (a change
    /// evicted it). The binding, when it is fresh: then only the missing
    /// part needs reloading.
    Partial(Option<Binding>),
}

impl<R: Resolver> RouteCache<R> {
    /// Fresh: within its TTL, and confirmed by a live invalidation feed (or
    /// younger than `unconfirmed_ttl`).
    pub(super) fn fresh<T>(&self, entry: &Entry<T>, now: Instant) -> bool {
        let age = now.saturating_duration_since(entry.loaded_at);
        age < self.settings.ttl.mul_f64(entry.ttl_share)
            && (self.confirmed.load(Ordering::Acquire) || age < self.settings.unconfirmed_ttl)
    }

    /// Whether a number's entry, past its TTL, is young enough to answer
    /// with (`max_stale`).
    pub(super) fn servable(&self, binding: Option<&Entry<Option<Binding>>>) -> bool {
        binding.is_some_and(|b| b.loaded_at.elapsed() < self.settings.max_stale)
    }

    /// The route from L1 alone.
    pub(super) async fn cached(&self, number: &E164) -> Lookup {
        let now = Instant::now();
        let Some(binding) = self.numbers.get(number).await else {
            return Lookup::Miss;
        };
        let Some(bound) = &binding.value else {
            // unknown numbers: never served past their own short TTL
            return if self.fresh(&binding, now) {
                Lookup::Hit(None)
            } else {
                Lookup::Miss
            };
        };
        let agent = self.agents.get(&bound.agent_id).await;
        let org = self.organizations.get(&bound.org_id).await;
        let (Some(agent), Some(org)) = (agent, org) else {
            return Lookup::Partial(self.fresh(&binding, now).then(|| bound.clone()));
        };
        let all_fresh =
            self.fresh(&binding, now) && self.fresh(&agent, now) && self.fresh(&org, now);
        let route = Route {
            number: number.clone(),
            number_active: bound.number_active,
            provisioned: bound.provisioned.clone(),
            organization: org.value,
            agent: agent.value,
        };
        if all_fresh {
            Lookup::Hit(Some(route))
        } else {
            let backing_off = binding.retry_after.is_some_and(|t| now < t);
            Lookup::Stale(route, backing_off)
        }
    }

    /// Caches the agent and organization of a route just read from the
    /// next tier, and makes the number's entry for it.
    pub(super) async fn keep_parts(&self, route: Option<&Route>) -> Entry<Option<Binding>> {
        let loaded_at = Instant::now();
        let binding = route.map(Binding::of);
        if let (Some(route), Some(binding)) = (route, &binding) {
            self.agents
                .insert(binding.agent_id, Entry::new(route.agent.clone(), loaded_at))
                .await;
            self.organizations
                .insert(
                    binding.org_id,
                    Entry::new(route.organization.clone(), loaded_at),
                )
                .await;
        }
        Entry::new(binding, loaded_at)
    }

    /// Caches a route read at `loaded_at` by warm start, its parts first.
    pub(super) async fn keep_preloaded(&self, route: Route, loaded_at: Instant) {
        let binding = Binding::of(&route);
        self.agents
            .insert(binding.agent_id, Entry::preloaded(route.agent, loaded_at))
            .await;
        self.organizations
            .insert(
                binding.org_id,
                Entry::preloaded(route.organization, loaded_at),
            )
            .await;
        self.numbers
            .insert(route.number, Entry::preloaded(Some(binding), loaded_at))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::{Entry, Instant, PRELOAD_TTL_SPREAD, TTL_JITTER};
    use crate::routing::cache::test_support::*;

    #[test]
    fn entries_made_together_fall_due_apart() {
        type Make = fn((), Instant) -> Entry<()>;
        let made: [(Make, f64); 2] = [
            (Entry::new, TTL_JITTER),
            (Entry::preloaded, PRELOAD_TTL_SPREAD),
        ];
        for (make, jitter) in made {
            let shares: Vec<f64> = (0..100)
                .map(|_| make((), Instant::now()).ttl_share)
                .collect();
            assert!(shares.iter().all(|s| (1.0 - jitter..=1.0).contains(s)));
            // every tenth of the jitter window holds some
            for tenth in 0..10 {
                let low = 1.0 - jitter * f64::from(tenth + 1) / 10.0;
                let window = low..low + jitter / 10.0;
                assert!(shares.iter().any(|s| window.contains(s)), "{window:?}");
            }
        }
    }

    #[tokio::test]
    async fn unknown_numbers_are_cached_as_absent() {
        let cache = cache_over(None, None, settings());
        assert!(cache.resolve(&number()).await.unwrap().is_none());
        assert!(cache.resolve(&number()).await.unwrap().is_none());
        assert_eq!(cache.inner().reads(), 1);
    }

    #[tokio::test]
    async fn entries_are_not_trusted_long_while_unconfirmed() {
        let cache = cache_over(Some("Reception"), None, distrustful());
        cache.resolve(&number()).await.unwrap();
        cache.resolve(&number()).await.unwrap();
        assert_eq!(cache.inner().reads(), 1);
        cache.set_confirmed(false);
        cache.resolve(&number()).await.unwrap();
        assert_eq!(cache.inner().reads(), 2, "unconfirmed entry reread");
    }
}
