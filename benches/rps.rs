//! The open-loop load generator behind `deploy/local/bench`, with the no-op
//! baseline server, the bench data set, the L1 memory probe and the report.
//!
//! ```text
//! rps noop   --addr A                 the ceiling: same proto, canned answer, no work
//! rps seed   --database-url U          10 000 numbers over 100 organizations and agents
//! rps load   --target T --label L      one run: closed loop (--concurrency) or open loop
//!            (--concurrency N | --rate R) (--rate, requests/s on a fixed schedule); JSON out
//!            [--lag-database-url U]    meanwhile: agent updates and their invalidation lag
//!            [--unwatched-updates]     the updates only (for the throughput under them)
//! rps coalesce --target T --metrics M  100 concurrent misses for one number → queries?
//! rps memory --entries N               resident bytes per L1 entry
//! rps import-pgbench / import-redis    baselines' own output, as the same JSON
//! rps report --dir D                   the Markdown table, ratios and targets
//! ```
//!
//! Without a subcommand (`cargo test --bench rps`, CI) it checks itself
//! against an in-process no-op server: every scheduled request is accounted
//! for, closed and open loop, the report computes its ratios, and the memory
//! probe counts what it inserts.
//!
//! Open loop means requests leave on a fixed schedule whether or not earlier
//! ones have been answered, and latency is measured from the *scheduled*
//! send time, so a stalled server is charged for the requests it delayed
//! (no coordinated omission). A dedicated pacer thread, with a 1 µs timer
//! slack, hands each request to the runtime at its time; its lateness (tens
//! of microseconds at most) is part of every latency, no-op included, and
//! cancels out of the differences the report takes.
//!
//! The number mix: `--hot-share` of requests go to the hot set (the first
//! `--hot` numbers), `--unknown-share` to numbers nobody provisioned (an
//! expected `NOT_FOUND`), the rest uniformly over every provisioned number
//! (the long tail).

// Tests and benches stop at the first surprise: unwrapping is how they say so.
#![allow(clippy::unwrap_used)]
// two libc calls: the pacer's timer slack and the page size
#![allow(unsafe_code)]

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use clap::{Args, Parser, Subcommand};
use common::admin_get;
use hdrhistogram::Histogram;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use switchboard::{
    domain::{Agent, Organization, Route, E164},
    proto::{
        self,
        call_router_client::CallRouterClient,
        call_router_server::{CallRouter, CallRouterServer},
        EndCallRequest, EndCallResponse, ExplainRouteRequest, ExplainRouteResponse,
        LookupNumberRequest, LookupNumberResponse, RecordUsageRequest, RecordUsageResponse,
        RouteCallRequest, RouteCallResponse,
    },
    routing::{CacheSettings, RouteCache},
    store::{PgStore, PoolSettings},
};
use tokio::net::TcpListener;
use tonic::{
    transport::{server::TcpIncoming, Channel, Endpoint, Server},
    Code, Request, Response, Status,
};
use uuid::Uuid;

/// Latencies are recorded in microseconds, up to a minute, 3 significant
/// digits.
const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Concurrent lookups of one uncached number in `coalesce`.
const COALESCE_REQUESTS: usize = 100;

#[derive(Parser)]
#[command(about = "Switchboard load generator and baselines (see benches/rps.rs)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CallRouter proto with a canned answer and no work.
    Noop {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
    /// Load the bench data set into a migrated database (as its owner).
    Seed {
        #[arg(long)]
        database_url: String,
        #[command(flatten)]
        data: DataSet,
    },
    /// One load run; prints the result and writes it as JSON.
    Load(LoadArgs),
    /// Concurrent misses for one uncached number: how many queries reach
    /// PostgreSQL (from the daemon's own metrics).
    Coalesce {
        #[arg(long)]
        target: String,
        /// The daemon's admin address, `http://host:port`.
        #[arg(long)]
        metrics: String,
        /// A provisioned number this daemon has not looked up yet.
        #[arg(long)]
        number: String,
        #[arg(long, default_value_t = 1)]
        rep: u32,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Resident memory of L1 holding this many numbers.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        entries: usize,
        /// Organizations (each with one agent) the numbers spread over.
        #[arg(long, default_value_t = 10_000)]
        organizations: usize,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A pgbench per-transaction log (`pgbench -l`) as a result.
    ImportPgbench {
        #[arg(long)]
        label: String,
        #[arg(long)]
        rep: u32,
        /// Measured seconds (pgbench -T).
        #[arg(long)]
        seconds: f64,
        /// Concurrency (pgbench -c), or the offered rate with `--rate`.
        #[arg(long)]
        concurrency: Option<usize>,
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long)]
        out: PathBuf,
        logs: Vec<PathBuf>,
    },
    /// `redis-benchmark --csv` output as a result.
    ImportRedis {
        #[arg(long)]
        label: String,
        #[arg(long)]
        rep: u32,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        out: PathBuf,
        csv: PathBuf,
    },
    /// A load run against a server under `valgrind --tool=callgrind`, with
    /// the instructions it counted meanwhile: CPU cost per request as a
    /// count, repeatable on a noisy machine.
    ImportCallgrind {
        #[arg(long)]
        label: String,
        /// Instructions the server executed during the run.
        #[arg(long)]
        instructions: u64,
        /// The run's own result (`load --out`), for the requests answered.
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes the pgbench scripts: the daemon's own lookup, and the shape
    /// PostgREST generates for the same question.
    PgbenchScripts {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        data: DataSet,
    },
    /// The Markdown report over every result in a directory.
    Report {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// The bench data set: `numbers` numbers, number `i` bound to organization
/// and agent `i % organizations`.
#[derive(Args, Clone, Debug)]
struct DataSet {
    #[arg(long, default_value_t = 10_000)]
    numbers: usize,
    #[arg(long, default_value_t = 100)]
    organizations: usize,
}

#[derive(Args, Clone, Debug)]
struct LoadArgs {
    /// `http://host:port` of the server under load.
    #[arg(long)]
    target: String,
    /// Name of the run in the report (`hot_peak`, `noop_low`, ...).
    #[arg(long)]
    label: String,
    /// Repetition number, for the report's medians.
    #[arg(long, default_value_t = 1)]
    rep: u32,
    /// Closed loop: this many requests always in flight.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: requests per second, on a fixed schedule.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop at this share of the throughput of an earlier result.
    #[arg(long, requires = "rate_of")]
    rate_factor: Option<f64>,
    #[arg(long)]
    rate_of: Option<PathBuf>,
    /// HTTP/2 connections, requests spread round-robin.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "8s")]
    duration: Duration,
    /// Each request's deadline (`grpc-timeout`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    deadline: Duration,
    /// Open loop: most requests in flight before the generator itself
    /// gives up on sending (counted as `dropped`).
    #[arg(long, default_value_t = REMEMBERED_RESETS)]
    max_outstanding: usize,
    /// Before the run, look every provisioned number up once (fills L2
    /// for a run with L1 off).
    #[arg(long)]
    prime: bool,
    #[arg(long, default_value_t = 100)]
    hot: usize,
    #[arg(long, default_value_t = 0.8)]
    hot_share: f64,
    #[arg(long, default_value_t = 0.05)]
    unknown_share: f64,
    #[command(flatten)]
    data: DataSet,
    /// Meanwhile, update agents through this (direct, superuser) database
    /// URL and measure how long each takes to show in answers.
    #[arg(long)]
    lag_database_url: Option<String>,
    /// With --lag-database-url: the daemon's admin address (`http://host:port`),
    /// whose `switchboard_invalidation_lag_seconds` (commit → eviction applied)
    /// is read before and after the run.
    #[arg(long, requires = "lag_database_url")]
    lag_metrics: Option<String>,
    #[arg(long, default_value_t = 100.0)]
    updates_per_sec: f64,
    /// With --lag-database-url: make the updates, but do not look their
    /// numbers up until the new name shows. Watching adds lookups of its own
    /// to the load, so a run for the throughput under updates leaves it out
    /// (and works against any server, the no-op too).
    #[arg(long, requires = "lag_database_url")]
    unwatched_updates: bool,
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One run's outcome, the unit the report works on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunResult {
    label: String,
    rep: u32,
    /// `closed`, `open`, or the baseline tool's name.
    mode: String,
    concurrency: Option<usize>,
    offered_rate: Option<f64>,
    seconds: f64,
    /// Requests scheduled (open loop) or sent (closed loop) in the window.
    requests: u64,
    ok: u64,
    /// `NOT_FOUND` for a number nobody provisioned: a correct answer.
    not_found: u64,
    /// Refused as overloaded (`UNAVAILABLE`/`RESOURCE_EXHAUSTED`).
    shed: u64,
    /// Any other failure, including deadlines.
    errors: u64,
    /// Open loop: not sent because `max_outstanding` were in flight.
    dropped: u64,
    /// Correct answers per second.
    goodput: f64,
    latency: Option<Latency>,
    /// Invalidation lag, commit → the new row in an answer.
    lag: Option<Latency>,
    /// Free-form figures (memory, query counts).
    #[serde(default)]
    extra: BTreeMap<String, f64>,
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Latency {
    count: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50) as f64,
            p90: h.value_at_quantile(0.90) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
        })
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid bounds")
}

fn record(h: &Mutex<Histogram<u64>>, elapsed: Duration) {
    let us = (elapsed.as_micros() as u64).clamp(1, HISTOGRAM_MAX_US);
    h.lock().unwrap().record(us).expect("clamped into range");
}

// --- the bench data set --------------------------------------------------

fn bench_number(i: usize) -> String {
    format!("+1800{i:07}")
}

/// Numbers nobody provisions: same shape, another prefix.
fn unknown_number(i: usize) -> String {
    format!("+1899{i:07}")
}

fn bench_org_id(i: usize) -> Uuid {
    Uuid::from_u128(0x0000_0000_0000_4000_9000_0000_0000_0000 | i as u128)
}

fn bench_agent_id(i: usize) -> Uuid {
    Uuid::from_u128(0x0000_0000_0000_4000_a000_0000_0000_0000 | i as u128)
}

const BENCH_ORG_SETTINGS: &str =
    r#"{"timezone": "America/New_York", "record_calls": true, "business_hours": "08:00-18:00"}"#;
const BENCH_LLM_CONFIG: &str = r#"{"model": "gpt-4o-mini", "temperature": 0.3, "tools": ["book_appointment", "transfer"], "system_prompt": "You answer the phone for a busy clinic. Book, move and cancel appointments; transfer emergencies."}"#;

/// The route of bench number `i`, as the daemon answers it: the no-op
/// server's canned answer has the same size and shape.
fn bench_route(i: usize, organizations: usize) -> Route {
    let g = i % organizations;
    let object = |raw: &str| match serde_json::from_str(raw).expect("valid JSON") {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object"),
    };
    Route {
        number: E164::from_canonical(&bench_number(i)).expect("canonical"),
        number_active: true,
        organization: Arc::new(Organization {
            id: bench_org_id(g),
            slug: format!("bench-{g}"),
            name: format!("Bench organization {g}"),
            plan_tier: "enterprise".into(),
            settings: object(BENCH_ORG_SETTINGS),
            concurrency_limit: None,
            is_active: true,
        }),
        agent: Arc::new(Agent {
            id: bench_agent_id(g),
            name: format!("Agent {g}"),
            voice_id: "aura-asteria-en".into(),
            llm_config: object(BENCH_LLM_CONFIG),
            is_active: true,
        }),
    }
}

async fn seed(database_url: &str, data: &DataSet) -> anyhow::Result<()> {
    let client = switchboard::store::connect_direct(database_url).await?;
    let orgs = data.organizations as i64;
    let numbers = data.numbers as i64;
    let org_id = "('00000000-0000-4000-9000-' || lpad(to_hex(g), 12, '0'))::uuid";
    let agent_id = "('00000000-0000-4000-a000-' || lpad(to_hex(g), 12, '0'))::uuid";
    client
        .execute(
            &format!(
                "insert into public.organizations (id, slug, name, plan_tier, settings)
                 select {org_id}, 'bench-' || g, 'Bench organization ' || g, 'enterprise', $2::text::jsonb
                   from generate_series(0, $1::int8 - 1) g
                 on conflict do nothing"
            ),
            &[&orgs, &BENCH_ORG_SETTINGS],
        )
        .await?;
    client
        .execute(
            &format!(
                "insert into public.agents (id, org_id, name, voice_id, llm_config)
                 select {agent_id}, {org_id}, 'Agent ' || g, 'aura-asteria-en', $2::text::jsonb
                   from generate_series(0, $1::int8 - 1) g
                 on conflict do nothing"
            ),
            &[&orgs, &BENCH_LLM_CONFIG],
        )
        .await?;
    client
        .execute(
            &format!(
                "insert into public.phone_numbers (org_id, agent_id, number)
                 select {org_id}, {agent_id}, '+1800' || lpad(i::text, 7, '0')
                   from generate_series(0, $1::int8 - 1) i, lateral (select i % $2::int8 as g) o
                 on conflict do nothing"
            ),
            &[&numbers, &orgs],
        )
        .await?;
    println!(
        "seeded {} numbers over {} organizations",
        data.numbers, data.organizations
    );
    Ok(())
}

/// Picks numbers by the configured mix; `(number, provisioned)`.
struct NumberMix {
    rng: SmallRng,
    hot: usize,
    hot_share: f64,
    unknown_share: f64,
    numbers: usize,
}

impl NumberMix {
    fn new(args: &LoadArgs, seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            hot: args.hot.clamp(1, args.data.numbers),
            hot_share: args.hot_share,
            unknown_share: args.unknown_share,
            numbers: args.data.numbers,
        }
    }

    fn next(&mut self) -> (String, bool) {
        let roll: f64 = self.rng.random();
        if roll < self.unknown_share {
            (
                unknown_number(self.rng.random_range(0..self.numbers)),
                false,
            )
        } else if roll < self.unknown_share + self.hot_share {
            (bench_number(self.rng.random_range(0..self.hot)), true)
        } else {
            (bench_number(self.rng.random_range(0..self.numbers)), true)
        }
    }
}

// --- the no-op server ----------------------------------------------------

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

async fn serve_noop(listener: TcpListener) -> anyhow::Result<()> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(CallRouterServer::new(Noop::new()))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

// --- load ----------------------------------------------------------------

/// What every request of a run adds to.
struct Tally {
    latency: Mutex<Histogram<u64>>,
    requests: AtomicU64,
    ok: AtomicU64,
    not_found: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    /// A few distinct failures, for the operator.
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Mutex::new(histogram()),
            requests: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            not_found: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            first_errors: Mutex::new(Vec::new()),
        }
    }

    /// Counts one answer; `since` is when it was due (open loop) or sent.
    fn answer(&self, result: Result<(), Status>, provisioned: bool, since: Instant) {
        let good = match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(status) if status.code() == Code::NotFound && !provisioned => {
                self.not_found.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(status)
                if matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
                    && status
                        .metadata()
                        .get("switchboard-reason")
                        .is_some_and(|r| r == "overloaded") =>
            {
                self.shed.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(status) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_errors.lock().unwrap();
                let mut line = format!("{:?}: {}", status.code(), status.message());
                // the transport's own error says which side gave up and why
                let mut cause = std::error::Error::source(&status);
                while let Some(error) = cause {
                    line.push_str(&format!(": {error}"));
                    cause = error.source();
                }
                if first.len() < 5 && !first.contains(&line) {
                    first.push(line);
                }
                false
            }
        };
        if good {
            record(&self.latency, since.elapsed());
        }
    }
}

/// Cancelled streams each connection remembers: the open loop's default
/// `--max-outstanding`.
const REMEMBERED_RESETS: usize = 20_000;

async fn connect(
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

async fn lookup(
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

async fn load(args: LoadArgs) -> anyhow::Result<RunResult> {
    let rate = match (args.rate, &args.rate_of, args.rate_factor) {
        (Some(rate), _, _) => Some(rate),
        (None, Some(of), Some(factor)) => Some(read_result(of)?.goodput * factor),
        _ => None,
    };
    anyhow::ensure!(
        rate.is_some() != args.concurrency.is_some(),
        "give either --concurrency (closed loop) or --rate / --rate-of (open loop)"
    );
    let clients = connect(&args.target, args.connections).await?;
    if args.prime {
        prime(&clients, args.data.numbers, args.deadline).await?;
    }
    let tally = Arc::new(Tally::new());
    let started = Instant::now();
    let window = (started + args.warmup, started + args.warmup + args.duration);
    let stop_lag = Arc::new(AtomicBool::new(false));
    let applied_before = match &args.lag_metrics {
        Some(metrics) => Some(applied_lag_buckets(metrics).await?),
        None => None,
    };
    let lag = args.lag_database_url.as_ref().map(|url| {
        tokio::spawn(invalidation_lag(
            url.clone(),
            clients[0].clone(),
            args.clone(),
            window,
            stop_lag.clone(),
        ))
    });
    let mut extra = BTreeMap::new();
    let mode = match (args.concurrency, rate) {
        (Some(concurrency), _) => {
            closed_loop(&args, clients, concurrency, window, tally.clone()).await;
            "closed"
        }
        (None, Some(rate)) => {
            let late = open_loop(&args, clients, rate, window, tally.clone()).await?;
            // how far behind its schedule the generator sent: a run whose
            // sends were late measured the generator, not the server
            extra.insert(
                "send_late_p99_us".to_string(),
                late.value_at_quantile(0.99) as f64,
            );
            extra.insert("send_late_max_us".to_string(), late.max() as f64);
            "open"
        }
        (None, None) => unreachable!("checked above"),
    };
    stop_lag.store(true, Ordering::Release);
    let (lag, updates) = match lag {
        Some(task) => {
            let (lags, updates) = task.await??;
            (Some(lags), Some(updates))
        }
        None => (None, None),
    };
    if let Some((made, unseen)) = updates {
        extra.insert("updates".to_string(), made as f64);
        if !args.unwatched_updates {
            extra.insert("updates_never_seen".to_string(), unseen as f64);
        }
    }
    if let (Some(metrics), Some(before)) = (&args.lag_metrics, applied_before) {
        let after = applied_lag_buckets(metrics).await?;
        if let Some((bound, count)) = p99_bucket(&before, &after) {
            extra.insert("applied_lag_p99_bound_ms".to_string(), bound * 1000.0);
            extra.insert("applied_lag_count".to_string(), count);
        }
    }
    for line in tally.first_errors.lock().unwrap().iter() {
        eprintln!("rps: {}: error: {line}", args.label);
    }
    let seconds = args.duration.as_secs_f64();
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let good = count(&tally.ok) + count(&tally.not_found);
    let latency = Latency::of(&tally.latency.lock().unwrap());
    Ok(RunResult {
        label: args.label.clone(),
        rep: args.rep,
        mode: mode.into(),
        concurrency: args.concurrency,
        offered_rate: rate,
        seconds,
        requests: count(&tally.requests),
        ok: count(&tally.ok),
        not_found: count(&tally.not_found),
        shed: count(&tally.shed),
        errors: count(&tally.errors),
        dropped: count(&tally.dropped),
        goodput: good as f64 / seconds,
        latency,
        lag: lag.as_ref().and_then(Latency::of),
        extra,
    })
}

/// Looks up every provisioned number once, 16 at a time (within the
/// daemon's pool), each tried up to three times.
async fn prime(
    clients: &[CallRouterClient<Channel>],
    numbers: usize,
    deadline: Duration,
) -> anyhow::Result<()> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(0..numbers)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            async move {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match lookup(&mut client, bench_number(i), deadline).await {
                        Ok(_) => return Ok(()),
                        Err(status) if attempt == 3 => {
                            anyhow::bail!("priming {}: {status}", bench_number(i))
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

/// `concurrency` workers, each sending its next request when its last one
/// is answered. Only requests sent inside the window count.
async fn closed_loop(
    args: &LoadArgs,
    clients: Vec<CallRouterClient<Channel>>,
    concurrency: usize,
    (from, until): (Instant, Instant),
    tally: Arc<Tally>,
) {
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let mut client = clients[worker % clients.len()].clone();
            let mut mix = NumberMix::new(args, worker as u64);
            let (tally, deadline) = (tally.clone(), args.deadline);
            tokio::spawn(async move {
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let (number, provisioned) = mix.next();
                    let result = lookup(&mut client, number, deadline).await.map(drop);
                    if sent >= from {
                        tally.requests.fetch_add(1, Ordering::Relaxed);
                        tally.answer(result, provisioned, sent);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("load worker panicked");
    }
}

/// Requests leave at `rate` per second from a pacer thread, whatever the
/// server does; each is timed from when it was due. Returns how late, in
/// µs, each counted request left.
async fn open_loop(
    args: &LoadArgs,
    clients: Vec<CallRouterClient<Channel>>,
    rate: f64,
    (from, until): (Instant, Instant),
    tally: Arc<Tally>,
) -> anyhow::Result<Histogram<u64>> {
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "the rate must be positive");
    let period = Duration::from_secs_f64(1.0 / rate);
    let outstanding = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Handle::current();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let pacer = {
        let (tally, outstanding) = (tally.clone(), outstanding.clone());
        let (mut mix, deadline, max) =
            (NumberMix::new(args, 0), args.deadline, args.max_outstanding);
        let start = Instant::now();
        std::thread::spawn(move || {
            // the kernel's default slack (50 µs) would bunch the sends
            // SAFETY: prctl with PR_SET_TIMERSLACK takes a plain integer.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000) };
            let mut late = histogram();
            let mut i: u32 = 0;
            loop {
                let due = start + period * i;
                i += 1;
                if due >= until {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let (number, provisioned) = mix.next();
                let counted = due >= from;
                if counted {
                    tally.requests.fetch_add(1, Ordering::Relaxed);
                    late.saturating_record(due.elapsed().as_micros() as u64);
                }
                if outstanding.load(Ordering::Acquire) >= max {
                    if counted {
                        tally.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                outstanding.fetch_add(1, Ordering::AcqRel);
                let mut client = clients[i as usize % clients.len()].clone();
                let (tally, outstanding) = (tally.clone(), outstanding.clone());
                runtime.spawn(async move {
                    let result = lookup(&mut client, number, deadline).await.map(drop);
                    if counted {
                        tally.answer(result, provisioned, due);
                    }
                    outstanding.fetch_sub(1, Ordering::AcqRel);
                });
            }
            let _ = done_tx.send(());
            late
        })
    };
    done_rx.await?;
    let late = pacer.join().expect("pacer thread panicked");
    // every request carries a deadline: wait for the last answers a little
    // longer than that
    let drained_by = Instant::now() + args.deadline + Duration::from_secs(1);
    while outstanding.load(Ordering::Acquire) > 0 {
        anyhow::ensure!(
            Instant::now() < drained_by,
            "{} requests still unanswered past their deadline",
            outstanding.load(Ordering::Acquire)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(late)
}

/// Updates agents at `updates_per_sec` during the window; for each (unless
/// `unwatched_updates`), the time from its commit until an answer for one of
/// the agent's hot numbers carries the new name. Returns the lag histogram,
/// and how many updates were made and how many never showed within 5 s.
async fn invalidation_lag(
    database_url: String,
    client: CallRouterClient<Channel>,
    args: LoadArgs,
    (from, until): (Instant, Instant),
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Histogram<u64>, (u64, u64))> {
    let db = switchboard::store::connect_direct(&database_url).await?;
    let lags = Arc::new(Mutex::new(histogram()));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.updates_per_sec));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchers = Vec::new();
    let mut version: u64 = 0;
    while !stop.load(Ordering::Acquire) && Instant::now() < until {
        ticker.tick().await;
        if Instant::now() < from {
            continue;
        }
        // number g is a hot number of agent g
        let g = (version as usize) % args.data.organizations.min(args.hot);
        version += 1;
        let name = format!("Agent {g} v{version}");
        db.execute(
            "update public.agents set name = $1 where id = $2",
            &[&name, &bench_agent_id(g)],
        )
        .await?;
        if args.unwatched_updates {
            continue;
        }
        let committed = Instant::now();
        let (mut client, lags, deadline) = (client.clone(), lags.clone(), args.deadline);
        watchers.push(tokio::spawn(async move {
            let give_up = committed + Duration::from_secs(5);
            loop {
                let answer = lookup(&mut client, bench_number(g), deadline).await;
                let seen = match answer {
                    Ok(answer) => answer.route.and_then(|r| r.agent).map(|a| a.name),
                    Err(status) => Some(format!("{:?}: {}", status.code(), status.message())),
                };
                if seen.as_deref() == Some(name.as_str()) {
                    record(&lags, committed.elapsed());
                    return Ok(());
                }
                anyhow::ensure!(
                    Instant::now() < give_up,
                    "the update of agent {g} to {name:?} never showed in an answer; the last was {seen:?}"
                );
                tokio::task::yield_now().await;
            }
        }));
    }
    // an update that never shows is reported, and counted, not fatal: the
    // run's other figures still stand
    let mut unseen = 0;
    for watcher in watchers {
        if let Err(error) = watcher.await? {
            if unseen == 0 {
                eprintln!("rps: {}: {error}", args.label);
            }
            unseen += 1;
        }
    }
    let lags = lags.lock().unwrap().clone();
    Ok((lags, (version, unseen)))
}

// --- the daemon's metrics, coalescing and memory --------------------------

/// The daemon's /metrics page; `metrics` is its admin address.
async fn scrape(metrics: &str) -> anyhow::Result<String> {
    let addr = metrics
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()?;
    let (_, body) = admin_get(addr, "/metrics")
        .await
        .ok_or_else(|| anyhow::anyhow!("no answer from {metrics}/metrics"))?;
    Ok(body)
}

/// The daemon's `switchboard_invalidation_lag_seconds` buckets: upper bound
/// in seconds and cumulative count, in order.
async fn applied_lag_buckets(metrics: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let body = scrape(metrics).await?;
    Ok(body
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("switchboard_invalidation_lag_seconds_bucket{le=\"")?;
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = match bound {
                "+Inf" => f64::INFINITY,
                bound => bound.parse().ok()?,
            };
            Some((bound, count.parse().ok()?))
        })
        .collect())
}

/// Of what a histogram gained between two readings of its buckets: the
/// upper bound of the bucket holding the p99, and how many were added.
fn p99_bucket(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<(f64, f64)> {
    let earlier = |bound: f64| {
        before
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, c)| *c)
    };
    let added: Vec<(f64, f64)> = after
        .iter()
        .map(|&(bound, count)| (bound, count - earlier(bound)))
        .collect();
    let total = added.last()?.1;
    if total <= 0.0 {
        return None;
    }
    added
        .iter()
        .find(|(_, count)| *count >= 0.99 * total)
        .map(|&(bound, _)| (bound, total))
}

/// The daemon's count of `resolve_number` queries, from its /metrics.
async fn resolve_queries(metrics: &str) -> anyhow::Result<f64> {
    let body = scrape(metrics).await?;
    Ok(body
        .lines()
        .find(|l| l.starts_with("switchboard_store_query_seconds_count{query=\"resolve_number\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

async fn coalesce(
    target: &str,
    metrics: &str,
    number: &str,
    rep: u32,
) -> anyhow::Result<RunResult> {
    let clients = connect(target, 4).await?;
    let before = resolve_queries(metrics).await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(COALESCE_REQUESTS));
    let tasks: Vec<_> = (0..COALESCE_REQUESTS)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let (barrier, number) = (barrier.clone(), number.to_string());
            tokio::spawn(async move {
                barrier.wait().await;
                lookup(&mut client, number, Duration::from_secs(2)).await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        if task.await?.is_ok() {
            ok += 1;
        }
    }
    let queries = resolve_queries(metrics).await? - before;
    println!(
        "{COALESCE_REQUESTS} concurrent lookups of {number}: {ok} answered, {queries} queries"
    );
    Ok(RunResult {
        label: "coalesce".into(),
        rep,
        mode: "coalesce".into(),
        requests: COALESCE_REQUESTS as u64,
        ok,
        extra: BTreeMap::from([("queries".into(), queries)]),
        ..Default::default()
    })
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

/// Fills an L1 with `entries` numbers (as warm start does) and reports the
/// resident memory it added. The tier below is a PostgreSQL pool that never
/// connects: nothing is read from it.
async fn memory(entries: usize, organizations: usize) -> anyhow::Result<RunResult> {
    let unused = PgStore::new(
        "postgres://switchboard_daemon@127.0.0.1:1/unused",
        &PoolSettings {
            max_size: 1,
            wait_timeout: Duration::from_millis(1),
            connect_timeout: Duration::from_millis(1),
            query_timeout: Duration::from_millis(1),
        },
    )
    .map_err(anyhow::Error::msg)?;
    let cache = RouteCache::new(
        unused,
        CacheSettings {
            capacity: entries as u64,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(5),
            unconfirmed_ttl: Duration::from_secs(3600),
            max_stale: Duration::from_secs(3600),
        },
    );
    cache.set_confirmed(true);
    let organizations = organizations.clamp(1, entries.max(1));
    let before = resident_bytes();
    // one organization and agent value per organization, shared by its
    // numbers, as the daemon shares them
    let shared: Vec<Route> = (0..organizations)
        .map(|g| bench_route(g, organizations))
        .collect();
    let routes: Vec<Route> = (0..entries)
        .map(|i| {
            let template = &shared[i % organizations];
            Route {
                number: E164::from_canonical(&bench_number(i)).expect("canonical"),
                ..template.clone()
            }
        })
        .collect();
    drop(shared);
    let kept = cache.preload(routes).await;
    let after = resident_bytes();
    let added = after.saturating_sub(before) as f64;
    let per_entry = added / kept.max(1) as f64;
    println!(
        "L1 with {kept} numbers over {organizations} organizations: {:.1} MiB resident added, {per_entry:.0} bytes per number",
        added / (1024.0 * 1024.0)
    );
    Ok(RunResult {
        label: "memory".into(),
        mode: "memory".into(),
        requests: entries as u64,
        ok: kept as u64,
        extra: BTreeMap::from([
            ("entries".into(), kept as f64),
            ("resident_bytes_added".into(), added),
            ("bytes_per_entry".into(), per_entry),
        ]),
        ..Default::default()
    })
}

// --- the baselines' own output -------------------------------------------

/// `pgbench -l` lines: `client_id transaction_no time script_no epoch us
/// [schedule_lag]`, `time` being the transaction's latency in microseconds;
/// with `-R` the schedule lag is added, so that latency counts from the
/// scheduled start, as the open-loop generator counts it.
fn import_pgbench(
    logs: &[PathBuf],
    label: String,
    rep: u32,
    seconds: f64,
    concurrency: Option<usize>,
    rate: Option<f64>,
) -> anyhow::Result<RunResult> {
    let mut h = histogram();
    let mut failed = 0;
    for log in logs {
        for line in std::fs::read_to_string(log)?.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.get(2) {
                Some(&"failed") | Some(&"skipped") => failed += 1,
                Some(us) => {
                    let lag = fields.get(6).map_or(Ok(0), |lag| lag.parse::<u64>())?;
                    h.record((us.parse::<u64>()? + lag).clamp(1, HISTOGRAM_MAX_US))?
                }
                None => {}
            }
        }
    }
    anyhow::ensure!(
        !h.is_empty(),
        "no transactions in the pgbench logs of {label}"
    );
    Ok(RunResult {
        label,
        rep,
        mode: "pgbench".into(),
        concurrency,
        offered_rate: rate,
        seconds,
        requests: h.len() + failed,
        ok: h.len(),
        errors: failed,
        goodput: h.len() as f64 / seconds,
        latency: Latency::of(&h),
        ..Default::default()
    })
}

/// `redis-benchmark --csv`: a header, then
/// `"GET","rps","avg_ms","min_ms","p50_ms","p95_ms","p99_ms","max_ms"`.
fn import_redis(
    csv: &Path,
    label: String,
    rep: u32,
    concurrency: usize,
) -> anyhow::Result<RunResult> {
    let text = std::fs::read_to_string(csv)?;
    let row = text
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .ok_or_else(|| anyhow::anyhow!("no GET row in {}", csv.display()))?;
    let values: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|v| v.trim_matches('"').parse())
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(values.len() >= 7, "unexpected redis-benchmark row: {row}");
    let us = |ms: f64| ms * 1000.0;
    Ok(RunResult {
        label,
        rep,
        mode: "redis-benchmark".into(),
        concurrency: Some(concurrency),
        goodput: values[0],
        latency: Some(Latency {
            count: 0,
            p50: us(values[3]),
            p90: us(values[4]), // redis-benchmark reports p95, not p90
            p99: us(values[5]),
            p999: us(values[6]),
            max: us(values[6]),
        }),
        ..Default::default()
    })
}

fn import_callgrind(run: &Path, label: String, instructions: u64) -> anyhow::Result<RunResult> {
    let run: RunResult = serde_json::from_str(&std::fs::read_to_string(run)?)?;
    let answered = run.ok + run.not_found;
    anyhow::ensure!(
        answered > 0 && run.shed + run.errors + run.dropped == 0,
        "the callgrind run must answer every request: {answered} answered, \
         {} shed, {} errors, {} dropped",
        run.shed,
        run.errors,
        run.dropped
    );
    Ok(RunResult {
        label,
        mode: "callgrind".into(),
        // timings under valgrind mean nothing
        latency: None,
        extra: BTreeMap::from([
            ("instructions".into(), instructions as f64),
            (
                "instructions_per_request".into(),
                instructions as f64 / answered as f64,
            ),
        ]),
        ..run
    })
}

/// pgbench scripts over the bench data set's mix of hot and long-tail
/// numbers: `route.sql` is the daemon's own statement through the pooler;
/// `postgrest.sql` is the transaction PostgREST runs for
/// `GET /phone_numbers?number=eq.X&select=*,agents(*),organizations(*)`
/// (role and claims set per request, the CTE and `json_agg` shape).
fn pgbench_scripts(dir: &Path, data: &DataSet) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pick = format!(
        "\\set hot random(0, 99)\n\\set tail random(0, {})\n\\set roll random(1, 100)\n\\set i case when :roll <= 80 then :hot else :tail end\n",
        data.numbers - 1
    );
    let number = "'+1800' || lpad(:i::text, 7, '0')";
    let route = switchboard::store::postgres::RESOLVE_NUMBER_SQL
        .replace("$1", number)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(dir.join("route.sql"), format!("{pick}{route};\n"))?;
    let postgrest = format!(
        "{pick}BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;\n\
         select set_config('search_path', '\"public\", \"extensions\"', true), set_config('role', 'service_role', true), set_config('request.jwt.claims', '{{\"role\":\"service_role\",\"iss\":\"supabase\"}}', true), set_config('request.method', 'GET', true), set_config('request.path', '/phone_numbers', true), set_config('request.headers', '{{\"accept\":\"application/json\"}}', true), set_config('request.cookies', '{{}}', true);\n\
         WITH pgrst_source AS ( SELECT \"public\".\"phone_numbers\".*, row_to_json(\"phone_numbers_agents_1\".*)::jsonb AS \"agents\", row_to_json(\"phone_numbers_organizations_1\".*)::jsonb AS \"organizations\" FROM \"public\".\"phone_numbers\" LEFT JOIN LATERAL ( SELECT \"agents_1\".* FROM \"public\".\"agents\" AS \"agents_1\" WHERE \"agents_1\".\"org_id\" = \"public\".\"phone_numbers\".\"org_id\" AND \"agents_1\".\"id\" = \"public\".\"phone_numbers\".\"agent_id\" ) AS \"phone_numbers_agents_1\" ON TRUE LEFT JOIN LATERAL ( SELECT \"organizations_1\".* FROM \"public\".\"organizations\" AS \"organizations_1\" WHERE \"organizations_1\".\"id\" = \"public\".\"phone_numbers\".\"org_id\" ) AS \"phone_numbers_organizations_1\" ON TRUE WHERE \"public\".\"phone_numbers\".\"number\" = {number} ) SELECT null::bigint AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, coalesce(json_agg(_postgrest_t), '[]') AS body, nullif(current_setting('response.headers', true), '') AS response_headers, nullif(current_setting('response.status', true), '') AS response_status, '' AS response_inserted FROM ( SELECT * FROM pgrst_source ) _postgrest_t;\n\
         COMMIT;\n"
    );
    std::fs::write(dir.join("postgrest.sql"), postgrest)?;
    Ok(())
}

// --- the report ----------------------------------------------------------

fn read_result(path: &Path) -> anyhow::Result<RunResult> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn write_result(result: &RunResult, out: Option<&Path>) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(result)?;
    match out {
        Some(path) => std::fs::write(path, json)?,
        None => println!("{json}"),
    }
    Ok(())
}

/// Results by label, then repetition.
type Results = BTreeMap<String, BTreeMap<u32, RunResult>>;

fn read_results(dir: &Path) -> anyhow::Result<Results> {
    let mut results = Results::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let result = read_result(&path)?;
            results
                .entry(result.label.clone())
                .or_default()
                .insert(result.rep, result);
        }
    }
    Ok(results)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// One target: a figure computed per repetition from that repetition's
/// runs, its median, and the bound it must meet.
struct Target {
    name: &'static str,
    /// How the figure is computed, for the reader.
    formula: &'static str,
    figure: fn(&Results, u32) -> Option<f64>,
    /// The figure must be at most (or at least) this.
    bound: f64,
    at_most: bool,
}

fn get(results: &Results, label: &str, rep: u32) -> Option<RunResult> {
    let runs = results.get(label)?;
    // single-run measurements (memory, coalesce) serve every repetition
    runs.get(&rep)
        .or_else(|| (runs.len() == 1).then(|| runs.values().next()).flatten())
        .cloned()
}

fn goodput(r: &Results, label: &str, rep: u32) -> Option<f64> {
    get(r, label, rep).map(|x| x.goodput)
}

/// The share of `peak`'s goodput that `during` lost.
fn drop_from(r: &Results, during: &str, peak: &str, rep: u32) -> Option<f64> {
    Some(1.0 - goodput(r, during, rep)? / goodput(r, peak, rep)?)
}

/// One of a run's extra figures.
fn extra(r: &Results, label: &str, key: &str, rep: u32) -> Option<f64> {
    get(r, label, rep)?.extra.get(key).copied()
}

/// Instructions per answered request, from a callgrind run.
fn instructions(r: &Results, label: &str, rep: u32) -> Option<f64> {
    extra(r, label, "instructions_per_request", rep)
}

fn p50(r: &Results, label: &str, rep: u32) -> Option<f64> {
    get(r, label, rep)?.latency.map(|l| l.p50)
}

fn p99(r: &Results, label: &str, rep: u32) -> Option<f64> {
    get(r, label, rep)?.latency.map(|l| l.p99)
}

const TARGETS: &[Target] = &[
    Target {
        name: "hot throughput vs no-op",
        formula: "hot_peak / noop_peak",
        figure: |r, n| Some(goodput(r, "hot_peak", n)? / goodput(r, "noop_peak", n)?),
        bound: 0.85,
        at_most: false,
    },
    Target {
        name: "the same, as CPU cost: no-op vs hot instructions per request",
        formula: "noop_callgrind / hot_callgrind (instructions per request)",
        figure: |r, n| {
            Some(instructions(r, "noop_callgrind", n)? / instructions(r, "hot_callgrind", n)?)
        },
        bound: 0.85,
        at_most: false,
    },
    Target {
        name: "hot p99 at half the no-op's peak vs no-op p99",
        formula: "hot_half.p99 / noop_half.p99",
        figure: |r, n| Some(p99(r, "hot_half", n)? / p99(r, "noop_half", n)?),
        bound: 1.2,
        at_most: true,
    },
    Target {
        name: "L2 p50 over no-op p50 + Redis GET p50",
        formula: "l2_low.p50 − noop_low.p50 − redis_get_c1.p50 (µs)",
        figure: |r, n| {
            Some(p50(r, "l2_low", n)? - p50(r, "noop_low", n)? - p50(r, "redis_get_c1", n)?)
        },
        bound: 15.0,
        at_most: true,
    },
    Target {
        name: "cold p99 vs no-op p99 + pooled query p99",
        formula: "l3_low.p99 / (noop_low.p99 + pg_route_low.p99)",
        figure: |r, n| {
            Some(p99(r, "l3_low", n)? / (p99(r, "noop_low", n)? + p99(r, "pg_route_low", n)?))
        },
        bound: 1.3,
        at_most: true,
    },
    Target {
        name: "queries for 100 concurrent misses of one number",
        formula: "coalesce.queries",
        figure: |r, n| extra(r, "coalesce", "queries", n),
        bound: 1.0,
        at_most: true,
    },
    Target {
        name: "hot throughput vs PostgREST-shaped SQL",
        formula: "hot_peak / pg_postgrest_peak",
        figure: |r, n| Some(goodput(r, "hot_peak", n)? / goodput(r, "pg_postgrest_peak", n)?),
        bound: 5.0,
        at_most: false,
    },
    Target {
        name: "goodput at 2× the sustainable rate vs peak (daemon held to a share of a core)",
        formula: "capped_overload / capped_peak",
        figure: |r, n| Some(goodput(r, "capped_overload", n)? / goodput(r, "capped_peak", n)?),
        bound: 0.9,
        at_most: false,
    },
    Target {
        name: "p99 at 2× the sustainable rate vs at half",
        formula: "capped_overload.p99 / capped_half.p99",
        figure: |r, n| Some(p99(r, "capped_overload", n)? / p99(r, "capped_half", n)?),
        bound: 5.0,
        at_most: true,
    },
    Target {
        name: "the same, shedding at 5 ms queue delay: goodput",
        formula: "capped_strict_overload / capped_peak",
        figure: |r, n| {
            Some(goodput(r, "capped_strict_overload", n)? / goodput(r, "capped_peak", n)?)
        },
        bound: 0.9,
        at_most: false,
    },
    Target {
        name: "the same, shedding at 5 ms queue delay: p99",
        formula: "capped_strict_overload.p99 / capped_strict_half.p99",
        figure: |r, n| {
            Some(p99(r, "capped_strict_overload", n)? / p99(r, "capped_strict_half", n)?)
        },
        bound: 5.0,
        at_most: true,
    },
    Target {
        name: "invalidation lag p99 at 100 updates/s, half load: commit → applied on the replica (the daemon's histogram, bound of the bucket holding it, ms)",
        formula: "hot_updates_half.applied_lag_p99_bound_ms",
        figure: |r, n| extra(r, "hot_updates_half", "applied_lag_p99_bound_ms", n),
        bound: 5.0,
        at_most: true,
    },
    Target {
        name: "the same, commit → the new name in an answer (ms)",
        formula: "hot_updates_half.lag.p99 / 1000",
        figure: |r, n| Some(get(r, "hot_updates_half", n)?.lag?.p99 / 1000.0),
        bound: 5.0,
        at_most: true,
    },
    Target {
        name: "hot throughput drop during updates",
        formula: "1 − hot_updates / hot_peak",
        figure: |r, n| drop_from(r, "hot_updates", "hot_peak", n),
        bound: 0.05,
        at_most: true,
    },
    Target {
        name: "the same, less the no-op's drop under the same updates (what the database's work takes from the shared cores)",
        formula: "(1 − hot_updates / hot_peak) − (1 − noop_updates / noop_peak)",
        figure: |r, n| {
            Some(
                drop_from(r, "hot_updates", "hot_peak", n)?
                    - drop_from(r, "noop_updates", "noop_peak", n)?,
            )
        },
        bound: 0.05,
        at_most: true,
    },
];

/// A target's median over the repetitions, and whether it is met.
fn evaluate(target: &Target, results: &Results) -> Option<(f64, usize, bool)> {
    // repetition 0 holds what is measured once per session (memory)
    let reps: std::collections::BTreeSet<u32> = results
        .values()
        .flat_map(|runs| runs.keys().copied())
        .filter(|&rep| rep > 0)
        .collect();
    let figures: Vec<f64> = reps
        .iter()
        .filter_map(|&n| (target.figure)(results, n))
        .collect();
    let value = median(figures.clone())?;
    let met = if target.at_most {
        value <= target.bound
    } else {
        value >= target.bound
    };
    Some((value, figures.len(), met))
}

fn report(results: &Results) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    writeln!(out, "| run | mode | load | goodput/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | shed | errors | sent late p99 µs | reps |").unwrap();
    writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for (label, runs) in results {
        if runs
            .values()
            .all(|r| r.latency.is_none() && r.goodput == 0.0)
        {
            continue; // memory, coalesce: reported below
        }
        let pick =
            |f: &dyn Fn(&RunResult) -> Option<f64>| median(runs.values().filter_map(f).collect());
        let any = runs.values().next().expect("non-empty");
        let load = match (any.concurrency, any.offered_rate) {
            (_, Some(_)) => format!("{} req/s", fmt(pick(&|r| r.offered_rate))),
            (Some(c), None) => format!("{c} in flight"),
            _ => "–".into(),
        };
        writeln!(
            out,
            "| {label} | {} | {load} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            any.mode,
            fmt(pick(&|r| Some(r.goodput))),
            fmt(pick(&|r| r.latency.map(|l| l.p50))),
            fmt(pick(&|r| r.latency.map(|l| l.p90))),
            fmt(pick(&|r| r.latency.map(|l| l.p99))),
            fmt(pick(&|r| r.latency.map(|l| l.p999))),
            fmt(pick(&|r| r.latency.map(|l| l.max))),
            fmt(pick(&|r| Some((r.shed + r.dropped) as f64))),
            fmt(pick(&|r| Some(r.errors as f64))),
            fmt(pick(&|r| r.extra.get("send_late_p99_us").copied())),
            runs.len(),
        )
        .unwrap();
    }
    writeln!(out, "\nMedians over the repetitions. Targets, each computed within a repetition, median reported:\n").unwrap();
    writeln!(out, "| target | figure | median | bound | met |").unwrap();
    writeln!(out, "|---|---|---:|---:|---|").unwrap();
    for target in TARGETS {
        let bound = format!(
            "{} {}",
            if target.at_most { "≤" } else { "≥" },
            target.bound
        );
        match evaluate(target, results) {
            Some((value, reps, met)) => writeln!(
                out,
                "| {} | `{}` | {value:.2} ({reps}×) | {bound} | {} |",
                target.name,
                target.formula,
                if met { "yes" } else { "**no**" }
            ),
            None => writeln!(
                out,
                "| {} | `{}` | not measured | {bound} | – |",
                target.name, target.formula
            ),
        }
        .unwrap();
    }
    let per_request = |label: &str| {
        results
            .get(label)
            .and_then(|runs| runs.values().next())
            .and_then(|run| run.extra.get("instructions_per_request").copied())
    };
    if let (Some(noop), Some(hot)) = (per_request("noop_callgrind"), per_request("hot_callgrind")) {
        writeln!(
            out,
            "\nInstructions per request under callgrind: no-op {noop:.0}, hot {hot:.0}."
        )
        .unwrap();
    }
    if let Some(memory) = results.get("memory").and_then(|m| m.values().next()) {
        let x = |k: &str| memory.extra.get(k).copied().unwrap_or(f64::NAN);
        writeln!(
            out,
            "\nL1 resident memory: {:.0} numbers added {:.1} MiB, {:.0} bytes per number.",
            x("entries"),
            x("resident_bytes_added") / (1024.0 * 1024.0),
            x("bytes_per_entry")
        )
        .unwrap();
    }
    out
}

// --- self-check ----------------------------------------------------------

/// `cargo test --bench rps`: the generator against an in-process no-op
/// server. Asserts accounting, not speed.
async fn self_check() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let target = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve_noop(listener));
    let args = |label: &str| {
        let cli = Cli::parse_from([
            "rps",
            "load",
            "--target",
            &target,
            "--label",
            label,
            "--warmup",
            "200ms",
            "--duration",
            "500ms",
            "--connections",
            "2",
        ]);
        match cli.command {
            Some(Command::Load(args)) => args,
            _ => unreachable!("a load command"),
        }
    };

    let closed = load(LoadArgs {
        concurrency: Some(4),
        ..args("noop_peak")
    })
    .await?;
    assert_eq!(closed.errors, 0, "{closed:?}");
    assert!(closed.ok > 0, "closed loop answered nothing: {closed:?}");
    assert_eq!(closed.requests, closed.ok + closed.not_found + closed.shed);
    assert_eq!(closed.latency.unwrap().count, closed.ok);

    // 400/s for 0.5 s: the schedule has exactly 200 requests in the window,
    // each answered or accounted for whatever the machine's speed
    let open = load(LoadArgs {
        rate: Some(400.0),
        ..args("noop_half")
    })
    .await?;
    assert_eq!(open.requests, 200, "{open:?}");
    assert_eq!(
        open.ok + open.errors + open.dropped + open.shed,
        200,
        "{open:?}"
    );
    assert_eq!(open.errors, 0, "{open:?}");
    assert!(open.extra.contains_key("send_late_p99_us"), "{open:?}");

    // the p99 of what a histogram gained between two readings: 100 added,
    // 98 within 5 ms, the 99th within 10 ms
    let before = [(0.005, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)];
    let after = [(0.005, 108.0), (0.01, 109.0), (f64::INFINITY, 110.0)];
    assert_eq!(p99_bucket(&before, &after), Some((0.01, 100.0)));
    assert_eq!(p99_bucket(&before, &before), None);

    let dir = tempfile::tempdir()?;
    write_result(&closed, Some(&dir.path().join("a.json")))?;
    let mut hot = closed.clone();
    hot.label = "hot_peak".into();
    hot.goodput = closed.goodput * 0.5;
    write_result(&hot, Some(&dir.path().join("b.json")))?;
    let results = read_results(dir.path())?;
    let (ratio, reps, met) = evaluate(&TARGETS[0], &results).expect("both runs present");
    assert!(
        (ratio - 0.5).abs() < 1e-9 && reps == 1 && !met,
        "{ratio} {reps} {met}"
    );
    assert!(
        evaluate(&TARGETS[5], &results).is_none(),
        "no PostgREST run"
    );
    let table = report(&results);
    assert!(
        table.contains("| hot_peak |") && table.contains("**no**"),
        "{table}"
    );

    let memory = memory(10_000, 100).await?;
    assert_eq!(memory.ok, 10_000, "every number kept");
    assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    println!("rps: self-check passed");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` appends --bench; `cargo test` passes nothing
    let args = std::env::args().filter(|a| a != "--bench");
    let Some(command) = Cli::parse_from(args).command else {
        return self_check().await;
    };
    match command {
        Command::Noop { addr } => {
            let listener = TcpListener::bind(addr).await?;
            println!("noop listening on {}", listener.local_addr()?);
            serve_noop(listener).await
        }
        Command::Seed { database_url, data } => seed(&database_url, &data).await,
        Command::Load(args) => {
            let out = args.out.clone();
            let result = load(args).await?;
            eprintln!(
                "rps: {} rep {}: {:.0}/s good, p50 {} µs, p99 {} µs, shed {}, errors {}, dropped {}",
                result.label,
                result.rep,
                result.goodput,
                result.latency.map_or(0.0, |l| l.p50),
                result.latency.map_or(0.0, |l| l.p99),
                result.shed,
                result.errors,
                result.dropped
            );
            write_result(&result, out.as_deref())
        }
        Command::Coalesce {
            target,
            metrics,
            number,
            rep,
            out,
        } => write_result(
            &coalesce(&target, &metrics, &number, rep).await?,
            out.as_deref(),
        ),
        Command::Memory {
            entries,
            organizations,
            out,
        } => write_result(&memory(entries, organizations).await?, out.as_deref()),
        Command::ImportPgbench {
            label,
            rep,
            seconds,
            concurrency,
            rate,
            out,
            logs,
        } => write_result(
            &import_pgbench(&logs, label, rep, seconds, concurrency, rate)?,
            Some(&out),
        ),
        Command::ImportRedis {
            label,
            rep,
            concurrency,
            out,
            csv,
        } => write_result(&import_redis(&csv, label, rep, concurrency)?, Some(&out)),
        Command::ImportCallgrind {
            label,
            instructions,
            run,
            out,
        } => write_result(&import_callgrind(&run, label, instructions)?, Some(&out)),
        Command::PgbenchScripts { dir, data } => pgbench_scripts(&dir, &data),
        Command::Report { dir } => {
            print!("{}", report(&read_results(&dir)?));
            Ok(())
        }
    }
}
