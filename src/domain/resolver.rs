//! Where routes and callers come from ([`Resolver`]: the PostgreSQL store
//! and the cache tiers in front of it) and where calls are looked up
//! ([`Directory`]: the PostgreSQL store alone).

use std::{collections::HashMap, future::Future, sync::Arc};

use super::{
    Agent, AgentId, CallId, Customer, NumberRange, OrgId, Organization, ResolveError, Route, E164,
};

/// One change from the routing change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Number(E164),
    Agent(AgentId),
    Organization(OrgId),
    /// A customer row of this organization with this phone was added,
    /// changed or removed: what the caller lookup answers for them.
    Customer(OrgId, E164),
    /// The number range with this prefix was added, changed or removed.
    Range(String),
}

/// Agents and organizations as they are now, read after changes to them
/// committed (by the invalidation listener, on its own session): what the
/// cache swaps in for them without a read of its own. An id read and not
/// found maps to `None`: it is gone.
#[derive(Debug, Default)]
pub struct Versions {
    pub agents: HashMap<AgentId, Option<Arc<Agent>>>,
    pub organizations: HashMap<OrgId, Option<Arc<Organization>>>,
    /// How long reading them took (what swapping one in is measured as).
    pub took: std::time::Duration,
}

/// The tier that answers a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// This replica's in-process cache.
    L1,
    /// Redis, shared by every replica.
    L2,
    /// PostgreSQL, the source of truth.
    L3,
}

/// A lookup that changed nothing: what `resolve` would answer now, and
/// which tier would answer it.
#[derive(Debug, Clone)]
pub struct Peeked {
    pub tier: Tier,
    /// `None`: the number is not provisioned (from L1 or L2, a cached "no
    /// such number").
    pub route: Option<Route>,
    /// L1 would serve a copy past its freshness: a refresh is backing off,
    /// or the tiers below cannot be read (stale-if-error).
    pub stale: bool,
}

/// Where routes and callers come from. Implemented by the PostgreSQL store
/// and by the cache tiers in front of it; the [`Router`] does not know
/// which it has.
pub trait Resolver: Send + Sync + 'static {
    /// The tier at the bottom: the source of truth itself (PostgreSQL).
    type Source: Resolver;

    /// The source of truth, past every cache in this tier and below: what
    /// a cache above asks while what these tiers hold is being
    /// invalidated.
    fn source(&self) -> &Self::Source;

    /// The route for `number`, `Ok(None)` when the number is not provisioned.
    fn resolve(
        &self,
        number: &E164,
    ) -> impl Future<Output = Result<Option<Route>, ResolveError>> + Send;

    /// One agent by id, `Ok(None)` when there is none: for reloading only
    /// the part of routes that a change to it evicted.
    fn resolve_agent(
        &self,
        id: AgentId,
    ) -> impl Future<Output = Result<Option<Arc<Agent>>, ResolveError>> + Send;

    /// One organization by id, likewise.
    fn resolve_organization(
        &self,
        id: OrgId,
    ) -> impl Future<Output = Result<Option<Arc<Organization>>, ResolveError>> + Send;

    /// The customer of `org_id` whose phone is `phone`, `Ok(None)` when the
    /// caller is not one (cached like a route: a caller is asked about on
    /// every call, a stranger included).
    fn resolve_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> impl Future<Output = Result<Option<Arc<Customer>>, ResolveError>> + Send;

    /// What `resolve_caller` would answer now, changing nothing (as
    /// [`Resolver::peek`] for routes). A resolver that keeps nothing
    /// answers as `resolve_caller` does.
    fn peek_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> impl Future<Output = Result<Option<Arc<Customer>>, ResolveError>> + Send {
        self.resolve_caller(org_id, phone)
    }

    /// Every number range, from the source of truth: a tier that keeps
    /// none asks the one below.
    fn ranges(&self) -> impl Future<Output = Result<Vec<NumberRange>, ResolveError>> + Send;

    /// Forgets what `change` affects, in this tier and the ones below it.
    /// Tiers that keep nothing need not implement it.
    fn invalidate(&self, change: &Change) -> impl Future<Output = ()> + Send {
        let _ = change;
        async {}
    }

    /// What `resolve` would answer now and which tier would answer it,
    /// changing nothing: no fill, no eviction. A resolver that keeps
    /// nothing is the source: it answers as `resolve` does, as L3.
    fn peek(&self, number: &E164) -> impl Future<Output = Result<Peeked, ResolveError>> + Send {
        async move {
            Ok(Peeked {
                tier: Tier::L3,
                route: self.resolve(number).await?,
                stale: false,
            })
        }
    }
}

/// A shared resolver resolves like the one it shares.
impl<R: Resolver> Resolver for Arc<R> {
    type Source = R::Source;

    fn source(&self) -> &Self::Source {
        (**self).source()
    }

    fn resolve(
        &self,
        number: &E164,
    ) -> impl Future<Output = Result<Option<Route>, ResolveError>> + Send {
        (**self).resolve(number)
    }

    fn resolve_agent(
        &self,
        id: AgentId,
    ) -> impl Future<Output = Result<Option<Arc<Agent>>, ResolveError>> + Send {
        (**self).resolve_agent(id)
    }

    fn resolve_organization(
        &self,
        id: OrgId,
    ) -> impl Future<Output = Result<Option<Arc<Organization>>, ResolveError>> + Send {
        (**self).resolve_organization(id)
    }

    fn resolve_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> impl Future<Output = Result<Option<Arc<Customer>>, ResolveError>> + Send {
        (**self).resolve_caller(org_id, phone)
    }

    fn peek_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> impl Future<Output = Result<Option<Arc<Customer>>, ResolveError>> + Send {
        (**self).peek_caller(org_id, phone)
    }

    fn ranges(&self) -> impl Future<Output = Result<Vec<NumberRange>, ResolveError>> + Send {
        (**self).ranges()
    }

    fn invalidate(&self, change: &Change) -> impl Future<Output = ()> + Send {
        (**self).invalidate(change)
    }

    fn peek(&self, number: &E164) -> impl Future<Output = Result<Peeked, ResolveError>> + Send {
        (**self).peek(number)
    }
}

/// Calls: read from the source of truth, by the PostgreSQL store only, for
/// the rare `EndCall` or usage report of a call this replica did not route
/// and Redis does not remember.
pub trait Directory: Send + Sync + 'static {
    /// The organization of a recorded call, `Ok(None)` when no call has
    /// this id.
    fn call_org(
        &self,
        call_id: CallId,
    ) -> impl Future<Output = Result<Option<OrgId>, ResolveError>> + Send;
}
