//! The open loop: requests on a fixed schedule, whatever the server does.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use switchboard::proto::call_router_client::CallRouterClient;
use tonic::{transport::Channel, Code, Status};

use super::{
    tally::{overloaded, Tally},
    throttle::Throttle,
};
use crate::{
    calls::{send, Requests},
    cli::LoadArgs,
    result::histogram,
};

/// Requests leave at `rate` per second from a pacer thread, whatever the
/// server does; each is timed from when it was due. Returns how late, in
/// µs, each counted request left.
pub async fn open_loop(
    args: &LoadArgs,
    clients: Vec<CallRouterClient<Channel>>,
    rate: f64,
    (from, until): (Instant, Instant),
    (tally, run_id): (Arc<Tally>, &str),
) -> anyhow::Result<Histogram<u64>> {
    let outstanding = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Handle::current();
    let (deadline, max) = (args.deadline, args.max_outstanding);
    let mut requests = Requests::new(args, run_id, "o", 0);
    // a burst: slots at the burst's rate, all taken during it, every
    // `factor`-th outside
    let (factor, burst) = match (args.burst_at, args.burst_for) {
        (Some(at), Some(length)) => (
            args.burst_factor.max(1),
            Some((from + at, from + at + length)),
        ),
        _ => (1, None),
    };
    let throttle = args
        .client_throttle
        .map(|k| Arc::new(Throttle::new(k, Instant::now())));
    let mut rng = SmallRng::seed_from_u64(u64::from(args.rep));
    let late = {
        let outstanding = outstanding.clone();
        pace(
            rate * f64::from(factor),
            until,
            histogram(),
            move |late, i, due| {
                let in_burst = burst.is_some_and(|(start, end)| (start..end).contains(&due));
                if !in_burst && i % factor != 0 {
                    return;
                }
                let (outgoing, provisioned) = requests.next();
                let counted = due >= from;
                if counted {
                    tally.requests.fetch_add(1, Ordering::Relaxed);
                    late.saturating_record(due.elapsed().as_micros() as u64);
                }
                if let Some(throttle) = &throttle {
                    if !throttle.admit(Instant::now(), rng.random()) {
                        if counted {
                            tally.throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                }
                if outstanding.load(Ordering::Acquire) >= max {
                    if counted {
                        tally.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                outstanding.fetch_add(1, Ordering::AcqRel);
                let mut client = clients[i as usize % clients.len()].clone();
                let (tally, outstanding) = (tally.clone(), outstanding.clone());
                let throttle = throttle.clone();
                runtime.spawn(async move {
                    let result = send(&mut client, outgoing, deadline).await;
                    if let Some(throttle) = throttle {
                        if accepted(&result) {
                            throttle.accepted(Instant::now());
                        }
                    }
                    if counted {
                        tally.answer(result, provisioned, due);
                    }
                    outstanding.fetch_sub(1, Ordering::AcqRel);
                });
            },
        )
        .await?
    };
    drain(&outstanding, args.deadline).await?;
    Ok(late)
}

/// Whether the server accepted a request (for a client that throttles
/// itself): it answered, found no route, or failed it for a reason other
/// than load.
fn accepted(result: &Result<(), Status>) -> bool {
    match result {
        Ok(()) => true,
        Err(status) => {
            !overloaded(status)
                && status.code() != Code::DeadlineExceeded
                && status.code() != Code::Cancelled
        }
    }
}

/// The least time between two of the pacer's wake-ups. Waking for every
/// request (and waking the runtime to send it) cost the generator two
/// context switches per request: on one core it could not offer much more
/// than 20 000 requests/s, and past that it queued and timed out by
/// itself. At rates above one request per this much, each wake-up sends
/// every request then due, each still timed from its own due time; below
/// that, each leaves at its time.
const LEAST_WAKE_GAP: Duration = Duration::from_micros(100);

/// The pacer: calls `each(state, i, due)` for the `i`-th of the times due
/// at `rate` per second from now until `until`, at that time (or at most
/// [`LEAST_WAKE_GAP`] later, with the others due by then), from a thread of
/// its own, whatever the runtime is doing; returns `state` once the last is
/// past. `each` must hand any waiting to the runtime.
pub async fn pace<S: Send + 'static>(
    rate: f64,
    until: Instant,
    state: S,
    mut each: impl FnMut(&mut S, u32, Instant) + Send + 'static,
) -> anyhow::Result<S> {
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "the rate must be positive");
    let period = Duration::from_secs_f64(1.0 / rate);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let start = Instant::now();
    let pacer = std::thread::spawn(move || {
        // the kernel's default slack (50 µs) would bunch the sends
        // SAFETY: prctl with PR_SET_TIMERSLACK takes a plain integer.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000) };
        let mut state = state;
        let mut i: u32 = 0;
        let mut woke = start;
        loop {
            let due = start + period * i;
            if due >= until {
                break;
            }
            let now = Instant::now();
            if due > now {
                let wake = due.max(woke + LEAST_WAKE_GAP);
                std::thread::sleep(wake - now);
                woke = Instant::now();
            }
            each(&mut state, i, due);
            i += 1;
        }
        let _ = done_tx.send(());
        state
    });
    // the thread is waited for without blocking a runtime worker
    done_rx.await?;
    Ok(pacer.join().expect("pacer thread panicked"))
}

/// Waits for the last answers: every request carries a deadline, so a
/// little longer than that.
async fn drain(outstanding: &AtomicUsize, deadline: Duration) -> anyhow::Result<()> {
    let drained_by = Instant::now() + deadline + Duration::from_secs(1);
    while outstanding.load(Ordering::Acquire) > 0 {
        anyhow::ensure!(
            Instant::now() < drained_by,
            "{} requests still unanswered past their deadline",
            outstanding.load(Ordering::Acquire)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
