//! What a call does: the organization's policy walked for one call
//! ([`crate::domain::policy`] says whether each rule matches), its target
//! agents checked through the cache, and the [`CallDecision`] that comes
//! out. `route_call` acts on the decision; `explain` keeps the walk's
//! [`RuleStep`]s to show it.

use std::sync::Arc;

use jiff::Timestamp;
use uuid::Uuid;

use super::{RouteError, Router};
use crate::domain::{
    policy::{
        split, Action, CallFacts, Destination, LimitLevel, Mismatch, RejectReason, Rule, Scope,
    },
    Agent, AgentId, CallId, Directory, Inactive, Resolver, Route,
};
use crate::telemetry::series::RoutingDecision;

/// A rule that decided a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRule {
    pub id: Uuid,
    pub name: Arc<str>,
    /// Set for an overflow rule: the level whose limit the call hit.
    pub overflow: Option<LimitLevel>,
}

/// What a call does.
#[derive(Debug, Clone)]
pub enum CallDecision {
    /// An agent answers it: the number's own (no rule), or a rule's.
    Agent {
        agent: Arc<Agent>,
        rule: Option<MatchedRule>,
    },
    /// The gateway transfers it.
    Transfer { to: Destination, rule: MatchedRule },
    /// The gateway rejects it.
    Reject {
        reason: RejectReason,
        rule: MatchedRule,
    },
}

impl CallDecision {
    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&MatchedRule> {
        match self {
            CallDecision::Agent { rule, .. } => rule.as_ref(),
            CallDecision::Transfer { rule, .. } | CallDecision::Reject { rule, .. } => Some(rule),
        }
    }

    /// Label of `switchboard_routing_decisions_total`.
    pub fn kind(&self) -> RoutingDecision {
        match self {
            CallDecision::Agent { rule: None, .. } => RoutingDecision::NumberAgent,
            CallDecision::Agent { rule: Some(_), .. } => RoutingDecision::RuleAgent,
            CallDecision::Transfer { .. } => RoutingDecision::Transfer,
            CallDecision::Reject { .. } => RoutingDecision::Reject,
        }
    }
}

/// One rule as a walk met it, for explanations.
#[derive(Debug, Clone)]
pub struct RuleStep {
    pub rule_id: Uuid,
    pub name: Arc<str>,
    /// `number`, `range` or `organization`: which list it is in.
    pub list: &'static str,
    pub position: i32,
    /// The pass: `None` first, then the level admission refused at.
    pub overflow_pass: Option<LimitLevel>,
    pub outcome: StepOutcome,
}

/// Why a walk took or passed over a rule.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// It decided the call.
    Matched,
    /// A condition does not hold.
    NotMatched(Mismatch),
    /// Its conditions hold, but its agent is switched off (or gone).
    AgentUnavailable(AgentId),
    /// Its conditions hold, but none of its split's agents can take calls.
    NoSplitAgent,
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepOutcome::Matched => f.write_str("matched"),
            StepOutcome::NotMatched(why) => write!(f, "not matched: {why}"),
            StepOutcome::AgentUnavailable(agent) => {
                write!(f, "passed over: its agent {agent} is switched off")
            }
            StepOutcome::NoSplitAgent => {
                f.write_str("passed over: no agent of its split is switched on with weight")
            }
        }
    }
}

/// One call's walk through its number's policy: the call, and what the
/// walk keeps.
pub struct Walk<'a> {
    pub route: &'a Route,
    pub facts: CallFacts<'a>,
    pub call_id: CallId,
    /// Filled when explaining.
    pub steps: Option<&'a mut Vec<RuleStep>>,
    /// Explaining: rules' agents are read from the source, filling no
    /// cache.
    pub peek: bool,
}

impl<R: Resolver, D: Directory> Router<R, D> {
    /// [`decide`] with this router's resolver.
    pub(super) async fn decide(
        &self,
        walk: &mut Walk<'_>,
        refused: Option<LimitLevel>,
    ) -> Result<Option<CallDecision>, RouteError> {
        decide(&self.resolver, walk, refused).await
    }
}

/// The decision for a call: the first rule of its number's policy that
/// matches and can be acted on (its agents read through `resolver`), else
/// the number's own agent. With `refused` (admission refused the call at
/// that level), only that level's overflow rules, and `None` when none
/// matches. Public for the benchmarks.
pub async fn decide<R: Resolver>(
    resolver: &R,
    walk: &mut Walk<'_>,
    refused: Option<LimitLevel>,
) -> Result<Option<CallDecision>, RouteError> {
    let route = walk.route;
    if let Some(policy) = route.organization.policy.as_deref() {
        let (number_id, range_id) = route.provisioned.scope();
        for rule in policy.rules_for(number_id, range_id) {
            let outcome = match rule.check(policy, &walk.facts, refused) {
                Err(mismatch) => Err(StepOutcome::NotMatched(mismatch)),
                Ok(()) => act_on(resolver, rule, walk, refused).await?,
            };
            if let Some(steps) = walk.steps.as_deref_mut() {
                steps.push(RuleStep {
                    rule_id: rule.id,
                    name: rule.name.clone(),
                    list: match rule.scope {
                        Scope::Number(_) => "number",
                        Scope::Range(_) => "range",
                        Scope::Organization => "organization",
                    },
                    position: rule.position,
                    overflow_pass: refused,
                    outcome: match &outcome {
                        Ok(_) => StepOutcome::Matched,
                        Err(passed) => passed.clone(),
                    },
                });
            }
            if let Ok(decision) = outcome {
                return Ok(Some(decision));
            }
        }
    }
    if refused.is_some() {
        return Ok(None);
    }
    // no rule: the number's own agent, if it can take calls
    if !route.agent.is_active {
        return Err(RouteError::Inactive {
            number: route.number.clone(),
            what: Inactive::Agent,
        });
    }
    Ok(Some(CallDecision::Agent {
        agent: route.agent.clone(),
        rule: None,
    }))
}

/// What a matching rule does, or why it is passed over.
async fn act_on<R: Resolver>(
    resolver: &R,
    rule: &Rule,
    walk: &Walk<'_>,
    overflow: Option<LimitLevel>,
) -> Result<Result<CallDecision, StepOutcome>, RouteError> {
    let matched = MatchedRule {
        id: rule.id,
        name: rule.name.clone(),
        overflow,
    };
    Ok(match &rule.action {
        Action::Transfer(to) => Ok(CallDecision::Transfer {
            to: to.clone(),
            rule: matched,
        }),
        Action::Reject(reason) => Ok(CallDecision::Reject {
            reason: *reason,
            rule: matched,
        }),
        Action::Agent(id) => match active_agent(resolver, *id, walk.peek).await? {
            Some(agent) => Ok(CallDecision::Agent {
                agent,
                rule: Some(matched),
            }),
            None => Err(StepOutcome::AgentUnavailable(*id)),
        },
        Action::Split(weights) => {
            // the side drawn among every agent first: its agent is the only
            // one read while all are on
            let draw = split::draw(walk.call_id, rule.id);
            let drawn = split::pick(weights, |_| true, draw);
            if let Some(agent) = match drawn {
                Some(id) => active_agent(resolver, id, walk.peek).await?,
                None => None,
            } {
                return Ok(Ok(CallDecision::Agent {
                    agent,
                    rule: Some(matched),
                }));
            }
            // the drawn agent is off: the others share its weight
            let mut agents = Vec::with_capacity(weights.len());
            for &(id, _) in weights {
                agents.extend(active_agent(resolver, id, walk.peek).await?);
            }
            let chosen = split::pick(weights, |id| agents.iter().any(|a| a.id == id), draw);
            match chosen.and_then(|id| agents.into_iter().find(|a| a.id == id)) {
                Some(agent) => Ok(CallDecision::Agent {
                    agent,
                    rule: Some(matched),
                }),
                None => Err(StepOutcome::NoSplitAgent),
            }
        }
    })
}

/// An agent of a rule, through the cache (from the source when peeking),
/// when it can take calls.
async fn active_agent<R: Resolver>(
    resolver: &R,
    id: AgentId,
    peek: bool,
) -> Result<Option<Arc<Agent>>, RouteError> {
    let agent = if peek {
        resolver.source().resolve_agent(id).await?
    } else {
        resolver.resolve_agent(id).await?
    };
    Ok(agent.filter(|agent| agent.is_active))
}

/// The instant a call's schedules are read at.
pub fn now() -> Timestamp {
    Timestamp::now()
}
