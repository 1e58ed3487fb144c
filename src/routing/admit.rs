//! Admission of a call decided for an agent, and overflow: refused at a
//! level, the policy's overflow rules for that level decide instead.

use std::sync::Arc;

use super::{decide::Walk, CallDecision, MatchedRule, RouteError, Router};
use crate::{
    admission::{Decision, LeaseScope},
    domain::{Agent, Directory, Resolver},
};

impl<R: Resolver, D: Directory> Router<R, D> {
    /// Admits a call decided for `agent` under its limits. Refused at a
    /// level, the policy's overflow rules for that level decide instead;
    /// an overflow to another agent is admitted once more (one round trip
    /// more, on overflow only), and refused if that one is full too.
    pub(super) async fn admit(
        &self,
        walk: &mut Walk<'_>,
        agent: Arc<Agent>,
        rule: Option<MatchedRule>,
    ) -> Result<CallDecision, RouteError> {
        let route = walk.route;
        let scope = LeaseScope::of(&route.organization, &agent, &route.provisioned);
        let limits = self
            .admission
            .limits(&route.organization, &agent, &route.provisioned);
        let decision = self.admission.admit(scope, limits, walk.call_id).await;
        let refused = match decision {
            Decision::Refused { level, .. } => level,
            other => {
                if let Some(refusal) = RouteError::refusal(&other) {
                    return Err(refusal);
                }
                return Ok(CallDecision::Agent { agent, rule });
            }
        };
        match self.decide(walk, Some(refused)).await? {
            Some(CallDecision::Agent {
                agent: overflow_agent,
                rule,
            }) => {
                let scope =
                    LeaseScope::of(&route.organization, &overflow_agent, &route.provisioned);
                let limits =
                    self.admission
                        .limits(&route.organization, &overflow_agent, &route.provisioned);
                let again = self.admission.admit(scope, limits, walk.call_id).await;
                match RouteError::refusal(&again) {
                    Some(refusal) => Err(refusal),
                    None => Ok(CallDecision::Agent {
                        agent: overflow_agent,
                        rule,
                    }),
                }
            }
            Some(elsewhere) => Ok(elsewhere),
            None => Err(RouteError::refusal(&decision).expect("a refusal")),
        }
    }
}
