//! Overload: beyond `SWITCHBOARD_MAX_IN_FLIGHT` requests are refused at once
//! with a retryable status instead of queueing behind the slow ones.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use switchboard::proto::LookupNumberRequest;
use tonic::Code;

use crate::helpers::{
    eventually, metric, reason, spawn_seeded_app_via, spawn_seeded_app_with, PrivateBouncer, Stack,
};

#[tokio::test(flavor = "multi_thread")]
async fn excess_requests_are_shed_at_once_while_admitted_ones_wait() {
    const ADMITTED: usize = 4;
    const SENT: usize = 40;
    let stack = Stack::from_env();
    let bouncer = PrivateBouncer::start(&stack).await;
    let app = spawn_seeded_app_via(bouncer.port, |c| {
        c.grpc.max_in_flight = ADMITTED;
        // the admitted requests wait for the database as long as it takes
        c.database.db_query_timeout = Duration::from_secs(30);
        c.grpc.request_timeout = Duration::from_secs(30);
    })
    .await;
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
    // at the in-flight limit, or (on a busy machine) queued past the delay
    let mut shed_total = 0.0;
    for reason in ["in_flight", "queue_delay"] {
        let series =
            format!(r#"switchboard_grpc_shed_total{{rpc="LookupNumber",reason="{reason}"}}"#);
        shed_total += metric(app.admin_addr, &series).await;
    }
    assert!(shed_total >= (SENT - ADMITTED) as f64, "{shed_total}");

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
    let app = spawn_seeded_app_with(|c| c.grpc.max_queue_delay = Duration::from_nanos(1)).await;
    let mut client = app.client.clone();
    for _ in 0..3 {
        let status = client
            .lookup_number(LookupNumberRequest {
                number: "+14155550100".into(),
                default_region: String::new(),
            })
            .await
            .expect_err("shed");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(reason(&status), "overloaded");
    }
    assert!(
        metric(
            app.admin_addr,
            r#"switchboard_grpc_shed_total{rpc="LookupNumber",reason="queue_delay"}"#
        )
        .await
            >= 3.0
    );
}
