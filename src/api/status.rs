//! The one place routing errors become gRPC statuses.
//!
//! Every refusal carries a stable machine-readable reason in the
//! `switchboard-reason` trailer, so a gateway can map answers to SIP
//! responses without parsing messages (README, "Status codes"). Internal
//! detail (database errors) is logged here and never sent.

use tonic::{metadata::MetadataValue, Code, Status};

use crate::routing::{ResolveError, RouteError};

/// Trailer naming why a request was refused.
pub const REASON_KEY: &str = "switchboard-reason";

impl From<RouteError> for Status {
    fn from(error: RouteError) -> Self {
        let (code, reason, message) = match &error {
            RouteError::InvalidArgument { field, .. } => (
                Code::InvalidArgument,
                match *field {
                    "default_region" => "invalid_region",
                    "gateway_call_id" => "invalid_gateway_call_id",
                    _ => "invalid_number",
                },
                error.to_string(),
            ),
            RouteError::NotProvisioned(_) => {
                (Code::NotFound, "number_not_found", error.to_string())
            }
            RouteError::Inactive { what, .. } => {
                (Code::FailedPrecondition, what.as_str(), error.to_string())
            }
            RouteError::Unavailable(
                cause @ (ResolveError::Timeout(_) | ResolveError::Unavailable(_)),
            ) => {
                tracing::warn!(error = %cause, "routing data unavailable");
                (
                    Code::Unavailable,
                    "database_unavailable",
                    "routing data is temporarily unavailable; retry".to_string(),
                )
            }
            RouteError::Unavailable(cause @ ResolveError::Corrupt(_)) => {
                tracing::error!(error = %cause, "routing data could not be read");
                (Code::Internal, "internal", "internal error".to_string())
            }
        };
        let mut status = Status::new(code, message);
        status
            .metadata_mut()
            .insert(REASON_KEY, MetadataValue::from_static(reason));
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Inactive, E164};

    fn reason(status: &Status) -> &str {
        status.metadata().get(REASON_KEY).unwrap().to_str().unwrap()
    }

    #[test]
    fn each_error_has_its_code_and_reason() {
        let number = E164::from_canonical("+14155550100").unwrap();
        let cases: Vec<(RouteError, Code, &str)> = vec![
            (
                RouteError::InvalidArgument {
                    field: "called_number",
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
