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
    /// A few distinct failures, for the operator.
    pub first_errors: Mutex<Vec<String>>,
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
            first_errors: Mutex::new(Vec::new()),
        }
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
            Err(status)
                if matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
                    && status
                        .metadata()
                        .get("switchboard-reason")
                        .is_some_and(|r| r == "overloaded") =>
            {
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
            record(&self.latency, since.elapsed());
        }
    }
}
