//! `rps admission`: the admission script alone against Redis, exactly as
//! `RouteCall` runs it (see `Admission::take_lease` in `src/admission.rs`):
//! `EVALSHA` of [`TAKE_LEASE`] on the organization's, its agent's and a
//! number's lease sets, and the `SET … EX` of the call's key, pipelined
//! into one round trip
//! on one multiplexed connection that every worker shares, as the daemon's
//! does. No `RouteCall` can be cheaper than this: it is the floor the hot
//! path's figures are compared with.
//!
//! Each request is a new call (a fresh call id) of one of the bench
//! organizations, under a limit no run reaches, so every one is admitted and
//! each does the script's full work. The keys live under a prefix of this
//! run's own, in a database index the daemons never use, and are deleted at
//! the end.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use redis::{aio::MultiplexedConnection, AsyncCommands, Script};
use switchboard::admission::TAKE_LEASE;
use uuid::Uuid;

use crate::{
    cli::AdmissionArgs,
    dataset::{bench_agent_id, bench_org_id},
    result::{histogram, record, write_result, Latency, RunResult},
};

/// How long the call → organization key outlives the lease, as in the
/// daemon (`CALL_ORG_GRACE`).
const CALL_ORG_GRACE: Duration = Duration::from_secs(24 * 3600);

/// What every request of the run adds to.
struct Tally {
    latency: Mutex<Histogram<u64>>,
    requests: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Runs the loop, prints its summary and writes its result.
pub async fn run(args: AdmissionArgs) -> anyhow::Result<()> {
    let result = admission(&args).await?;
    eprintln!(
        "rps: {} rep {}: {:.0}/s good, p50 {} µs, p99 {} µs, errors {}",
        result.label,
        result.rep,
        result.goodput,
        result.latency.map_or(0.0, |l| l.p50),
        result.latency.map_or(0.0, |l| l.p99),
        result.errors
    );
    write_result(&result, args.out.as_deref())
}

pub async fn admission(args: &AdmissionArgs) -> anyhow::Result<RunResult> {
    anyhow::ensure!(
        args.concurrency > 0 && args.organizations > 0,
        "--concurrency and --organizations must be positive"
    );
    let connection = connect(args).await?;
    let prefix = format!("rps-admission-{}", Uuid::new_v4().simple());
    let tally = Arc::new(Tally {
        latency: Mutex::new(histogram()),
        requests: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let started = Instant::now();
    let window = (started + args.warmup, started + args.warmup + args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let lease = Lease::new(args, &prefix);
            let (connection, tally) = (connection.clone(), tally.clone());
            tokio::spawn(worker_loop(lease, worker, connection, window, tally))
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    delete_keys(connection, &prefix).await?;
    let first_error = tally.first_error.lock().unwrap().take();
    if let Some(error) = first_error {
        eprintln!("rps: {}: error: {error}", args.label);
    }
    let seconds = args.duration.as_secs_f64();
    let ok = tally.ok.load(Ordering::Relaxed);
    let latency = Latency::of(&tally.latency.lock().unwrap());
    Ok(RunResult {
        label: args.label.clone(),
        rep: args.rep,
        mode: "closed".into(),
        concurrency: Some(args.concurrency),
        seconds,
        requests: tally.requests.load(Ordering::Relaxed),
        ok,
        errors: tally.errors.load(Ordering::Relaxed),
        goodput: ok as f64 / seconds,
        latency,
        ..Default::default()
    })
}

/// One connection, multiplexed, as the daemon's `RedisLink` opens it.
async fn connect(args: &AdmissionArgs) -> anyhow::Result<MultiplexedConnection> {
    let mut info: redis::ConnectionInfo = args.redis_url.parse()?;
    info.redis.db = args.db;
    let client = match &args.redis_ca_file {
        Some(ca) if args.redis_url.starts_with("rediss://") => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca)?),
            },
        )?,
        _ => redis::Client::open(info)?,
    };
    Ok(client.get_multiplexed_async_connection().await?)
}

/// Sends the next call's admission when the last one is answered; counts
/// those sent inside the window.
async fn worker_loop(
    lease: Lease,
    worker: usize,
    connection: MultiplexedConnection,
    (from, until): (Instant, Instant),
    tally: Arc<Tally>,
) {
    let mut call = worker;
    loop {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        let org = call % lease.orgs.len();
        call += 1;
        let outcome = tokio::time::timeout(lease.deadline, lease.take(org, connection.clone()))
            .await
            .map_err(|_| "no answer within the deadline".to_string())
            .and_then(|taken| taken.map_err(|e| e.to_string()));
        if sent < from {
            continue;
        }
        tally.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            // 1: admitted, a new lease (the only answer a fresh call id under
            // an unreachable limit can get)
            Ok(1) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                record(&tally.latency, sent.elapsed());
            }
            other => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                let error = match other {
                    Ok(code) => format!("the script answered {code}, not 1 (admitted)"),
                    Err(error) => error,
                };
                tally.first_error.lock().unwrap().get_or_insert(error);
            }
        }
    }
}

/// What a worker needs to take leases the way the daemon does.
struct Lease {
    script: Script,
    prefix: String,
    orgs: Vec<String>,
    limit: u32,
    lease_ms: u64,
    call_org_ttl: u64,
    deadline: Duration,
}

impl Lease {
    fn new(args: &AdmissionArgs, prefix: &str) -> Self {
        Self {
            script: Script::new(TAKE_LEASE),
            prefix: prefix.to_string(),
            orgs: (0..args.organizations)
                .map(|g| bench_org_id(g).to_string())
                .collect(),
            limit: args.limit,
            lease_ms: args.lease.as_millis() as u64,
            call_org_ttl: (args.lease + CALL_ORG_GRACE).as_secs(),
            deadline: args.deadline,
        }
    }

    /// A new call's lease in organization `org`'s set, and its call →
    /// organization key: the script's code.
    async fn take(&self, org: usize, mut c: MultiplexedConnection) -> redis::RedisResult<u8> {
        let call = Uuid::new_v4();
        let call_id = call.to_string();
        let org_id = &self.orgs[org];
        // the organization's, its agent's and one of its numbers' sets, in
        // one slot, as the daemon keys them; only the organization limited
        let org_key = format!("{}:v1:leases:{org_id}", self.prefix);
        let agent_id = bench_agent_id(org);
        let number_id = Uuid::from_u64_pair(org as u64, (call.as_u128() % 100) as u64);
        let mut invocation = self.script.key(&org_key);
        invocation
            .key(format!("{{{org_key}}}:a:{agent_id}"))
            .key(format!("{{{org_key}}}:n:{number_id}"))
            .arg(&call_id)
            .arg(self.lease_ms)
            .arg("enforce")
            .arg(self.limit)
            .arg(-1)
            .arg(-1);
        let call_key = format!("{}:v1:call:{call_id}", self.prefix);
        let remembered = format!("{org_id} {agent_id} {number_id}");
        let mut mapping = c.clone();
        let (lease, mapped) = tokio::join!(
            invocation.invoke_async::<(u8, u8, u32, i64)>(&mut c),
            mapping.set_ex::<_, _, ()>(call_key, remembered, self.call_org_ttl),
        );
        mapped?;
        Ok(lease?.0)
    }
}

/// Deletes every key of the run, a batch per round trip.
async fn delete_keys(mut connection: MultiplexedConnection, prefix: &str) -> anyhow::Result<()> {
    let keys: Vec<String> = {
        use futures::StreamExt;
        let mut scan = connection.clone();
        let iter = scan.scan_match::<_, String>(format!("{prefix}:*")).await?;
        iter.collect().await
    };
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(&mut connection)
            .await?;
    }
    Ok(())
}
