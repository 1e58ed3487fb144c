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
//! [`Admission::preview`] says what admission would decide for a new call
//! now (for `ExplainRoute`): it counts live leases at each level with a
//! read-only script and takes, releases and reaps nothing.

use std::time::{Duration, Instant};

use redis::{aio::MultiplexedConnection, AsyncCommands, Script};

use uuid::Uuid;

use crate::{
    domain::{
        policy::LimitLevel, Agent, AgentId, CallId, OrgId, Organization, PlanTier, Provisioned,
    },
    store::redis_link::{CommandError, RedisLink},
    telemetry::series::{AdmissionOutcome, ReleaseOutcome},
};

/// Version of the key layout, part of every key.
const LAYOUT: &str = "v1";

/// How long the call → organization mapping outlives the longest call:
/// usage is often reported after the call has ended.
const CALL_ORG_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Takes a lease for `ARGV[1]` in the sets of the organization
/// (`KEYS[1]`), the agent (`KEYS[2]`) and the number (`KEYS[3]`), one Redis
/// Cluster slot. `ARGV[4..6]` are the three levels' limits, `-1` for none.
///
/// Returns `{code, level, active, limit}`: code 0 = refused (at the limit of
/// `level`: 1 organization, 2 agent, 3 number), 1 = admitted, 2 = the call
/// already holds a lease (a retry), 3 = over the limit of `level` but
/// admitted (shadow mode). `active` and `limit` are the refusing level's
/// (the organization's when admitted), `active` counting live leases
/// including this call's when admitted. Public for the benchmarks, which run
/// it alone as the floor of `RouteCall`.
pub const TAKE_LEASE: &str = r"
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local active = {}
for i = 1, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  active[i] = redis.call('ZCARD', KEYS[i])
end
local org_limit = tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {2, 1, active[1], org_limit}
end
local lease_ms = tonumber(ARGV[2])
local over = 0
for i = 1, 3 do
  local limit = tonumber(ARGV[3 + i])
  if limit >= 0 and active[i] >= limit then
    if ARGV[3] == 'enforce' then
      return {0, i, active[i], limit}
    end
    if over == 0 then over = i end
  end
end
for i = 1, 3 do
  redis.call('ZADD', KEYS[i], now + lease_ms, ARGV[1])
  -- a set lives as long as its longest lease, so idle ones leave nothing
  if redis.call('PTTL', KEYS[i]) < lease_ms then
    redis.call('PEXPIRE', KEYS[i], lease_ms)
  end
end
if over > 0 then
  return {3, over, active[over] + 1, tonumber(ARGV[3 + over])}
end
return {1, 1, active[1] + 1, org_limit}
";

/// Counts the live leases of the sets `KEYS[1..3]` (organization, agent,
/// number) at Redis server time (the clock leases are scored by), without
/// reaping the expired ones: a lease is live while its expiry is after now.
const COUNT_LEASES: &str = r"
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local counts = {}
for i = 1, #KEYS do
  counts[i] = redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf')
end
return counts
";

/// Releases `ARGV[1]`'s lease from the sets `KEYS` (one slot): how many
/// held it.
const RELEASE_LEASE: &str = r"
local removed = 0
for i = 1, #KEYS do
  removed = removed + redis.call('ZREM', KEYS[i], ARGV[1])
end
return removed
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

/// What a call's lease is held against: its organization, its agent and
/// its number (or range). Remembered per call, so that `EndCall` releases
/// all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseScope {
    pub org_id: OrgId,
    pub agent_id: AgentId,
    /// `phone_numbers.id` or `number_ranges.id`.
    pub number_id: Uuid,
}

impl LeaseScope {
    /// The scope of a call to `route`'s number answered by `agent`.
    pub fn of(org: &Organization, agent: &Agent, provisioned: &Provisioned) -> Self {
        Self {
            org_id: org.id,
            agent_id: agent.id,
            number_id: provisioned.id(),
        }
    }

    /// As remembered in Redis: `<org> <agent> <number>`.
    fn encode(&self) -> String {
        format!("{} {} {}", self.org_id, self.agent_id, self.number_id)
    }

    /// The organization alone (written by versions without per-agent
    /// limits) leaves the agent and number unknown.
    fn decode(raw: &str) -> Option<(OrgId, Option<Self>)> {
        let mut fields = raw.split(' ');
        let org_id: OrgId = fields.next()?.parse().ok()?;
        let scope = match (fields.next(), fields.next()) {
            (Some(agent), Some(number)) => Some(Self {
                org_id,
                agent_id: agent.parse().ok()?,
                number_id: number.parse().ok()?,
            }),
            _ => None,
        };
        Some((org_id, scope))
    }
}

/// The limits a call is admitted under, level by level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    pub organization: u32,
    pub organization_source: LimitSource,
    pub agent: Option<u32>,
    pub number: Option<u32>,
}

impl CallLimits {
    /// The limit of `level`, if it has one.
    pub fn of(&self, level: LimitLevel) -> Option<u32> {
        match level {
            LimitLevel::Organization => Some(self.organization),
            LimitLevel::Agent => self.agent,
            LimitLevel::Number => self.number,
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
}

impl Admission {
    pub fn new(connection: RedisLink, settings: AdmissionSettings) -> Self {
        Self {
            connection,
            settings,
            take_lease: Script::new(TAKE_LEASE),
            count_leases: Script::new(COUNT_LEASES),
            release_lease: Script::new(RELEASE_LEASE),
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
    async fn command<T, F>(
        &self,
        run: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Result<T, AdmissionError>
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
            policy: None,
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
            let preview = preview_of(&admission, &org("pro", None)).await;
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
        let preview = preview_of(&admission, &org("pro", Some(3))).await;
        assert_eq!(
            (preview.limit, preview.limit_source),
            (3, LimitSource::Organization)
        );
        assert_eq!(
            preview.levels.map(|level| (level.level, level.limit)),
            [
                (LimitLevel::Organization, Some(3)),
                (LimitLevel::Agent, Some(2)),
                (LimitLevel::Number, None)
            ]
        );
    }

    /// A preview for a call to a number without a limit, for an agent
    /// limited to 2.
    async fn preview_of(admission: &Admission, org: &Organization) -> Preview {
        let agent = Agent {
            id: AgentId::default(),
            name: "Reception".into(),
            voice_id: String::new(),
            llm_config: Default::default(),
            is_active: true,
            concurrency_limit: Some(2),
        };
        let number = Provisioned::Number {
            id: Uuid::from_u128(3),
            concurrency_limit: None,
        };
        let scope = LeaseScope::of(org, &agent, &number);
        admission
            .preview(scope, admission.limits(org, &agent, &number))
            .await
    }

    #[test]
    fn a_lease_scope_reads_back_and_an_organization_alone_still_reads() {
        let scope = LeaseScope {
            org_id: OrgId(Uuid::from_u128(1)),
            agent_id: AgentId(Uuid::from_u128(2)),
            number_id: Uuid::from_u128(3),
        };
        assert_eq!(
            LeaseScope::decode(&scope.encode()),
            Some((scope.org_id, Some(scope)))
        );
        assert_eq!(
            LeaseScope::decode(&scope.org_id.to_string()),
            Some((scope.org_id, None))
        );
        assert_eq!(LeaseScope::decode("not an id"), None);
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
