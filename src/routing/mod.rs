//! The routing domain: what a number resolves to, and the [`Router`] that
//! answers the gateway's questions.
//!
//! A call flows `normalize → resolve → check → decide → admit → record`:
//!
//! 1. [`E164::parse`] turns the raw called number into canonical E.164;
//! 2. a [`Resolver`] finds the number's [`Route`] (the cache tiers in front
//!    of the PostgreSQL store; a number of a range gets its range's);
//! 3. the router refuses routes whose number or organization is inactive;
//! 4. the organization's policy, cached with it, decides what the call does
//!    (`decide`): an agent (the number's own when no rule matches, refused
//!    if switched off), a transfer or a rejection;
//! 5. for an agent, [`Admission`] takes a lease under the organization's,
//!    the agent's and the number's concurrent-call limits; refused at a
//!    level, the policy's overflow rules for that level decide again;
//! 6. the [`Recorder`] gets the call-opened event, without anyone waiting
//!    for the database.
//!
//! `end_call` and `record_usage` find the call's organization and record
//! durably within the request's deadline; `end_call` releases the call's
//! lease only once its end is durable, so a refused `EndCall` changes
//! nothing (the call keeps its slot until the gateway's retry lands). [`Router::explain`] walks `route_call`'s steps
//! for support without taking anything: it peeks at the tiers and counts
//! leases.
//!
//! Nothing here knows about gRPC or SQL: the API layer converts to and from
//! protobuf, the store layer owns every query.

mod admit;
mod cache;
mod decide;
mod explain;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use uuid::Uuid;

use crate::{
    admission::{Admission, Decision, LeaseScope},
    domain::{
        policy::{CallFacts, LimitLevel},
        CallEnded, CallId, CallOpened, Customer, Directory, EndReason, Event, Inactive, Metric,
        NumberError, OrgId, Region, ResolveError, Resolver, Route, Usage, E164, MAX_INPUT_BYTES,
    },
    recorder::{RecordError, Recorder},
    store::PgStore,
};

pub use cache::{snapshot, CacheSettings, RouteCache, SWAP_WITHIN};
pub use decide::{decide, CallDecision, MatchedRule, RuleStep, StepOutcome, Walk};
pub use explain::{ExplainedNumber, Explanation};

/// Longest accepted gateway call id (SIP Call-IDs, Twilio CallSids, ...).
pub const MAX_GATEWAY_CALL_ID_BYTES: usize = 256;
/// Longest accepted usage idempotency key.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// Namespace of call ids: a call's id is the UUIDv5 of its gateway call id,
/// so every replica gives a retried `RouteCall` the same id without asking
/// anyone.
const CALL_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5b0d_6c4e_2f7a_4c1e_9d3b_8a61_f0e2_c457);
/// Namespace of usage event ids (from call id, idempotency key and metric).
const USAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7e21_94b3_0c58_4d6f_a1e7_3b9c_52d8_e06a);
/// Calls whose organization this replica remembers without asking Redis.
const RECENT_CALLS: u64 = 100_000;

/// Why a routing request was refused: the domain's one error type, mapped to
/// gRPC status codes in `api::status`.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A request field is malformed.
    #[error("{} {reason}", field.as_str())]
    InvalidArgument { field: Field, reason: String },
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
    /// The organization, the agent or the number is at its concurrent-call
    /// limit, and no overflow rule takes the call.
    #[error("the {} is at its limit of {limit} concurrent calls ({active} active)", level.as_str())]
    OverLimit {
        level: LimitLevel,
        limit: u32,
        active: u32,
    },
    /// Redis cannot be asked and admission is set to fail closed.
    #[error("the concurrent-call limit cannot be checked right now")]
    AdmissionUnavailable,
    /// This replica is answering as many requests as it may.
    #[error("this replica is overloaded")]
    Overloaded,
    /// The request's deadline passed before it could be answered.
    #[error("the request could not be answered within its deadline")]
    Deadline,
    /// No call has this id (in Redis nor in the database).
    #[error("call {0} is not known")]
    UnknownCall(CallId),
    /// The recorder did not take (or could not make durable) the events.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl RouteError {
    /// The error for an admission decision that refuses the call.
    fn refusal(decision: &Decision) -> Option<RouteError> {
        match *decision {
            Decision::Refused {
                level,
                limit,
                active,
            } => Some(RouteError::OverLimit {
                level,
                limit,
                active,
            }),
            Decision::RefusedUnchecked => Some(RouteError::AdmissionUnavailable),
            _ => None,
        }
    }

    fn invalid(field: Field, reason: impl ToString) -> Self {
        RouteError::InvalidArgument {
            field,
            reason: reason.to_string(),
        }
    }
}

/// A request field, as the gateway names it; a malformed one is refused
/// with its own stable reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Number,
    CalledNumber,
    CallerNumber,
    DefaultRegion,
    GatewayCallId,
    CallId,
    EndReason,
    EndedAt,
    AnsweredAt,
    Items,
    IdempotencyKey,
}

impl Field {
    /// The field's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Number => "number",
            Field::CalledNumber => "called_number",
            Field::CallerNumber => "caller_number",
            Field::DefaultRegion => "default_region",
            Field::GatewayCallId => "gateway_call_id",
            Field::CallId => "call_id",
            Field::EndReason => "end_reason",
            Field::EndedAt => "ended_at",
            Field::AnsweredAt => "answered_at",
            Field::Items => "items",
            Field::IdempotencyKey => "idempotency_key",
        }
    }

    /// The stable machine-readable reason of a refusal for this field,
    /// sent to the gateway.
    pub fn reason(self) -> &'static str {
        match self {
            Field::Number | Field::CalledNumber | Field::CallerNumber => "invalid_number",
            Field::DefaultRegion => "invalid_region",
            Field::GatewayCallId => "invalid_gateway_call_id",
            Field::CallId => "invalid_call_id",
            Field::EndReason => "invalid_end_reason",
            Field::EndedAt | Field::AnsweredAt => "invalid_timestamp",
            Field::Items => "invalid_usage",
            Field::IdempotencyKey => "invalid_idempotency_key",
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

/// The end of a call, as the gateway reports it.
#[derive(Debug, Clone, Default)]
pub struct EndCallRequest {
    pub call_id: String,
    /// `None` when the gateway did not say (refused).
    pub reason: Option<EndReason>,
    /// Defaults to now.
    pub ended_at: Option<SystemTime>,
    pub answered_at: Option<SystemTime>,
}

/// Metered usage of a call, as the gateway reports it.
#[derive(Debug, Clone, Default)]
pub struct UsageRequest {
    pub call_id: String,
    /// Metric names and quantities.
    pub items: Vec<(String, f64)>,
    pub idempotency_key: String,
}

/// A routed call.
#[derive(Debug, Clone)]
pub struct RoutedCall {
    /// The id of the call's record, derived from the gateway's call id.
    pub call_id: CallId,
    /// The number's route: its organization, and its own agent.
    pub route: Route,
    /// What the call does: the agent that answers it (with its lease
    /// taken and its record opened), or a transfer or rejection (neither).
    pub decision: CallDecision,
    /// The caller, when they are a known customer of the route's org.
    pub customer: Option<Arc<Customer>>,
}

/// Answers the gateway: routes calls, ends them, meters them. The
/// directory is the PostgreSQL store in the daemon.
pub struct Router<R, D = PgStore> {
    /// Routes, through the cache tiers.
    resolver: R,
    /// Customers and calls, from the source of truth.
    directory: D,
    admission: Admission,
    recorder: Recorder,
    /// Call → the scope of its lease (its organization, agent and number)
    /// for calls routed here, so that their `EndCall` and usage need not
    /// ask Redis.
    recent_calls: moka::future::Cache<CallId, LeaseScope>,
}

impl<R: Resolver, D: Directory> Router<R, D> {
    pub fn new(resolver: R, directory: D, admission: Admission, recorder: Recorder) -> Self {
        let remember = admission.settings().max_call_duration + Duration::from_secs(3600);
        Self {
            resolver,
            directory,
            admission,
            recorder,
            recent_calls: moka::future::Cache::builder()
                .max_capacity(RECENT_CALLS)
                .time_to_live(remember)
                .build(),
        }
    }

    pub fn resolver(&self) -> &R {
        &self.resolver
    }

    /// The route for a number that may take calls now. No side effects.
    pub async fn lookup(&self, number: &str, default_region: &str) -> Result<Route, RouteError> {
        let region = Region::parse_optional(default_region)
            .map_err(|e| RouteError::invalid(Field::DefaultRegion, e))?;
        let number =
            E164::parse(number, region).map_err(|e| RouteError::invalid(Field::Number, e))?;
        self.active_route(number).await
    }

    /// Routes a new inbound call: resolves it, decides what it does, and
    /// for an agent admits it under its limits and opens its record. A
    /// retry (same gateway call id) gets the same call id, the same
    /// decision (splits are drawn from the call id) and holds the same
    /// lease.
    pub async fn route_call(&self, request: &CallRequest) -> Result<RoutedCall, RouteError> {
        let region = Region::parse_optional(&request.default_region)
            .map_err(|e| RouteError::invalid(Field::DefaultRegion, e))?;
        let called = E164::parse(&request.called_number, region)
            .map_err(|e| RouteError::invalid(Field::CalledNumber, e))?;
        validate_gateway_call_id(&request.gateway_call_id)?;
        if request.caller_number.len() > MAX_INPUT_BYTES {
            return Err(RouteError::invalid(
                Field::CallerNumber,
                NumberError::TooLong,
            ));
        }
        let caller = E164::parse(&request.caller_number, region).ok();

        let route = self.reachable_route(called).await?;
        let call_id = CallId(Uuid::new_v5(
            &CALL_ID_NAMESPACE,
            request.gateway_call_id.as_bytes(),
        ));
        // the customer is looked up first only when a rule asks about them;
        // otherwise beside admission, as enrichment
        let (number_id, range_id) = route.provisioned.scope();
        let asks = (route.organization.policy.as_deref())
            .is_some_and(|policy| policy.asks_caller_known(number_id, range_id));
        let early_customer = match asks {
            true => Some(self.identify_caller(&route, caller.as_ref()).await),
            false => None,
        };
        let mut walk = decide::Walk {
            route: &route,
            facts: CallFacts::new(
                caller.as_ref(),
                early_customer.as_ref().map(Option::is_some),
                route.agent.is_active,
                decide::now(),
            ),
            call_id,
            steps: None,
            peek: false,
        };
        let decision = self
            .decide(&mut walk, None)
            .await?
            .expect("the first pass always decides");
        let customer_lookup = async {
            match early_customer.clone() {
                Some(customer) => customer,
                None => self.identify_caller(&route, caller.as_ref()).await,
            }
        };
        let (decision, customer) = match decision {
            CallDecision::Agent { agent, rule } => {
                // room for the record first: a call that cannot be
                // recorded must not take a slot
                let permit = self.recorder.reserve()?;
                let (admitted, customer) =
                    tokio::join!(self.admit(&mut walk, agent, rule), customer_lookup);
                let admitted = admitted?;
                if let CallDecision::Agent { agent, .. } = &admitted {
                    let scope = LeaseScope::of(&route.organization, agent, &route.provisioned);
                    self.recent_calls.insert(call_id, scope).await;
                    permit.record(vec![Event::CallOpened(CallOpened {
                        call_id,
                        org_id: route.organization.id,
                        agent_id: agent.id,
                        customer_id: customer.as_ref().map(|c| c.id),
                        gateway_call_id: request.gateway_call_id.clone(),
                        called_number: route.number.as_str().to_string(),
                        caller_number: caller.map(|c| c.as_str().to_string()),
                        started_at: SystemTime::now(),
                    })]);
                }
                (admitted, customer)
            }
            elsewhere => (elsewhere, customer_lookup.await),
        };
        metrics::counter!("switchboard_routing_decisions_total", "decision" => <&str>::from(decision.kind()))
            .increment(1);
        Ok(RoutedCall {
            call_id,
            route,
            decision,
            customer,
        })
    }

    /// Ends a call: records the outcome durably, answering before
    /// `deadline` (the request's), then releases its lease. Idempotent; the
    /// first outcome recorded is kept. On an error nothing happened: the
    /// end is not recorded and the call keeps its slot.
    pub async fn end_call(
        &self,
        request: &EndCallRequest,
        deadline: Instant,
    ) -> Result<(), RouteError> {
        let call_id = parse_call_id(&request.call_id)?;
        let reason = request
            .reason
            .ok_or_else(|| RouteError::invalid(Field::EndReason, "is unspecified"))?;
        let ended_at = request.ended_at.unwrap_or_else(SystemTime::now);
        if request
            .answered_at
            .is_some_and(|answered| answered > ended_at)
        {
            return Err(RouteError::invalid(Field::AnsweredAt, "is after ended_at"));
        }
        let (org_id, scope) = self.call_lease(call_id).await?;
        // durable first: a refused end must not free a slot while its call
        // stays open in the database
        self.recorder
            .record_durably(
                vec![Event::CallEnded(CallEnded {
                    call_id,
                    org_id,
                    reason,
                    answered_at: request.answered_at,
                    ended_at,
                })],
                deadline,
            )
            .await?;
        // releasing twice (a retried EndCall) is harmless
        // (a lease not released expires by itself; Redis's outage is logged
        // by admission, this is counted)
        if self
            .admission
            .release(org_id, scope, call_id)
            .await
            .is_err()
        {
            metrics::counter!("switchboard_admission_release_failures_total").increment(1);
        }
        Ok(())
    }

    /// Records a call's usage durably, answering before `deadline` (the
    /// request's). Idempotent per (call, idempotency key, metric). On an
    /// error nothing is recorded.
    pub async fn record_usage(
        &self,
        request: &UsageRequest,
        deadline: Instant,
    ) -> Result<(), RouteError> {
        let call_id = parse_call_id(&request.call_id)?;
        validate_idempotency_key(&request.idempotency_key)?;
        let mut items: Vec<(Metric, f64)> = Vec::with_capacity(request.items.len());
        if request.items.is_empty() {
            return Err(RouteError::invalid(Field::Items, "are empty"));
        }
        for (name, quantity) in &request.items {
            let metric = Metric::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
                RouteError::invalid(
                    Field::Items,
                    format!(
                        "contain unknown metric {:?} (known: {})",
                        name.escape_debug().to_string(),
                        known.join(", ")
                    ),
                )
            })?;
            if !quantity.is_finite() || *quantity < 0.0 {
                return Err(RouteError::invalid(
                    Field::Items,
                    format!("contain the quantity {quantity} for {name}; quantities must be finite and not negative"),
                ));
            }
            if items.iter().any(|(m, _)| *m == metric) {
                return Err(RouteError::invalid(
                    Field::Items,
                    format!("name {name} twice"),
                ));
            }
            items.push((metric, *quantity));
        }
        let (org_id, _) = self.call_lease(call_id).await?;
        let occurred_at = SystemTime::now();
        let events = items
            .into_iter()
            .map(|(metric, quantity)| {
                let key = format!("{call_id}/{}/{}", request.idempotency_key, metric.as_str());
                Event::Usage(Usage {
                    id: Uuid::new_v5(&USAGE_ID_NAMESPACE, key.as_bytes()),
                    org_id,
                    call_id,
                    metric,
                    quantity,
                    occurred_at,
                })
            })
            .collect();
        self.recorder.record_durably(events, deadline).await?;
        Ok(())
    }

    /// The organization of a call and the scope of its lease: remembered
    /// here, else as admission remembered them in Redis, else the
    /// organization as recorded in the database (the lease's other levels
    /// then expire by themselves).
    async fn call_lease(&self, call_id: CallId) -> Result<(OrgId, Option<LeaseScope>), RouteError> {
        if let Some(scope) = self.recent_calls.get(&call_id).await {
            return Ok((scope.org_id, Some(scope)));
        }
        let redis = self.admission.call_lease(call_id).await;
        let found = match redis {
            Ok(Some(found)) => Some(found),
            _ => self
                .directory
                .call_org(call_id)
                .await?
                .map(|org_id| (org_id, None)),
        };
        match (found, redis) {
            (Some((org_id, scope)), _) => {
                if let Some(scope) = scope {
                    self.recent_calls.insert(call_id, scope).await;
                }
                Ok((org_id, scope))
            }
            // Redis may know a call the database does not have yet
            // (Redis's outage is logged by admission, the answer counted)
            (None, Err(_)) => Err(RouteError::Unavailable(ResolveError::Unavailable(
                "call not found in the database and Redis unavailable".into(),
            ))),
            (None, Ok(_)) => Err(RouteError::UnknownCall(call_id)),
        }
    }

    async fn active_route(&self, number: E164) -> Result<Route, RouteError> {
        let Some(route) = self.resolver.resolve(&number).await? else {
            return Err(RouteError::NotProvisioned(number));
        };
        match route.inactive_part() {
            Some(what) => Err(RouteError::Inactive { number, what }),
            None => Ok(route),
        }
    }

    /// The route of a number that may take calls, its own agent aside: the
    /// policy decides what a switched-off agent means (a rule may send its
    /// calls elsewhere; without one, `decide` refuses the call as
    /// `active_route` would).
    async fn reachable_route(&self, number: E164) -> Result<Route, RouteError> {
        let Some(route) = self.resolver.resolve(&number).await? else {
            return Err(RouteError::NotProvisioned(number));
        };
        let what = if !route.organization.is_active {
            Inactive::Organization
        } else if !route.number_active {
            Inactive::Number
        } else {
            return Ok(route);
        };
        Err(RouteError::Inactive { number, what })
    }

    /// Caller identification is enrichment: a withheld or unparseable caller
    /// id, or a failed lookup, routes the call without a customer rather
    /// than failing it.
    async fn identify_caller(&self, route: &Route, caller: Option<&E164>) -> Option<Arc<Customer>> {
        let caller = caller?;
        let org_id = route.organization.id;
        caller_or_none(self.resolver.resolve_caller(org_id, caller).await)
    }

    /// What `identify_caller` would answer now, changing nothing (for
    /// explain).
    async fn peek_caller(&self, route: &Route, caller: Option<&E164>) -> Option<Arc<Customer>> {
        let caller = caller?;
        let org_id = route.organization.id;
        caller_or_none(self.resolver.peek_caller(org_id, caller).await)
    }
}

/// A caller lookup's answer, a failure counted and taken as "no customer"
/// (the store logs the outage behind it).
fn caller_or_none(lookup: Result<Option<Arc<Customer>>, ResolveError>) -> Option<Arc<Customer>> {
    lookup.unwrap_or_else(|_| {
        metrics::counter!("switchboard_routing_customer_lookup_failures_total").increment(1);
        None
    })
}

fn validate_gateway_call_id(id: &str) -> Result<(), RouteError> {
    validate_key(Field::GatewayCallId, id, MAX_GATEWAY_CALL_ID_BYTES)
}

fn validate_idempotency_key(key: &str) -> Result<(), RouteError> {
    validate_key(Field::IdempotencyKey, key, MAX_IDEMPOTENCY_KEY_BYTES)
}

/// A gateway-chosen identifier: present, bounded, printable.
fn validate_key(field: Field, key: &str, max_bytes: usize) -> Result<(), RouteError> {
    if key.trim().is_empty() {
        return Err(RouteError::invalid(field, "is empty"));
    }
    if key.len() > max_bytes {
        return Err(RouteError::invalid(
            field,
            format!("is longer than {max_bytes} bytes"),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(RouteError::invalid(field, "contains control characters"));
    }
    Ok(())
}

fn parse_call_id(raw: &str) -> Result<CallId, RouteError> {
    raw.parse()
        .map_err(|_| RouteError::invalid(Field::CallId, "is not a UUID"))
}
