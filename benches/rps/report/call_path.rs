//! The call path's part of the report: the figures of whole calls
//! (`rps lifecycle`), and the tables of what durability costs (the disk's
//! flush, a bare commit, `EndCall` and `RecordUsage`) and of group commit
//! in the recorder as load grows.

use std::fmt::Write;

use crate::{
    metrics::{RECORDER_BATCHES_PER_SEC, RECORDER_EVENTS_PER_BATCH, RECORDER_EVENTS_PER_SEC},
    result::{Results, RunResult},
};

use super::{get, median};

/// What `rps lifecycle` writes: a result per RPC, labelled `<run>/<rpc>`,
/// and, with an outage, `RouteCall` before, during and after it.
pub const ROUTE_CALL: &str = "route_call";
pub const RECORD_USAGE: &str = "record_usage";
pub const END_CALL: &str = "end_call";
pub const ROUTE_CALL_BEFORE: &str = "route_call_before";
pub const ROUTE_CALL_DURING: &str = "route_call_during";
pub const ROUTE_CALL_AFTER: &str = "route_call_after";
/// The RPCs every whole call makes.
pub const CALL_RPCS: [&str; 3] = [ROUTE_CALL, RECORD_USAGE, END_CALL];

/// Its check of the database after the run, in the extras of the
/// `route_call` result, keyed `<kind>_<figure>`: per kind of record, what
/// was acknowledged, what landed, what was acknowledged and is missing,
/// and what landed twice.
pub const ACKNOWLEDGED: &str = "acknowledged";
pub const LANDED: &str = "landed";
pub const LOST: &str = "lost";
pub const DUPLICATED: &str = "duplicated";
/// The kinds counted in records: calls opened, calls ended, usage events.
pub const RECORD_KINDS: [&str; 3] = ["calls_opened", "calls_ended", "usage_events"];
/// Every kind checked: the records, and the `usage_daily` totals (a sum of
/// quantities, which only counts towards lost and duplicated).
pub const ALL_KINDS: [&str; 4] = [
    "calls_opened",
    "calls_ended",
    "usage_events",
    "usage_daily_quantity",
];

/// The recorder's figures over a lifecycle run (`rps import-recorder`),
/// labelled `<run>/recorder`.
pub const RECORDER: &str = "recorder";

/// One RPC's result of a lifecycle run.
pub fn rpc(r: &Results, run: &str, rpc: &str, rep: u32) -> Option<RunResult> {
    get(r, &format!("{run}/{rpc}"), rep)
}

/// The sum of a lifecycle run's check `figure` over `kinds`; `None` when
/// it reported none of them (not checked).
fn checked(r: &Results, run: &str, figure: &str, kinds: &[&str], rep: u32) -> Option<f64> {
    let result = rpc(r, run, ROUTE_CALL, rep)?;
    let figures: Vec<f64> = kinds
        .iter()
        .filter_map(|kind| result.extra.get(&format!("{kind}_{figure}")).copied())
        .collect();
    (!figures.is_empty()).then(|| figures.iter().sum())
}

/// Records acknowledged and then missing from the database, or found there
/// twice, and the same of the `usage_daily` totals.
pub fn lost_or_duplicated(r: &Results, run: &str, rep: u32) -> Option<f64> {
    Some(checked(r, run, LOST, &ALL_KINDS, rep)? + checked(r, run, DUPLICATED, &ALL_KINDS, rep)?)
}

/// RPCs of a lifecycle run that failed, were shed, or were never sent.
pub fn failed_rpcs(r: &Results, run: &str, rep: u32) -> Option<f64> {
    CALL_RPCS
        .iter()
        .map(|name| rpc(r, run, name, rep).map(|x| (x.errors + x.shed + x.dropped) as f64))
        .sum()
}

/// The three tables, each where at least one of its results is present.
pub fn tables(out: &mut String, results: &Results) {
    whole_calls_table(out, results);
    durability_table(out, results);
    group_commit_table(out, results);
    change_log_table(out, results);
}

/// Each lifecycle run's check of the database, and `RouteCall`'s p99
/// around an outage.
fn whole_calls_table(out: &mut String, results: &Results) {
    let suffix = format!("/{ROUTE_CALL}");
    let runs: Vec<&str> = results
        .keys()
        .filter_map(|label| label.strip_suffix(&suffix))
        .collect();
    if runs.is_empty() {
        return;
    }
    writeln!(out, "\nWhole calls, medians: the records the run was told were durable, and what the database holds after it:\n").unwrap();
    writeln!(out, "| run | records acknowledged | landed | lost | duplicated | RouteCall p99 µs before / during / after the outage |").unwrap();
    writeln!(out, "|---|---:|---:|---:|---:|---|").unwrap();
    for run in runs {
        let label = format!("{run}{suffix}");
        let check = |figure: &str, kinds: &[&str]| {
            let reps = results.get(&label).into_iter().flat_map(|runs| runs.keys());
            cell(median(
                reps.filter_map(|&n| checked(results, run, figure, kinds, n))
                    .collect(),
            ))
        };
        let p99 = |rpc: &str| {
            cell(median_of(results, &format!("{run}/{rpc}"), |r| {
                r.latency.map(|l| l.p99)
            }))
        };
        let around = [ROUTE_CALL_BEFORE, ROUTE_CALL_DURING, ROUTE_CALL_AFTER]
            .map(p99)
            .join(" / ");
        writeln!(
            out,
            "| {run} | {} | {} | {} | {} | {around} |",
            check(ACKNOWLEDGED, &RECORD_KINDS),
            check(LANDED, &RECORD_KINDS),
            check(LOST, &ALL_KINDS),
            check(DUPLICATED, &ALL_KINDS),
        )
        .unwrap();
    }
}

/// The median of a figure over a label's repetitions.
fn median_of(results: &Results, label: &str, f: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
    median(results.get(label)?.values().filter_map(f).collect())
}

fn cell(value: Option<f64>) -> String {
    value.map_or("–".to_string(), |v| format!("{v:.0}"))
}

/// What logging customer changes costs: a CRM renaming customers through
/// the pooler, with the change-log triggers (a log row and a NOTIFY per
/// change) and with them disabled, at a steady rate and at its peak.
fn change_log_table(out: &mut String, results: &Results) {
    let rows = [
        ("crm_logged", "logged, at a CRM's steady rate"),
        ("crm_unlogged", "not logged, the same rate"),
        ("crm_logged_peak", "logged, as fast as it goes (8 clients)"),
        ("crm_unlogged_peak", "not logged, the same"),
    ];
    latency_table(
        out,
        results,
        "What logging customer changes costs (`crm.sql`: one customer renamed per transaction), medians:",
        &rows,
    );
}

/// A table of runs: per second, p50 and p99, where any of them ran.
fn latency_table(out: &mut String, results: &Results, title: &str, rows: &[(&str, &str)]) {
    if !rows.iter().any(|(label, _)| results.contains_key(*label)) {
        return;
    }
    writeln!(out, "\n{title}\n").unwrap();
    writeln!(out, "| what | run | per second | p50 µs | p99 µs |").unwrap();
    writeln!(out, "|---|---|---:|---:|---:|").unwrap();
    for (label, what) in rows {
        writeln!(
            out,
            "| {what} | {label} | {} | {} | {} |",
            cell(median_of(results, label, |r| Some(r.goodput))),
            cell(median_of(results, label, |r| r.latency.map(|l| l.p50))),
            cell(median_of(results, label, |r| r.latency.map(|l| l.p99))),
        )
        .unwrap();
    }
}

/// What a durable write costs, from the disk up: the floor under every
/// acknowledged `EndCall` and `RecordUsage`.
fn durability_table(out: &mut String, results: &Results) {
    let rows = [
        (
            "fsync",
            "the disk's flush, one at a time (`pg_test_fsync`, PostgreSQL's `wal_sync_method`)",
        ),
        ("commit_low", "a bare commit through PgBouncer, 1 client"),
        ("commit_c8", "the same, 8 clients"),
        ("commit_c64", "the same, 64 clients"),
        (
            "commit_during_half",
            "the same, 1 client at 100/s, during `lifecycle_half`",
        ),
        (
            "lifecycle_half/record_usage",
            "`RecordUsage` at half the sustainable call rate",
        ),
        (
            "lifecycle_half/end_call",
            "`EndCall` at half the sustainable call rate",
        ),
        (
            "lifecycle_half_writers2/end_call",
            "the same, `SWITCHBOARD_RECORDER_WRITERS=2`",
        ),
        (
            "lifecycle_half_writers4/end_call",
            "the same, `SWITCHBOARD_RECORDER_WRITERS=4`",
        ),
    ];
    latency_table(out, results, "What durability costs, medians:", &rows);
}

/// Events and batches (one statement, one transaction each) per second of
/// each lifecycle run, in the order of the call rates offered.
fn group_commit_table(out: &mut String, results: &Results) {
    let suffix = format!("/{RECORDER}");
    let mut rungs: Vec<(&str, Option<f64>)> = results
        .keys()
        .filter_map(|label| label.strip_suffix(&suffix))
        .map(|run| {
            let offered = median_of(results, &format!("{run}/{ROUTE_CALL}"), |r| r.offered_rate);
            (run, offered)
        })
        .collect();
    if rungs.is_empty() {
        return;
    }
    rungs.sort_by(|a, b| {
        a.1.unwrap_or(f64::INFINITY)
            .total_cmp(&b.1.unwrap_or(f64::INFINITY))
    });
    writeln!(out, "\nGroup commit in the recorder as the call rate grows, medians (the daemon's `switchboard_recorder_batch_size` and its count, read before and after each run):\n").unwrap();
    writeln!(
        out,
        "| run | calls/s offered | events/s | batches (transactions)/s | events per batch | reps |"
    )
    .unwrap();
    writeln!(out, "|---|---:|---:|---:|---:|---:|").unwrap();
    for (run, offered) in rungs {
        let label = format!("{run}{suffix}");
        let figure = |key: &str| median_of(results, &label, |r| r.extra.get(key).copied());
        writeln!(
            out,
            "| {run} | {} | {} | {} | {} | {} |",
            cell(offered),
            cell(figure(RECORDER_EVENTS_PER_SEC)),
            cell(figure(RECORDER_BATCHES_PER_SEC)),
            figure(RECORDER_EVENTS_PER_BATCH).map_or("–".to_string(), |v| format!("{v:.1}")),
            results.get(&label).map_or(0, |runs| runs.len()),
        )
        .unwrap();
    }
}
