//! The server's errors, and the ONE place they become gRPC statuses: every status the node
//! sends for an error of its own, on the public API and on the Raft port, is built by
//! `From<ServerError> for Status` below (and `health_unknown_service` and `flagd_status`, other
//! protocols' own answers). Handlers return `ServerError`, never a `Status` they built themselves.
//!
//! Every status carries a standard gRPC code, a message a person can act on, and a
//! `google.rpc.ErrorInfo` detail (domain `vexil`) with a stable machine-readable `reason` and
//! metadata (`field`, `current_version`, `leader_id`, `leader_api_addr`, ...), which clients in
//! any language can read. Invalid arguments also carry a `google.rpc.BadRequest` field violation.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use vexil_model::ValidationError;
use vexil_raft_store::{NodeId, StoreError, WriteError};

/// The domain and the stable reasons are part of the API contract, in `vexil-proto`.
pub use vexil_proto::{ERROR_DOMAIN, ErrorReason};

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
    /// The node is stopping (its Raft core has stopped, or the task that would answer was
    /// dropped with the runtime). A write caught in it may or may not have been applied, which
    /// the same `request_id` on another node settles.
    #[error(
        "this node is shutting down; send the request to another node (a write retried with the same request_id applies at most once; a watch resumes from its last revision)"
    )]
    ShuttingDown,
    /// A principal called this node more often than `auth.principal_requests_per_second`.
    #[error(
        "{principal:?} made more than {per_second} calls per second to this node (auth.principal_requests_per_second); retry in {retry_after_ms} ms"
    )]
    RateLimited { principal: String, per_second: u32, retry_after_ms: u64 },
    /// Every watch slot of this node is taken (`limits::WATCH_STREAMS_MAX`).
    #[error("this node serves the most watch streams it allows; connect to another node")]
    WatchLimit,
    /// A watch asked for changes that audit retention removed.
    #[error(
        "the changes after revision {after_revision} are no longer retained (audit retention cut the log at revision {compacted_revision}); take a new snapshot and resume from its revision"
    )]
    Compacted { after_revision: u64, compacted_revision: u64 },
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A member a membership change needs (a node to join) did not answer in time: retry.
    #[error("{0}")]
    PeerUnreachable(String),
    /// A Raft call between nodes whose cluster identities do not match (`identity.rs`): another
    /// cluster, an empty data directory, or an older incarnation.
    #[error("{0}")]
    Identity(String),
    /// A requested snapshot did not cover `target` before the deadline; openraft may still
    /// finish it.
    #[error("no snapshot covering revision {target} was built in time (latest covers {latest})")]
    SnapshotTimeout { target: u64, latest: u64 },
    /// A call without valid credentials: no bearer token, an unknown, expired or revoked one, or
    /// on the Raft port no cluster secret. The message says which, never the secret.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the role the call needs.
    #[error("{principal:?} may not do this: it needs {needs}")]
    PermissionDenied { principal: String, needs: String },
    #[error("storage failure: {0}")]
    Storage(#[from] StoreError),
    /// openraft stopped on a fatal error (its storage failed or its core panicked), here or on
    /// the leader a write was forwarded to: the node needs an operator.
    #[error("raft failure: {0}")]
    RaftFailed(String),
    /// An invariant was broken (a bug): reported, never guessed around.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a node could not start, or stopped serving: told to the operator (the `vexil` binary
/// prints it and exits non-zero), never sent to a client.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {key} {addr}: {source}")]
    Listen {
        key: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("raft storage: {0}")]
    RaftStorage(#[from] openraft::StorageError<NodeId>),
    #[error("raft configuration: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("raft stopped: {0}")]
    RaftFatal(#[from] openraft::error::Fatal<NodeId>),
    /// The Raft core stopped while the node was serving, without being asked to: the node
    /// stops too (fail-stop, `lib.rs`), and its supervisor restarts it.
    #[error("{}", core_stopped_text(.0))]
    RaftStopped(openraft::error::Fatal<NodeId>),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// A leader showed that this node lost its data (`identity.rs`): it must rejoin.
    #[error("{0}")]
    DataLost(String),
    #[error("a server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// An HTTP port (`admin`, `openfeature`) failed.
    #[error("the {port} port failed: {source}")]
    Http {
        port: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("a server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The `vexil` process's exit codes: a supervisor (or a person) tells from the code alone what
/// kind of failure stopped a node. The storage and Raft codes follow BSD `sysexits.h`.
pub mod exit_code {
    /// Stopped as asked (SIGTERM, SIGINT).
    pub const OK: u8 = 0;
    /// Any failure not listed below (a port already in use, a server that failed).
    pub const FAILURE: u8 = 1;
    /// The configuration is invalid; restarting will not help until it is fixed.
    pub const CONFIG: u8 = 2;
    /// The Raft core stopped on its own for another reason than storage (it panicked): a bug.
    /// `EX_SOFTWARE`.
    pub const RAFT_STOPPED: u8 = 70;
    /// A write, fsync or read of the log, the vote or the state machine failed (a full or
    /// failing disk), while serving or at start. Never retried in place: a failed fsync leaves
    /// what is on disk unknown, and only a restart, which recovers from what is on disk, knows
    /// it again. `EX_IOERR`.
    pub const STORAGE: u8 = 74;
}

impl NodeError {
    /// The process exit code for this error (see [`exit_code`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeError::Config(_) | NodeError::Identity(_) | NodeError::DataLost(_) => exit_code::CONFIG,
            NodeError::Store(_) | NodeError::RaftStorage(_) => exit_code::STORAGE,
            NodeError::RaftFatal(fatal) | NodeError::RaftStopped(fatal) => match fatal {
                openraft::error::Fatal::StorageError(_) => exit_code::STORAGE,
                _ => exit_code::RAFT_STOPPED,
            },
            _ => exit_code::FAILURE,
        }
    }
}

fn core_stopped_text(stop: &openraft::error::Fatal<NodeId>) -> String {
    match stop {
        openraft::error::Fatal::StorageError(e) => format!(
            "storage failure, node stopped: {e}. A failed write or fsync is never retried: what is on \
             disk is unknown until a restart recovers from it. Free space or replace the disk, then \
             restart the node; every write it acknowledged was synced before it was acknowledged"
        ),
        openraft::error::Fatal::Panicked => {
            "the Raft core panicked (a bug; see the log above), node stopped; restart it".into()
        }
        openraft::error::Fatal::Stopped => {
            "the Raft core stopped without being asked to (a bug), node stopped; restart it".into()
        }
    }
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

/// openraft's fatal errors: a stopped core is a node shutting down (UNAVAILABLE, retried
/// elsewhere); a storage error or a panic needs an operator.
impl From<openraft::error::Fatal<NodeId>> for ServerError {
    fn from(e: openraft::error::Fatal<NodeId>) -> Self {
        match e {
            openraft::error::Fatal::Stopped => ServerError::ShuttingDown,
            other => ServerError::RaftFailed(other.to_string()),
        }
    }
}

impl ServerError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ServerError::Invalid { field: field.into(), problem: problem.into() }
    }

    /// The HTTP status of this error on the HTTP surfaces (the admin port), from its gRPC code
    /// as gRPC's HTTP mapping has it.
    pub fn http_status(&self) -> u16 {
        match self.classify(&mut HashMap::new()).0 {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::ResourceExhausted => 429,
            Code::Unavailable => 503,
            Code::DeadlineExceeded => 504,
            _ => 500,
        }
    }

    /// For RATE_LIMITED: how long to wait, in whole seconds (HTTP `Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ServerError::RateLimited { retry_after_ms, .. } => Some(retry_after_ms.div_ceil(1000)),
            _ => None,
        }
    }

    /// The gRPC code and the stable reason of this error; the metadata that goes with them is
    /// added to `meta`.
    fn classify(&self, meta: &mut HashMap<String, String>) -> (Code, ErrorReason) {
        match self {
            ServerError::Invalid { field, .. } | ServerError::Write(WriteError::Invalid { field, .. }) => {
                meta.insert("field".into(), field.clone());
                (Code::InvalidArgument, ErrorReason::InvalidField)
            }
            ServerError::Write(WriteError::NotFound { namespace, key }) => {
                meta.insert("namespace".into(), namespace.clone());
                meta.insert("key".into(), key.clone());
                (Code::NotFound, ErrorReason::FlagNotFound)
            }
            ServerError::Write(WriteError::AlreadyExists { version, .. }) => {
                meta.insert("current_version".into(), version.to_string());
                (Code::AlreadyExists, ErrorReason::FlagExists)
            }
            ServerError::Write(WriteError::VersionMismatch { expected, current, .. }) => {
                meta.insert("current_version".into(), current.to_string());
                meta.insert("expected_version".into(), expected.to_string());
                (Code::FailedPrecondition, ErrorReason::VersionMismatch)
            }
            ServerError::Write(WriteError::RequestIdReused { .. }) => {
                (Code::FailedPrecondition, ErrorReason::RequestIdReused)
            }
            ServerError::Write(WriteError::TokenExists { name }) => {
                meta.insert("name".into(), name.clone());
                (Code::AlreadyExists, ErrorReason::TokenExists)
            }
            ServerError::Write(WriteError::TokenNotFound { name }) => {
                meta.insert("name".into(), name.clone());
                (Code::NotFound, ErrorReason::TokenNotFound)
            }
            ServerError::Write(WriteError::LimitReached { limit, .. }) => {
                meta.insert("limit".into(), limit.clone());
                (Code::ResourceExhausted, ErrorReason::LimitReached)
            }
            ServerError::Write(WriteError::NoSpace { alarms }) => {
                meta.insert("alarms".into(), alarms.clone());
                (Code::ResourceExhausted, ErrorReason::NoSpace)
            }
            ServerError::Write(WriteError::RuleViolated { rule, namespace, key, .. }) => {
                meta.insert("rule".into(), rule.clone());
                meta.insert("namespace".into(), namespace.clone());
                meta.insert("key".into(), key.clone());
                (Code::FailedPrecondition, ErrorReason::RuleViolated)
            }
            ServerError::Write(WriteError::ChangeNotFound { namespace, id }) => {
                meta.insert("namespace".into(), namespace.clone());
                meta.insert("id".into(), id.to_string());
                (Code::NotFound, ErrorReason::ChangeNotFound)
            }
            ServerError::Write(WriteError::AlreadyBootstrapped) => {
                (Code::FailedPrecondition, ErrorReason::AlreadyInitialized)
            }
            ServerError::AlreadyInitialized => (Code::FailedPrecondition, ErrorReason::AlreadyInitialized),
            ServerError::NotLeader(hint) => {
                if let Some(h) = hint {
                    meta.insert("leader_id".into(), h.id.to_string());
                    meta.insert("leader_api_addr".into(), h.api_addr.clone());
                }
                (Code::Unavailable, ErrorReason::NotLeader)
            }
            ServerError::NoLeader => (Code::Unavailable, ErrorReason::NoLeader),
            ServerError::WriteOutcomeUnknown(_) => (Code::Unavailable, ErrorReason::WriteOutcomeUnknown),
            ServerError::ReadTimeout(..) => (Code::Unavailable, ErrorReason::ReadTimeout),
            ServerError::LeaseExpired { .. } => (Code::Unavailable, ErrorReason::LeaseExpired),
            ServerError::ShuttingDown => (Code::Unavailable, ErrorReason::ShuttingDown),
            ServerError::PeerUnreachable(_) => (Code::Unavailable, ErrorReason::PeerUnreachable),
            ServerError::WatchLimit => (Code::ResourceExhausted, ErrorReason::WatchLimit),
            ServerError::RateLimited { principal, per_second, retry_after_ms } => {
                meta.insert("principal".into(), principal.clone());
                meta.insert("limit".into(), format!("auth.principal_requests_per_second={per_second}"));
                meta.insert("retry_after_ms".into(), retry_after_ms.to_string());
                (Code::ResourceExhausted, ErrorReason::RateLimited)
            }
            ServerError::Compacted { compacted_revision, .. } => {
                meta.insert("compacted_revision".into(), compacted_revision.to_string());
                (Code::OutOfRange, ErrorReason::RevisionCompacted)
            }
            ServerError::Membership(_) | ServerError::Identity(_) => {
                (Code::FailedPrecondition, ErrorReason::Membership)
            }
            ServerError::SnapshotTimeout { .. } => (Code::DeadlineExceeded, ErrorReason::SnapshotTimeout),
            ServerError::Unauthenticated(_) => (Code::Unauthenticated, ErrorReason::Unauthenticated),
            ServerError::PermissionDenied { principal, needs } => {
                meta.insert("principal".into(), principal.clone());
                meta.insert("needs".into(), needs.clone());
                (Code::PermissionDenied, ErrorReason::PermissionDenied)
            }
            ServerError::Storage(_) => (Code::Internal, ErrorReason::Storage),
            ServerError::RaftFailed(_) => (Code::Internal, ErrorReason::Raft),
            ServerError::Internal(_) => (Code::Internal, ErrorReason::Internal),
        }
    }
}

/// THE mapping: every status this server sends for its own errors, on the API port and the
/// Raft port alike, is built here.
impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        let mut meta: HashMap<String, String> = HashMap::new();
        let (code, reason) = e.classify(&mut meta);
        let mut details = ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, meta);
        if let ServerError::Invalid { field, problem } | ServerError::Write(WriteError::Invalid { field, problem }) = &e
        {
            details.add_bad_request_violation(field.clone(), problem.clone());
        }
        Status::with_error_details(code, e.to_string(), details)
    }
}

/// `grpc.health.v1`'s own answer to a check that names a service this node does not serve:
/// NOT_FOUND, as that protocol specifies. Not a Vexil error (health clients are not Vexil
/// clients), so it carries no `ErrorInfo`; built here all the same, with every other status.
pub fn health_unknown_service(service: &str) -> Status {
    Status::not_found(format!(
        "unknown service {service:?}: this node serves \"\" (the whole node) and the vexil.v1 services"
    ))
}

/// flagd's answer to an evaluation that ends in an OpenFeature error, as flagd sends it and its
/// providers decode it: FLAG_NOT_FOUND → NOT_FOUND, TYPE_MISMATCH → INVALID_ARGUMENT,
/// PARSE_ERROR → DATA_LOSS, anything else → UNKNOWN. Plain statuses, without vexil's details.
pub fn flagd_status(code: vexil_model::eval::ErrorCode, message: impl Into<String>) -> Status {
    use vexil_model::eval::ErrorCode;
    let code = match code {
        ErrorCode::FlagNotFound => Code::NotFound,
        ErrorCode::TypeMismatch => Code::InvalidArgument,
        ErrorCode::ParseError => Code::DataLoss,
        ErrorCode::General | ErrorCode::ProviderNotReady => Code::Unknown,
    };
    Status::new(code, message)
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
        assert_eq!(why, ErrorReason::VersionMismatch.as_str());
        assert_eq!(meta.get("current_version").map(String::as_str), Some("4"));
        assert!(status.message().contains("version 4"), "{}", status.message());
    }

    #[test]
    fn a_stopped_raft_is_a_node_shutting_down_and_other_fatal_errors_need_an_operator() {
        let stopped = ServerError::from(openraft::error::Fatal::<NodeId>::Stopped);
        assert!(matches!(stopped, ServerError::ShuttingDown), "{stopped:?}");
        assert_eq!(Status::from(stopped).code(), Code::Unavailable);
        let panicked = ServerError::from(openraft::error::Fatal::<NodeId>::Panicked);
        assert!(matches!(&panicked, ServerError::RaftFailed(m) if m == "panicked"), "{panicked:?}");
        assert_eq!(Status::from(panicked).code(), Code::Internal);
    }

    #[test]
    fn the_http_surfaces_answer_with_the_status_of_the_grpc_code() {
        let limited = ServerError::RateLimited { principal: "ci".into(), per_second: 10, retry_after_ms: 1_200 };
        assert_eq!((limited.http_status(), limited.retry_after_secs()), (429, Some(2)));
        assert_eq!(ServerError::Unauthenticated("no token".into()).http_status(), 401);
        let denied = ServerError::PermissionDenied { principal: "ci".into(), needs: "role admin".into() };
        assert_eq!((denied.http_status(), denied.retry_after_secs()), (403, None));
        assert_eq!(ServerError::invalid("key", "empty").http_status(), 400);
        assert_eq!(ServerError::NoLeader.http_status(), 503);
        assert_eq!(ServerError::Internal("bug".into()).http_status(), 500);
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
