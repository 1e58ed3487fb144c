//! A gateway that throttles itself: the client-side adaptive throttling of
//! Google's SRE book ("Handling Overload"), as docs/api.md recommends to
//! gateways. Over the last second, a client counts the requests it wanted
//! to send and those the server accepted (answered with anything but an
//! overload refusal or a deadline exceeded), and refuses a new request
//! itself, without sending it, with probability `max(0, (requests − K·accepts) / (requests + 1))`.
//! While the server accepts everything, nothing is refused; once it
//! refuses, the client sends about `K` times what it gets accepted, so a
//! server at twice its capacity receives `K` times it, and spends on
//! refusals only what that excess costs.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// The window the counts cover, in slots that are forgotten one at a time.
const WINDOW: Duration = Duration::from_secs(1);
const SLOTS: usize = 10;

pub struct Throttle {
    k: f64,
    start: Instant,
    counts: Mutex<[Slot; SLOTS]>,
}

/// One slot's counts, and which tenth of which second they belong to.
#[derive(Clone, Copy, Default)]
struct Slot {
    epoch: u64,
    requests: u64,
    accepts: u64,
}

impl Throttle {
    pub fn new(k: f64, start: Instant) -> Self {
        assert!(k >= 1.0, "K below 1 would refuse what the server accepts");
        Self {
            k,
            start,
            counts: Mutex::new([Slot::default(); SLOTS]),
        }
    }

    /// Counts a request the client wants to send at `now`; whether to send
    /// it, given `roll`, uniform in `[0, 1)`.
    pub fn admit(&self, now: Instant, roll: f64) -> bool {
        let mut counts = self.counts.lock().unwrap();
        let (requests, accepts) = counts
            .iter()
            .filter(|slot| self.epoch(now).saturating_sub(slot.epoch) < SLOTS as u64)
            .fold((0, 0), |(r, a), slot| (r + slot.requests, a + slot.accepts));
        self.slot(&mut counts, now).requests += 1;
        let refuse = (requests as f64 - self.k * accepts as f64) / (requests as f64 + 1.0);
        roll >= refuse
    }

    /// Counts an answer at `now` that was not an overload refusal.
    pub fn accepted(&self, now: Instant) {
        let mut counts = self.counts.lock().unwrap();
        self.slot(&mut counts, now).accepts += 1;
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / (WINDOW / SLOTS as u32).as_nanos())
            as u64
    }

    /// `now`'s slot, emptied first if it still holds an older tenth's.
    fn slot<'a>(&self, counts: &'a mut [Slot; SLOTS], now: Instant) -> &'a mut Slot {
        let epoch = self.epoch(now);
        let slot = &mut counts[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        slot
    }
}
