//! The calls a run places: who calls, under which gateway call id, the
//! request `rps load` sends for each, and priming the server's caches.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{rngs::SmallRng, Rng, SeedableRng};
use switchboard::proto::{call_router_client::CallRouterClient, RouteCallRequest};
use tonic::{transport::Channel, Status};

use crate::{
    cli::{CallerArgs, DataSet, LoadArgs, Rpc},
    client::{lookup, route_call},
    dataset::{bench_number, customer_phone, stranger_phone, NumberMix},
};

/// Picks callers: `known_share` a customer of the called number's
/// organization, `withheld_share` no caller id, the rest strangers, from a
/// pool of as many per organization as it has customers: callers who call
/// again, as a warm run needs (every one of them is primed by `--prime`).
pub struct CallerMix {
    rng: SmallRng,
    known_share: f64,
    withheld_share: f64,
    organizations: usize,
    customers_per_org: usize,
}

impl CallerMix {
    pub fn new(callers: &CallerArgs, data: &DataSet, seed: u64) -> Self {
        Self {
            // apart from the number mix's stream, which has the same seeds
            rng: SmallRng::seed_from_u64(seed ^ 0x00ca_11e5),
            known_share: callers.known_share,
            withheld_share: callers.withheld_share,
            organizations: data.organizations.max(1),
            customers_per_org: data.customers_per_org,
        }
    }

    /// The caller of a call to bench number `number` (`None`: a number
    /// nobody provisioned, whose callers no organization knows).
    pub fn next(&mut self, number: Option<usize>) -> String {
        let roll: f64 = self.rng.random();
        if roll < self.withheld_share {
            return String::new();
        }
        match number {
            Some(i)
                if roll < self.withheld_share + self.known_share && self.customers_per_org > 0 =>
            {
                let c = self.rng.random_range(0..self.customers_per_org);
                customer_phone(i % self.organizations, c, self.customers_per_org)
            }
            Some(i) if self.customers_per_org > 0 => {
                let c = self.rng.random_range(0..self.customers_per_org);
                stranger_phone(i % self.organizations, c, self.customers_per_org)
            }
            // a number nobody provisioned is refused before its caller is
            // looked up
            _ => stranger_phone(0, 0, 0),
        }
    }
}

/// The prefix of a run's gateway call ids: `--run-id`, or one no other run
/// has (label, repetition, time, process).
pub fn run_id(callers: &CallerArgs, label: &str, rep: u32) -> String {
    callers.run_id.clone().unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{label}-{rep}-{}.{:06}-{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id()
        )
    })
}

/// What `rps load` sends: lookups, or RouteCalls under gateway call ids
/// `<run id>-<stream>-<n>`, each stream (a closed-loop worker, the open
/// loop's pacer) numbering its own.
pub struct Requests {
    rpc: Rpc,
    numbers: NumberMix,
    callers: CallerMix,
    prefix: String,
    sent: u64,
}

/// One request of a load run.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Lookup(String),
    RouteCall(RouteCallRequest),
}

impl Requests {
    pub fn new(args: &LoadArgs, run_id: &str, stream: &str, seed: u64) -> Self {
        Self {
            rpc: args.rpc,
            numbers: NumberMix::new(args, seed),
            callers: CallerMix::new(&args.callers, &args.data, seed),
            prefix: format!("{run_id}-{stream}"),
            sent: 0,
        }
    }

    /// The next request, and whether its number is provisioned.
    pub fn next(&mut self) -> (Outgoing, bool) {
        let (number, index) = self.numbers.next();
        let outgoing = match self.rpc {
            Rpc::Lookup => Outgoing::Lookup(number),
            Rpc::RouteCall => {
                self.sent += 1;
                Outgoing::RouteCall(RouteCallRequest {
                    called_number: number,
                    caller_number: self.callers.next(index),
                    gateway_call_id: format!("{}-{}", self.prefix, self.sent),
                    default_region: String::new(),
                })
            }
        };
        (outgoing, index.is_some())
    }
}

pub async fn send(
    client: &mut CallRouterClient<Channel>,
    outgoing: Outgoing,
    deadline: Duration,
) -> Result<(), Status> {
    match outgoing {
        Outgoing::Lookup(number) => lookup(client, number, deadline).await.map(drop),
        Outgoing::RouteCall(request) => route_call(client, request, deadline).await.map(drop),
    }
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
