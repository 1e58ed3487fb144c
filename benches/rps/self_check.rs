//! Without a subcommand: the generator against an in-process no-op server.

use clap::Parser;
use tokio::net::TcpListener;

use crate::{
    cli::{Cli, Command, LoadArgs},
    load::load,
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
            Some(Command::Load(args)) => args,
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
