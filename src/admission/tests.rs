use uuid::Uuid;

use super::*;
use crate::{domain::AgentId, store::redis_link::RedisMode};

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
    let nowhere = || {
        RedisLink::new(
            "redis://127.0.0.1:1/",
            RedisMode::Standalone,
            None,
            Duration::from_millis(50),
        )
    };
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
