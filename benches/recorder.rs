//! The recorder's cost on the call path: what `RouteCall` pays to hand its
//! call-opened event to the recorder (`Recorder::reserve`, then
//! `Permit::record`), with the batcher draining the queue to PostgreSQL
//! through PgBouncer at the same time, as in the daemon.
//!
//! * `recorder/build_event_only`: the baseline, building the event as the
//!   router does (its strings, a clock read) and dropping it.
//! * `recorder/enqueue_call_opened`: building the same event and queueing
//!   it.
//!
//! Read `enqueue_call_opened` as a ratio to `build_event_only` within one
//! run; absolute times on a shared machine move by 2× between runs.
//!
//! The recorder runs with the daemon's default settings (batch size, flush
//! interval, timeouts, pool) except a larger queue, and the measured loop
//! never fills it: it queues at most [`CHUNK`] events, then waits, untimed,
//! until the batcher has made everything durable before it queues more.
//! Every event is for the same call, so the batcher writes one row and
//! each later batch is the idempotent no-op (`store::calls`), which keeps
//! the drain fast and the database small however long the run. Before
//! measuring, the bench checks that an event reaches the `calls` table;
//! after, that every event queued was written to PostgreSQL (none spooled
//! or dead-lettered).
//!
//! Needs the local stack: `deploy/local/stack up`, then
//! `eval "$(deploy/local/stack env)"; cargo bench --bench recorder`.

// Tests and benches stop at the first surprise: unwrapping is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    hint::black_box,
    time::{Duration, Instant, SystemTime},
};

use common::{bench_database, env, BenchDatabase};
use criterion::{criterion_group, criterion_main, Criterion};
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard::{
    config::ServeConfig,
    domain::{CallOpened, Event},
    recorder::{dead_letter_path, Recorder, RecorderSettings, Spool},
    store::{self, seed::DEMO_KNOWN_CALLER, PgStore},
    telemetry,
};
use tokio::{runtime::Runtime, sync::watch, task::JoinHandle};
use uuid::Uuid;

/// Room for several chunks: the measured loop can never fill the queue.
const QUEUE_CAPACITY: usize = 1 << 20;
/// Most events queued before the loop waits for the batcher to catch up.
const CHUNK: u64 = 1 << 16;
/// Longest wait for the batcher to make a chunk durable.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);

/// The one call every event is for.
const CALL_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_be4c_0001);
const GATEWAY_CALL_ID: &str = "bench-recorder-call";
/// Acme Dental, its reception agent and number, and a known customer, in
/// the demo data: a row for an unknown organization would be dropped.
const ORG_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_a001);
const AGENT_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_b001);
const CUSTOMER_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_d001);
const CALLED: &str = "+14155550100";

/// The events of one `RouteCall`, built as `Router::route_call` builds
/// them.
fn call_opened() -> Vec<Event> {
    vec![Event::CallOpened(CallOpened {
        call_id: switchboard::domain::CallId(CALL_ID),
        org_id: switchboard::domain::OrgId(ORG_ID),
        agent_id: switchboard::domain::AgentId(AGENT_ID),
        customer_id: Some(CUSTOMER_ID),
        gateway_call_id: GATEWAY_CALL_ID.to_string(),
        called_number: CALLED.to_string(),
        caller_number: Some(DEMO_KNOWN_CALLER.to_string()),
        started_at: SystemTime::now(),
    })]
}

/// A running recorder, started as the daemon starts it.
struct Fixture {
    recorder: Recorder,
    batcher: JoinHandle<()>,
    stop: watch::Sender<bool>,
    grace: Duration,
    metrics: PrometheusHandle,
    /// A direct session as the superuser, to check what was written.
    superuser: tokio_postgres::Client,
    spool: tempfile::TempDir,
    /// Events handed over outside the measured loop (setup and drains).
    unmeasured: u64,
}

impl Fixture {
    async fn start() -> Self {
        // as in the daemon, so the batcher's metrics cost what they cost
        // there, and so the bench can count what was written
        let metrics = telemetry::metrics_handle();
        let BenchDatabase {
            pooled_url: pooled,
            daemon_direct_url: direct,
            superuser_url: superuser,
            ..
        } = bench_database().await;
        let spool = tempfile::Builder::new()
            .prefix("switchboard-bench-spool-")
            .tempdir()
            .unwrap();
        // the daemon's defaults, read where the daemon reads them, with
        // the bench's own spool
        let mut defaults = ServeConfig::with_defaults(&pooled, &direct, &env("REDIS_URL"));
        defaults.spool.spool_dir = spool.path().to_path_buf();
        let store = PgStore::new(&pooled, &defaults.pool_settings()).unwrap();
        let opened = Spool::open(defaults.spool_settings()).expect("the spool opens");
        let (stop, stopped) = watch::channel(false);
        let (recorder, batcher) = Recorder::start(
            store,
            RecorderSettings {
                queue_capacity: QUEUE_CAPACITY,
                ..defaults.recorder_settings()
            },
            opened,
            stopped,
            defaults.shutdown_grace,
        );
        let superuser = store::connect_direct(&superuser).await.unwrap();
        Self {
            recorder,
            batcher,
            stop,
            grace: defaults.shutdown_grace,
            metrics,
            superuser,
            spool,
            unmeasured: 0,
        }
    }

    /// Waits until everything queued so far is durable: the batcher takes
    /// the queue in order, so once an event recorded durably behind them is
    /// acknowledged, they are too.
    async fn drain(&mut self) {
        self.unmeasured += 1;
        tokio::time::timeout(
            DRAIN_WITHIN,
            self.recorder
                .record_durably(call_opened(), Instant::now() + DRAIN_WITHIN),
        )
        .await
        .unwrap_or_else(|_| panic!("the recorder did not drain within {DRAIN_WITHIN:?}"))
        .expect("the recorder makes events durable");
    }

    /// `switchboard_recorder_events_total` for `outcome` (0 when absent).
    fn events(&self, outcome: &str) -> u64 {
        let series = format!(r#"switchboard_recorder_events_total{{outcome="{outcome}"}}"#);
        self.metrics
            .render()
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok())?
            })
            .unwrap_or(0)
    }

    /// Fails unless exactly `queued` events have been written to
    /// PostgreSQL (and none spooled or dead-lettered), and the call's row
    /// is there.
    async fn assert_all_written(&self, queued: u64) {
        let total = queued + self.unmeasured;
        assert_eq!(
            self.events("written"),
            total,
            "events written to PostgreSQL"
        );
        assert_eq!(self.events("spooled"), 0, "events spooled");
        assert_eq!(self.events("dead_lettered"), 0, "events dead-lettered");
        assert!(!dead_letter_path(self.spool.path()).exists());
        let rows: i64 = self
            .superuser
            .query_one(
                "select count(*) from public.calls where id = $1 and started_at is not null",
                &[&CALL_ID],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 1, "the call's row in public.calls");
    }

    /// Raises the stop flag and waits for the batcher's orderly drain.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let limit = self.grace + Duration::from_secs(5);
        tokio::time::timeout(limit, self.batcher)
            .await
            .unwrap_or_else(|_| panic!("the recorder did not stop within {limit:?}"))
            .expect("the recorder task panicked");
    }
}

/// Runs `iters` iterations of `once` on a runtime worker, where the router
/// runs, and times them there: up to [`CHUNK`] at a time, then, if `queues`,
/// waits for the recorder to drain (untimed) before the next chunk.
fn timed_on_worker(
    runtime: &Runtime,
    fixture: &mut Fixture,
    iters: u64,
    once: fn(&Recorder),
    queues: bool,
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        left -= n;
        let recorder = fixture.recorder.clone();
        let task = runtime.spawn(async move {
            let started = Instant::now();
            for _ in 0..n {
                once(&recorder);
            }
            started.elapsed()
        });
        elapsed += runtime.block_on(task).expect("the measured task panicked");
        if queues {
            runtime.block_on(fixture.drain());
        }
    }
    elapsed
}

fn build_event_only(_: &Recorder) {
    black_box(call_opened());
}

fn enqueue_call_opened(recorder: &Recorder) {
    recorder
        .reserve()
        .expect("the queue has room")
        .record(black_box(call_opened()));
}

fn recorder(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let mut fixture = runtime.block_on(async {
        let mut fixture = Fixture::start().await;
        // one event the way the bench queues them, then make sure it
        // reached the table
        enqueue_call_opened(&fixture.recorder);
        fixture.unmeasured += 1;
        fixture.drain().await;
        fixture.assert_all_written(0).await;
        fixture
    });

    let mut queued = 0u64;
    let mut group = c.benchmark_group("recorder");
    group.bench_function("build_event_only", |b| {
        b.iter_custom(|iters| {
            timed_on_worker(&runtime, &mut fixture, iters, build_event_only, false)
        })
    });
    group.bench_function("enqueue_call_opened", |b| {
        b.iter_custom(|iters| {
            queued += iters;
            timed_on_worker(&runtime, &mut fixture, iters, enqueue_call_opened, true)
        })
    });
    group.finish();

    runtime.block_on(async {
        fixture.assert_all_written(queued).await;
        fixture.stop().await;
    });
}

criterion_group!(benches, recorder);
criterion_main!(benches);
