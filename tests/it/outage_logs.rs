//! A dependency's outage is logged at its start, in summaries and at its
//! end, never once per request (issue 16: ~950 WARN lines a second while
//! PostgreSQL was down). The daemon runs as a real process so that its log
//! is exactly what an operator would read.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use switchboard::{
    proto::{LookupNumberRequest, RouteCallRequest},
    store,
};
use tonic::Code;

use crate::helpers::{eventually, route_request, usage_request, DaemonProcess};

/// Globex Health: its route is cached before the outage.
const GLOBEX: &str = "+13125550100";
/// A customer of the seed data: routing a call from it asks PostgreSQL.
const KNOWN_CALLER: &str = store::seed::DEMO_KNOWN_CALLER;
/// Concurrent clients during the outage.
const TASKS: usize = 20;
/// How long they keep asking: shorter than a summary interval, so the
/// outage has only its start line at WARN.
const LOAD_FOR: Duration = Duration::from_secs(4);
/// Requests the load must reach for the test to mean anything: a line per
/// request would be far more than [`MOST_LINES`].
const LEAST_REQUESTS: u64 = 300;
/// WARN and ERROR lines the outage may cost: its start (one per
/// dependency that failed), with room for one more.
const MOST_LINES: usize = 3;

#[tokio::test]
async fn a_postgres_outage_under_load_logs_its_start_and_end_not_each_request() {
    let (stack, db_name, mut bouncer, spool) = crate::crash::setup().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("switchboard.log");
    let daemon = DaemonProcess::start_logging_to(
        &stack,
        &db_name,
        bouncer.port,
        spool.path(),
        &[
            ("SWITCHBOARD_LOG", "info"),
            ("SWITCHBOARD_LOG_FORMAT", "json"),
            ("SWITCHBOARD_RECORDER_RETRY_INTERVAL", "100ms"),
        ],
        &log,
    )
    .await;
    let mut client = daemon.client().await;
    // a call to meter during the outage, and Globex's route cached
    let call_id = client
        .route_call(route_request(GLOBEX, "outage-logs"))
        .await
        .unwrap()
        .into_inner()
        .call_id;
    let before = loud_lines(&log).len();

    bouncer.kill();
    let requests = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + LOAD_FOR;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (mut client, call_id) = (client.clone(), call_id.clone());
            let (requests, unavailable) = (requests.clone(), unavailable.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < until {
                    i += 1;
                    // a number never looked up: only PostgreSQL can answer
                    let number = format!("+1999{task:02}{:05}", i % 100_000);
                    let lookup = client
                        .lookup_number(LookupNumberRequest {
                            number,
                            default_region: String::new(),
                        })
                        .await;
                    if lookup.is_err_and(|status| status.code() == Code::Unavailable) {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    // spooled (or refused while PostgreSQL dies): either way
                    // not a log line
                    let _ = client
                        .record_usage(usage_request(
                            &call_id,
                            &format!("outage-{task}-{i}"),
                            &[("call_seconds", 1.0)],
                        ))
                        .await;
                    // cached route; the caller lookup fails
                    let _ = client
                        .route_call(RouteCallRequest {
                            caller_number: KNOWN_CALLER.into(),
                            ..route_request(GLOBEX, &format!("outage-{task}-{i}"))
                        })
                        .await;
                    requests.fetch_add(3, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let requests = requests.load(Ordering::Relaxed);
    let unavailable = unavailable.load(Ordering::Relaxed);
    assert!(
        requests >= LEAST_REQUESTS && unavailable > 0,
        "too little load to tell: {requests} requests, {unavailable} UNAVAILABLE lookups"
    );

    let outage: Vec<Value> = loud_lines(&log).split_off(before);
    assert!(
        outage.len() <= MOST_LINES,
        "{} WARN/ERROR lines for {requests} requests ({unavailable} UNAVAILABLE), at most \
         {MOST_LINES} expected; the first ones:\n{}",
        outage.len(),
        show(&outage[..outage.len().min(10)])
    );
    assert!(
        outage.iter().any(|line| line["dependency"] == "postgres"
            && line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("dependency unavailable"))),
        "the outage's start is not logged:\n{}",
        show(&outage)
    );

    bouncer.resume_process().await;
    let polls = AtomicU64::new(0);
    eventually(
        "the end of the outage is logged",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            let log = log.clone();
            // a number never looked up: it ends the outage once PostgreSQL
            // has answered for a while
            let number = format!("+1888555{:04}", polls.fetch_add(1, Ordering::Relaxed));
            async move {
                let _ = client
                    .lookup_number(LookupNumberRequest {
                        number,
                        default_region: String::new(),
                    })
                    .await;
                lines(&log).iter().any(|line| {
                    line["dependency"] == "postgres"
                        && line["level"] == "INFO"
                        && line["message"] == "dependency available again"
                        && line["failures"].as_u64().is_some_and(|n| n > 0)
                })
            }
        },
    )
    .await;
}

/// The daemon's JSON log lines so far.
fn lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Its WARN and ERROR lines.
fn loud_lines(log: &Path) -> Vec<Value> {
    lines(log)
        .into_iter()
        .filter(|line| line["level"] == "WARN" || line["level"] == "ERROR")
        .collect()
}

fn show(lines: &[Value]) -> String {
    lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
