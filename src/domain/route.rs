//! What a number resolves to: the route, its organization and agent, the
//! caller as a known customer, and why a resolver could not say.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{policy::Policy, AgentId, OrgId, E164};

/// Where calls to one number go, with everything the gateway needs to start
/// the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The called number, canonical E.164.
    pub number: E164,
    /// Whether the number itself (or its range) is switched on (a released
    /// or suspended number stays provisioned but takes no calls).
    pub number_active: bool,
    /// What provisions the number: a row of its own, or a range.
    pub provisioned: Provisioned,
    /// The tenant that owns the number. Shared: many numbers, one org.
    pub organization: Arc<Organization>,
    /// The AI agent that answers the number. Shared: many numbers, one agent.
    pub agent: Arc<Agent>,
}

/// What provisions a number: `phone_numbers` or `number_ranges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// The number's own row (`phone_numbers.id`).
    Number {
        id: Uuid,
        /// Calls to the number at once, if limited.
        concurrency_limit: Option<u32>,
    },
    /// A range the number belongs to (`number_ranges.id`).
    Range {
        id: Uuid,
        prefix: Arc<str>,
        /// Calls to all the range's numbers at once, if limited.
        concurrency_limit: Option<u32>,
    },
}

impl Provisioned {
    /// The row's id: what the number-level lease and rules are keyed by.
    pub fn id(&self) -> Uuid {
        match self {
            Provisioned::Number { id, .. } | Provisioned::Range { id, .. } => *id,
        }
    }

    pub fn concurrency_limit(&self) -> Option<u32> {
        match self {
            Provisioned::Number {
                concurrency_limit, ..
            }
            | Provisioned::Range {
                concurrency_limit, ..
            } => *concurrency_limit,
        }
    }

    /// The ids a policy's rules are scoped by: `(number, range)`.
    pub fn scope(&self) -> (Option<Uuid>, Option<Uuid>) {
        match self {
            Provisioned::Number { id, .. } => (Some(*id), None),
            Provisioned::Range { id, .. } => (None, Some(*id)),
        }
    }
}

/// A block of numbers owned by prefix, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberRange {
    pub id: Uuid,
    /// `+` and its first digits.
    pub prefix: Arc<str>,
    pub org_id: OrgId,
    pub agent_id: AgentId,
    pub is_active: bool,
    pub concurrency_limit: Option<u32>,
}

impl NumberRange {
    /// What provisions a number of this range.
    pub fn provisioned(&self) -> Provisioned {
        Provisioned::Range {
            id: self.id,
            prefix: self.prefix.clone(),
            concurrency_limit: self.concurrency_limit,
        }
    }
}

impl Route {
    /// The part that is switched off, if any, checked from the top down:
    /// the organization, then the agent, then the number.
    pub fn inactive_part(&self) -> Option<Inactive> {
        if !self.organization.is_active {
            Some(Inactive::Organization)
        } else if !self.agent.is_active {
            Some(Inactive::Agent)
        } else if !self.number_active {
            Some(Inactive::Number)
        } else {
            None
        }
    }
}

/// An organization's plan, as the schema's `plan_tier` enum has it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum PlanTier {
    Starter,
    Pro,
    Enterprise,
}

impl PlanTier {
    /// The name stored and sent to gateways (`starter`, `pro`, `enterprise`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub id: OrgId,
    /// URL-safe unique name.
    pub slug: String,
    pub name: String,
    /// The plan the organization is on; its default concurrent-call limit.
    pub plan_tier: PlanTier,
    /// Free-form organization settings (a JSON object).
    pub settings: Map<String, Value>,
    /// Concurrent-call limit set for this organization, overriding its
    /// plan tier's default.
    pub concurrency_limit: Option<i32>,
    /// Whether the organization may take calls: active, and not deleted.
    pub is_active: bool,
    /// The organization's call workflow; `None` without active rules.
    #[serde(default)]
    pub policy: Option<Arc<Policy>>,
}

/// An AI phone agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    /// Text-to-speech voice identifier.
    pub voice_id: String,
    /// LLM configuration (a JSON object). Never logged: it may hold prompts
    /// that are the tenant's business.
    pub llm_config: Map<String, Value>,
    /// Whether the agent may take calls.
    pub is_active: bool,
    /// Calls to the agent at once, if limited.
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
}

/// A known caller of one organization.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub id: Uuid,
    pub phone: E164,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// Why a resolver could not answer. Every variant means "the data source is
/// not usable right now"; "no such number" is `Ok(None)`, not an error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The database (or the pooler in front of it) did not answer in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The database refused or dropped the connection.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answered with something this version cannot read (a
    /// schema mismatch, a constraint the data should have).
    #[error("unexpected data: {0}")]
    Corrupt(String),
}

/// Which part of a route is switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inactive {
    Number,
    Agent,
    Organization,
}

impl Inactive {
    /// Stable machine-readable name, sent to the gateway.
    pub fn as_str(self) -> &'static str {
        match self {
            Inactive::Number => "number_inactive",
            Inactive::Agent => "agent_inactive",
            Inactive::Organization => "organization_inactive",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PlanTier;

    #[test]
    fn a_plan_tier_reads_back_its_stored_name() {
        for tier in [PlanTier::Starter, PlanTier::Pro, PlanTier::Enterprise] {
            assert_eq!(tier.as_str().parse::<PlanTier>().unwrap(), tier);
            assert_eq!(
                serde_json::to_string(&tier).unwrap(),
                format!("\"{}\"", tier.as_str())
            );
        }
        assert_eq!(PlanTier::Enterprise.as_str(), "enterprise");
    }
}
