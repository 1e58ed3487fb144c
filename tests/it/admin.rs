//! The admin listener: liveness, readiness, Prometheus metrics.

use switchboard::proto::LookupNumberRequest;

use crate::helpers::spawn_seeded_app;

#[tokio::test]
async fn livez_and_readyz_answer_when_healthy() {
    let app = spawn_seeded_app().await;
    assert_eq!(app.admin_get("/livez").await.0, 200);
    let (code, body) = app.admin_get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("database: ok"), "{body}");
    assert_eq!(app.admin_get("/nope").await.0, 404);
}

#[tokio::test]
async fn metrics_count_requests_by_rpc_and_code_with_real_histograms() {
    let mut app = spawn_seeded_app().await;
    for number in ["+14155550100", "+19995550000"] {
        let _ = app
            .client
            .lookup_number(LookupNumberRequest {
                number: number.into(),
                default_region: String::new(),
            })
            .await;
    }
    let (code, body) = app.admin_get("/metrics").await;
    assert_eq!(code, 200);
    for expected in [
        r#"switchboard_grpc_requests_total{rpc="LookupNumber",code="OK"}"#,
        r#"switchboard_grpc_requests_total{rpc="LookupNumber",code="NOT_FOUND"}"#,
        // explicit buckets from 50 µs, not a summary
        r#"switchboard_grpc_request_seconds_bucket{rpc="LookupNumber",le="0.00005"}"#,
        r#"switchboard_store_query_seconds_bucket{query="resolve_number",le="1"}"#,
    ] {
        assert!(body.contains(expected), "{expected} missing from:\n{body}");
    }
    assert!(
        !body.contains("quantile="),
        "histograms must not be summaries"
    );
}
