//! Misses: a route loaded from the next tier, concurrent misses for one
//! number coalesced into one read; or, for a binding whose agent or
//! organization a change evicted, only that part, reloaded once for all the
//! numbers that share it. What was read is kept unless a change to it ran
//! meanwhile (`settle`).

use std::{future::Future, sync::Arc, time::Instant};

use moka::future::Cache;

use super::{
    settle::{parts_of, read_stripes, stripe, Kind, Snapshot},
    storage::{Binding, Entry, Lookup},
    RouteCache,
};
use crate::domain::{Agent, AgentId, OrgId, Organization, ResolveError, Resolver, Route, E164};

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

/// What the tier below answered, and whether L1 may keep it.
pub(super) enum Below {
    /// The answer (a route, or "not provisioned"), safe to keep.
    Keep(Option<Route>),
    /// A change to what it names is settling or ran meanwhile: the answer
    /// must come from the source and not be kept.
    Settling,
}

/// A part of a route cached apart from its number's binding, and reloaded
/// alone: an agent or an organization.
pub(super) trait Part: Send + Sync + Sized + 'static {
    /// The kind of key its id is, for its stripe.
    const KIND: Kind;

    /// Its id.
    type Id: Copy + Eq + std::hash::Hash + Send + Sync + 'static;

    /// Where L1 keeps it.
    fn kept<R>(cache: &RouteCache<R>) -> &Cache<Self::Id, Entry<Arc<Self>>>;

    /// Its id as a UUID (the key of a swap in progress).
    fn uuid(id: Self::Id) -> uuid::Uuid;

    /// It, read from `tier`.
    fn read(
        tier: &impl Resolver,
        id: Self::Id,
    ) -> impl Future<Output = Result<Option<Arc<Self>>, ResolveError>> + Send;
}

/// Implements [`Part`] for `$part`, kept in `RouteCache::$kept` and read
/// with `Resolver::$read`.
macro_rules! part {
    ($part:ty, $id:ty, $kind:expr, $kept:ident, $read:ident) => {
        impl Part for $part {
            const KIND: Kind = $kind;
            type Id = $id;

            fn kept<R>(cache: &RouteCache<R>) -> &Cache<$id, Entry<Arc<Self>>> {
                &cache.$kept
            }

            fn uuid(id: $id) -> uuid::Uuid {
                id.uuid()
            }

            fn read(
                tier: &impl Resolver,
                id: $id,
            ) -> impl Future<Output = Result<Option<Arc<Self>>, ResolveError>> + Send {
                tier.$read(id)
            }
        }
    };
}

part!(Agent, AgentId, Kind::Agent, agents, resolve_agent);
part!(
    Organization,
    OrgId,
    Kind::Organization,
    organizations,
    resolve_organization
);

impl<R: Resolver> RouteCache<R> {
    /// Reads the route from the next tier, coalescing concurrent misses for
    /// the same number into one read, and caches its parts unless an
    /// invalidation ran meanwhile.
    pub(super) async fn load(&self, number: &E164) -> Result<Option<Route>, ResolveError> {
        let started_at = self.snapshot();
        let loaded = self
            .numbers
            .try_get_with_by_ref(number, async {
                match self.read_below(number, &started_at).await {
                    Ok(Below::Keep(route)) => Ok(self.keep_parts(route.as_ref()).await),
                    // answered from the source, not kept
                    Ok(Below::Settling) => match self.inner.source().resolve(number).await {
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
                        Below::Keep(route) => Ok(route),
                        Below::Settling => self.inner.source().resolve(number).await,
                    }
                }
            },
        }
    }

    /// `number`'s route from the tier below, for L1 to keep, unless a
    /// change to anything it names is settling, or ran since `started_at`:
    /// the tier below may have answered with the copy the change replaces.
    /// An answer then comes from the source, and is not kept.
    pub(super) async fn read_below(
        &self,
        number: &E164,
        started_at: &Snapshot,
    ) -> Result<Below, ResolveError> {
        if self.unsettled(started_at, &read_stripes(number, None)) {
            return Ok(Below::Settling);
        }
        let route = self.inner.resolve(number).await?;
        let stripes = read_stripes(number, parts_of(route.as_ref()));
        Ok(if self.unsettled(started_at, &stripes) {
            Below::Settling
        } else {
            Below::Keep(route)
        })
    }

    /// The route of a current binding whose agent or organization a change
    /// evicted, reloading only what is missing. `None` when a part no longer
    /// exists.
    pub(super) async fn complete(
        &self,
        number: &E164,
        binding: &Binding,
    ) -> Result<Option<Route>, ResolveError> {
        let agent = self.resolve_agent(binding.agent_id).await?;
        let organization = self.resolve_organization(binding.org_id).await?;
        Ok(agent.zip(organization).map(|(agent, organization)| Route {
            number: number.clone(),
            number_active: binding.number_active,
            provisioned: binding.provisioned.clone(),
            organization,
            agent,
        }))
    }

    /// One agent or organization, as [`Resolver::resolve_agent`] and
    /// [`Resolver::resolve_organization`] answer it: from L1 (see
    /// [`Self::part`]), or from the tier below with L1 off.
    pub(super) async fn resolve_part<T: Part>(
        &self,
        id: T::Id,
    ) -> Result<Option<Arc<T>>, ResolveError> {
        if !self.enabled() {
            return T::read(&self.inner, id).await;
        }
        self.part(
            T::KIND,
            T::kept(self),
            id,
            T::read(&self.inner, id),
            T::read(self.inner.source(), id),
        )
        .await
    }

    /// One agent or organization: the fresh cached copy, else loaded from
    /// the next tier (`below`), concurrent reloads of one id coalesced, and
    /// cached unless an invalidation ran meanwhile (as in [`Self::load`]);
    /// from the `source` while a change to it settles or if one raced the
    /// load (as in [`Self::read_below`]).
    async fn part<K, T>(
        &self,
        kind: Kind,
        cache: &Cache<K, Entry<Arc<T>>>,
        id: K,
        below: impl Future<Output = Result<Option<Arc<T>>, ResolveError>>,
        source: impl Future<Output = Result<Option<Arc<T>>, ResolveError>>,
    ) -> Result<Option<Arc<T>>, ResolveError>
    where
        K: Copy + Eq + std::hash::Hash + Send + Sync + 'static,
        T: Send + Sync + 'static,
    {
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
}

#[cfg(test)]
mod tests {
    use std::sync::{atomic::Ordering, Arc};

    use tokio::sync::Notify;
    use uuid::Uuid;

    use crate::routing::cache::test_support::*;

    #[tokio::test]
    async fn hits_do_not_read_the_source_and_misses_are_coalesced() {
        let gate = Arc::new(Notify::new());
        let cache = cache_over(Some("Reception"), Some(gate.clone()), settings());

        let waiters: Vec<_> = (0..100).map(|_| resolve_in_task(&cache)).collect();
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
        assert_eq!(cache.inner().reads(), 1, "100 misses, one read");

        for _ in 0..10 {
            cache.resolve(&number()).await.unwrap();
        }
        assert_eq!(cache.inner().reads(), 1, "hits read nothing");
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
        assert_eq!(cache.inner().reads(), 2);

        for r in cache.inner().routes.lock().unwrap().iter_mut() {
            *r = route(r.number.as_str(), "Front desk");
        }
        cache
            .apply(&Change::Agent(crate::domain::AgentId(Uuid::from_u128(2))))
            .await;
        settled(&cache).await;
        for _ in 0..2 {
            for n in &numbers {
                let resolved = cache.resolve(n).await.unwrap().unwrap();
                assert_eq!(resolved.agent.name, "Front desk", "{n}");
            }
        }
        assert_eq!(cache.inner().reads(), 2, "no route reread");
        assert_eq!(
            cache.inner().part_reads.load(Ordering::SeqCst),
            1,
            "one agent read"
        );

        // a part that is gone: the binding is outdated, the route reloads
        cache.inner().routes.lock().unwrap().clear();
        cache
            .apply(&Change::Organization(crate::domain::OrgId(
                Uuid::from_u128(1),
            )))
            .await;
        settled(&cache).await;
        assert!(cache.resolve(&numbers[0]).await.unwrap().is_none());
        assert_eq!(cache.inner().reads(), 3);
    }
}
