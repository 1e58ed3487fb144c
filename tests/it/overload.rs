//! Overload: beyond the concurrency limit requests are refused at once, by
//! the gate, with a retryable answer instead of queueing behind the slow
//! ones; a standing queue lowers the limit, and it recovers.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use switchboard::{
    api::overload::Refusal,
    config::ServeConfig,
    proto::{call_router_client::CallRouterClient, LookupNumberRequest, LookupNumberResponse},
};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::helpers::{
    eventually, metric,
    raw_h2::{h2_frame, lookup_headers, request_body, Frames, RawH2, END_HEADERS, HEADERS},
    reason, spawn_seeded_app_via, spawn_seeded_app_with, PrivateBouncer, Stack, TestApp,
};

fn lookup(number: String) -> LookupNumberRequest {
    LookupNumberRequest {
        number,
        default_region: String::new(),
    }
}

/// The gate's refusal: `UNAVAILABLE`, for the reason `overloaded`.
fn assert_overloaded(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(status), "overloaded");
}

/// Lookups the daemon at `admin` refused for having waited too long.
async fn shed_for_waiting(admin: std::net::SocketAddr) -> f64 {
    metric(
        admin,
        r#"switchboard_grpc_shed_total{rpc="LookupNumber",reason="queue_delay"}"#,
    )
    .await
}

/// `admitted` requests at once, each waiting for the (paused) database as
/// long as it takes, for a connection too; no warm start, so no directory:
/// numbers nobody provisioned need the database.
fn held_by_the_database(c: &mut ServeConfig, admitted: usize) {
    c.grpc.max_in_flight = admitted;
    c.database.db_query_timeout = Duration::from_secs(30);
    c.database.db_pool_wait = Duration::from_secs(30);
    c.database.db_connect_timeout = Duration::from_secs(30);
    c.grpc.request_timeout = Duration::from_secs(30);
    c.cache.cache_warm_limit = 0;
}

#[tokio::test(flavor = "multi_thread")]
async fn excess_requests_are_shed_at_once_while_admitted_ones_wait() {
    const ADMITTED: usize = 4;
    const SENT: usize = 40;
    let stack = Stack::from_env();
    let bouncer = PrivateBouncer::start(&stack).await;
    let app = spawn_seeded_app_via(bouncer.port, |c| held_by_the_database(c, ADMITTED)).await;
    // every request needs the (paused) database: unknown numbers, all different
    bouncer.admin(&format!("PAUSE {}", app.db_name)).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..SENT)
        .map(|i| {
            let mut client = app.client.clone();
            let finished = finished.clone();
            tokio::spawn(async move {
                let answer = client
                    .lookup_number(LookupNumberRequest {
                        number: format!("+1999555{i:04}"),
                        default_region: String::new(),
                    })
                    .await;
                // the order answers came back in
                (finished.fetch_add(1, Ordering::SeqCst), answer)
            })
        })
        .collect();
    eventually(
        "everything beyond the limit is answered",
        Duration::from_secs(20),
        || async { finished.load(Ordering::SeqCst) == SENT - ADMITTED },
    )
    .await;
    // over the limit, or (on a busy machine) queued past the delay
    let shed = shed_total(app.admin_addr).await;
    assert!(shed >= (SENT - ADMITTED) as f64, "{shed}");

    bouncer.admin(&format!("RESUME {}", app.db_name)).await;
    let mut shed = 0;
    for task in tasks {
        let (order, answer) = task.await.unwrap();
        match answer {
            Err(status) if reason(&status) == "overloaded" => {
                assert_eq!(status.code(), Code::Unavailable);
                assert!(
                    order < SENT - ADMITTED,
                    "shed before any admitted one finished"
                );
                shed += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::NotFound, "{status:?}");
                assert!(
                    order >= SENT - ADMITTED,
                    "admitted ones waited for the database"
                );
            }
            Ok(reply) => panic!("unknown numbers do not route: {reply:?}"),
        }
    }
    assert_eq!(shed, SENT - ADMITTED);
}

#[tokio::test]
async fn requests_that_waited_too_long_for_their_handler_are_shed() {
    // every request waits a little between arriving and its handler: with a
    // limit of one nanosecond, each is over it
    let app = spawn_seeded_app_with(|c| {
        c.grpc.max_queue_delay = Duration::from_nanos(1);
        c.grpc.queue_delay_target = Duration::from_nanos(1);
    })
    .await;
    let mut client = app.client.clone();
    for _ in 0..3 {
        let status = client
            .lookup_number(LookupNumberRequest {
                number: "+14155550100".into(),
                default_region: String::new(),
            })
            .await
            .expect_err("shed");
        assert_overloaded(&status);
    }
    assert!(shed_for_waiting(app.admin_addr).await >= 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_streams_are_reset_as_refused_and_health_is_never_gated() {
    const ADMITTED: usize = 2;
    const SENT: usize = 12;
    let stack = Stack::from_env();
    let bouncer = PrivateBouncer::start(&stack).await;
    let app = spawn_seeded_app_via(bouncer.port, |c| {
        held_by_the_database(c, ADMITTED);
        c.grpc.overload_refusal = Refusal::Reset;
    })
    .await;
    bouncer.admin(&format!("PAUSE {}", app.db_name)).await;
    let held = take_the_limit(&app, ADMITTED, refused_stream).await;
    for i in ADMITTED..SENT {
        let status = app
            .client
            .clone()
            .lookup_number(lookup(format!("+1999444{i:04}")))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(refused_stream(&status), "{status:?}");
    }
    // the server's health is answered while every slot is taken
    let mut health = HealthClient::new(app.channel());
    let serving = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answered")
        .into_inner();
    assert_eq!(serving.status(), ServingStatus::Serving);

    bouncer.admin(&format!("RESUME {}", app.db_name)).await;
    for task in held {
        let status = task.await.unwrap().expect_err("not provisioned");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
}

/// Takes every one of the `admitted` slots of `app`, whose database is
/// paused, with lookups that wait for it; returns them once a probe is
/// refused (as `refused` says). Each held lookup is sent again until it is
/// admitted: a probe may take its slot first, and is given up.
async fn take_the_limit(
    app: &TestApp,
    admitted: usize,
    refused: fn(&tonic::Status) -> bool,
) -> Vec<JoinHandle<Result<LookupNumberResponse, tonic::Status>>> {
    let held = (0..admitted)
        .map(|i| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                loop {
                    let answer = client
                        .lookup_number(lookup(format!("+1999444{i:04}")))
                        .await
                        .map(tonic::Response::into_inner);
                    if !matches!(&answer, Err(status) if refused(status)) {
                        return answer;
                    }
                }
            })
        })
        .collect();
    // (not /readyz: its database check waits for the paused pooler)
    eventually("the limit is taken", Duration::from_secs(10), || async {
        let mut client = app.client.clone();
        let probe = client.lookup_number(lookup("+19994449999".into()));
        let answer = tokio::time::timeout(Duration::from_millis(500), probe).await;
        matches!(answer, Ok(Err(status)) if refused(&status))
    })
    .await;
    held
}

/// Whether the stream was reset with `REFUSED_STREAM`.
fn refused_stream(status: &tonic::Status) -> bool {
    std::iter::successors(Some(status as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .find_map(|e| e.downcast_ref::<h2::Error>())
    .and_then(h2::Error::reason)
        == Some(h2::Reason::REFUSED_STREAM)
}

/// A flood far past what the CPU can answer within the target: the queue
/// stands, the limit falls and the excess is refused at once, every
/// answer is an answer or `overloaded` (no connection torn down), and once
/// the flood ends, requests are answered again and the queue is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_lowers_the_limit_and_the_daemon_recovers_when_it_ends() {
    const CLIENTS: usize = 256;
    let app = spawn_seeded_app_with(|c| {
        c.grpc.queue_delay_target = Duration::from_millis(1);
        c.grpc.max_queue_delay = Duration::from_millis(20);
    })
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut client = app.client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut answered, mut shed) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    match client.lookup_number(lookup("+14155550100".into())).await {
                        Ok(_) => answered += 1,
                        Err(status) if reason(&status) == "overloaded" => shed += 1,
                        Err(status) => panic!("only answers and refusals: {status:?}"),
                    }
                }
                (answered, shed)
            })
        })
        .collect();
    eventually(
        "the limit falls under the flood",
        Duration::from_secs(30),
        || async {
            let (_, ready) = app.admin_get("/readyz").await;
            let limit = ready
                .lines()
                .find_map(|l| l.strip_prefix("load: "))
                .and_then(|l| l.split("limit ").nth(1))
                .and_then(|l| l.split(' ').next())
                .and_then(|l| l.parse::<usize>().ok())
                .expect("a load line");
            limit < 1024
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (mut answered, mut shed) = (0, 0);
    for task in flood {
        let (a, s) = task.await.unwrap();
        answered += a;
        shed += s;
    }
    assert!(answered > 0 && shed > 0, "{answered} answered, {shed} shed");

    // after the flood, one at a time: answered, and the queue is gone
    let mut client = app.client.clone();
    for _ in 0..50 {
        client
            .lookup_number(lookup("+14155550100".into()))
            .await
            .expect("answered after the flood");
    }
    let app = &app;
    eventually("the queue is gone", Duration::from_secs(5), || {
        let mut client = client.clone();
        async move {
            client
                .lookup_number(lookup("+14155550100".into()))
                .await
                .expect("answered");
            let (_, ready) = app.admin_get("/readyz").await;
            !ready.contains("a queue stands")
        }
    })
    .await;
}

/// A request that sat in the socket while the daemon's threads were busy
/// waited as surely as one that sat in the runtime's queue: the gate sees
/// the wait from when the kernel received it, and refuses it once that is
/// past the budget, although its task then runs at once.
#[tokio::test]
async fn a_request_that_waited_in_the_socket_past_the_budget_is_refused() {
    let budget = Duration::from_millis(100);
    let app = spawn_seeded_app_with(|c| {
        c.grpc.max_queue_delay = budget;
        c.grpc.queue_delay_target = budget;
    })
    .await;
    let addr = app.grpc_addr;
    let (connected, ready) = tokio::sync::oneshot::channel();
    let (send, sent) = std::sync::mpsc::channel::<()>();
    let (answered, answer) = tokio::sync::oneshot::channel();
    let client = on_a_thread_of_its_own(async move {
        let mut client = CallRouterClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let number = || lookup("+14155550100".into());
        // answered while nothing waits; then the daemon's connection
        // task waits on the socket
        let _ = connected.send(client.lookup_number(number()).await);
        sent.recv().unwrap();
        let _ = answered.send(client.lookup_number(number()).await);
    });
    let warm = ready.await.unwrap();
    assert!(warm.is_ok(), "answered while nothing waits: {warm:?}");
    send.send(()).unwrap();
    // the daemon's only thread held past the budget while the request
    // sits in its socket
    std::thread::sleep(budget * 2);
    let status = answer
        .await
        .unwrap()
        .expect_err("waited past the budget in the socket");
    client.join().unwrap();
    assert_overloaded(&status);
    assert!(shed_for_waiting(app.admin_addr).await >= 1.0);
}

/// A gateway's connection survives any number of refusals, however its
/// requests' frames arrive. Each request here is sent as a client that
/// is slow to finish it would send it: its HEADERS first, then, once the
/// server has read them (a PING answered after them), its message and
/// END_STREAM. A stream let go before the request's end is reset by h2 and
/// soon forgotten; the DATA arriving then is a protocol error h2 counts,
/// and past 1 024 it closes the connection (`too_many_internal_resets`).
/// So a refused request is read to its end before its stream is let go:
/// every one is refused, nothing is reset and the connection stays open.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_never_reset_a_stream_nor_close_the_connection() {
    const ROUNDS: u32 = 12;
    const PER_ROUND: u32 = 100;
    let stack = Stack::from_env();
    let bouncer = PrivateBouncer::start(&stack).await;
    let app = spawn_seeded_app_via(bouncer.port, |c| held_by_the_database(c, 1)).await;
    bouncer.admin(&format!("PAUSE {}", app.db_name)).await;
    let held = take_the_limit(&app, 1, |status| reason(status) == "overloaded").await;
    let shed_before = shed_total(app.admin_addr).await;

    let mut wire = RawH2::connect(app.grpc_addr).await;
    let mut seen = Frames::default();
    let mut stream = 1;
    for round in 0..ROUNDS {
        let streams: Vec<u32> = (0..PER_ROUND).map(|i| stream + 2 * i).collect();
        stream += 2 * PER_ROUND;
        let mut bytes = Vec::new();
        for &id in &streams {
            bytes.extend(h2_frame(HEADERS, END_HEADERS, id, &lookup_headers(id == 1)));
        }
        wire.send_then_ping(bytes, &mut seen).await;
        assert!(seen.go_away.is_none(), "round {round}: {:?}", seen.go_away);
        let mut bytes = Vec::new();
        for &id in &streams {
            bytes.extend(request_body(id));
        }
        wire.send_then_ping(bytes, &mut seen).await;
        assert!(seen.go_away.is_none(), "round {round}: {:?}", seen.go_away);
    }
    let sent = (ROUNDS * PER_ROUND) as usize;
    // the last round's answers may follow its PING
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen.answered < sent && seen.go_away.is_none() {
            wire.read_frame(&mut seen).await;
        }
    })
    .await
    .expect("every request answered");
    assert!(seen.go_away.is_none(), "{:?}", seen.go_away);
    assert_eq!(seen.answered, sent);
    assert_eq!(seen.resets, 0, "streams were reset");
    assert!(shed_total(app.admin_addr).await - shed_before >= sent as f64);

    bouncer.admin(&format!("RESUME {}", app.db_name)).await;
    for task in held {
        let status = task.await.unwrap().expect_err("not provisioned");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
}

/// Lookups refused at the gate, for either reason.
async fn shed_total(admin: std::net::SocketAddr) -> f64 {
    let mut total = 0.0;
    for reason in ["concurrency", "queue_delay"] {
        let series =
            format!(r#"switchboard_grpc_shed_total{{rpc="LookupNumber",reason="{reason}"}}"#);
        total += metric(admin, &series).await;
    }
    total
}

/// h2 closes a connection whose small DATA frames, held unread, cost more
/// than half its receive window (`too_many_data_frames`). Requests that
/// reach a daemon too busy to read them arrive together, and h2 reads them
/// all before any stream's task runs: each unread message is such a frame.
/// Thousands of them on one connection, sent while the daemon's only
/// thread is held, are all answered, and the connection stays open.
#[tokio::test]
async fn a_connection_with_thousands_of_requests_waiting_stays_open() {
    const REQUESTS: u32 = 3000;
    let app = spawn_seeded_app_with(|c| {
        // answered, however long they waited: this is about the connection
        c.grpc.max_queue_delay = Duration::from_secs(30);
        c.grpc.queue_delay_target = Duration::from_secs(30);
        c.grpc.request_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = app.grpc_addr;
    let (handshaken, connected) = tokio::sync::oneshot::channel();
    let (sent, written) = std::sync::mpsc::channel();
    let (finished, seen) = tokio::sync::oneshot::channel();
    let client = on_a_thread_of_its_own(async move {
        let mut wire = RawH2::connect(addr).await;
        let mut seen = Frames::default();
        wire.send_then_ping(Vec::new(), &mut seen).await;
        handshaken.send(()).unwrap();
        let mut bytes = Vec::new();
        for i in 0..REQUESTS {
            let id = 2 * i + 1;
            bytes.extend(h2_frame(HEADERS, END_HEADERS, id, &lookup_headers(i == 0)));
            bytes.extend(request_body(id));
        }
        tokio::io::AsyncWriteExt::write_all(&mut wire.0, &bytes)
            .await
            .unwrap();
        sent.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), async {
            while seen.answered < REQUESTS as usize && seen.go_away.is_none() {
                wire.read_frame(&mut seen).await;
            }
        })
        .await
        .expect("answered or closed");
        let _ = finished.send(seen);
    });
    connected.await.unwrap();
    // the daemon's only thread is held until every request is in its socket
    written
        .recv_timeout(Duration::from_secs(30))
        .expect("every request written");
    let seen = seen.await.unwrap();
    client.join().unwrap();
    assert!(seen.go_away.is_none(), "{:?}", seen.go_away);
    assert_eq!(seen.answered, REQUESTS as usize);
    assert_eq!(seen.resets, 0);
}

/// Runs a client on a thread and runtime of its own, for a test whose own
/// thread runs the daemon and is about to be held.
fn on_a_thread_of_its_own(
    client: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(client)
    })
}
