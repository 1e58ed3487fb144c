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

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use moka::{future::Cache, Expiry};
use tokio::{runtime::Handle, sync::Semaphore};
use uuid::Uuid;

use crate::domain::{
    Agent, Change, Organization, Peeked, ResolveError, Resolver, Route, Tier, E164,
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

/// Generation counters, one per stripe of keys; see the module docs.
const STRIPES: usize = 64;

/// The stripes' counters when a load started.
type Snapshot = [u64; STRIPES];

/// Which kind of key a stripe index is for (numbers, agents and
/// organizations hash apart).
#[derive(Hash)]
enum Kind {
    Number,
    Agent,
    Organization,
}

/// The stripe of a key of `kind`.
fn stripe(kind: Kind, key: &impl std::hash::Hash) -> usize {
    use std::hash::BuildHasher;
    // unseeded: a key lands in the same stripe every time
    let hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    (hasher.hash_one((kind, key)) % STRIPES as u64) as usize
}

/// After a failed refresh, a stale entry is served without retrying the
/// source for this long, so an outage does not cost every call a timeout.
const STALE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Most routes refreshed behind their answers at once. Entries that fall
/// due together (a warm start's, a flush's) become a bounded trickle of
/// reads instead of one per entry at once; a route that finds every slot
/// taken is answered from L1 all the same, and refreshed by a later lookup.
pub const BACKGROUND_REFRESHES: usize = 4;

/// A number's binding: what the number points at.
#[derive(Debug, Clone)]
struct Binding {
    number_active: bool,
    org_id: Uuid,
    agent_id: Uuid,
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
const PRELOAD_TTL_SPREAD: f64 = 0.5;

/// Numbers entries as they are made, for their jitter.
static ENTRIES_MADE: AtomicU64 = AtomicU64::new(0);

/// A cached value and when it was read from the source.
#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    loaded_at: Instant,
    /// Set on a stale entry kept after a failed refresh: no new refresh
    /// before this instant.
    retry_after: Option<Instant>,
    /// The share of the TTL this entry is fresh for, in `[1 - jitter, 1]`
    /// ([`TTL_JITTER`], [`PRELOAD_TTL_SPREAD`]): consecutive entries spread
    /// evenly over it.
    ttl_share: f64,
}

impl<T> Entry<T> {
    fn new(value: T, loaded_at: Instant) -> Self {
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

/// What L1 alone knows about a number.
enum Lookup {
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

/// Why a coalesced reload of one agent or organization did not produce a
/// value to cache.
#[derive(Debug)]
enum PartError<T> {
    /// The source failed; every waiter gets the error.
    Source(ResolveError),
    /// The source has no such part any more.
    Gone,
    /// An invalidation ran while the source was read: the value answers the
    /// requests that waited for it, but is not cached.
    Raced(Arc<T>),
}

/// Why a coalesced load did not produce a value to cache.
#[derive(Debug)]
enum LoadError {
    /// The source failed; every waiter gets the error.
    Source(ResolveError),
    /// An invalidation ran while the source was read: the result answers
    /// the requests that waited for it, but is not cached.
    Raced(Option<Route>),
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

/// The L1 cache around a [`Resolver`] (`R`, the next tier down).
pub struct RouteCache<R> {
    inner: R,
    settings: CacheSettings,
    numbers: Cache<E164, Entry<Option<Binding>>>,
    agents: Cache<Uuid, Entry<Arc<Agent>>>,
    organizations: Cache<Uuid, Entry<Arc<Organization>>>,
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
    /// The hit path's metric handles, registered once (finding a metric by
    /// name costs more than recording into it).
    l1_hits: metrics::Counter,
    l1_lookup_seconds: metrics::Histogram,
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
        let numbers = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(BindingExpiry {
                max_age: settings.max_stale.max(settings.ttl),
                negative_ttl: settings.negative_ttl,
            })
            .build();
        let agents = Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(settings.max_stale.max(settings.ttl))
            .build();
        let organizations = Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(settings.max_stale.max(settings.ttl))
            .build();
        Arc::new_cyclic(|me| Self {
            inner,
            settings,
            numbers,
            agents,
            organizations,
            generation: AtomicU64::new(0),
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            settling: std::array::from_fn(|_| AtomicU32::new(0)),
            // Until the invalidation feed has connected and replayed, nothing
            // confirms that entries are current.
            confirmed: AtomicBool::new(false),
            l1_hits: metrics::counter!("switchboard_cache_hits_total", "tier" => "l1"),
            l1_lookup_seconds: metrics::histogram!("switchboard_cache_lookup_seconds", "tier" => "l1"),
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

    /// Evicts what `change` affects, here and in the tiers below. Returns
    /// once L1 has evicted it, the change applied: from then on no answer
    /// comes from a copy older than it. The tiers below (a Redis write)
    /// follow in a task of their own; until they have, L1 reads what the
    /// change names from the source, past them. With L1 off, returns once
    /// the tiers below have evicted it.
    pub async fn apply(&self, change: &Change) {
        if !self.enabled() {
            self.inner.invalidate(change).await;
            return;
        }
        let stripe = match change {
            Change::Number(number) => stripe(Kind::Number, number),
            Change::Agent(id) => stripe(Kind::Agent, id),
            Change::Organization(id) => stripe(Kind::Organization, id),
        };
        let Some(cache) = self.me.upgrade() else {
            return; // being dropped: nothing left to keep fresh
        };
        // settling first: a load that sees the stripe's bump sees this too
        self.settling[stripe].fetch_add(1, Ordering::AcqRel);
        let settled = Settled { cache, stripe };
        self.bump(stripe);
        match change {
            Change::Number(number) => self.numbers.invalidate(number).await,
            Change::Agent(id) => self.agents.invalidate(id).await,
            Change::Organization(id) => self.organizations.invalidate(id).await,
        }
        let change = change.clone();
        self.spawn(async move {
            settled.cache.inner.invalidate(&change).await;
            drop(settled);
        });
    }

    /// Runs one of the cache's own tasks (see `runtime`).
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    /// Marks an eviction in `stripe`, for the loads running to see.
    fn bump(&self, stripe: usize) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.stripes[stripe].fetch_add(1, Ordering::AcqRel);
    }

    /// A change in `stripe` has been evicted from the tiers below too. The
    /// bump comes first: a load that read the tiers below while the change
    /// was settling, and checks only now, sees that it raced.
    fn settle(&self, stripe: usize) {
        self.bump(stripe);
        self.settling[stripe].fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether a change to anything in `stripes` is settling, or ran since
    /// `snapshot`: what a load read from the tier below may be older than
    /// it.
    fn unsettled(&self, snapshot: &Snapshot, stripes: &[usize]) -> bool {
        self.changed_since(snapshot, stripes)
            || stripes
                .iter()
                .any(|&i| self.settling[i].load(Ordering::Acquire) > 0)
    }

    /// Evicts everything: for when changes may have been missed.
    pub fn flush(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for stripe in &self.stripes {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
        self.numbers.invalidate_all();
        self.agents.invalidate_all();
        self.organizations.invalidate_all();
        metrics::counter!("switchboard_cache_flushes_total").increment(1);
    }

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
            let binding = Binding {
                number_active: route.number_active,
                org_id: route.organization.id,
                agent_id: route.agent.id,
            };
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
            inserted += 1;
        }
        if self.generation.load(Ordering::Acquire) != started_at {
            // the last insertions may have raced the eviction
            self.flush();
            return 0;
        }
        inserted
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

    /// Every stripe's counter now, for a load to compare against.
    fn snapshot(&self) -> Snapshot {
        std::array::from_fn(|i| self.stripes[i].load(Ordering::Acquire))
    }

    /// Whether any of `stripes` moved since `snapshot`.
    fn changed_since(&self, snapshot: &Snapshot, stripes: &[usize]) -> bool {
        stripes
            .iter()
            .any(|&i| self.stripes[i].load(Ordering::Acquire) != snapshot[i])
    }

    /// Whether L1 keeps anything (a capacity of 0 turns it off).
    fn enabled(&self) -> bool {
        self.settings.capacity > 0
    }

    /// Numbers currently cached (approximate), for metrics.
    pub fn len(&self) -> u64 {
        self.numbers.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fresh: within its TTL, and confirmed by a live invalidation feed (or
    /// younger than `unconfirmed_ttl`).
    fn fresh<T>(&self, entry: &Entry<T>, now: Instant) -> bool {
        let age = now.saturating_duration_since(entry.loaded_at);
        age < self.settings.ttl.mul_f64(entry.ttl_share)
            && (self.confirmed.load(Ordering::Acquire) || age < self.settings.unconfirmed_ttl)
    }

    /// Whether a number's entry, past its TTL, is young enough to answer
    /// with (`max_stale`).
    fn servable(&self, binding: Option<&Entry<Option<Binding>>>) -> bool {
        binding.is_some_and(|b| b.loaded_at.elapsed() < self.settings.max_stale)
    }

    /// The route from L1 alone.
    async fn cached(&self, number: &E164) -> Lookup {
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

    /// Reads the route from the next tier, coalescing concurrent misses for
    /// the same number into one read, and caches its parts unless an
    /// invalidation ran meanwhile.
    async fn load(&self, number: &E164) -> Result<Option<Route>, ResolveError> {
        let started_at = self.snapshot();
        let loaded = self
            .numbers
            .try_get_with_by_ref(number, async {
                match self.read_below(number, &started_at).await {
                    Ok(Some(route)) => Ok(self.keep_parts(route.as_ref()).await),
                    // answered from the source, not kept
                    Ok(None) => match self.inner.source().resolve(number).await {
                        Ok(route) => Err(LoadError::Raced(route)),
                        Err(error) => Err(LoadError::Source(error)),
                    },
                    Err(error) => Err(LoadError::Source(error)),
                }
            })
            .await;
        let (route, parts) = match loaded {
            Ok(entry) => (None, entry.value.map(|b| (b.agent_id, b.org_id))),
            Err(error) => match &*error {
                LoadError::Source(e) => return Err(e.clone()),
                LoadError::Raced(route) => (Some(route.clone()), None),
            },
        };
        self.undo_if_raced(number, parts, &started_at).await;
        match route {
            Some(raced) => Ok(raced),
            // Assemble from what was just cached; if a change evicted a
            // part in the meantime, ask the source directly.
            None => match self.cached(number).await {
                // just loaded: current even where a zero TTL calls it stale
                Lookup::Hit(route) => Ok(route),
                Lookup::Stale(route, _) => Ok(Some(route)),
                Lookup::Miss | Lookup::Partial(_) => {
                    match self.read_below(number, &self.snapshot()).await? {
                        Some(route) => Ok(route),
                        None => self.inner.source().resolve(number).await,
                    }
                }
            },
        }
    }

    /// `number`'s route from the tier below, for L1 to keep; `None` where a
    /// change to anything it names is settling, or ran since `started_at`:
    /// the tier below may have answered with the copy the change replaces.
    /// An answer then comes from the source, and is not kept.
    async fn read_below(
        &self,
        number: &E164,
        started_at: &Snapshot,
    ) -> Result<Option<Option<Route>>, ResolveError> {
        if self.unsettled(started_at, &read_stripes(number, None)) {
            return Ok(None);
        }
        let route = self.inner.resolve(number).await?;
        let stripes = read_stripes(number, parts_of(route.as_ref()));
        Ok((!self.unsettled(started_at, &stripes)).then_some(route))
    }
}

impl<R: Resolver> RouteCache<R> {
    /// Caches the agent and organization of a route just read from the
    /// next tier, and makes the number's entry for it.
    async fn keep_parts(&self, route: Option<&Route>) -> Entry<Option<Binding>> {
        let loaded_at = Instant::now();
        let binding = route.map(|route| Binding {
            number_active: route.number_active,
            org_id: route.organization.id,
            agent_id: route.agent.id,
        });
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

    /// An eviction may have run between a load's check and its insertions:
    /// if anything it read changed since `started_at`, drop what it cached,
    /// the parts included. Evicting more than needed costs a reload;
    /// keeping a stale entry would not be safe. Returns whether it did.
    async fn undo_if_raced(
        &self,
        number: &E164,
        parts: Option<(Uuid, Uuid)>,
        started_at: &Snapshot,
    ) -> bool {
        if !self.changed_since(started_at, &read_stripes(number, parts)) {
            return false;
        }
        self.numbers.invalidate(number).await;
        if let Some((agent_id, org_id)) = parts {
            self.agents.invalidate(&agent_id).await;
            self.organizations.invalidate(&org_id).await;
        }
        true
    }

    /// Starts refreshing `number`'s route behind the answer just given from
    /// L1, unless it is being refreshed already or every slot is taken.
    fn refresh_behind(&self, number: &E164) {
        let Some(cache) = self.me.upgrade() else {
            return;
        };
        let mut refreshing = self.refreshing.lock().expect("refresh set poisoned");
        if refreshing.contains(number) {
            return;
        }
        let Ok(slot) = self.refreshes.clone().try_acquire_owned() else {
            refreshed("busy");
            return;
        };
        refreshing.insert(number.clone());
        drop(refreshing);
        let number = number.clone();
        self.spawn(async move {
            // the number is released even if the refresh panics
            let _refreshing = Refreshing {
                set: &cache.refreshing,
                number: &number,
            };
            refreshed(cache.refresh(&number).await);
            drop(slot);
        });
    }

    /// Rereads `number`'s route from the next tier and replaces its
    /// entries, unless a change to anything it read ran meanwhile (then
    /// the next lookup reloads it). If the source is unreachable, the stale
    /// copy stays, and is not refreshed again for a moment. Returns how it
    /// went, for `switchboard_cache_background_refreshes_total`.
    async fn refresh(&self, number: &E164) -> &'static str {
        let started_at = self.snapshot();
        let generation = self.generation.load(Ordering::Acquire);
        match self.read_below(number, &started_at).await {
            Ok(None) => "raced",
            Ok(Some(route)) => {
                let parts = parts_of(route.as_ref());
                let entry = self.keep_parts(route.as_ref()).await;
                self.numbers.insert(number.clone(), entry).await;
                if self.undo_if_raced(number, parts, &started_at).await {
                    "raced"
                } else {
                    "kept"
                }
            }
            // the store logs the outage; this is counted as "failed"
            Err(_) => {
                if let Some(binding) = self.numbers.get(number).await {
                    self.keep_stale(number, binding, generation).await;
                }
                "failed"
            }
        }
    }

    /// Keeps a stale binding after its refresh failed, not to be retried
    /// for [`STALE_RETRY_AFTER`], unless an eviction ran since `generation`.
    async fn keep_stale(&self, number: &E164, binding: Entry<Option<Binding>>, generation: u64) {
        if self.generation.load(Ordering::Acquire) == generation {
            let kept = Entry {
                retry_after: Some(Instant::now() + STALE_RETRY_AFTER),
                ..binding
            };
            self.numbers.insert(number.clone(), kept).await;
        }
    }

    /// Counts a lookup L1 answered.
    fn count_hit(&self, started: Instant) {
        self.l1_hits.increment(1);
        self.l1_lookup_seconds
            .record(started.elapsed().as_secs_f64());
    }

    /// Waits until no refresh behind an answer is running.
    #[cfg(test)]
    async fn refreshes_done(&self) {
        let all = u32::try_from(BACKGROUND_REFRESHES).expect("a few slots");
        drop(
            self.refreshes
                .acquire_many(all)
                .await
                .expect("never closed"),
        );
    }

    /// The route of a current binding whose agent or organization a change
    /// evicted, reloading only what is missing. `None` when a part no longer
    /// exists.
    async fn complete(
        &self,
        number: &E164,
        binding: &Binding,
    ) -> Result<Option<Route>, ResolveError> {
        let agent = self.resolve_agent(binding.agent_id).await?;
        let organization = self.resolve_organization(binding.org_id).await?;
        Ok(agent.zip(organization).map(|(agent, organization)| Route {
            number: number.clone(),
            number_active: binding.number_active,
            organization,
            agent,
        }))
    }

    /// One agent or organization: the fresh cached copy, else loaded from
    /// the next tier (`below`), concurrent reloads of one id coalesced, and
    /// cached unless an invalidation ran meanwhile (as in [`Self::load`]);
    /// from the `source` while a change to it settles or if one raced the
    /// load (as in [`Self::read_below`]).
    async fn part<T: Send + Sync + 'static>(
        &self,
        kind: Kind,
        cache: &Cache<Uuid, Entry<Arc<T>>>,
        id: Uuid,
        below: impl std::future::Future<Output = Result<Option<Arc<T>>, ResolveError>>,
        source: impl std::future::Future<Output = Result<Option<Arc<T>>, ResolveError>>,
    ) -> Result<Option<Arc<T>>, ResolveError> {
        if let Some(entry) = cache.get(&id).await {
            if self.fresh(&entry, Instant::now()) {
                return Ok(Some(entry.value));
            }
            cache.invalidate(&id).await;
        }
        let stripes = [stripe(kind, &id)];
        let started_at = self.snapshot();
        let loaded = cache
            .try_get_with(id, async {
                if !self.unsettled(&started_at, &stripes) {
                    let value = below.await.map_err(PartError::Source)?;
                    if !self.unsettled(&started_at, &stripes) {
                        return Ok(Entry::new(value.ok_or(PartError::Gone)?, Instant::now()));
                    }
                }
                let value = source
                    .await
                    .map_err(PartError::Source)?
                    .ok_or(PartError::Gone)?;
                Err(PartError::Raced(value))
            })
            .await;
        let value = match loaded {
            Ok(entry) => Some(entry.value),
            Err(error) => match &*error {
                PartError::Source(e) => return Err(e.clone()),
                PartError::Gone => None,
                PartError::Raced(value) => Some(value.clone()),
            },
        };
        if self.changed_since(&started_at, &stripes) {
            cache.invalidate(&id).await;
        }
        Ok(value)
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
                count_stale();
                return Ok(Some(route));
            }
            Lookup::Miss => {}
            // The binding is current but a change evicted its agent or
            // organization: reload only that part, once for all the numbers
            // that share it.
            Lookup::Partial(Some(binding)) => {
                metrics::counter!("switchboard_cache_misses_total", "tier" => "l1").increment(1);
                let completed = self.complete(number, &binding).await?;
                metrics::histogram!("switchboard_cache_lookup_seconds", "tier" => "source")
                    .record(started.elapsed().as_secs_f64());
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
        metrics::counter!("switchboard_cache_misses_total", "tier" => "l1").increment(1);
        let result = self.load(number).await;
        metrics::histogram!("switchboard_cache_lookup_seconds", "tier" => "source")
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// A stale route that must be checked against the tiers below before it
    /// is answered (the invalidation feed is down, or the copy is past the
    /// maximum age): reread it, one reread per number however many requests
    /// wait for it. The stale entry stays where it is until the reread
    /// replaces it, so a request arriving meanwhile finds it too and waits
    /// for the same reread; if the source is unreachable, each of them is
    /// answered from it (stale-if-error, up to the maximum age), and it is
    /// not reread again for a moment.
    async fn reread_stale(
        &self,
        number: &E164,
        route: Route,
        binding: Option<Entry<Option<Binding>>>,
        started: Instant,
    ) -> Result<Option<Route>, ResolveError> {
        metrics::counter!("switchboard_cache_misses_total", "tier" => "l1").increment(1);
        let generation = self.generation.load(Ordering::Acquire);
        let started_at = self.snapshot();
        let reread = self
            .rereads
            .try_get_with_by_ref(number, async {
                match self.read_below(number, &started_at).await? {
                    Some(read) => {
                        let parts = parts_of(read.as_ref());
                        let entry = self.keep_parts(read.as_ref()).await;
                        self.numbers.insert(number.clone(), entry).await;
                        self.undo_if_raced(number, parts, &started_at).await;
                        Ok(read)
                    }
                    // a change to what it names is settling: the source's
                    // answer, not kept (as in `load`)
                    None => self.inner.source().resolve(number).await,
                }
            })
            .await;
        // the answer is for the requests that waited for it, not a cache
        self.rereads.invalidate(number).await;
        metrics::histogram!("switchboard_cache_lookup_seconds", "tier" => "source")
            .record(started.elapsed().as_secs_f64());
        match reread {
            Ok(read) => Ok(read),
            // Stale-if-error: the source is unreachable, the copy is within
            // the maximum age. Keep it, and do not retry for a moment.
            Err(error) => match (&*error, binding) {
                (ResolveError::Timeout(_) | ResolveError::Unavailable(_), Some(binding))
                    if self.servable(Some(&binding)) =>
                {
                    self.keep_stale(number, binding, generation).await;
                    count_stale();
                    Ok(Some(route))
                }
                _ => Err((*error).clone()),
            },
        }
    }
}

impl<R: Resolver> Resolver for RouteCache<R> {
    type Source = R::Source;

    fn source(&self) -> &Self::Source {
        self.inner.source()
    }

    async fn resolve(&self, number: &E164) -> Result<Option<Route>, ResolveError> {
        // The tiers below are reached through a box: their futures (a
        // Redis round trip, a pooled query, the coalescing around them)
        // take tens of kilobytes, and the hit path would otherwise carry
        // them, copied along with every request's future as it moves.
        if !self.enabled() {
            return Box::pin(self.inner.resolve(number)).await;
        }
        let started = Instant::now();
        match self.cached(number).await {
            Lookup::Hit(route) => {
                self.count_hit(started);
                Ok(route)
            }
            lookup => Box::pin(self.resolve_missed(number, lookup, started)).await,
        }
    }

    /// One part: the fresh cached copy, else reloaded alone (what
    /// [`RouteCache::complete`] uses for a binding whose part was evicted).
    async fn resolve_agent(&self, id: Uuid) -> Result<Option<Arc<Agent>>, ResolveError> {
        if !self.enabled() {
            return self.inner.resolve_agent(id).await;
        }
        self.part(
            Kind::Agent,
            &self.agents,
            id,
            self.inner.resolve_agent(id),
            self.inner.source().resolve_agent(id),
        )
        .await
    }

    async fn resolve_organization(
        &self,
        id: Uuid,
    ) -> Result<Option<Arc<Organization>>, ResolveError> {
        if !self.enabled() {
            return self.inner.resolve_organization(id).await;
        }
        self.part(
            Kind::Organization,
            &self.organizations,
            id,
            self.inner.resolve_organization(id),
            self.inner.source().resolve_organization(id),
        )
        .await
    }

    /// L1's answer when `resolve` would serve it (fresh, or stale while a
    /// refresh backs off or cannot reach the tiers below), else the tiers
    /// below, peeked the same way. Plain `get`s: nothing is loaded,
    /// refreshed or evicted, so explaining a route does not change what the
    /// next call finds.
    async fn peek(&self, number: &E164) -> Result<Peeked, ResolveError> {
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

/// The stripes of what a read of `number` touched (its agent and
/// organization, when found): a change to any of them makes it stale.
fn read_stripes(number: &E164, parts: Option<(Uuid, Uuid)>) -> Vec<usize> {
    let mut stripes = vec![stripe(Kind::Number, number)];
    if let Some((agent_id, org_id)) = parts {
        stripes.push(stripe(Kind::Agent, &agent_id));
        stripes.push(stripe(Kind::Organization, &org_id));
    }
    stripes
}

/// A route's agent and organization ids.
fn parts_of(route: Option<&Route>) -> Option<(Uuid, Uuid)> {
    route.map(|r| (r.agent.id, r.organization.id))
}

/// Settles a change's stripe when dropped: however the invalidation of the
/// tiers below ends, L1 does not bypass them for ever.
struct Settled<R: Resolver> {
    cache: Arc<RouteCache<R>>,
    stripe: usize,
}

impl<R: Resolver> Drop for Settled<R> {
    fn drop(&mut self) {
        self.cache.settle(self.stripe);
    }
}

/// Takes a number off the refreshing set when its refresh ends, however it
/// ends.
struct Refreshing<'a> {
    set: &'a Mutex<HashSet<E164>>,
    number: &'a E164,
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(self.number);
        }
    }
}

fn refreshed(result: &'static str) {
    metrics::counter!("switchboard_cache_background_refreshes_total", "result" => result)
        .increment(1);
}

/// Counts a stale route served. Not logged: during an outage that would be
/// a line per call; the store logs the outage (telemetry::outage).
fn count_stale() {
    metrics::counter!("switchboard_cache_stale_served_total").increment(1);
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    use tokio::sync::Notify;

    use super::*;

    /// The next tier down, in memory: a route table the test edits, a read
    /// counter, and an optional gate that holds reads until released.
    #[derive(Default)]
    struct Table {
        routes: Mutex<Vec<Route>>,
        reads: AtomicUsize,
        /// Reads of one agent or organization.
        part_reads: AtomicUsize,
        /// When set, reads fail as if the database were down.
        down: std::sync::atomic::AtomicBool,
        gate: Option<Arc<Notify>>,
        entered: Arc<Notify>,
    }

    impl Resolver for Table {
        type Source = Self;

        fn source(&self) -> &Self {
            self
        }

        async fn resolve(&self, number: &E164) -> Result<Option<Route>, ResolveError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let found = self
                .routes
                .lock()
                .unwrap()
                .iter()
                .find(|r| &r.number == number)
                .cloned();
            self.entered.notify_one();
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(ResolveError::Unavailable("connection refused".into()));
            }
            Ok(found)
        }

        async fn resolve_agent(&self, id: Uuid) -> Result<Option<Arc<Agent>>, ResolveError> {
            self.part_reads.fetch_add(1, Ordering::SeqCst);
            let routes = self.routes.lock().unwrap();
            Ok(routes
                .iter()
                .find(|r| r.agent.id == id)
                .map(|r| r.agent.clone()))
        }

        async fn resolve_organization(
            &self,
            id: Uuid,
        ) -> Result<Option<Arc<Organization>>, ResolveError> {
            self.part_reads.fetch_add(1, Ordering::SeqCst);
            let routes = self.routes.lock().unwrap();
            Ok(routes
                .iter()
                .find(|r| r.organization.id == id)
                .map(|r| r.organization.clone()))
        }
    }

    fn route(number: &str, agent_name: &str) -> Route {
        Route {
            number: E164::from_canonical(number).unwrap(),
            number_active: true,
            organization: Arc::new(Organization {
                id: Uuid::from_u128(1),
                slug: "acme".into(),
                name: "Acme".into(),
                plan_tier: crate::domain::PlanTier::Pro,
                settings: Default::default(),
                concurrency_limit: None,
                is_active: true,
            }),
            agent: Arc::new(Agent {
                id: Uuid::from_u128(2),
                name: agent_name.into(),
                voice_id: "v".into(),
                llm_config: Default::default(),
                is_active: true,
            }),
        }
    }

    fn settings() -> CacheSettings {
        CacheSettings {
            capacity: 1000,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            unconfirmed_ttl: Duration::from_secs(60),
            max_stale: Duration::from_secs(600),
        }
    }

    fn number() -> E164 {
        E164::from_canonical("+14155550100").unwrap()
    }

    /// A confirmed cache over a table holding `number()` → `agent_name`
    /// (nothing when `None`), reads held at `gate` when given.
    fn cache_over(
        agent_name: Option<&str>,
        gate: Option<Arc<Notify>>,
        settings: CacheSettings,
    ) -> Arc<RouteCache<Table>> {
        let table = Table {
            gate,
            ..Default::default()
        };
        if let Some(name) = agent_name {
            table
                .routes
                .lock()
                .unwrap()
                .push(route("+14155550100", name));
        }
        let cache = RouteCache::new(table, settings);
        cache.set_confirmed(true);
        cache
    }

    #[tokio::test]
    async fn hits_do_not_read_the_source_and_misses_are_coalesced() {
        let gate = Arc::new(Notify::new());
        let cache = cache_over(Some("Reception"), Some(gate.clone()), settings());

        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.resolve(&number()).await })
            })
            .collect();
        cache.inner().entered.notified().await;
        gate.notify_waiters();
        for waiter in waiters {
            // late arrivals may find the gate closed again: keep it open
            gate.notify_waiters();
            assert_eq!(
                waiter.await.unwrap().unwrap().unwrap().agent.name,
                "Reception"
            );
        }
        assert_eq!(
            cache.inner().reads.load(Ordering::SeqCst),
            1,
            "100 misses, one read"
        );

        for _ in 0..10 {
            cache.resolve(&number()).await.unwrap();
        }
        assert_eq!(
            cache.inner().reads.load(Ordering::SeqCst),
            1,
            "hits read nothing"
        );
    }

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
            assert_eq!(cache.inner().reads.load(Ordering::SeqCst), expected_reads);
        }
        assert_eq!(cache.peek(&number()).await.unwrap().tier, Tier::L3);
        let preloaded = cache
            .preload(vec![route("+14155550100", "Reception")])
            .await;
        assert_eq!(preloaded, 0, "nothing is kept");
        cache.resolve(&number()).await.unwrap();
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn peeking_reads_the_tiers_without_filling_or_evicting() {
        let cache = cache_over(Some("Reception"), None, settings());
        // cold: the source answers each time, and nothing is cached
        for _ in 0..2 {
            let peeked = cache.peek(&number()).await.unwrap();
            assert_eq!(peeked.tier, Tier::L3);
            assert_eq!(peeked.route.unwrap().agent.name, "Reception");
        }
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), 2);
        cache.resolve(&number()).await.unwrap();
        let peeked = cache.peek(&number()).await.unwrap();
        assert_eq!((peeked.tier, peeked.stale), (Tier::L1, false));
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), 3);
        // a resolve after the peeks still hits: nothing was evicted
        cache.resolve(&number()).await.unwrap();
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), 3);

        let unknown = E164::from_canonical("+14155550199").unwrap();
        assert_eq!(cache.peek(&unknown).await.unwrap().tier, Tier::L3);
        cache.resolve(&unknown).await.unwrap();
        let peeked = cache.peek(&unknown).await.unwrap();
        assert_eq!(peeked.tier, Tier::L1, "the negative entry answers");
        assert!(peeked.route.is_none());
    }

    #[tokio::test]
    async fn a_stale_entry_is_peeked_as_resolve_would_serve_it() {
        let cache = cache_over(
            Some("Reception"),
            None,
            CacheSettings {
                ttl: Duration::ZERO,
                ..settings()
            },
        );
        cache.resolve(&number()).await.unwrap();
        // due a refresh, with the feed live: answered from L1
        let peeked = cache.peek(&number()).await.unwrap();
        assert_eq!((peeked.tier, peeked.stale), (Tier::L1, true));
        assert_eq!(
            cache.inner().reads.load(Ordering::SeqCst),
            1,
            "peeking reads nothing"
        );
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

    #[tokio::test]
    async fn unknown_numbers_are_cached_as_absent() {
        let cache = cache_over(None, None, settings());
        assert!(cache.resolve(&number()).await.unwrap().is_none());
        assert!(cache.resolve(&number()).await.unwrap().is_none());
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), 1);
    }

    /// A caching tier between L1 and the table, as L2 is: it keeps what
    /// it reads until invalidated, and each of its invalidations waits for
    /// a permit of `gate`.
    struct Copying {
        table: Table,
        copy: Mutex<Vec<Route>>,
        gate: Arc<Semaphore>,
        /// Reads this tier answered from its copy.
        copy_reads: AtomicUsize,
    }

    impl Copying {
        fn kept<T>(&self, pick: impl Fn(&Route) -> Option<T>) -> Option<T> {
            let found = self.copy.lock().unwrap().iter().find_map(pick);
            if found.is_some() {
                self.copy_reads.fetch_add(1, Ordering::SeqCst);
            }
            found
        }
    }

    impl Resolver for Copying {
        type Source = Table;

        fn source(&self) -> &Table {
            &self.table
        }

        async fn resolve(&self, number: &E164) -> Result<Option<Route>, ResolveError> {
            if let Some(route) = self.kept(|r| (&r.number == number).then(|| r.clone())) {
                return Ok(Some(route));
            }
            let route = self.table.resolve(number).await?;
            self.copy.lock().unwrap().extend(route.clone());
            Ok(route)
        }

        async fn resolve_agent(&self, id: Uuid) -> Result<Option<Arc<Agent>>, ResolveError> {
            match self.kept(|r| (r.agent.id == id).then(|| r.agent.clone())) {
                Some(agent) => Ok(Some(agent)),
                None => self.table.resolve_agent(id).await,
            }
        }

        async fn resolve_organization(
            &self,
            id: Uuid,
        ) -> Result<Option<Arc<Organization>>, ResolveError> {
            match self.kept(|r| (r.organization.id == id).then(|| r.organization.clone())) {
                Some(org) => Ok(Some(org)),
                None => self.table.resolve_organization(id).await,
            }
        }

        async fn invalidate(&self, _: &Change) {
            self.gate.acquire().await.expect("never closed").forget();
            self.copy.lock().unwrap().clear();
        }
    }

    /// Waits until no change is settling in the tiers below.
    async fn settled<R: Resolver>(cache: &RouteCache<R>) {
        while cache.settling.iter().any(|s| s.load(Ordering::Acquire) > 0) {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_change_is_answered_from_the_source_until_the_tiers_below_have_it_too() {
        let below = Copying {
            table: Table::default(),
            copy: Mutex::default(),
            gate: Arc::new(Semaphore::new(0)),
            copy_reads: AtomicUsize::new(0),
        };
        below
            .table
            .routes
            .lock()
            .unwrap()
            .push(route("+14155550100", "Reception"));
        let gate = below.gate.clone();
        let cache = RouteCache::new(below, settings());
        cache.set_confirmed(true);
        let agent_of = |route: Option<Route>| route.map(|r| r.agent.name.clone());
        assert_eq!(
            agent_of(cache.resolve(&number()).await.unwrap()).as_deref(),
            Some("Reception")
        );

        // the agent is renamed at the source; the tier below still holds
        // the old copy, and its invalidation is held at the gate
        cache.inner().table.routes.lock().unwrap()[0] = route("+14155550100", "Front desk");
        tokio::time::timeout(
            Duration::from_secs(5),
            cache.apply(&Change::Agent(Uuid::from_u128(2))),
        )
        .await
        .expect("applying a change does not wait for the tiers below");
        for _ in 0..2 {
            assert_eq!(
                agent_of(cache.resolve(&number()).await.unwrap()).as_deref(),
                Some("Front desk"),
                "answered from the tier below's old copy while its invalidation ran"
            );
        }
        assert_eq!(cache.inner().copy_reads.load(Ordering::SeqCst), 0);

        // a renumbered route while settling: the whole route from the source
        cache.inner().table.routes.lock().unwrap()[0] = route("+14155550100", "Night line");
        cache.apply(&Change::Number(number())).await;
        assert_eq!(
            agent_of(cache.resolve(&number()).await.unwrap()).as_deref(),
            Some("Night line")
        );
        assert_eq!(cache.inner().copy_reads.load(Ordering::SeqCst), 0);

        // once the tier below has forgotten its copy, reads go through it
        // again, and what they read is kept
        gate.add_permits(2);
        settled(&cache).await;
        for _ in 0..2 {
            assert_eq!(
                agent_of(cache.resolve(&number()).await.unwrap()).as_deref(),
                Some("Night line")
            );
        }
        let table_reads = cache.inner().table.reads.load(Ordering::SeqCst);
        assert_eq!(
            cache
                .resolve(&number())
                .await
                .unwrap()
                .map(|r| r.agent.name.clone())
                .as_deref(),
            Some("Night line")
        );
        assert_eq!(
            cache.inner().table.reads.load(Ordering::SeqCst),
            table_reads,
            "kept in L1 once settled"
        );
    }

    #[tokio::test]
    async fn each_kind_of_change_evicts_what_it_names() {
        let cache = cache_over(Some("Reception"), None, settings());
        let changes = [
            Change::Number(number()),
            Change::Agent(Uuid::from_u128(2)),
            Change::Organization(Uuid::from_u128(1)),
        ];
        for (i, change) in changes.iter().enumerate() {
            cache.resolve(&number()).await.unwrap();
            // the agent and the organization both renamed, one named in the
            // change: a number change reloads both, the others their own
            let name = format!("v{i}");
            let mut renamed = route("+14155550100", &name);
            let mut org = (*renamed.organization).clone();
            org.name = name.clone();
            renamed.organization = Arc::new(org);
            cache.inner().routes.lock().unwrap()[0] = renamed;
            cache.apply(change).await;
            let resolved = cache.resolve(&number()).await.unwrap().unwrap();
            let (agent, org) = (&resolved.agent.name, &resolved.organization.name);
            match change {
                Change::Number(_) => assert_eq!((agent, org), (&name, &name)),
                Change::Agent(_) => assert_eq!(agent, &name),
                Change::Organization(_) => assert_eq!(org, &name),
            }
        }
    }

    #[tokio::test]
    async fn a_change_to_a_shared_part_reloads_it_once_for_all_its_numbers() {
        let cache = cache_over(Some("Reception"), None, settings());
        let numbers = [number(), E164::from_canonical("+14155550101").unwrap()];
        cache
            .inner()
            .routes
            .lock()
            .unwrap()
            .push(route(numbers[1].as_str(), "Reception"));
        for n in &numbers {
            cache.resolve(n).await.unwrap();
        }
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), 2);

        for r in cache.inner().routes.lock().unwrap().iter_mut() {
            *r = route(r.number.as_str(), "Front desk");
        }
        cache.apply(&Change::Agent(Uuid::from_u128(2))).await;
        settled(&cache).await;
        for _ in 0..2 {
            for n in &numbers {
                let resolved = cache.resolve(n).await.unwrap().unwrap();
                assert_eq!(resolved.agent.name, "Front desk", "{n}");
            }
        }
        assert_eq!(
            cache.inner().reads.load(Ordering::SeqCst),
            2,
            "no route reread"
        );
        assert_eq!(
            cache.inner().part_reads.load(Ordering::SeqCst),
            1,
            "one agent read"
        );

        // a part that is gone: the binding is outdated, the route reloads
        cache.inner().routes.lock().unwrap().clear();
        cache.apply(&Change::Organization(Uuid::from_u128(1))).await;
        settled(&cache).await;
        assert!(cache.resolve(&numbers[0]).await.unwrap().is_none());
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), 3);
    }

    /// The same race with a change to some other agent: the load keeps
    /// what it read, so a stream of unrelated changes cannot keep a number
    /// from being cached.
    #[tokio::test]
    async fn a_load_racing_a_change_to_something_else_is_cached() {
        let gate = Arc::new(Notify::new());
        let cache = cache_over(Some("Reception"), Some(gate.clone()), settings());
        let ours = [
            stripe(Kind::Number, &number()),
            stripe(Kind::Agent, &Uuid::from_u128(2)),
            stripe(Kind::Organization, &Uuid::from_u128(1)),
        ];
        let other = (3..)
            .map(Uuid::from_u128)
            .find(|id| !ours.contains(&stripe(Kind::Agent, id)))
            .unwrap();

        let slow = tokio::spawn({
            let cache = cache.clone();
            async move { cache.resolve(&number()).await }
        });
        cache.inner().entered.notified().await;
        cache.apply(&Change::Agent(other)).await;
        gate.notify_one();
        slow.await.unwrap().unwrap();
        cache.resolve(&number()).await.unwrap();
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), 1, "cached");
    }

    /// A load that read the old row, then an update and its eviction, then
    /// the load finishing: the old row must not stay cached.
    #[tokio::test]
    async fn a_slow_load_racing_an_update_does_not_cache_the_old_row() {
        let gate = Arc::new(Notify::new());
        let cache = cache_over(Some("Old"), Some(gate.clone()), settings());

        let slow = tokio::spawn({
            let cache = cache.clone();
            async move { cache.resolve(&number()).await }
        });
        cache.inner().entered.notified().await; // the load has read "Old"
        cache.inner().routes.lock().unwrap()[0] = route("+14155550100", "New");
        cache.apply(&Change::Agent(Uuid::from_u128(2))).await;
        gate.notify_one(); // the slow load finishes after the eviction

        // the racing request itself rereads the source, and is answered
        // with the new row
        tokio::time::timeout(Duration::from_secs(5), cache.inner().entered.notified())
            .await
            .expect("a load that raced a change rereads the source");
        gate.notify_one();
        assert_eq!(slow.await.unwrap().unwrap().unwrap().agent.name, "New");
        // and the next one reads it too, not an old row kept by the load
        assert_eq!(reread(&cache, &gate).await, "New");
    }

    /// The agent's name in the next lookup of `number()`, which must read
    /// the source (held at `gate`) rather than answer from a stale entry.
    async fn reread(cache: &Arc<RouteCache<Table>>, gate: &Notify) -> String {
        let next = tokio::spawn({
            let cache = cache.clone();
            async move { cache.resolve(&number()).await }
        });
        tokio::time::timeout(Duration::from_secs(5), cache.inner().entered.notified())
            .await
            .expect("the next lookup reads the source instead of a stale entry");
        gate.notify_one();
        next.await.unwrap().unwrap().unwrap().agent.name.clone()
    }

    #[tokio::test]
    async fn entries_are_not_trusted_long_while_unconfirmed() {
        let cache = cache_over(
            Some("Reception"),
            None,
            CacheSettings {
                unconfirmed_ttl: Duration::ZERO,
                ..settings()
            },
        );
        cache.resolve(&number()).await.unwrap();
        cache.resolve(&number()).await.unwrap();
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), 1);
        cache.set_confirmed(false);
        cache.resolve(&number()).await.unwrap();
        assert_eq!(
            cache.inner().reads.load(Ordering::SeqCst),
            2,
            "unconfirmed entry reread"
        );
    }

    #[tokio::test]
    async fn every_request_waiting_for_a_failed_reread_is_answered_from_the_stale_copy() {
        // the feed is down, so a stale entry is reread before it is served
        let gate = Arc::new(Notify::new());
        let cache = cache_over(
            Some("Reception"),
            Some(gate.clone()),
            CacheSettings {
                unconfirmed_ttl: Duration::ZERO,
                ..settings()
            },
        );
        gate.notify_one();
        cache.resolve(&number()).await.unwrap();
        cache.set_confirmed(false);
        cache.inner().down.store(true, Ordering::SeqCst);

        // (a current-thread runtime: every lookup below runs up to its
        // first wait before this test goes on)
        let lookups: Vec<_> = (0..20)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.resolve(&number()).await })
            })
            .collect();
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
        assert_eq!(
            cache.inner().reads.load(Ordering::SeqCst),
            2,
            "one reread for all of them"
        );
    }

    #[tokio::test]
    async fn stale_routes_are_served_while_the_source_is_down_up_to_the_maximum_age() {
        // every entry is due a refresh at once
        let cache = cache_over(
            Some("Reception"),
            None,
            CacheSettings {
                ttl: Duration::ZERO,
                ..settings()
            },
        );
        cache.resolve(&number()).await.unwrap();
        cache.inner().down.store(true, Ordering::SeqCst);

        let stale = cache.resolve(&number()).await.unwrap().unwrap();
        assert_eq!(stale.agent.name, "Reception");
        cache.refreshes_done().await;
        let reads = cache.inner().reads.load(Ordering::SeqCst);
        assert_eq!(reads, 2, "the refresh was tried");
        // within the back-off the source is not tried again
        cache.resolve(&number()).await.unwrap().unwrap();
        assert_eq!(cache.inner().reads.load(Ordering::SeqCst), reads);

        // past the maximum age: the source's error
        let strict = cache_over(
            Some("Reception"),
            None,
            CacheSettings {
                ttl: Duration::ZERO,
                max_stale: Duration::ZERO,
                ..settings()
            },
        );
        strict.resolve(&number()).await.unwrap();
        strict.inner().down.store(true, Ordering::SeqCst);
        assert!(strict.resolve(&number()).await.is_err());
    }

    /// Renames the agent of `number()` in the source.
    fn rename(cache: &RouteCache<Table>, agent_name: &str) {
        cache.inner().routes.lock().unwrap()[0] = route("+14155550100", agent_name);
    }

    /// A cache whose every entry is due a refresh as soon as it is made,
    /// over a source held at `gate`, with `number()` already loaded.
    async fn loaded_and_due(gate: &Arc<Notify>) -> Arc<RouteCache<Table>> {
        let cache = cache_over(
            Some("Reception"),
            Some(gate.clone()),
            CacheSettings {
                ttl: Duration::ZERO,
                ..settings()
            },
        );
        let first = tokio::spawn({
            let cache = cache.clone();
            async move { cache.resolve(&number()).await }
        });
        cache.inner().entered.notified().await;
        gate.notify_one();
        assert_eq!(
            first.await.unwrap().unwrap().unwrap().agent.name,
            "Reception"
        );
        cache
    }

    #[tokio::test]
    async fn a_route_past_its_ttl_is_answered_at_once_and_refreshed_behind() {
        let gate = Arc::new(Notify::new());
        let cache = loaded_and_due(&gate).await;
        rename(&cache, "Front desk");

        // answered while its refresh waits for the source
        for _ in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(5), cache.resolve(&number()))
                .await
                .expect("a route due a refresh is answered without waiting for it");
            assert_eq!(answer.unwrap().unwrap().agent.name, "Reception");
        }
        cache.inner().entered.notified().await;
        assert_eq!(
            cache.inner().reads.load(Ordering::SeqCst),
            2,
            "one refresh, however many lookups"
        );
        gate.notify_one();
        cache.refreshes_done().await;
        assert_eq!(
            cache.resolve(&number()).await.unwrap().unwrap().agent.name,
            "Front desk"
        );
    }

    #[tokio::test]
    async fn a_refresh_racing_a_change_does_not_keep_the_old_row() {
        let gate = Arc::new(Notify::new());
        let cache = loaded_and_due(&gate).await;
        cache.resolve(&number()).await.unwrap(); // starts the refresh
        cache.inner().entered.notified().await; // which has read "Reception"
        rename(&cache, "Front desk");
        cache.apply(&Change::Agent(Uuid::from_u128(2))).await;
        gate.notify_one();
        cache.refreshes_done().await;
        assert_eq!(reread(&cache, &gate).await, "Front desk");
    }

    #[tokio::test]
    async fn refreshes_behind_answers_are_bounded() {
        let gate = Arc::new(Notify::new());
        let cache = cache_over(
            None,
            Some(gate.clone()),
            CacheSettings {
                ttl: Duration::ZERO,
                ..settings()
            },
        );
        let numbers: Vec<E164> = (0..3 * BACKGROUND_REFRESHES)
            .map(|i| E164::from_canonical(&format!("+1415555{i:04}")).unwrap())
            .collect();
        let routes = numbers
            .iter()
            .map(|n| route(n.as_str(), "Reception"))
            .collect();
        assert_eq!(cache.preload(routes).await, numbers.len());
        // every entry is due: each lookup is answered, some start a refresh
        for number in &numbers {
            let answer = cache.resolve(number).await.unwrap().unwrap();
            assert_eq!(answer.agent.name, "Reception");
        }
        // the refreshes run (on this test's thread) until they wait at the gate
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            cache.inner().reads.load(Ordering::SeqCst),
            BACKGROUND_REFRESHES,
            "refreshes beyond the slots are left to later lookups"
        );
        gate.notify_waiters();
    }
}
