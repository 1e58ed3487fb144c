//! The one place routing errors become gRPC statuses.
//!
//! Every refusal carries a stable machine-readable reason in the
//! `switchboard-reason` trailer, so a gateway can map answers to SIP
//! responses without parsing messages (README, "Status codes"). Internal
//! detail (database errors) is never sent; it is logged where it happens,
//! and an unreachable dependency once per outage (telemetry::outage), not
//! here per request.

use tonic::{metadata::MetadataValue, Code, Status};

use crate::{
    domain::{policy::LimitLevel, ResolveError},
    recorder::RecordError,
    routing::RouteError,
};

/// Trailer naming why a request was refused.
pub const REASON_KEY: &str = "switchboard-reason";
/// On a refusal by a limit: what the limit applies to (`organization`,
/// `agent` or `number`).
pub const LIMIT_SCOPE_KEY: &str = "switchboard-limit-scope";
/// On a refusal by a limit: the limit.
pub const LIMIT_KEY: &str = "switchboard-limit";
/// On a refusal by a limit: how many calls hold a slot now.
pub const ACTIVE_CALLS_KEY: &str = "switchboard-active-calls";

/// How a refusal is answered: its code, its stable reason, its message,
/// and for a refusal by a limit, the limit and the calls holding a slot.
pub(crate) struct Answer {
    pub code: Code,
    pub reason: &'static str,
    pub message: String,
    pub limit: Option<(LimitLevel, u32, u32)>,
}

/// The one mapping from a refusal to its answer.
pub(crate) fn answer(error: &RouteError) -> Answer {
    let mut limit = None;
    let (code, reason, message) = match error {
        RouteError::InvalidArgument { field, .. } => {
            (Code::InvalidArgument, field.reason(), error.to_string())
        }
        RouteError::NotProvisioned(_) => (Code::NotFound, "number_not_found", error.to_string()),
        RouteError::Inactive { what, .. } => {
            (Code::FailedPrecondition, what.as_str(), error.to_string())
        }
        // Not logged here, where it would be a line per request: the
        // store and the Redis commands log the outage
        // (telemetry::outage); the answers are counted by code.
        RouteError::Unavailable(ResolveError::Timeout(_) | ResolveError::Unavailable(_)) => (
            Code::Unavailable,
            "database_unavailable",
            "routing data is temporarily unavailable; retry".to_string(),
        ),
        RouteError::Unavailable(cause @ ResolveError::Corrupt(_)) => {
            tracing::error!(error = %cause, "routing data could not be read");
            (Code::Internal, "internal", "internal error".to_string())
        }
        RouteError::OverLimit {
            level,
            limit: at,
            active,
        } => {
            limit = Some((*level, *at, *active));
            (
                Code::ResourceExhausted,
                "concurrency_limit",
                error.to_string(),
            )
        }
        RouteError::Overloaded => (
            Code::Unavailable,
            "overloaded",
            format!("{error}; retry, preferably on another replica"),
        ),
        RouteError::Deadline => (Code::Unavailable, "deadline", format!("{error}; retry")),
        RouteError::AdmissionUnavailable => (
            Code::Unavailable,
            "admission_unavailable",
            error.to_string(),
        ),
        RouteError::UnknownCall(_) => (Code::NotFound, "call_not_found", error.to_string()),
        RouteError::Record(record) => record_answer(record),
    };
    Answer {
        code,
        reason,
        message,
        limit,
    }
}

impl From<RouteError> for Status {
    fn from(error: RouteError) -> Self {
        let answer = answer(&error);
        let mut status = refusal(answer.code, answer.reason, answer.message);
        if let Some((level, limit, active)) = answer.limit {
            let trailers = status.metadata_mut();
            trailers.insert(LIMIT_SCOPE_KEY, MetadataValue::from_static(level.as_str()));
            trailers.insert(LIMIT_KEY, MetadataValue::from(limit));
            trailers.insert(ACTIVE_CALLS_KEY, MetadataValue::from(active));
        }
        status
    }
}

/// How a refusal by the recorder is answered.
fn record_answer(record: &RecordError) -> (Code, &'static str, String) {
    match record {
            RecordError::QueueFull => (
                Code::ResourceExhausted,
                "recorder_queue_full",
                "too many calls are waiting to be recorded; retry shortly".to_string(),
            ),
            RecordError::SpoolFull(_) => (
                Code::ResourceExhausted,
                "spool_full",
                "the database is unreachable and the local spool is full: nothing was recorded; retry later"
                    .to_string(),
            ),
            // logged by the recorder as the spool's outage
            RecordError::SpoolFailed(_) => (
                Code::Unavailable,
                "recorder_unavailable",
                "the database is unreachable and the local spool cannot be written: nothing was recorded; retry later"
                    .to_string(),
            ),
            RecordError::Expired => (
                Code::Unavailable,
                "deadline",
                format!("{record}; nothing was recorded, retry"),
            ),
            RecordError::Closed => (
                Code::Unavailable,
                "shutting_down",
                "this replica is shutting down; retry on another".to_string(),
            ),
    }
}

/// A status with its reason trailer.
pub(crate) fn refusal(code: Code, reason: &'static str, message: String) -> Status {
    let mut status = Status::new(code, message);
    status
        .metadata_mut()
        .insert(REASON_KEY, MetadataValue::from_static(reason));
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Inactive, E164};
    use crate::routing::Field;

    fn reason(status: &Status) -> &str {
        status.metadata().get(REASON_KEY).unwrap().to_str().unwrap()
    }

    #[test]
    fn each_error_has_its_code_and_reason() {
        let number = E164::from_canonical("+14155550100").unwrap();
        let cases: Vec<(RouteError, Code, &str)> = vec![
            (
                RouteError::InvalidArgument {
                    field: Field::CalledNumber,
                    reason: "is empty".into(),
                },
                Code::InvalidArgument,
                "invalid_number",
            ),
            (
                RouteError::NotProvisioned(number.clone()),
                Code::NotFound,
                "number_not_found",
            ),
            (
                RouteError::Inactive {
                    number: number.clone(),
                    what: Inactive::Agent,
                },
                Code::FailedPrecondition,
                "agent_inactive",
            ),
            (
                RouteError::Unavailable(ResolveError::Timeout("database query")),
                Code::Unavailable,
                "database_unavailable",
            ),
            (
                RouteError::Unavailable(ResolveError::Corrupt("column 3".into())),
                Code::Internal,
                "internal",
            ),
        ];
        for (error, code, expected_reason) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(reason(&status), expected_reason);
        }
    }

    #[test]
    fn internal_detail_is_not_sent() {
        let status = Status::from(RouteError::Unavailable(ResolveError::Unavailable(
            "password authentication failed for user \"switchboard\"".into(),
        )));
        assert!(!status.message().contains("password"));
    }
}
