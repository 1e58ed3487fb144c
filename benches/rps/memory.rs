//! `rps memory`: the resident memory of L1 holding the bench numbers.

use std::{collections::BTreeMap, time::Duration};

use switchboard::{
    domain::{Route, E164},
    routing::{CacheSettings, RouteCache},
    store::{PgStore, PoolSettings},
};

use crate::{
    dataset::{bench_number, bench_route},
    result::RunResult,
};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

/// Fills an L1 with `entries` numbers (as warm start does) and reports the
/// resident memory it added. The tier below is a PostgreSQL pool that never
/// connects: nothing is read from it.
pub async fn memory(entries: usize, organizations: usize) -> anyhow::Result<RunResult> {
    let unused = PgStore::new(
        "postgres://switchboard_daemon@127.0.0.1:1/unused",
        &PoolSettings {
            max_size: 1,
            wait_timeout: Duration::from_millis(1),
            connect_timeout: Duration::from_millis(1),
            query_timeout: Duration::from_millis(1),
        },
    )
    .map_err(anyhow::Error::msg)?;
    let cache = RouteCache::new(
        unused,
        CacheSettings {
            capacity: entries as u64,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(5),
            unconfirmed_ttl: Duration::from_secs(3600),
            max_stale: Duration::from_secs(3600),
        },
    );
    cache.set_confirmed(true);
    let organizations = organizations.clamp(1, entries.max(1));
    let before = resident_bytes();
    // one organization and agent value per organization, shared by its
    // numbers, as the daemon shares them
    let shared: Vec<Route> = (0..organizations)
        .map(|g| bench_route(g, organizations))
        .collect();
    let routes: Vec<Route> = (0..entries)
        .map(|i| {
            let template = &shared[i % organizations];
            Route {
                number: E164::from_canonical(&bench_number(i)).expect("canonical"),
                ..template.clone()
            }
        })
        .collect();
    drop(shared);
    let kept = cache.preload(routes).await;
    let after = resident_bytes();
    let added = after.saturating_sub(before) as f64;
    let per_entry = added / kept.max(1) as f64;
    println!(
        "L1 with {kept} numbers over {organizations} organizations: {:.1} MiB resident added, {per_entry:.0} bytes per number",
        added / (1024.0 * 1024.0)
    );
    Ok(RunResult {
        label: "memory".into(),
        mode: "memory".into(),
        requests: entries as u64,
        ok: kept as u64,
        extra: BTreeMap::from([
            ("entries".into(), kept as f64),
            ("resident_bytes_added".into(), added),
            ("bytes_per_entry".into(), per_entry),
        ]),
        ..Default::default()
    })
}
