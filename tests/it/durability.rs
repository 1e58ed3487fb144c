//! Durable RPCs (`EndCall`, `RecordUsage`) under faults: each is either
//! acknowledged (committed or spooled) or refused within its deadline; a
//! refusal has no effect at all (no event lands later, no slot is freed);
//! and a full spool drains at batch speed once PostgreSQL is back.

use std::time::Duration;

use futures::{future::join_all, stream, StreamExt};
use switchboard::{
    admission::AdmissionMode,
    config::ServeConfig,
    proto::{call_router_client::CallRouterClient, ExplainRouteRequest},
};
use tonic::{transport::Channel, Code, Status};

use crate::helpers::{
    count, end_request, eventually, reason, route_request, spawn_seeded_app_via,
    spawn_seeded_app_with, usage_request, PrivateBouncer, Stack, TestApp,
};

const GLOBEX: &str = "+13125550100";

/// Enough slots that only the leases held decide the count, and no
/// fail-open on a loaded machine: the subject is exactness, not latency.
fn exact_admission(c: &mut ServeConfig) {
    c.admission.admission_timeout = Duration::from_secs(2);
    c.admission.limit_starter = 10_000;
    c.admission.limit_pro = 10_000;
    c.admission.limit_enterprise = 10_000;
}

/// Routes `calls` calls at once: their call ids. Routing never waits for
/// the recorder.
async fn route_calls(app: &TestApp, calls: usize, tag: &str) -> Vec<String> {
    join_all((0..calls).map(|i| {
        let mut client = app.client.clone();
        async move {
            client
                .route_call(route_request(GLOBEX, &format!("{tag}-{i}")))
                .await
                .expect("routed")
                .into_inner()
                .call_id
        }
    }))
    .await
}

/// Routes `calls` calls while PostgreSQL answers and waits until their
/// records have landed, so that what a test spools later is only theirs.
async fn routed_calls(app: &TestApp, calls: usize, tag: &str) -> Vec<String> {
    let ids = route_calls(app, calls, tag).await;
    let db = app.direct().await;
    let expected = calls as i64;
    eventually("the opens landed", Duration::from_secs(10), || async {
        count(&db, "select count(*) from public.calls").await == expected
    })
    .await;
    ids
}

/// Slots held by GLOBEX's calls, as ExplainRoute counts them.
async fn active_calls(client: &CallRouterClient<Channel>) -> u32 {
    leases(client).await.expect("admission counts leases")
}

/// The same, `None` when Redis could not be asked.
async fn leases(client: &CallRouterClient<Channel>) -> Option<u32> {
    client
        .clone()
        .explain_route(ExplainRouteRequest {
            number: GLOBEX.into(),
            default_region: String::new(),
            caller_number: String::new(),
        })
        .await
        .expect("explained from the cached route")
        .into_inner()
        .admission
        .and_then(|admission| admission.active_calls)
}

/// A refusal that is a clear answer, not a deadline run out.
fn refused_in_time(status: &Status) -> bool {
    !matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled)
        && reason(status) != "deadline"
}

/// Sends one usage report per key, `concurrency` at a time, each with a
/// client deadline of `deadline`: the keys acknowledged, and the refusals.
async fn report_usage(
    app: &TestApp,
    call_id: &str,
    keys: Vec<String>,
    concurrency: usize,
    deadline: Option<Duration>,
) -> (Vec<String>, Vec<(String, Status)>) {
    let results: Vec<(String, Result<(), Status>)> = stream::iter(keys)
        .map(|key| {
            let mut client = app.client.clone();
            let mut request =
                tonic::Request::new(usage_request(call_id, &key, &[("llm_tokens_in", 1.0)]));
            if let Some(deadline) = deadline {
                request.set_timeout(deadline);
            }
            async move { (key, client.record_usage(request).await.map(drop)) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for (key, result) in results {
        match result {
            Ok(()) => acknowledged.push(key),
            Err(status) => refused.push((key, status)),
        }
    }
    (acknowledged, refused)
}

/// Usage rows recorded for `call_id`.
async fn usage_rows(db: &tokio_postgres::Client, call_id: &str) -> i64 {
    count(
        db,
        &format!("select count(*) from public.usage_events where call_id = '{call_id}'"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_end_call_keeps_its_slot_and_nothing_refused_lands_later() {
    const CALLS: usize = 100;
    let stack = Stack::from_env();
    let mut bouncer = PrivateBouncer::start(&stack).await;
    let mut app = spawn_seeded_app_via(bouncer.port, |c| {
        exact_admission(c);
        c.spool.spool_max_bytes = 8192;
        c.spool.spool_segment_bytes = 8192;
        c.recorder.recorder_write_timeout = Duration::from_millis(500);
        c.recorder.recorder_retry_interval = Duration::from_millis(100);
    })
    .await;
    let db = app.direct().await;
    // a daemon serves before its Redis connection is up, admitting without
    // a lease meanwhile (its policy): this test counts leases
    eventually(
        "admission reaches Redis",
        Duration::from_secs(10),
        || async { leases(&app.client).await.is_some() },
    )
    .await;
    let call_ids = routed_calls(&app, CALLS, "ended").await;
    assert_eq!(active_calls(&app.client).await, CALLS as u32);

    bouncer.kill();
    // usage fills the spool until it refuses
    let mut usage_acknowledged = 0;
    for i in 0.. {
        match app
            .client
            .record_usage(usage_request(
                &call_ids[0],
                &format!("fill-{i}"),
                &[("stt_seconds", 1.0)],
            ))
            .await
        {
            Ok(_) => usage_acknowledged += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "spool_full");
                break;
            }
        }
    }
    assert!(
        usage_acknowledged > 0,
        "the spool took events until it was full"
    );

    // every call ends at once, and more usage comes in, with the spool full
    let ends = join_all(call_ids.iter().map(|call_id| {
        let mut client = app.client.clone();
        async move { client.end_call(end_request(call_id)).await.map(drop) }
    }));
    let usage = report_usage(
        &app,
        &call_ids[1],
        (0..CALLS).map(|i| format!("wave-{i}")).collect(),
        CALLS,
        None,
    );
    let (ends, (usage_ok, usage_refused)) = tokio::join!(ends, usage);
    usage_acknowledged += usage_ok.len();
    let ended: Vec<&String> = call_ids
        .iter()
        .zip(&ends)
        .filter_map(|(id, result)| result.is_ok().then_some(id))
        .collect();
    let refused_ends: Vec<&Status> = ends.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!refused_ends.is_empty(), "a full spool refuses EndCall");
    for status in refused_ends
        .iter()
        .copied()
        .chain(usage_refused.iter().map(|(_, status)| status))
    {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason(status), "spool_full");
    }
    assert_eq!(
        active_calls(&app.client).await,
        refused_ends.len() as u32,
        "a refused EndCall leaves its call's slot held; an acknowledged one frees it"
    );

    bouncer.resume_process().await;
    // a report taken after PostgreSQL is back is written behind everything
    // the recorder still held: once it has landed, so has all that was to
    let after = &call_ids[2];
    eventually("reports are taken again", Duration::from_secs(20), || {
        let mut client = app.client.clone();
        async move {
            client
                .record_usage(usage_request(after, "after", &[("stt_seconds", 1.0)]))
                .await
                .is_ok()
        }
    })
    .await;
    eventually(
        "the acknowledged usage landed",
        Duration::from_secs(20),
        || async { usage_rows(&db, after).await == 1 },
    )
    .await;
    let usage = count(
        &db,
        &format!(
            "select count(*) from public.usage_events where call_id in ('{}', '{}')",
            call_ids[0], call_ids[1]
        ),
    )
    .await;
    assert_eq!(
        usage, usage_acknowledged as i64,
        "every acknowledged report landed, and no refused one"
    );
    let completed = count(
        &db,
        "select count(*) from public.calls where ended_at is not null",
    )
    .await;
    assert_eq!(
        completed,
        ended.len() as i64,
        "exactly the acknowledged ends landed"
    );

    // the gateway retries the refused ends: now they land and free the slots
    for (call_id, result) in call_ids.iter().zip(&ends) {
        if result.is_err() {
            app.client.end_call(end_request(call_id)).await.unwrap();
        }
    }
    assert_eq!(active_calls(&app.client).await, 0);
    assert_eq!(
        count(
            &db,
            "select count(*) from public.calls where ended_at is not null"
        )
        .await,
        CALLS as i64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_drains_at_batch_speed_once_the_database_returns() {
    // A retry interval far longer than a replay: draining one chunk per
    // interval would take one interval per chunk, dozens of them.
    const RETRY: Duration = Duration::from_secs(3);
    const BATCH: usize = 20;
    let stack = Stack::from_env();
    let mut bouncer = PrivateBouncer::start(&stack).await;
    let app = spawn_seeded_app_via(bouncer.port, |c| {
        c.admission.admission_mode = AdmissionMode::Off;
        // one segment: room comes back only once all of it is replayed
        c.spool.spool_max_bytes = 64 * 1024;
        c.spool.spool_segment_bytes = 64 * 1024;
        c.recorder.recorder_batch_size = BATCH;
        c.recorder.recorder_write_timeout = Duration::from_millis(500);
        c.recorder.recorder_retry_interval = RETRY;
    })
    .await;
    let db = app.direct().await;
    let call_id = routed_calls(&app, 1, "drain").await.remove(0);

    bouncer.kill();
    let mut acknowledged = 0;
    for wave in 0.. {
        let keys = (0..50).map(|i| format!("fill-{wave}-{i}")).collect();
        let (ok, refused) = report_usage(&app, &call_id, keys, 50, None).await;
        acknowledged += ok.len();
        if !refused.is_empty() {
            break;
        }
    }
    // calls routed now are acknowledged already: the recorder holds their
    // opens in memory until the spool has room
    assert_eq!(route_calls(&app, 10, "held").await.len(), 10);
    assert!(
        acknowledged >= 10 * BATCH,
        "the spool holds many chunks: {acknowledged} events"
    );

    bouncer.resume_process().await;
    // The next attempt comes within one retry interval; from there the whole
    // spool is replayed chunk after chunk, and reports are taken again, well
    // before the next one. (Counted in this test's own rows: the metrics
    // registry is shared by every test in the binary.)
    let after = usage_request(&call_id, "after", &[("stt_seconds", 1.0)]);
    eventually(
        "the whole spool replayed, and reports taken again, within two retry intervals",
        2 * RETRY,
        || {
            let (db, mut client, after) = (&db, app.client.clone(), after.clone());
            let call_id = &call_id;
            async move {
                usage_rows(db, call_id).await >= acknowledged as i64
                    && client.record_usage(after).await.is_ok()
            }
        },
    )
    .await;
    eventually("everything landed", Duration::from_secs(10), || async {
        count(&db, "select count(*) from public.calls").await == 11
            && usage_rows(&db, &call_id).await == acknowledged as i64 + 1
    })
    .await;
    assert_eq!(usage_rows(&db, &call_id).await, acknowledged as i64 + 1);
}

/// How a test takes the database away from under a running load.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The pooler holds every query, as in front of a database that died.
    Frozen,
    /// The pooler is gone: every connection drops.
    Killed,
}

/// 3 waves of 150 concurrent `RecordUsage` with a one-second deadline while
/// the pooler is frozen or killed: each is acknowledged or refused in time,
/// and afterwards exactly the acknowledged ones have landed.
async fn durable_rpcs_answer_within_their_deadline(fault: Fault) {
    const WAVE: usize = 150;
    let stack = Stack::from_env();
    let mut bouncer = PrivateBouncer::start(&stack).await;
    // the defaults that matter: a 2 s write timeout, a 1 s request cap
    let app = spawn_seeded_app_via(bouncer.port, |c| {
        c.admission.admission_mode = AdmissionMode::Off;
    })
    .await;
    let db = app.direct().await;
    let call_id = routed_calls(&app, 1, "deadline").await.remove(0);
    let (warm, _) = report_usage(
        &app,
        &call_id,
        (0..WAVE).map(|i| format!("warm-{i}")).collect(),
        WAVE,
        None,
    )
    .await;
    assert_eq!(
        warm.len(),
        WAVE,
        "everything is taken while the database is up"
    );

    match fault {
        Fault::Frozen => bouncer.admin("PAUSE").await,
        Fault::Killed => bouncer.kill(),
    }
    let mut acknowledged = warm.len();
    let mut late = Vec::new();
    for wave in 0..3 {
        let keys = (0..WAVE).map(|i| format!("{wave}-{i}")).collect();
        let (ok, refused) =
            report_usage(&app, &call_id, keys, WAVE, Some(Duration::from_secs(1))).await;
        acknowledged += ok.len();
        late.extend(refused.into_iter().filter(|(_, s)| !refused_in_time(s)));
    }
    assert!(
        late.is_empty(),
        "{fault:?}: {} reports were not answered within their deadline, e.g. {:?}",
        late.len(),
        late.first()
    );

    match fault {
        Fault::Frozen => bouncer.admin("RESUME").await,
        Fault::Killed => bouncer.resume_process().await,
    }
    let mut client = app.client.clone();
    let after = usage_request(&call_id, "after", &[("stt_seconds", 1.0)]);
    eventually("reports are taken again", Duration::from_secs(20), || {
        let mut client = client.clone();
        let after = after.clone();
        async move { client.record_usage(after).await.is_ok() }
    })
    .await;
    // written behind everything acknowledged before it
    eventually(
        "the acknowledged reports landed",
        Duration::from_secs(20),
        || async { usage_rows(&db, &call_id).await > acknowledged as i64 },
    )
    .await;
    assert_eq!(
        usage_rows(&db, &call_id).await,
        acknowledged as i64 + 1,
        "{fault:?}: exactly the acknowledged reports landed"
    );
    client.record_usage(after).await.expect("idempotent");
}

#[tokio::test(flavor = "multi_thread")]
async fn durable_rpcs_answer_within_their_deadline_while_the_pooler_is_frozen() {
    durable_rpcs_answer_within_their_deadline(Fault::Frozen).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn durable_rpcs_answer_within_their_deadline_when_the_pooler_dies() {
    durable_rpcs_answer_within_their_deadline(Fault::Killed).await;
}

#[tokio::test]
async fn a_durable_rpc_is_written_without_waiting_for_its_batch_to_fill() {
    // a call's opening may wait 60 s for company; an end or a usage report,
    // which its gateway waits for, must not wait with it
    let app = spawn_seeded_app_with(|c| {
        c.recorder.recorder_flush_interval = Duration::from_secs(60);
        c.grpc.request_timeout = Duration::from_secs(60);
    })
    .await;
    let mut client = app.client.clone();
    let call_id = client
        .route_call(route_request(GLOBEX, "lonely-call"))
        .await
        .expect("routed")
        .into_inner()
        .call_id;
    let started = std::time::Instant::now();
    let mut usage = tonic::Request::new(usage_request(&call_id, "u1", &[("call_seconds", 3.0)]));
    usage.set_timeout(Duration::from_secs(50));
    client.record_usage(usage).await.expect("usage recorded");
    let mut end = tonic::Request::new(end_request(&call_id));
    end.set_timeout(Duration::from_secs(50));
    client.end_call(end).await.expect("end recorded");
    // written at once, the waiting call-opened event with them; a batch
    // that waited for its interval or its deadline would take 45 s or more
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let db = app.direct().await;
    let ended = count(
        &db,
        "select count(*) from public.calls where ended_at is not null and agent_id is not null",
    )
    .await;
    assert_eq!(ended, 1, "the call's row, opened and ended");
}

#[tokio::test]
async fn with_several_writers_an_end_call_is_committed_while_an_earlier_batch_waits() {
    // one call's row is locked, so the batch that ends it waits on the lock;
    // with more than one writer, the ends of twenty other calls must not
    // queue behind it: each goes to a free writer and is committed (not
    // spooled) while it waits
    let app = spawn_seeded_app_with(|c| {
        exact_admission(c);
        c.grpc.request_timeout = Duration::from_secs(60);
        c.recorder.recorder_write_timeout = Duration::from_secs(60);
        c.recorder.recorder_writers = 4;
    })
    .await;
    let ids = routed_calls(&app, 21, "overtaken").await;
    let (blocked, others) = ids.split_first().unwrap();

    let locker = app.direct().await;
    locker.batch_execute("begin").await.unwrap();
    locker
        .execute(
            "select 1 from public.calls where id = $1::text::uuid for update",
            &[blocked],
        )
        .await
        .unwrap();
    let mut client = app.client.clone();
    let mut end = tonic::Request::new(end_request(blocked));
    end.set_timeout(Duration::from_secs(50));
    let blocked_end = tokio::spawn(async move { client.end_call(end).await });
    let db = app.direct().await;
    eventually(
        "the first end waits on the lock",
        Duration::from_secs(10),
        || async {
            count(
                &db,
                "select count(*) from pg_stat_activity
              where wait_event_type = 'Lock' and query like '%switchboard.write_events%'",
            )
            .await
                == 1
        },
    )
    .await;

    let ends = join_all(others.iter().map(|id| {
        let mut client = app.client.clone();
        let mut end = tonic::Request::new(end_request(id));
        end.set_timeout(Duration::from_secs(30));
        async move { client.end_call(end).await }
    }))
    .await;
    for end in ends {
        end.expect("acknowledged while an earlier batch waits");
    }
    let ended = count(
        &db,
        "select count(*) from public.calls where ended_at is not null",
    )
    .await;
    assert_eq!(ended, 20, "the twenty ends are committed, not only spooled");
    assert!(!blocked_end.is_finished(), "the first end still waits");

    locker.batch_execute("commit").await.unwrap();
    blocked_end
        .await
        .unwrap()
        .expect("the first end is acknowledged once the lock is gone");
    let ended = count(
        &db,
        "select count(*) from public.calls where ended_at is not null",
    )
    .await;
    assert_eq!(ended, 21);
}
