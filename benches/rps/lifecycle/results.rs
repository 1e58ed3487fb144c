//! A lifecycle run as results: one per RPC, RouteCall's split by the outage
//! phases, the landed check and the concurrency in RouteCall's `extra`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use tonic::Code;

use super::{
    landed::{per_unit, Landed},
    outage::PHASES,
    tally::RpcTally,
    timeline::{write_tsv, Timeline},
    CallOutcome, Run,
};
use crate::{
    cli::LifecycleArgs,
    result::{histogram, record, write_result, Latency, RunResult},
};

/// The results of a run, each with the suffix of its file: `route_call`,
/// `record_usage`, `end_call`, then `route_call_before` ... with an outage.
pub fn results_of(
    args: &LifecycleArgs,
    run: &Run,
    landed: Option<&Landed>,
) -> Vec<(String, RunResult)> {
    let seconds = args.duration.as_secs_f64();
    let mut route = rpc_result(
        args,
        "route_call",
        Some(run.rate),
        seconds,
        &run.shared.route,
    );
    let counted = run.outcomes.iter().filter(|o| o.counted).count();
    let extra = &mut route.extra;
    extra.insert("calls_offered_per_sec".into(), counted as f64 / seconds);
    extra.insert(
        "peak_concurrent_calls".into(),
        run.shared.peak.load(Ordering::Acquire) as f64,
    );
    for (kind, count) in landed.into_iter().flatten() {
        let (key, per_unit) = (kind.replace(' ', "_"), per_unit(kind));
        for (figure, value) in [
            ("acknowledged", count.acknowledged),
            ("landed", count.landed),
            ("lost", count.lost),
            ("duplicated", count.duplicated),
            ("unacknowledged", count.unacknowledged),
            ("unacknowledged_landed", count.unacknowledged_landed),
        ] {
            extra.insert(format!("{key}_{figure}"), value as f64 / per_unit);
        }
    }
    let mut results = vec![
        ("route_call".to_string(), route),
        (
            "record_usage".into(),
            rpc_result(args, "record_usage", None, seconds, &run.shared.usage),
        ),
        (
            "end_call".into(),
            rpc_result(args, "end_call", None, seconds, &run.shared.end),
        ),
    ];
    if let Some(outage) = &run.outage {
        let spans = outage.spans(run.window);
        for (phase, name) in PHASES.iter().enumerate() {
            let calls = run
                .outcomes
                .iter()
                .filter(|o| o.counted && outage.phase(o.due) == phase);
            let label = format!("route_call_{name}");
            let result = phase_result(args, &label, run.rate, spans[phase].as_secs_f64(), calls);
            results.push((label, result));
        }
    }
    results
}

/// One RPC's result from its tally: failures by code in `extra`. Its
/// offered rate is `rate`, or else what was sent per second (a call's
/// usage and end follow from its holding time).
fn rpc_result(
    args: &LifecycleArgs,
    rpc: &str,
    rate: Option<f64>,
    seconds: f64,
    tally: &RpcTally,
) -> RunResult {
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let t = &tally.tally;
    let good = count(&t.ok) + count(&t.not_found);
    let extra: BTreeMap<String, f64> = tally
        .codes
        .lock()
        .unwrap()
        .iter()
        .map(|(code, n)| (format!("code_{code}"), *n as f64))
        .collect();
    RunResult {
        label: format!("{}/{rpc}", args.label),
        rep: args.rep,
        mode: "lifecycle".into(),
        concurrency: None,
        offered_rate: Some(rate.unwrap_or(count(&t.requests) as f64 / seconds)),
        seconds,
        requests: count(&t.requests),
        ok: count(&t.ok),
        not_found: count(&t.not_found),
        shed: count(&t.shed),
        errors: count(&t.errors),
        dropped: 0,
        goodput: good as f64 / seconds,
        latency: Latency::of(&t.latency.lock().unwrap()),
        lag: None,
        extra,
    }
}

/// RouteCall over the calls due in one phase of the outage.
fn phase_result<'a>(
    args: &LifecycleArgs,
    label: &str,
    rate: f64,
    seconds: f64,
    calls: impl Iterator<Item = &'a CallOutcome>,
) -> RunResult {
    let latency = std::sync::Mutex::new(histogram());
    let mut result = RunResult {
        label: format!("{}/{label}", args.label),
        rep: args.rep,
        mode: "lifecycle".into(),
        offered_rate: Some(rate),
        seconds,
        ..RunResult::default()
    };
    for call in calls {
        result.requests += 1;
        match (call.routed, call.route_latency) {
            (Ok(_), _) => result.ok += 1,
            (Err(Code::NotFound), Some(_)) => result.not_found += 1,
            _ if call.shed => result.shed += 1,
            _ => result.errors += 1,
        }
        if let Some(elapsed) = call.route_latency {
            record(&latency, elapsed);
        }
    }
    result.goodput = (result.ok + result.not_found) as f64 / seconds.max(f64::EPSILON);
    result.latency = Latency::of(&latency.lock().unwrap());
    result
}

/// `PATH.<suffix>.json` for each result (a `.json` PATH ends in
/// `.<suffix>.json`), and the timeline in `PATH.timeline.tsv`: not JSON,
/// which `rps report` would read as a result.
pub fn write_results(
    args: &LifecycleArgs,
    results: &[(String, RunResult)],
    timeline: &Timeline,
) -> anyhow::Result<()> {
    let Some(out) = &args.out else {
        return Ok(());
    };
    for (suffix, result) in results {
        write_result(result, Some(&with_suffix(out, &format!("{suffix}.json"))))?;
    }
    write_tsv(timeline, &with_suffix(out, "timeline.tsv"))
}

fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let base = out.to_string_lossy();
    let base = base.strip_suffix(".json").unwrap_or(&base);
    PathBuf::from(format!("{base}.{suffix}"))
}
