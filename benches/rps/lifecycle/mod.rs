//! `rps lifecycle`: whole calls, as a gateway places them, on a fixed
//! schedule of calls per second. Each call is routed, reports usage while
//! it holds and is ended; an outage can be started and ended in the middle;
//! and afterwards the database is read to prove that everything the daemon
//! acknowledged landed exactly once.

mod call;
pub mod expected;
pub mod landed;
mod outage;
mod results;
mod tally;
mod timeline;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use switchboard::proto::call_router_client::CallRouterClient;
use tonic::transport::Channel;

pub use self::{
    call::CallOutcome,
    results::{results_of, write_results},
    timeline::{per_second, Timeline},
};
use self::{
    call::{live, Planner},
    landed::{per_unit, Database, Landed, QUANTITY},
    outage::Outage,
    tally::RpcTally,
};
use crate::{
    calls::run_id, cli::LifecycleArgs, client::connect, load::open::pace, result::read_result,
};

/// What the calls of a run share.
pub struct Shared {
    pub deadline: Duration,
    pub usage_every: Duration,
    pub route: RpcTally,
    pub usage: RpcTally,
    pub end: RpcTally,
    /// Calls routed and not yet ended, now and at most.
    pub live: AtomicI64,
    pub peak: AtomicI64,
}

/// A run, before any database is read.
pub struct Run {
    pub rate: f64,
    pub window: (Instant, Instant),
    pub outcomes: Vec<CallOutcome>,
    pub shared: Arc<Shared>,
    pub timeline: Timeline,
    pub outage: Option<Outage>,
}

/// Runs the calls, checks what landed (with `--database-url`), prints and
/// writes the results; fails when anything acknowledged was lost or
/// duplicated.
pub async fn run(args: LifecycleArgs) -> anyhow::Result<()> {
    let rate = calls_per_sec(&args)?;
    let run_id = run_id(&args.callers, &args.label, args.rep);
    // usage_daily as it was, before the first call
    let mut database = match &args.database_url {
        Some(url) => Some(Database::open(url).await?),
        None => None,
    };
    let clients = connect(&args.target, args.connections).await?;
    let run = lifecycle(&args, rate, &run_id, clients).await?;
    eprintln!("lifecycle: {}", timeline::summary(&run.timeline));
    let landed = match &mut database {
        Some(database) => Some(
            database
                .check(&run.outcomes, &run_id, args.landing_timeout)
                .await?,
        ),
        None => {
            eprintln!("lifecycle: no --database-url: what landed is not checked");
            None
        }
    };
    let results = results_of(&args, &run, landed.as_ref());
    for (_, result) in &results {
        eprintln!(
            "lifecycle: {}: {} sent, {} ok, {} shed, {} errors, p50 {} µs, p99 {} µs",
            result.label,
            result.requests,
            result.ok,
            result.shed,
            result.errors,
            result.latency.map_or(0.0, |l| l.p50),
            result.latency.map_or(0.0, |l| l.p99),
        );
    }
    write_results(&args, &results, &run.timeline)?;
    match landed {
        Some(landed) => exactly_once(&landed),
        None => Ok(()),
    }
}

/// Prints the landed check, and fails on anything lost or duplicated.
fn exactly_once(landed: &Landed) -> anyhow::Result<()> {
    for (kind, c) in landed {
        let n = |v: i64| {
            if *kind == QUANTITY {
                format!("{:.3}", v as f64 / per_unit(kind))
            } else {
                v.to_string()
            }
        };
        eprintln!(
            "lifecycle: {kind}: {} acknowledged, {} landed, {} lost, {} duplicated ({} unacknowledged, {} of them landed)",
            n(c.acknowledged), n(c.landed), n(c.lost), n(c.duplicated), n(c.unacknowledged), n(c.unacknowledged_landed)
        );
    }
    let wrong: Vec<&str> = landed
        .iter()
        .filter(|(_, c)| c.lost != 0 || c.duplicated != 0)
        .map(|(kind, _)| *kind)
        .collect();
    anyhow::ensure!(
        wrong.is_empty(),
        "acknowledged but lost or duplicated: {}",
        wrong.join(", ")
    );
    Ok(())
}

/// `--calls-per-sec`, or `--rate-factor` times `--rate-of`'s goodput.
fn calls_per_sec(args: &LifecycleArgs) -> anyhow::Result<f64> {
    match (args.calls_per_sec, &args.rate_of, args.rate_factor) {
        (Some(rate), _, _) => Ok(rate),
        (None, Some(of), Some(factor)) => Ok(read_result(of)?.goodput * factor),
        _ => anyhow::bail!("give --calls-per-sec, or --rate-factor and --rate-of"),
    }
}

/// The calls: started at `rate` per second through the warm-up and the
/// window, each lived to its end; the outage, if any, run meanwhile.
pub async fn lifecycle(
    args: &LifecycleArgs,
    rate: f64,
    run_id: &str,
    clients: Vec<CallRouterClient<Channel>>,
) -> anyhow::Result<Run> {
    anyhow::ensure!(!clients.is_empty(), "no connection");
    let shared = Arc::new(Shared {
        deadline: args.deadline,
        usage_every: args.usage_every,
        route: RpcTally::new(),
        usage: RpcTally::new(),
        end: RpcTally::new(),
        live: AtomicI64::new(0),
        peak: AtomicI64::new(0),
    });
    let from = Instant::now() + args.warmup;
    let until = from + args.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = timeline::sample(shared.clone(), from, stop.clone());
    let outage =
        match (
            args.outage_at,
            args.outage_for,
            &args.outage_start,
            &args.outage_end,
        ) {
            (Some(at), Some(lasting), Some(start), Some(end)) => Some(tokio::spawn(
                outage::window(from + at, lasting, start.clone(), end.clone()),
            )),
            _ => None,
        };
    let runtime = tokio::runtime::Handle::current();
    let mut planner = Planner::new(args, run_id);
    let calls = {
        let shared = shared.clone();
        pace(rate, until, Vec::new(), move |calls, i, due| {
            let plan = planner.plan(i, due, due >= from);
            let client = clients[i as usize % clients.len()].clone();
            calls.push(runtime.spawn(live(shared.clone(), client, plan)));
        })
    };
    // every request has its deadline and every hold its cap: each call ends
    let mut outcomes = Vec::new();
    for call in calls.await? {
        outcomes.push(call.await?);
    }
    let outage = match outage {
        Some(outage) => Some(outage.await??),
        None => None,
    };
    stop.store(true, Ordering::Release);
    let timeline = sampler.await?;
    Ok(Run {
        rate,
        window: (from, until),
        outcomes,
        shared,
        timeline,
        outage,
    })
}
