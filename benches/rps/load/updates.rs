//! Agent updates during a run, and how long each takes to show in answers.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use switchboard::proto::call_router_client::CallRouterClient;
use tonic::transport::Channel;

use crate::{
    cli::LoadArgs,
    client::lookup,
    dataset::{bench_agent_id, bench_number},
    result::{histogram, record},
};

/// How often a watcher asks for the agent it waits on, for the first
/// [`WATCH_CLOSELY`] after the commit: the lag's resolution there. Asking
/// again at once instead would add, per update in flight, a closed loop of
/// lookups to the load being measured.
const WATCH_EVERY: Duration = Duration::from_millis(1);
/// How long a watcher asks every [`WATCH_EVERY`] (the target is 10 ms);
/// past it, every [`WATCH_LATE_EVERY`]. Asking every millisecond for as
/// long as an update takes would make the watchers' lookups grow with the
/// lag (100 updates/s 50 ms late: 5,000 lookups/s more), and a lag that
/// grew for any reason would then grow on the watchers' own load.
const WATCH_CLOSELY: Duration = Duration::from_millis(20);
/// How often a watcher asks past [`WATCH_CLOSELY`].
const WATCH_LATE_EVERY: Duration = Duration::from_millis(10);

/// The lag histogram, and how many updates were made and how many never
/// showed.
pub type UpdatesSeen = (Histogram<u64>, (u64, u64));

/// Updates agents at `updates_per_sec` during the window; for each (unless
/// `unwatched_updates`), the time from its commit until an answer for one of
/// the agent's hot numbers carries the new name. Returns the lag histogram,
/// and how many updates were made and how many never showed within 5 s.
pub async fn invalidation_lag(
    database_url: String,
    client: CallRouterClient<Channel>,
    args: LoadArgs,
    (from, until): (Instant, Instant),
    stop: Arc<AtomicBool>,
) -> anyhow::Result<UpdatesSeen> {
    let db = switchboard::store::connect_direct(&database_url).await?;
    let lags = Arc::new(Mutex::new(histogram()));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.updates_per_sec));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchers = Vec::new();
    let mut version: u64 = 0;
    while !stop.load(Ordering::Acquire) && Instant::now() < until {
        ticker.tick().await;
        if Instant::now() < from {
            continue;
        }
        // number g is a hot number of agent g
        let g = (version as usize) % args.data.organizations.min(args.hot);
        version += 1;
        let name = format!("Agent {g} v{version}");
        db.execute(
            "update public.agents set name = $1 where id = $2",
            &[&name, &bench_agent_id(g)],
        )
        .await?;
        if args.unwatched_updates {
            continue;
        }
        let committed = Instant::now();
        let (mut client, lags, deadline) = (client.clone(), lags.clone(), args.deadline);
        watchers.push(tokio::spawn(async move {
            let give_up = committed + Duration::from_secs(5);
            loop {
                let answer = lookup(&mut client, bench_number(g), deadline).await;
                let seen = match answer {
                    Ok(answer) => answer.route.and_then(|r| r.agent).map(|a| a.name),
                    Err(status) => Some(format!("{:?}: {}", status.code(), status.message())),
                };
                if seen.as_deref() == Some(name.as_str()) {
                    record(&lags, committed.elapsed());
                    return Ok(());
                }
                anyhow::ensure!(
                    Instant::now() < give_up,
                    "the update of agent {g} to {name:?} never showed in an answer; the last was {seen:?}"
                );
                let every = if committed.elapsed() < WATCH_CLOSELY {
                    WATCH_EVERY
                } else {
                    WATCH_LATE_EVERY
                };
                tokio::time::sleep(every).await;
            }
        }));
    }
    // an update that never shows is reported, and counted, not fatal: the
    // run's other figures still stand
    let mut unseen = 0;
    for watcher in watchers {
        if let Err(error) = watcher.await? {
            if unseen == 0 {
                eprintln!("rps: {}: {error}", args.label);
            }
            unseen += 1;
        }
    }
    let lags = lags.lock().unwrap().clone();
    Ok((lags, (version, unseen)))
}
