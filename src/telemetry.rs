//! Logs (`tracing`) and metrics (`metrics`, rendered in Prometheus format by
//! the admin listener).
//!
//! * [`series`]: every metric family with its label values, exported at
//!   zero from startup;
//! * [`outage`]: a dependency's outage logged at its start, in periodic
//!   summaries and at its end, never per request.

pub mod labels;
pub mod outage;
pub mod series;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

/// Histogram buckets for request and query latencies, in seconds: 50 µs to
/// 1 s, dense below a millisecond where a healthy daemon lives.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Histogram buckets for `switchboard_invalidation_lag_seconds`, in
/// seconds: dense around the few milliseconds a change should take to reach
/// L1, up to the seconds a replay after a reconnect can take.
pub const INVALIDATION_LAG_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.003, 0.004, 0.005, 0.007_5, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets for the recorder's batch sizes, in events: from single
/// events (a quiet daemon) to full batches.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// deadpool logs a WARN for every pooled connection that breaks or fails
/// its recycling check: during a PostgreSQL outage, one per request again,
/// saying what the store's outage log (`dependency="postgres"`) already
/// says. Quieted unless `SWITCHBOARD_LOG` names deadpool itself.
const DEADPOOL_LOGS: &str = "deadpool=error";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global log subscriber, with `log_filter` in `tracing`
/// syntax. Call once, from `main`.
pub fn init_logging(format: LogFormat, log_filter: &str) -> Result<(), LoggingError> {
    let mut filter = EnvFilter::try_new(log_filter)?;
    if !log_filter.contains("deadpool") {
        filter = filter.add_directive(DEADPOOL_LOGS.parse().expect("a valid directive"));
    }
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(LoggingError::Install)
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("SWITCHBOARD_LOG is not a valid filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("cannot install the log subscriber: {0}")]
    Install(Box<dyn std::error::Error + Send + Sync>),
}

/// The process-wide metrics recorder, installed on first use. Several
/// applications in one process (the integration tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                // a full name wins over the suffix
                .set_buckets_for_metric(
                    Matcher::Full("switchboard_invalidation_lag_seconds".into()),
                    INVALIDATION_LAG_BUCKETS,
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("switchboard_recorder_batch_size".into()),
                    BATCH_SIZE_BUCKETS,
                )
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            // every known series at zero, before anything can be recorded
            series::describe_and_register();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until upkeep folds it into the
/// buckets (`install_recorder` leaves that to its caller): without it,
/// memory grows with every request until the next scrape, and a scrape
/// after a quiet night folds millions. A thread, not a task: the handle is
/// made before any runtime, and outlives every runtime of the tests.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the metrics upkeep thread; histograms grow until scraped");
    }
}
