//! `rps report`: the Markdown table over every result, with the targets.

pub mod call_path;
pub mod call_path_check;
mod targets;

pub use targets::{evaluate, TARGETS};

use std::fmt::Write;

use crate::result::{Results, RunResult};

/// One repetition's result of a run.
pub fn get(results: &Results, label: &str, rep: u32) -> Option<RunResult> {
    let runs = results.get(label)?;
    // single-run measurements (memory, coalesce) serve every repetition
    runs.get(&rep)
        .or_else(|| (runs.len() == 1).then(|| runs.values().next()).flatten())
        .cloned()
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

pub fn report(results: &Results) -> String {
    let mut out = String::new();
    runs_table(&mut out, results);
    targets_table(&mut out, results);
    call_path::tables(&mut out, results);
    footnotes(&mut out, results);
    out
}

/// A row per run label: medians over its repetitions.
fn runs_table(out: &mut String, results: &Results) {
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    writeln!(out, "| run | mode | load | goodput/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | shed | errors | sent late p99 µs | reps |").unwrap();
    writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for (label, runs) in results {
        if runs
            .values()
            .all(|r| r.latency.is_none() && r.goodput == 0.0)
        {
            continue; // memory, coalesce: reported below
        }
        let pick =
            |f: &dyn Fn(&RunResult) -> Option<f64>| median(runs.values().filter_map(f).collect());
        let any = runs.values().next().expect("non-empty");
        let load = match (any.concurrency, any.offered_rate) {
            (_, Some(_)) => format!("{} req/s", fmt(pick(&|r| r.offered_rate))),
            (Some(c), None) => format!("{c} in flight"),
            _ => "–".into(),
        };
        writeln!(
            out,
            "| {label} | {} | {load} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            any.mode,
            fmt(pick(&|r| Some(r.goodput))),
            fmt(pick(&|r| r.latency.map(|l| l.p50))),
            fmt(pick(&|r| r.latency.map(|l| l.p90))),
            fmt(pick(&|r| r.latency.map(|l| l.p99))),
            fmt(pick(&|r| r.latency.map(|l| l.p999))),
            fmt(pick(&|r| r.latency.map(|l| l.max))),
            fmt(pick(&|r| Some((r.shed + r.dropped) as f64))),
            fmt(pick(&|r| Some(r.errors as f64))),
            fmt(pick(&|r| r.extra.get("send_late_p99_us").copied())),
            runs.len(),
        )
        .unwrap();
    }
}

/// Each target's median figure and whether it is met.
fn targets_table(out: &mut String, results: &Results) {
    writeln!(out, "\nMedians over the repetitions. Targets, each computed within a repetition, median reported:\n").unwrap();
    writeln!(out, "| target | figure | median | bound | met |").unwrap();
    writeln!(out, "|---|---|---:|---:|---|").unwrap();
    for target in TARGETS {
        let bound = format!(
            "{} {}",
            if target.at_most { "≤" } else { "≥" },
            target.bound
        );
        match evaluate(target, results) {
            Some((value, reps, met)) => writeln!(
                out,
                "| {} | `{}` | {value:.2} ({reps}×) | {bound} | {} |",
                target.name,
                target.formula,
                if met { "yes" } else { "**no**" }
            ),
            None => writeln!(
                out,
                "| {} | `{}` | not measured | {bound} | – |",
                target.name, target.formula
            ),
        }
        .unwrap();
    }
}

/// The once-per-session figures: instructions per request, L1 memory.
fn footnotes(out: &mut String, results: &Results) {
    let per_request = |label: &str| {
        results
            .get(label)
            .and_then(|runs| runs.values().next())
            .and_then(|run| run.extra.get("instructions_per_request").copied())
    };
    if let (Some(noop), Some(hot)) = (per_request("noop_callgrind"), per_request("hot_callgrind")) {
        writeln!(
            out,
            "\nInstructions per request under callgrind: no-op {noop:.0}, hot {hot:.0}."
        )
        .unwrap();
    }
    if let (Some(route), Some(plain), Some(workflow)) = (
        per_request("hot_route_callgrind"),
        per_request("decide_plain_callgrind"),
        per_request("decide_workflow_callgrind"),
    ) {
        writeln!(
            out,
            "\nA hot RouteCall: {route:.0} instructions. Its route and decision in-process \
             (benches/workflow.rs): {plain:.0} for a number without a policy, {workflow:.0} for a \
             number of a range under a realistic policy; the workflow adds {:.0} ({:.1} % of the \
             RouteCall).",
            workflow - plain,
            100.0 * (workflow - plain) / route
        )
        .unwrap();
    }
    if let Some(memory) = results.get("memory").and_then(|m| m.values().next()) {
        let x = |k: &str| memory.extra.get(k).copied().unwrap_or(f64::NAN);
        writeln!(
            out,
            "\nL1 resident memory: {:.0} numbers added {:.1} MiB, {:.0} bytes per number.",
            x("entries"),
            x("resident_bytes_added") / (1024.0 * 1024.0),
            x("bytes_per_entry")
        )
        .unwrap();
    }
}
