//! The adaptive concurrency limit: how many requests may be in flight,
//! found from the queue they make.
//!
//! The signal is the time a request waits between arriving (the gate
//! stamps it on the connection's task) and its handler running: on a
//! saturated CPU that wait grows, whatever the request asks for, while a
//! request waiting on PostgreSQL or Redis waits in its handler and adds
//! nothing to it. The rule follows CoDel's: a queue that kept most
//! requests of an interval waiting longer than the target is a standing
//! queue, not a burst. (CoDel takes the shortest wait; here a stream's
//! task spawned last by its connection runs next, skipping the queue, so
//! some requests see no wait however long the queue is: the median is the
//! signal that does not lie.)
//!
//! - A standing queue lowers the limit by a tenth each interval (down to
//!   [`MIN_LIMIT`]), and while it stands, a request that waited longer
//!   than the target is shed (CoDel's short timeout); otherwise only one
//!   that waited the long limit is.
//! - An interval without one, in which the requests in flight came near
//!   the limit, raises it by its square root (up to the configured
//!   maximum): the limit grows only where it binds.
//!
//! - While the streams that start wait longer than the target, a share of
//!   the streams connections accept is refused before a task is spawned
//!   for them ([`early`](super::early)).
//!
//! Every request pays two atomic updates and a comparison; the interval
//! is closed by whichever request sees it has ended.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use super::early::EarlyRefusal;
use crate::telemetry::series::ShedReason;

/// The limit never falls below this: a handful of requests always run, so
/// a limit lowered by a spike is raised again by the requests it admits.
pub const MIN_LIMIT: usize = 8;

/// How recent the last wait reported must be for a stream accepted now to
/// be refused on its account.
const RECENT: Duration = Duration::from_millis(1);

/// Multiplicative decrease per interval with a standing queue.
const DECREASE: f64 = 0.9;

/// How a [`Limiter`] adapts.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// The most requests in flight, and the limit it starts at.
    pub max_in_flight: usize,
    /// Queue delay above which a queue that does not drain is standing.
    pub target: Duration,
    /// How long the queue must stay above `target` to be standing, and
    /// how often the limit moves.
    pub interval: Duration,
    /// Longest a request may wait for its handler while no queue stands.
    pub max_queue_delay: Duration,
}

/// Requests in flight against an adaptive limit. Shared by the gate that
/// admits requests and the handlers that report their queue delay.
#[derive(Debug)]
pub struct Limiter {
    settings: LimitSettings,
    /// When the limiter was made: the origin of the nanosecond clocks.
    epoch: Instant,
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    /// A standing queue was seen in the last closed interval.
    standing: AtomicBool,
    /// Start of the open interval, in nanoseconds since `epoch`.
    window_start: AtomicU64,
    /// Requests of the open interval that waited longer than the target.
    window_over: AtomicU64,
    /// Requests of the open interval.
    window_seen: AtomicU64,
    /// Most requests in flight seen in the open interval.
    window_peak: AtomicUsize,
    /// The share of streams refused as they are accepted.
    early: EarlyRefusal,
    /// Streams spawned whose task has not run yet: the runtime's queue.
    waiting: AtomicUsize,
    /// The last wait reported (ns), and when (ns since `epoch`).
    last_delay: AtomicU64,
    last_seen: AtomicU64,
}

/// What closing an interval decided, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjusted {
    pub limit: usize,
    pub standing: bool,
}

impl Limiter {
    pub fn new(settings: LimitSettings) -> Self {
        let max = settings.max_in_flight.max(1);
        Self {
            settings: LimitSettings {
                max_in_flight: max,
                ..settings
            },
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(max),
            standing: AtomicBool::new(false),
            window_start: AtomicU64::new(0),
            window_over: AtomicU64::new(0),
            window_seen: AtomicU64::new(0),
            window_peak: AtomicUsize::new(0),
            early: EarlyRefusal::new(settings.target),
            waiting: AtomicUsize::new(0),
            last_delay: AtomicU64::new(0),
            last_seen: AtomicU64::new(0),
        }
    }

    /// Whether a stream accepted at `now` is to be refused before it is
    /// spawned: the last wait reported, within [`RECENT`], was longer than
    /// allowed now, or streams wait in the runtime's queue and it is one
    /// of the share refused early, or the limit is taken. Once the
    /// refusals have drained the queue, no wait is reported for a moment
    /// and streams are spawned again.
    pub fn refusing(&self, now: Instant) -> Option<ShedReason> {
        let since = self
            .nanos(now)
            .saturating_sub(self.last_seen.load(Ordering::Relaxed));
        let recent = u64::try_from(RECENT.as_nanos()).unwrap_or(u64::MAX);
        let waited = Duration::from_nanos(self.last_delay.load(Ordering::Relaxed));
        if (since <= recent && waited > self.max_queue_delay())
            || self
                .early
                .refuse(self.nanos(now), self.waiting.load(Ordering::Relaxed) > 0)
        {
            Some(ShedReason::QueueDelay)
        } else if self.in_flight() >= self.limit() {
            Some(ShedReason::Concurrency)
        } else {
            None
        }
    }

    /// The share of streams refused as they are accepted, from 0 to 1
    /// ([`early`](super::early)).
    pub fn early_share(&self) -> f64 {
        self.early.share()
    }

    /// A stream's task was spawned: it waits in the runtime's queue.
    pub fn spawned(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// A spawned stream's task began to run.
    pub fn running(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes a slot if one is free under the current limit.
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return false;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.window_peak.fetch_max(current + 1, Ordering::Relaxed);
                    return true;
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Gives back a slot taken by [`try_acquire`](Self::try_acquire).
    pub fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The ceiling of the limit (`SWITCHBOARD_MAX_IN_FLIGHT`).
    pub fn max_in_flight(&self) -> usize {
        self.settings.max_in_flight
    }

    /// Whether a standing queue was seen in the last interval.
    pub fn standing(&self) -> bool {
        self.standing.load(Ordering::Relaxed)
    }

    /// Longest a request may have waited for its handler and still run:
    /// the target while a queue stands, the long limit otherwise.
    pub fn max_queue_delay(&self) -> Duration {
        if self.standing() {
            self.settings.target
        } else {
            self.settings.max_queue_delay
        }
    }

    /// Longest a request may have waited, in all, and still run.
    pub fn budget(&self) -> Duration {
        self.settings.max_queue_delay
    }

    /// Reports one request's wait for its handler, at `now`; returns the
    /// new limit when this report closed an interval.
    pub fn observe(&self, queued: Duration, now: Instant) -> Option<Adjusted> {
        if queued > self.settings.target {
            self.window_over.fetch_add(1, Ordering::Relaxed);
        }
        self.early.started(queued);
        self.window_seen.fetch_add(1, Ordering::Relaxed);
        let now = self.nanos(now);
        self.last_delay.store(
            u64::try_from(queued.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.last_seen.store(now, Ordering::Relaxed);
        let start = self.window_start.load(Ordering::Relaxed);
        let interval = u64::try_from(self.settings.interval.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(start) < interval {
            return None;
        }
        // one reporter closes the interval
        self.window_start
            .compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        let over = self.window_over.swap(0, Ordering::AcqRel);
        let seen = self.window_seen.swap(0, Ordering::AcqRel);
        let peak = self
            .window_peak
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::AcqRel);
        Some(self.adjust(over * 2 > seen, peak))
    }

    /// Closes an interval in which a queue stood or not, and the most
    /// requests in flight were `peak`.
    fn adjust(&self, standing: bool, peak: usize) -> Adjusted {
        let limit = self.limit.load(Ordering::Relaxed);
        let next = if standing {
            ((limit as f64 * DECREASE) as usize).max(MIN_LIMIT)
        } else if peak * 2 >= limit {
            let step = (limit as f64).sqrt().ceil() as usize;
            (limit + step).min(self.settings.max_in_flight)
        } else {
            limit
        }
        .min(self.settings.max_in_flight);
        self.limit.store(next, Ordering::Relaxed);
        self.standing.store(standing, Ordering::Relaxed);
        Adjusted {
            limit: next,
            standing,
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(100);
    const TARGET: Duration = Duration::from_millis(5);

    fn limiter(max: usize) -> Limiter {
        Limiter::new(LimitSettings {
            max_in_flight: max,
            target: TARGET,
            interval: INTERVAL,
            max_queue_delay: Duration::from_millis(50),
        })
    }

    /// Reports `delays` within one interval starting at `start`, the last
    /// one closing it; returns what closing it decided.
    fn interval(limiter: &Limiter, start: Instant, delays: &[Duration]) -> Adjusted {
        let mut adjusted = None;
        for (i, delay) in delays.iter().enumerate() {
            let at = if i + 1 == delays.len() {
                start + INTERVAL
            } else {
                start
            };
            adjusted = limiter.observe(*delay, at).or(adjusted);
        }
        adjusted.expect("the interval closed")
    }

    #[test]
    fn slots_are_refused_at_the_limit_and_given_back() {
        let limiter = limiter(2);
        assert!(limiter.try_acquire());
        assert!(limiter.try_acquire());
        assert!(!limiter.try_acquire());
        limiter.release();
        assert!(limiter.try_acquire());
        assert_eq!(limiter.in_flight(), 2);
    }

    #[test]
    fn a_standing_queue_lowers_the_limit_to_the_floor_and_shortens_the_wait() {
        let limiter = limiter(100);
        let mut at = limiter.epoch;
        assert_eq!(limiter.max_queue_delay(), Duration::from_millis(50));
        let mut limits = vec![];
        for _ in 0..40 {
            // most waits are over the target, though one skipped the queue
            let adjusted = interval(&limiter, at, &[TARGET * 2, Duration::ZERO, TARGET * 3]);
            assert!(adjusted.standing);
            limits.push(adjusted.limit);
            at += INTERVAL;
        }
        assert_eq!(limits[0], 90);
        assert!(limits.windows(2).all(|w| w[1] <= w[0]), "{limits:?}");
        assert_eq!(*limits.last().unwrap(), MIN_LIMIT);
        assert_eq!(limiter.max_queue_delay(), TARGET);
    }

    #[test]
    fn a_burst_that_drains_is_not_a_standing_queue() {
        let limiter = limiter(100);
        // long waits, but most requests of the interval found no queue
        let adjusted = interval(
            &limiter,
            limiter.epoch,
            &[
                TARGET * 10,
                TARGET * 10,
                Duration::from_micros(10),
                Duration::from_micros(10),
                Duration::from_micros(10),
            ],
        );
        assert!(!adjusted.standing);
        assert_eq!(adjusted.limit, 100);
        assert_eq!(limiter.max_queue_delay(), Duration::from_millis(50));
    }

    #[test]
    fn the_limit_grows_back_only_where_it_binds() {
        let limiter = limiter(1000);
        let mut at = limiter.epoch;
        for _ in 0..30 {
            interval(&limiter, at, &[TARGET * 2, TARGET * 2]);
            at += INTERVAL;
        }
        let low = limiter.limit();
        assert!(low < 100, "{low}");
        // no queue, and nothing near the limit: it stays
        interval(&limiter, at, &[Duration::ZERO, Duration::ZERO]);
        at += INTERVAL;
        assert_eq!(limiter.limit(), low);
        // no queue, and the limit in use: it grows, up to the maximum
        let mut limits = vec![];
        for _ in 0..200 {
            while limiter.try_acquire() {}
            interval(&limiter, at, &[Duration::ZERO, Duration::ZERO]);
            (0..limiter.in_flight()).for_each(|_| limiter.release());
            limits.push(limiter.limit());
            at += INTERVAL;
        }
        assert!(limits.windows(2).all(|w| w[1] >= w[0]), "{limits:?}");
        assert!(limits[0] > low);
        assert_eq!(*limits.last().unwrap(), 1000);
    }

    #[test]
    fn streams_are_refused_as_accepted_while_the_last_wait_was_too_long() {
        let limiter = limiter(2);
        let at = limiter.epoch + INTERVAL;
        assert_eq!(limiter.refusing(at), None);
        // a wait longer than the long limit, just reported
        limiter.observe(Duration::from_millis(60), at);
        assert_eq!(limiter.refusing(at), Some(ShedReason::QueueDelay));
        // nothing reported for a while: the queue has drained
        assert_eq!(limiter.refusing(at + RECENT * 2), None);
        // a short wait: accepted again
        limiter.observe(Duration::from_micros(10), at + RECENT * 2);
        assert_eq!(limiter.refusing(at + RECENT * 2), None);
        // the limit taken
        assert!(limiter.try_acquire() && limiter.try_acquire());
        assert_eq!(
            limiter.refusing(at + RECENT * 2),
            Some(ShedReason::Concurrency)
        );
    }

    #[test]
    fn a_share_is_refused_as_accepted_only_while_streams_wait_to_start() {
        let limiter = limiter(1000);
        let mut at = limiter.epoch;
        // streams that started well past the target, period after period
        for _ in 0..10 {
            limiter.observe(TARGET * 3, at);
            at += super::super::early::PERIOD;
            let _ = limiter.refusing(at);
        }
        assert!(limiter.early_share() > 0.5, "{}", limiter.early_share());
        // nothing waits to start: nothing is refused for it
        let refused = (0..100).filter(|_| limiter.refusing(at).is_some()).count();
        assert_eq!(refused, 0);
        // streams wait: about the share is refused, the rest spawned
        limiter.spawned();
        let refused = (0..100).filter(|_| limiter.refusing(at).is_some()).count();
        let expected = limiter.early_share() * 100.0;
        assert!(
            (refused as f64 - expected).abs() <= 1.0,
            "{refused} of 100, share {expected}%"
        );
        limiter.running();
        assert_eq!(limiter.refusing(at), None);
    }

    #[test]
    fn an_interval_is_closed_once() {
        let limiter = limiter(100);
        let end = limiter.epoch + INTERVAL;
        assert!(limiter.observe(TARGET * 2, end).is_some());
        assert!(limiter.observe(TARGET * 2, end).is_none());
    }
}
