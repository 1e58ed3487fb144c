//! One run's outcome as JSON, the unit every subcommand writes and the
//! report reads, and the latency histograms it is computed from.

use std::{collections::BTreeMap, path::Path, sync::Mutex, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, up to a minute, 3 significant
/// digits.
pub const HISTOGRAM_MAX_US: u64 = 60_000_000;

/// One run's outcome, the unit the report works on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub label: String,
    pub rep: u32,
    /// `closed`, `open`, or the baseline tool's name.
    pub mode: String,
    pub concurrency: Option<usize>,
    pub offered_rate: Option<f64>,
    pub seconds: f64,
    /// Requests scheduled (open loop) or sent (closed loop) in the window.
    pub requests: u64,
    pub ok: u64,
    /// `NOT_FOUND` for a number nobody provisioned: a correct answer.
    pub not_found: u64,
    /// Refused as overloaded (`UNAVAILABLE`/`RESOURCE_EXHAUSTED`).
    pub shed: u64,
    /// Any other failure, including deadlines.
    pub errors: u64,
    /// Open loop: not sent because `max_outstanding` were in flight.
    pub dropped: u64,
    /// Correct answers per second.
    pub goodput: f64,
    pub latency: Option<Latency>,
    /// Invalidation lag, commit → the new row in an answer.
    pub lag: Option<Latency>,
    /// Free-form figures (memory, query counts).
    #[serde(default)]
    pub extra: BTreeMap<String, f64>,
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50) as f64,
            p90: h.value_at_quantile(0.90) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
        })
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid bounds")
}

pub fn record(h: &Mutex<Histogram<u64>>, elapsed: Duration) {
    let us = (elapsed.as_micros() as u64).clamp(1, HISTOGRAM_MAX_US);
    h.lock().unwrap().record(us).expect("clamped into range");
}

pub fn read_result(path: &Path) -> anyhow::Result<RunResult> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn write_result(result: &RunResult, out: Option<&Path>) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(result)?;
    match out {
        Some(path) => std::fs::write(path, json)?,
        None => println!("{json}"),
    }
    Ok(())
}

/// Results by label, then repetition.
pub type Results = BTreeMap<String, BTreeMap<u32, RunResult>>;

pub fn read_results(dir: &Path) -> anyhow::Result<Results> {
    let mut results = Results::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let result = read_result(&path)?;
            results
                .entry(result.label.clone())
                .or_default()
                .insert(result.rep, result);
        }
    }
    Ok(results)
}
