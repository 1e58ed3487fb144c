//! `rps noop`: the ceiling, the same service answering from a prebuilt
//! message.

use std::net::SocketAddr;

use switchboard::proto::{
    self,
    call_router_server::{CallRouter, CallRouterServer},
    EndCallRequest, EndCallResponse, ExplainRouteRequest, ExplainRouteResponse,
    LookupNumberRequest, LookupNumberResponse, RecordUsageRequest, RecordUsageResponse,
    RouteCallRequest, RouteCallResponse,
};
use tokio::net::TcpListener;
use tonic::{
    transport::{server::TcpIncoming, Server},
    Request, Response, Status,
};
use uuid::Uuid;

use crate::dataset::bench_route;

/// The ceiling: the same service, answering from a prebuilt message.
struct Noop {
    lookup: LookupNumberResponse,
    routed: RouteCallResponse,
}

impl Noop {
    fn new() -> Self {
        let route = proto::Route::from(&bench_route(0, 1));
        Self {
            lookup: LookupNumberResponse {
                route: Some(route.clone()),
            },
            routed: RouteCallResponse {
                call_id: Uuid::nil().to_string(),
                decision: Some(proto::Decision {
                    action: Some(proto::decision::Action::Agent(proto::AgentDecision {
                        agent: route.agent.clone(),
                    })),
                    rule: None,
                }),
                route: Some(route),
                customer: None,
            },
        }
    }
}

#[tonic::async_trait]
impl CallRouter for Noop {
    async fn route_call(
        &self,
        _: Request<RouteCallRequest>,
    ) -> Result<Response<RouteCallResponse>, Status> {
        Ok(Response::new(self.routed.clone()))
    }

    async fn end_call(
        &self,
        _: Request<EndCallRequest>,
    ) -> Result<Response<EndCallResponse>, Status> {
        Ok(Response::new(EndCallResponse {}))
    }

    async fn record_usage(
        &self,
        _: Request<RecordUsageRequest>,
    ) -> Result<Response<RecordUsageResponse>, Status> {
        Ok(Response::new(RecordUsageResponse {}))
    }

    async fn lookup_number(
        &self,
        _: Request<LookupNumberRequest>,
    ) -> Result<Response<LookupNumberResponse>, Status> {
        Ok(Response::new(self.lookup.clone()))
    }

    async fn explain_route(
        &self,
        _: Request<ExplainRouteRequest>,
    ) -> Result<Response<ExplainRouteResponse>, Status> {
        Ok(Response::new(ExplainRouteResponse::default()))
    }
}

pub async fn serve_noop(listener: TcpListener) -> anyhow::Result<()> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(CallRouterServer::new(Noop::new()))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// Serves on `addr` until killed, saying where first.
pub async fn run(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("noop listening on {}", listener.local_addr()?);
    serve_noop(listener).await
}
