//! A policy as the database stores it: `switchboard.routing_policy`'s JSON,
//! also the form the shared cache keeps (MessagePack), and how each rule of
//! it is read into a [`Rule`].

use jiff::civil;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Action, Conditions, Destination, LimitLevel, Policy, PolicyError, RejectReason, Rule, Scope,
};
use crate::domain::{AgentId, RegionSet};

/// A policy as `switchboard.routing_policy` stores it (JSON from the
/// database, MessagePack in the shared cache).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyDoc {
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
    #[serde(default)]
    pub schedules: Vec<ScheduleDoc>,
    #[serde(default)]
    pub caller_lists: Vec<CallerListDoc>,
}

/// One `routing_rules` row with its split agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleDoc {
    pub id: Uuid,
    pub name: String,
    pub number_id: Option<Uuid>,
    pub range_id: Option<Uuid>,
    pub position: i32,
    pub caller_in_list: Option<Uuid>,
    pub caller_not_in_list: Option<Uuid>,
    pub caller_countries: Option<Vec<String>>,
    pub caller_known: Option<bool>,
    pub caller_withheld: Option<bool>,
    pub schedule_id: Option<Uuid>,
    pub schedule_open: Option<bool>,
    pub when_agent_inactive: Option<bool>,
    pub when_at_limit: Option<String>,
    pub action: String,
    pub agent_id: Option<Uuid>,
    pub transfer_to: Option<String>,
    pub reject_reason: Option<String>,
    #[serde(default)]
    pub split: Vec<(Uuid, u32)>,
}

/// A schedule: windows as `[weekday 1–7, opens, closes]` and exceptions as
/// `[date, opens, closes]`, in seconds since local midnight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDoc {
    pub id: Uuid,
    pub name: String,
    pub time_zone: String,
    #[serde(default)]
    pub windows: Vec<(u8, u32, u32)>,
    #[serde(default)]
    pub exceptions: Vec<(civil::Date, Option<u32>, Option<u32>)>,
}

/// A caller list's exact numbers and prefixes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallerListDoc {
    pub id: Uuid,
    #[serde(default)]
    pub numbers: Vec<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
}

impl RuleDoc {
    pub(super) fn compile(&self) -> Result<Rule, PolicyError> {
        let problem = |problem: String| PolicyError {
            rule: self.id,
            problem,
        };
        let at_limit = match &self.when_at_limit {
            None => None,
            Some(raw) => Some(
                LimitLevel::parse(raw)
                    .ok_or_else(|| problem(format!("unknown limit level {raw:?}")))?,
            ),
        };
        let action = match self.action.as_str() {
            "agent" => Action::Agent(AgentId(
                self.agent_id
                    .ok_or_else(|| problem("an agent rule without an agent".into()))?,
            )),
            "split" if !self.split.is_empty() => Action::Split(
                self.split
                    .iter()
                    .map(|&(agent, weight)| (AgentId(agent), weight))
                    .collect(),
            ),
            "split" => return Err(problem("a split without agents".into())),
            "transfer" => Action::Transfer(
                self.transfer_to
                    .as_deref()
                    .and_then(Destination::parse)
                    .ok_or_else(|| problem(format!("transfer to {:?}", self.transfer_to)))?,
            ),
            "reject" => Action::Reject(
                self.reject_reason
                    .as_deref()
                    .and_then(RejectReason::parse)
                    .ok_or_else(|| problem(format!("reject as {:?}", self.reject_reason)))?,
            ),
            other => return Err(problem(format!("unknown action {other:?}"))),
        };
        let scope = match (self.number_id, self.range_id) {
            (Some(id), _) => Scope::Number(id),
            (None, Some(id)) => Scope::Range(id),
            (None, None) => Scope::Organization,
        };
        Ok(Rule {
            id: self.id,
            name: self.name.as_str().into(),
            scope,
            position: self.position,
            conditions: Conditions {
                caller_in_list: self.caller_in_list,
                caller_not_in_list: self.caller_not_in_list,
                caller_countries: self.caller_countries.as_deref().map(RegionSet::new),
                caller_known: self.caller_known,
                caller_withheld: self.caller_withheld,
                schedule: self.schedule_id.zip(self.schedule_open),
                agent_inactive: self.when_agent_inactive,
                at_limit,
            },
            action,
        })
    }
}

impl From<Policy> for PolicyDoc {
    fn from(policy: Policy) -> Self {
        policy.doc
    }
}

impl TryFrom<PolicyDoc> for Policy {
    type Error = PolicyError;

    fn try_from(doc: PolicyDoc) -> Result<Self, Self::Error> {
        Policy::compile(doc)
    }
}
