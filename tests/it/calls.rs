//! Call records and usage: written behind the call, exactly once, through
//! retries, reordering, a database outage and a full queue.

use std::{collections::HashSet, time::Duration};

use futures::{future::join_all, StreamExt};
use switchboard::{
    admission::AdmissionMode,
    proto::{EndCallRequest, EndReason},
};
use tonic::Code;

use crate::helpers::{
    count, end_request, eventually, metric, reason, route_request, spawn_on, spawn_on_via,
    spawn_seeded_app, spawn_seeded_app_via, spawn_seeded_app_with, usage_request, PrivateBouncer,
    Stack,
};

const ACME: &str = "+14155550100";
const GLOBEX: &str = "+13125550100";

#[tokio::test]
async fn gateway_retries_give_one_call_one_lease_and_one_row() {
    // one slot: a retry that took a second lease would be refused
    let mut app = spawn_seeded_app_with(|c| c.admission.limit_starter = 1).await;
    let db = app.direct().await;
    let mut ids = HashSet::new();
    for _ in 0..3 {
        let reply = app
            .client
            .route_call(route_request(ACME, "CA-retried"))
            .await
            .expect("a retry is admitted on its own lease")
            .into_inner();
        ids.insert(reply.call_id);
    }
    assert_eq!(ids.len(), 1, "a retry gets the same call id");
    let call_id = ids.into_iter().next().unwrap();
    let other = app
        .client
        .route_call(route_request(ACME, "CA-other"))
        .await
        .expect_err("the single slot is taken");
    assert_eq!(other.code(), Code::ResourceExhausted);

    for _ in 0..2 {
        app.client.end_call(end_request(&call_id)).await.unwrap();
        app.client
            .record_usage(usage_request(
                &call_id,
                "report-1",
                &[("call_seconds", 30.0), ("llm_tokens_in", 1200.0)],
            ))
            .await
            .unwrap();
    }
    // EndCall and RecordUsage return once durable: no waiting needed
    let calls = db
        .query(
            "select gateway_call_id, status, end_reason, agent_id is not null, started_at is not null
               from public.calls",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(calls.len(), 1, "one row for one call");
    let row = &calls[0];
    assert_eq!(row.get::<_, &str>(0), "CA-retried");
    assert_eq!(row.get::<_, &str>(1), "completed");
    assert_eq!(row.get::<_, &str>(2), "caller_hangup");
    assert!(
        row.get::<_, bool>(3) && row.get::<_, bool>(4),
        "opened fields present"
    );
    assert_eq!(
        count(&db, "select count(*) from public.usage_events").await,
        2,
        "a repeated report records nothing twice"
    );
    assert_eq!(
        count(
            &db,
            "select sum(quantity)::bigint from public.usage_daily where metric = 'call_seconds'"
        )
        .await,
        30
    );
    // the slot is free again
    app.client
        .route_call(route_request(ACME, "CA-other"))
        .await
        .expect("EndCall released the lease");
}

#[tokio::test]
async fn an_end_written_before_its_open_still_makes_one_correct_row() {
    // replica A holds its events for a minute; replica B writes at once
    let mut slow = spawn_seeded_app_with(|c| {
        c.recorder.recorder_flush_interval = Duration::from_secs(60);
        c.recorder.recorder_batch_size = 10_000;
    })
    .await;
    let mut fast = spawn_on(&slow).await;
    let db = slow.direct().await;

    let call_id = slow
        .client
        .route_call(route_request(ACME, "CA-reordered"))
        .await
        .unwrap()
        .into_inner()
        .call_id;
    fast.client.end_call(end_request(&call_id)).await.unwrap();
    fast.client
        .record_usage(usage_request(&call_id, "k", &[("tts_characters", 512.0)]))
        .await
        .unwrap();
    let early = db
        .query_one(
            "select status, started_at is null, agent_id is null from public.calls",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(early.get::<_, &str>(0), "completed");
    assert!(
        early.get::<_, bool>(1) && early.get::<_, bool>(2),
        "the open is not written yet"
    );

    // stopping A drains its queue: the open lands after the end
    slow.stop().await.unwrap();
    let row = db
        .query_one(
            "select status, end_reason, started_at is not null, agent_id is not null,
                    called_number, gateway_call_id
               from public.calls",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "completed", "the end is not undone");
    assert_eq!(row.get::<_, &str>(1), "caller_hangup");
    assert!(row.get::<_, bool>(2) && row.get::<_, bool>(3));
    assert_eq!(row.get::<_, &str>(4), ACME);
    assert_eq!(row.get::<_, &str>(5), "CA-reordered");
    assert_eq!(
        count(&db, "select count(*) from public.usage_events").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_events_land_exactly_once_in_batches() {
    let app = spawn_seeded_app_with(|c| {
        c.admission.admission_mode = AdmissionMode::Off;
        // the subject is exactly once, not latency: 7,500 RPCs, 100 at a
        // time, on a debug build sharing two cores with the whole suite
        c.grpc.request_timeout = Duration::from_secs(10);
    })
    .await;
    let db = app.direct().await;
    const CALLS: usize = 2_500; // × (open, end, two usage items) = 10,000 events
                                // a gateway's worth of calls in flight at once
    let results: Vec<Result<(), tonic::Status>> = futures::stream::iter((0..CALLS).map(|i| {
        let mut client = app.client.clone();
        async move {
            let call_id = client
                .route_call(route_request(GLOBEX, &format!("bulk-{i}")))
                .await?
                .into_inner()
                .call_id;
            client
                .record_usage(usage_request(
                    &call_id,
                    "final",
                    &[("call_seconds", 60.0), ("llm_tokens_out", 10.0)],
                ))
                .await?;
            client.end_call(end_request(&call_id)).await?;
            Ok::<_, tonic::Status>(())
        }
    }))
    .buffer_unordered(100)
    .collect()
    .await;
    for result in results {
        result.unwrap();
    }
    // opens are acknowledged before they are written: wait for the last
    eventually("every open written", Duration::from_secs(10), || async {
        count(
            &db,
            "select count(*) from public.calls where started_at is not null",
        )
        .await
            == CALLS as i64
    })
    .await;
    assert_eq!(
        count(&db, "select count(*) from public.calls").await,
        CALLS as i64
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from public.calls where status = 'completed'"
        )
        .await,
        CALLS as i64
    );
    assert_eq!(
        count(&db, "select count(distinct id) from public.usage_events").await,
        2 * CALLS as i64
    );
    assert_eq!(
        count(
            &db,
            "select sum(quantity)::bigint from public.usage_daily where metric = 'call_seconds'"
        )
        .await,
        60 * CALLS as i64,
        "the daily rollup counts every event once"
    );
    let batches = metric(app.admin_addr, "switchboard_recorder_batch_size_count").await;
    assert!(batches > 0.0, "batches are counted");
}

#[tokio::test]
async fn calls_and_usage_during_a_database_outage_land_once_it_returns() {
    let stack = Stack::from_env();
    let mut bouncer = PrivateBouncer::start(&stack).await;
    let mut app = spawn_seeded_app_via(bouncer.port, |c| {
        c.admission.admission_mode = AdmissionMode::Off;
        c.recorder.recorder_write_timeout = Duration::from_millis(500);
        c.recorder.recorder_retry_interval = Duration::from_millis(200);
    })
    .await;
    let db = app.direct().await;

    bouncer.kill();
    let mut call_ids = Vec::new();
    for i in 0..20 {
        // routes come from the warm cache; the records go to the spool
        let call_id = app
            .client
            .route_call(route_request(GLOBEX, &format!("outage-{i}")))
            .await
            .expect("routing does not need the database")
            .into_inner()
            .call_id;
        app.client
            .record_usage(usage_request(&call_id, "u", &[("stt_seconds", 12.5)]))
            .await
            .expect("usage is acknowledged once spooled");
        app.client
            .end_call(end_request(&call_id))
            .await
            .expect("the end is acknowledged once spooled");
        call_ids.push(call_id);
    }
    assert_eq!(count(&db, "select count(*) from public.calls").await, 0);
    assert!(
        spool_files(&app.spool_dir) > 0,
        "acknowledged events are on disk"
    );

    bouncer.resume_process().await;
    eventually("the spool replayed", Duration::from_secs(20), || async {
        count(
            &db,
            "select count(*) from public.calls where status = 'completed'",
        )
        .await
            == 20
    })
    .await;
    assert_eq!(count(&db, "select count(*) from public.calls").await, 20);
    assert_eq!(
        count(&db, "select count(*) from public.usage_events").await,
        20
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from public.calls where started_at is null"
        )
        .await,
        0,
        "the opens were spooled too"
    );
    eventually("the spool emptied", Duration::from_secs(5), || async {
        spool_files(&app.spool_dir) == 0
    })
    .await;
    // and new calls are written directly again
    let call_id = app
        .client
        .route_call(route_request(GLOBEX, "after-outage"))
        .await
        .unwrap()
        .into_inner()
        .call_id;
    app.client.end_call(end_request(&call_id)).await.unwrap();
    assert_eq!(count(&db, "select count(*) from public.calls").await, 21);
}

#[tokio::test]
async fn a_full_queue_refuses_calls_instead_of_growing() {
    let stack = Stack::from_env();
    let bouncer = PrivateBouncer::start(&stack).await;
    let app = spawn_seeded_app_via(bouncer.port, |c| {
        c.admission.admission_mode = AdmissionMode::Off;
        c.recorder.recorder_queue = 4;
        c.recorder.recorder_batch_size = 4;
        c.recorder.recorder_write_timeout = Duration::from_secs(30);
    })
    .await;
    let db = app.direct().await;
    // the batcher's write hangs on the paused pooler; the queue fills
    bouncer.admin("PAUSE").await;
    let results = join_all((0..40).map(|i| {
        let mut client = app.client.clone();
        async move {
            client
                .route_call(route_request(GLOBEX, &format!("flood-{i}")))
                .await
                .map(|r| r.into_inner().call_id)
        }
    }))
    .await;
    let admitted: Vec<String> = results.iter().filter_map(|r| r.clone().ok()).collect();
    let refused: Vec<&tonic::Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!refused.is_empty(), "a full queue refuses");
    // the batch being written, and as many as the queue holds taken from
    // it while that write waits
    assert!(
        admitted.len() <= 4 + 2 * 4,
        "at most a queue and two batches are held: {} admitted",
        admitted.len()
    );
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(reason(status), "recorder_queue_full");
    }
    assert!(
        metric(
            app.admin_addr,
            r#"switchboard_recorder_refused_total{reason="queue_full"}"#
        )
        .await
            >= refused.len() as f64
    );

    bouncer.admin("RESUME").await;
    let expected = admitted.len() as i64;
    eventually(
        "every admitted call recorded",
        Duration::from_secs(20),
        || async { count(&db, "select count(*) from public.calls").await == expected },
    )
    .await;
    let recorded = count(
        &db,
        "select count(*) from public.calls where gateway_call_id like 'flood-%'",
    )
    .await;
    assert_eq!(recorded, expected, "refused calls leave no row");
}

#[tokio::test]
async fn end_call_and_record_usage_refuse_bad_input_with_reasons() {
    let mut app = spawn_seeded_app().await;
    let call_id = app
        .client
        .route_call(route_request(ACME, "CA-input"))
        .await
        .unwrap()
        .into_inner()
        .call_id;
    let unknown = uuid::Uuid::new_v4().to_string();

    let mut unspecified = end_request(&call_id);
    unspecified.end_reason = EndReason::Unspecified as i32;
    let mut inverted = end_request(&call_id);
    inverted.answered_at = Some((std::time::SystemTime::now() + Duration::from_secs(60)).into());
    let ends: Vec<(EndCallRequest, Code, &str)> = vec![
        (
            end_request("not-a-uuid"),
            Code::InvalidArgument,
            "invalid_call_id",
        ),
        (unspecified, Code::InvalidArgument, "invalid_end_reason"),
        (inverted, Code::InvalidArgument, "invalid_timestamp"),
        (end_request(&unknown), Code::NotFound, "call_not_found"),
    ];
    for (request, code, expected) in ends {
        let status = app.client.end_call(request).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (code, expected),
            "{status:?}"
        );
    }

    let usages = [
        (
            usage_request(&call_id, "k", &[("minutes", 1.0)]),
            "unknown metric",
        ),
        (
            usage_request(&call_id, "k", &[("call_seconds", -1.0)]),
            "not negative",
        ),
        (
            usage_request(&call_id, "k", &[("call_seconds", f64::NAN)]),
            "finite",
        ),
        (
            usage_request(
                &call_id,
                "k",
                &[("call_seconds", 1.0), ("call_seconds", 2.0)],
            ),
            "twice",
        ),
        (usage_request(&call_id, "k", &[]), "empty"),
        (
            usage_request(&call_id, "", &[("call_seconds", 1.0)]),
            "idempotency_key is empty",
        ),
    ];
    for (request, message) in usages {
        let status = app.client.record_usage(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(message), "{status:?}");
    }
    let status = app
        .client
        .record_usage(usage_request(&unknown, "k", &[("call_seconds", 1.0)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let db = app.direct().await;
    assert_eq!(
        count(&db, "select count(*) from public.usage_events").await,
        0,
        "nothing refused was recorded"
    );
}

#[tokio::test]
async fn another_replica_ends_a_call_it_did_not_route() {
    let stack = Stack::from_env();
    let mut first = spawn_seeded_app().await;
    let mut second = spawn_on_via(&first, stack.pgbouncer_port, |_| {}).await;
    let call_id = first
        .client
        .route_call(route_request(ACME, "CA-handover"))
        .await
        .unwrap()
        .into_inner()
        .call_id;
    second.client.end_call(end_request(&call_id)).await.unwrap();
    let db = first.direct().await;
    assert_eq!(
        count(
            &db,
            "select count(*) from public.calls where status = 'completed'"
        )
        .await,
        1
    );
}

/// Segment files in a spool directory.
pub fn spool_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "spool"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_full_spool_refuses_with_a_clear_status_and_loses_nothing() {
    let stack = Stack::from_env();
    let mut bouncer = PrivateBouncer::start(&stack).await;
    let mut app = spawn_seeded_app_via(bouncer.port, |c| {
        c.admission.admission_mode = AdmissionMode::Off;
        c.spool.spool_max_bytes = 4096;
        c.spool.spool_segment_bytes = 4096;
        c.recorder.recorder_write_timeout = Duration::from_millis(500);
        c.recorder.recorder_retry_interval = Duration::from_millis(100);
    })
    .await;
    let db = app.direct().await;
    bouncer.kill();

    let mut acknowledged = 0;
    let mut refused = None;
    for i in 0..200 {
        let call_id = app
            .client
            .route_call(route_request(GLOBEX, &format!("full-{i}")))
            .await
            .unwrap()
            .into_inner()
            .call_id;
        let request = usage_request(&call_id, "u", &[("llm_tokens_in", 100.0)]);
        match app.client.record_usage(request.clone()).await {
            Ok(_) => acknowledged += 1,
            Err(status) => {
                refused = Some((status, request));
                break;
            }
        }
    }
    let (status, request) = refused.expect("a 4 KiB spool fills up");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "spool_full");
    assert!(acknowledged > 0, "the spool took events until it was full");
    // and stays refusing at once while nothing has changed
    let again = app.client.record_usage(request.clone()).await.unwrap_err();
    assert_eq!(reason(&again), "spool_full");

    bouncer.resume_process().await;
    let client = app.client.clone();
    eventually(
        "the refused report is taken again",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.record_usage(request).await.is_ok() }
        },
    )
    .await;
    let expected = acknowledged + 1;
    eventually("every report landed", Duration::from_secs(20), || async {
        count(&db, "select count(*) from public.usage_events").await == expected
    })
    .await;
    assert_eq!(
        count(&db, "select count(*) from public.usage_events").await,
        expected,
        "nothing twice"
    );
}
