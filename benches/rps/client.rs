//! The generator's side of the wire: connections to the server under load,
//! the requests it sends, and priming its caches.

use std::time::Duration;

use switchboard::proto::{
    call_router_client::CallRouterClient, EndCallRequest, LookupNumberRequest,
    LookupNumberResponse, RecordUsageRequest, RouteCallRequest, RouteCallResponse,
};
use tonic::{
    transport::{Channel, Endpoint},
    Request, Response, Status,
};

use crate::{
    calls::{send, Outgoing},
    cli::{DataSet, REMEMBERED_RESETS},
    dataset::{bench_number, customer_phone, stranger_phone},
};

pub async fn connect(
    target: &str,
    connections: usize,
) -> anyhow::Result<Vec<CallRouterClient<Channel>>> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let channel = Endpoint::from_shared(target.to_string())?
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

/// Looks up every provisioned number once, then (for `RouteCall` runs,
/// `callers` set) routes one call from each customer and each stranger of
/// every organization, so that a run starts with every caller cached; 16 at
/// a time (within the daemon's pool), each tried up to three times.
pub async fn prime(
    clients: &[CallRouterClient<Channel>],
    data: &DataSet,
    callers: Option<&str>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let numbers = (0..data.numbers).map(|i| Outgoing::Lookup(bench_number(i)));
    send_all(clients, numbers, deadline).await?;
    let Some(run_id) = callers else {
        return Ok(());
    };
    let per_org = data.customers_per_org;
    let calls = (0..data.organizations).flat_map(move |g| {
        (0..per_org).flat_map(move |c| {
            [customer_phone(g, c, per_org), stranger_phone(g, c, per_org)].map(|caller| {
                Outgoing::RouteCall(RouteCallRequest {
                    // bench number g is organization g's
                    called_number: bench_number(g),
                    gateway_call_id: format!("{run_id}-prime-{caller}"),
                    caller_number: caller,
                    default_region: String::new(),
                })
            })
        })
    });
    send_all(clients, calls, deadline).await
}

async fn send_all(
    clients: &[CallRouterClient<Channel>],
    requests: impl Iterator<Item = Outgoing>,
    deadline: Duration,
) -> anyhow::Result<()> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(requests.enumerate())
        .map(|(i, outgoing)| {
            let mut client = clients[i % clients.len()].clone();
            async move {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match send(&mut client, outgoing.clone(), deadline).await {
                        Ok(()) => return Ok(()),
                        Err(status) if attempt == 3 => {
                            anyhow::bail!("priming {outgoing:?}: {status}")
                        }
                        Err(_) => continue,
                    }
                }
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}
