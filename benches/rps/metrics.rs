//! The daemon's own figures, from its admin listener's /metrics.

use crate::common::admin_get;

/// The daemon's /metrics page; `metrics` is its admin address.
pub async fn scrape(metrics: &str) -> anyhow::Result<String> {
    let addr = metrics
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()?;
    let (_, body) = admin_get(addr, "/metrics")
        .await
        .ok_or_else(|| anyhow::anyhow!("no answer from {metrics}/metrics"))?;
    Ok(body)
}

/// The daemon's `switchboard_invalidation_lag_seconds` buckets: upper bound
/// in seconds and cumulative count, in order.
pub async fn applied_lag_buckets(metrics: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let body = scrape(metrics).await?;
    Ok(body
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("switchboard_invalidation_lag_seconds_bucket{le=\"")?;
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = match bound {
                "+Inf" => f64::INFINITY,
                bound => bound.parse().ok()?,
            };
            Some((bound, count.parse().ok()?))
        })
        .collect())
}

/// Of what a histogram gained between two readings of its buckets: the
/// upper bound of the bucket holding the p99, and how many were added.
pub fn p99_bucket(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<(f64, f64)> {
    let earlier = |bound: f64| {
        before
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, c)| *c)
    };
    let added: Vec<(f64, f64)> = after
        .iter()
        .map(|&(bound, count)| (bound, count - earlier(bound)))
        .collect();
    let total = added.last()?.1;
    if total <= 0.0 {
        return None;
    }
    added
        .iter()
        .find(|(_, count)| *count >= 0.99 * total)
        .map(|&(bound, _)| (bound, total))
}

/// The daemon's count of `resolve_number` queries, from its /metrics.
pub async fn resolve_queries(metrics: &str) -> anyhow::Result<f64> {
    let body = scrape(metrics).await?;
    Ok(body
        .lines()
        .find(|l| l.starts_with("switchboard_store_query_seconds_count{query=\"resolve_number\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}
