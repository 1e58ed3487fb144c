//! `switchboard client`: calls a running daemon and prints the answer as JSON,
//! so the API can be tried without other gRPC tooling.

use anyhow::Context;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
    Code, Request,
};

use crate::{
    api::{status::REASON_KEY, struct_to_json},
    config::{ClientArgs, ClientCall},
    proto::{self, call_router_client::CallRouterClient},
};

/// What the daemon said, as the JSON `switchboard client` prints.
#[derive(Debug)]
pub enum Reply {
    /// The call's answer.
    Answered(Value),
    /// The call was refused: its status (code, message, reason).
    Refused(Value),
}

/// A client of the daemon at `args.addr`: TLS when asked for, the token on
/// every request.
async fn connect(
    args: &ClientArgs,
) -> anyhow::Result<
    CallRouterClient<
        tonic::service::interceptor::InterceptedService<
            Channel,
            impl FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + use<>,
        >,
    >,
> {
    let mut endpoint = Channel::from_shared(args.addr.clone())
        .with_context(|| format!("{} is not a valid address", args.addr))?;
    if args.addr.starts_with("https://") || args.ca_cert.is_some() {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.ca_cert {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect().await?;
    let authorization: Option<MetadataValue<Ascii>> = args
        .token
        .as_ref()
        .map(|token| format!("Bearer {}", token.expose_secret()).parse())
        .transpose()
        .context("the token is not a valid header value")?;
    Ok(CallRouterClient::with_interceptor(
        channel,
        move |mut request: Request<()>| {
            if let Some(value) = &authorization {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        },
    ))
}

/// Makes one call. An error means the daemon was not reached.
pub async fn run(args: &ClientArgs) -> anyhow::Result<Reply> {
    let mut client = connect(args).await?;
    let answer = match &args.call {
        ClientCall::RouteCall {
            called,
            caller,
            gateway_call_id,
            region,
        } => client
            .route_call(proto::RouteCallRequest {
                called_number: called.clone(),
                caller_number: caller.clone(),
                gateway_call_id: gateway_call_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                default_region: region.clone(),
            })
            .await
            .map(|r| routed_json(r.into_inner())),
        ClientCall::Lookup { number, region } => client
            .lookup_number(proto::LookupNumberRequest {
                number: number.clone(),
                default_region: region.clone(),
            })
            .await
            .map(|r| json!({ "route": r.into_inner().route.as_ref().map(route_json) })),
        ClientCall::Explain {
            number,
            region,
            caller,
        } => client
            .explain_route(proto::ExplainRouteRequest {
                number: number.clone(),
                default_region: region.clone(),
                caller_number: caller.clone(),
            })
            .await
            .map(|r| explanation_json(&r.into_inner())),
        ClientCall::EndCall { call_id, reason } => client
            .end_call(proto::EndCallRequest {
                call_id: call_id.clone(),
                end_reason: proto::EndReason::from(*reason) as i32,
                ended_at: None,
                answered_at: None,
            })
            .await
            .map(|_| json!({ "ended": call_id })),
        ClientCall::RecordUsage {
            call_id,
            items,
            key,
        } => {
            let key = key
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            client
                .record_usage(proto::RecordUsageRequest {
                    call_id: call_id.clone(),
                    items: items
                        .iter()
                        .map(|(metric, quantity)| proto::UsageItem {
                            metric: metric.clone(),
                            quantity: *quantity,
                        })
                        .collect(),
                    idempotency_key: key.clone(),
                })
                .await
                .map(|_| json!({ "recorded": call_id, "idempotency_key": key }))
        }
    };
    Ok(match answer {
        Ok(answer) => Reply::Answered(answer),
        Err(status) => Reply::Refused(refusal_json(&status)),
    })
}

fn routed_json(routed: proto::RouteCallResponse) -> Value {
    json!({
        "call_id": routed.call_id,
        "decision": routed.decision.as_ref().map(decision_json),
        "route": routed.route.as_ref().map(route_json),
        "customer": routed.customer.map(|c| json!({
            "id": c.id, "phone": c.phone, "name": c.name, "email": c.email,
        })),
    })
}

/// A decision as `{"agent": name}`, `{"transfer": to}` or `{"reject": reason,
/// "sip_code": n}`, with the rule that decided.
fn decision_json(decision: &proto::Decision) -> Value {
    use proto::decision::Action;
    let mut answer = match &decision.action {
        Some(Action::Agent(a)) => json!({ "agent": a.agent.as_ref().map(|a| a.name.clone()) }),
        Some(Action::Transfer(t)) => json!({ "transfer": t.destination, "kind": t.kind }),
        Some(Action::Reject(r)) => json!({ "reject": r.reason, "sip_code": r.sip_code }),
        None => json!({}),
    };
    answer["rule"] = json!(decision.rule.as_ref().map(|r| json!({
        "id": r.id, "name": r.name, "overflow_level": r.overflow_level,
    })));
    answer
}

fn refusal_json(status: &tonic::Status) -> Value {
    json!({
        "code": format!("{:?}", status.code()),
        "message": status.message(),
        "reason": status.metadata().get(REASON_KEY).and_then(|v| v.to_str().ok()),
        "retryable": matches!(status.code(), Code::Unavailable),
    })
}

fn route_json(route: &proto::Route) -> Value {
    json!({
        "number": route.number,
        "organization": route.organization.as_ref().map(|o| json!({
            "id": o.id, "slug": o.slug, "name": o.name, "plan_tier": o.plan_tier,
            "settings": o.settings.as_ref().map(struct_to_json),
        })),
        "agent": route.agent.as_ref().map(|a| json!({
            "id": a.id, "name": a.name, "voice_id": a.voice_id,
            "llm_config": a.llm_config.as_ref().map(struct_to_json),
        })),
    })
}

fn explanation_json(r: &proto::ExplainRouteResponse) -> Value {
    let number_json = |n: &proto::NumberExplanation| {
        json!({
            "raw": n.raw, "e164": n.e164, "method": n.method, "uri_scheme": n.uri_scheme,
            "description": n.description, "error": n.error,
        })
    };
    json!({
        "number": r.number.as_ref().map(number_json),
        "source": enum_name(r.source().as_str_name(), "ROUTE_SOURCE_"),
        "negative_entry": r.negative_entry,
        "stale": r.stale,
        "binding": r.binding.as_ref().map(|b| json!({
            "organization_id": b.organization_id, "agent_id": b.agent_id,
            "number_active": b.number_active, "organization_active": b.organization_active,
            "agent_active": b.agent_active,
        })),
        "route": r.route.as_ref().map(route_json),
        "outcome": r.outcome,
        "outcome_code": r.outcome_code,
        "outcome_message": r.outcome_message,
        "caller": r.caller.as_ref().map(|c| json!({
            "number": c.number.as_ref().map(number_json),
            "customer": c.customer.as_ref().map(|c| json!({
                "id": c.id, "phone": c.phone, "name": c.name, "email": c.email,
            })),
        })),
        "admission": r.admission.as_ref().map(|a| json!({
            "mode": a.mode, "limit": a.limit, "limit_source": a.limit_source,
            "active_calls": a.active_calls,
            "decision": enum_name(a.decision().as_str_name(), "ADMISSION_DECISION_"),
            "on_redis_down": a.on_redis_down,
            "levels": a.levels.iter().map(|l| json!({
                "level": l.level, "limit": l.limit, "active_calls": l.active_calls,
            })).collect::<Vec<_>>(),
        })),
        "decision": r.decision.as_ref().map(decision_json),
        "evaluated_at": r.evaluated_at.as_ref().map(|t| t.to_string()),
        "schedules": r.schedules.iter().map(|s| json!({
            "name": s.name, "time_zone": s.time_zone, "local_time": s.local_time, "open": s.open,
        })).collect::<Vec<_>>(),
        "rules": r.rules.iter().map(|rule| json!({
            "name": rule.name, "list": rule.list, "position": rule.position,
            "overflow_level": rule.overflow_level, "matched": rule.matched, "reason": rule.reason,
        })).collect::<Vec<_>>(),
    })
}

/// A protobuf enum value's name without its prefix, lowercase (`l1`,
/// `admit_over_limit`), as the rest of the JSON spells values.
fn enum_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

fn read(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
