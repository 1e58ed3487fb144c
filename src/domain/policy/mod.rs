//! An organization's call workflow: ordered rules that decide what a call
//! to one of its numbers does, evaluated in memory.
//!
//! A [`Policy`] holds an organization's active rules, and the schedules and
//! caller lists they use, as the database's `switchboard.routing_policy`
//! returns them ([`PolicyDoc`]). It is cached with the organization, so
//! evaluating it reads no tier.
//!
//! # Order
//!
//! A call to a number is checked against the number's rules (or, for a
//! number inside a range, the range's), then the organization's, each list
//! by position: the first rule whose conditions all hold decides. When none
//! does, the call goes to the number's own agent. Rules whose target agent
//! is switched off are passed over (a split shares its weight among its
//! agents that are on).
//!
//! Overflow rules (`when_at_limit`) are passed over at first. When
//! admission then refuses the call at some level (the organization, the
//! agent or the number is at its limit), the same lists are walked again
//! for the first overflow rule of that level whose other conditions hold.
//!
//! The walk itself (with the agents' state and admission, which need the
//! tiers) is the router's; this module says whether one rule matches a
//! call, and why not ([`Rule::check`], [`Mismatch`]).

mod doc;
mod schedule;
pub mod split;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::Arc,
};

use jiff::{civil, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AgentId, RegionSet, E164};

pub use doc::{CallerListDoc, PolicyDoc, RuleDoc, ScheduleDoc};
pub use schedule::{Schedule, ScheduleState, DAY_SECONDS};

/// A level at which concurrent calls are limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitLevel {
    Organization,
    Agent,
    /// The number, or the range it belongs to.
    Number,
}

impl LimitLevel {
    pub const ALL: [LimitLevel; 3] = [
        LimitLevel::Organization,
        LimitLevel::Agent,
        LimitLevel::Number,
    ];

    /// The name stored in `routing_rules.when_at_limit` and sent to gateways.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitLevel::Organization => "organization",
            LimitLevel::Agent => "agent",
            LimitLevel::Number => "number",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == raw)
    }
}

/// Why a call is rejected, as the gateway maps it to SIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Busy,
    Decline,
    Unavailable,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Busy => "busy",
            RejectReason::Decline => "decline",
            RejectReason::Unavailable => "unavailable",
        }
    }

    /// The SIP response code the gateway answers with.
    pub fn sip_code(self) -> u16 {
        match self {
            RejectReason::Busy => 486,
            RejectReason::Decline => 603,
            RejectReason::Unavailable => 480,
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Busy, Self::Decline, Self::Unavailable]
            .into_iter()
            .find(|reason| reason.as_str() == raw)
    }
}

/// Where a transferred call goes: an E.164 number or a SIP URI, as checked
/// when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Number(E164),
    SipUri(String),
}

impl Destination {
    fn parse(raw: &str) -> Option<Self> {
        if let Ok(number) = E164::from_canonical(raw) {
            return Some(Destination::Number(number));
        }
        let scheme = raw.split_once(':')?.0.to_ascii_lowercase();
        (matches!(scheme.as_str(), "sip" | "sips") && raw.contains('@'))
            .then(|| Destination::SipUri(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Destination::Number(number) => number.as_str(),
            Destination::SipUri(uri) => uri,
        }
    }
}

/// What a rule does with the call.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Route it to this agent of the organization.
    Agent(AgentId),
    /// Route it to one of these agents, by weight.
    Split(Vec<(AgentId, u32)>),
    Transfer(Destination),
    Reject(RejectReason),
}

/// Which numbers a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every number of the organization, after the number's own rules.
    Organization,
    /// One number (`phone_numbers.id`).
    Number(Uuid),
    /// Every number of one range (`number_ranges.id`).
    Range(Uuid),
}

/// A rule's conditions; `None`: not a condition of the rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    pub caller_in_list: Option<Uuid>,
    pub caller_not_in_list: Option<Uuid>,
    /// ISO 3166-1 alpha-2 regions of the caller's number.
    pub caller_countries: Option<RegionSet>,
    pub caller_known: Option<bool>,
    pub caller_withheld: Option<bool>,
    /// A schedule, and whether it must be open (`true`) or closed.
    pub schedule: Option<(Uuid, bool)>,
    /// Whether the number's own agent must be switched off (`true`) or on.
    pub agent_inactive: Option<bool>,
    /// An overflow rule: only once admission refused the call at this level.
    pub at_limit: Option<LimitLevel>,
}

/// One routing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: Uuid,
    /// Shared with the decisions it makes.
    pub name: Arc<str>,
    pub scope: Scope,
    pub position: i32,
    pub conditions: Conditions,
    pub action: Action,
}

/// What evaluating a call needs to know about it, the facts that need a
/// lookup given by the router.
pub struct CallFacts<'a> {
    /// The caller's number; `None` when withheld or unreadable.
    pub caller: Option<&'a E164>,
    /// Whether the caller is a known customer of the organization; `None`
    /// when it was not looked up (no rule asks).
    pub caller_known: Option<bool>,
    /// Whether the number's own agent is switched on.
    pub agent_active: bool,
    /// The instant schedules are read at.
    pub now: Timestamp,
}

impl<'a> CallFacts<'a> {
    pub fn new(
        caller: Option<&'a E164>,
        caller_known: Option<bool>,
        agent_active: bool,
        now: Timestamp,
    ) -> Self {
        Self {
            caller,
            caller_known,
            agent_active,
            now,
        }
    }
}

/// Why a rule does not match a call: the first condition that failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    /// An overflow rule, while admission has not refused the call.
    OnlyWhenAtLimit(LimitLevel),
    /// Admission refused the call at `refused`; this rule is not an overflow
    /// rule of that level.
    NotOverflowFor {
        refused: LimitLevel,
    },
    CallerNotInList,
    CallerInList,
    CallerWithheld,
    CallerNotWithheld,
    /// The caller's number is not from the rule's regions (its ISO codes).
    CallerCountry(Vec<String>),
    CallerKnown,
    CallerNotKnown,
    /// The schedule is open (`true`) or closed, not as the rule requires.
    Schedule {
        name: String,
        open: bool,
        local: civil::DateTime,
    },
    /// The schedule's time zone is unknown to this daemon.
    UnknownTimeZone {
        schedule: String,
        time_zone: String,
    },
    AgentActive,
    AgentInactive,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::OnlyWhenAtLimit(level) => write!(
                f,
                "an overflow rule: only when the {} is at its limit",
                level.as_str()
            ),
            Mismatch::NotOverflowFor { refused } => write!(
                f,
                "not an overflow rule for the {} limit the call hit",
                refused.as_str()
            ),
            Mismatch::CallerNotInList => f.write_str("the caller is not on the rule's list"),
            Mismatch::CallerInList => f.write_str("the caller is on the list the rule excludes"),
            Mismatch::CallerWithheld => f.write_str("the caller's number is withheld"),
            Mismatch::CallerNotWithheld => f.write_str("the caller's number is not withheld"),
            Mismatch::CallerCountry(codes) => {
                write!(f, "the caller's number is not from {}", codes.join(", "))
            }
            Mismatch::CallerKnown => f.write_str("the caller is a known customer"),
            Mismatch::CallerNotKnown => f.write_str("the caller is not a known customer"),
            Mismatch::Schedule { name, open, local } => write!(
                f,
                "schedule {name:?} is {} at {local} local time",
                if *open { "open" } else { "closed" }
            ),
            Mismatch::UnknownTimeZone {
                schedule,
                time_zone,
            } => write!(
                f,
                "schedule {schedule:?}: time zone {time_zone} is unknown to this daemon"
            ),
            Mismatch::AgentActive => f.write_str("the number's agent is switched on"),
            Mismatch::AgentInactive => f.write_str("the number's agent is switched off"),
        }
    }
}

/// Callers by exact number and by prefix.
#[derive(Debug, Clone, Default)]
struct CallerList {
    numbers: HashSet<Box<str>, foldhash::fast::RandomState>,
    prefixes: HashSet<Box<str>, foldhash::fast::RandomState>,
    /// The lengths the prefixes have: a caller is looked up at those only.
    prefix_lengths: Vec<usize>,
}

impl CallerList {
    fn new(numbers: &[String], prefixes: &[String]) -> Self {
        let mut prefix_lengths: Vec<usize> = prefixes.iter().map(String::len).collect();
        prefix_lengths.sort_unstable();
        prefix_lengths.dedup();
        Self {
            numbers: numbers.iter().map(|n| n.as_str().into()).collect(),
            prefixes: prefixes.iter().map(|n| n.as_str().into()).collect(),
            prefix_lengths,
        }
    }

    fn contains(&self, caller: &E164) -> bool {
        let number = caller.as_str();
        self.numbers.contains(number)
            || (self.prefix_lengths.iter())
                .any(|&len| len <= number.len() && self.prefixes.contains(&number[..len]))
    }
}

/// An organization's policy, ready to evaluate. Serialized as the
/// [`PolicyDoc`] it was built from (for the shared cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "PolicyDoc", try_from = "PolicyDoc")]
pub struct Policy {
    /// Every active rule, by scope then position.
    rules: Vec<Rule>,
    schedules: HashMap<Uuid, Schedule>,
    lists: HashMap<Uuid, CallerList>,
    doc: PolicyDoc,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.doc == other.doc
    }
}

/// Why a stored policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}: {problem}")]
pub struct PolicyError {
    pub rule: Uuid,
    pub problem: String,
}

impl Policy {
    /// Builds a policy from its stored form. Refuses a rule this version
    /// cannot read (the database's checks allow none).
    pub fn compile(doc: PolicyDoc) -> Result<Self, PolicyError> {
        let mut rules = doc
            .rules
            .iter()
            .map(RuleDoc::compile)
            .collect::<Result<Vec<_>, _>>()?;
        rules.sort_by_key(|rule| (rule.scope == Scope::Organization, rule.position, rule.id));
        let schedules = doc
            .schedules
            .iter()
            .map(|s| {
                (
                    s.id,
                    Schedule::new(
                        s.name.clone(),
                        s.time_zone.clone(),
                        &s.windows,
                        &s.exceptions,
                    ),
                )
            })
            .collect();
        let lists = doc
            .caller_lists
            .iter()
            .map(|l| (l.id, CallerList::new(&l.numbers, &l.prefixes)))
            .collect();
        Ok(Self {
            rules,
            schedules,
            lists,
            doc,
        })
    }

    /// The rules for a call to a number (`number_id`) or to a number of a
    /// range (`range_id`), in the order they are checked.
    pub fn rules_for(
        &self,
        number_id: Option<Uuid>,
        range_id: Option<Uuid>,
    ) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |rule| match rule.scope {
            Scope::Organization => true,
            Scope::Number(id) => Some(id) == number_id,
            Scope::Range(id) => Some(id) == range_id,
        })
    }

    /// Whether a rule for this number asks whether the caller is a known
    /// customer (the router then looks it up before evaluating).
    pub fn asks_caller_known(&self, number_id: Option<Uuid>, range_id: Option<Uuid>) -> bool {
        self.rules_for(number_id, range_id)
            .any(|rule| rule.conditions.caller_known.is_some())
    }

    /// Every rule, in order, for explanations and tests.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The schedule a rule names.
    pub fn schedule(&self, id: Uuid) -> Option<&Schedule> {
        self.schedules.get(&id)
    }

    /// Every schedule the rules use.
    pub fn schedules(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.values()
    }

    /// Schedules whose time zone this daemon does not know: their rules
    /// never match (logged and counted where the policy is loaded).
    pub fn unknown_time_zones(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.values().filter(|s| !s.time_zone_known())
    }
}

impl Rule {
    /// Whether this rule matches the call. `refused` is the level at which
    /// admission refused the call, once it has: then only overflow rules of
    /// that level can match.
    pub fn check(
        &self,
        policy: &Policy,
        facts: &CallFacts<'_>,
        refused: Option<LimitLevel>,
    ) -> Result<(), Mismatch> {
        let c = &self.conditions;
        match (c.at_limit, refused) {
            (Some(level), None) => return Err(Mismatch::OnlyWhenAtLimit(level)),
            (Some(level), Some(refused)) if level != refused => {
                return Err(Mismatch::NotOverflowFor { refused })
            }
            (None, Some(refused)) => return Err(Mismatch::NotOverflowFor { refused }),
            _ => {}
        }
        if let Some(withheld) = c.caller_withheld {
            match (withheld, facts.caller.is_some()) {
                (true, true) => return Err(Mismatch::CallerNotWithheld),
                (false, false) => return Err(Mismatch::CallerWithheld),
                _ => {}
            }
        }
        let in_list = |id: Uuid| {
            facts
                .caller
                .zip(policy.lists.get(&id))
                .is_some_and(|(caller, list)| list.contains(caller))
        };
        if c.caller_in_list.is_some_and(|id| !in_list(id)) {
            return Err(Mismatch::CallerNotInList);
        }
        if c.caller_not_in_list.is_some_and(in_list) {
            return Err(Mismatch::CallerInList);
        }
        if let Some(countries) = &c.caller_countries {
            if !facts
                .caller
                .is_some_and(|caller| countries.contains(caller))
            {
                return Err(Mismatch::CallerCountry(countries.codes().to_vec()));
            }
        }
        if let Some(known) = c.caller_known {
            // not looked up: the router looks it up whenever a rule asks
            match (known, facts.caller_known.unwrap_or(false)) {
                (true, false) => return Err(Mismatch::CallerNotKnown),
                (false, true) => return Err(Mismatch::CallerKnown),
                _ => {}
            }
        }
        if let Some(inactive) = c.agent_inactive {
            match (inactive, facts.agent_active) {
                (true, true) => return Err(Mismatch::AgentActive),
                (false, false) => return Err(Mismatch::AgentInactive),
                _ => {}
            }
        }
        if let Some((id, want_open)) = c.schedule {
            // the database keeps a rule's schedule from being deleted
            let Some(schedule) = policy.schedule(id) else {
                return Err(Mismatch::UnknownTimeZone {
                    schedule: id.to_string(),
                    time_zone: String::new(),
                });
            };
            match schedule.state_at(facts.now) {
                ScheduleState::Known { open, local, .. } if open != want_open => {
                    return Err(Mismatch::Schedule {
                        name: schedule.name.clone(),
                        open,
                        local,
                    })
                }
                ScheduleState::Known { .. } => {}
                ScheduleState::UnknownTimeZone => {
                    return Err(Mismatch::UnknownTimeZone {
                        schedule: schedule.name.clone(),
                        time_zone: schedule.time_zone_name.clone(),
                    })
                }
            }
        }
        Ok(())
    }

    /// The agents this rule may send a call to.
    pub fn agents(&self) -> Vec<AgentId> {
        match &self.action {
            Action::Agent(agent) => vec![*agent],
            Action::Split(agents) => agents.iter().map(|(agent, _)| *agent).collect(),
            Action::Transfer(_) | Action::Reject(_) => Vec::new(),
        }
    }
}

/// A shared, compiled policy.
pub type SharedPolicy = Arc<Policy>;

#[cfg(test)]
mod tests;
