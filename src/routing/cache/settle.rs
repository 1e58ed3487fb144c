//! Generations and settling: what keeps a load from caching a copy older
//! than a change.
//!
//! Every eviction bumps the generation of the stripe of what it names; a
//! load snapshots the stripes before it reads, and does not keep what it
//! read if the stripe of anything it read moved meanwhile. A change stays
//! *settling* in its stripe until the tiers below have forgotten it too:
//! until then L1 reads what the stripe names from the source, past them.

use std::{
    hash::{BuildHasher, BuildHasherDefault, Hash},
    sync::{atomic::Ordering, Arc},
};

use super::RouteCache;
use crate::domain::{AgentId, OrgId, Resolver, Route, E164};

/// Generation counters, one per stripe of keys; see the module docs.
pub(super) const STRIPES: usize = 64;

/// The stripes' counters when a load started.
pub(super) type Snapshot = [u64; STRIPES];

/// Which kind of key a stripe index is for (numbers, agents,
/// organizations and callers hash apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Number,
    Agent,
    Organization,
    Caller,
}

/// The stripe of a key of `kind`.
pub(super) fn stripe(kind: Kind, key: &impl Hash) -> usize {
    // unseeded: a key lands in the same stripe every time
    let hasher = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    (hasher.hash_one((kind, key)) % STRIPES as u64) as usize
}

/// The stripes of what a read of `number` touched (its agent and
/// organization, when found): a change to any of them makes it stale.
pub(super) fn read_stripes(number: &E164, parts: Option<(AgentId, OrgId)>) -> Vec<usize> {
    let mut stripes = vec![stripe(Kind::Number, number)];
    if let Some((agent_id, org_id)) = parts {
        stripes.push(stripe(Kind::Agent, &agent_id));
        stripes.push(stripe(Kind::Organization, &org_id));
    }
    stripes
}

/// A route's agent and organization ids.
pub(super) fn parts_of(route: Option<&Route>) -> Option<(AgentId, OrgId)> {
    route.map(|r| (r.agent.id, r.organization.id))
}

impl<R: Resolver> RouteCache<R> {
    /// Marks an eviction in `stripe`, for the loads running to see.
    fn bump(&self, stripe: usize) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.stripes[stripe].fetch_add(1, Ordering::AcqRel);
    }

    /// A change in `stripe` is about to be evicted from L1: it settles
    /// (see [`Self::settle`]) when the returned guard drops, however the
    /// invalidation of the tiers below ends.
    pub(super) fn begin_settling(cache: Arc<Self>, stripe: usize) -> Settled<R> {
        // settling first: a load that sees the stripe's bump sees this too
        cache.settling[stripe].fetch_add(1, Ordering::AcqRel);
        let settled = Settled { cache, stripe };
        settled.cache.bump(stripe);
        settled
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
    pub(super) fn unsettled(&self, snapshot: &Snapshot, stripes: &[usize]) -> bool {
        self.changed_since(snapshot, stripes)
            || stripes
                .iter()
                .any(|&i| self.settling[i].load(Ordering::Acquire) > 0)
    }

    /// Every stripe's counter now, for a load to compare against.
    pub(super) fn snapshot(&self) -> Snapshot {
        std::array::from_fn(|i| self.stripes[i].load(Ordering::Acquire))
    }

    /// Whether any of `stripes` moved since `snapshot`.
    pub(super) fn changed_since(&self, snapshot: &Snapshot, stripes: &[usize]) -> bool {
        stripes
            .iter()
            .any(|&i| self.stripes[i].load(Ordering::Acquire) != snapshot[i])
    }

    /// An eviction may have run between a load's check and its insertions:
    /// if anything it read changed since `started_at`, drop what it cached,
    /// the parts included. Evicting more than needed costs a reload;
    /// keeping a stale entry would not be safe. Returns whether it did.
    pub(super) async fn undo_if_raced(
        &self,
        number: &E164,
        parts: Option<(AgentId, OrgId)>,
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
}

/// Settles a change's stripe when dropped: however the invalidation of the
/// tiers below ends, L1 does not bypass them for ever.
pub(super) struct Settled<R: Resolver> {
    pub(super) cache: Arc<RouteCache<R>>,
    stripe: usize,
}

impl<R: Resolver> Drop for Settled<R> {
    fn drop(&mut self) {
        self.cache.settle(self.stripe);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc, Mutex,
        },
        time::Duration,
    };

    use tokio::sync::{Notify, Semaphore};
    use uuid::Uuid;

    use super::{stripe, Kind};
    use crate::{
        domain::{Agent, Organization, ResolveError},
        routing::cache::{test_support::*, RouteCache},
    };

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

        fn ranges(
            &self,
        ) -> impl std::future::Future<Output = Result<Vec<crate::domain::NumberRange>, ResolveError>>
               + Send {
            self.table.ranges()
        }

        async fn resolve_agent(
            &self,
            id: crate::domain::AgentId,
        ) -> Result<Option<Arc<Agent>>, ResolveError> {
            match self.kept(|r| (r.agent.id == id).then(|| r.agent.clone())) {
                Some(agent) => Ok(Some(agent)),
                None => self.table.resolve_agent(id).await,
            }
        }

        async fn resolve_organization(
            &self,
            id: crate::domain::OrgId,
        ) -> Result<Option<Arc<Organization>>, ResolveError> {
            match self.kept(|r| (r.organization.id == id).then(|| r.organization.clone())) {
                Some(org) => Ok(Some(org)),
                None => self.table.resolve_organization(id).await,
            }
        }

        async fn resolve_caller(
            &self,
            org_id: crate::domain::OrgId,
            phone: &E164,
        ) -> Result<Option<Arc<crate::domain::Customer>>, ResolveError> {
            self.table.resolve_caller(org_id, phone).await
        }

        async fn invalidate(&self, _: &Change) {
            self.gate.acquire().await.expect("never closed").forget();
            self.copy.lock().unwrap().clear();
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
            cache.apply(&Change::Agent(crate::domain::AgentId(Uuid::from_u128(2)))),
        )
        .await
        .expect("applying a change does not wait for the tiers below");
        // the agent is swapped for its new version, read from the source
        // (the old one answers until then, SWAP_WITHIN at most)
        let swapped = async {
            while agent_of(cache.resolve(&number()).await.unwrap()).as_deref() != Some("Front desk")
            {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), swapped)
            .await
            .expect("swapped");
        assert_eq!(
            agent_of(cache.resolve(&number()).await.unwrap()).as_deref(),
            Some("Front desk"),
        );
        assert_eq!(
            cache.inner().copy_reads.load(Ordering::SeqCst),
            0,
            "never read from the tier below's old copy while its invalidation ran"
        );

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
        let table_reads = cache.inner().table.reads();
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
            cache.inner().table.reads(),
            table_reads,
            "kept in L1 once settled"
        );
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
            stripe(Kind::Agent, &crate::domain::AgentId(Uuid::from_u128(2))),
            stripe(
                Kind::Organization,
                &crate::domain::OrgId(Uuid::from_u128(1)),
            ),
        ];
        let other = (3..)
            .map(|n| crate::domain::AgentId(Uuid::from_u128(n)))
            .find(|id| !ours.contains(&stripe(Kind::Agent, id)))
            .unwrap();

        let slow = resolve_in_task(&cache);
        cache.inner().entered.notified().await;
        cache.apply(&Change::Agent(other)).await;
        gate.notify_one();
        slow.await.unwrap().unwrap();
        cache.resolve(&number()).await.unwrap();
        assert_eq!(cache.inner().reads(), 1, "cached");
    }

    /// A load that read the old row, then an update and its eviction, then
    /// the load finishing: the old row must not stay cached.
    #[tokio::test]
    async fn a_slow_load_racing_an_update_does_not_cache_the_old_row() {
        let gate = Arc::new(Notify::new());
        let cache = cache_over(Some("Old"), Some(gate.clone()), settings());

        let slow = resolve_in_task(&cache);
        cache.inner().entered.notified().await; // the load has read "Old"
        cache.inner().routes.lock().unwrap()[0] = route("+14155550100", "New");
        cache
            .apply(&Change::Agent(crate::domain::AgentId(Uuid::from_u128(2))))
            .await;
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
}
