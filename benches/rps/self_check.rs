//! Without a subcommand: the generator against an in-process no-op server.

use std::time::{Duration, Instant};

use clap::Parser;
use tokio::net::TcpListener;

use switchboard::domain::E164;
use uuid::Uuid;

use crate::{
    cli::{Cli, Command, LoadArgs, Rpc},
    client::connect,
    dataset::{bench_number, customer_phone, stranger_phone},
    lifecycle::{
        expected::{Expected, UsageKey},
        landed::{compare_opened, compare_rollup, compare_usage, CallRow, Rollup},
        lifecycle, per_second, results_of,
    },
    load::{load, open::pace, throttle::Throttle},
    memory::memory,
    metrics::p99_bucket,
    noop::serve_noop,
    report::{evaluate, median, report, TARGETS},
    result::{read_results, write_result, RunResult},
};

/// `cargo test --bench rps`: the generator against an in-process no-op
/// server. Asserts accounting, not speed.
pub async fn self_check() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let target = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve_noop(listener));
    let closed = check_loops(&target).await?;
    check_route_calls(&target).await?;
    check_lifecycle(&target).await?;
    check_pacer().await?;
    check_throttle();
    check_phones();
    check_comparisons();
    check_p99_bucket();
    check_report(&closed)?;
    crate::report::call_path_check::check();

    let memory = memory(10_000, 100).await?;
    assert_eq!(memory.ok, 10_000, "every number kept");
    assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    println!("rps: self-check passed");
    Ok(())
}

/// A closed and an open loop against `target`, every request accounted
/// for; returns the closed loop's result.
async fn check_loops(target: &str) -> anyhow::Result<RunResult> {
    let args = |label: &str| {
        let cli = Cli::parse_from([
            "rps",
            "load",
            "--target",
            target,
            "--label",
            label,
            "--warmup",
            "200ms",
            "--duration",
            "500ms",
            "--connections",
            "2",
        ]);
        match cli.command {
            Some(Command::Load(args)) => *args,
            _ => unreachable!("a load command"),
        }
    };

    let closed = load(LoadArgs {
        concurrency: Some(4),
        ..args("noop_peak")
    })
    .await?;
    assert_eq!(closed.errors, 0, "{closed:?}");
    assert!(closed.ok > 0, "closed loop answered nothing: {closed:?}");
    assert_eq!(closed.requests, closed.ok + closed.not_found + closed.shed);
    assert_eq!(closed.latency.unwrap().count, closed.ok);

    // 400/s for 0.5 s: the schedule has exactly 200 requests in the window,
    // each answered or accounted for whatever the machine's speed
    let open = load(LoadArgs {
        rate: Some(400.0),
        ..args("noop_half")
    })
    .await?;
    assert_eq!(open.requests, 200, "{open:?}");
    assert_eq!(
        open.ok + open.errors + open.dropped + open.shed,
        200,
        "{open:?}"
    );
    assert_eq!(open.errors, 0, "{open:?}");
    assert!(open.extra.contains_key("send_late_p99_us"), "{open:?}");
    Ok(closed)
}

/// `load --rpc route-call`, closed loop: every call routed.
async fn check_route_calls(target: &str) -> anyhow::Result<()> {
    let cli = Cli::parse_from([
        "rps",
        "load",
        "--target",
        target,
        "--label",
        "noop_route_peak",
        "--rpc",
        "route-call",
        "--concurrency",
        "4",
        "--warmup",
        "100ms",
        "--duration",
        "300ms",
    ]);
    let Some(Command::Load(args)) = cli.command else {
        unreachable!("a load command")
    };
    assert_eq!(args.rpc, Rpc::RouteCall);
    let routed = load(*args).await?;
    assert_eq!(routed.errors, 0, "{routed:?}");
    assert!(routed.ok > 0, "no call routed: {routed:?}");
    assert_eq!(routed.requests, routed.ok + routed.not_found + routed.shed);
    Ok(())
}

/// `lifecycle` at 200 calls/s for 0.2 s + 1 s, holding 100 ms on average:
/// every call routed, every planned report and every end acknowledged and
/// counted, and the concurrent calls about what rate × hold makes them.
async fn check_lifecycle(target: &str) -> anyhow::Result<()> {
    let cli = Cli::parse_from([
        "rps",
        "lifecycle",
        "--target",
        target,
        "--label",
        "noop_life",
        "--calls-per-sec",
        "200",
        "--warmup",
        "200ms",
        "--duration",
        "1s",
        "--hold-mean",
        "100ms",
        "--hold-max",
        "300ms",
        "--usage-every",
        "50ms",
        "--outage-at",
        "300ms",
        "--outage-for",
        "300ms",
        "--outage-start",
        "true",
        "--outage-end",
        "true",
    ]);
    let Some(Command::Lifecycle(args)) = cli.command else {
        unreachable!("a lifecycle command")
    };
    let run = lifecycle(&args, 200.0, "self-check", connect(target, 2).await?).await?;
    // the schedule has exactly 240 calls, 200 of them in the window
    assert_eq!(run.outcomes.len(), 240);
    let counted: Vec<_> = run.outcomes.iter().filter(|o| o.counted).collect();
    assert_eq!(counted.len(), 200);
    for call in &run.outcomes {
        assert!(call.routed.is_ok(), "{}", call.gateway_call_id);
        assert_eq!(
            call.usage.len(),
            call.usage_planned,
            "{}",
            call.gateway_call_id
        );
        assert!(call
            .usage
            .iter()
            .all(|(items, acked)| *acked && !items.is_empty()));
        assert_eq!(call.ended, Some(true), "{}", call.gateway_call_id);
    }
    let reports: usize = counted.iter().map(|c| c.usage_planned).sum();
    assert!(reports > 0, "no call held long enough to report usage");
    let results = results_of(&args, &run, None);
    let labels: Vec<&str> = results.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "route_call",
            "record_usage",
            "end_call",
            "route_call_before",
            "route_call_during",
            "route_call_after"
        ]
    );
    for ((_, result), sent) in results.iter().zip([200, reports as u64, 200]) {
        assert_eq!((result.requests, result.ok), (sent, sent), "{result:?}");
        assert_eq!(result.latency.unwrap().count, sent, "{result:?}");
    }
    let phases: u64 = results[3..].iter().map(|(_, r)| r.ok).sum();
    assert_eq!(phases, 200, "{results:?}");
    check_concurrency(&run, 200.0, (0.1, 0.3));
    Ok(())
}

/// The concurrency timeline: every call ended, and in the window's steady
/// part between a third and three times rate × mean hold (the exponential
/// capped at `max`); never above rate × (`max` + 0.2 s).
fn check_concurrency(run: &crate::lifecycle::Run, rate: f64, (mean, max): (f64, f64)) {
    use std::sync::atomic::Ordering;
    assert_eq!(
        run.shared.live.load(Ordering::Acquire),
        0,
        "calls left open"
    );
    assert!(!per_second(&run.timeline).is_empty());
    let expected = rate * mean * (1.0 - (-max / mean).exp());
    let steady: Vec<f64> = run
        .timeline
        .iter()
        .filter(|(t, _)| (max..1.0).contains(t))
        .map(|&(_, live)| live as f64)
        .collect();
    assert!(!steady.is_empty(), "{:?}", run.timeline);
    let average = steady.iter().sum::<f64>() / steady.len() as f64;
    assert!(
        (expected / 3.0..expected * 3.0).contains(&average),
        "{average} concurrent calls on average, expected about {expected}: {:?}",
        run.timeline
    );
    let peak = run.shared.peak.load(Ordering::Acquire) as f64;
    assert!(
        peak <= rate * (max + 0.2),
        "{peak} concurrent calls at most"
    );
}

/// Customer and stranger phones are canonical E.164, as `E164::parse`
/// reads them, and never a bench number.
/// The pacer: every time due is called, in order, never before it is
/// due, and at a high rate in batches (a wake-up per request is what made
/// the generator its own bottleneck).
async fn check_pacer() -> anyhow::Result<()> {
    let rate = 50_000.0;
    let start = Instant::now();
    let calls = pace(
        rate,
        start + Duration::from_millis(50),
        Vec::new(),
        |calls: &mut Vec<(u32, Instant, Instant)>, i, due| calls.push((i, due, Instant::now())),
    )
    .await?;
    assert!(
        calls.len().abs_diff(2_500) <= 1,
        "{} calls in 50 ms at 50 000/s",
        calls.len()
    );
    for (n, &(i, due, called)) in calls.iter().enumerate() {
        assert_eq!(i as usize, n, "in order");
        assert!(called >= due, "call {i} left before it was due");
    }
    let wake_ups = 1 + calls
        .windows(2)
        .filter(|pair| pair[1].2 - pair[0].2 > Duration::from_micros(10))
        .count();
    assert!(
        wake_ups < calls.len() / 2,
        "{wake_ups} wake-ups for {} calls",
        calls.len()
    );
    Ok(())
}

/// The client-side throttle refuses nothing while everything is accepted,
/// refuses with `(requests − K·accepts) / (requests + 1)` once it is not,
/// and forgets what it counted a second later.
fn check_throttle() {
    let start = Instant::now();
    let throttle = Throttle::new(1.5, start);
    for _ in 0..100 {
        assert!(throttle.admit(start, 0.0), "refused while all is accepted");
        throttle.accepted(start);
    }
    // 100 requests more, none accepted: 200 requests, 100 accepts
    for _ in 0..100 {
        throttle.admit(start, 1.0 - f64::EPSILON);
    }
    let refused = (200.0 - 1.5 * 100.0) / 201.0;
    assert!(
        !throttle.admit(start, refused - 0.01),
        "admitted below the probability"
    );
    assert!(
        throttle.admit(start, refused + 0.01),
        "refused above the probability"
    );
    let later = start + Duration::from_millis(1_100);
    assert!(
        throttle.admit(later, 0.0),
        "a second later, nothing is remembered"
    );
}

fn check_phones() {
    for phone in [
        customer_phone(99, 99, 100),
        customer_phone(0, 0, 100),
        stranger_phone(42, 7, 100),
    ] {
        let parsed = E164::parse(&phone, None).expect("valid E.164");
        assert_eq!(parsed.as_str(), phone);
        assert_ne!(phone[..5], bench_number(0)[..5]);
    }
    assert_ne!(customer_phone(1, 0, 100), customer_phone(0, 99, 100));
}

/// The landed check's comparisons: an acknowledged record missing is lost,
/// one nobody asked for duplicated, an unacknowledged one that landed
/// neither; `usage_daily` must grow by exactly the quantities.
fn check_comparisons() {
    let org = Uuid::from_u128(1);
    let [a, b, c, d] = [10, 11, 12, 13].map(Uuid::from_u128);
    let key = |thousandths| UsageKey {
        org,
        metric: "call_seconds".into(),
        thousandths,
    };
    let mut expected = Expected::default();
    expected.usage.extend([(a, key(1000)), (b, key(2000))]);
    expected.unacked_usage.insert(c, key(500));
    // a missing, c landed unacknowledged, d named by no request
    let (count, landed) = compare_usage(&expected, &[b, c, d]);
    let figures = |c: crate::lifecycle::landed::Count| {
        (
            c.acknowledged,
            c.landed,
            c.lost,
            c.duplicated,
            c.unacknowledged_landed,
        )
    };
    assert_eq!(figures(count), (2, 1, 1, 1, 1));
    let rollup =
        |thousandths| Rollup::from([((org, "call_seconds".to_string()), (thousandths, 0))]);
    let before = rollup(100);
    // c landed, so the rollup must have grown by 3500
    let short = compare_rollup(&expected, &landed, &before, &rollup(100 + 2500));
    assert_eq!(
        (short.acknowledged, short.lost, short.duplicated),
        (3000, 1000, 0)
    );
    let twice = compare_rollup(&expected, &landed, &before, &rollup(100 + 4500));
    assert_eq!((twice.lost, twice.duplicated), (0, 1000));

    expected.opened.insert("run-1".into(), a);
    expected.opened.insert("run-2".into(), b);
    expected.unopened.insert("run-3".into());
    let row = |id, gateway: &str| CallRow {
        id,
        gateway_call_id: Some(gateway.into()),
        ended: false,
        end_reason: None,
        status: "ringing".into(),
    };
    let rows = [
        row(a, "run-1"),
        row(d, "run-1"),
        row(c, "run-3"),
        row(d, "run-4"),
    ];
    // run-2 lost; run-1 twice and run-4 unasked for
    let opened = compare_opened(&expected, &rows);
    assert_eq!(figures(opened), (2, 1, 1, 2, 1));
}

/// The p99 of what a histogram gained between two readings: 100 added, 98
/// within 5 ms, the 99th within 10 ms.
fn check_p99_bucket() {
    let before = [(0.005, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)];
    let after = [(0.005, 108.0), (0.01, 109.0), (f64::INFINITY, 110.0)];
    assert_eq!(p99_bucket(&before, &after), Some((0.01, 100.0)));
    assert_eq!(p99_bucket(&before, &before), None);
}

/// Results written, read back and reported: a target's ratio, and one
/// whose runs are missing.
fn check_report(closed: &RunResult) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_result(closed, Some(&dir.path().join("a.json")))?;
    let mut hot = closed.clone();
    hot.label = "hot_peak".into();
    hot.goodput = closed.goodput * 0.5;
    write_result(&hot, Some(&dir.path().join("b.json")))?;
    let results = read_results(dir.path())?;
    let (ratio, reps, met) = evaluate(&TARGETS[0], &results).expect("both runs present");
    assert!(
        (ratio - 0.5).abs() < 1e-9 && reps == 1 && !met,
        "{ratio} {reps} {met}"
    );
    assert!(
        evaluate(&TARGETS[5], &results).is_none(),
        "no PostgREST run"
    );
    let table = report(&results);
    assert!(
        table.contains("| hot_peak |") && table.contains("**no**"),
        "{table}"
    );
    Ok(())
}
