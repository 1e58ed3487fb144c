//! `rps coalesce`: concurrent misses for one uncached number, and how many
//! queries they cost the daemon.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crate::{
    client::{connect, lookup},
    metrics::resolve_queries,
    result::RunResult,
};

/// Concurrent lookups of one uncached number in `coalesce`.
const COALESCE_REQUESTS: usize = 100;

pub async fn coalesce(
    target: &str,
    metrics: &str,
    number: &str,
    rep: u32,
) -> anyhow::Result<RunResult> {
    let clients = connect(target, 4).await?;
    let before = resolve_queries(metrics).await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(COALESCE_REQUESTS));
    let tasks: Vec<_> = (0..COALESCE_REQUESTS)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let (barrier, number) = (barrier.clone(), number.to_string());
            tokio::spawn(async move {
                barrier.wait().await;
                lookup(&mut client, number, Duration::from_secs(2)).await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        if task.await?.is_ok() {
            ok += 1;
        }
    }
    let queries = resolve_queries(metrics).await? - before;
    println!(
        "{COALESCE_REQUESTS} concurrent lookups of {number}: {ok} answered, {queries} queries"
    );
    Ok(RunResult {
        label: "coalesce".into(),
        rep,
        mode: "coalesce".into(),
        requests: COALESCE_REQUESTS as u64,
        ok,
        extra: BTreeMap::from([("queries".into(), queries)]),
        ..Default::default()
    })
}
