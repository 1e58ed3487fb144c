//! What a call's lease is held against, and the limits it is admitted
//! under, level by level.

use uuid::Uuid;

use super::LimitSource;
use crate::domain::{policy::LimitLevel, Agent, AgentId, OrgId, Organization, Provisioned};

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
    pub(super) fn encode(&self) -> String {
        format!("{} {} {}", self.org_id, self.agent_id, self.number_id)
    }

    /// The organization alone (written by versions without per-agent
    /// limits) leaves the agent and number unknown.
    pub(super) fn decode(raw: &str) -> Option<(OrgId, Option<Self>)> {
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
