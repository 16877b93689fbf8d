//! The error contract end to end, without a cluster: every error the server can answer with
//! becomes a status through the one mapping (`vexil_server::error`) and is decoded by the one
//! client decoding (`vexil_client::Error::from_status`) into the right typed error, with its
//! reason, its metadata and the retry decision that variant means.
//!
//! `expect` matches every `ServerError` (and every `WriteError` inside one) without a wildcard,
//! so a new variant does not compile until it has an expectation here, and the test fails until
//! `samples` holds one of it.

use std::collections::BTreeSet;

use tonic::{Code, Status};
use vexil_client::Error;
use vexil_client::error::ErrorReason;
use vexil_raft_store::{StoreError, WriteError};
use vexil_server::error::{LeaderHint, ServerError};

/// What a client must make of one server error.
struct Expect {
    code: Code,
    reason: ErrorReason,
    /// Whether `vexil_client` sends the call again (to another node).
    retryable: bool,
    /// The typed error it decodes to, with its metadata.
    decoded: fn(&Error) -> bool,
}

/// How many arms `expect` has.
const VARIANTS: usize = 32;

/// The arm of `expect` an error falls in, and what the client must make of it.
fn expect(e: &ServerError) -> (usize, Expect) {
    let x = |code, reason, retryable, decoded| Expect { code, reason, retryable, decoded };
    let unavailable: fn(&Error) -> bool = |e| matches!(e, Error::Unavailable { attempts: 1, .. });
    let server: fn(&Error) -> bool = |e| matches!(e, Error::Server { .. });
    let invalid: fn(&Error) -> bool =
        |e| matches!(e, Error::Invalid { field, problem } if field == "variants.b" && problem == "mixed types");
    match e {
        ServerError::Invalid { .. } => (0, x(Code::InvalidArgument, ErrorReason::InvalidField, false, invalid)),
        ServerError::Write(w) => match w {
            WriteError::NotFound { .. } => (
                1,
                x(
                    Code::NotFound,
                    ErrorReason::FlagNotFound,
                    false,
                    |e| matches!(e, Error::NotFound { namespace, key } if namespace == "shop" && key == "banner"),
                ),
            ),
            WriteError::AlreadyExists { .. } => (
                2,
                x(Code::AlreadyExists, ErrorReason::FlagExists, false, |e| {
                    matches!(e, Error::AlreadyExists { current: Some(3) })
                }),
            ),
            WriteError::VersionMismatch { .. } => (
                3,
                x(Code::FailedPrecondition, ErrorReason::VersionMismatch, false, |e| {
                    matches!(e, Error::VersionMismatch { current: 4, expected: Some(1) })
                }),
            ),
            WriteError::Invalid { .. } => (4, x(Code::InvalidArgument, ErrorReason::InvalidField, false, invalid)),
            WriteError::RequestIdReused { .. } => (
                5,
                x(
                    Code::FailedPrecondition,
                    ErrorReason::RequestIdReused,
                    false,
                    |e| matches!(e, Error::RequestIdReused { message } if message.contains("r-1")),
                ),
            ),
            WriteError::TokenExists { .. } => (20, x(Code::AlreadyExists, ErrorReason::TokenExists, false, server)),
            WriteError::TokenNotFound { .. } => (21, x(Code::NotFound, ErrorReason::TokenNotFound, false, server)),
            WriteError::LimitReached { .. } => {
                (22, x(Code::ResourceExhausted, ErrorReason::LimitReached, false, server))
            }
            WriteError::AlreadyBootstrapped => {
                (23, x(Code::FailedPrecondition, ErrorReason::AlreadyInitialized, false, server))
            }
            WriteError::NoSpace { .. } => (26, x(Code::ResourceExhausted, ErrorReason::NoSpace, false, server)),
            WriteError::RuleViolated { .. } => {
                (30, x(Code::FailedPrecondition, ErrorReason::RuleViolated, false, server))
            }
            WriteError::ChangeNotFound { .. } => (31, x(Code::NotFound, ErrorReason::ChangeNotFound, false, server)),
        },
        ServerError::AlreadyInitialized => {
            (6, x(Code::FailedPrecondition, ErrorReason::AlreadyInitialized, false, server))
        }
        ServerError::NotLeader(_) => (7, x(Code::Unavailable, ErrorReason::NotLeader, true, unavailable)),
        ServerError::NoLeader => (8, x(Code::Unavailable, ErrorReason::NoLeader, true, unavailable)),
        ServerError::WriteOutcomeUnknown(_) => {
            (9, x(Code::Unavailable, ErrorReason::WriteOutcomeUnknown, true, unavailable))
        }
        ServerError::ReadTimeout(..) => (10, x(Code::Unavailable, ErrorReason::ReadTimeout, true, unavailable)),
        ServerError::LeaseExpired { .. } => (11, x(Code::Unavailable, ErrorReason::LeaseExpired, true, unavailable)),
        // The batcher's shutdown used to be INTERNAL (not retried); it is the node going away.
        ServerError::ShuttingDown => (12, x(Code::Unavailable, ErrorReason::ShuttingDown, true, unavailable)),
        ServerError::WatchLimit => (13, x(Code::ResourceExhausted, ErrorReason::WatchLimit, true, server)),
        ServerError::RateLimited { .. } => (25, x(Code::ResourceExhausted, ErrorReason::RateLimited, true, server)),
        ServerError::Compacted { .. } => (27, x(Code::OutOfRange, ErrorReason::RevisionCompacted, false, server)),
        ServerError::Membership(_) => (14, x(Code::FailedPrecondition, ErrorReason::Membership, false, server)),
        ServerError::Identity(_) => (28, x(Code::FailedPrecondition, ErrorReason::Membership, false, server)),
        ServerError::PeerUnreachable(_) => (29, x(Code::Unavailable, ErrorReason::PeerUnreachable, true, unavailable)),
        ServerError::SnapshotTimeout { .. } => {
            (15, x(Code::DeadlineExceeded, ErrorReason::SnapshotTimeout, false, server))
        }
        ServerError::Unauthenticated(_) => (
            16,
            x(
                Code::Unauthenticated,
                ErrorReason::Unauthenticated,
                false,
                |e| matches!(e, Error::Unauthenticated { message } if message.contains("token")),
            ),
        ),
        ServerError::PermissionDenied { .. } => (
            24,
            x(
                Code::PermissionDenied,
                ErrorReason::PermissionDenied,
                false,
                |e| matches!(e, Error::PermissionDenied { principal, needs, .. } if principal == "ci" && needs == "role admin"),
            ),
        ),
        ServerError::Storage(_) => (17, x(Code::Internal, ErrorReason::Storage, false, server)),
        ServerError::RaftFailed(_) => (18, x(Code::Internal, ErrorReason::Raft, false, server)),
        ServerError::Internal(_) => (19, x(Code::Internal, ErrorReason::Internal, false, server)),
    }
}

fn samples() -> Vec<ServerError> {
    let (ns, key) = ("shop".to_string(), "banner".to_string());
    vec![
        ServerError::invalid("variants.b", "mixed types"),
        ServerError::Write(WriteError::NotFound { namespace: ns.clone(), key: key.clone() }),
        ServerError::Write(WriteError::AlreadyExists { namespace: ns.clone(), key: key.clone(), version: 3 }),
        ServerError::Write(WriteError::VersionMismatch { namespace: ns, key, expected: 1, current: 4 }),
        ServerError::Write(WriteError::Invalid { field: "variants.b".into(), problem: "mixed types".into() }),
        ServerError::Write(WriteError::RequestIdReused { request_id: "r-1".into() }),
        ServerError::AlreadyInitialized,
        ServerError::NotLeader(Some(LeaderHint { id: 2, api_addr: "127.0.0.1:7002".into() })),
        ServerError::NotLeader(None),
        ServerError::NoLeader,
        ServerError::WriteOutcomeUnknown(5_000),
        ServerError::ReadTimeout(5_000, "leadership was not confirmed".into()),
        ServerError::LeaseExpired { expired_ms: Some(12), cause: "no leader".into() },
        ServerError::ShuttingDown,
        ServerError::WatchLimit,
        ServerError::RateLimited { principal: "ci".into(), per_second: 100, retry_after_ms: 8 },
        ServerError::Compacted { after_revision: 3, compacted_revision: 40 },
        ServerError::Membership("node 9 is not a member".into()),
        ServerError::Identity("a message of cluster 1f; node 2 belongs to cluster 9c".into()),
        ServerError::PeerUnreachable("node 4 at n4:7101 did not answer a join".into()),
        ServerError::SnapshotTimeout { target: 10, latest: 7 },
        ServerError::Unauthenticated("no bearer token was sent".into()),
        ServerError::PermissionDenied { principal: "ci".into(), needs: "role admin".into() },
        ServerError::Write(WriteError::TokenExists { name: "ci".into() }),
        ServerError::Write(WriteError::TokenNotFound { name: "ci".into() }),
        ServerError::Write(WriteError::LimitReached { limit: "TOKENS_MAX".into(), what: "tokens".into(), max: 1000 }),
        ServerError::Write(WriteError::AlreadyBootstrapped),
        ServerError::Write(WriteError::NoSpace { alarms: "node 2: the data directory holds 9 bytes".into() }),
        ServerError::Write(WriteError::RuleViolated {
            rule: "dependency.disabled".into(),
            namespace: "shop".into(),
            key: "banner".into(),
            problem: "it depends on \"base\", which is disabled".into(),
        }),
        ServerError::Write(WriteError::ChangeNotFound { namespace: "shop".into(), id: 7 }),
        ServerError::Storage(StoreError::Engine("disk gone".into())),
        ServerError::RaftFailed("panicked".into()),
        ServerError::Internal("unexpected outcome".into()),
    ]
}

#[test]
fn every_server_error_reaches_the_client_as_its_typed_error() {
    let mut covered = [false; VARIANTS];
    let mut sent = BTreeSet::new();
    for e in samples() {
        let what = format!("{e:?}");
        let (arm, want) = expect(&e);
        covered[arm] = true;
        sent.insert(want.reason.as_str());
        let message = e.to_string();
        let hint = matches!(&e, ServerError::NotLeader(Some(_)));

        let status: Status = e.into();
        assert_eq!(status.code(), want.code, "{what}");
        assert_eq!(status.message(), message, "{what}: the message a person reads");

        let decoded = Error::from_status(&status);
        assert_eq!(decoded.reason(), Some(want.reason), "{what}: decoded as {decoded:?}");
        assert!((want.decoded)(&decoded), "{what}: decoded as {decoded:?}");
        assert_eq!(decoded.is_retryable(), want.retryable, "{what}: decoded as {decoded:?}");
        let leader = Error::leader_hint(&status);
        assert_eq!(leader.as_deref(), hint.then_some("127.0.0.1:7002"), "{what}");
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|&i| !covered[i]).collect();
    assert!(missing.is_empty(), "arms of `expect` without a sample: {missing:?}");

    // No reason in the contract that nothing sends.
    let unsent: Vec<ErrorReason> = ErrorReason::ALL.iter().copied().filter(|r| !sent.contains(r.as_str())).collect();
    assert!(unsent.is_empty(), "reasons nothing sends: {unsent:?}");
}
