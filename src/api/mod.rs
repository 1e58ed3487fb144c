//! The gRPC surface: protobuf ⇄ domain conversion, per-request deadlines,
//! metrics, and the error → status mapping. No SQL, no cache logic: every
//! request is handed to [`Router`](crate::routing::Router).

pub mod auth;
mod convert;
mod explain;
pub mod overload;
pub mod status;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::{Request, Response, Status};
use tracing::Instrument;

pub use convert::{json_to_struct, struct_to_json};
use overload::Arrival;

use crate::{
    domain::Resolver,
    proto::{
        self, call_router_server::CallRouter, EndCallRequest, EndCallResponse, ExplainRouteRequest,
        ExplainRouteResponse, LookupNumberRequest, LookupNumberResponse, RecordUsageRequest,
        RecordUsageResponse, RouteCallRequest, RouteCallResponse,
    },
    routing::{self, CallRequest, Field, RouteError, Router, UsageRequest},
    telemetry::series::{grpc_code as code_name, Rpc, ShedReason},
};

/// The part of a client's deadline kept back so that our answer (even
/// UNAVAILABLE) reaches it before it gives up on its own.
const DEADLINE_HEADROOM: f64 = 0.1;

/// A request's time so far and its allowance.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// When it arrived (or, unstamped, when its handler started).
    arrived: Instant,
    /// How long it waited for its handler to run.
    queued: Duration,
    /// The whole time it may take, queueing included.
    deadline: Duration,
}

impl Budget {
    /// When the request is answered `deadline` if it has not been
    /// answered yet: what durable writes must be acknowledged or refused
    /// by.
    fn expires(&self) -> Instant {
        self.arrived + self.deadline
    }
}

/// The `switchboard.v1.CallRouter` service.
pub struct CallRouterService<R> {
    router: Arc<Router<R>>,
    /// Deadline for requests without `grpc-timeout`, and cap for those with.
    request_timeout: Duration,
    /// Each RPC's metric handles, registered once.
    metrics: ServiceMetrics,
}

/// Metric handles, registered once: finding a metric by name and labels
/// costs more than recording into it, and it was done several times per
/// request.
struct ServiceMetrics {
    route_call: RpcMetrics,
    end_call: RpcMetrics,
    record_usage: RpcMetrics,
    lookup_number: RpcMetrics,
    explain_route: RpcMetrics,
}

/// One RPC's latency and its count of `OK` answers (other codes are rare,
/// and looked up when they happen).
struct RpcMetrics {
    rpc: &'static str,
    seconds: metrics::Histogram,
    ok: metrics::Counter,
}

impl RpcMetrics {
    fn new(rpc: Rpc) -> Self {
        let rpc: &'static str = rpc.into();
        Self {
            rpc,
            seconds: metrics::histogram!("switchboard_grpc_request_seconds", "rpc" => rpc),
            ok: metrics::counter!("switchboard_grpc_requests_total", "rpc" => rpc, "code" => code_name(tonic::Code::Ok)),
        }
    }
}

impl<R> CallRouterService<R> {
    /// `request_timeout`: the deadline for requests without
    /// `grpc-timeout`, and the cap for those with. The overload gate
    /// ([`overload`]) in front of the service admits what it answers.
    pub fn new(router: Arc<Router<R>>, request_timeout: Duration) -> Self {
        Self {
            router,
            request_timeout,
            metrics: ServiceMetrics {
                route_call: RpcMetrics::new(Rpc::RouteCall),
                end_call: RpcMetrics::new(Rpc::EndCall),
                record_usage: RpcMetrics::new(Rpc::RecordUsage),
                lookup_number: RpcMetrics::new(Rpc::LookupNumber),
                explain_route: RpcMetrics::new(Rpc::ExplainRoute),
            },
        }
    }

    /// How long this request may take: the client's `grpc-timeout` less some
    /// headroom, capped by the configured request timeout, counted from its
    /// arrival.
    fn budget<T>(&self, request: &Request<T>) -> Budget {
        let now = Instant::now();
        let arrived = request
            .extensions()
            .get::<Arrival>()
            .map_or(now, |arrival| arrival.0);
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|client| client.mul_f64(1.0 - DEADLINE_HEADROOM))
            .map_or(self.request_timeout, |d| d.min(self.request_timeout));
        Budget {
            arrived,
            queued: now.saturating_duration_since(arrived),
            deadline,
        }
    }
}

#[tonic::async_trait]
impl<R: Resolver> CallRouter for CallRouterService<R> {
    async fn route_call(
        &self,
        request: Request<RouteCallRequest>,
    ) -> Result<Response<RouteCallResponse>, Status> {
        let budget = self.budget(&request);
        let body = request.into_inner();
        let span = tracing::info_span!(
            "route_call",
            gateway_call_id = %body.gateway_call_id.escape_debug(),
            call_id = tracing::field::Empty,
        );
        let call = CallRequest {
            called_number: body.called_number,
            caller_number: body.caller_number,
            gateway_call_id: body.gateway_call_id,
            default_region: body.default_region,
        };
        let router = &self.router;
        self.observe(
            &self.metrics.route_call,
            budget,
            async {
                let routed = router.route_call(&call).await?;
                tracing::Span::current().record("call_id", tracing::field::display(routed.call_id));
                Ok(RouteCallResponse {
                    call_id: routed.call_id.to_string(),
                    route: convert::decided_route(&routed.route, &routed.decision),
                    customer: routed.customer.as_deref().map(proto::Customer::from),
                    decision: Some(proto::Decision::from(&routed.decision)),
                })
            }
            .instrument(span),
        )
        .await
    }

    async fn end_call(
        &self,
        request: Request<EndCallRequest>,
    ) -> Result<Response<EndCallResponse>, Status> {
        let budget = self.budget(&request);
        let body = request.into_inner();
        let span = tracing::info_span!("end_call", call_id = %body.call_id.escape_debug());
        let router = &self.router;
        self.observe(
            &self.metrics.end_call,
            budget,
            async {
                let end = routing::EndCallRequest {
                    reason: proto::EndReason::try_from(body.end_reason)
                        .ok()
                        .and_then(|reason| reason.try_into().ok()),
                    ended_at: timestamp(Field::EndedAt, body.ended_at)?,
                    answered_at: timestamp(Field::AnsweredAt, body.answered_at)?,
                    call_id: body.call_id,
                };
                router.end_call(&end, budget.expires()).await?;
                Ok(EndCallResponse {})
            }
            .instrument(span),
        )
        .await
    }

    async fn record_usage(
        &self,
        request: Request<RecordUsageRequest>,
    ) -> Result<Response<RecordUsageResponse>, Status> {
        let budget = self.budget(&request);
        let body = request.into_inner();
        let span = tracing::info_span!("record_usage", call_id = %body.call_id.escape_debug());
        let usage = UsageRequest {
            call_id: body.call_id,
            items: body
                .items
                .into_iter()
                .map(|item| (item.metric, item.quantity))
                .collect(),
            idempotency_key: body.idempotency_key,
        };
        let router = &self.router;
        self.observe(
            &self.metrics.record_usage,
            budget,
            async {
                router.record_usage(&usage, budget.expires()).await?;
                Ok(RecordUsageResponse {})
            }
            .instrument(span),
        )
        .await
    }

    async fn lookup_number(
        &self,
        request: Request<LookupNumberRequest>,
    ) -> Result<Response<LookupNumberResponse>, Status> {
        let budget = self.budget(&request);
        let body = request.into_inner();
        let router = &self.router;
        self.observe(&self.metrics.lookup_number, budget, async {
            let route = router.lookup(&body.number, &body.default_region).await?;
            Ok(LookupNumberResponse {
                route: Some(proto::Route::from(&route)),
            })
        })
        .await
    }

    async fn explain_route(
        &self,
        request: Request<ExplainRouteRequest>,
    ) -> Result<Response<ExplainRouteResponse>, Status> {
        let budget = self.budget(&request);
        let body = request.into_inner();
        self.observe(
            &self.metrics.explain_route,
            budget,
            explain::explain_route(&self.router, body),
        )
        .await
    }
}

impl<R> CallRouterService<R> {
    /// Runs one RPC within its budget, if there is room for it, and records
    /// its outcome and latency.
    async fn observe<T>(
        &self,
        rpc: &RpcMetrics,
        budget: Budget,
        handler: impl Future<Output = Result<T, RouteError>>,
    ) -> Result<Response<T>, Status> {
        let shed = |reason: ShedReason| {
            metrics::counter!("switchboard_grpc_shed_total", "rpc" => rpc.rpc, "reason" => <&str>::from(reason))
                .increment(1);
            Err(RouteError::Overloaded)
        };
        // past its own deadline, nobody waits for the answer any more (the
        // gate has refused what queued too long for the server)
        let result = if budget.queued > budget.deadline {
            shed(ShedReason::QueueDelay)
        } else {
            let remaining = budget.deadline.saturating_sub(budget.queued);
            tokio::time::timeout(remaining, handler)
                .await
                .unwrap_or(Err(RouteError::Deadline))
        };
        let result = result.map(Response::new).map_err(Status::from);
        rpc.seconds.record(budget.arrived.elapsed().as_secs_f64());
        match &result {
            Ok(_) => rpc.ok.increment(1),
            Err(status) => metrics::counter!(
                "switchboard_grpc_requests_total",
                "rpc" => rpc.rpc,
                "code" => code_name(status.code())
            )
            .increment(1),
        }
        result
    }
}

/// A protobuf timestamp as a point in time; malformed or before 1970 is
/// refused.
fn timestamp(
    field: Field,
    raw: Option<prost_types::Timestamp>,
) -> Result<Option<std::time::SystemTime>, RouteError> {
    raw.map(|ts| {
        std::time::SystemTime::try_from(ts)
            .ok()
            .filter(|t| *t >= std::time::UNIX_EPOCH)
            .ok_or(RouteError::InvalidArgument {
                field,
                reason: "is not a valid point in time".into(),
            })
    })
    .transpose()
}

/// Parses a `grpc-timeout` header value: at most 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), as the gRPC-over-HTTP/2 spec defines it.
/// tonic applies the header only together with a server-wide timeout and
/// does not expose its parser, hence this one.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header_is_parsed() {
        assert_eq!(parse_grpc_timeout("50m"), Some(Duration::from_millis(50)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("250000u"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("-1m"), None);
    }
}
