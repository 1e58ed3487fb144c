//! The open-loop load generator behind `deploy/local/bench`, with the no-op
//! baseline server, the bench data set, the L1 memory probe and the report.
//!
//! ```text
//! rps noop   --addr A                 the ceiling: same proto, canned answer, no work
//! rps seed   --database-url U          10 000 numbers over 100 organizations and agents,
//!            [--customers-per-org N]   100 known customers each (see dataset.rs)
//! rps load   --target T --label L      one run: closed loop (--concurrency) or open loop
//!            (--concurrency N | --rate R) (--rate, requests/s on a fixed schedule); JSON out
//!            [--rpc lookup|route-call] LookupNumber, or RouteCall (calls never ended)
//!            [--known-share S --withheld-share S --run-id ID]   RouteCall's callers
//!            [--lag-database-url U]    meanwhile: agent updates and their invalidation lag
//!            [--unwatched-updates]     the updates only (for the throughput under them)
//! rps lifecycle --target T --label L   whole calls: RouteCall, RecordUsage every
//!            (--calls-per-sec R | --rate-factor F --rate-of RESULT)   --usage-every
//!            [--hold-mean 3s --hold-max 20s --usage-every 1s]   while held, EndCall
//!            [--database-url U]        then: everything acknowledged landed, exactly once
//!            [--outage-at T --outage-for D --outage-start CMD --outage-end CMD]
//!            [--out P]                 P.route_call.json, ..., P.timeline.tsv
//! rps coalesce --target T --metrics M  100 concurrent misses for one number → queries?
//! rps memory --entries N               resident bytes per L1 entry
//! rps import-pgbench / import-redis    baselines' own output, as the same JSON
//! rps report --dir D                   the Markdown table, ratios and targets
//! ```
//!
//! Without a subcommand (`cargo test --bench rps`, CI) it checks itself
//! against an in-process no-op server: every scheduled request is accounted
//! for, closed and open loop, lookups and RouteCalls, every scheduled call's
//! RouteCall, usage and EndCall in a lifecycle run, the report computes its
//! ratios, and the memory probe counts what it inserts.
//!
//! Open loop means requests leave on a fixed schedule whether or not earlier
//! ones have been answered, and latency is measured from the *scheduled*
//! send time, so a stalled server is charged for the requests it delayed
//! (no coordinated omission). A dedicated pacer thread, with a 1 µs timer
//! slack, hands each request to the runtime at its time, or, at rates above
//! one per 100 µs, with the others due by the time it wakes; its lateness
//! (about 100 µs at most) is part of every latency, no-op included, and
//! cancels out of the differences the report takes. In a lifecycle run the
//! pacer places the calls; a call's RecordUsage and EndCall leave on the
//! runtime's timer, whose millisecond resolution is in their latencies.
//!
//! The number mix: `--hot-share` of requests go to the hot set (the first
//! `--hot` numbers), `--unknown-share` to numbers nobody provisioned (an
//! expected `NOT_FOUND`), the rest uniformly over every provisioned number
//! (the long tail). The caller mix of RouteCalls: `--known-share` a known
//! customer of the called number's organization, `--withheld-share` no
//! caller id, the rest numbers no customer has.

// Tests and benches stop at the first surprise: unwrapping is how they say so.
#![allow(clippy::unwrap_used)]
// two libc calls: the pacer's timer slack and the page size
#![allow(unsafe_code)]

#[path = "../common/mod.rs"]
mod common;

mod admission;
mod calls;
mod cli;
mod client;
mod coalesce;
mod dataset;
mod import;
mod lifecycle;
mod load;
mod memory;
mod metrics;
mod noop;
mod pgbench_scripts;
mod report;
mod result;
mod seed;
mod self_check;

use clap::Parser;

use crate::{
    cli::{Cli, Command},
    coalesce::coalesce,
    import::{import_callgrind, import_count, import_fsync, import_pgbench, import_redis},
    memory::memory,
    metrics::{import_recorder, scrape_recorder},
    pgbench_scripts::pgbench_scripts,
    report::report,
    result::{read_results, write_result},
    seed::seed,
    self_check::self_check,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` appends --bench; `cargo test` passes nothing
    let args = std::env::args().filter(|a| a != "--bench");
    let Some(command) = Cli::parse_from(args).command else {
        return self_check().await;
    };
    match command {
        Command::Noop { addr } => noop::run(addr).await,
        Command::Seed { database_url, data } => seed(&database_url, &data).await,
        Command::Load(args) => load::run(*args).await,
        Command::Lifecycle(args) => lifecycle::run(*args).await,
        Command::Coalesce {
            target,
            metrics,
            number,
            rep,
            out,
        } => write_result(
            &coalesce(&target, &metrics, &number, rep).await?,
            out.as_deref(),
        ),
        Command::Memory {
            entries,
            organizations,
            out,
        } => write_result(&memory(entries, organizations).await?, out.as_deref()),
        Command::ImportPgbench {
            label,
            rep,
            seconds,
            concurrency,
            rate,
            out,
            logs,
        } => write_result(
            &import_pgbench(&logs, label, rep, seconds, concurrency, rate)?,
            Some(&out),
        ),
        Command::ImportRedis {
            label,
            rep,
            concurrency,
            out,
            csv,
        } => write_result(&import_redis(&csv, label, rep, concurrency)?, Some(&out)),
        Command::ImportCallgrind {
            label,
            instructions,
            run,
            out,
        } => write_result(&import_callgrind(&run, label, instructions)?, Some(&out)),
        Command::ImportCount {
            label,
            instructions,
            count,
            out,
        } => write_result(&import_count(label, instructions, count)?, Some(&out)),
        Command::PgbenchScripts { dir, data } => pgbench_scripts(&dir, &data),
        Command::Report { dir } => {
            print!("{}", report(&read_results(&dir)?));
            Ok(())
        }
        Command::Admission(args) => admission::run(args).await,
        Command::ImportFsync {
            label,
            method,
            out,
            output,
        } => write_result(&import_fsync(&output, label, &method)?, Some(&out)),
        Command::ScrapeRecorder { metrics, out } => scrape_recorder(&metrics, &out).await,
        Command::ImportRecorder {
            label,
            rep,
            before,
            after,
            out,
        } => write_result(&import_recorder(&before, &after, label, rep)?, Some(&out)),
    }
}
