//! The command line: the subcommands and their flags.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Cancelled streams each connection remembers: the open loop's default
/// `--max-outstanding`.
pub const REMEMBERED_RESETS: usize = 20_000;

#[derive(Parser)]
#[command(about = "Switchboard load generator and baselines (see benches/rps/main.rs)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
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
    Load(Box<LoadArgs>),
    /// Whole calls on a schedule: RouteCall, RecordUsage while the call
    /// holds, EndCall; then, with --database-url, proves that everything
    /// acknowledged landed in the database exactly once.
    Lifecycle(Box<LifecycleArgs>),
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
    /// Instructions counted in-process over `count` repetitions of one piece
    /// of work (callgrind on `benches/workflow.rs`), as a result.
    ImportCount {
        #[arg(long)]
        label: String,
        #[arg(long)]
        instructions: u64,
        #[arg(long)]
        count: u64,
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
    /// The admission script alone against Redis, as `RouteCall` runs it:
    /// the floor of a `RouteCall`.
    Admission(AdmissionArgs),
    /// `pg_test_fsync` output as a result: the disk's flush rate with the
    /// method PostgreSQL uses, the floor of any durable commit.
    ImportFsync {
        #[arg(long)]
        label: String,
        /// The `wal_sync_method` PostgreSQL uses (`show wal_sync_method`).
        #[arg(long, default_value = "fdatasync")]
        method: String,
        #[arg(long)]
        out: PathBuf,
        output: PathBuf,
    },
    /// The daemon's recorder figures, from its /metrics, as JSON: one
    /// reading, taken before or after a run.
    ScrapeRecorder {
        /// The daemon's admin address, `http://host:port`.
        #[arg(long)]
        metrics: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// What the recorder did between two readings (`scrape-recorder`):
    /// events and batches per second, events per batch.
    ImportRecorder {
        #[arg(long)]
        label: String,
        #[arg(long)]
        rep: u32,
        #[arg(long)]
        before: PathBuf,
        #[arg(long)]
        after: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// The bench data set: `numbers` numbers, number `i` bound to organization
/// and agent `i % organizations`.
#[derive(Args, Clone, Debug)]
pub struct DataSet {
    #[arg(long, default_value_t = 10_000)]
    pub numbers: usize,
    #[arg(long, default_value_t = 100)]
    pub organizations: usize,
    /// Known customers of each organization (phones from
    /// `dataset::customer_phone`).
    #[arg(long, default_value_t = 100)]
    pub customers_per_org: usize,
}

/// What `rps load` sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rpc {
    /// `LookupNumber`: the route only, no side effects.
    Lookup,
    /// `RouteCall`: admits and records a call, never ended.
    RouteCall,
}

/// Who calls, and the gateway call ids of the calls a run places.
#[derive(Args, Clone, Debug)]
pub struct CallerArgs {
    /// Share of calls from a known customer of the called number's
    /// organization.
    #[arg(long, default_value_t = 0.6)]
    pub known_share: f64,
    /// Share of calls with the caller id withheld (empty); the rest come
    /// from numbers no customer has.
    #[arg(long, default_value_t = 0.1)]
    pub withheld_share: f64,
    /// Prefix of every gateway call id, so that no two runs share a call;
    /// by default the label, repetition, time and process id.
    #[arg(long)]
    pub run_id: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// `http://host:port` of the server under load; several replicas,
    /// comma-separated, share the connections in turn.
    #[arg(long)]
    pub target: String,
    /// Name of the run in the report (`hot_peak`, `noop_low`, ...).
    #[arg(long)]
    pub label: String,
    /// Repetition number, for the report's medians.
    #[arg(long, default_value_t = 1)]
    pub rep: u32,
    /// Closed loop: this many requests always in flight.
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: requests per second, on a fixed schedule.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop at this share of the throughput of an earlier result.
    #[arg(long, requires = "rate_of")]
    pub rate_factor: Option<f64>,
    #[arg(long)]
    pub rate_of: Option<PathBuf>,
    /// HTTP/2 connections, requests spread round-robin.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub warmup: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "8s")]
    pub duration: Duration,
    /// Each request's deadline (`grpc-timeout`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub deadline: Duration,
    /// Open loop: most requests in flight before the generator itself
    /// gives up on sending (counted as `dropped`).
    #[arg(long, default_value_t = REMEMBERED_RESETS)]
    pub max_outstanding: usize,
    /// Open loop: throttle as a gateway following docs/api.md would,
    /// sending about K times what the server accepts once it refuses
    /// (client-side adaptive throttling; K ≥ 1). Requests the client
    /// refuses itself are counted as `throttled`.
    #[arg(long, conflicts_with = "concurrency")]
    pub client_throttle: Option<f64>,
    /// Before the run, look every provisioned number up once (fills L2
    /// for a run with L1 off).
    #[arg(long)]
    pub prime: bool,
    #[arg(long, default_value_t = 100)]
    pub hot: usize,
    #[arg(long, default_value_t = 0.8)]
    pub hot_share: f64,
    #[arg(long, default_value_t = 0.05)]
    pub unknown_share: f64,
    #[command(flatten)]
    pub data: DataSet,
    /// What each request is.
    #[arg(long, value_enum, default_value_t = Rpc::Lookup)]
    pub rpc: Rpc,
    /// With `--rpc route-call`: the callers.
    #[command(flatten)]
    pub callers: CallerArgs,
    /// Meanwhile, update agents through this (direct, superuser) database
    /// URL and measure how long each takes to show in answers.
    #[arg(long)]
    pub lag_database_url: Option<String>,
    /// With --lag-database-url: the daemon's admin address (`http://host:port`),
    /// whose `switchboard_invalidation_lag_seconds` (commit → eviction applied)
    /// is read before and after the run.
    #[arg(long, requires = "lag_database_url")]
    pub lag_metrics: Option<String>,
    #[arg(long, default_value_t = 100.0)]
    pub updates_per_sec: f64,
    /// With --lag-database-url: make the updates, but do not look their
    /// numbers up until the new name shows. Watching adds lookups of its own
    /// to the load, so a run for the throughput under updates leaves it out
    /// (and works against any server, the no-op too).
    #[arg(long, requires = "lag_database_url")]
    pub unwatched_updates: bool,
    /// Open loop: a burst of `--burst-factor` times the rate, starting this
    /// long into the measured window. The latency of the requests due
    /// before it and of those due from one to three seconds after it ends
    /// go into `extra` (`before_burst_p99_us`, `after_burst_p99_us`).
    #[arg(long, value_parser = humantime::parse_duration, requires = "burst_for")]
    pub burst_at: Option<Duration>,
    #[arg(long, value_parser = humantime::parse_duration, requires = "burst_at")]
    pub burst_for: Option<Duration>,
    #[arg(long, default_value_t = 2)]
    pub burst_factor: u32,
    /// The daemon's admin address (`http://host:port`): how many lookups its
    /// directory answered during the run goes into `extra`
    /// (`directory_answers`), beside the `not_found` count.
    #[arg(long)]
    pub directory_metrics: Option<String>,
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
pub struct LifecycleArgs {
    /// `http://host:port` of the server under load; several replicas,
    /// comma-separated, share the connections in turn.
    #[arg(long)]
    pub target: String,
    /// Name of the run; its results are `<label>/route_call` and so on.
    #[arg(long)]
    pub label: String,
    #[arg(long, default_value_t = 1)]
    pub rep: u32,
    /// Calls started per second, on a fixed schedule.
    #[arg(long, conflicts_with = "rate_of")]
    pub calls_per_sec: Option<f64>,
    /// Calls per second at this share of the goodput of an earlier result.
    #[arg(long, requires = "rate_of")]
    pub rate_factor: Option<f64>,
    #[arg(long, requires = "rate_factor")]
    pub rate_of: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Calls started before the measured window: left out of the
    /// latencies, still checked for loss.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// How long calls are started for (the window).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub duration: Duration,
    /// Each request's deadline (`grpc-timeout`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub deadline: Duration,
    /// Mean holding time of a call (exponentially distributed).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub hold_mean: Duration,
    /// Longest holding time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub hold_max: Duration,
    /// A RecordUsage this often while a call holds.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub usage_every: Duration,
    #[arg(long, default_value_t = 100)]
    pub hot: usize,
    #[arg(long, default_value_t = 0.8)]
    pub hot_share: f64,
    /// Calls to numbers nobody provisioned (refused, `NOT_FOUND`).
    #[arg(long, default_value_t = 0.0)]
    pub unknown_share: f64,
    #[command(flatten)]
    pub data: DataSet,
    #[command(flatten)]
    pub callers: CallerArgs,
    /// The daemon's database (direct, superuser URL): after the run, check
    /// that every acknowledged call, end and usage landed exactly once.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Longest wait for acknowledged events to show in the database.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub landing_timeout: Duration,
    /// Offset into the measured window at which `--outage-start` runs.
    #[arg(long, requires_all = ["outage_for", "outage_start", "outage_end"])]
    #[arg(value_parser = humantime::parse_duration)]
    pub outage_at: Option<Duration>,
    /// How long after the outage's start `--outage-end` runs (not before
    /// `--outage-start` has finished).
    #[arg(long, value_parser = humantime::parse_duration, requires = "outage_at")]
    pub outage_for: Option<Duration>,
    /// Shell command (`sh -c`) that starts the outage.
    #[arg(long, requires = "outage_at")]
    pub outage_start: Option<String>,
    /// Shell command (`sh -c`) that ends it.
    #[arg(long, requires = "outage_at")]
    pub outage_end: Option<String>,
    /// Results: `PATH` with `.route_call.json`, `.record_usage.json`,
    /// `.end_call.json` (and `.route_call_before.json`, ... with an
    /// outage), and the concurrent calls in `PATH.timeline.tsv`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `rps admission`: the admission script alone against Redis.
#[derive(Args, Clone, Debug)]
pub struct AdmissionArgs {
    /// Redis, as the daemon is given it; `rediss://` for TLS.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: String,
    /// PEM CA certificates trusted for `rediss://` instead of the system's.
    #[arg(long, env = "SWITCHBOARD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Database index for the run's keys: one the daemons do not use.
    #[arg(long, default_value_t = 10)]
    pub db: i64,
    /// Name of the run in the report.
    #[arg(long)]
    pub label: String,
    #[arg(long, default_value_t = 1)]
    pub rep: u32,
    /// Closed loop: this many requests always in flight (1: one client,
    /// for the latency of a round trip without queueing).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub warmup: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "8s")]
    pub duration: Duration,
    /// Organizations the calls spread over.
    #[arg(long, default_value_t = 100)]
    pub organizations: usize,
    /// Each organization's limit: far above what a run reaches.
    #[arg(long, default_value_t = 10_000_000)]
    pub limit: u32,
    /// Lease lifetime, the daemon's default `SWITCHBOARD_MAX_CALL_DURATION`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "4h")]
    pub lease: Duration,
    /// Each request's bound; one past it counts as an error. Far above the
    /// daemon's own (`SWITCHBOARD_ADMISSION_TIMEOUT`): the floor is measured
    /// whole, its tail included.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub deadline: Duration,
    #[arg(long)]
    pub out: Option<PathBuf>,
}
