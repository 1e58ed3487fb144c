//! Logs (`tracing`) and metrics (`metrics`, rendered in Prometheus format by
//! the admin listener).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

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

/// Installs the global log subscriber. Call once, from `main`.
pub fn init_logging(config: &LogConfig) -> Result<(), String> {
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|e| format!("SWITCHBOARD_LOG is not a valid filter: {e}"))?;
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
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
            describe_metrics();
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

/// Help texts for `/metrics` (`# HELP`), one per metric: Prometheus' linter
/// (`promtool check metrics`, tests/it/prometheus.rs) requires them.
fn describe_metrics() {
    use metrics::{
        describe_counter as counter, describe_gauge as gauge, describe_histogram as histogram,
    };
    counter!(
        "switchboard_grpc_requests_total",
        "gRPC requests answered, by RPC and status code."
    );
    histogram!(
        "switchboard_grpc_request_seconds",
        "Time to answer a gRPC request, by RPC."
    );
    gauge!(
        "switchboard_grpc_in_flight",
        "gRPC requests being answered."
    );
    counter!(
        "switchboard_grpc_shed_total",
        "gRPC requests refused at once as overloaded, by reason: in_flight (at the in-flight limit) or queue_delay (waited too long for its handler)."
    );
    counter!(
        "switchboard_grpc_unauthenticated_total",
        "gRPC requests refused for a missing or unknown token, by reason."
    );
    counter!(
        "switchboard_cache_hits_total",
        "Route lookups answered by a cache tier (l1 in process, l2 Redis, l3 PostgreSQL)."
    );
    counter!(
        "switchboard_cache_misses_total",
        "Route lookups a cache tier could not answer."
    );
    histogram!(
        "switchboard_cache_lookup_seconds",
        "Time of a route lookup, by the tier that answered it."
    );
    counter!(
        "switchboard_cache_stale_served_total",
        "Stale cached routes served because routing data could not be read."
    );
    counter!(
        "switchboard_cache_background_refreshes_total",
        "Routes past their TTL reread behind an answer from L1, by result (kept, raced, failed, busy)."
    );
    counter!(
        "switchboard_cache_flushes_total",
        "Whole-cache flushes after changes may have been missed."
    );
    gauge!(
        "switchboard_invalidation_listener_connected",
        "1 while the invalidation listener is connected."
    );
    counter!(
        "switchboard_invalidations_received_total",
        "Route change notifications received."
    );
    counter!(
        "switchboard_invalidations_applied_total",
        "Route changes applied to the cache."
    );
    counter!(
        "switchboard_invalidations_replayed_total",
        "Route changes replayed from routing_changes after a reconnect."
    );
    histogram!(
        "switchboard_invalidation_lag_seconds",
        "Time from a route change's log entry (just before its commit) to its eviction from L1 here."
    );
    histogram!(
        "switchboard_store_query_seconds",
        "Time of a PostgreSQL statement through the pooler, by query."
    );
    counter!(
        "switchboard_store_query_errors_total",
        "PostgreSQL statements that failed or timed out, by query."
    );
    counter!(
        "switchboard_store_connections_discarded_total",
        "Pooled connections closed because their statement was abandoned."
    );
    gauge!(
        "switchboard_db_pool_connections",
        "Connections in the pool."
    );
    gauge!(
        "switchboard_db_pool_available",
        "Idle connections in the pool."
    );
    gauge!(
        "switchboard_db_pool_waiting",
        "Requests waiting for a pooled connection."
    );
    counter!(
        "switchboard_db_pool_timeouts_total",
        "Requests that got no pooled connection within the wait limit."
    );
    counter!(
        "switchboard_routing_customer_lookup_failures_total",
        "Caller lookups that failed; the call was routed without them."
    );
    gauge!(
        "switchboard_redis_connected",
        "1 once the Redis connection is established."
    );
    counter!(
        "switchboard_redis_fallbacks_total",
        "Redis commands that did not answer, by why (not_connected, error, timeout, fill)."
    );
    counter!(
        "switchboard_redis_invalidation_failures_total",
        "Route changes whose Redis tombstone could not be written."
    );
    counter!(
        "switchboard_admission_decisions_total",
        "Concurrent-call admission decisions, by outcome."
    );
    histogram!(
        "switchboard_admission_seconds",
        "Time of an admission decision."
    );
    counter!(
        "switchboard_admission_releases_total",
        "Call slots released, by outcome."
    );
    counter!(
        "switchboard_admission_release_failures_total",
        "Call slots that could not be released."
    );
    gauge!(
        "switchboard_recorder_queue_depth",
        "Events waiting in memory for the batcher."
    );
    histogram!("switchboard_recorder_batch_size", "Events per write.");
    histogram!(
        "switchboard_recorder_batch_seconds",
        "Time of one batch write."
    );
    counter!(
        "switchboard_recorder_events_total",
        "Recorder events, by outcome (written, spooled, replayed, dead_lettered; dropped: refused with their RPC, abandoned by an RPC that gave up)."
    );
    counter!(
        "switchboard_recorder_refused_total",
        "RPCs the recorder refused, by reason (queue_full, spool_full, spool_failed, deadline, closed)."
    );
    gauge!(
        "switchboard_recorder_spooling",
        "1 while events go to the spool because PostgreSQL is unreachable."
    );
    gauge!("switchboard_recorder_spool_bytes", "Bytes in the spool.");
    counter!(
        "switchboard_recorder_spool_corrupt_total",
        "Torn or corrupt spool records skipped."
    );
}
