//! The full request over gRPC, in process: the real daemon
//! (`Application::build` + `run_until_stopped`, port 0) on a fresh migrated
//! and seeded database, and a tonic client on one HTTP/2 channel to it.
//!
//! * `grpc/health_check`: the standard `grpc.health.v1.Health/Check`, the
//!   baseline: a round trip through the client, the connection and the
//!   server with no work behind it.
//! * `grpc/lookup_number_l1_hit`: `LookupNumber` of a number whose route is
//!   in L1 (warm start preloads it; `ExplainRoute` confirms the tier before
//!   and after measuring).
//! * `grpc/route_call_l1_hit`: `RouteCall` for that number from a known
//!   customer. The route and the caller come from L1, the call is admitted
//!   in Redis (the lease script, the one round trip a warm `RouteCall`
//!   makes), and its call-opened event is queued for the recorder. Every
//!   iteration uses the same
//!   gateway call id, so after the first call each one is the idempotent
//!   retry path: the same call id, holding the same single lease, so the
//!   plan's concurrency limit is never reached however long the run.
//!
//! Read the results as ratios to `grpc/health_check` within one run;
//! absolute times on a shared machine move by 2× between runs.
//!
//! Needs the local stack: `deploy/local/stack up`, then
//! `eval "$(deploy/local/stack env)"; cargo bench --bench grpc`.

// Tests and benches stop at the first surprise: unwrapping is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    hint::black_box,
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{admin_get, bench_database, env};
use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::{
    config::ServeConfig,
    proto::{
        call_router_client::CallRouterClient, EndCallRequest, EndReason, ExplainRouteRequest,
        LookupNumberRequest, RouteCallRequest, RouteSource,
    },
    store::seed::DEMO_KNOWN_CALLER,
    Application,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// Acme Dental's reception line in the demo data.
const CALLED: &str = "+14155550100";
/// The same on every iteration: see the module docs.
const GATEWAY_CALL_ID: &str = "bench-grpc-route-call";
/// The service the daemon reports in `grpc.health.v1`.
const ROUTER_SERVICE: &str = "switchboard.v1.CallRouter";
/// Longest wait for the daemon to report ready.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// Longest wait for the gRPC connection.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// The daemon running in this process, and how to stop it.
struct Daemon {
    channel: Channel,
    admin_addr: SocketAddr,
    shutdown_grace: Duration,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    /// Removed when the bench ends.
    _spool: tempfile::TempDir,
}

impl Daemon {
    /// Builds and starts the daemon as the integration tests do (port 0,
    /// its own Redis key prefix and spool), then waits until `/readyz`
    /// answers 200: the invalidation listener is connected and warm start
    /// has filled L1.
    async fn start() -> Self {
        let db = bench_database().await;
        let spool = tempfile::Builder::new()
            .prefix("switchboard-bench-spool-")
            .tempdir()
            .unwrap();
        let mut config =
            ServeConfig::with_defaults(&db.pooled_url, &db.daemon_direct_url, &env("REDIS_URL"));
        config.redis.redis_ca_file = common::redis_ca_file();
        config.grpc.grpc_addr = "127.0.0.1:0".parse().unwrap();
        config.admin.admin_addr = "127.0.0.1:0".parse().unwrap();
        config.redis.redis_key_prefix = db.name;
        config.spool.spool_dir = spool.path().to_path_buf();
        let shutdown_grace = config.shutdown_grace;
        let app = Application::build(config).await.expect("the daemon builds");
        let (grpc_addr, admin_addr) = (app.grpc_addr(), app.admin_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));

        let until = Instant::now() + READY_WITHIN;
        while admin_get(admin_addr, "/readyz")
            .await
            .map(|(status, _)| status)
            != Some(200)
        {
            if task.is_finished() {
                panic!("the daemon stopped while starting: {:?}", task.await);
            }
            assert!(
                Instant::now() < until,
                "the daemon did not report ready within {READY_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect_timeout(CONNECT_WITHIN)
            .connect()
            .await
            .expect("connect to the daemon");
        Self {
            channel,
            admin_addr,
            shutdown_grace,
            stop,
            task,
            _spool: spool,
        }
    }

    /// A sample of the daemon's `/metrics` (0 when absent): `series` is the
    /// name with its labels as rendered (`name{label="value"}`).
    async fn metric(&self, series: &str) -> f64 {
        let (_, body) = admin_get(self.admin_addr, "/metrics")
            .await
            .expect("/metrics answers");
        body.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// Stops the daemon and waits for its orderly shutdown.
    async fn stop(self) {
        let _ = self.stop.send(());
        // the daemon bounds each step of its shutdown by the grace
        let limit = 4 * self.shutdown_grace + Duration::from_secs(5);
        match tokio::time::timeout(limit, self.task).await {
            Ok(result) => result
                .expect("the daemon task panicked")
                .expect("the daemon stops cleanly"),
            Err(_) => panic!("the daemon did not stop within {limit:?}"),
        }
    }
}

fn health_request() -> HealthCheckRequest {
    HealthCheckRequest {
        service: ROUTER_SERVICE.into(),
    }
}

fn lookup_request() -> LookupNumberRequest {
    LookupNumberRequest {
        number: CALLED.into(),
        default_region: String::new(),
    }
}

fn route_request() -> RouteCallRequest {
    RouteCallRequest {
        called_number: CALLED.into(),
        caller_number: DEMO_KNOWN_CALLER.into(),
        gateway_call_id: GATEWAY_CALL_ID.into(),
        default_region: String::new(),
    }
}

/// Fails unless the daemon answers the number from a fresh L1 entry.
async fn assert_served_from_l1(client: &mut CallRouterClient<Channel>, when: &str) {
    let explained = client
        .explain_route(ExplainRouteRequest {
            number: CALLED.into(),
            default_region: String::new(),
            caller_number: String::new(),
        })
        .await
        .expect("ExplainRoute answers")
        .into_inner();
    assert_eq!(
        explained.source(),
        RouteSource::L1,
        "{when}: {CALLED} is not answered from L1"
    );
    assert!(!explained.stale, "{when}: L1's copy of {CALLED} is stale");
    assert_eq!(explained.outcome, "ok", "{when}: {explained:?}");
}

/// Fails if a measured RouteCall took a degraded path that still answers
/// OK (admitted without Redis, routed without its customer), or read its
/// caller from anywhere but L1 after the first call.
async fn assert_nothing_degraded(daemon: &Daemon) {
    for (series, expected) in [
        // the first RouteCall took the lease; every other one was its retry
        (
            r#"switchboard_admission_decisions_total{outcome="admitted"}"#,
            1.0,
        ),
        (
            r#"switchboard_admission_decisions_total{outcome="redis_down_admitted"}"#,
            0.0,
        ),
        ("switchboard_routing_customer_lookup_failures_total", 0.0),
        (r#"switchboard_caller_cache_hits_total{tier="l3"}"#, 1.0),
        (r#"switchboard_caller_cache_hits_total{tier="l2"}"#, 0.0),
    ] {
        assert_eq!(daemon.metric(series).await, expected, "{series}");
    }
}

fn grpc(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (daemon, health, router, call_id) = runtime.block_on(async {
        let daemon = Daemon::start().await;
        let mut health = HealthClient::new(daemon.channel.clone());
        let mut router = CallRouterClient::new(daemon.channel.clone());

        // every measured request answers OK, with what it should
        let serving = health
            .check(health_request())
            .await
            .expect("health Check answers")
            .into_inner();
        assert_eq!(serving.status(), ServingStatus::Serving);
        assert_served_from_l1(&mut router, "before measuring").await;
        let lookup = router
            .lookup_number(lookup_request())
            .await
            .expect("LookupNumber answers OK")
            .into_inner();
        assert_eq!(lookup.route.expect("a route").number, CALLED);
        let routed = router
            .route_call(route_request())
            .await
            .expect("RouteCall answers OK")
            .into_inner();
        assert_eq!(routed.route.expect("a route").number, CALLED);
        let customer = routed.customer.expect("the caller is a known customer");
        assert_eq!(customer.phone, DEMO_KNOWN_CALLER);
        let retried = router
            .route_call(route_request())
            .await
            .expect("a retried RouteCall answers OK")
            .into_inner();
        assert_eq!(retried.call_id, routed.call_id, "a retry is the same call");
        (daemon, health, router, routed.call_id)
    });

    let mut group = c.benchmark_group("grpc");
    group.bench_function("health_check", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let mut health = health.clone();
            async move {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(health.check(health_request()).await.unwrap());
                }
                started.elapsed()
            }
        })
    });
    group.bench_function("lookup_number_l1_hit", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let mut router = router.clone();
            async move {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(router.lookup_number(lookup_request()).await.unwrap());
                }
                started.elapsed()
            }
        })
    });
    group.bench_function("route_call_l1_hit", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let mut router = router.clone();
            async move {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(router.route_call(route_request()).await.unwrap());
                }
                started.elapsed()
            }
        })
    });
    group.finish();

    runtime.block_on(async {
        let mut router = router;
        assert_served_from_l1(&mut router, "after measuring").await;
        assert_nothing_degraded(&daemon).await;
        // release the lease, so the stack's Redis keeps nothing of the run
        router
            .end_call(EndCallRequest {
                call_id,
                end_reason: EndReason::CallerHangup as i32,
                ended_at: None,
                answered_at: None,
            })
            .await
            .expect("EndCall answers OK");
        daemon.stop().await;
    });
}

criterion_group!(benches, grpc);
criterion_main!(benches);
