//! Admission: each organization's concurrent-call limit, enforced with
//! leases in Redis, shared by every replica.
//!
//! A lease is a member of the organization's sorted set
//! `<prefix>:v1:leases:<org_id>`: the call id, scored by the lease's expiry
//! (milliseconds, Redis server time). Taking one is a single Lua script that
//! drops expired leases, counts the rest and adds the call only if the count
//! is under the limit, so concurrent calls on any number of replicas can
//! never overshoot. A lease is released by `EndCall` (`ZREM`, idempotent),
//! or expires after the maximum call duration when that never comes: no
//! counter to drift, nothing to reconcile.
//!
//! A call's lease is keyed by its call id, which is derived from the
//! gateway's call id: a retried `RouteCall` finds its own lease and is
//! admitted again without taking a second slot.
//!
//! `EndCall` and `RecordUsage` carry only the call id, so admission also
//! remembers which organization a call belongs to (`…:call:<call_id>`),
//! written next to the lease and kept for a day past the longest call.
//!
//! The limit is the organization's `concurrency_limit` when set, else its
//! plan tier's default. When Redis cannot be asked, the configured
//! [`RedisDownPolicy`] decides; shadow mode takes leases and reports what it
//! would have refused without refusing anything.
//!
//! [`Admission::preview`] says what admission would decide for a new call
//! now (for `ExplainRoute`): it counts live leases with a read-only script
//! and takes, releases and reaps nothing.

use std::time::{Duration, Instant};

use redis::{aio::MultiplexedConnection, AsyncCommands, Script};

use crate::{
    domain::{CallId, OrgId, Organization, PlanTier},
    store::redis_link::{CommandError, RedisLink},
    telemetry::series::{AdmissionOutcome, ReleaseOutcome},
};

/// Version of the key layout, part of every key.
const LAYOUT: &str = "v1";

/// How long the call → organization mapping outlives the longest call:
/// usage is often reported after the call has ended.
const CALL_ORG_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Takes a lease for `ARGV[1]` in the organization's set `KEYS[1]`.
///
/// Returns `{code, active}`: code 0 = refused (at the limit), 1 = admitted,
/// 2 = the call already holds a lease (a retry), 3 = over the limit but
/// admitted (shadow mode); `active` counts live leases including this call's.
/// Public for the benchmarks, which run it alone as the floor of `RouteCall`.
pub const TAKE_LEASE: &str = r"
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local active = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {2, active}
end
local limit = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local over = active >= limit
if over and ARGV[4] == 'enforce' then
  return {0, active}
end
redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[1])
-- the set lives as long as its longest lease, so idle orgs leave nothing
if redis.call('PTTL', KEYS[1]) < lease_ms then
  redis.call('PEXPIRE', KEYS[1], lease_ms)
end
if over then
  return {3, active + 1}
end
return {1, active + 1}
";

/// Counts the live leases of the organization's set `KEYS[1]` at Redis
/// server time (the clock leases are scored by), without reaping the
/// expired ones: a lease is live while its expiry is after now.
const COUNT_LEASES: &str = r"
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
";

/// Whether limits are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdmissionMode {
    /// Calls over the limit are refused.
    Enforce,
    /// Limits are evaluated and leases taken, but nothing is refused: calls
    /// that would have been are logged and counted.
    Shadow,
    /// No limits, no leases.
    Off,
}

/// What happens to a call when Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisDownPolicy {
    /// Admit it unchecked (fail open): a Redis outage does not stop calls.
    Admit,
    /// Refuse it (fail closed): no call goes ahead unmetered.
    Reject,
}

impl RedisDownPolicy {
    /// The decision for a call whose leases cannot be counted.
    pub fn decision(self) -> Decision {
        match self {
            RedisDownPolicy::Admit => Decision::AdmittedUnchecked,
            RedisDownPolicy::Reject => Decision::RefusedUnchecked,
        }
    }
}

/// Default concurrent-call limits by plan tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    pub starter: u32,
    pub pro: u32,
    pub enterprise: u32,
}

/// Where an organization's limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// The organization's own `concurrency_limit`.
    Organization,
    /// The default of the organization's plan tier.
    PlanTier,
}

impl PlanLimits {
    /// The organization's limit: its own override, else its tier's. An
    /// unknown tier (a newer schema) gets the smallest.
    pub fn for_org(&self, org: &Organization) -> u32 {
        self.explain(org).0
    }

    /// The organization's limit and where it comes from.
    pub fn explain(&self, org: &Organization) -> (u32, LimitSource) {
        if let Some(limit) = org.concurrency_limit {
            return (u32::try_from(limit).unwrap_or(0), LimitSource::Organization);
        }
        let limit = match org.plan_tier {
            PlanTier::Starter => self.starter,
            PlanTier::Pro => self.pro,
            PlanTier::Enterprise => self.enterprise,
        };
        (limit, LimitSource::PlanTier)
    }
}

/// Admission settings.
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    pub mode: AdmissionMode,
    pub on_redis_down: RedisDownPolicy,
    pub limits: PlanLimits,
    /// Lifetime of a lease: the longest a call may hold its slot without an
    /// `EndCall`.
    pub max_call_duration: Duration,
    /// Longest wait for Redis on the call path.
    pub timeout: Duration,
    /// Namespace of every key, as for the route cache.
    pub key_prefix: String,
}

/// What admission decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The call holds a lease.
    Admitted { limit: u32, active: u32 },
    /// The call already held a lease: a retry of an admitted call.
    AlreadyAdmitted { limit: u32, active: u32 },
    /// The organization is at its limit.
    Refused { limit: u32, active: u32 },
    /// Over the limit, admitted because admission runs in shadow mode.
    AdmittedOverLimit { limit: u32, active: u32 },
    /// Redis could not be asked and the policy admits.
    AdmittedUnchecked,
    /// Redis could not be asked and the policy refuses.
    RefusedUnchecked,
    /// Admission is off.
    Unlimited,
}

impl Decision {
    /// Whether the call may go ahead.
    pub fn admits(self) -> bool {
        !matches!(self, Decision::Refused { .. } | Decision::RefusedUnchecked)
    }

    /// Label of `switchboard_admission_decisions_total`.
    fn outcome(self) -> AdmissionOutcome {
        match self {
            Decision::Admitted { .. } => AdmissionOutcome::Admitted,
            Decision::AlreadyAdmitted { .. } => AdmissionOutcome::Retry,
            Decision::Refused { .. } => AdmissionOutcome::Refused,
            Decision::AdmittedOverLimit { .. } => AdmissionOutcome::ShadowRefused,
            Decision::AdmittedUnchecked => AdmissionOutcome::RedisDownAdmitted,
            Decision::RefusedUnchecked => AdmissionOutcome::RedisDownRefused,
            Decision::Unlimited => AdmissionOutcome::Unlimited,
        }
    }
}

/// What admission would decide for a new call of one organization now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preview {
    pub mode: AdmissionMode,
    /// What decides while Redis cannot be asked.
    pub on_redis_down: RedisDownPolicy,
    pub limit: u32,
    pub limit_source: LimitSource,
    /// Live leases now; `None` when Redis could not be asked, or admission
    /// is off (and does not look).
    pub active: Option<u32>,
    /// The decision for a new call: `Admitted`, `Refused`,
    /// `AdmittedOverLimit`, `AdmittedUnchecked`, `RefusedUnchecked` or
    /// `Unlimited`, with `active` counting the leases held before it.
    pub decision: Decision,
}

/// Redis could not answer within the timeout.
#[derive(Debug, thiserror::Error)]
#[error("Redis unavailable for admission: {0}")]
pub struct AdmissionError(#[from] CommandError);

/// The admission controller; cheap to share.
pub struct Admission {
    connection: RedisLink,
    settings: AdmissionSettings,
    take_lease: Script,
    count_leases: Script,
}

impl Admission {
    pub fn new(connection: RedisLink, settings: AdmissionSettings) -> Self {
        Self {
            connection,
            settings,
            take_lease: Script::new(TAKE_LEASE),
            count_leases: Script::new(COUNT_LEASES),
        }
    }

    pub fn settings(&self) -> &AdmissionSettings {
        &self.settings
    }

    /// Decides whether `call_id` may go ahead for `org`, taking its lease.
    /// Never fails: an unreachable Redis is decided by the policy, logged
    /// and counted.
    pub async fn admit(&self, org: &Organization, call_id: CallId) -> Decision {
        let started = Instant::now();
        let decision = match self.settings.mode {
            AdmissionMode::Off => Decision::Unlimited,
            mode => {
                let limit = self.settings.limits.for_org(org);
                match self.take_lease(org.id, call_id, limit, mode).await {
                    Ok(decision) => decision,
                    // counted by outcome; the outage is logged by `command`
                    Err(_) => self.settings.on_redis_down.decision(),
                }
            }
        };
        if let Decision::AdmittedOverLimit { limit, active } = decision {
            tracing::info!(
                org_id = %org.id,
                %call_id,
                limit,
                active,
                "shadow mode: call over its organization's limit admitted"
            );
        }
        metrics::counter!("switchboard_admission_decisions_total", "outcome" => <&str>::from(decision.outcome()))
            .increment(1);
        metrics::histogram!("switchboard_admission_seconds")
            .record(started.elapsed().as_secs_f64());
        decision
    }

    async fn take_lease(
        &self,
        org_id: OrgId,
        call_id: CallId,
        limit: u32,
        mode: AdmissionMode,
    ) -> Result<Decision, AdmissionError> {
        let lease_ms = self.settings.max_call_duration.as_millis() as u64;
        let mode = if mode == AdmissionMode::Enforce {
            "enforce"
        } else {
            "shadow"
        };
        let mut invocation = self.take_lease.key(self.lease_key(org_id));
        invocation
            .arg(call_id.to_string())
            .arg(limit)
            .arg(lease_ms)
            .arg(mode);
        let org_ttl = (self.settings.max_call_duration + CALL_ORG_GRACE).as_secs();
        let call_key = self.call_key(call_id);
        // two commands, so that no script touches two keys (Redis Cluster
        // keeps them on different slots); the multiplexed connection
        // pipelines them into one round trip
        let (code, active): (u8, u32) = self
            .command(|mut c| async move {
                let mut mapping = c.clone();
                let (lease, mapped) = tokio::join!(
                    invocation.invoke_async::<(u8, u32)>(&mut c),
                    mapping.set_ex::<_, _, ()>(call_key, org_id.to_string(), org_ttl),
                );
                mapped?;
                lease
            })
            .await?;
        Ok(match code {
            0 => Decision::Refused { limit, active },
            2 => Decision::AlreadyAdmitted { limit, active },
            3 => Decision::AdmittedOverLimit { limit, active },
            _ => Decision::Admitted { limit, active },
        })
    }

    /// What [`Admission::admit`] would decide for a new call of `org` now,
    /// without taking a lease or writing anything, and without counting in
    /// the decision metrics. Bounded by the admission timeout like `admit`.
    pub async fn preview(&self, org: &Organization) -> Preview {
        let (limit, limit_source) = self.settings.limits.explain(org);
        let mut preview = Preview {
            mode: self.settings.mode,
            on_redis_down: self.settings.on_redis_down,
            limit,
            limit_source,
            active: None,
            decision: Decision::Unlimited,
        };
        if self.settings.mode == AdmissionMode::Off {
            return preview;
        }
        let invocation = self.count_leases.key(self.lease_key(org.id));
        let counted: Result<u32, _> = self
            .command(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await;
        preview.decision = match counted {
            Ok(active) => {
                preview.active = Some(active);
                match (active >= limit, self.settings.mode) {
                    (false, _) => Decision::Admitted { limit, active },
                    (true, AdmissionMode::Enforce) => Decision::Refused { limit, active },
                    (true, _) => Decision::AdmittedOverLimit { limit, active },
                }
            }
            Err(error) => {
                tracing::debug!(%error, org_id = %org.id, "leases not counted");
                self.settings.on_redis_down.decision()
            }
        };
        preview
    }

    /// Releases the call's lease. Idempotent: releasing a released or
    /// expired lease does nothing.
    pub async fn release(&self, org_id: OrgId, call_id: CallId) -> Result<(), AdmissionError> {
        if self.settings.mode == AdmissionMode::Off {
            return Ok(());
        }
        let key = self.lease_key(org_id);
        let removed: u32 = self
            .command(|mut c| async move { c.zrem(key, call_id.to_string()).await })
            .await?;
        let outcome = if removed > 0 {
            ReleaseOutcome::Released
        } else {
            ReleaseOutcome::NotHeld
        };
        metrics::counter!("switchboard_admission_releases_total", "outcome" => <&str>::from(outcome))
            .increment(1);
        Ok(())
    }

    /// The organization a call was admitted for, as remembered at admission.
    pub async fn call_org(&self, call_id: CallId) -> Result<Option<OrgId>, AdmissionError> {
        let key = self.call_key(call_id);
        let org: Option<String> = self
            .command(|mut c| async move { c.get(key).await })
            .await?;
        Ok(org.and_then(|org| org.parse().ok()))
    }

    /// Runs one Redis exchange within the admission timeout.
    async fn command<T, F>(
        &self,
        run: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Result<T, AdmissionError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        Ok(self.connection.run(self.settings.timeout, run).await?)
    }

    fn lease_key(&self, org_id: OrgId) -> String {
        format!("{}:{LAYOUT}:leases:{org_id}", self.settings.key_prefix)
    }

    fn call_key(&self, call_id: CallId) -> String {
        format!("{}:{LAYOUT}:call:{call_id}", self.settings.key_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(plan_tier: &str, concurrency_limit: Option<i32>) -> Organization {
        Organization {
            id: OrgId::default(),
            slug: "acme".into(),
            name: "Acme".into(),
            plan_tier: plan_tier.parse().unwrap(),
            settings: Default::default(),
            concurrency_limit,
            is_active: true,
        }
    }

    fn settings(mode: AdmissionMode, on_redis_down: RedisDownPolicy) -> AdmissionSettings {
        AdmissionSettings {
            mode,
            on_redis_down,
            limits: PlanLimits {
                starter: 5,
                pro: 50,
                enterprise: 500,
            },
            max_call_duration: Duration::from_secs(3600),
            timeout: Duration::from_millis(25),
            key_prefix: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_preview_without_redis_is_decided_by_the_policy_and_off_asks_nothing() {
        // nothing listens on port 1: never connected
        let nowhere = || RedisLink::new("redis://127.0.0.1:1/", None, Duration::from_millis(50));
        for (mode, policy, decision) in [
            (
                AdmissionMode::Enforce,
                RedisDownPolicy::Admit,
                Decision::AdmittedUnchecked,
            ),
            (
                AdmissionMode::Shadow,
                RedisDownPolicy::Reject,
                Decision::RefusedUnchecked,
            ),
            (
                AdmissionMode::Off,
                RedisDownPolicy::Reject,
                Decision::Unlimited,
            ),
        ] {
            let admission = Admission::new(nowhere().unwrap(), settings(mode, policy));
            let preview = admission.preview(&org("pro", None)).await;
            assert_eq!(preview.decision, decision, "{mode:?}, {policy:?}");
            assert_eq!(preview.active, None);
            assert_eq!(
                (preview.limit, preview.limit_source),
                (50, LimitSource::PlanTier)
            );
        }
        let admission = Admission::new(
            nowhere().unwrap(),
            settings(AdmissionMode::Enforce, RedisDownPolicy::Admit),
        );
        let preview = admission.preview(&org("pro", Some(3))).await;
        assert_eq!(
            (preview.limit, preview.limit_source),
            (3, LimitSource::Organization)
        );
    }

    #[test]
    fn the_override_beats_the_tier() {
        let limits = PlanLimits {
            starter: 5,
            pro: 50,
            enterprise: 500,
        };
        assert_eq!(limits.for_org(&org("starter", None)), 5);
        assert_eq!(limits.for_org(&org("pro", None)), 50);
        assert_eq!(limits.for_org(&org("enterprise", None)), 500);
        // a tier the schema does not have never reaches admission: the
        // store refuses the row
        assert!("platinum".parse::<PlanTier>().is_err());
        assert_eq!(limits.for_org(&org("enterprise", Some(7))), 7);
        assert_eq!(limits.for_org(&org("pro", Some(0))), 0);
        assert_eq!(
            limits.explain(&org("enterprise", Some(7))),
            (7, LimitSource::Organization)
        );
        assert_eq!(
            limits.explain(&org("pro", None)),
            (50, LimitSource::PlanTier)
        );
    }
}
