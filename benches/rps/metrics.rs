//! The daemon's own figures, from its admin listener's /metrics.

use std::{collections::BTreeMap, path::Path};

use crate::{common::admin_get, result::RunResult};

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

/// Lookups the daemon's directory answered, from its /metrics.
pub async fn directory_answers(metrics: &str) -> anyhow::Result<f64> {
    let body = scrape(metrics).await?;
    Ok(sample(
        &body,
        "switchboard_cache_directory_answers_total",
        "",
    ))
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

/// One sample of a series on a /metrics page: `name` alone, or with exactly
/// these labels (`outcome="written"`); 0 when the page lacks it.
pub fn sample(body: &str, name: &str, labels: &str) -> f64 {
    let series = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The recorder's counters at one moment: the batches it wrote (one
/// statement and one transaction each, `switchboard_recorder_batch_size`'s
/// count), the events in them (its sum), the events written to PostgreSQL,
/// and when they were read (Unix seconds).
pub async fn recorder_reading(metrics: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let body = scrape(metrics).await?;
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    Ok(BTreeMap::from([
        ("at".to_string(), at),
        (
            "batches".to_string(),
            sample(&body, "switchboard_recorder_batch_size_count", ""),
        ),
        (
            "batched_events".to_string(),
            sample(&body, "switchboard_recorder_batch_size_sum", ""),
        ),
        (
            "written_events".to_string(),
            sample(
                &body,
                "switchboard_recorder_events_total",
                "outcome=\"written\"",
            ),
        ),
    ]))
}

/// What the recorder did between two readings, per second of the time
/// between them: group commit as load grows. Reported in a table of its
/// own (no latency, no goodput), not as a run.
pub fn recorder_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    label: String,
    rep: u32,
) -> anyhow::Result<RunResult> {
    let delta = |key: &str| -> anyhow::Result<f64> {
        match (before.get(key), after.get(key)) {
            (Some(b), Some(a)) => Ok(a - b),
            _ => anyhow::bail!("no {key} in the recorder readings"),
        }
    };
    let seconds = delta("at")?;
    let (batches, events) = (delta("batches")?, delta("batched_events")?);
    anyhow::ensure!(seconds > 0.0, "the readings are not in order");
    Ok(RunResult {
        label,
        rep,
        mode: "recorder".into(),
        seconds,
        extra: BTreeMap::from([
            (RECORDER_EVENTS_PER_SEC.into(), events / seconds),
            (RECORDER_BATCHES_PER_SEC.into(), batches / seconds),
            (
                RECORDER_EVENTS_PER_BATCH.into(),
                if batches > 0.0 { events / batches } else { 0.0 },
            ),
            (
                RECORDER_WRITTEN_PER_SEC.into(),
                delta("written_events")? / seconds,
            ),
        ]),
        ..Default::default()
    })
}

/// The figures of a recorder result, as the report reads them.
pub const RECORDER_EVENTS_PER_SEC: &str = "events_per_sec";
pub const RECORDER_BATCHES_PER_SEC: &str = "batches_per_sec";
pub const RECORDER_EVENTS_PER_BATCH: &str = "events_per_batch";
pub const RECORDER_WRITTEN_PER_SEC: &str = "written_per_sec";

/// `rps scrape-recorder`: a reading into `out`.
pub async fn scrape_recorder(metrics: &str, out: &Path) -> anyhow::Result<()> {
    let reading = recorder_reading(metrics).await?;
    Ok(std::fs::write(
        out,
        serde_json::to_string_pretty(&reading)?,
    )?)
}

/// `rps import-recorder`: two readings as a result.
pub fn import_recorder(
    before: &Path,
    after: &Path,
    label: String,
    rep: u32,
) -> anyhow::Result<RunResult> {
    let read = |path: &Path| -> anyhow::Result<BTreeMap<String, f64>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    recorder_between(&read(before)?, &read(after)?, label, rep)
}
