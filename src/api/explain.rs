//! `ExplainRoute`: the domain's [`Explanation`] as protobuf.
//!
//! The outcome is named by passing the refusal `RouteCall` would answer
//! with through the one error → status mapping ([`super::status`]), so its
//! reason, code and message are exactly what a gateway would get.

use clap::ValueEnum;

use super::{code_name, status};
use crate::{
    admission::{Decision, LimitSource, Preview},
    domain::{Resolver, Tier},
    proto::{self, ExplainRouteRequest, ExplainRouteResponse},
    routing::{ExplainedNumber, Explanation, RouteError, Router, StepOutcome},
};

/// The handler's body: explains the request's number with `router`.
pub(super) async fn explain_route<R: Resolver>(
    router: &Router<R>,
    request: ExplainRouteRequest,
) -> Result<ExplainRouteResponse, RouteError> {
    let explanation = router
        .explain(
            &request.number,
            &request.default_region,
            &request.caller_number,
        )
        .await?;
    Ok(ExplainRouteResponse::from(explanation))
}

impl From<Explanation> for ExplainRouteResponse {
    fn from(explanation: Explanation) -> Self {
        let (outcome, outcome_code, outcome_message) = match explanation.refusal {
            None => ("ok".to_string(), "OK", String::new()),
            Some(refusal) => {
                let answer = status::answer(&refusal);
                (
                    answer.reason.to_string(),
                    code_name(answer.code),
                    answer.message,
                )
            }
        };
        let lookup = explanation.lookup.as_ref();
        let route = lookup.and_then(|lookup| lookup.route.as_ref());
        ExplainRouteResponse {
            number: Some(number(&explanation.number)),
            source: lookup.map_or(proto::RouteSource::Unspecified, |lookup| {
                match lookup.tier {
                    Tier::L1 => proto::RouteSource::L1,
                    Tier::L2 => proto::RouteSource::L2,
                    Tier::L3 => proto::RouteSource::L3,
                }
            }) as i32,
            // only a cache keeps an answer of "no such number"; L3 is asked
            negative_entry: lookup
                .is_some_and(|lookup| lookup.route.is_none() && lookup.tier != Tier::L3),
            stale: lookup.is_some_and(|lookup| lookup.stale),
            binding: route.map(|route| proto::RouteBinding {
                organization_id: route.organization.id.to_string(),
                agent_id: route.agent.id.to_string(),
                number_active: route.number_active,
                organization_active: route.organization.is_active,
                agent_active: route.agent.is_active,
            }),
            route: route.map(proto::Route::from),
            outcome,
            outcome_code: outcome_code.to_string(),
            outcome_message,
            caller: explanation
                .caller
                .as_ref()
                .map(|caller| proto::CallerExplanation {
                    number: Some(number(caller)),
                    customer: explanation.customer.as_deref().map(proto::Customer::from),
                }),
            admission: explanation.admission.as_ref().map(admission),
            decision: explanation.decision.as_ref().map(proto::Decision::from),
            evaluated_at: Some(prost_types::Timestamp {
                seconds: explanation.evaluated_at.as_second(),
                nanos: explanation.evaluated_at.subsec_nanosecond(),
            }),
            schedules: explanation
                .schedules
                .iter()
                .map(|schedule| proto::ScheduleExplanation {
                    name: schedule.name.clone(),
                    time_zone: schedule.time_zone.clone(),
                    local_time: schedule
                        .state
                        .map(|(local, _)| local.to_string())
                        .unwrap_or_default(),
                    open: schedule.state.is_some_and(|(_, open)| open),
                })
                .collect(),
            rules: explanation
                .steps
                .iter()
                .map(|step| proto::RuleExplanation {
                    id: step.rule_id.to_string(),
                    name: step.name.to_string(),
                    list: step.list.to_string(),
                    position: step.position,
                    overflow_level: step
                        .overflow_pass
                        .map(|level| level.as_str().to_string())
                        .unwrap_or_default(),
                    matched: matches!(step.outcome, StepOutcome::Matched),
                    reason: step.outcome.to_string(),
                })
                .collect(),
        }
    }
}

fn number(explained: &ExplainedNumber) -> proto::NumberExplanation {
    let (e164, error) = match &explained.result {
        Ok(number) => (number.to_string(), String::new()),
        Err(error) => (String::new(), error.clone()),
    };
    proto::NumberExplanation {
        raw: explained.raw.clone(),
        e164,
        method: explained.normalization.method.as_str().to_string(),
        uri_scheme: explained
            .normalization
            .uri_scheme
            .unwrap_or_default()
            .to_string(),
        description: explained.normalization.to_string(),
        error,
    }
}

fn admission(preview: &Preview) -> proto::AdmissionExplanation {
    use proto::AdmissionDecision as Wire;
    let decision = match preview.decision {
        // a new call cannot be a retry; mapped for completeness
        Decision::Admitted { .. } | Decision::AlreadyAdmitted { .. } => Wire::Admit,
        Decision::Refused { .. } => Wire::Refuse,
        Decision::AdmittedOverLimit { .. } => Wire::AdmitOverLimit,
        Decision::AdmittedUnchecked => Wire::AdmitUnchecked,
        Decision::RefusedUnchecked => Wire::RefuseUnchecked,
        Decision::Unlimited => Wire::Unlimited,
    };
    proto::AdmissionExplanation {
        // as spelled in the configuration
        mode: setting_name(&preview.mode),
        limit: preview.limit,
        limit_source: match preview.limit_source {
            LimitSource::Organization => "organization",
            LimitSource::PlanTier => "plan_tier",
        }
        .to_string(),
        active_calls: preview.active,
        decision: decision as i32,
        on_redis_down: setting_name(&preview.on_redis_down),
        levels: preview
            .levels
            .iter()
            .map(|level| proto::LimitExplanation {
                level: level.level.as_str().to_string(),
                limit: level.limit,
                active_calls: level.active,
            })
            .collect(),
    }
}

/// A setting's value as `SWITCHBOARD_*` spells it.
fn setting_name(value: &impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}
