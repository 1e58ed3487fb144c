//! The counts and latencies of one run.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use hdrhistogram::Histogram;
use tonic::{Code, Status};

use crate::result::{histogram, record};

/// What every request of a run adds to.
pub struct Tally {
    pub latency: Mutex<Histogram<u64>>,
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub not_found: AtomicU64,
    pub shed: AtomicU64,
    pub errors: AtomicU64,
    pub dropped: AtomicU64,
    /// Not sent: refused by the client's own throttling.
    pub throttled: AtomicU64,
    /// A few distinct failures, for the operator.
    pub first_errors: Mutex<Vec<String>>,
    /// Latencies of the requests due within a window: its name, start,
    /// end.
    pub windows: Vec<(&'static str, Instant, Instant, Mutex<Histogram<u64>>)>,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            latency: Mutex::new(histogram()),
            requests: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            not_found: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            first_errors: Mutex::new(Vec::new()),
            windows: Vec::new(),
        }
    }

    /// Also keeps the latencies of the requests due in `[from, until)`,
    /// as `name`.
    pub fn with_window(mut self, name: &'static str, from: Instant, until: Instant) -> Self {
        self.windows
            .push((name, from, until, Mutex::new(histogram())));
        self
    }

    /// Counts one answer; `since` is when it was due (open loop) or sent.
    pub fn answer(&self, result: Result<(), Status>, provisioned: bool, since: Instant) {
        let good = match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(status) if status.code() == Code::NotFound && !provisioned => {
                self.not_found.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(status) if overloaded(&status) => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(status) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_errors.lock().unwrap();
                let mut line = format!("{:?}: {}", status.code(), status.message());
                // the transport's own error says which side gave up and why
                let mut cause = std::error::Error::source(&status);
                while let Some(error) = cause {
                    line.push_str(&format!(": {error}"));
                    cause = error.source();
                }
                if first.len() < 5 && !first.contains(&line) {
                    first.push(line);
                }
                false
            }
        };
        if good {
            let took = since.elapsed();
            record(&self.latency, took);
            for (_, from, until, latency) in &self.windows {
                if (*from..*until).contains(&since) {
                    record(latency, took);
                }
            }
        }
    }
}

/// Refused as overloaded: with the reason `overloaded`, or a stream reset
/// with `REFUSED_STREAM` (`SWITCHBOARD_OVERLOAD_REFUSAL=reset`).
pub fn overloaded(status: &Status) -> bool {
    let reason = matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
        && status
            .metadata()
            .get("switchboard-reason")
            .is_some_and(|r| r == "overloaded");
    let refused = std::iter::successors(Some(status as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .filter_map(|e| e.downcast_ref::<h2::Error>())
    .any(|e| e.reason() == Some(h2::Reason::REFUSED_STREAM));
    reason || refused
}
