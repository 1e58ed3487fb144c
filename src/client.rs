//! `switchboard client`: calls a running daemon and prints the answer as JSON,
//! so the API can be tried without other gRPC tooling.

use serde_json::{json, Value};
use tonic::Code;

use crate::{
    api::{status::REASON_KEY, struct_to_json},
    config::{ClientArgs, ClientCall},
    proto::{self, call_router_client::CallRouterClient},
};

/// Makes one call; `Ok` holds the printed JSON, `Err` the status as JSON.
pub async fn run(args: &ClientArgs) -> anyhow::Result<Result<Value, Value>> {
    let mut client = CallRouterClient::connect(args.addr.clone()).await?;
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
            .map(|r| {
                let r = r.into_inner();
                json!({
                    "call_id": r.call_id,
                    "route": r.route.as_ref().map(route_json),
                    "customer": r.customer.map(|c| json!({
                        "id": c.id, "phone": c.phone, "name": c.name, "email": c.email,
                    })),
                })
            }),
        ClientCall::Lookup { number, region } => client
            .lookup_number(proto::LookupNumberRequest {
                number: number.clone(),
                default_region: region.clone(),
            })
            .await
            .map(|r| json!({ "route": r.into_inner().route.as_ref().map(route_json) })),
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
    Ok(answer.map_err(|status| {
        json!({
            "code": format!("{:?}", status.code()),
            "message": status.message(),
            "reason": status.metadata().get(REASON_KEY).and_then(|v| v.to_str().ok()),
            "retryable": matches!(status.code(), Code::Unavailable),
        })
    }))
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
