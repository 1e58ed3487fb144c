//! `rps load`: one run, closed or open loop, with agent updates meanwhile
//! if asked for.

mod closed;
pub mod open;
pub mod tally;
pub mod throttle;
mod updates;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use switchboard::proto::call_router_client::CallRouterClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use self::{
    closed::closed_loop,
    open::open_loop,
    tally::Tally,
    updates::{invalidation_lag, UpdatesSeen},
};
use crate::{
    calls::{prime, run_id},
    cli::{LoadArgs, Rpc},
    client::connect,
    metrics::{applied_lag_buckets, directory_answers, p99_bucket},
    result::{read_result, write_result, Latency, RunResult},
};

/// Runs the load, prints its summary and writes its result.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
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

pub async fn load(args: LoadArgs) -> anyhow::Result<RunResult> {
    let rate = offered_rate(&args)?;
    let clients = connect(&args.target, args.connections).await?;
    let run_id = run_id(&args.callers, &args.label, args.rep);
    if args.prime {
        let callers = (args.rpc == Rpc::RouteCall).then_some(run_id.as_str());
        prime(&clients, &args.data, callers, args.deadline).await?;
    }
    let started = Instant::now();
    let window = (started + args.warmup, started + args.warmup + args.duration);
    let mut tally = Tally::new();
    if let (Some(at), Some(length)) = (args.burst_at, args.burst_for) {
        let (start, end) = (window.0 + at, window.0 + at + length);
        tally = tally
            .with_window("before_burst", window.0, start)
            .with_window(
                "after_burst",
                end + Duration::from_secs(1),
                end + Duration::from_secs(3),
            );
    }
    let tally = Arc::new(tally);
    let directory_before = match &args.directory_metrics {
        Some(metrics) => Some(directory_answers(metrics).await?),
        None => None,
    };
    let updates = Updates::start(&args, &clients[0], window).await?;
    let mut extra = BTreeMap::new();
    let mode = match (args.concurrency, rate) {
        (Some(concurrency), _) => {
            closed_loop(
                &args,
                clients,
                concurrency,
                window,
                (tally.clone(), &run_id),
            )
            .await;
            "closed"
        }
        (None, Some(rate)) => {
            let late = open_loop(&args, clients, rate, window, (tally.clone(), &run_id)).await?;
            // how far behind its schedule the generator sent: a run whose
            // sends were late measured the generator, not the server
            extra.insert(
                "send_late_p99_us".to_string(),
                late.value_at_quantile(0.99) as f64,
            );
            extra.insert("send_late_max_us".to_string(), late.max() as f64);
            if args.client_throttle.is_some() {
                let throttled = tally.throttled.load(Ordering::Relaxed);
                extra.insert("throttled".to_string(), throttled as f64);
            }
            "open"
        }
        (None, None) => unreachable!("checked above"),
    };
    let lag = updates.finish(&args, &mut extra).await?;
    if let (Some(metrics), Some(before)) = (&args.directory_metrics, directory_before) {
        let answered = directory_answers(metrics).await? - before;
        extra.insert("directory_answers".to_string(), answered);
    }
    for (name, _, _, latency) in &tally.windows {
        if let Some(latency) = Latency::of(&latency.lock().unwrap()) {
            extra.insert(format!("{name}_p99_us"), latency.p99);
            extra.insert(format!("{name}_count"), latency.count as f64);
        }
    }
    for line in tally.first_errors.lock().unwrap().iter() {
        eprintln!("rps: {}: error: {line}", args.label);
    }
    Ok(run_result(&args, mode, rate, &tally, lag, extra))
}

/// The open loop's rate (`--rate`, or `--rate-of` times `--rate-factor`),
/// `None` for the closed loop; exactly one of the two must be given.
fn offered_rate(args: &LoadArgs) -> anyhow::Result<Option<f64>> {
    let rate = match (args.rate, &args.rate_of, args.rate_factor) {
        (Some(rate), _, _) => Some(rate),
        (None, Some(of), Some(factor)) => Some(read_result(of)?.goodput * factor),
        _ => None,
    };
    anyhow::ensure!(
        rate.is_some() != args.concurrency.is_some(),
        "give either --concurrency (closed loop) or --rate / --rate-of (open loop)"
    );
    Ok(rate)
}

/// The agent updates made during a run (`--lag-database-url`), and the
/// daemon's own lag histogram as it was before (`--lag-metrics`).
struct Updates {
    stop: Arc<AtomicBool>,
    applied_before: Option<Vec<(f64, f64)>>,
    task: Option<JoinHandle<anyhow::Result<UpdatesSeen>>>,
}

impl Updates {
    async fn start(
        args: &LoadArgs,
        client: &CallRouterClient<Channel>,
        window: (Instant, Instant),
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let applied_before = match &args.lag_metrics {
            Some(metrics) => Some(applied_lag_buckets(metrics).await?),
            None => None,
        };
        let task = args.lag_database_url.as_ref().map(|url| {
            tokio::spawn(invalidation_lag(
                url.clone(),
                client.clone(),
                args.clone(),
                window,
                stop.clone(),
            ))
        });
        Ok(Self {
            stop,
            applied_before,
            task,
        })
    }

    /// Stops the updates and adds their figures to `extra`; returns their
    /// lag, commit → the new name in an answer.
    async fn finish(
        self,
        args: &LoadArgs,
        extra: &mut BTreeMap<String, f64>,
    ) -> anyhow::Result<Option<Histogram<u64>>> {
        self.stop.store(true, Ordering::Release);
        let (lag, updates) = match self.task {
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
        if let (Some(metrics), Some(before)) = (&args.lag_metrics, self.applied_before) {
            let after = applied_lag_buckets(metrics).await?;
            if let Some((bound, count)) = p99_bucket(&before, &after) {
                extra.insert("applied_lag_p99_bound_ms".to_string(), bound * 1000.0);
                extra.insert("applied_lag_count".to_string(), count);
            }
        }
        Ok(lag)
    }
}

/// The run's result from its tally.
fn run_result(
    args: &LoadArgs,
    mode: &str,
    rate: Option<f64>,
    tally: &Tally,
    lag: Option<Histogram<u64>>,
    extra: BTreeMap<String, f64>,
) -> RunResult {
    let seconds = args.duration.as_secs_f64();
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let good = count(&tally.ok) + count(&tally.not_found);
    let latency = Latency::of(&tally.latency.lock().unwrap());
    RunResult {
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
    }
}
