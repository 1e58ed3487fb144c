//! A dependency's outage is logged at its start, in summaries and at its
//! end, never once per request (issue 16: ~950 WARN lines a second while
//! PostgreSQL was down). The daemon runs as a real process so that its log
//! is exactly what an operator would read.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use switchboard::{
    proto::{call_router_client::CallRouterClient, LookupNumberRequest, RouteCallRequest},
    store,
};
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::{
    eventually, route_request, usage_request, DaemonProcess, PrivateRedis, Stack,
};

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
    let (daemon, log, _dir) = start_logging(
        &stack,
        &db_name,
        bouncer.port,
        spool.path(),
        &[
            ("SWITCHBOARD_RECORDER_RETRY_INTERVAL", "100ms"),
            // no warm start, so no directory of provisioned numbers: the
            // load's unknown numbers are looked up in the database
            ("SWITCHBOARD_CACHE_WARM_LIMIT", "0"),
        ],
    )
    .await;
    let client = daemon.client().await;
    let call_id = a_call(&client).await;
    let before = loud_lines(&log).len();

    bouncer.kill();
    let load = load(&client, &call_id).await;
    assert!(load.unavailable > 0, "no lookup was UNAVAILABLE: {load:?}");
    assert_outage_logged(&log, before, "postgres", &load);

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

#[tokio::test]
async fn a_redis_outage_under_load_logs_its_start_not_each_request() {
    let (stack, db_name, bouncer, spool) = crate::crash::setup().await;
    let mut redis = PrivateRedis::start().await;
    let redis_url = redis.url();
    let (daemon, log, _dir) = start_logging(
        &stack,
        &db_name,
        bouncer.port,
        spool.path(),
        &[("REDIS_URL", &redis_url)],
    )
    .await;
    let client = daemon.client().await;
    let call_id = a_call(&client).await;
    let before = loud_lines(&log).len();

    redis.kill();
    let load = load(&client, &call_id).await;
    assert_outage_logged(&log, before, "redis", &load);
}

/// The daemon with `extra` settings, logging JSON from INFO up to a file
/// in a directory that lives as long as the returned guard.
async fn start_logging(
    stack: &Stack,
    db_name: &str,
    pooler_port: u16,
    spool: &Path,
    extra: &[(&str, &str)],
) -> (DaemonProcess, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("switchboard.log");
    let mut settings = vec![
        ("SWITCHBOARD_LOG", "info"),
        ("SWITCHBOARD_LOG_FORMAT", "json"),
    ];
    settings.extend_from_slice(extra);
    let daemon =
        DaemonProcess::start_logging_to(stack, db_name, pooler_port, spool, &settings, &log).await;
    (daemon, log, dir)
}

/// Routes a call to Globex (caching its route) to meter during an outage.
async fn a_call(client: &CallRouterClient<Channel>) -> String {
    client
        .clone()
        .route_call(route_request(GLOBEX, "outage-logs"))
        .await
        .unwrap()
        .into_inner()
        .call_id
}

/// What [`load`] sent.
#[derive(Debug, Default)]
struct Load {
    requests: u64,
    /// Lookups answered `UNAVAILABLE`.
    unavailable: u64,
}

/// [`TASKS`] clients for [`LOAD_FOR`], each in turn looking up a number
/// never looked up (only PostgreSQL can answer, after Redis), metering
/// `call_id`, and routing a call to Globex from a known caller (admitted
/// through Redis, the caller looked up in PostgreSQL). Answers are not
/// checked: whatever they are, they must not cost a log line each.
async fn load(client: &CallRouterClient<Channel>, call_id: &str) -> Load {
    let until = Instant::now() + LOAD_FOR;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (mut client, call_id) = (client.clone(), call_id.to_string());
            tokio::spawn(async move {
                let mut load = Load::default();
                while Instant::now() < until {
                    let i = load.requests;
                    let number = format!("+1999{task:02}{:05}", i % 100_000);
                    let lookup = client
                        .lookup_number(LookupNumberRequest {
                            number,
                            default_region: String::new(),
                        })
                        .await;
                    if lookup.is_err_and(|status| status.code() == Code::Unavailable) {
                        load.unavailable += 1;
                    }
                    let _ = client
                        .record_usage(usage_request(
                            &call_id,
                            &format!("outage-{task}-{i}"),
                            &[("call_seconds", 1.0)],
                        ))
                        .await;
                    let _ = client
                        .route_call(RouteCallRequest {
                            caller_number: KNOWN_CALLER.into(),
                            ..route_request(GLOBEX, &format!("outage-{task}-{i}"))
                        })
                        .await;
                    load.requests += 3;
                }
                load
            })
        })
        .collect();
    let mut total = Load::default();
    for task in tasks {
        let load = task.await.unwrap();
        total.requests += load.requests;
        total.unavailable += load.unavailable;
    }
    assert!(
        total.requests >= LEAST_REQUESTS,
        "too little load to tell: {total:?}"
    );
    total
}

/// The log lines after the first `before` WARN/ERROR ones are at most
/// [`MOST_LINES`], and include the start of `dependency`'s outage.
fn assert_outage_logged(log: &Path, before: usize, dependency: &str, load: &Load) {
    let outage: Vec<Value> = loud_lines(log).split_off(before);
    assert!(
        outage.len() <= MOST_LINES,
        "{} WARN/ERROR lines for {load:?}, at most {MOST_LINES} expected; the first ones:\n{}",
        outage.len(),
        show(&outage[..outage.len().min(10)])
    );
    assert!(
        outage.iter().any(|line| line["dependency"] == dependency
            && line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("dependency unavailable"))),
        "the start of {dependency}'s outage is not logged:\n{}",
        show(&outage)
    );
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
