//! Admission: concurrent-call limits, enforced with leases in Redis, shared
//! by every replica. Each organization has a limit; an agent and a number
//! (or a range of numbers) may have one of their own, within it.
//!
//! A lease is a member of a sorted set per level: the organization's
//! `<prefix>:v1:leases:<org_id>`, and beside it, hash-tagged to the same
//! Redis Cluster slot, the agent's `{<prefix>:v1:leases:<org_id>}:a:<agent>`
//! and the number's (or range's) `{…}:n:<id>`. Each member is the call id,
//! scored by the lease's expiry (milliseconds, Redis server time). Taking
//! one is a single Lua script over the three sets: it drops expired leases,
//! counts the rest at each level, and adds the call to all three only if
//! every level with a limit is under it, so concurrent calls on any number
//! of replicas can never overshoot at any level. A lease is released by
//! `EndCall` (`ZREM` from the three, idempotent), or expires after the
//! maximum call duration when that never comes. Every call is counted at
//! every level, limited or not, so a limit set later counts the calls
//! already up.
//!
//! A call's lease is keyed by its call id, which is derived from the
//! gateway's call id: a retried `RouteCall` finds its own lease and is
//! admitted again without taking a second slot.
//!
//! `EndCall` and `RecordUsage` carry only the call id, so admission also
//! remembers the call's organization, agent and number
//! (`…:call:<call_id>`: `<org> <agent> <number>`), written next to the lease
//! and kept for a day past the longest call.
//!
//! The organization's limit is its `concurrency_limit` when set, else its
//! plan tier's default. When Redis cannot be asked, the configured
//! [`RedisDownPolicy`] decides; shadow mode takes leases and reports what it
//! would have refused without refusing anything.
//!
//! Redis can lose leases (a failover, a restart) or keep them too long (a
//! lost release): [`reconcile`] rebuilds them from the call records.
//!
//! [`Admission::preview`] says what admission would decide for a new call
//! now (for `ExplainRoute`): it counts live leases at each level with a
//! read-only script and takes, releases and reaps nothing.

use std::time::{Duration, Instant};

use redis::{AsyncCommands, Script};

use crate::{
    domain::{policy::LimitLevel, Agent, CallId, OrgId, Organization, PlanTier, Provisioned},
    store::redis_link::{CommandError, Connection, RedisLink},
    telemetry::series::{AdmissionOutcome, ReleaseOutcome},
};

pub mod reconcile;
mod scope;
mod scripts;

pub use scope::{CallLimits, LeaseScope};

pub use scripts::TAKE_LEASE;
use scripts::{COUNT_LEASES, RECONCILE_LEASES, RELEASE_LEASE};

/// Version of the key layout, part of every key.
const LAYOUT: &str = "v1";

/// How long the call → organization mapping outlives the longest call:
/// usage is often reported after the call has ended.
const CALL_ORG_GRACE: Duration = Duration::from_secs(24 * 3600);

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
    /// The call holds a lease; the organization's limit and live calls.
    Admitted { limit: u32, active: u32 },
    /// The call already held a lease: a retry of an admitted call.
    AlreadyAdmitted { limit: u32, active: u32 },
    /// A level (the organization, the agent or the number) is at its limit.
    Refused {
        level: LimitLevel,
        limit: u32,
        active: u32,
    },
    /// Over a level's limit, admitted because admission runs in shadow mode.
    AdmittedOverLimit {
        level: LimitLevel,
        limit: u32,
        active: u32,
    },
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

    /// Whether the call holds a lease (to release when it ends).
    pub fn holds_lease(self) -> bool {
        matches!(
            self,
            Decision::Admitted { .. }
                | Decision::AlreadyAdmitted { .. }
                | Decision::AdmittedOverLimit { .. }
        )
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

/// One level of a [`Preview`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelPreview {
    pub level: LimitLevel,
    /// `None`: no limit at this level.
    pub limit: Option<u32>,
    /// Live leases now; `None` when Redis could not be asked, or admission
    /// is off (and does not look).
    pub active: Option<u32>,
}

/// What admission would decide for a new call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preview {
    pub mode: AdmissionMode,
    /// What decides while Redis cannot be asked.
    pub on_redis_down: RedisDownPolicy,
    /// The organization's limit and where it comes from.
    pub limit: u32,
    pub limit_source: LimitSource,
    /// The organization's live leases (as in `levels`).
    pub active: Option<u32>,
    /// The organization, the agent and the number, in that order.
    pub levels: [LevelPreview; 3],
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
    release_lease: Script,
    reconcile_leases: Script,
}

impl Admission {
    pub fn new(connection: RedisLink, settings: AdmissionSettings) -> Self {
        Self {
            connection,
            settings,
            take_lease: Script::new(TAKE_LEASE),
            count_leases: Script::new(COUNT_LEASES),
            release_lease: Script::new(RELEASE_LEASE),
            reconcile_leases: Script::new(RECONCILE_LEASES),
        }
    }

    pub fn settings(&self) -> &AdmissionSettings {
        &self.settings
    }

    /// The limits of a call to `provisioned`'s number for `agent` of `org`.
    pub fn limits(
        &self,
        org: &Organization,
        agent: &Agent,
        provisioned: &Provisioned,
    ) -> CallLimits {
        let (organization, organization_source) = self.settings.limits.explain(org);
        CallLimits {
            organization,
            organization_source,
            agent: agent.concurrency_limit,
            number: provisioned.concurrency_limit(),
        }
    }

    /// Decides whether `call_id` may go ahead under `limits`, taking its
    /// lease at every level of `scope`. Never fails: an unreachable Redis is
    /// decided by the policy, logged and counted.
    pub async fn admit(&self, scope: LeaseScope, limits: CallLimits, call_id: CallId) -> Decision {
        let started = Instant::now();
        let decision = match self.settings.mode {
            AdmissionMode::Off => Decision::Unlimited,
            mode => match self.take_lease(scope, limits, call_id, mode).await {
                Ok(decision) => decision,
                // counted by outcome; the outage is logged by `command`
                Err(_) => self.settings.on_redis_down.decision(),
            },
        };
        if let Decision::AdmittedOverLimit {
            level,
            limit,
            active,
        } = decision
        {
            tracing::info!(
                org_id = %scope.org_id,
                %call_id,
                level = level.as_str(),
                limit,
                active,
                "shadow mode: call over a limit admitted"
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
        scope: LeaseScope,
        limits: CallLimits,
        call_id: CallId,
        mode: AdmissionMode,
    ) -> Result<Decision, AdmissionError> {
        let lease_ms = self.settings.max_call_duration.as_millis() as u64;
        let mode = if mode == AdmissionMode::Enforce {
            "enforce"
        } else {
            "shadow"
        };
        let limit_arg = |limit: Option<u32>| limit.map_or(-1, i64::from);
        let mut invocation = self.take_lease.prepare_invoke();
        for key in self.lease_keys(&scope) {
            invocation.key(key);
        }
        invocation
            .arg(call_id.to_string())
            .arg(lease_ms)
            .arg(mode)
            .arg(i64::from(limits.organization))
            .arg(limit_arg(limits.agent))
            .arg(limit_arg(limits.number));
        let org_ttl = (self.settings.max_call_duration + CALL_ORG_GRACE).as_secs();
        let call_key = self.call_key(call_id);
        let remembered = scope.encode();
        // two commands, so that no script touches two slots (Redis Cluster
        // keeps the call's key apart from its organization's); the
        // multiplexed connection pipelines them into one round trip
        let (code, level, active, limit): (u8, u8, u32, i64) = self
            .command(|mut c| async move {
                let mut mapping = c.clone();
                let (lease, mapped) = tokio::join!(
                    invocation.invoke_async::<(u8, u8, u32, i64)>(&mut c),
                    mapping.set_ex::<_, _, ()>(call_key, remembered, org_ttl),
                );
                mapped?;
                lease
            })
            .await?;
        let level = match level {
            2 => LimitLevel::Agent,
            3 => LimitLevel::Number,
            _ => LimitLevel::Organization,
        };
        let limit = u32::try_from(limit).unwrap_or(0);
        Ok(match code {
            0 => {
                // a refused call is no call: its EndCall must not find it
                // (the mapping went out beside the script, to save the
                // round trip on every admitted call)
                let call_key = self.call_key(call_id);
                let forgotten: Result<(), _> = self
                    .command(|mut c| async move { c.del(call_key).await })
                    .await;
                if let Err(error) = forgotten {
                    tracing::debug!(%error, %call_id, "a refused call's mapping is left to expire");
                }
                Decision::Refused {
                    level,
                    limit,
                    active,
                }
            }
            2 => Decision::AlreadyAdmitted { limit, active },
            3 => Decision::AdmittedOverLimit {
                level,
                limit,
                active,
            },
            _ => Decision::Admitted { limit, active },
        })
    }

    /// What [`Admission::admit`] would decide for a new call now, without
    /// taking a lease or writing anything, and without counting in the
    /// decision metrics. Bounded by the admission timeout like `admit`.
    pub async fn preview(&self, scope: LeaseScope, limits: CallLimits) -> Preview {
        let mut preview = Preview {
            mode: self.settings.mode,
            on_redis_down: self.settings.on_redis_down,
            limit: limits.organization,
            limit_source: limits.organization_source,
            active: None,
            levels: LimitLevel::ALL.map(|level| LevelPreview {
                level,
                limit: limits.of(level),
                active: None,
            }),
            decision: Decision::Unlimited,
        };
        if self.settings.mode == AdmissionMode::Off {
            return preview;
        }
        let mut invocation = self.count_leases.prepare_invoke();
        for key in self.lease_keys(&scope) {
            invocation.key(key);
        }
        let counted: Result<Vec<u32>, _> = self
            .command(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await;
        preview.decision = match counted {
            Ok(counts) => {
                for (level, active) in preview.levels.iter_mut().zip(counts) {
                    level.active = Some(active);
                }
                preview.active = preview.levels[0].active;
                let full = preview
                    .levels
                    .iter()
                    .find_map(|l| match (l.limit, l.active) {
                        (Some(limit), Some(active)) if active >= limit => {
                            Some((l.level, limit, active))
                        }
                        _ => None,
                    });
                let org_active = preview.active.unwrap_or(0);
                match (full, self.settings.mode) {
                    (None, _) => Decision::Admitted {
                        limit: limits.organization,
                        active: org_active,
                    },
                    (Some((level, limit, active)), AdmissionMode::Enforce) => Decision::Refused {
                        level,
                        limit,
                        active,
                    },
                    (Some((level, limit, active)), _) => Decision::AdmittedOverLimit {
                        level,
                        limit,
                        active,
                    },
                }
            }
            Err(error) => {
                tracing::debug!(%error, org_id = %scope.org_id, "leases not counted");
                self.settings.on_redis_down.decision()
            }
        };
        preview
    }

    /// Releases the call's lease at every level of `scope`; with only the
    /// organization known (a call remembered by an older version, or found
    /// in the database alone), there only: the others expire. Idempotent:
    /// releasing a released or expired lease does nothing.
    pub async fn release(
        &self,
        org_id: OrgId,
        scope: Option<LeaseScope>,
        call_id: CallId,
    ) -> Result<(), AdmissionError> {
        if self.settings.mode == AdmissionMode::Off {
            return Ok(());
        }
        let mut invocation = self.release_lease.prepare_invoke();
        match scope {
            Some(scope) => {
                for key in self.lease_keys(&scope) {
                    invocation.key(key);
                }
            }
            None => {
                invocation.key(self.org_lease_key(org_id));
            }
        }
        invocation.arg(call_id.to_string());
        let removed: u32 = self
            .command(|mut c| async move { invocation.invoke_async(&mut c).await })
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

    /// The organization a call was admitted for, and the scope of its lease
    /// when remembered, as written at admission.
    pub async fn call_lease(
        &self,
        call_id: CallId,
    ) -> Result<Option<(OrgId, Option<LeaseScope>)>, AdmissionError> {
        let key = self.call_key(call_id);
        let remembered: Option<String> = self
            .command(|mut c| async move { c.get(key).await })
            .await?;
        Ok(remembered.as_deref().and_then(LeaseScope::decode))
    }

    /// Runs one Redis exchange within the admission timeout.
    async fn command<T, F>(&self, run: impl FnOnce(Connection) -> F) -> Result<T, AdmissionError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        Ok(self.connection.run(self.settings.timeout, run).await?)
    }

    fn org_lease_key(&self, org_id: OrgId) -> String {
        format!("{}:{LAYOUT}:leases:{org_id}", self.settings.key_prefix)
    }

    /// The organization's, the agent's and the number's sets, in one
    /// Redis Cluster slot: the others' hash tag is the organization's whole
    /// key, which has no tag of its own.
    fn lease_keys(&self, scope: &LeaseScope) -> [String; 3] {
        let org = self.org_lease_key(scope.org_id);
        let agent = format!("{{{org}}}:a:{}", scope.agent_id);
        let number = format!("{{{org}}}:n:{}", scope.number_id);
        [org, agent, number]
    }

    fn call_key(&self, call_id: CallId) -> String {
        format!("{}:{LAYOUT}:call:{call_id}", self.settings.key_prefix)
    }
}

#[cfg(test)]
mod tests;
