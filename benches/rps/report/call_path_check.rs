//! The call path's targets and tables computed from synthetic results, for
//! the self-check (`cargo test --bench rps`): each figure from the runs its
//! formula names, and "not measured" where they are missing.

use std::collections::BTreeMap;

use crate::{
    metrics::{RECORDER_BATCHES_PER_SEC, RECORDER_EVENTS_PER_BATCH, RECORDER_EVENTS_PER_SEC},
    result::{Latency, Results, RunResult},
};

use super::{
    call_path::{
        END_CALL, RECORDER, RECORD_USAGE, ROUTE_CALL, ROUTE_CALL_AFTER, ROUTE_CALL_BEFORE,
        ROUTE_CALL_DURING,
    },
    evaluate, report, TARGETS,
};

/// One repetition's result: goodput, p50 and p99.
fn run(label: &str, rep: u32, goodput: f64, p50: f64, p99: f64) -> RunResult {
    RunResult {
        label: label.into(),
        rep,
        mode: "closed".into(),
        goodput,
        latency: Some(Latency {
            count: 1,
            p50,
            p90: p99,
            p99,
            p999: p99,
            max: p99,
        }),
        ..Default::default()
    }
}

fn insert(results: &mut Results, result: RunResult) {
    results
        .entry(result.label.clone())
        .or_default()
        .insert(result.rep, result);
}

/// A repetition with every run the call path's targets read.
fn synthetic() -> Results {
    let mut results = Results::new();
    for (label, goodput, p50, p99) in [
        ("noop_route_peak", 20_000.0, 1_000.0, 5_000.0),
        ("admission_peak", 30_000.0, 800.0, 3_000.0),
        ("hot_route_peak", 16_000.0, 1_500.0, 6_000.0),
        ("pg_customer_peak", 2_000.0, 20_000.0, 40_000.0),
        ("noop_route_low", 200.0, 300.0, 900.0),
        ("admission_low", 5_000.0, 80.0, 200.0),
        ("hot_route_low", 200.0, 400.0, 1_100.0),
        ("commit_during_half", 100.0, 3_500.0, 4_000.0),
    ] {
        insert(&mut results, run(label, 1, goodput, p50, p99));
    }
    let mut route_call = run(
        &format!("lifecycle_half/{ROUTE_CALL}"),
        1,
        300.0,
        500.0,
        900.0,
    );
    route_call.offered_rate = Some(300.0);
    route_call.extra = BTreeMap::from([
        ("calls_opened_acknowledged".into(), 100.0),
        ("calls_opened_landed".into(), 99.0),
        ("calls_opened_lost".into(), 0.0),
        ("usage_events_lost".into(), 1.0),
        ("usage_events_duplicated".into(), 0.0),
        // landed, but never acknowledged: neither lost nor duplicated
        ("usage_events_unacknowledged_landed".into(), 3.0),
    ]);
    insert(&mut results, route_call);
    let mut record_usage = run(
        &format!("lifecycle_half/{RECORD_USAGE}"),
        1,
        900.0,
        3_000.0,
        5_000.0,
    );
    record_usage.shed = 2;
    insert(&mut results, record_usage);
    let mut end_call = run(
        &format!("lifecycle_half/{END_CALL}"),
        1,
        300.0,
        4_000.0,
        6_000.0,
    );
    end_call.errors = 1;
    insert(&mut results, end_call);
    let mut outage = run(
        &format!("lifecycle_outage/{ROUTE_CALL}"),
        1,
        300.0,
        500.0,
        1_500.0,
    );
    outage.extra = BTreeMap::from([
        ("calls_opened_lost".into(), 0.0),
        ("calls_opened_duplicated".into(), 0.0),
    ]);
    insert(&mut results, outage);
    for (rpc, p99) in [
        (ROUTE_CALL_BEFORE, 1_000.0),
        (ROUTE_CALL_DURING, 2_000.0),
        (ROUTE_CALL_AFTER, 1_200.0),
    ] {
        insert(
            &mut results,
            run(&format!("lifecycle_outage/{rpc}"), 1, 300.0, 500.0, p99),
        );
    }
    let mut recorder = run(&format!("lifecycle_half/{RECORDER}"), 1, 0.0, 0.0, 0.0);
    recorder.latency = None;
    recorder.extra = BTreeMap::from([
        (RECORDER_EVENTS_PER_SEC.into(), 1_500.0),
        (RECORDER_BATCHES_PER_SEC.into(), 100.0),
        (RECORDER_EVENTS_PER_BATCH.into(), 15.0),
    ]);
    insert(&mut results, recorder);
    insert(
        &mut results,
        RunResult {
            rep: 0,
            ..run("fsync", 0, 280.0, 3_570.0, 3_570.0)
        },
    );
    results
}

/// The target whose formula is `formula`: its figure, and whether it is met.
fn figure(results: &Results, formula: &str) -> Option<(f64, bool)> {
    let target = TARGETS
        .iter()
        .find(|t| t.formula == formula)
        .unwrap_or_else(|| panic!("no target {formula}"));
    evaluate(target, results).map(|(value, _, met)| (value, met))
}

pub fn check() {
    let results = synthetic();
    let expected = [
        (
            "hot_route_peak / min(noop_route_peak, admission_peak)",
            0.8,
            true,
        ),
        ("hot_route_peak / pg_customer_peak", 8.0, true),
        (
            "hot_route_low.p50 − (noop_route_low.p50 + admission_low.p50)",
            20.0,
            true,
        ),
        ("lifecycle_half: records lost + duplicated", 1.0, false),
        ("lifecycle_half: Σ errors + shed + dropped", 3.0, false),
        (
            "lifecycle_half/end_call.p99 / commit_during_half.p99",
            1.5,
            true,
        ),
        (
            "lifecycle_outage/route_call_during.p99 / lifecycle_outage/route_call_before.p99",
            2.0,
            false,
        ),
        ("lifecycle_outage: records lost + duplicated", 0.0, true),
    ];
    for (formula, value, met) in expected {
        let (got, got_met) =
            figure(&results, formula).unwrap_or_else(|| panic!("{formula}: not measured"));
        assert!(
            (got - value).abs() < 1e-9 && got_met == met,
            "{formula}: {got} {got_met}"
        );
    }
    let table = report(&results);
    for line in [
        "| lifecycle_half | 100 | 99 | 1 | 0 | – / – / – |",
        "| lifecycle_outage | – | – | 0 | 0 | 1000 / 2000 / 1200 |",
        "| `EndCall` at half the sustainable call rate | lifecycle_half/end_call | 300 | 4000 | 6000 |",
        "| the same, 8 clients | commit_c8 | – | – | – |",
        "| lifecycle_half | 300 | 1500 | 100 | 15.0 | 1 |",
    ] {
        assert!(table.contains(line), "no line {line} in\n{table}");
    }

    // nothing of the call path measured: every target says so, no table
    let mut bare = Results::new();
    insert(&mut bare, run("hot_peak", 1, 1.0, 1.0, 1.0));
    for (formula, _, _) in expected {
        assert!(
            figure(&bare, formula).is_none(),
            "{formula} without its runs"
        );
    }
    let table = report(&bare);
    assert!(
        !table.contains("Whole calls")
            && !table.contains("Group commit")
            && !table.contains("durability costs"),
        "{table}"
    );
    assert!(
        table.contains("| `lifecycle_half/end_call.p99 / commit_during_half.p99` | not measured |"),
        "{table}"
    );
}
