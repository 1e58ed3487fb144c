//! `explain`: what the router would do with a call to a number, and why,
//! for operators and support, without doing any of it.
//!
//! [`Router::explain`] walks `route_call`'s steps (normalize, resolve, check
//! what is switched off, admit, identify the caller) but looks instead of
//! acting:
//!
//! * the number is read with [`E164::parse_explained`], the same parser,
//!   which also says how it read it;
//! * the route comes from [`Resolver::peek`]: each tier is read without
//!   filling or evicting anything, so explaining a number does not change
//!   which tier answers the next call;
//! * the organization's policy is walked as `route_call` walks it, every
//!   rule's outcome kept ([`RuleStep`]), with the local time of each
//!   schedule; the rules' agents are read from the source;
//! * admission is [`Admission::preview`](crate::admission::Admission::preview):
//!   live leases counted at every level, none taken; a preview that refuses
//!   walks the overflow rules as `route_call` would;
//! * nothing is recorded.
//!
//! The refusal it reports is the [`RouteError`] `route_call` would return,
//! so the API layer names it through the one status mapping and the reason
//! is exactly the one a gateway would see.

use std::sync::Arc;

use jiff::{civil, Timestamp};

use super::{
    decide::{self, Walk},
    CallDecision, Field, RouteError, Router, RuleStep,
};
use crate::{
    admission::{Decision, LeaseScope, Preview},
    domain::{
        policy::{CallFacts, ScheduleState},
        CallId, Customer, Directory, Normalization, NumberError, Peeked, Region, Resolver, E164,
        MAX_INPUT_BYTES,
    },
};

/// One raw number and how it was read.
#[derive(Debug, Clone)]
pub struct ExplainedNumber {
    /// The input as received.
    pub raw: String,
    pub normalization: Normalization,
    /// The canonical number, or the message `RouteCall`'s
    /// `INVALID_ARGUMENT` would carry.
    pub result: Result<E164, String>,
}

/// What `route_call` would do with a call to a number now.
#[derive(Debug)]
pub struct Explanation {
    pub number: ExplainedNumber,
    /// `None` when no caller number was given.
    pub caller: Option<ExplainedNumber>,
    /// `None` when the number could not be normalized: nothing was looked
    /// up.
    pub lookup: Option<Peeked>,
    /// The caller, when they are a known customer of the route's org.
    pub customer: Option<Arc<Customer>>,
    /// The limits and live calls at each level and admission's decision
    /// for a new call to the decided agent (the number's own when the call
    /// goes elsewhere); `None` when the number is not provisioned.
    pub admission: Option<Preview>,
    /// How `route_call` would refuse the call now; `None` when it would
    /// route it.
    pub refusal: Option<RouteError>,
    /// What the call would do, when it is not refused.
    pub decision: Option<CallDecision>,
    /// The instant the policy was evaluated at.
    pub evaluated_at: Timestamp,
    /// The policy's schedules at that instant.
    pub schedules: Vec<ScheduleView>,
    /// Every rule the walk met, in order, and what became of it.
    pub steps: Vec<RuleStep>,
}

/// A schedule as the policy read it.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub name: String,
    pub time_zone: String,
    /// The local time used and whether it is open; `None` when the time
    /// zone is unknown to this daemon.
    pub state: Option<(civil::DateTime, bool)>,
}

impl<R: Resolver, D: Directory> Router<R, D> {
    /// Explains what [`Router::route_call`] would do with a call to `number`
    /// from `caller_number` now. Takes no lease, writes nothing, fills and
    /// evicts no cache. A request `route_call` would refuse is explained,
    /// not refused; only inputs too long to echo back are (as
    /// `INVALID_ARGUMENT`), and routing data that cannot be read is an error
    /// as for [`Router::lookup`].
    pub async fn explain(
        &self,
        number: &str,
        default_region: &str,
        caller_number: &str,
    ) -> Result<Explanation, RouteError> {
        // the answer echoes both: bounded as for RouteCall
        for (field, raw) in [
            (Field::Number, number),
            (Field::CallerNumber, caller_number),
        ] {
            if raw.len() > MAX_INPUT_BYTES {
                return Err(RouteError::invalid(field, NumberError::TooLong));
            }
        }
        // RouteCall reads the region first, and refuses a bad one whatever
        // the number
        let region = Region::parse_optional(default_region);
        let (number, called) = match &region {
            Ok(region) => read_number(Field::CalledNumber, number, *region),
            Err(error) => {
                let error = RouteError::invalid(Field::DefaultRegion, error);
                let explained = ExplainedNumber {
                    raw: number.to_string(),
                    normalization: Normalization::default(),
                    result: Err(error.to_string()),
                };
                (explained, Err(error))
            }
        };
        let caller = (!caller_number.is_empty())
            .then(|| read_number(Field::CallerNumber, caller_number, region.ok().flatten()).0);
        let mut explanation = Explanation {
            number,
            caller,
            lookup: None,
            customer: None,
            admission: None,
            refusal: None,
            decision: None,
            evaluated_at: decide::now(),
            schedules: Vec::new(),
            steps: Vec::new(),
        };
        let called = match called {
            Ok(called) => called,
            Err(refusal) => {
                explanation.refusal = Some(refusal);
                return Ok(explanation);
            }
        };

        let lookup = self.resolver.peek(&called).await?;
        explanation.refusal = match &lookup.route {
            None => Some(RouteError::NotProvisioned(called.clone())),
            Some(route) if !route.organization.is_active => Some(RouteError::Inactive {
                number: called.clone(),
                what: crate::domain::Inactive::Organization,
            }),
            Some(route) if !route.number_active => Some(RouteError::Inactive {
                number: called.clone(),
                what: crate::domain::Inactive::Number,
            }),
            Some(_) => None,
        };
        if let Some(route) = &lookup.route {
            let caller = explanation
                .caller
                .as_ref()
                .and_then(|caller| caller.result.as_ref().ok());
            explanation.customer = self.peek_caller(route, caller).await;
            if let Some(policy) = route.organization.policy.as_deref() {
                explanation.schedules = policy
                    .schedules()
                    .map(|schedule| ScheduleView {
                        name: schedule.name.clone(),
                        time_zone: schedule.time_zone_name.clone(),
                        state: match schedule.state_at(explanation.evaluated_at) {
                            ScheduleState::Known { open, local, .. } => Some((local, open)),
                            ScheduleState::UnknownTimeZone => None,
                        },
                    })
                    .collect();
            }
            // a retry of this very call would draw the same split side; a
            // new call draws its own: explained for a call id of its own
            let call_id = CallId(uuid::Uuid::new_v4());
            let mut steps = Vec::new();
            let mut walk = Walk {
                route,
                facts: CallFacts::new(
                    caller,
                    Some(explanation.customer.is_some()),
                    route.agent.is_active,
                    explanation.evaluated_at,
                ),
                call_id,
                steps: Some(&mut steps),
                peek: true,
            };
            // RouteCall refuses a switched-off organization or number before
            // its policy; the walk is still shown
            let decided = self.decide(&mut walk, None).await;
            let (decision, preview) = match decided {
                Err(refusal) => (Err(refusal), None),
                Ok(decision) => {
                    let decision = decision.expect("the first pass always decides");
                    // admission is previewed for the agent the call would
                    // reach, the number's own when it would go elsewhere
                    let agent = match &decision {
                        CallDecision::Agent { agent, .. } => agent.clone(),
                        _ => route.agent.clone(),
                    };
                    let scope = LeaseScope::of(&route.organization, &agent, &route.provisioned);
                    let limits =
                        self.admission
                            .limits(&route.organization, &agent, &route.provisioned);
                    let preview = self.admission.preview(scope, limits).await;
                    let decision = match (&decision, preview.decision) {
                        (CallDecision::Agent { .. }, Decision::Refused { level, .. }) => {
                            match self.decide(&mut walk, Some(level)).await {
                                Ok(Some(overflow)) => Ok(overflow),
                                Ok(None) => {
                                    Err(RouteError::refusal(&preview.decision).expect("a refusal"))
                                }
                                Err(refusal) => Err(refusal),
                            }
                        }
                        (CallDecision::Agent { .. }, other) => match RouteError::refusal(&other) {
                            Some(refusal) => Err(refusal),
                            None => Ok(decision),
                        },
                        _ => Ok(decision),
                    };
                    (decision, Some(preview))
                }
            };
            explanation.steps = steps;
            explanation.admission = preview;
            match decision {
                Ok(decision) if explanation.refusal.is_none() => {
                    explanation.decision = Some(decision)
                }
                Ok(_) => {}
                Err(refusal) => {
                    // RouteCall's own order: a switched-off number or
                    // organization is refused first
                    if explanation.refusal.is_none() {
                        explanation.refusal = Some(refusal);
                    }
                }
            }
            if explanation.admission.is_none() {
                let scope = LeaseScope::of(&route.organization, &route.agent, &route.provisioned);
                let limits =
                    self.admission
                        .limits(&route.organization, &route.agent, &route.provisioned);
                explanation.admission = Some(self.admission.preview(scope, limits).await);
            }
        }
        explanation.lookup = Some(lookup);
        Ok(explanation)
    }
}

/// Reads `raw` as `route_call` reads its `field`: the explained number, and
/// the canonical number or the refusal `route_call` would answer with.
fn read_number(
    field: Field,
    raw: &str,
    region: Option<Region>,
) -> (ExplainedNumber, Result<E164, RouteError>) {
    let (result, normalization) = E164::parse_explained(raw, region);
    let result = result.map_err(|error| RouteError::invalid(field, error));
    let explained = ExplainedNumber {
        raw: raw.to_string(),
        normalization,
        result: match &result {
            Ok(number) => Ok(number.clone()),
            Err(error) => Err(error.to_string()),
        },
    };
    (explained, result)
}
