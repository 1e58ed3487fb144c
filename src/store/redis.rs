//! L2: the route cache shared by every replica, in Redis.
//!
//! [`RedisTier`] sits between the in-process cache and PostgreSQL and
//! implements [`Resolver`] like both. As in L1, the number's binding, the
//! agent and the organization are separate keys (`<prefix>:v3:n:<number>`,
//! `…:a:<id>`, `…:o:<id>`; the `v5` changes whenever the encoding does).
//! The binding is a short text naming its parts (`bound 1 <org> <agent>
//! <number id> <limit or ->`, or `absent`), the agent and organization
//! (with its policy) are MessagePack. Number ranges are not kept here: each
//! replica holds them all (see `routing::cache`).
//!
//! A lookup is two round trips: the binding, then the agent and the
//! organization it names, read at once (on a standalone Redis, pipelined on
//! the one connection; on a Redis Cluster, from their slots' masters in
//! parallel). One script could read all three in one round trip only by
//! reading keys it was not given, which a Redis Cluster refuses; and the
//! three cannot share a slot, because a number's binding is found by the
//! number alone, while an agent or an organization is shared by many
//! numbers and invalidated once for all of them. L2 is read only on an L1
//! miss, so the second round trip is paid on a replica's first call to a
//! number, not on the hot path (docs/capacity.md measures it).
//!
//! Redis is an optimisation, never a dependency: every command has its own
//! short timeout (the client can otherwise block for about a second while it
//! reconnects), and any failure or timeout falls through to the next tier,
//! counted in `switchboard_redis_fallbacks_total`. Fills happen off the call
//! path.
//!
//! Callers are kept the same way, one key per organization and phone
//! (`…:c:<org>:<phone>`): the customer, or that the caller is not one.
//!
//! Invalidation overwrites a key with a short-lived tombstone instead of
//! deleting it, and fills only write absent keys (`SET NX`): a replica whose
//! load read a row just before a change committed cannot put the old row
//! back while the tombstone stands, and the tombstone outlives any load.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use redis::{AsyncCommands, SetExpiry, SetOptions};
use serde::{Deserialize, Serialize};

use super::redis_link::{CommandError, Connection, RedisLink};
use uuid::Uuid;

use crate::domain::{
    Agent, AgentId, Change, Customer, NumberRange, OrgId, Organization, Peeked, Provisioned,
    ResolveError, Resolver, Route, Tier, E164,
};
use crate::telemetry::series::RedisFallback;

mod callers;

/// Version of the key layout and encoding, part of every key.
const LAYOUT: &str = "v5";

/// Written over an invalidated key. Longer than any load can take (loads
/// are bounded by the request timeout).
const TOMBSTONE: &[u8] = b"tombstone";
/// Invalidations run off the call path, and a tombstone that is not written
/// leaves the old value in L2 for its whole TTL: a tombstone gets at least
/// this long, and a second attempt, where a lookup gets one short try.
const TOMBSTONE_TIMEOUT_FLOOR: Duration = Duration::from_millis(50);
const TOMBSTONE_ATTEMPTS: u32 = 2;

/// L2 settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Lifetime of a cached route part. Zero turns L2 off for routes:
    /// nothing is read or filled, but invalidations still write tombstones,
    /// for the replicas that share this Redis with L2 on.
    pub ttl: Duration,
    /// Lifetime of a cached "no such number".
    pub negative_ttl: Duration,
    /// Longest wait for one Redis command.
    pub timeout: Duration,
    /// Lifetime of an invalidation tombstone.
    pub tombstone_ttl: Duration,
    /// Namespace of every key, so several deployments can share a Redis.
    pub key_prefix: String,
}

/// A number's binding as stored in L2: text that [`READ_ROUTE`] can read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Binding {
    Bound {
        number_active: bool,
        org_id: OrgId,
        agent_id: AgentId,
        /// `phone_numbers.id`.
        number_id: Uuid,
        concurrency_limit: Option<u32>,
    },
    Absent,
}

/// What L2 holds for a number.
enum L2Answer {
    /// Nothing usable: ask the next tier.
    Miss,
    /// A cached "no such number".
    NotProvisioned,
    Route(Route),
}

impl Binding {
    fn encode(self) -> Vec<u8> {
        match self {
            Binding::Bound {
                number_active,
                org_id,
                agent_id,
                number_id,
                concurrency_limit,
            } => {
                let limit = concurrency_limit.map_or_else(|| "-".to_string(), |l| l.to_string());
                format!(
                    "bound {} {org_id} {agent_id} {number_id} {limit}",
                    u8::from(number_active)
                )
                .into_bytes()
            }
            Binding::Absent => b"absent".to_vec(),
        }
    }

    /// `None` for anything else: a tombstone, another version's value.
    fn decode(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        if text == "absent" {
            return Some(Binding::Absent);
        }
        let mut fields = text.strip_prefix("bound ")?.split(' ');
        let number_active = match fields.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        let org_id = fields.next()?.parse().ok()?;
        let agent_id = fields.next()?.parse().ok()?;
        let number_id = fields.next()?.parse().ok()?;
        let concurrency_limit = match fields.next()? {
            "-" => None,
            limit => Some(limit.parse().ok()?),
        };
        fields.next().is_none().then_some(Binding::Bound {
            number_active,
            org_id,
            agent_id,
            number_id,
            concurrency_limit,
        })
    }
}

/// Redis in front of `R` (PostgreSQL).
pub struct RedisTier<R> {
    inner: Arc<R>,
    connection: RedisLink,
    settings: RedisSettings,
}

impl<R: Resolver> RedisTier<R> {
    /// A tier on a connection shared with other Redis users (admission).
    pub fn with_connection(connection: RedisLink, inner: R, settings: RedisSettings) -> Self {
        Self {
            inner: Arc::new(inner),
            connection,
            settings,
        }
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Runs one Redis command within the timeout; `None` on any failure.
    async fn command<T, F>(
        &self,
        what: &'static str,
        run: impl FnOnce(Connection) -> F,
    ) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.command_within(what, self.settings.timeout, run).await
    }

    /// Runs one Redis command within `timeout`; `None` on any failure.
    async fn command_within<T, F>(
        &self,
        what: &'static str,
        timeout: Duration,
        run: impl FnOnce(Connection) -> F,
    ) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match self.connection.run(timeout, run).await {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::debug!(%error, what, "Redis command failed");
                fallback(match error {
                    CommandError::NotConnected => RedisFallback::NotConnected,
                    CommandError::Failed(_) => RedisFallback::Error,
                    CommandError::TimedOut(_) => RedisFallback::Timeout,
                });
                None
            }
        }
    }

    /// What L2 alone holds for `number`.
    async fn cached(&self, number: &E164) -> L2Answer {
        self.read_cached(number).await.unwrap_or(L2Answer::Miss)
    }

    /// `None`: nothing usable in L2 (a miss, a tombstone, another layout's
    /// value, or Redis not answering).
    async fn read_cached(&self, number: &E164) -> Option<L2Answer> {
        let key = self.settings.number_key(number);
        let raw: Vec<u8> = self
            .command("get_binding", |mut c| async move { c.get(key).await })
            .await
            .flatten()?;
        let binding = Binding::decode(&raw)?;
        let Binding::Bound {
            number_active,
            org_id,
            agent_id,
            number_id,
            concurrency_limit,
        } = binding
        else {
            return Some(L2Answer::NotProvisioned);
        };
        // in two slots of a cluster: both at once
        let (agent_key, org_key) = (
            self.settings.agent_key(agent_id),
            self.settings.org_key(org_id),
        );
        let (agent, organization): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .command("get_parts", |c| async move {
                let (mut a, mut o) = (c.clone(), c);
                tokio::try_join!(a.get(agent_key), o.get(org_key))
            })
            .await?;
        let agent: Agent = decode(agent.as_deref()?)?;
        let organization: Organization = decode(organization.as_deref()?)?;
        // a value under a part's key is that part; checked all the same
        if agent.id != agent_id || organization.id != org_id {
            return None;
        }
        Some(L2Answer::Route(Route {
            number: number.clone(),
            number_active,
            provisioned: Provisioned::Number {
                id: number_id,
                concurrency_limit,
            },
            organization: Arc::new(organization),
            agent: Arc::new(agent),
        }))
    }

    /// One route part from L2, else from the next tier (`load`), which is
    /// then written to L2 off the call path.
    async fn part<T>(
        &self,
        key: String,
        load: impl std::future::Future<Output = Result<Option<Arc<T>>, ResolveError>>,
    ) -> Result<Option<Arc<T>>, ResolveError>
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        if self.settings.ttl.is_zero() {
            return load.await;
        }
        let get_key = key.clone();
        // no answer, or no value: both fall through to the next tier
        let raw: Option<Vec<u8>> = self
            .command("get", |mut c| async move { c.get(get_key).await })
            .await
            .flatten();
        if let Some(value) = raw.as_deref().and_then(decode::<T>) {
            return Ok(Some(Arc::new(value)));
        }
        let loaded = load.await?;
        if let Some(value) = &loaded {
            self.write_if_absent(vec![(key, encode(&**value), self.settings.ttl)]);
        }
        Ok(loaded)
    }

    /// Writes what was read from the next tier, off the call path, only
    /// where no value or tombstone stands.
    fn fill(&self, number: &E164, route: Option<&Route>) {
        let settings = &self.settings;
        let mut writes: Vec<(String, Vec<u8>, Duration)> = Vec::with_capacity(3);
        match route {
            None => writes.push((
                self.settings.number_key(number),
                Binding::Absent.encode(),
                settings.negative_ttl,
            )),
            // a range's number (not from the tiers below, which read only
            // numbers): nothing of its own to keep
            Some(Route {
                provisioned: Provisioned::Range { .. },
                ..
            }) => return,
            Some(route) => {
                let binding = Binding::Bound {
                    number_active: route.number_active,
                    org_id: route.organization.id,
                    agent_id: route.agent.id,
                    number_id: route.provisioned.id(),
                    concurrency_limit: route.provisioned.concurrency_limit(),
                };
                writes.push((
                    self.settings.number_key(number),
                    binding.encode(),
                    settings.ttl,
                ));
                writes.push((
                    self.settings.agent_key(route.agent.id),
                    encode(&*route.agent),
                    settings.ttl,
                ));
                writes.push((
                    self.settings.org_key(route.organization.id),
                    encode(&*route.organization),
                    settings.ttl,
                ));
            }
        }
        self.write_if_absent(writes);
    }

    /// Writes keys that hold neither a value nor a tombstone, off the call
    /// path.
    fn write_if_absent(&self, writes: Vec<(String, Vec<u8>, Duration)>) {
        let Some((connection, epoch)) = self.connection.get() else {
            return;
        };
        let timeout = self.settings.timeout;
        let link = self.connection.clone();
        tokio::spawn(async move {
            // one command per key (their slots differ on a cluster); sent
            // together, they share the connection's writes all the same
            let sets = writes.into_iter().map(|(key, value, ttl)| {
                let mut connection = connection.clone();
                let options = SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(SetExpiry::PX(ttl.as_millis() as u64));
                async move {
                    connection
                        .set_options::<_, _, redis::Value>(key, value, options)
                        .await
                }
            });
            let written =
                tokio::time::timeout(timeout * 4, futures::future::try_join_all(sets)).await;
            match written {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    link.failed(epoch, &error);
                    fallback(RedisFallback::Fill);
                }
                Err(_) => fallback(RedisFallback::Fill),
            }
        });
    }
}

impl<R: Resolver> Resolver for RedisTier<R> {
    type Source = R::Source;

    fn source(&self) -> &Self::Source {
        self.inner.source()
    }

    async fn resolve(&self, number: &E164) -> Result<Option<Route>, ResolveError> {
        if self.settings.ttl.is_zero() {
            return self.inner.resolve(number).await;
        }
        let started = Instant::now();
        let hit = match self.cached(number).await {
            L2Answer::Miss => None,
            L2Answer::NotProvisioned => Some(None),
            L2Answer::Route(route) => Some(Some(route)),
        };
        if let Some(route) = hit {
            metrics::counter!("switchboard_cache_hits_total", "tier" => "l2").increment(1);
            metrics::histogram!("switchboard_cache_lookup_seconds", "tier" => "l2")
                .record(started.elapsed().as_secs_f64());
            return Ok(route);
        }
        metrics::counter!("switchboard_cache_misses_total", "tier" => "l2").increment(1);
        let started = Instant::now();
        let route = self.inner.resolve(number).await?;
        metrics::counter!("switchboard_cache_hits_total", "tier" => "l3").increment(1);
        metrics::histogram!("switchboard_cache_lookup_seconds", "tier" => "l3")
            .record(started.elapsed().as_secs_f64());
        self.fill(number, route.as_ref());
        Ok(route)
    }

    async fn resolve_agent(&self, id: AgentId) -> Result<Option<Arc<Agent>>, ResolveError> {
        self.part(self.settings.agent_key(id), self.inner.resolve_agent(id))
            .await
    }

    async fn resolve_organization(
        &self,
        id: OrgId,
    ) -> Result<Option<Arc<Organization>>, ResolveError> {
        self.part(
            self.settings.org_key(id),
            self.inner.resolve_organization(id),
        )
        .await
    }

    fn ranges(
        &self,
    ) -> impl std::future::Future<Output = Result<Vec<NumberRange>, ResolveError>> + Send {
        self.inner.ranges()
    }

    /// L2's answer, else PostgreSQL's, without filling L2.
    async fn peek(&self, number: &E164) -> Result<Peeked, ResolveError> {
        if self.settings.ttl.is_zero() {
            return self.inner.peek(number).await;
        }
        let route = match self.cached(number).await {
            L2Answer::Miss => return self.inner.peek(number).await,
            L2Answer::NotProvisioned => None,
            L2Answer::Route(route) => Some(route),
        };
        Ok(Peeked {
            tier: Tier::L2,
            route,
            stale: false,
        })
    }

    fn resolve_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> impl std::future::Future<Output = Result<Option<Arc<Customer>>, ResolveError>> + Send {
        self.caller(org_id, phone)
    }

    fn peek_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> impl std::future::Future<Output = Result<Option<Arc<Customer>>, ResolveError>> + Send {
        self.peek_cached_caller(org_id, phone)
    }

    async fn invalidate(&self, change: &Change) {
        let key = match change {
            Change::Number(number) => self.settings.number_key(number),
            Change::Agent(id) => self.settings.agent_key(*id),
            Change::Organization(id) => self.settings.org_key(*id),
            Change::Customer(org_id, phone) => self.settings.caller_key(*org_id, phone),
            // ranges are not kept here
            Change::Range(_) => return self.inner.invalidate(change).await,
        };
        let ttl = self.settings.tombstone_ttl.as_millis() as u64;
        let timeout = self.settings.timeout.max(TOMBSTONE_TIMEOUT_FLOOR);
        let mut written = None;
        for _ in 0..TOMBSTONE_ATTEMPTS {
            let key = key.clone();
            written = self
                .command_within("tombstone", timeout, |mut c| async move {
                    c.pset_ex::<_, _, ()>(key, TOMBSTONE, ttl).await
                })
                .await;
            if written.is_some() {
                break;
            }
        }
        if written.is_none() {
            metrics::counter!("switchboard_redis_invalidation_failures_total").increment(1);
        }
        self.inner.invalidate(change).await;
    }
}

impl RedisSettings {
    fn number_key(&self, number: &E164) -> String {
        format!("{}:{LAYOUT}:n:{number}", self.key_prefix)
    }

    /// What the part keys start with.
    fn parts_prefix(&self) -> String {
        format!("{}:{LAYOUT}", self.key_prefix)
    }

    fn agent_key(&self, id: AgentId) -> String {
        format!("{}:a:{id}", self.parts_prefix())
    }

    fn org_key(&self, id: OrgId) -> String {
        format!("{}:o:{id}", self.parts_prefix())
    }

    fn caller_key(&self, org_id: OrgId, phone: &E164) -> String {
        format!("{}:c:{org_id}:{phone}", self.parts_prefix())
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("route parts always encode")
}

/// A tombstone or an undecodable value (another version's encoding) is a
/// miss.
fn decode<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Option<T> {
    if raw == TOMBSTONE {
        return None;
    }
    rmp_serde::from_slice(raw).ok()
}

fn fallback(why: RedisFallback) {
    metrics::counter!("switchboard_redis_fallbacks_total", "why" => <&str>::from(why)).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_round_trip_and_anything_else_is_a_miss() {
        let bound = Binding::Bound {
            number_active: false,
            org_id: OrgId(uuid::Uuid::from_u128(1)),
            agent_id: AgentId(uuid::Uuid::from_u128(2)),
            number_id: uuid::Uuid::from_u128(3),
            concurrency_limit: None,
        };
        assert_eq!(Binding::decode(&bound.encode()), Some(bound));
        let limited = Binding::Bound {
            number_active: true,
            org_id: OrgId(uuid::Uuid::from_u128(1)),
            agent_id: AgentId(uuid::Uuid::from_u128(2)),
            number_id: uuid::Uuid::from_u128(3),
            concurrency_limit: Some(7),
        };
        assert_eq!(Binding::decode(&limited.encode()), Some(limited));
        assert_eq!(
            Binding::decode(&Binding::Absent.encode()),
            Some(Binding::Absent)
        );
        for other in [
            TOMBSTONE,
            b"bound 2 00000000-0000-0000-0000-000000000001 00000000-0000-0000-0000-000000000002",
            b"bound 1 00000000-0000-0000-0000-000000000001",
            b"bound 1 00000000-0000-0000-0000-000000000001 00000000-0000-0000-0000-000000000002",
            b"bound 1 00000000-0000-0000-0000-000000000001 00000000-0000-0000-0000-000000000002 00000000-0000-0000-0000-000000000003 x",
            b"bound 1 00000000-0000-0000-0000-000000000001 00000000-0000-0000-0000-000000000002 00000000-0000-0000-0000-000000000003 - x",
            b"\x81\xa5Bound",
        ] {
            assert_eq!(
                Binding::decode(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
