//! `rps import-pgbench`, `import-redis`, `import-callgrind` and
//! `import-count`: the baselines' own output as results.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::result::{histogram, Latency, RunResult, HISTOGRAM_MAX_US};

/// `pgbench -l` lines: `client_id transaction_no time script_no epoch us
/// [schedule_lag]`, `time` being the transaction's latency in microseconds;
/// with `-R` the schedule lag is added, so that latency counts from the
/// scheduled start, as the open-loop generator counts it.
pub fn import_pgbench(
    logs: &[PathBuf],
    label: String,
    rep: u32,
    seconds: f64,
    concurrency: Option<usize>,
    rate: Option<f64>,
) -> anyhow::Result<RunResult> {
    let mut h = histogram();
    let mut failed = 0;
    for log in logs {
        for line in std::fs::read_to_string(log)?.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.get(2) {
                Some(&"failed") | Some(&"skipped") => failed += 1,
                Some(us) => {
                    let lag = fields.get(6).map_or(Ok(0), |lag| lag.parse::<u64>())?;
                    h.record((us.parse::<u64>()? + lag).clamp(1, HISTOGRAM_MAX_US))?
                }
                None => {}
            }
        }
    }
    anyhow::ensure!(
        !h.is_empty(),
        "no transactions in the pgbench logs of {label}"
    );
    Ok(RunResult {
        label,
        rep,
        mode: "pgbench".into(),
        concurrency,
        offered_rate: rate,
        seconds,
        requests: h.len() + failed,
        ok: h.len(),
        errors: failed,
        goodput: h.len() as f64 / seconds,
        latency: Latency::of(&h),
        ..Default::default()
    })
}

/// `redis-benchmark --csv`: a header, then
/// `"GET","rps","avg_ms","min_ms","p50_ms","p95_ms","p99_ms","max_ms"`.
pub fn import_redis(
    csv: &Path,
    label: String,
    rep: u32,
    concurrency: usize,
) -> anyhow::Result<RunResult> {
    let text = std::fs::read_to_string(csv)?;
    let row = text
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .ok_or_else(|| anyhow::anyhow!("no GET row in {}", csv.display()))?;
    let values: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|v| v.trim_matches('"').parse())
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(values.len() >= 7, "unexpected redis-benchmark row: {row}");
    let us = |ms: f64| ms * 1000.0;
    Ok(RunResult {
        label,
        rep,
        mode: "redis-benchmark".into(),
        concurrency: Some(concurrency),
        goodput: values[0],
        latency: Some(Latency {
            count: 0,
            p50: us(values[3]),
            p90: us(values[4]), // redis-benchmark reports p95, not p90
            p99: us(values[5]),
            p999: us(values[6]),
            max: us(values[6]),
        }),
        ..Default::default()
    })
}

pub fn import_callgrind(run: &Path, label: String, instructions: u64) -> anyhow::Result<RunResult> {
    let run: RunResult = serde_json::from_str(&std::fs::read_to_string(run)?)?;
    let answered = run.ok + run.not_found;
    anyhow::ensure!(
        answered > 0 && run.shed + run.errors + run.dropped == 0,
        "the callgrind run must answer every request: {answered} answered, \
         {} shed, {} errors, {} dropped",
        run.shed,
        run.errors,
        run.dropped
    );
    Ok(RunResult {
        label,
        mode: "callgrind".into(),
        // timings under valgrind mean nothing
        latency: None,
        extra: BTreeMap::from([
            ("instructions".into(), instructions as f64),
            (
                "instructions_per_request".into(),
                instructions as f64 / answered as f64,
            ),
        ]),
        ..run
    })
}

/// `pg_test_fsync` output: of its first comparison (one 8 kB write, then a
/// flush), the line of `method`, `  fdatasync   1234.567 ops/sec   810 usecs/op`.
/// One flush at a time, so its latency is the inverse of its rate.
pub fn import_fsync(output: &Path, label: String, method: &str) -> anyhow::Result<RunResult> {
    let text = std::fs::read_to_string(output)?;
    let ops = text
        .lines()
        .skip_while(|l| !l.contains("one 8kB write"))
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            (fields.next() == Some(method)).then(|| fields.next()?.parse::<f64>().ok())?
        })
        .ok_or_else(|| anyhow::anyhow!("no {method} rate in {}", output.display()))?;
    anyhow::ensure!(ops > 0.0, "{method}: {ops} ops/sec");
    let us = 1e6 / ops;
    Ok(RunResult {
        label,
        mode: "pg_test_fsync".into(),
        concurrency: Some(1),
        goodput: ops,
        latency: Some(Latency {
            count: 0,
            p50: us,
            p90: us,
            p99: us,
            p999: us,
            max: us,
        }),
        ..Default::default()
    })
}

/// Instructions callgrind counted over `count` repetitions of one piece of
/// work in-process (`benches/workflow.rs`), per repetition.
pub fn import_count(label: String, instructions: u64, count: u64) -> anyhow::Result<RunResult> {
    anyhow::ensure!(count > 0, "a count of 0 repetitions");
    Ok(RunResult {
        label,
        mode: "callgrind".into(),
        requests: count,
        ok: count,
        extra: BTreeMap::from([
            ("instructions".into(), instructions as f64),
            (
                "instructions_per_request".into(),
                instructions as f64 / count as f64,
            ),
        ]),
        ..Default::default()
    })
}
