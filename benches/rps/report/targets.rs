//! The targets the report checks, and how each is evaluated over the
//! repetitions.

use crate::result::Results;

use super::{
    call_path::{
        failed_rpcs, lost_or_duplicated, rpc, END_CALL, ROUTE_CALL_BEFORE, ROUTE_CALL_DURING,
    },
    get, median,
};

/// One target: a figure computed per repetition from that repetition's
/// runs, its median, and the bound it must meet.
pub struct Target {
    pub name: &'static str,
    /// How the figure is computed, for the reader.
    pub formula: &'static str,
    pub figure: fn(&Results, u32) -> Option<f64>,
    /// The figure must be at most (or at least) this.
    pub bound: f64,
    pub at_most: bool,
}

fn goodput(r: &Results, label: &str, rep: u32) -> Option<f64> {
    get(r, label, rep).map(|x| x.goodput)
}

/// The share of `peak`'s goodput that `during` lost.
fn drop_from(r: &Results, during: &str, peak: &str, rep: u32) -> Option<f64> {
    Some(1.0 - goodput(r, during, rep)? / goodput(r, peak, rep)?)
}

/// One of a run's extra figures.
fn extra(r: &Results, label: &str, key: &str, rep: u32) -> Option<f64> {
    get(r, label, rep)?.extra.get(key).copied()
}

/// Instructions per answered request, from a callgrind run.
fn instructions(r: &Results, label: &str, rep: u32) -> Option<f64> {
    extra(r, label, "instructions_per_request", rep)
}

/// An open-loop run's goodput as a share of what it offered.
fn offered_share(r: &Results, label: &str, rep: u32) -> Option<f64> {
    let run = get(r, label, rep)?;
    Some(run.goodput / run.offered_rate?)
}

fn p50(r: &Results, label: &str, rep: u32) -> Option<f64> {
    get(r, label, rep)?.latency.map(|l| l.p50)
}

fn p99(r: &Results, label: &str, rep: u32) -> Option<f64> {
    get(r, label, rep)?.latency.map(|l| l.p99)
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "hot throughput vs no-op",
        formula: "hot_peak / noop_peak",
        figure: |r, n| Some(goodput(r, "hot_peak", n)? / goodput(r, "noop_peak", n)?),
        bound: 0.85,
        at_most: false,
    },
    Target {
        name: "the same, as CPU cost: no-op vs hot instructions per request",
        formula: "noop_callgrind / hot_callgrind (instructions per request)",
        figure: |r, n| {
            Some(instructions(r, "noop_callgrind", n)? / instructions(r, "hot_callgrind", n)?)
        },
        bound: 0.85,
        at_most: false,
    },
    Target {
        name: "a realistic call workflow adds little to a hot RouteCall",
        formula: "(decide_workflow_callgrind − decide_plain_callgrind) / hot_route_callgrind (instructions per request)",
        figure: |r, n| {
            let added = instructions(r, "decide_workflow_callgrind", n)?
                - instructions(r, "decide_plain_callgrind", n)?;
            Some(added / instructions(r, "hot_route_callgrind", n)?)
        },
        bound: 0.05,
        at_most: true,
    },
    Target {
        name: "open loop at 80% of the peak (daemon held to a share of a core): goodput vs offered",
        formula: "capped_80.goodput / capped_80.offered",
        figure: |r, n| offered_share(r, "capped_80", n),
        bound: 0.95,
        at_most: false,
    },
    Target {
        name: "the same: p99 vs the no-op's at the same rate",
        formula: "capped_80.p99 / capped_noop_80.p99",
        figure: |r, n| Some(p99(r, "capped_80", n)? / p99(r, "capped_noop_80", n)?),
        bound: 3.0,
        at_most: true,
    },
    Target {
        name: "open loop at all of the peak (the same): goodput vs offered",
        formula: "capped_100.goodput / capped_100.offered",
        figure: |r, n| offered_share(r, "capped_100", n),
        bound: 0.95,
        at_most: false,
    },
    Target {
        name: "the same: p99 vs the no-op's at the same rate",
        formula: "capped_100.p99 / capped_noop_100.p99",
        figure: |r, n| Some(p99(r, "capped_100", n)? / p99(r, "capped_noop_100", n)?),
        bound: 3.0,
        at_most: true,
    },
    Target {
        name: "half numbers nobody provisioned (from ten million) at peak vs the all-hot peak",
        formula: "hot_unknown_peak / hot_peak",
        figure: |r, n| Some(goodput(r, "hot_unknown_peak", n)? / goodput(r, "hot_peak", n)?),
        bound: 0.9,
        at_most: false,
    },
    Target {
        name: "the same: unknown numbers looked up below L1 (NOT_FOUND answers the directory did not give)",
        formula: "hot_unknown_peak: not_found − directory_answers",
        figure: |r, n| {
            let run = get(r, "hot_unknown_peak", n)?;
            Some((run.not_found as f64 - run.extra.get("directory_answers")?).max(0.0))
        },
        bound: 0.0,
        at_most: true,
    },
    Target {
        name: "L2 p50 over no-op p50 + Redis GET p50",
        formula: "l2_low.p50 − noop_low.p50 − redis_get_c1.p50 (µs)",
        figure: |r, n| {
            Some(p50(r, "l2_low", n)? - p50(r, "noop_low", n)? - p50(r, "redis_get_c1", n)?)
        },
        bound: 15.0,
        at_most: true,
    },
    Target {
        name: "cold p99 vs no-op p99 + pooled query p99",
        formula: "l3_low.p99 / (noop_low.p99 + pg_route_low.p99)",
        figure: |r, n| {
            Some(p99(r, "l3_low", n)? / (p99(r, "noop_low", n)? + p99(r, "pg_route_low", n)?))
        },
        bound: 1.3,
        at_most: true,
    },
    Target {
        name: "queries for 100 concurrent misses of one number",
        formula: "coalesce.queries",
        figure: |r, n| extra(r, "coalesce", "queries", n),
        bound: 1.0,
        at_most: true,
    },
    Target {
        name: "hot throughput vs PostgREST-shaped SQL",
        formula: "hot_peak / pg_postgrest_peak",
        figure: |r, n| Some(goodput(r, "hot_peak", n)? / goodput(r, "pg_postgrest_peak", n)?),
        bound: 5.0,
        at_most: false,
    },
    Target {
        name: "goodput at 2× the sustainable rate vs peak (daemon held to a share of a core)",
        formula: "capped_overload / capped_peak",
        figure: |r, n| Some(goodput(r, "capped_overload", n)? / goodput(r, "capped_peak", n)?),
        bound: 0.9,
        at_most: false,
    },
    Target {
        name: "p99 of answers at 2× the sustainable rate vs at half",
        formula: "capped_overload.p99 / capped_half.p99",
        figure: |r, n| Some(p99(r, "capped_overload", n)? / p99(r, "capped_half", n)?),
        bound: 5.0,
        at_most: true,
    },
    Target {
        name: "the same, refused by REFUSED_STREAM resets: goodput",
        formula: "capped_reset_overload / capped_reset_peak",
        figure: |r, n| {
            Some(goodput(r, "capped_reset_overload", n)? / goodput(r, "capped_reset_peak", n)?)
        },
        bound: 0.9,
        at_most: false,
    },
    Target {
        name: "the same, refused by REFUSED_STREAM resets: p99",
        formula: "capped_reset_overload.p99 / capped_reset_half.p99",
        figure: |r, n| {
            Some(p99(r, "capped_reset_overload", n)? / p99(r, "capped_reset_half", n)?)
        },
        bound: 5.0,
        at_most: true,
    },
    Target {
        name: "the same, from gateways that throttle themselves (client-side adaptive throttling, K = 1.5, as docs/api.md recommends): goodput",
        formula: "capped_throttled_overload / capped_peak",
        figure: |r, n| {
            Some(goodput(r, "capped_throttled_overload", n)? / goodput(r, "capped_peak", n)?)
        },
        bound: 0.9,
        at_most: false,
    },
    Target {
        name: "the same, from gateways that throttle themselves: p99",
        formula: "capped_throttled_overload.p99 / capped_half.p99",
        figure: |r, n| Some(p99(r, "capped_throttled_overload", n)? / p99(r, "capped_half", n)?),
        bound: 5.0,
        at_most: true,
    },
    Target {
        name: "after a 10 s burst at 2× the sustainable rate: p99 from 1 s to 3 s after it vs before it",
        formula: "capped_burst.after_burst_p99_us / capped_burst.before_burst_p99_us",
        figure: |r, n| {
            Some(
                extra(r, "capped_burst", "after_burst_p99_us", n)?
                    / extra(r, "capped_burst", "before_burst_p99_us", n)?,
            )
        },
        bound: 1.5,
        at_most: true,
    },
    Target {
        name: "invalidation lag p99 at 100 updates/s, half load: commit → applied on the replica (the daemon's histogram, bound of the bucket holding it, ms)",
        formula: "hot_updates_half.applied_lag_p99_bound_ms",
        figure: |r, n| extra(r, "hot_updates_half", "applied_lag_p99_bound_ms", n),
        bound: 5.0,
        at_most: true,
    },
    Target {
        name: "the same, commit → the new name in an answer (ms)",
        formula: "hot_updates_half.lag.p99 / 1000",
        figure: |r, n| Some(get(r, "hot_updates_half", n)?.lag?.p99 / 1000.0),
        bound: 10.0,
        at_most: true,
    },
    Target {
        name: "updates do not stall lookups: p99 at half load with 100 agent updates/s vs without",
        formula: "hot_updates_half.p99 / hot_half_own.p99",
        figure: |r, n| Some(p99(r, "hot_updates_half", n)? / p99(r, "hot_half_own", n)?),
        bound: 1.5,
        at_most: true,
    },
    Target {
        name: "updates cause no shedding at half load",
        formula: "hot_updates_half: shed + errors",
        figure: |r, n| {
            let run = get(r, "hot_updates_half", n)?;
            Some((run.shed + run.errors) as f64)
        },
        bound: 0.0,
        at_most: true,
    },
    Target {
        name: "hot throughput drop during updates",
        formula: "1 − hot_updates / hot_peak",
        figure: |r, n| drop_from(r, "hot_updates", "hot_peak", n),
        bound: 0.05,
        at_most: true,
    },
    Target {
        name: "the same, less the no-op's drop under the same updates (what the database's work takes from the shared cores)",
        formula: "(1 − hot_updates / hot_peak) − (1 − noop_updates / noop_peak)",
        figure: |r, n| {
            Some(
                drop_from(r, "hot_updates", "hot_peak", n)?
                    - drop_from(r, "noop_updates", "noop_peak", n)?,
            )
        },
        bound: 0.05,
        at_most: true,
    },
    Target {
        name: "hot RouteCall throughput vs its floor: the no-op's, or the admission script's alone against Redis, whichever is lower",
        formula: "hot_route_peak / min(noop_route_peak, admission_peak)",
        figure: |r, n| {
            let floor = goodput(r, "noop_route_peak", n)?.min(goodput(r, "admission_peak", n)?);
            Some(goodput(r, "hot_route_peak", n)? / floor)
        },
        bound: 0.7,
        at_most: false,
    },
    Target {
        name: "hot RouteCall throughput vs the per-call customer query",
        formula: "hot_route_peak / pg_customer_peak",
        figure: |r, n| Some(goodput(r, "hot_route_peak", n)? / goodput(r, "pg_customer_peak", n)?),
        bound: 5.0,
        at_most: false,
    },
    Target {
        name: "RouteCall p50 at low load over the no-op's p50 + the admission script's p50 (µs)",
        formula: "hot_route_low.p50 − (noop_route_low.p50 + admission_low.p50)",
        figure: |r, n| {
            Some(
                p50(r, "hot_route_low", n)?
                    - (p50(r, "noop_route_low", n)? + p50(r, "admission_low", n)?),
            )
        },
        bound: 30.0,
        at_most: true,
    },
    Target {
        name: "whole calls at half the sustainable rate: records acknowledged and then missing from the database, or found there twice",
        formula: "lifecycle_half: records lost + duplicated",
        figure: |r, n| lost_or_duplicated(r, "lifecycle_half", n),
        bound: 0.0,
        at_most: true,
    },
    Target {
        name: "the same: RPCs failed, shed or not sent (RouteCall, RecordUsage, EndCall)",
        formula: "lifecycle_half: Σ errors + shed + dropped",
        figure: |r, n| failed_rpcs(r, "lifecycle_half", n),
        bound: 0.0,
        at_most: true,
    },
    Target {
        name: "EndCall p99 at half the sustainable rate vs a bare commit's p99 at the same time",
        formula: "lifecycle_half/end_call.p99 / commit_during_half.p99",
        figure: |r, n| {
            let end_call = rpc(r, "lifecycle_half", END_CALL, n)?.latency?.p99;
            Some(end_call / p99(r, "commit_during_half", n)?)
        },
        bound: 2.0,
        at_most: true,
    },
    Target {
        name: "RouteCall p99 while the pooler is stopped for 10 s vs before",
        formula: "lifecycle_outage/route_call_during.p99 / lifecycle_outage/route_call_before.p99",
        figure: |r, n| {
            let during = rpc(r, "lifecycle_outage", ROUTE_CALL_DURING, n)?.latency?.p99;
            Some(during / rpc(r, "lifecycle_outage", ROUTE_CALL_BEFORE, n)?.latency?.p99)
        },
        bound: 1.5,
        at_most: true,
    },
    Target {
        name: "the same run: records acknowledged and then missing from the database, or found there twice",
        formula: "lifecycle_outage: records lost + duplicated",
        figure: |r, n| lost_or_duplicated(r, "lifecycle_outage", n),
        bound: 0.0,
        at_most: true,
    },
];

/// A target's median over the repetitions, and whether it is met.
pub fn evaluate(target: &Target, results: &Results) -> Option<(f64, usize, bool)> {
    // repetition 0 holds what is measured once per session (memory)
    let reps: std::collections::BTreeSet<u32> = results
        .values()
        .flat_map(|runs| runs.keys().copied())
        .filter(|&rep| rep > 0)
        .collect();
    let figures: Vec<f64> = reps
        .iter()
        .filter_map(|&n| (target.figure)(results, n))
        .collect();
    let value = median(figures.clone())?;
    let met = if target.at_most {
        value <= target.bound
    } else {
        value >= target.bound
    };
    Some((value, figures.len(), met))
}
