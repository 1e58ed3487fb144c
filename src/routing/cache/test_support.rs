//! Test doubles and helpers shared by the cache's unit tests.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};
use uuid::Uuid;

use super::{CacheSettings, RouteCache};
use crate::domain::{Agent, Customer, NumberRange, OrgId, Organization, Provisioned, ResolveError};

/// The domain's names that the tests use besides the doubles.
pub(super) use crate::domain::{Change, Resolver, Route, Tier, E164};

/// The next tier down, in memory: a route table the test edits, a read
/// counter, and an optional gate that holds reads until released.
#[derive(Default)]
pub(super) struct Table {
    pub(super) routes: Mutex<Vec<Route>>,
    pub(super) reads: AtomicUsize,
    /// Customers, by organization.
    pub(super) customers: Mutex<Vec<(OrgId, Customer)>>,
    /// Callers read so far.
    pub(super) caller_reads: AtomicUsize,
    /// Reads of one agent or organization.
    pub(super) part_reads: AtomicUsize,
    /// When set, reads fail as if the database were down.
    pub(super) down: AtomicBool,
    pub(super) gate: Option<Arc<Notify>>,
    /// When set, each read of an agent or organization takes a permit.
    pub(super) part_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    pub(super) entered: Arc<Notify>,
    /// Number ranges, and how many times they were read.
    pub(super) ranges: Mutex<Vec<NumberRange>>,
    pub(super) range_reads: AtomicUsize,
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
        self.answer(found).await
    }

    async fn resolve_agent(
        &self,
        id: crate::domain::AgentId,
    ) -> Result<Option<Arc<Agent>>, ResolveError> {
        let gate = self.part_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        Ok(self.part(|r| (r.agent.id == id).then(|| r.agent.clone())))
    }

    async fn resolve_organization(
        &self,
        id: crate::domain::OrgId,
    ) -> Result<Option<Arc<Organization>>, ResolveError> {
        Ok(self.part(|r| (r.organization.id == id).then(|| r.organization.clone())))
    }

    async fn ranges(&self) -> Result<Vec<NumberRange>, ResolveError> {
        self.range_reads.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(ResolveError::Unavailable("connection refused".into()));
        }
        Ok(self.ranges.lock().unwrap().clone())
    }

    async fn resolve_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> Result<Option<Arc<Customer>>, ResolveError> {
        self.caller_reads.fetch_add(1, Ordering::SeqCst);
        let found = (self.customers.lock().unwrap().iter())
            .find(|(org, c)| *org == org_id && &c.phone == phone)
            .map(|(_, c)| Arc::new(c.clone()));
        self.answer(found).await
    }
}

impl Table {
    /// Answers a read with what it `found`: says it entered, waits at the
    /// gate if there is one, and fails if the table is down.
    async fn answer<T>(&self, found: T) -> Result<T, ResolveError> {
        self.entered.notify_one();
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(ResolveError::Unavailable("connection refused".into()));
        }
        Ok(found)
    }

    /// Routes read so far.
    pub(super) fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// One agent or organization, `pick`ed from the first route that has it.
    fn part<T>(&self, pick: impl Fn(&Route) -> Option<T>) -> Option<T> {
        self.part_reads.fetch_add(1, Ordering::SeqCst);
        let routes = self.routes.lock().unwrap();
        routes.iter().find_map(pick)
    }
}

pub(super) fn route(number: &str, agent_name: &str) -> Route {
    Route {
        number: E164::from_canonical(number).unwrap(),
        number_active: true,
        provisioned: Provisioned::Number {
            id: Uuid::from_u128(3),
            concurrency_limit: None,
        },
        organization: Arc::new(Organization {
            id: crate::domain::OrgId(Uuid::from_u128(1)),
            slug: "acme".into(),
            name: "Acme".into(),
            plan_tier: crate::domain::PlanTier::Pro,
            settings: Default::default(),
            concurrency_limit: None,
            is_active: true,
            policy: None,
        }),
        agent: Arc::new(Agent {
            id: crate::domain::AgentId(Uuid::from_u128(2)),
            name: agent_name.into(),
            voice_id: "v".into(),
            llm_config: Default::default(),
            is_active: true,
            concurrency_limit: None,
        }),
    }
}

pub(super) fn settings() -> CacheSettings {
    CacheSettings {
        capacity: 1000,
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(60),
        unconfirmed_ttl: Duration::from_secs(60),
        max_stale: Duration::from_secs(600),
    }
}

/// [`settings`] under which every entry is due a refresh as soon as it is
/// made.
pub(super) fn due_at_once() -> CacheSettings {
    CacheSettings {
        ttl: Duration::ZERO,
        ..settings()
    }
}

/// [`settings`] under which no entry is trusted while the invalidation
/// feed is down.
pub(super) fn distrustful() -> CacheSettings {
    CacheSettings {
        unconfirmed_ttl: Duration::ZERO,
        ..settings()
    }
}

pub(super) fn number() -> E164 {
    E164::from_canonical("+14155550100").unwrap()
}

/// A confirmed cache over a table holding `number()` → `agent_name`
/// (nothing when `None`), reads held at `gate` when given.
pub(super) fn cache_over(
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

/// A lookup of `number()`, in a task of its own.
pub(super) fn resolve_in_task(
    cache: &Arc<RouteCache<Table>>,
) -> JoinHandle<Result<Option<Route>, ResolveError>> {
    let cache = cache.clone();
    tokio::spawn(async move { cache.resolve(&number()).await })
}

/// Waits until no change is settling in the tiers below.
pub(super) async fn settled<R: Resolver>(cache: &RouteCache<R>) {
    while cache.settling.iter().any(|s| s.load(Ordering::Acquire) > 0) {
        tokio::task::yield_now().await;
    }
}

/// The agent's name in the next lookup of `number()`, which must read
/// the source (held at `gate`) rather than answer from a stale entry.
pub(super) async fn reread(cache: &Arc<RouteCache<Table>>, gate: &Notify) -> String {
    let next = resolve_in_task(cache);
    tokio::time::timeout(Duration::from_secs(5), cache.inner().entered.notified())
        .await
        .expect("the next lookup reads the source instead of a stale entry");
    gate.notify_one();
    next.await.unwrap().unwrap().unwrap().agent.name.clone()
}
