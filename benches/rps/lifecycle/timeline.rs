//! The concurrent calls over time: sampled every 100 ms, summarized per
//! second on stderr and written whole as TSV.

use std::{
    fmt::Write as _,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;

use super::Shared;

pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Samples: seconds from the measured window's start (negative in the
/// warm-up), and the calls routed and not yet ended then.
pub type Timeline = Vec<(f64, i64)>;

/// Samples `shared.live` until `stop` is set.
pub fn sample(shared: Arc<Shared>, from: Instant, stop: Arc<AtomicBool>) -> JoinHandle<Timeline> {
    tokio::spawn(async move {
        let mut timeline = Timeline::new();
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Acquire) {
            ticker.tick().await;
            let now = Instant::now();
            let t = match now.checked_duration_since(from) {
                Some(after) => after.as_secs_f64(),
                None => -(from - now).as_secs_f64(),
            };
            timeline.push((t, shared.live.load(Ordering::Acquire)));
        }
        timeline
    })
}

/// Lowest and highest per whole second, from the first second sampled.
pub fn per_second(timeline: &Timeline) -> Vec<(i64, i64, i64)> {
    let mut seconds: Vec<(i64, i64, i64)> = Vec::new();
    for &(t, live) in timeline {
        let second = t.floor() as i64;
        match seconds.last_mut() {
            Some((s, min, max)) if *s == second => {
                *min = (*min).min(live);
                *max = (*max).max(live);
            }
            _ => seconds.push((second, live, live)),
        }
    }
    seconds
}

/// The per-second summary, ten seconds a line.
pub fn summary(timeline: &Timeline) -> String {
    let mut text =
        String::from("concurrent calls, lowest-highest per second (0s: the window's start):");
    for (n, (second, min, max)) in per_second(timeline).into_iter().enumerate() {
        if n % 10 == 0 {
            let _ = write!(text, "\n  {second:>4}s ");
        }
        let _ = write!(text, " {min}-{max}");
    }
    text
}

pub fn write_tsv(timeline: &Timeline, path: &Path) -> anyhow::Result<()> {
    let mut tsv = String::from("seconds\tconcurrent_calls\n");
    for (t, live) in timeline {
        let _ = writeln!(tsv, "{t:.3}\t{live}");
    }
    std::fs::write(path, tsv)?;
    Ok(())
}
