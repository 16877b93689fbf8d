//! The server's errors, and the ONE place they become gRPC statuses.
//!
//! Every status carries a standard gRPC code, a message a person can act on, and a
//! `google.rpc.ErrorInfo` detail (domain `vexil`) with a stable machine-readable `reason` and
//! metadata (`field`, `current_version`, `leader_id`, `leader_api_addr`, ...), which clients in
//! any language can read. Invalid arguments also carry a `google.rpc.BadRequest` field violation.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use vexil_model::ValidationError;
use vexil_raft_store::{StoreError, WriteError};

/// The domain and the stable reasons are part of the API contract, in `vexil-proto`.
pub use vexil_proto::{ERROR_DOMAIN, reason};

/// Where the leader is, when this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub id: u64,
    pub api_addr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("`{field}`: {problem}")]
    Invalid { field: String, problem: String },
    #[error("{0}")]
    Write(WriteError),
    #[error("this cluster is already initialised; nothing was changed")]
    AlreadyInitialized,
    #[error("this node is not the leader{}", leader_text(.0))]
    NotLeader(Option<LeaderHint>),
    #[error("no leader is known right now (election in progress or no quorum reachable); retry shortly")]
    NoLeader,
    #[error(
        "the write was not confirmed within {0} ms; its outcome is unknown: retry with the same request_id, which applies it at most once"
    )]
    WriteOutcomeUnknown(u64),
    #[error("the read could not be served within {0} ms: {1}")]
    ReadTimeout(u64, String),
    #[error(
        "this node's read lease has expired{} and could not be renewed: {cause}; read from another node, or use consistency STALE to accept possibly stale data",
        expired_ms.map(|ms| format!(" ({ms} ms ago)")).unwrap_or_default()
    )]
    LeaseExpired { expired_ms: Option<u64>, cause: String },
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("storage failure: {0}")]
    Storage(#[from] StoreError),
    #[error("raft failure: {0}")]
    Raft(String),
}

fn leader_text(hint: &Option<LeaderHint>) -> String {
    match hint {
        Some(h) => format!("; send the request to node {} at {}", h.id, h.api_addr),
        None => "; no leader is known yet, retry shortly".into(),
    }
}

impl From<ValidationError> for ServerError {
    fn from(e: ValidationError) -> Self {
        ServerError::Invalid { field: e.field, problem: e.problem }
    }
}

impl ServerError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ServerError::Invalid { field: field.into(), problem: problem.into() }
    }
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        let message = e.to_string();
        let mut meta: HashMap<String, String> = HashMap::new();
        let (code, why) = match &e {
            ServerError::Invalid { field, problem } => {
                meta.insert("field".into(), field.clone());
                let mut details = ErrorDetails::with_error_info(reason::INVALID_FIELD, ERROR_DOMAIN, meta);
                details.add_bad_request_violation(field.clone(), problem.clone());
                return Status::with_error_details(Code::InvalidArgument, message, details);
            }
            ServerError::Write(w) => match w {
                WriteError::NotFound { namespace, key } => {
                    meta.insert("namespace".into(), namespace.clone());
                    meta.insert("key".into(), key.clone());
                    (Code::NotFound, reason::FLAG_NOT_FOUND)
                }
                WriteError::AlreadyExists { version, .. } => {
                    meta.insert("current_version".into(), version.to_string());
                    (Code::AlreadyExists, reason::FLAG_EXISTS)
                }
                WriteError::VersionMismatch { expected, current, .. } => {
                    meta.insert("current_version".into(), current.to_string());
                    meta.insert("expected_version".into(), expected.to_string());
                    (Code::FailedPrecondition, reason::VERSION_MISMATCH)
                }
                WriteError::Invalid { field, problem } => {
                    return ServerError::invalid(field.clone(), problem.clone()).into();
                }
                WriteError::RequestIdReused { .. } => (Code::FailedPrecondition, reason::REQUEST_ID_REUSED),
            },
            ServerError::AlreadyInitialized => (Code::FailedPrecondition, reason::ALREADY_INITIALIZED),
            ServerError::NotLeader(hint) => {
                if let Some(h) = hint {
                    meta.insert("leader_id".into(), h.id.to_string());
                    meta.insert("leader_api_addr".into(), h.api_addr.clone());
                }
                (Code::Unavailable, reason::NOT_LEADER)
            }
            ServerError::NoLeader => (Code::Unavailable, reason::NO_LEADER),
            ServerError::WriteOutcomeUnknown(_) => (Code::Unavailable, reason::WRITE_OUTCOME_UNKNOWN),
            ServerError::ReadTimeout(..) => (Code::Unavailable, reason::READ_TIMEOUT),
            ServerError::LeaseExpired { .. } => (Code::Unavailable, reason::LEASE_EXPIRED),
            ServerError::Membership(_) => (Code::FailedPrecondition, reason::MEMBERSHIP),
            ServerError::Storage(_) => (Code::Internal, reason::STORAGE),
            ServerError::Raft(_) => (Code::Internal, reason::RAFT),
        };
        Status::with_error_details(code, message, ErrorDetails::with_error_info(why, ERROR_DOMAIN, meta))
    }
}

/// Reads the `ErrorInfo` reason and metadata back out of a status (for clients and tests).
pub fn error_info(status: &Status) -> Option<(String, HashMap<String, String>)> {
    let details = status.get_error_details();
    details.error_info().map(|i| (i.reason.clone(), i.metadata.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_mismatch_carries_the_current_version() {
        let e = ServerError::Write(WriteError::VersionMismatch {
            namespace: "n".into(),
            key: "k".into(),
            expected: 1,
            current: 4,
        });
        let status: Status = e.into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        let (why, meta) = error_info(&status).expect("error info");
        assert_eq!(why, reason::VERSION_MISMATCH);
        assert_eq!(meta.get("current_version").map(String::as_str), Some("4"));
        assert!(status.message().contains("version 4"), "{}", status.message());
    }

    #[test]
    fn invalid_arguments_name_the_field() {
        let status: Status = ServerError::invalid("variants.b", "mixed types").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request detail");
        assert_eq!(bad.field_violations[0].field, "variants.b");
        assert!(status.message().starts_with("`variants.b`"), "{}", status.message());
    }
}
