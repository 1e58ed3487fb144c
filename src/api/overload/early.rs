//! Refusing early: a share of the streams a connection accepts is refused
//! then and there, before a task is spawned for them, while the streams
//! that were spawned wait too long in the runtime's queue to start (PIE's
//! drop probability, RFC 8033, applied at the gate's enqueue).
//!
//! A saturated replica's runtime queue is made of the streams its
//! connections accepted in their last reads: one read can hand over
//! hundreds. Refusing them when they finally run costs a task each, and
//! every stream behind them waits for those refusals too; refusing a share
//! as they are accepted costs no task and keeps the queue short. The share
//! follows the queue: every [`PERIOD`], it rises in proportion to how far
//! the mean wait of the streams that started in the period was above the
//! target, once that has lasted [`BURST_PERIODS`] periods in a row (a burst,
//! or the CPU taken away for a moment, refuses nothing: PIE's burst
//! allowance), and falls by a step when it was below or no stream started. It
//! never reaches all ([`MAX_SHARE`]): what is let through measures the
//! queue, and a flood of clients that send again at once is still answered
//! in part.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// How often the share moves: a few of the CPU quota's periods of a
/// replica held to a share of a core, so that one throttled period does
/// not swing it.
pub const PERIOD: Duration = Duration::from_millis(10);

/// Shares are kept in millionths.
const MILLION: u64 = 1_000_000;

/// The most that is refused early.
pub const MAX_SHARE: u64 = 950_000;

/// The most the share rises in one period, and how much it rises per
/// target's worth of mean wait over the target.
const MAX_RISE: u64 = 200_000;
const RISE_PER_TARGET: u64 = 100_000;

/// How many periods in a row the mean wait must be over the target before
/// the share rises: 50 ms of a queue.
pub const BURST_PERIODS: u64 = 5;

/// How much it falls in a period without a queue.
const FALL: u64 = 50_000;

#[derive(Debug)]
pub struct EarlyRefusal {
    target: Duration,
    /// The share refused now, in millionths.
    share: AtomicU64,
    /// The shares of the streams looked at so far, added up: one is
    /// refused each time the sum passes a whole million (every so many, in
    /// turn, not at random).
    turns: AtomicU64,
    /// Start of the open period, in nanoseconds of the limiter's clock.
    period_start: AtomicU64,
    /// Periods in a row whose mean wait was over the target.
    over: AtomicU64,
    /// Streams that started in the open period, and their waits (µs).
    started: AtomicU64,
    waited_us: AtomicU64,
}

impl EarlyRefusal {
    pub fn new(target: Duration) -> Self {
        Self {
            target,
            share: AtomicU64::new(0),
            turns: AtomicU64::new(0),
            period_start: AtomicU64::new(0),
            over: AtomicU64::new(0),
            started: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
        }
    }

    /// A spawned stream started after waiting `queued` in the runtime's
    /// queue.
    pub fn started(&self, queued: Duration) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.waited_us.fetch_add(
            u64::try_from(queued.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Whether the stream accepted at `now` (nanoseconds of the limiter's
    /// clock), with streams waiting to start (`queue`) or not, is one of
    /// the share refused early: never while none waits, as after a burst
    /// the queue is gone before the share has fallen.
    pub fn refuse(&self, now: u64, queue: bool) -> bool {
        self.close_period(now);
        let share = self.share.load(Ordering::Relaxed);
        if share == 0 || !queue {
            return false;
        }
        let before = self.turns.fetch_add(share, Ordering::Relaxed);
        (before + share) / MILLION != before / MILLION
    }

    /// The share refused now, from 0 to 1.
    pub fn share(&self) -> f64 {
        self.share.load(Ordering::Relaxed) as f64 / MILLION as f64
    }

    /// Moves the share if the period is over (whoever sees it first).
    fn close_period(&self, now: u64) {
        let start = self.period_start.load(Ordering::Relaxed);
        let period = u64::try_from(PERIOD.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(start) < period
            || self
                .period_start
                .compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let started = self.started.swap(0, Ordering::AcqRel);
        let waited_us = self.waited_us.swap(0, Ordering::AcqRel);
        let target_us = u64::try_from(self.target.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let share = self.share.load(Ordering::Relaxed);
        let mean_us = waited_us.checked_div(started).unwrap_or(0);
        let over = if mean_us > target_us {
            self.over.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.over.store(0, Ordering::Relaxed);
            0
        };
        let next = if over >= BURST_PERIODS {
            let rise = (mean_us - target_us).saturating_mul(RISE_PER_TARGET) / target_us;
            (share + rise.min(MAX_RISE)).min(MAX_SHARE)
        } else if over > 0 {
            share
        } else {
            share.saturating_sub(FALL)
        };
        self.share.store(next, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(5);

    fn nanos(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap()
    }

    /// Runs `periods` periods from `*at` in which streams started after
    /// waiting `queued` (none if `None`); returns the share after them.
    fn periods(
        early: &EarlyRefusal,
        at: &mut u64,
        periods: usize,
        queued: Option<Duration>,
    ) -> f64 {
        for _ in 0..periods {
            if let Some(queued) = queued {
                early.started(queued);
            }
            *at += nanos(PERIOD);
            early.refuse(*at, true);
        }
        early.share()
    }

    #[test]
    fn a_queue_raises_the_share_short_of_all_and_its_end_lowers_it() {
        let early = EarlyRefusal::new(TARGET);
        let mut at = 0;
        assert_eq!(periods(&early, &mut at, 3, Some(TARGET / 2)), 0.0);
        // a burst shorter than the allowance refuses nothing
        let burst = BURST_PERIODS as usize - 1;
        assert_eq!(periods(&early, &mut at, burst, Some(TARGET * 4)), 0.0);
        assert_eq!(periods(&early, &mut at, 1, Some(TARGET / 2)), 0.0);
        assert_eq!(periods(&early, &mut at, burst, Some(TARGET * 4)), 0.0);
        let mut shares = vec![];
        for _ in 0..20 {
            shares.push(periods(&early, &mut at, 1, Some(TARGET * 4)));
        }
        assert!(shares.windows(2).all(|w| w[1] >= w[0]), "{shares:?}");
        assert_eq!(
            shares[0], 0.2,
            "three targets over: the most one period adds"
        );
        assert_eq!(shares[1], 0.4);
        assert_eq!(*shares.last().unwrap(), MAX_SHARE as f64 / MILLION as f64);
        // a wait just over the target raises it a little
        let early = EarlyRefusal::new(TARGET);
        let mut at = 0;
        let burst = BURST_PERIODS as usize;
        let share = periods(&early, &mut at, burst, Some(TARGET + TARGET / 2));
        assert!((share - 0.05).abs() < 1e-9, "{share}");
        // no queue, or nothing started: it falls, to nothing
        let early = EarlyRefusal::new(TARGET);
        let mut at = 0;
        periods(&early, &mut at, 10, Some(TARGET * 10));
        let high = early.share();
        assert!(periods(&early, &mut at, 1, Some(TARGET / 2)) < high);
        assert!(periods(&early, &mut at, 1, None) < high);
        assert_eq!(periods(&early, &mut at, 40, None), 0.0);
    }

    #[test]
    fn the_share_is_refused_in_turn() {
        let early = EarlyRefusal::new(TARGET);
        let mut at = 0;
        // rises by 0.2 a period past the allowance: 0.6 after three
        periods(
            &early,
            &mut at,
            BURST_PERIODS as usize + 2,
            Some(TARGET * 10),
        );
        let share = early.share();
        assert!((share - 0.6).abs() < 1e-9, "{share}");
        let refused = (0..1000).filter(|_| early.refuse(at, true)).count();
        assert_eq!(refused, 600);
        // with nothing waiting to start, none
        assert!(!(0..1000).any(|_| early.refuse(at, false)));
    }
}
