//! Number ranges: blocks of numbers an organization owns by prefix. Each
//! replica holds every range (they are few: a block of numbers each), read
//! whole from the source of truth, so a number inside a range is routed
//! without a per-number entry anywhere: its exact lookup answers "no such
//! number" (cached as usual), then the longest prefix in the index that
//! starts it gives its organization and agent, whose parts come from the
//! cache like any route's.
//!
//! An exact number always wins over a range, and a longer prefix over a
//! shorter one; the database refuses ranges that would put one number in
//! two organizations.
//!
//! A change to any range (`Change::Range`) or a flush sets the index aside
//! and reloads it whole; lookups meanwhile wait for that one load. When the
//! source cannot be read, the set-aside index answers (stale-if-error, up
//! to the cache's `max_stale`); a replica that never loaded one answers
//! `UNAVAILABLE` for numbers it cannot place rather than "no such number".

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::Instant,
};

use super::RouteCache;
use crate::domain::{NumberRange, Peeked, ResolveError, Resolver, Route, E164};

/// Every range, by prefix.
#[derive(Debug, Default)]
pub(super) struct Index {
    by_prefix: HashMap<Box<str>, Arc<NumberRange>, foldhash::fast::RandomState>,
    /// The lengths the prefixes have, longest first: a number is looked up
    /// at those only.
    lengths: Vec<usize>,
}

impl Index {
    fn new(ranges: Vec<NumberRange>) -> Self {
        let mut lengths: Vec<usize> = ranges.iter().map(|r| r.prefix.len()).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        Self {
            by_prefix: ranges
                .into_iter()
                .map(|range| (Box::from(&*range.prefix), Arc::new(range)))
                .collect(),
            lengths,
        }
    }

    fn len(&self) -> usize {
        self.by_prefix.len()
    }
}

/// Reloads in a row that a stream of range changes may force before a
/// lookup uses what it read (a change during a load makes it reread).
const RELOADS_PER_LOOKUP: usize = 3;

/// The index and its state.
#[derive(Default)]
pub(super) struct Ranges {
    /// The current index; `None` before the first load and after a change.
    current: RwLock<Option<Arc<Index>>>,
    /// The last index set aside, and when it was loaded: served while the
    /// source cannot be read.
    previous: RwLock<Option<(Arc<Index>, Instant)>>,
    loaded_at: RwLock<Option<Instant>>,
    /// Bumped by every change: a load that saw it move rereads.
    changes: AtomicU64,
    /// One load at a time; lookups waiting for it share it.
    loading: tokio::sync::Mutex<()>,
}

impl Ranges {
    fn current(&self) -> Option<Arc<Index>> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Ranges held now (for metrics).
    pub(super) fn len(&self) -> usize {
        self.current().map_or(0, |index| index.len())
    }
}

/// The range with the longest prefix that starts `number` (a prefix as
/// long as the number is a number, not a range).
fn longest(index: &Index, number: &E164) -> Option<Arc<NumberRange>> {
    let digits = number.as_str();
    (index.lengths.iter())
        .filter(|&&len| len < digits.len())
        .find_map(|&len| index.by_prefix.get(&digits[..len]).cloned())
}

impl<R: Resolver> RouteCache<R> {
    /// The range `number` belongs to, if any.
    pub(super) async fn range_of(
        &self,
        number: &E164,
    ) -> Result<Option<Arc<NumberRange>>, ResolveError> {
        if let Some(index) = self.ranges.current() {
            return Ok(longest(&index, number));
        }
        match self.load_ranges().await {
            Ok(index) => Ok(longest(&index, number)),
            Err(error) => {
                let previous = self.ranges.previous.read().expect("not poisoned").clone();
                match previous {
                    Some((index, loaded_at)) if loaded_at.elapsed() < self.settings.max_stale => {
                        Ok(longest(&index, number))
                    }
                    _ => Err(error),
                }
            }
        }
    }

    /// Reads every range from the source, unless a load just did.
    pub(super) async fn load_ranges(&self) -> Result<Arc<Index>, ResolveError> {
        let _one_at_a_time = self.ranges.loading.lock().await;
        if let Some(index) = self.ranges.current() {
            return Ok(index);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let seen = self.ranges.changes.load(Ordering::Acquire);
            let read_at = Instant::now();
            let ranges = self.inner.source().ranges().await?;
            let index = Arc::new(Index::new(ranges));
            if self.ranges.changes.load(Ordering::Acquire) == seen {
                *self.ranges.current.write().expect("not poisoned") = Some(index.clone());
                *self.ranges.loaded_at.write().expect("not poisoned") = Some(read_at);
                metrics::gauge!("switchboard_cache_number_ranges").set(index.len() as f64);
                return Ok(index);
            }
            if attempt >= RELOADS_PER_LOOKUP {
                // changing faster than it loads: answer with this read (as
                // current as any), and let the next lookup load again
                return Ok(index);
            }
        }
    }

    /// Loads every number range now (warm start): how many there are.
    pub async fn warm_ranges(&self) -> Result<usize, ResolveError> {
        self.load_ranges().await.map(|index| index.len())
    }

    /// A range was added, changed or removed (or changes may have been
    /// missed): set the index aside and load it again.
    pub(super) fn ranges_changed(&self) {
        self.ranges.changes.fetch_add(1, Ordering::AcqRel);
        let set_aside = self.ranges.current.write().expect("not poisoned").take();
        let loaded_at = *self.ranges.loaded_at.read().expect("not poisoned");
        if let (Some(index), Some(loaded_at)) = (set_aside, loaded_at) {
            *self.ranges.previous.write().expect("not poisoned") = Some((index, loaded_at));
        }
        let Some(cache) = self.me.upgrade() else {
            return;
        };
        self.spawn(async move {
            if let Err(error) = cache.load_ranges().await {
                tracing::warn!(%error, "number ranges not reloaded; the next lookup tries again");
            }
        });
    }

    /// The route of a number no row provisions on its own: its range's, if
    /// it is in one.
    pub(super) async fn resolve_in_range(
        &self,
        number: &E164,
    ) -> Result<Option<Route>, ResolveError> {
        let Some(range) = self.range_of(number).await? else {
            return Ok(None);
        };
        let agent = self.resolve_agent(range.agent_id).await?;
        let organization = self.resolve_organization(range.org_id).await?;
        Ok(range_route(number, &range, agent, organization))
    }

    /// [`Self::resolve_in_range`] for explain: parts from L1 when it holds
    /// them, else from the source, filling nothing.
    pub(super) async fn peek_in_range(
        &self,
        number: &E164,
        exact: Peeked,
    ) -> Result<Peeked, ResolveError> {
        if exact.route.is_some() {
            return Ok(exact);
        }
        let Some(range) = self.range_of(number).await? else {
            return Ok(exact);
        };
        let agent = match self.agents.get(&range.agent_id).await {
            Some(entry) => Some(entry.value),
            None => self.inner.source().resolve_agent(range.agent_id).await?,
        };
        let organization = match self.organizations.get(&range.org_id).await {
            Some(entry) => Some(entry.value),
            None => {
                self.inner
                    .source()
                    .resolve_organization(range.org_id)
                    .await?
            }
        };
        Ok(Peeked {
            route: range_route(number, &range, agent, organization),
            ..exact
        })
    }
}

fn range_route(
    number: &E164,
    range: &NumberRange,
    agent: Option<Arc<crate::domain::Agent>>,
    organization: Option<Arc<crate::domain::Organization>>,
) -> Option<Route> {
    // the range's keys guarantee both; a part deleted since is no route
    let (agent, organization) = agent.zip(organization)?;
    Some(Route {
        number: number.clone(),
        number_active: range.is_active,
        provisioned: range.provisioned(),
        organization,
        agent,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use uuid::Uuid;

    use super::{longest, Index};
    use crate::domain::{AgentId, NumberRange, OrgId, Provisioned, ResolveError, E164};
    use crate::routing::cache::test_support::*;

    /// A range of the test table's organization, to its agent.
    fn stored_range(prefix: &str, active: bool) -> NumberRange {
        NumberRange {
            id: Uuid::from_u128(9),
            prefix: prefix.into(),
            org_id: OrgId(Uuid::from_u128(1)),
            agent_id: AgentId(Uuid::from_u128(2)),
            is_active: active,
            concurrency_limit: Some(4),
        }
    }

    fn e164(raw: &str) -> E164 {
        E164::from_canonical(raw).unwrap()
    }

    #[tokio::test]
    async fn a_number_in_a_range_routes_by_it_and_an_exact_number_wins() {
        let cache = cache_over(Some("Reception"), None, settings());
        cache
            .inner()
            .ranges
            .lock()
            .unwrap()
            .push(stored_range("+1415555", false));
        let in_range = cache.resolve(&e164("+14155550199")).await.unwrap().unwrap();
        assert_eq!(in_range.number.as_str(), "+14155550199");
        assert_eq!(in_range.agent.name, "Reception");
        assert!(!in_range.number_active, "the range's own switch");
        assert!(matches!(
            in_range.provisioned,
            Provisioned::Range {
                concurrency_limit: Some(4),
                ..
            }
        ));
        // +14155550100 is a number of its own, inside the range
        let exact = cache.resolve(&number()).await.unwrap().unwrap();
        assert!(matches!(exact.provisioned, Provisioned::Number { .. }));
        assert!(cache
            .resolve(&e164("+14155560100"))
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            cache.inner().range_reads.load(Ordering::SeqCst),
            1,
            "read once"
        );
        let peeked = cache.peek(&e164("+14155550199")).await.unwrap();
        assert_eq!(peeked.route.unwrap().agent.name, "Reception");
    }

    #[tokio::test]
    async fn a_range_change_reloads_them_and_a_dead_source_leaves_the_last_index_serving() {
        let cache = cache_over(Some("Reception"), None, settings());
        let number = e164("+16465550100");
        assert!(cache.resolve(&number).await.unwrap().is_none());
        cache
            .inner()
            .ranges
            .lock()
            .unwrap()
            .push(stored_range("+1646", true));
        // until the change arrives, the index loaded before answers
        assert!(cache.resolve(&number).await.unwrap().is_none());
        cache.apply(&Change::Range("+1646".into())).await;
        assert!(cache.resolve(&number).await.unwrap().is_some());
        // the source goes down and another change comes: the last index
        // keeps answering (stale-if-error)
        cache.inner().down.store(true, Ordering::SeqCst);
        cache.apply(&Change::Range("+1718".into())).await;
        assert!(cache.resolve(&number).await.unwrap().is_some());
        // a number never looked up cannot be read at all
        assert!(cache.resolve(&e164("+17185550100")).await.is_err());
    }

    #[tokio::test]
    async fn a_replica_that_never_read_its_ranges_cannot_say_a_number_is_unknown() {
        let cold = cache_over(None, None, settings());
        // the number itself is known not to exist (a negative entry)...
        assert!(cold.resolve(&e164("+16465550100")).await.unwrap().is_none());
        // ...but with the ranges never read since, it cannot be placed
        cold.inner().down.store(true, Ordering::SeqCst);
        cold.flush();
        assert!(
            matches!(cold.range_of(&e164("+16465550100")).await, Ok(None)),
            "read once before the flush: the set-aside index answers"
        );
        let never = cache_over(None, None, settings());
        never.inner().down.store(true, Ordering::SeqCst);
        assert!(matches!(
            never.range_of(&e164("+16465550100")).await,
            Err(ResolveError::Unavailable(_))
        ));
    }

    fn range(prefix: &str) -> NumberRange {
        NumberRange {
            id: Uuid::new_v4(),
            prefix: prefix.into(),
            org_id: OrgId::default(),
            agent_id: AgentId::default(),
            is_active: true,
            concurrency_limit: None,
        }
    }

    #[test]
    fn the_longest_prefix_that_starts_a_number_wins() {
        let index = Index::new(["+1646", "+1646555", "+44"].map(range).into());
        let prefix = |number: &str| {
            longest(&index, &E164::from_canonical(number).unwrap()).map(|r| r.prefix.to_string())
        };
        assert_eq!(prefix("+16465550100").as_deref(), Some("+1646555"));
        assert_eq!(prefix("+16465560100").as_deref(), Some("+1646"));
        assert_eq!(prefix("+442079460123").as_deref(), Some("+44"));
        assert_eq!(prefix("+14155550100"), None);
        // a number never matches itself as a "prefix": numbers are rows of
        // their own
        let exact = Index::new(vec![range("+14155550100")]);
        assert_eq!(
            longest(&exact, &E164::from_canonical("+14155550100").unwrap()),
            None
        );
    }
}
