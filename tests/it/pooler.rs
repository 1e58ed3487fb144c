//! The pooled path really goes through a transaction-mode pooler and obeys
//! its rules: no named prepared statements, so many concurrent resolutions
//! multiplexed over few server connections all succeed.

use futures::future::join_all;
use switchboard::proto::LookupNumberRequest;

use std::time::Duration;

use crate::helpers::{spawn_seeded_app_with, Stack};

#[tokio::test]
async fn the_stack_pooler_runs_in_transaction_mode() {
    let stack = Stack::from_env();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/pgbouncer",
        stack.pgbouncer_port
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client.simple_query("SHOW CONFIG").await.unwrap();
    let pool_mode = rows.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("pool_mode") => {
            row.get(1).map(str::to_string)
        }
        _ => None,
    });
    assert_eq!(pool_mode.as_deref(), Some("transaction"));
}

#[tokio::test]
async fn many_concurrent_resolutions_through_pgbouncer_all_succeed() {
    // Patient pool checkout: this test is about the pooler's rules, not
    // about shedding load (which a short checkout wait does on purpose).
    let app = spawn_seeded_app_with(|config| {
        config.database.db_pool_wait = Duration::from_secs(10);
        config.cache.cache_warm_limit = 0; // every number misses L1 once
    })
    .await;
    let numbers = [
        "+14155550100",
        "+14155550142",
        "+442079460123",
        "+13125550100",
    ];
    let requests = (0..800).map(|i| {
        let mut client = app.client.clone();
        let number = numbers[i % numbers.len()];
        async move {
            client
                .lookup_number(LookupNumberRequest {
                    number: number.into(),
                    default_region: String::new(),
                })
                .await
                .map(|r| r.into_inner().route.unwrap().number == number)
        }
    });
    let results = join_all(requests).await;
    let failures: Vec<_> = results.iter().filter(|r| !matches!(r, Ok(true))).collect();
    assert!(
        failures.is_empty(),
        "{} of {} failed, first: {:?}",
        failures.len(),
        results.len(),
        failures[0]
    );

    // The daemon's connections were multiplexed: it opened several client
    // connections to PgBouncer, which served them over its own pool.
    let (_, metrics) = app.admin_get("/metrics").await;
    let opened: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_db_pool_connections "))
        .and_then(|v| v.trim().parse().ok())
        .expect("pool gauge exported");
    assert!(opened > 1.0, "resolutions ran on {opened} connection(s)");
}
