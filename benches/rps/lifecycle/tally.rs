//! What each RPC of the measured calls adds to: the load run's tally, and
//! its failures by gRPC status code.

use std::{collections::BTreeMap, sync::atomic::Ordering, sync::Mutex, time::Instant};

use tonic::{Code, Status};

use crate::load::tally::Tally;

pub struct RpcTally {
    pub tally: Tally,
    /// Failures by code (`Unavailable`, `DeadlineExceeded`, ...).
    pub codes: Mutex<BTreeMap<String, u64>>,
}

impl RpcTally {
    pub fn new() -> Self {
        Self {
            tally: Tally::new(),
            codes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts one answer of a measured call (`counted`); `since` is when
    /// the request was due.
    pub fn answer<T>(
        &self,
        result: &Result<T, Status>,
        provisioned: bool,
        since: Instant,
        counted: bool,
    ) {
        if !counted {
            return;
        }
        self.tally.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(status) = result {
            *self
                .codes
                .lock()
                .unwrap()
                .entry(format!("{:?}", status.code()))
                .or_default() += 1;
        }
        let result = result.as_ref().map(drop).map_err(Clone::clone);
        self.tally.answer(result, provisioned, since);
    }
}

/// Refused as overloaded, as the load run's tally counts it.
pub fn is_shed(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
        && status
            .metadata()
            .get("switchboard-reason")
            .is_some_and(|r| r == "overloaded")
}
