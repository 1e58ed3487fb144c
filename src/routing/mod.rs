//! The routing domain: what a number resolves to, and the [`Router`] that
//! answers the gateway's questions.
//!
//! A request flows `normalize → resolve → check → open the call`:
//!
//! 1. [`E164::parse`] turns the raw called number into canonical E.164;
//! 2. a [`Resolver`] finds the number's [`Route`] (the PostgreSQL store today;
//!    cache tiers wrap the same trait);
//! 3. the router refuses routes whose number, agent or organization is
//!    inactive;
//! 4. `route_call` gives the call its id.
//!
//! Nothing here knows about gRPC or SQL: the API layer converts to and from
//! protobuf, the store layer owns every query.

mod cache;
mod e164;

use std::{future::Future, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use cache::{CacheSettings, Change, RouteCache};
pub use e164::{NumberError, Region, E164, MAX_INPUT_BYTES};

/// Longest accepted gateway call id (SIP Call-IDs, Twilio CallSids, ...).
pub const MAX_GATEWAY_CALL_ID_BYTES: usize = 256;

/// Where calls to one number go, with everything the gateway needs to start
/// the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The provisioned number, canonical E.164.
    pub number: E164,
    /// Whether the number itself is switched on (a released or suspended
    /// number stays provisioned but takes no calls).
    pub number_active: bool,
    /// The tenant that owns the number. Shared: many numbers, one org.
    pub organization: Arc<Organization>,
    /// The AI agent that answers the number. Shared: many numbers, one agent.
    pub agent: Arc<Agent>,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub id: Uuid,
    /// URL-safe unique name.
    pub slug: String,
    pub name: String,
    /// Plan tier as stored (`starter`, `pro`, `enterprise`).
    pub plan_tier: String,
    /// Free-form organization settings (a JSON object).
    pub settings: Map<String, Value>,
    /// Whether the organization may take calls: active, and not deleted.
    pub is_active: bool,
}

/// An AI phone agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: Uuid,
    pub name: String,
    /// Text-to-speech voice identifier.
    pub voice_id: String,
    /// LLM configuration (a JSON object). Never logged: it may hold prompts
    /// that are the tenant's business.
    pub llm_config: Map<String, Value>,
    /// Whether the agent may take calls.
    pub is_active: bool,
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

/// Where routes come from. Implemented by the PostgreSQL store and by the
/// cache tiers in front of it; the [`Router`] does not know which it has.
pub trait Resolver: Send + Sync + 'static {
    /// The route for `number`, `Ok(None)` when the number is not provisioned.
    fn resolve(
        &self,
        number: &E164,
    ) -> impl Future<Output = Result<Option<Route>, ResolveError>> + Send;

    /// The customer of `org_id` whose phone is `phone`, if any.
    fn find_customer(
        &self,
        org_id: Uuid,
        phone: &E164,
    ) -> impl Future<Output = Result<Option<Customer>, ResolveError>> + Send;

    /// Forgets what `change` affects, in this tier and the ones below it.
    /// Tiers that keep nothing need not implement it.
    fn invalidate(&self, change: &Change) -> impl Future<Output = ()> + Send {
        let _ = change;
        async {}
    }
}

/// A shared resolver resolves like the one it shares.
impl<R: Resolver> Resolver for Arc<R> {
    fn resolve(
        &self,
        number: &E164,
    ) -> impl Future<Output = Result<Option<Route>, ResolveError>> + Send {
        (**self).resolve(number)
    }

    fn find_customer(
        &self,
        org_id: Uuid,
        phone: &E164,
    ) -> impl Future<Output = Result<Option<Customer>, ResolveError>> + Send {
        (**self).find_customer(org_id, phone)
    }

    fn invalidate(&self, change: &Change) -> impl Future<Output = ()> + Send {
        (**self).invalidate(change)
    }
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

/// Why a routing request was refused: the domain's one error type, mapped to
/// gRPC status codes in `api::status`.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A request field is malformed.
    #[error("{field} {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// Nobody has provisioned this number.
    #[error("number {0} is not provisioned")]
    NotProvisioned(E164),
    /// The number is provisioned, but it, its agent or its organization is
    /// switched off.
    #[error("number {number}: {}", what.as_str().replace('_', " "))]
    Inactive { number: E164, what: Inactive },
    /// The routing data could not be read in time.
    #[error("routing data unavailable: {0}")]
    Unavailable(#[from] ResolveError),
}

impl RouteError {
    fn invalid(field: &'static str, reason: impl ToString) -> Self {
        RouteError::InvalidArgument {
            field,
            reason: reason.to_string(),
        }
    }
}

/// A request to route a new inbound call, as raw gateway input.
#[derive(Debug, Clone, Default)]
pub struct CallRequest {
    pub called_number: String,
    pub caller_number: String,
    pub gateway_call_id: String,
    pub default_region: String,
}

/// A routed call.
#[derive(Debug, Clone)]
pub struct RoutedCall {
    /// The id of the call's record: a UUIDv7, so records sort by start time.
    pub call_id: Uuid,
    pub route: Route,
    /// The caller, when they are a known customer of the route's org.
    pub customer: Option<Customer>,
}

/// Answers routing requests: normalize, resolve, check, open the call.
#[derive(Debug)]
pub struct Router<R> {
    resolver: R,
}

impl<R: Resolver> Router<R> {
    pub fn new(resolver: R) -> Self {
        Self { resolver }
    }

    pub fn resolver(&self) -> &R {
        &self.resolver
    }

    /// The route for a number that may take calls now. No side effects.
    pub async fn lookup(&self, number: &str, default_region: &str) -> Result<Route, RouteError> {
        let region = Region::parse_optional(default_region)
            .map_err(|e| RouteError::invalid("default_region", e))?;
        let number = E164::parse(number, region).map_err(|e| RouteError::invalid("number", e))?;
        self.active_route(number).await
    }

    /// Routes a new inbound call and gives it its id.
    pub async fn route_call(&self, request: &CallRequest) -> Result<RoutedCall, RouteError> {
        let region = Region::parse_optional(&request.default_region)
            .map_err(|e| RouteError::invalid("default_region", e))?;
        let called = E164::parse(&request.called_number, region)
            .map_err(|e| RouteError::invalid("called_number", e))?;
        validate_gateway_call_id(&request.gateway_call_id)?;
        if request.caller_number.len() > MAX_INPUT_BYTES {
            return Err(RouteError::invalid("caller_number", NumberError::TooLong));
        }

        let route = self.active_route(called).await?;
        let customer = self
            .identify_caller(&route, &request.caller_number, region)
            .await;
        Ok(RoutedCall {
            call_id: Uuid::now_v7(),
            route,
            customer,
        })
    }

    async fn active_route(&self, number: E164) -> Result<Route, RouteError> {
        let Some(route) = self.resolver.resolve(&number).await? else {
            return Err(RouteError::NotProvisioned(number));
        };
        let inactive = if !route.organization.is_active {
            Some(Inactive::Organization)
        } else if !route.agent.is_active {
            Some(Inactive::Agent)
        } else if !route.number_active {
            Some(Inactive::Number)
        } else {
            None
        };
        match inactive {
            Some(what) => Err(RouteError::Inactive { number, what }),
            None => Ok(route),
        }
    }

    /// Caller identification is enrichment: a withheld or unparseable caller
    /// id, or a failed lookup, routes the call without a customer rather
    /// than failing it.
    async fn identify_caller(
        &self,
        route: &Route,
        caller: &str,
        region: Option<Region>,
    ) -> Option<Customer> {
        let caller = E164::parse(caller, region).ok()?;
        match self
            .resolver
            .find_customer(route.organization.id, &caller)
            .await
        {
            Ok(customer) => customer,
            Err(error) => {
                metrics::counter!("switchboard_routing_customer_lookup_failures_total")
                    .increment(1);
                tracing::warn!(%error, "customer lookup failed; routing without a customer");
                None
            }
        }
    }
}

fn validate_gateway_call_id(id: &str) -> Result<(), RouteError> {
    if id.trim().is_empty() {
        return Err(RouteError::invalid("gateway_call_id", "is empty"));
    }
    if id.len() > MAX_GATEWAY_CALL_ID_BYTES {
        return Err(RouteError::invalid(
            "gateway_call_id",
            format!("is longer than {MAX_GATEWAY_CALL_ID_BYTES} bytes"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(RouteError::invalid(
            "gateway_call_id",
            "contains control characters",
        ));
    }
    Ok(())
}
