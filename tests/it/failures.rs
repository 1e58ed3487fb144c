//! Bad input and dead dependencies: each has a defined answer, in bounded
//! time, and the daemon recovers by itself.

use std::time::Duration;

use switchboard::proto::{LookupNumberRequest, RouteCallRequest};
use tonic::{Code, Request};

use crate::helpers::{
    eventually, reason, route_request as route_request_from, spawn_seeded_app,
    spawn_seeded_app_via, spawn_seeded_app_with, PrivateBouncer, Stack,
};

fn route_request(called: &str, gateway_call_id: &str, region: &str) -> RouteCallRequest {
    RouteCallRequest {
        default_region: region.into(),
        ..route_request_from(called, gateway_call_id)
    }
}

#[tokio::test]
async fn malformed_requests_are_invalid_argument_with_a_reason() {
    let mut app = spawn_seeded_app().await;
    let long = "1".repeat(300);
    let cases = [
        (
            route_request("", "gw-1", ""),
            "called_number is empty",
            "invalid_number",
        ),
        (
            route_request("hello", "gw-1", "US"),
            "called_number is not a phone number",
            "invalid_number",
        ),
        (
            route_request("(415) 555-0100", "gw-1", ""),
            "no default_region",
            "invalid_number",
        ),
        (
            route_request(&long, "gw-1", ""),
            "longer than 256 bytes",
            "invalid_number",
        ),
        (
            route_request("+14155550100", "gw-1", "ZZ"),
            "default_region is not a valid",
            "invalid_region",
        ),
        (
            route_request("+14155550100", "", ""),
            "gateway_call_id is empty",
            "invalid_gateway_call_id",
        ),
        (
            route_request("+14155550100", &"x".repeat(300), ""),
            "gateway_call_id is longer",
            "invalid_gateway_call_id",
        ),
    ];
    for (request, message, expected_reason) in cases {
        let status = app
            .client
            .route_call(request.clone())
            .await
            .expect_err(message);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        assert!(
            status.message().contains(message),
            "{:?} lacks {message:?}",
            status.message()
        );
        assert_eq!(reason(&status), expected_reason);
    }
    let status = app
        .client
        .lookup_number(LookupNumberRequest {
            number: "+1".into(),
            default_region: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("number "),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn oversized_messages_are_rejected_and_the_daemon_carries_on() {
    let mut app = spawn_seeded_app().await;
    let huge = route_request(&"9".repeat(64 * 1024), "gw-huge", "");
    let status = app.client.route_call(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let ok = app
        .client
        .route_call(route_request("+14155550100", "gw-ok", ""))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

fn lookup(number: &str, timeout: Duration) -> Request<LookupNumberRequest> {
    let mut request = Request::new(LookupNumberRequest {
        number: number.into(),
        default_region: String::new(),
    });
    request.set_timeout(timeout);
    request
}

/// Cached before the outage.
const CACHED: &str = "+14155550100";
/// Never looked up before the outage.
const UNCACHED: &str = "+14155550142";

#[tokio::test]
async fn dead_pooler_serves_cached_routes_answers_unavailable_for_others_then_recovers() {
    let stack = Stack::from_env();
    let mut bouncer = PrivateBouncer::start(&stack).await;
    let port = bouncer.port;
    let mut app = spawn_seeded_app_via(port, |config| {
        config.database.db_query_timeout = Duration::from_millis(250);
        config.cache.cache_warm_limit = 0; // keep UNCACHED uncached
    })
    .await;
    let deadline = Duration::from_millis(500);
    app.client
        .lookup_number(lookup(CACHED, deadline))
        .await
        .expect("healthy before the outage");

    bouncer.kill();
    let cached = app.client.lookup_number(lookup(CACHED, deadline)).await;
    assert!(
        cached.is_ok(),
        "a cached route is served without the database: {cached:?}"
    );
    let status = app
        .client
        .lookup_number(lookup(UNCACHED, deadline))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "database_unavailable");
    // it can still route what it holds: ready, and says it is degraded
    let (code, body) = app.admin_get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ready, degraded"), "{body}");
    assert!(body.contains("database: "), "{body}");

    bouncer.resume_process().await;
    let client = app.client.clone();
    eventually(
        "routing recovers after the pooler returns",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move {
                client
                    .lookup_number(lookup(UNCACHED, deadline))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    assert_eq!(app.admin_get("/readyz").await.0, 200);
}

#[tokio::test]
async fn hung_database_answers_unavailable_before_the_client_deadline() {
    let stack = Stack::from_env();
    let bouncer = PrivateBouncer::start(&stack).await;
    let port = bouncer.port;
    // A query timeout longer than the client's deadline: the request
    // deadline alone must bound the wait.
    let mut app = spawn_seeded_app_via(port, |config| {
        config.database.db_query_timeout = Duration::from_secs(5);
        config.cache.cache_warm_limit = 0; // keep UNCACHED uncached
    })
    .await;
    app.client
        .lookup_number(lookup(CACHED, Duration::from_secs(1)))
        .await
        .expect("healthy first");

    // PAUSE: PgBouncer keeps accepting queries but holds them, as a pooler
    // in front of an unreachable or locked-up database does.
    bouncer.admin(&format!("PAUSE {}", app.db_name)).await;
    // (deadlines leave the server 10% headroom: keep them large enough
    // that a loaded test machine still delivers the answer in it)
    for deadline in [Duration::from_millis(500), Duration::from_millis(1000)] {
        let status = app
            .client
            .lookup_number(lookup(UNCACHED, deadline))
            .await
            .unwrap_err();
        // UNAVAILABLE is the server's answer, so it arrived within the
        // deadline: had the client given up first, it would report
        // DEADLINE_EXCEEDED or CANCELLED instead.
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "deadline {deadline:?}: {status:?}"
        );
        assert_eq!(reason(&status), "deadline");
    }
    let cached = app
        .client
        .lookup_number(lookup(CACHED, Duration::from_millis(500)))
        .await;
    assert!(
        cached.is_ok(),
        "cached routes do not wait for the database: {cached:?}"
    );

    bouncer.admin(&format!("RESUME {}", app.db_name)).await;
    let client = app.client.clone();
    eventually(
        "routing recovers after RESUME",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move {
                client
                    .lookup_number(lookup(UNCACHED, Duration::from_secs(1)))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
}

/// Sends raw bytes as a gRPC message: what a broken or hostile client can.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[tokio::test]
async fn garbage_and_mutated_messages_get_a_status_and_the_daemon_carries_on() {
    use proptest::{
        collection::vec,
        prelude::*,
        strategy::{Strategy, ValueTree},
        test_runner::TestRunner,
    };
    use prost::Message;

    // mutated requests that still parse open calls: no limit to run into
    let mut app = spawn_seeded_app_with(|c| {
        c.admission.admission_mode = switchboard::admission::AdmissionMode::Off
    })
    .await;
    let valid = route_request("+14155550100", "gw-fuzz", "").encode_to_vec();
    let mut runner = TestRunner::deterministic();
    let garbage = vec(any::<u8>(), 0..512);
    let flips = vec((0..valid.len(), any::<u8>()), 1..8);
    let mut grpc = tonic::client::Grpc::new(app.channel());
    for round in 0..300 {
        let body = if round % 2 == 0 {
            garbage.new_tree(&mut runner).unwrap().current()
        } else {
            let mut mutated = valid.clone();
            for (at, byte) in flips.new_tree(&mut runner).unwrap().current() {
                mutated[at] = byte;
            }
            mutated
        };
        for path in [
            "/switchboard.v1.CallRouter/RouteCall",
            "/switchboard.v1.CallRouter/EndCall",
            "/switchboard.v1.CallRouter/RecordUsage",
        ] {
            grpc.ready()
                .await
                .expect("the daemon still accepts requests");
            let mut request = tonic::Request::new(body.clone());
            request.set_timeout(Duration::from_secs(5));
            let answer = grpc
                .unary(
                    request,
                    http::uri::PathAndQuery::from_static(path),
                    RawCodec,
                )
                .await;
            if let Err(status) = answer {
                // a refusal the client can act on, never a crash or a hang
                assert!(
                    !matches!(
                        status.code(),
                        Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                    ),
                    "{path} {body:?}: {status:?}"
                );
            }
        }
    }
    app.client
        .route_call(route_request("+14155550100", "gw-after-fuzz", ""))
        .await
        .expect("well-formed requests still route");
}
