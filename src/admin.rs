//! The admin HTTP listener, separate from gRPC: `/metrics` (Prometheus text
//! format), `/livez` (the process runs) and `/readyz` (it can route now).

use std::{future::Future, sync::Arc};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::{api::overload::Limiter, store::PgStore};

/// A readiness check the daemon hands to `/readyz`: true when ready.
pub type Check = Arc<dyn Fn() -> bool + Send + Sync>;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Renders the metrics registry.
    pub metrics: PrometheusHandle,
    /// Pinged by `/readyz`.
    pub store: PgStore,
    /// Whether the Redis connection is open (said, not required: the
    /// daemon routes without Redis).
    pub redis: Check,
    /// Whether the route cache holds any route, to serve while the
    /// database cannot be read.
    pub holds_routes: Check,
    /// Numbers restored at start from the last-known-good copy, and its
    /// age, if one was.
    pub restored: Arc<dyn Fn() -> Option<(u64, std::time::Duration)> + Send + Sync>,
    /// Whether the route cache's invalidation listener is connected.
    pub listening: Check,
    /// With the invalidation relay: whether this replica is one of its
    /// listeners.
    pub relay: Option<Check>,
    /// Whether warm start has finished.
    pub warmed: Check,
    /// The gRPC server's adaptive concurrency limit (said, not required).
    pub load: Arc<Limiter>,
    /// Numbers in the route cache's directory, once complete (said, not
    /// required: without it, unknown numbers are looked up).
    pub directory: Arc<dyn Fn() -> Option<usize> + Send + Sync>,
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<AdminState>) -> impl axum::response::IntoResponse {
    export_pool_gauges(&state.store);
    export_load_gauges(&state.load);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// The overload line of `/readyz`: a replica shedding is still ready (its
/// refusals are cheap, and taking it out would move its load onto the
/// others), but the operator reading it should see it.
fn load_line(limiter: &Limiter) -> String {
    let (in_flight, limit, max) = (
        limiter.in_flight(),
        limiter.limit(),
        limiter.max_in_flight(),
    );
    let early = match limiter.early_share() {
        0.0 => String::new(),
        share => format!(", refusing {:.0}% as accepted", share * 100.0),
    };
    if limiter.standing() {
        format!(
            "load: {in_flight} in flight, limit {limit} of {max}: a queue stands, \
             shedding what waited over {}{early}\n",
            humantime::format_duration(limiter.max_queue_delay())
        )
    } else {
        format!("load: {in_flight} in flight, limit {limit} of {max}{early}\n")
    }
}

/// Ready when the routing database answers through the pooler, the
/// invalidation listener is connected (without it, cached routes could be
/// stale) and warm start has finished.
///
/// Ready, degraded, while the database cannot be read and the route cache
/// holds routes (kept from before the outage, or restored at start from
/// the last-known-good copy): they are served up to the maximum staleness,
/// and the gateways are better off with them than with no replica at all.
///
/// The answer names each check, whether routes were restored, and whether
/// Redis is connected (which readiness does not wait for), for the operator
/// reading it at 3 a.m.
async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    // as the request arrived, not after the database check
    let load = load_line(&state.load);
    let database = state.store.ping().await;
    let listening = (state.listening)();
    let mut body = String::new();
    match &database {
        Ok(()) => body.push_str("database: ok\n"),
        Err(error) => body.push_str(&format!("database: {error}\n")),
    }
    body.push_str(if listening {
        "invalidation listener: connected\n"
    } else {
        "invalidation listener: disconnected (cached routes trusted only briefly)\n"
    });
    if let Some(relay) = &state.relay {
        body.push_str(if relay() {
            "invalidation relay: listening and publishing\n"
        } else {
            "invalidation relay: following\n"
        });
    }
    let warmed = (state.warmed)();
    body.push_str(if warmed {
        "warm start: finished\n"
    } else {
        "warm start: in progress\n"
    });
    if let Some((numbers, age)) = (state.restored)() {
        body.push_str(&format!(
            "routes: {numbers} numbers restored at start from the last-known-good copy taken {}s before\n",
            age.as_secs()
        ));
    }
    body.push_str(&match (state.directory)() {
        Some(numbers) => format!(
            "directory: {numbers} provisioned numbers (others answered NOT_FOUND from memory)\n"
        ),
        None => "directory: not loaded (unknown numbers are looked up)\n".to_string(),
    });
    body.push_str(&load);
    // not a condition of readiness: without Redis, calls still route
    body.push_str(if (state.redis)() {
        "redis: connected\n"
    } else {
        "redis: not connected (L2 skipped, admission by its Redis-down policy)\n"
    });
    if database.is_ok() && listening && warmed {
        (StatusCode::OK, format!("ready\n{body}"))
    } else if database.is_err() && (state.holds_routes)() {
        (
            StatusCode::OK,
            format!(
                "ready, degraded: the database cannot be read; cached routes are served \
                 up to SWITCHBOARD_CACHE_MAX_STALE old, other numbers get UNAVAILABLE\n{body}"
            ),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{body}"),
        )
    }
}

/// The adaptive limit's state, read off the limiter as it is scraped.
fn export_load_gauges(limiter: &Limiter) {
    metrics::gauge!("switchboard_grpc_in_flight").set(limiter.in_flight() as f64);
    metrics::gauge!("switchboard_grpc_concurrency_limit").set(limiter.limit() as f64);
    metrics::gauge!("switchboard_grpc_queue_standing").set(f64::from(u8::from(limiter.standing())));
    metrics::gauge!("switchboard_grpc_early_refusal_share").set(limiter.early_share());
}

fn export_pool_gauges(store: &PgStore) {
    let status = store.pool_status();
    metrics::gauge!("switchboard_db_pool_connections").set(status.size as f64);
    metrics::gauge!("switchboard_db_pool_available").set(status.available as f64);
    metrics::gauge!("switchboard_db_pool_waiting").set(status.waiting as f64);
}
