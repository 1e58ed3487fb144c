//! Rows as the domain reads them: a column this version cannot read is a
//! [`ResolveError::Corrupt`], never a panic.

use std::{collections::HashMap, sync::Arc};

use serde_json::{Map, Value};
use tokio_postgres::Row;

use crate::domain::{
    policy::{Policy, PolicyDoc},
    Agent, AgentId, Customer, NumberRange, OrgId, Organization, Provisioned, ResolveError, Route,
    E164,
};

pub(super) fn route_from_row(row: &Row) -> Result<Route, ResolveError> {
    route_with(row, Arc::new(organization_from_row(row)?))
}

/// A route whose organization is read once per organization, kept in
/// `organizations`.
pub(super) fn route_sharing(
    row: &Row,
    organizations: &mut HashMap<OrgId, Arc<Organization>>,
) -> Result<Route, ResolveError> {
    let org_id = OrgId(get(row, "org_id")?);
    let organization = match organizations.get(&org_id) {
        Some(organization) => organization.clone(),
        None => {
            let organization = Arc::new(organization_from_row(row)?);
            organizations.insert(org_id, organization.clone());
            organization
        }
    };
    route_with(row, organization)
}

fn route_with(row: &Row, organization: Arc<Organization>) -> Result<Route, ResolveError> {
    let number: &str = get(row, "number")?;
    Ok(Route {
        number: E164::from_canonical(number)
            .map_err(|e| ResolveError::Corrupt(format!("phone_numbers.number {e}")))?,
        number_active: get(row, "number_active")?,
        provisioned: Provisioned::Number {
            id: get(row, "number_id")?,
            concurrency_limit: limit(get(row, "number_concurrency_limit")?),
        },
        organization,
        agent: Arc::new(agent_from_row(row)?),
    })
}

pub(super) fn range_from_row(row: &Row) -> Result<NumberRange, ResolveError> {
    Ok(NumberRange {
        id: get(row, "id")?,
        prefix: get::<&str>(row, "prefix")?.into(),
        org_id: OrgId(get(row, "org_id")?),
        agent_id: AgentId(get(row, "agent_id")?),
        is_active: get(row, "is_active")?,
        concurrency_limit: limit(get(row, "concurrency_limit")?),
    })
}

/// A stored concurrent-call limit (checked not negative).
fn limit(stored: Option<i32>) -> Option<u32> {
    stored.map(|limit| u32::try_from(limit).unwrap_or(0))
}

/// The organization's policy column: null without active rules.
fn policy_from_row(row: &Row) -> Result<Option<Arc<Policy>>, ResolveError> {
    let Some(doc) = get::<Option<Value>>(row, "org_policy")? else {
        return Ok(None);
    };
    let doc: PolicyDoc = serde_json::from_value(doc)
        .map_err(|e| ResolveError::Corrupt(format!("routing_policy: {e}")))?;
    let policy =
        Policy::compile(doc).map_err(|e| ResolveError::Corrupt(format!("routing_policy: {e}")))?;
    for schedule in policy.unknown_time_zones() {
        metrics::counter!("switchboard_policy_unknown_time_zones_total").increment(1);
        tracing::warn!(
            schedule = schedule.name,
            time_zone = schedule.time_zone_name,
            "a schedule's time zone is unknown to this daemon: its rules never match"
        );
    }
    Ok(Some(Arc::new(policy)))
}

pub(super) fn organization_from_row(row: &Row) -> Result<Organization, ResolveError> {
    let plan_tier: &str = get(row, "org_plan_tier")?;
    Ok(Organization {
        id: OrgId(get(row, "org_id")?),
        slug: get(row, "org_slug")?,
        name: get(row, "org_name")?,
        plan_tier: plan_tier.parse().map_err(|_| {
            ResolveError::Corrupt(format!(
                "organizations.plan_tier {plan_tier:?} is not a plan"
            ))
        })?,
        settings: json_object(get(row, "org_settings")?, "organizations.settings")?,
        is_active: get(row, "org_active")?,
        concurrency_limit: get(row, "org_concurrency_limit")?,
        policy: policy_from_row(row)?,
    })
}

pub(super) fn agent_from_row(row: &Row) -> Result<Agent, ResolveError> {
    Ok(Agent {
        id: AgentId(get(row, "agent_id")?),
        name: get(row, "agent_name")?,
        voice_id: get(row, "agent_voice_id")?,
        llm_config: json_object(get(row, "agent_llm_config")?, "agents.llm_config")?,
        is_active: get(row, "agent_active")?,
        concurrency_limit: limit(get(row, "agent_concurrency_limit")?),
    })
}

pub(super) fn customer_from_row(row: &Row) -> Result<Customer, ResolveError> {
    let phone: &str = get(row, "phone")?;
    Ok(Customer {
        id: get(row, "id")?,
        phone: E164::from_canonical(phone)
            .map_err(|e| ResolveError::Corrupt(format!("customers.phone {e}")))?,
        name: get(row, "name")?,
        email: get(row, "email")?,
    })
}

/// The column `name` of `row`; a column that is missing or of another type
/// is data this version cannot read.
pub(super) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    name: &str,
) -> Result<T, ResolveError> {
    row.try_get(name)
        .map_err(|e| ResolveError::Corrupt(format!("column {name}: {e}")))
}

fn json_object(value: Value, column: &str) -> Result<Map<String, Value>, ResolveError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ResolveError::Corrupt(format!(
            "{column} is a JSON {}, not an object",
            json_kind(&other)
        ))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
