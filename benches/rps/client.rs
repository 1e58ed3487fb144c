//! The generator's side of the wire: connections to the server under load,
//! and the requests it sends.

use std::time::Duration;

use switchboard::proto::{
    call_router_client::CallRouterClient, EndCallRequest, LookupNumberRequest,
    LookupNumberResponse, RecordUsageRequest, RouteCallRequest, RouteCallResponse,
};
use tonic::{
    transport::{Channel, Endpoint},
    Request, Response, Status,
};

use crate::cli::REMEMBERED_RESETS;

/// `connections` connections to `target`: one server, or several replicas
/// (comma-separated), the connections spread over them in turn.
pub async fn connect(
    target: &str,
    connections: usize,
) -> anyhow::Result<Vec<CallRouterClient<Channel>>> {
    let targets: Vec<&str> = target.split(',').map(str::trim).collect();
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections.max(targets.len()) {
        let channel = Endpoint::from_shared(targets[i % targets.len()].to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            // a request past its deadline is cancelled (RST_STREAM); h2
            // remembers 50 such streams by default and counts each answer
            // for a forgotten one as an error, closing its own connection
            // with ENHANCE_YOUR_CALM after 1024: remember as many as may
            // be outstanding
            .http2_max_concurrent_reset_streams(REMEMBERED_RESETS)
            .connect()
            .await?;
        clients.push(CallRouterClient::new(channel));
    }
    Ok(clients)
}

pub async fn lookup(
    client: &mut CallRouterClient<Channel>,
    number: String,
    deadline: Duration,
) -> Result<LookupNumberResponse, Status> {
    let mut request = Request::new(LookupNumberRequest {
        number,
        default_region: String::new(),
    });
    request.set_timeout(deadline);
    client
        .lookup_number(request)
        .await
        .map(Response::into_inner)
}

pub async fn route_call(
    client: &mut CallRouterClient<Channel>,
    request: RouteCallRequest,
    deadline: Duration,
) -> Result<RouteCallResponse, Status> {
    let mut request = Request::new(request);
    request.set_timeout(deadline);
    client.route_call(request).await.map(Response::into_inner)
}

pub async fn record_usage(
    client: &mut CallRouterClient<Channel>,
    request: RecordUsageRequest,
    deadline: Duration,
) -> Result<(), Status> {
    let mut request = Request::new(request);
    request.set_timeout(deadline);
    client.record_usage(request).await.map(drop)
}

pub async fn end_call(
    client: &mut CallRouterClient<Channel>,
    request: EndCallRequest,
    deadline: Duration,
) -> Result<(), Status> {
    let mut request = Request::new(request);
    request.set_timeout(deadline);
    client.end_call(request).await.map(drop)
}
