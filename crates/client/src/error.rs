//! The client's errors, and the one place a server's `tonic::Status` is parsed back into them.
//!
//! The server puts a `google.rpc.ErrorInfo` (domain `vexil`) with a stable `reason` and
//! metadata into every status (`crates/server/src/error.rs`); [`Error::from_status`] reads it, so
//! callers match on variants (`VersionMismatch { current, .. }`) instead of message text.

use std::collections::HashMap;

use tonic::Code;
use tonic_types::StatusExt;

/// The domain and the stable reasons are part of the API contract, in `vexil-proto`.
pub use vexil_proto::{ERROR_DOMAIN, reason};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The client was configured wrongly (no endpoint, a malformed URL, too many namespaces).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The server refused an input; `field` names it (`spec_json.variants.on`, `key`, ...).
    #[error("invalid `{field}`: {problem}")]
    Invalid { field: String, problem: String },
    #[error("flag {namespace:?}/{key:?} not found")]
    NotFound { namespace: String, key: String },
    #[error("the flag already exists (at version {current:?})")]
    AlreadyExists { current: Option<u64> },
    /// Compare-and-set failed: the flag is at `current`, not at the expected version.
    #[error("version mismatch: the flag is at version {current}, expected {expected:?}")]
    VersionMismatch { current: u64, expected: Option<u64> },
    /// A request id was reused for a different command (a bug in the caller).
    #[error("request id reused for a different command: {message}")]
    RequestIdReused { message: String },
    /// No node could serve the call within the retry budget. For a write the outcome may be
    /// unknown: retrying with the same `request_id` applies it at most once.
    #[error("the cluster is unavailable after {attempts} attempt(s): {message}")]
    Unavailable { reason: Option<String>, message: String, attempts: u32 },
    /// Any other status, with its code, `ErrorInfo` reason (when there is one) and message.
    #[error("{code:?} ({}): {message}", reason.as_deref().unwrap_or("no reason"))]
    Server { code: Code, reason: Option<String>, message: String },
}

impl Error {
    /// Parses a server status (its code and `ErrorInfo`) into an error.
    pub fn from_status(status: &tonic::Status) -> Error {
        let details = status.get_error_details();
        let (why, meta) = match details.error_info() {
            Some(info) if info.domain == ERROR_DOMAIN => (Some(info.reason.clone()), info.metadata.clone()),
            _ => (None, HashMap::new()),
        };
        let message = status.message().to_string();
        let num = |k: &str| meta.get(k).and_then(|v| v.parse::<u64>().ok());
        let text = |k: &str| meta.get(k).cloned().unwrap_or_default();
        match why.as_deref() {
            Some(reason::INVALID_FIELD) => {
                let violation = details.bad_request().and_then(|b| b.field_violations.first().cloned());
                let field = violation.as_ref().map(|v| v.field.clone()).unwrap_or_else(|| text("field"));
                let problem = violation.map(|v| v.description).unwrap_or_else(|| message.clone());
                Error::Invalid { field, problem }
            }
            Some(reason::FLAG_NOT_FOUND) => Error::NotFound { namespace: text("namespace"), key: text("key") },
            Some(reason::FLAG_EXISTS) => Error::AlreadyExists { current: num("current_version") },
            Some(reason::VERSION_MISMATCH) => Error::VersionMismatch {
                current: num("current_version").unwrap_or(0),
                expected: num("expected_version"),
            },
            Some(reason::REQUEST_ID_REUSED) => Error::RequestIdReused { message },
            _ if status.code() == Code::InvalidArgument => Error::Invalid { field: text("field"), problem: message },
            _ if status.code() == Code::NotFound => Error::NotFound { namespace: text("namespace"), key: text("key") },
            _ if status.code() == Code::Unavailable => Error::Unavailable { reason: why, message, attempts: 1 },
            _ => Error::Server { code: status.code(), reason: why, message },
        }
    }

    /// Whether the same call may be sent again (to another node): the cluster was unreachable,
    /// had no leader, or could not confirm the outcome of a write. Writes are retried with the
    /// same `request_id`, which the state machine applies at most once.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
            Error::Server { code, reason, .. } => {
                reason.is_none()
                    && matches!(code, Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted)
            }
            _ => false,
        }
    }

    /// The `ErrorInfo` reason the server gave, when it gave one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Invalid { .. } => Some(reason::INVALID_FIELD),
            Error::NotFound { .. } => Some(reason::FLAG_NOT_FOUND),
            Error::AlreadyExists { .. } => Some(reason::FLAG_EXISTS),
            Error::VersionMismatch { .. } => Some(reason::VERSION_MISMATCH),
            Error::RequestIdReused { .. } => Some(reason::REQUEST_ID_REUSED),
            Error::Unavailable { reason, .. } | Error::Server { reason, .. } => reason.as_deref(),
            Error::Config(_) => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::from_status(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    fn status(code: Code, why: &str, meta: &[(&str, &str)]) -> tonic::Status {
        let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tonic::Status::with_error_details(code, "message", ErrorDetails::with_error_info(why, ERROR_DOMAIN, meta))
    }

    #[test]
    fn reasons_become_typed_errors() {
        let e = Error::from_status(&status(
            Code::FailedPrecondition,
            reason::VERSION_MISMATCH,
            &[("current_version", "7"), ("expected_version", "3")],
        ));
        assert_eq!(e, Error::VersionMismatch { current: 7, expected: Some(3) });
        assert!(!e.is_retryable());

        let e =
            Error::from_status(&status(Code::NotFound, reason::FLAG_NOT_FOUND, &[("namespace", "n"), ("key", "k")]));
        assert_eq!(e, Error::NotFound { namespace: "n".into(), key: "k".into() });

        let e = Error::from_status(&status(Code::AlreadyExists, reason::FLAG_EXISTS, &[("current_version", "2")]));
        assert_eq!(e, Error::AlreadyExists { current: Some(2) });

        for why in [reason::NOT_LEADER, reason::NO_LEADER, reason::WRITE_OUTCOME_UNKNOWN] {
            let e = Error::from_status(&status(Code::Unavailable, why, &[]));
            assert!(e.is_retryable(), "{why} must be retryable");
            assert_eq!(e.reason(), Some(why));
        }
    }

    #[test]
    fn invalid_input_names_the_field_from_bad_request() {
        let mut details = ErrorDetails::with_error_info(
            reason::INVALID_FIELD,
            ERROR_DOMAIN,
            [("field".to_string(), "variants.b".to_string())].into_iter().collect::<HashMap<_, _>>(),
        );
        details.add_bad_request_violation("variants.b", "mixed types");
        let s = tonic::Status::with_error_details(Code::InvalidArgument, "`variants.b`: mixed types", details);
        assert_eq!(
            Error::from_status(&s),
            Error::Invalid { field: "variants.b".into(), problem: "mixed types".into() }
        );
    }

    #[test]
    fn statuses_without_error_info_are_classified_by_code() {
        let e = Error::from_status(&tonic::Status::unavailable("connection refused"));
        assert!(e.is_retryable());
        let e = Error::from_status(&tonic::Status::internal("boom"));
        assert!(!e.is_retryable());
        let e = Error::from_status(&tonic::Status::deadline_exceeded("slow"));
        assert!(e.is_retryable());
    }
}
