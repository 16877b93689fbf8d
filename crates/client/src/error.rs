//! The client's errors, and the one place a server's `tonic::Status` is parsed back into them.
//!
//! The server puts a `google.rpc.ErrorInfo` (domain `vexil`) with a stable `reason` and
//! metadata into every status (`crates/server/src/error.rs`); [`Error::from_status`] reads it, so
//! callers match on variants (`VersionMismatch { current, .. }`) instead of message text.

use std::collections::HashMap;

use tonic::Code;
use tonic_types::StatusExt;

/// The domain and the stable reasons are part of the API contract, in `vexil-proto`.
pub use vexil_proto::{ERROR_DOMAIN, ErrorReason};

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
    /// No valid credentials: no token, or an unknown, expired or revoked one (the message says
    /// which). Set a token ([`ClientBuilder::token`](crate::ClientBuilder::token),
    /// [`ConnectOptions::token`](crate::ConnectOptions::token), `vexilctl --token`).
    #[error("not authenticated: {message}")]
    Unauthenticated { message: String },
    /// Valid credentials without the role the call needs; `needs` names it.
    #[error("permission denied: {message}")]
    PermissionDenied { principal: String, needs: String, message: String },
    /// The node could not serve the call (UNAVAILABLE: unreachable, no leader, shutting down, a
    /// write's outcome unknown, ...), or, from [`AdminClient`](crate::AdminClient), no node
    /// could within its attempts. For a write the outcome may be unknown: retrying with the
    /// same `request_id` applies it at most once.
    #[error("the cluster is unavailable after {attempts} attempt(s): {message}")]
    Unavailable { reason: Option<ErrorReason>, message: String, attempts: u32 },
    /// Any other status, with its code, `ErrorInfo` reason (when there is one this client
    /// knows) and message.
    #[error("{code:?} ({}): {message}", reason.map_or("no reason", ErrorReason::as_str))]
    Server { code: Code, reason: Option<ErrorReason>, message: String },
}

impl Error {
    /// Parses a server status (its code and `ErrorInfo`) into an error: THE decoding of what a
    /// Vexil node says, for this library and for `vexilctl`. A reason this client does not
    /// know (from a newer server) counts as none: the status is classified by its code.
    pub fn from_status(status: &tonic::Status) -> Error {
        let details = status.get_error_details();
        let (why, meta) = match details.error_info() {
            Some(info) if info.domain == ERROR_DOMAIN => (ErrorReason::parse(&info.reason), info.metadata.clone()),
            _ => (None, HashMap::new()),
        };
        let message = status.message().to_string();
        let num = |k: &str| meta.get(k).and_then(|v| v.parse::<u64>().ok());
        let text = |k: &str| meta.get(k).cloned().unwrap_or_default();
        match why {
            Some(ErrorReason::InvalidField) => {
                let violation = details.bad_request().and_then(|b| b.field_violations.first().cloned());
                let field = violation.as_ref().map(|v| v.field.clone()).unwrap_or_else(|| text("field"));
                let problem = violation.map(|v| v.description).unwrap_or_else(|| message.clone());
                Error::Invalid { field, problem }
            }
            Some(ErrorReason::FlagNotFound) => Error::NotFound { namespace: text("namespace"), key: text("key") },
            Some(ErrorReason::FlagExists) => Error::AlreadyExists { current: num("current_version") },
            Some(ErrorReason::VersionMismatch) => Error::VersionMismatch {
                current: num("current_version").unwrap_or(0),
                expected: num("expected_version"),
            },
            Some(ErrorReason::RequestIdReused) => Error::RequestIdReused { message },
            Some(ErrorReason::PermissionDenied) => {
                Error::PermissionDenied { principal: text("principal"), needs: text("needs"), message }
            }
            // Not a flag: kept apart from the NOT_FOUND of a flag below.
            Some(ErrorReason::TokenNotFound | ErrorReason::ChangeNotFound) => {
                Error::Server { code: status.code(), reason: why, message }
            }
            _ if status.code() == Code::Unauthenticated => Error::Unauthenticated { message },
            _ if status.code() == Code::PermissionDenied => {
                Error::PermissionDenied { principal: text("principal"), needs: text("needs"), message }
            }
            _ if status.code() == Code::InvalidArgument => Error::Invalid { field: text("field"), problem: message },
            _ if status.code() == Code::NotFound => Error::NotFound { namespace: text("namespace"), key: text("key") },
            _ if status.code() == Code::Unavailable => Error::Unavailable { reason: why, message, attempts: 1 },
            _ => Error::Server { code: status.code(), reason: why, message },
        }
    }

    /// THE retry policy: whether the same call may be sent again (to another node). Yes when
    /// the node was unreachable, had no leader or was not it, is shutting down or out of watch
    /// slots, could not make a read safe in time, or could not confirm a write's outcome:
    /// writes are retried with the same `request_id`, which the state machine applies at most
    /// once. A status without a reason is judged by its code (a transport failure or a
    /// deadline is retried; anything else is final).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { reason, .. } => reason.is_none_or(retry_elsewhere),
            Error::Server { reason: Some(reason), .. } => retry_elsewhere(*reason),
            Error::Server { code, reason: None, .. } => {
                matches!(code, Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted)
            }
            Error::Config(_)
            | Error::Invalid { .. }
            | Error::NotFound { .. }
            | Error::AlreadyExists { .. }
            | Error::VersionMismatch { .. }
            | Error::RequestIdReused { .. }
            | Error::Unauthenticated { .. }
            | Error::PermissionDenied { .. } => false,
        }
    }

    /// The `ErrorInfo` reason the server gave, when it gave one this client knows.
    pub fn reason(&self) -> Option<ErrorReason> {
        match self {
            Error::Invalid { .. } => Some(ErrorReason::InvalidField),
            Error::NotFound { .. } => Some(ErrorReason::FlagNotFound),
            Error::AlreadyExists { .. } => Some(ErrorReason::FlagExists),
            Error::VersionMismatch { .. } => Some(ErrorReason::VersionMismatch),
            Error::RequestIdReused { .. } => Some(ErrorReason::RequestIdReused),
            Error::Unauthenticated { .. } => Some(ErrorReason::Unauthenticated),
            Error::PermissionDenied { .. } => Some(ErrorReason::PermissionDenied),
            Error::Unavailable { reason, .. } | Error::Server { reason, .. } => *reason,
            Error::Config(_) => None,
        }
    }

    /// The leader's API address from a `NOT_LEADER` status, when the node knew it: where to
    /// send the call next.
    pub fn leader_hint(status: &tonic::Status) -> Option<String> {
        let details = status.get_error_details();
        let info = details.error_info().filter(|i| i.domain == ERROR_DOMAIN)?;
        info.metadata.get("leader_api_addr").filter(|a| !a.is_empty()).cloned()
    }
}

/// Whether a call refused with `reason` may succeed on another node or a moment later. One
/// line per reason, without a wildcard, so a new reason cannot be added without deciding.
fn retry_elsewhere(reason: ErrorReason) -> bool {
    match reason {
        // The node cannot serve it now; another node (or the leader it names) can.
        ErrorReason::NotLeader
        | ErrorReason::NoLeader
        | ErrorReason::PeerUnreachable
        | ErrorReason::WriteOutcomeUnknown
        | ErrorReason::ReadTimeout
        | ErrorReason::LeaseExpired
        | ErrorReason::ShuttingDown
        | ErrorReason::WatchLimit
        // This principal called this node too often: after a backoff (metadata `retry_after_ms`).
        | ErrorReason::RateLimited => true,
        // Refusals: the same call gets the same answer.
        ErrorReason::InvalidField
        | ErrorReason::FlagNotFound
        | ErrorReason::FlagExists
        | ErrorReason::VersionMismatch
        | ErrorReason::RequestIdReused
        | ErrorReason::AlreadyInitialized
        | ErrorReason::Membership
        | ErrorReason::TokenExists
        | ErrorReason::TokenNotFound
        | ErrorReason::LimitReached
        // A change-control rule: the namespace's policy, or the change request's state, decides.
        | ErrorReason::RuleViolated
        | ErrorReason::ChangeNotFound
        // Until an operator makes room and clears the alarm, every node answers the same.
        | ErrorReason::NoSpace
        // Credentials are the caller's to fix; every node would answer the same.
        | ErrorReason::Unauthenticated
        | ErrorReason::PermissionDenied => false,
        // The watch must resync with a snapshot, not repeat the call.
        ErrorReason::RevisionCompacted => false,
        // Tied to the node asked (its snapshot), or the node needs an operator.
        ErrorReason::SnapshotTimeout | ErrorReason::Storage | ErrorReason::Raft | ErrorReason::Internal => false,
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

    fn status(code: Code, why: ErrorReason, meta: &[(&str, &str)]) -> tonic::Status {
        raw_status(code, why.as_str(), meta)
    }

    fn raw_status(code: Code, why: &str, meta: &[(&str, &str)]) -> tonic::Status {
        let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tonic::Status::with_error_details(code, "message", ErrorDetails::with_error_info(why, ERROR_DOMAIN, meta))
    }

    #[test]
    fn reasons_become_typed_errors() {
        let e = Error::from_status(&status(
            Code::FailedPrecondition,
            ErrorReason::VersionMismatch,
            &[("current_version", "7"), ("expected_version", "3")],
        ));
        assert_eq!(e, Error::VersionMismatch { current: 7, expected: Some(3) });
        assert!(!e.is_retryable());

        let e =
            Error::from_status(&status(Code::NotFound, ErrorReason::FlagNotFound, &[("namespace", "n"), ("key", "k")]));
        assert_eq!(e, Error::NotFound { namespace: "n".into(), key: "k".into() });

        let e = Error::from_status(&status(Code::AlreadyExists, ErrorReason::FlagExists, &[("current_version", "2")]));
        assert_eq!(e, Error::AlreadyExists { current: Some(2) });

        for why in [ErrorReason::NotLeader, ErrorReason::NoLeader, ErrorReason::WriteOutcomeUnknown] {
            let e = Error::from_status(&status(Code::Unavailable, why, &[]));
            assert!(e.is_retryable(), "{why} must be retryable");
            assert_eq!(e.reason(), Some(why));
        }
    }

    #[test]
    fn the_leader_hint_is_read_from_not_leader() {
        let s =
            status(Code::Unavailable, ErrorReason::NotLeader, &[("leader_id", "2"), ("leader_api_addr", "n2:7000")]);
        assert_eq!(Error::leader_hint(&s).as_deref(), Some("n2:7000"));
        assert_eq!(Error::leader_hint(&status(Code::Unavailable, ErrorReason::NotLeader, &[])), None);
    }

    #[test]
    fn unknown_reasons_are_classified_by_code() {
        // A newer server's reason: kept out of the typed reason, judged by its code.
        let e = Error::from_status(&raw_status(Code::Unavailable, "SOMETHING_NEW", &[]));
        assert_eq!(e.reason(), None);
        assert!(e.is_retryable());
        let e = Error::from_status(&raw_status(Code::FailedPrecondition, "SOMETHING_NEW", &[]));
        assert!(matches!(e, Error::Server { code: Code::FailedPrecondition, reason: None, .. }), "{e:?}");
        assert!(!e.is_retryable());
        // A reason known by code but refused: not retried, whatever the code.
        let e = Error::from_status(&status(Code::DeadlineExceeded, ErrorReason::SnapshotTimeout, &[]));
        assert_eq!(e.reason(), Some(ErrorReason::SnapshotTimeout));
        assert!(!e.is_retryable());
        let e = Error::from_status(&status(Code::ResourceExhausted, ErrorReason::WatchLimit, &[]));
        assert!(e.is_retryable());
    }

    #[test]
    fn invalid_input_names_the_field_from_bad_request() {
        let mut details = ErrorDetails::with_error_info(
            ErrorReason::InvalidField.as_str(),
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
