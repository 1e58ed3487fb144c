//! The daemon as a real process: what it acknowledged survives `SIGKILL`,
//! a torn spool is detected rather than replayed, and `SIGTERM` drains.

use std::{path::Path, sync::Arc, time::Duration};

use crate::{
    calls::spool_files,
    helpers::{
        count, create_database, end_request, eventually, metric, route_request, usage_request,
        DaemonProcess, PrivateBouncer, Stack,
    },
};
use switchboard::store;

const GLOBEX: &str = "+13125550100";

/// A seeded database of its own and a pooler the test can kill.
pub async fn setup() -> (Stack, String, PrivateBouncer, tempfile::TempDir) {
    let stack = Stack::from_env();
    let db_name = create_database(&stack).await;
    let mut client = store::connect_direct(&stack.direct_url(&db_name))
        .await
        .unwrap();
    store::seed::demo(&mut client).await.unwrap();
    let bouncer = PrivateBouncer::start(&stack).await;
    let spool = tempfile::tempdir().unwrap();
    (stack, db_name, bouncer, spool)
}

/// With the database unreachable, routes, meters and ends `calls` calls:
/// everything acknowledged is then only in the spool.
async fn spool_calls(daemon: &DaemonProcess, calls: usize) {
    let mut client = daemon.client().await;
    for i in 0..calls {
        let call_id = client
            .route_call(route_request(GLOBEX, &format!("spooled-{i}")))
            .await
            .unwrap()
            .into_inner()
            .call_id;
        client
            .record_usage(usage_request(&call_id, "u", &[("call_seconds", 42.0)]))
            .await
            .unwrap();
        client.end_call(end_request(&call_id)).await.unwrap();
    }
}

const RETRY_FAST: &[(&str, &str)] = &[
    ("SWITCHBOARD_RECORDER_WRITE_TIMEOUT", "300ms"),
    ("SWITCHBOARD_RECORDER_RETRY_INTERVAL", "100ms"),
];

#[tokio::test]
async fn what_was_spooled_survives_sigkill_and_lands_once() {
    let (stack, db_name, mut bouncer, spool) = setup().await;
    let daemon =
        DaemonProcess::start(&stack, &db_name, bouncer.port, spool.path(), RETRY_FAST).await;
    bouncer.kill();
    spool_calls(&daemon, 10).await;
    daemon.kill();
    assert!(spool_files(spool.path()) > 0);

    bouncer.resume_process().await;
    let daemon =
        DaemonProcess::start(&stack, &db_name, bouncer.port, spool.path(), RETRY_FAST).await;
    let db = store::connect_direct(&stack.direct_url(&db_name))
        .await
        .unwrap();
    eventually("the spool replayed", Duration::from_secs(20), || async {
        count(
            &db,
            "select count(*) from public.calls where status = 'completed'",
        )
        .await
            == 10
    })
    .await;
    assert_eq!(count(&db, "select count(*) from public.calls").await, 10);
    assert_eq!(
        count(
            &db,
            "select count(*) from public.calls where started_at is null"
        )
        .await,
        0,
        "opens queued before an acknowledged event are durable with it"
    );
    assert_eq!(
        count(&db, "select count(*) from public.usage_events").await,
        10
    );
    eventually("the spool emptied", Duration::from_secs(5), || async {
        spool_files(spool.path()) == 0
    })
    .await;

    // a second crash and restart replays nothing twice
    daemon.kill();
    let _daemon =
        DaemonProcess::start(&stack, &db_name, bouncer.port, spool.path(), RETRY_FAST).await;
    assert_eq!(count(&db, "select count(*) from public.calls").await, 10);
    assert_eq!(
        count(&db, "select count(*) from public.usage_events").await,
        10
    );
}

#[tokio::test]
async fn a_torn_spool_tail_is_skipped_and_reported_never_replayed() {
    let (stack, db_name, mut bouncer, spool) = setup().await;
    let daemon =
        DaemonProcess::start(&stack, &db_name, bouncer.port, spool.path(), RETRY_FAST).await;
    bouncer.kill();
    spool_calls(&daemon, 5).await;
    daemon.kill();
    // a crash in the middle of the last write: its record is cut short
    let segment = last_segment(spool.path());
    let length = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(length - 3)
        .unwrap();

    bouncer.resume_process().await;
    let daemon =
        DaemonProcess::start(&stack, &db_name, bouncer.port, spool.path(), RETRY_FAST).await;
    let db = store::connect_direct(&stack.direct_url(&db_name))
        .await
        .unwrap();
    eventually(
        "the intact records replayed",
        Duration::from_secs(20),
        || async { count(&db, "select count(*) from public.usage_events").await == 5 },
    )
    .await;
    eventually("the spool consumed", Duration::from_secs(5), || async {
        spool_files(spool.path()) == 0
    })
    .await;
    // the last record was the last call's end: gone, and nothing invented
    assert_eq!(
        count(
            &db,
            "select count(*) from public.calls where status = 'completed'"
        )
        .await,
        4
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from public.calls where gateway_call_id = 'spooled-4' and ended_at is null"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            daemon.admin_addr,
            "switchboard_recorder_spool_corrupt_total"
        )
        .await,
        1.0
    );
    let kept = std::fs::read_dir(spool.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "corrupt"));
    assert!(kept, "the damaged segment is kept for an operator");
}

#[tokio::test]
async fn sigterm_drains_queued_events_before_exit() {
    let (stack, db_name, bouncer, spool) = setup().await;
    let daemon = DaemonProcess::start(
        &stack,
        &db_name,
        bouncer.port,
        spool.path(),
        // events would wait a minute for their batch without the drain
        &[
            ("SWITCHBOARD_RECORDER_FLUSH_INTERVAL", "60s"),
            ("SWITCHBOARD_RECORDER_BATCH_SIZE", "100000"),
        ],
    )
    .await;
    let mut client = daemon.client().await;
    for i in 0..5 {
        client
            .route_call(route_request(GLOBEX, &format!("draining-{i}")))
            .await
            .unwrap();
    }
    let db = store::connect_direct(&stack.direct_url(&db_name))
        .await
        .unwrap();
    assert_eq!(count(&db, "select count(*) from public.calls").await, 0);
    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(count(&db, "select count(*) from public.calls").await, 5);
    assert_eq!(spool_files(spool.path()), 0, "written, not spooled");
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    segments.sort();
    segments.pop().expect("a spool segment")
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_answers_every_accepted_call_and_exits_cleanly() {
    let (stack, db_name, bouncer, spool) = setup().await;
    let daemon = DaemonProcess::start(
        &stack,
        &db_name,
        bouncer.port,
        spool.path(),
        &[("SWITCHBOARD_ADMISSION_MODE", "off")],
    )
    .await;
    let client = daemon.client().await;
    let admitted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load: Vec<_> = (0..8)
        .map(|worker| {
            let mut client = client.clone();
            let admitted = admitted.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let request = route_request(GLOBEX, &format!("load-{worker}-{i}"));
                    match client.route_call(request).await {
                        Ok(reply) => admitted.lock().unwrap().push(reply.into_inner().call_id),
                        // the daemon stopped taking requests
                        Err(status) => return status,
                    }
                }
                unreachable!()
            })
        })
        .collect();
    eventually("load is running", Duration::from_secs(10), || async {
        admitted.lock().unwrap().len() >= 100
    })
    .await;
    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
    for worker in load {
        let refusal = worker.await.unwrap();
        // UNAVAILABLE, or CANCELLED for a request the closing connection
        // never took (HTTP/2 GOAWAY): both unprocessed, both safe to retry
        assert!(
            matches!(
                refusal.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled
            ) || refused_by_goaway(&refusal),
            "a stopping daemon refuses cleanly: {refusal:?}"
        );
    }
    // every call that was answered OK was recorded before the exit
    let admitted = admitted.lock().unwrap().clone();
    let db = store::connect_direct(&stack.direct_url(&db_name))
        .await
        .unwrap();
    assert_eq!(
        count(&db, "select count(*) from public.calls").await,
        admitted.len() as i64
    );
}

/// Whether a request failed because the daemon's graceful GOAWAY reached
/// the client before the server took the stream: unprocessed, and safe to
/// retry, though tonic reports h2's error as `INTERNAL`.
fn refused_by_goaway(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = error.source();
    }
    false
}
