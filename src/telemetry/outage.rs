//! Outage logs: one WARN when a dependency starts failing, a summary while
//! it keeps failing, one INFO when it answers again — never a line per
//! request (issue 16: a PostgreSQL outage used to log ~950 WARN lines a
//! second). The per-request counts stay in metrics
//! (`switchboard_store_query_errors_total`, `switchboard_redis_fallbacks_total`,
//! `switchboard_grpc_requests_total{code="UNAVAILABLE"}`, …).
//!
//! Each dependency has one process-wide reporter ([`POSTGRES`], [`REDIS`],
//! [`LISTENER`], [`SPOOL`]), reported to by the one place that talks to it
//! (the store's pooled statements, the Redis commands, the invalidation
//! listener's sessions, the spool's appends), so a
//! failure is counted once however many layers it passes through. Statics
//! rather than handles: a daemon is one process, and a handle would have to
//! be threaded through every layer only for its log lines. (Several
//! daemons in one test process share them; only their log lines mix.)
//!
//! Invariants:
//! * while a dependency is up, [`Outage::succeeded`] is one relaxed atomic
//!   load: it runs on every successful statement and command;
//! * an outage logs one start and one end line, and at most one summary
//!   per [`SUMMARY_INTERVAL`], written at the first failure after the
//!   interval (a dependency nobody asks logs nothing more);
//! * an outage ends at the first answer [`RECOVERY`] after its last
//!   failure (or at once, for [`Outage::recovered`]): a dependency that fails now and then (timeouts under load)
//!   is one ongoing outage with its summaries, not a start and an end line
//!   per failure. So a dependency logs at most one start line per
//!   `RECOVERY`, however it flaps.

use std::{
    fmt::{Display, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

/// How often an ongoing outage is summarized.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// How long a dependency must go without failing before its outage ends.
pub const RECOVERY: Duration = Duration::from_secs(5);

/// PostgreSQL through the pooler: every pooled statement, reads and writes.
pub static POSTGRES: Outage = Outage::new("postgres");
/// Redis: the L2 route cache's commands and admission's.
pub static REDIS: Outage = Outage::new("redis");
/// The invalidation listener's session on the direct connection.
pub static LISTENER: Outage = Outage::new("postgres_listener");
/// The recorder's spool on local disk, while PostgreSQL is unreachable:
/// it fails when it cannot take events (full, or the disk fails), and
/// succeeds whenever events are made durable, in the spool or in
/// PostgreSQL.
pub static SPOOL: Outage = Outage::new("spool");

/// The outage log of one dependency.
#[derive(Debug)]
pub struct Outage {
    /// The `dependency` field of every line.
    dependency: &'static str,
    /// Whether an outage is ongoing: lets [`Outage::succeeded`] skip the
    /// lock while the dependency is up. Written only under the lock, so it
    /// never disagrees with `state` for longer than a racing success.
    down: AtomicBool,
    /// The outage; locked by failures, and by successes during an outage.
    state: Mutex<State>,
}

/// What the reporter knows.
#[derive(Debug, Default)]
struct State {
    /// The ongoing outage, if any.
    outage: Option<Ongoing>,
}

/// One outage, from its first failure until the dependency is back.
#[derive(Debug)]
struct Ongoing {
    /// The first failure.
    started: Instant,
    /// The latest failure.
    last_failure: Instant,
    /// Failures since it started.
    failures: u64,
    /// Failures since the last line about it.
    unreported: u64,
    /// Answers since the last line about it: a dependency that answers
    /// most requests is degraded, not down.
    answered: u64,
    /// When the last line about it was written.
    reported_at: Instant,
    /// The latest failure's error, for the summary.
    last_error: String,
}

/// What a failure or a success has to say.
#[derive(Debug, PartialEq)]
enum Report {
    Started {
        error: String,
    },
    Summary {
        down_for: Duration,
        failures: u64,
        answered: u64,
        total: u64,
        last_error: String,
    },
    Ended {
        /// From the first failure to the last.
        lasted: Duration,
        failures: u64,
    },
}

impl Outage {
    pub const fn new(dependency: &'static str) -> Self {
        Self {
            dependency,
            down: AtomicBool::new(false),
            state: Mutex::new(State { outage: None }),
        }
    }

    /// Reports a failed request to the dependency.
    pub fn failed(&self, error: &dyn Display) {
        let report = {
            let mut state = self.state();
            self.down.store(true, Ordering::Relaxed);
            state.failed(Instant::now(), error)
        };
        if let Some(report) = report {
            self.log(report);
        }
    }

    /// Reports an answer from the dependency.
    pub fn succeeded(&self) {
        self.settle(|state| state.succeeded(Instant::now()));
    }

    /// Reports that the dependency is back beyond doubt (a session
    /// established), ending an outage at once: for a source of rare
    /// events, which would not report the answers that [`RECOVERY`]
    /// waits for.
    pub fn recovered(&self) {
        self.settle(State::recovered);
    }

    /// Applies good news to an ongoing outage, if there is one.
    fn settle(&self, news: impl FnOnce(&mut State) -> Option<Report>) {
        if !self.down.load(Ordering::Relaxed) {
            return;
        }
        let report = {
            let mut state = self.state();
            let report = news(&mut state);
            self.down.store(state.outage.is_some(), Ordering::Relaxed);
            report
        };
        if let Some(report) = report {
            self.log(report);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // a panic elsewhere must not silence the outage log
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self, report: Report) {
        let dependency = self.dependency;
        match report {
            Report::Started { error } => tracing::warn!(
                dependency,
                %error,
                "dependency unavailable; failures are counted in metrics and summarized every {}s",
                SUMMARY_INTERVAL.as_secs()
            ),
            Report::Summary {
                down_for,
                failures,
                answered,
                total,
                last_error,
            } => tracing::warn!(
                dependency,
                down_for_s = down_for.as_secs(),
                failures,
                answered,
                total,
                %last_error,
                "dependency still failing"
            ),
            Report::Ended { lasted, failures } => tracing::info!(
                dependency,
                lasted_ms = lasted.as_millis() as u64,
                failures,
                "dependency available again"
            ),
        }
    }
}

impl State {
    fn failed(&mut self, now: Instant, error: &dyn Display) -> Option<Report> {
        let Some(outage) = &mut self.outage else {
            self.outage = Some(Ongoing {
                started: now,
                last_failure: now,
                failures: 1,
                unreported: 0,
                answered: 0,
                reported_at: now,
                last_error: String::new(),
            });
            return Some(Report::Started {
                error: error.to_string(),
            });
        };
        outage.failures += 1;
        outage.unreported += 1;
        outage.last_failure = now;
        // reuses the buffer: during an outage this runs at request rate
        outage.last_error.clear();
        let _ = write!(outage.last_error, "{error}");
        if now.saturating_duration_since(outage.reported_at) < SUMMARY_INTERVAL {
            return None;
        }
        let report = Report::Summary {
            down_for: now.saturating_duration_since(outage.started),
            failures: outage.unreported,
            answered: outage.answered,
            total: outage.failures,
            last_error: outage.last_error.clone(),
        };
        outage.unreported = 0;
        outage.answered = 0;
        outage.reported_at = now;
        Some(report)
    }

    fn succeeded(&mut self, now: Instant) -> Option<Report> {
        let outage = self.outage.as_mut()?;
        if now.saturating_duration_since(outage.last_failure) < RECOVERY {
            outage.answered += 1;
            return None;
        }
        self.recovered()
    }

    fn recovered(&mut self) -> Option<Report> {
        let outage = self.outage.take()?;
        Some(Report::Ended {
            lasted: outage
                .last_failure
                .saturating_duration_since(outage.started),
            failures: outage.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_logs_its_start_a_summary_per_interval_and_its_end() {
        let mut state = State::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            state.failed(at(0), &"connection refused"),
            Some(Report::Started {
                error: "connection refused".into()
            })
        );
        for ms in 1..1000 {
            assert_eq!(state.failed(at(ms), &"connection refused"), None);
        }
        let interval = SUMMARY_INTERVAL.as_millis() as u64;
        assert_eq!(
            state.failed(at(interval), &"timed out"),
            Some(Report::Summary {
                down_for: SUMMARY_INTERVAL,
                failures: 1000,
                answered: 0,
                total: 1001,
                last_error: "timed out".into(),
            })
        );
        // the next summary counts from the last one
        assert_eq!(state.failed(at(interval + 1), &"timed out"), None);
        let last = 2 * interval + 5;
        assert_eq!(
            state.failed(at(last), &"timed out"),
            Some(Report::Summary {
                down_for: Duration::from_millis(last),
                failures: 2,
                answered: 0,
                total: 1003,
                last_error: "timed out".into(),
            })
        );
        let recovery = RECOVERY.as_millis() as u64;
        assert_eq!(state.succeeded(at(last + recovery - 1)), None);
        assert_eq!(
            state.succeeded(at(last + recovery)),
            Some(Report::Ended {
                lasted: Duration::from_millis(last),
                failures: 1003,
            })
        );
        // up again: successes say nothing, the next failure starts anew
        assert_eq!(state.succeeded(at(last + recovery + 1)), None);
        assert!(matches!(
            state.failed(at(last + recovery + 2), &"refused"),
            Some(Report::Started { .. })
        ));
    }

    #[test]
    fn a_flapping_dependency_is_one_outage_with_summaries() {
        let mut state = State::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut reports = Vec::new();
        // a timeout every 100 ms, answers in between, for a minute
        for ms in (0..60_000).step_by(10) {
            let report = if ms % 100 == 0 {
                state.failed(at(ms), &"no answer within 5ms")
            } else {
                state.succeeded(at(ms))
            };
            reports.extend(report);
        }
        assert!(matches!(reports[0], Report::Started { .. }));
        assert_eq!(reports.len(), 1 + 5, "{reports:?}");
        assert!(matches!(
            reports[1],
            Report::Summary {
                failures: 100,
                answered: 900,
                ..
            }
        ));
    }

    #[test]
    fn a_recovery_ends_an_outage_at_once() {
        let mut state = State::default();
        let t0 = Instant::now();
        assert!(state.failed(t0, &"connection refused").is_some());
        assert_eq!(
            state.failed(t0 + Duration::from_millis(300), &"connection refused"),
            None
        );
        assert_eq!(
            state.recovered(),
            Some(Report::Ended {
                lasted: Duration::from_millis(300),
                failures: 2,
            })
        );
        assert_eq!(state.recovered(), None);
    }

    #[test]
    fn successes_while_up_take_no_lock() {
        let outage = std::sync::Arc::new(Outage::new("test"));
        let _held = outage.state.lock().unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let succeeding = outage.clone();
        std::thread::spawn(move || {
            succeeding.succeeded();
            let _ = done.send(());
        });
        assert!(
            finished.recv_timeout(Duration::from_secs(5)).is_ok(),
            "succeeded() waited for the lock while the dependency was up"
        );
    }

    #[test]
    fn the_fast_path_is_taken_once_the_outage_has_ended() {
        let outage = Outage::new("test");
        outage.failed(&"refused");
        outage.succeeded();
        // too soon after the failure: still down
        assert!(outage.down.load(Ordering::Relaxed));
        outage.state().outage.as_mut().unwrap().last_failure -= RECOVERY;
        outage.succeeded();
        assert!(!outage.down.load(Ordering::Relaxed));
        assert!(outage.state().outage.is_none());
    }
}
