//! L1: the in-process route cache in front of any [`Resolver`].
//!
//! What changes independently is cached separately: the number's binding
//! (number → org, agent, active flag), the agent, and the organization. A
//! change to an organization's settings is then one eviction, not one per
//! number of that organization.
//!
//! * Bounded by entry count, with a TTL as a safety net; unknown numbers are
//!   cached too (negative entries) with a short TTL, so scanners and
//!   misdials do not reach the database on every attempt.
//! * Concurrent misses for one number are coalesced into one load.
//! * Freshness comes from invalidations ([`RouteCache::apply`]), driven by
//!   the database's change log (`crate::invalidation`). While that feed is
//!   down, entries older than `unconfirmed_ttl` are not trusted.
//! * A change is applied when L1 evicts it; the tiers below (L2) forget it
//!   behind, and until they have, L1 reads what it names from the source
//!   ([`Resolver::source`]), past them.
//! * A route past its TTL is answered at once while the invalidation feed is
//!   live, and refreshed behind the answer ([`BACKGROUND_REFRESHES`] at a
//!   time): the TTL is a safety net for missed changes, and a request must
//!   not wait on the database for it. With the feed down it is reread first,
//!   once for every request waiting for it; the stale copy stays in place
//!   meanwhile, and answers all of them if the source cannot be read.
//! * A load that read a row before a change committed must not re-insert it
//!   after the change's eviction: every eviction bumps a generation counter
//!   for what it names (one of [`STRIPES`], by hash), and a load that sees
//!   the counter of anything it read move while it ran does not keep it (see
//!   [`RouteCache::resolve`]). Striped, so that a steady stream of changes
//!   to other agents does not keep every load from being cached.
//!
//! # Modules
//!
//! * `storage`: what L1 keeps (entries, their lifetimes) and what it alone
//!   knows about a number;
//! * `load`: misses, loaded from the tier below and coalesced, a whole route
//!   or only the part a change evicted;
//! * `settle`: the generations and the settling of changes, which keep a
//!   load from caching a copy older than a change;
//! * `invalidate`: applying changes, and flushing;
//! * `refresh`: refreshes behind answers, bounded;
//! * `stale`: stale-if-error, and the coalesced rereads of stale routes;
//! * `callers`: callers (customer or stranger) of an organization, kept
//!   like numbers;
//! * `ranges`: number ranges, held whole, for numbers no row provisions on
//!   their own;
//! * `directory`: every provisioned number, so that one nobody provisioned
//!   is answered from memory;
//! * `preload`: warm start;
//! * `snapshot`: the last-known-good copy of L1 on disk, restored by a
//!   replica that starts while the database cannot be read;
//! * `peek`: what `resolve` would answer, for explain;
//! * `stats`: metrics.
//!
//! [`BACKGROUND_REFRESHES`]: refresh::BACKGROUND_REFRESHES
//! [`STRIPES`]: settle::STRIPES

mod callers;
mod directory;
mod invalidate;
mod load;
mod peek;
mod preload;
mod ranges;
mod refresh;
mod settle;
pub mod snapshot;
mod stale;
mod stats;
mod storage;

pub use invalidate::SWAP_WITHIN;

use std::{
    collections::HashSet,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use moka::future::Cache;
use tokio::{runtime::Handle, sync::Semaphore};

use crate::domain::{
    Agent, AgentId, Customer, NumberRange, OrgId, Organization, Peeked, ResolveError, Resolver,
    Route, E164,
};

use self::{
    callers::{Caller, CallerKey},
    ranges::Ranges,
    refresh::BACKGROUND_REFRESHES,
    settle::STRIPES,
    storage::{Binding, Entry, Lookup},
};

/// L1 sizing and lifetimes.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most numbers held (agents and organizations are bounded by the same
    /// figure, and are far fewer). `0` turns L1 off: every lookup and peek
    /// goes to the tier below, and invalidations only pass through.
    pub capacity: u64,
    /// Safety-net lifetime of a positive entry.
    pub ttl: Duration,
    /// Lifetime of a "no such number" entry.
    pub negative_ttl: Duration,
    /// How long an entry is trusted while the invalidation feed is down.
    pub unconfirmed_ttl: Duration,
    /// Oldest entry served when the source cannot be read (stale-if-error);
    /// past it, the caller gets the source's error.
    pub max_stale: Duration,
}

/// The L1 cache around a [`Resolver`] (`R`, the next tier down).
pub struct RouteCache<R> {
    inner: R,
    settings: CacheSettings,
    numbers: Cache<E164, Entry<Option<Binding>>>,
    agents: Cache<AgentId, Entry<Arc<Agent>>>,
    organizations: Cache<OrgId, Entry<Arc<Organization>>>,
    /// Callers of each organization: the customer, or a stranger.
    callers: Cache<CallerKey, Entry<Caller>>,
    /// Reads of callers in flight, shared by the requests waiting for them.
    caller_reads: Cache<CallerKey, Caller>,
    /// Every number range, for numbers no row provisions on their own.
    ranges: Ranges,
    /// Every provisioned number, once loaded: the others are answered
    /// "no such number" without a lookup below.
    directory: directory::Directory,
    /// Bumped by every eviction (for warm start and stale-if-error, which
    /// only ask whether anything changed).
    generation: AtomicU64,
    /// Bumped by every eviction of a key in the stripe; see the module docs.
    stripes: [AtomicU64; STRIPES],
    /// Per stripe, the changes evicted from L1 and not yet from the tiers
    /// below: while any is, L1 reads what the stripe names from the source
    /// (the tiers below may still hold the old copy).
    settling: [AtomicU32; STRIPES],
    /// Whether the invalidation feed is connected (entries fully trusted).
    confirmed: AtomicBool,
    /// Agents and organizations being swapped for their new versions.
    swaps: invalidate::Swaps,
    /// The hit path's metric handles, registered once (finding a metric by
    /// name costs more than recording into it).
    l1_hits: metrics::Counter,
    l1_lookup_seconds: metrics::Histogram,
    caller_l1_hits: metrics::Counter,
    caller_l1_lookup_seconds: metrics::Histogram,
    directory_answers: metrics::Counter,
    /// This cache, for the tasks it spawns.
    me: Weak<Self>,
    /// The runtime the cache was made on, where those tasks run whichever
    /// thread starts them (the invalidation listener runs on one of its
    /// own); `None` if made outside any, then the caller's runtime.
    runtime: Option<Handle>,
    /// Slots for refreshes behind an answer ([`BACKGROUND_REFRESHES`]).
    refreshes: Arc<Semaphore>,
    /// Numbers being refreshed behind an answer: one refresh per number.
    refreshing: Mutex<HashSet<E164>>,
    /// Rereads of stale routes that must be checked before they are
    /// answered (the invalidation feed is down), coalesced per number. The
    /// stale entry stays in `numbers` meanwhile, so that every request that
    /// arrives during the reread can still fall back on it; an entry here
    /// lives only as long as its reread.
    rereads: Cache<E164, Option<Route>>,
}

impl<R: Resolver> RouteCache<R> {
    /// Shared from the start: refreshes behind an answer run as tasks of
    /// their own, holding the cache.
    pub fn new(inner: R, settings: CacheSettings) -> Arc<Self> {
        let settings_capacity = settings.capacity;
        let numbers = storage::numbers(&settings);
        let agents = storage::parts(&settings);
        let organizations = storage::parts(&settings);
        let callers = callers::callers(&settings);
        let caller_reads = callers::caller_reads(&settings);
        Arc::new_cyclic(|me| Self {
            inner,
            settings,
            numbers,
            agents,
            organizations,
            callers,
            caller_reads,
            ranges: Ranges::default(),
            directory: directory::Directory::default(),
            generation: AtomicU64::new(0),
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            settling: std::array::from_fn(|_| AtomicU32::new(0)),
            // Until the invalidation feed has connected and replayed, nothing
            // confirms that entries are current.
            confirmed: AtomicBool::new(false),
            swaps: Default::default(),
            l1_hits: metrics::counter!("switchboard_cache_hits_total", "tier" => "l1"),
            l1_lookup_seconds: metrics::histogram!("switchboard_cache_lookup_seconds", "tier" => "l1"),
            caller_l1_hits: metrics::counter!("switchboard_caller_cache_hits_total", "tier" => "l1"),
            caller_l1_lookup_seconds: metrics::histogram!("switchboard_caller_cache_lookup_seconds", "tier" => "l1"),
            directory_answers: metrics::counter!("switchboard_cache_directory_answers_total"),
            me: me.clone(),
            runtime: Handle::try_current().ok(),
            refreshes: Arc::new(Semaphore::new(BACKGROUND_REFRESHES)),
            refreshing: Mutex::new(HashSet::new()),
            rereads: Cache::builder().max_capacity(settings_capacity).build(),
        })
    }

    /// The next tier down.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Runs one of the cache's own tasks (see `runtime`).
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    /// Whether entries are confirmed by a live invalidation feed. When not,
    /// entries older than `unconfirmed_ttl` are treated as misses.
    pub fn set_confirmed(&self, confirmed: bool) {
        self.confirmed.store(confirmed, Ordering::Release);
    }

    /// Whether the invalidation feed is connected and caught up.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    /// Whether L1 keeps anything (a capacity of 0 turns it off).
    fn enabled(&self) -> bool {
        self.settings.capacity > 0
    }

    /// Numbers currently cached (approximate), for metrics.
    pub fn len(&self) -> u64 {
        self.numbers.entry_count()
    }

    /// Number ranges held.
    pub fn ranges_held(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What [`Resolver::resolve`] does when L1 has no fresh route: serve a
    /// stale one (rereading it first if it cannot be trusted), complete a
    /// binding, or load the route from the next tier.
    async fn resolve_missed(
        &self,
        number: &E164,
        lookup: Lookup,
        started: Instant,
    ) -> Result<Option<Route>, ResolveError> {
        match lookup {
            Lookup::Hit(route) => return Ok(route),
            Lookup::Stale(route, true) => {
                // a refresh failed moments ago (and said so in the log): do
                // not queue behind another
                stats::count_stale();
                return Ok(Some(route));
            }
            // provisioned by no row: the ranges are next (the caller's)
            Lookup::Miss if self.directory.rules_out(number) => {
                self.directory_answers.increment(1);
                self.count_hit(started);
                return Ok(None);
            }
            Lookup::Miss => {}
            // The binding is current but a change evicted its agent or
            // organization: reload only that part, once for all the numbers
            // that share it.
            Lookup::Partial(Some(binding)) => {
                stats::count_miss();
                let completed = self.complete(number, &binding).await?;
                stats::count_source_lookup(started);
                if completed.is_some() {
                    return Ok(completed);
                }
                // a part is gone, so the binding is outdated: reload whole
                self.numbers.invalidate(number).await;
            }
            // The binding itself is due a refresh: reload the route whole
            // (one joined query refills all three parts).
            Lookup::Partial(None) => self.numbers.invalidate(number).await,
            Lookup::Stale(route, false) => {
                let binding = self.numbers.get(number).await;
                if self.is_confirmed() && self.servable(binding.as_ref()) {
                    // Past its TTL, but the invalidation feed is live and
                    // has not evicted it: answer now, refresh behind.
                    self.count_hit(started);
                    self.refresh_behind(number);
                    return Ok(Some(route));
                }
                return self.reread_stale(number, route, binding, started).await;
            }
        }
        stats::count_miss();
        let result = self.load(number).await;
        stats::count_source_lookup(started);
        result
    }
}

impl<R: Resolver> Resolver for RouteCache<R> {
    type Source = R::Source;

    fn source(&self) -> &Self::Source {
        self.inner.source()
    }

    /// The number's own route, else its range's.
    async fn resolve(&self, number: &E164) -> Result<Option<Route>, ResolveError> {
        // The tiers below are reached through a box: their futures (a
        // Redis round trip, a pooled query, the coalescing around them)
        // take tens of kilobytes, and the hit path would otherwise carry
        // them, copied along with every request's future as it moves.
        let exact = if !self.enabled() {
            Box::pin(self.inner.resolve(number)).await
        } else {
            let started = Instant::now();
            match self.cached(number).await {
                Lookup::Hit(route) => {
                    self.count_hit(started);
                    Ok(route)
                }
                lookup => Box::pin(self.resolve_missed(number, lookup, started)).await,
            }
        };
        match exact {
            Ok(None) => Box::pin(self.resolve_in_range(number)).await,
            found => found,
        }
    }

    fn ranges(&self) -> impl Future<Output = Result<Vec<NumberRange>, ResolveError>> + Send {
        self.inner.ranges()
    }

    /// One part: the fresh cached copy, else reloaded alone (what
    /// [`RouteCache::complete`] uses for a binding whose part was evicted).
    fn resolve_agent(
        &self,
        id: AgentId,
    ) -> impl Future<Output = Result<Option<Arc<Agent>>, ResolveError>> + Send {
        self.resolve_part(id)
    }

    fn resolve_organization(
        &self,
        id: OrgId,
    ) -> impl Future<Output = Result<Option<Arc<Organization>>, ResolveError>> + Send {
        self.resolve_part(id)
    }

    async fn resolve_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> Result<Option<Arc<Customer>>, ResolveError> {
        if !self.enabled() {
            return Box::pin(self.inner.resolve_caller(org_id, phone)).await;
        }
        self.caller(org_id, phone).await
    }

    fn peek_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> impl Future<Output = Result<Option<Arc<Customer>>, ResolveError>> + Send {
        self.peek_cached_caller(org_id, phone)
    }

    /// L1's answer when `resolve` would serve it (fresh, or stale while a
    /// refresh backs off or cannot reach the tiers below), else the tiers
    /// below, peeked the same way. Plain `get`s: nothing is loaded,
    /// refreshed or evicted, so explaining a route does not change what the
    /// next call finds.
    async fn peek(&self, number: &E164) -> Result<Peeked, ResolveError> {
        let exact = self.peek_tiers(number).await?;
        self.peek_in_range(number, exact).await
    }
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::{test_support::*, CacheSettings};

    #[tokio::test]
    async fn a_capacity_of_zero_turns_l1_off() {
        let cache = cache_over(
            Some("Reception"),
            None,
            CacheSettings {
                capacity: 0,
                ..settings()
            },
        );
        for expected_reads in 1..=3 {
            let route = cache.resolve(&number()).await.unwrap().unwrap();
            assert_eq!(route.agent.name, "Reception");
            assert_eq!(cache.inner().reads(), expected_reads);
        }
        assert_eq!(cache.peek(&number()).await.unwrap().tier, Tier::L3);
        let preloaded = cache
            .preload(vec![route("+14155550100", "Reception")])
            .await;
        assert_eq!(preloaded, 0, "nothing is kept");
        cache.resolve(&number()).await.unwrap();
        assert_eq!(cache.inner().reads(), 5);
    }
}
