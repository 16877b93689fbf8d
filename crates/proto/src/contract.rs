//! The parts of the API contract that are not messages: the stable error reasons
//! ([`ErrorReason`]), and the conversion between the audit entry on the wire and the model's
//! (whose hash chain clients verify), and namespace settings between the wire and the model.

use crate::v1;

/// The `google.rpc.ErrorInfo.domain` of every Vexil error.
pub const ERROR_DOMAIN: &str = "vexil";

/// Declares [`ErrorReason`] from one list, so its variants, their strings and
/// [`ErrorReason::ALL`] cannot drift apart.
macro_rules! error_reasons {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// A stable `google.rpc.ErrorInfo.reason`: what clients act on, never on messages.
        ///
        /// The server's one error mapping (`vexil-server`'s `error.rs`) sends them; the client
        /// library (`vexil_client::Error::from_status`) parses them back. The gRPC code that
        /// comes with each is noted; the metadata keys are those the server sets.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorReason {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [ErrorReason] = &[$(ErrorReason::$variant,)*];

            /// The wire string (`SCREAMING_SNAKE_CASE`), as it appears in `ErrorInfo.reason`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorReason::$variant => $text,)*
                }
            }
        }
    };
}

error_reasons! {
    /// INVALID_ARGUMENT: an input was refused; metadata `field` names it (a
    /// `google.rpc.BadRequest` field violation says why).
    InvalidField = "INVALID_FIELD",
    /// NOT_FOUND: metadata `namespace`, `key`.
    FlagNotFound = "FLAG_NOT_FOUND",
    /// ALREADY_EXISTS: metadata `current_version`.
    FlagExists = "FLAG_EXISTS",
    /// FAILED_PRECONDITION: a compare-and-set lost; metadata `current_version`,
    /// `expected_version`.
    VersionMismatch = "VERSION_MISMATCH",
    /// FAILED_PRECONDITION: a request id was reused for a different command (a caller bug).
    RequestIdReused = "REQUEST_ID_REUSED",
    /// FAILED_PRECONDITION: `Init` on a cluster that already has one.
    AlreadyInitialized = "ALREADY_INITIALIZED",
    /// UNAVAILABLE: this node does not lead; metadata `leader_id`, `leader_api_addr` when known.
    NotLeader = "NOT_LEADER",
    /// UNAVAILABLE: no leader is known (an election, or no quorum reachable).
    NoLeader = "NO_LEADER",
    /// UNAVAILABLE: a node a membership change needs (one being joined) did not answer in time.
    PeerUnreachable = "PEER_UNREACHABLE",
    /// UNAVAILABLE: a write was not confirmed in time; retried with the same `request_id` it
    /// applies at most once.
    WriteOutcomeUnknown = "WRITE_OUTCOME_UNKNOWN",
    /// UNAVAILABLE: a read could not be made safe in time.
    ReadTimeout = "READ_TIMEOUT",
    /// UNAVAILABLE: a `lease` read on a node whose read lease expired and could not be renewed.
    LeaseExpired = "LEASE_EXPIRED",
    /// UNAVAILABLE: the node is shutting down; send the call to another node.
    ShuttingDown = "SHUTTING_DOWN",
    /// RESOURCE_EXHAUSTED: the node serves as many watch streams as it allows; watch another node.
    WatchLimit = "WATCH_LIMIT",
    /// OUT_OF_RANGE: the changes after a watch's `after_revision` are no longer retained; take a
    /// new snapshot (`proto/vexil/v1/watch.proto`): audit retention removed them. Metadata
    /// `compacted_revision`: resume from a snapshot at or after it.
    RevisionCompacted = "REVISION_COMPACTED",
    /// FAILED_PRECONDITION: a membership change was refused.
    Membership = "MEMBERSHIP",
    /// DEADLINE_EXCEEDED: a requested snapshot was not built in time (it may still complete).
    SnapshotTimeout = "SNAPSHOT_TIMEOUT",
    /// UNAUTHENTICATED: a call without valid credentials: no bearer token, an unknown,
    /// expired or revoked one (the message says which), or, on the Raft port, no cluster secret.
    Unauthenticated = "UNAUTHENTICATED",
    /// PERMISSION_DENIED: valid credentials without the role the call needs; metadata
    /// `principal`, `needs` (the role, and the namespace when one is named).
    PermissionDenied = "PERMISSION_DENIED",
    /// ALREADY_EXISTS: a token of this name exists; metadata `name`.
    TokenExists = "TOKEN_EXISTS",
    /// NOT_FOUND: no token of this name; metadata `name`.
    TokenNotFound = "TOKEN_NOT_FOUND",
    /// RESOURCE_EXHAUSTED: a limit on stored items was reached; metadata `limit` names it.
    LimitReached = "LIMIT_REACHED",
    /// RESOURCE_EXHAUSTED: one principal called a node too often; metadata `principal`,
    /// `limit` (the setting and its value) and `retry_after_ms`.
    RateLimited = "RATE_LIMITED",
    /// RESOURCE_EXHAUSTED: a NOSPACE alarm stands (a node crossed `storage.quota_bytes` or
    /// `storage.free_bytes_min`) and the write would grow the state; metadata `alarms` names
    /// the nodes. Writes work again once an operator made room and cleared the alarm
    /// (`vexilctl cluster alarm clear`).
    NoSpace = "NO_SPACE",
    /// FAILED_PRECONDITION: the namespace's change-control policy refused the write; metadata
    /// `rule` names the rule (`dependency.disabled`, `lifecycle.active.owner`,
    /// `approval.author`, `change.stale`, ...), `namespace`, `key`.
    RuleViolated = "RULE_VIOLATED",
    /// NOT_FOUND: no change request of this id in the namespace; metadata `namespace`, `id`.
    ChangeNotFound = "CHANGE_NOT_FOUND",
    /// INTERNAL: this node's storage failed.
    Storage = "STORAGE",
    /// INTERNAL: openraft stopped on a fatal error (its storage failed, or it panicked), on
    /// this node or on the leader a write was forwarded to.
    Raft = "RAFT",
    /// INTERNAL: an invariant was broken: a bug, to report.
    Internal = "INTERNAL",
}

impl ErrorReason {
    /// The reason with this wire string; `None` for one this version does not know (sent by a
    /// newer server), which callers classify by the status code alone.
    pub fn parse(s: &str) -> Option<ErrorReason> {
        ErrorReason::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl v1::WatchSnapshot {
    /// Joins the next part of a snapshot sent in parts (`more` is set on every part but the
    /// last): a namespace continued from the previous part gains the part's flags, and keeps
    /// the `$evaluators` and metadata of its first part.
    pub fn absorb(&mut self, part: v1::WatchSnapshot) {
        for state in part.namespaces {
            match self.namespaces.last_mut() {
                Some(last) if last.namespace == state.namespace => last.flags.extend(state.flags),
                _ => self.namespaces.push(state),
            }
        }
        self.more = part.more;
    }
}

impl From<vexil_model::AuditEntry> for v1::AuditEntry {
    fn from(e: vexil_model::AuditEntry) -> Self {
        v1::AuditEntry {
            seq: e.seq,
            revision: e.revision,
            time_ms: e.time_ms,
            version: e.version,
            actor: e.actor,
            action: e.action.as_str().into(),
            namespace: e.namespace,
            key: e.key,
            before: e.before,
            after: e.after,
            reason: e.reason,
            request_id: e.request_id,
            prev_hash: e.prev_hash.to_vec(),
            hash: e.hash.to_vec(),
        }
    }
}

impl TryFrom<&v1::AuditEntry> for vexil_model::AuditEntry {
    type Error = String;

    /// Fails on an unknown action or a hash that is not 32 bytes (the entry cannot be verified).
    fn try_from(e: &v1::AuditEntry) -> Result<Self, String> {
        let hash = |h: &[u8], what: &str| -> Result<[u8; 32], String> {
            h.try_into().map_err(|_| format!("entry seq {}: {what} is {} bytes, not 32", e.seq, h.len()))
        };
        Ok(vexil_model::AuditEntry {
            seq: e.seq,
            revision: e.revision,
            time_ms: e.time_ms,
            version: e.version,
            actor: e.actor.clone(),
            action: vexil_model::AuditAction::parse(&e.action)
                .ok_or_else(|| format!("entry seq {}: unknown action {:?}", e.seq, e.action))?,
            namespace: e.namespace.clone(),
            key: e.key.clone(),
            before: e.before.clone(),
            after: e.after.clone(),
            reason: e.reason.clone(),
            request_id: e.request_id.clone(),
            prev_hash: hash(&e.prev_hash, "prev_hash")?,
            hash: hash(&e.hash, "hash")?,
        })
    }
}

impl From<vexil_model::audit::Checkpoint> for v1::AuditCheckpoint {
    fn from(c: vexil_model::audit::Checkpoint) -> Self {
        v1::AuditCheckpoint { seq: c.seq, revision: c.revision, hash: c.hash.to_vec() }
    }
}

impl TryFrom<&v1::AuditCheckpoint> for vexil_model::audit::Checkpoint {
    type Error = String;

    /// Fails on a hash that is not 32 bytes.
    fn try_from(c: &v1::AuditCheckpoint) -> Result<Self, String> {
        let hash = c
            .hash
            .as_slice()
            .try_into()
            .map_err(|_| format!("the checkpoint at seq {}: its hash is {} bytes, not 32", c.seq, c.hash.len()))?;
        Ok(vexil_model::audit::Checkpoint { seq: c.seq, revision: c.revision, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_parses_back_from_its_own_string() {
        let mut seen = std::collections::BTreeSet::new();
        for &r in ErrorReason::ALL {
            assert_eq!(ErrorReason::parse(r.as_str()), Some(r));
            assert_eq!(r.to_string(), r.as_str());
            assert!(r.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{r:?}");
            assert!(seen.insert(r.as_str()), "{r:?}: its string is taken");
        }
        assert_eq!(ErrorReason::parse("NO_SUCH_REASON"), None);
        assert_eq!(ErrorReason::parse("not_leader"), None);
    }

    #[test]
    fn audit_entries_round_trip_through_the_wire_form() {
        let e = vexil_model::AuditEntry {
            seq: 3,
            revision: 9,
            time_ms: 1,
            version: 2,
            actor: "alice".into(),
            action: vexil_model::AuditAction::FlagUpdate,
            namespace: "ns".into(),
            key: "k".into(),
            before: Some("{}".into()),
            after: None,
            reason: "r".into(),
            request_id: "q".into(),
            prev_hash: [7; 32],
            hash: [0; 32],
        }
        .seal();
        let wire: v1::AuditEntry = e.clone().into();
        assert_eq!(vexil_model::AuditEntry::try_from(&wire), Ok(e));
        let mut bad = wire.clone();
        bad.action = "flag.explode".into();
        assert!(vexil_model::AuditEntry::try_from(&bad).is_err());
        bad = wire;
        bad.hash.pop();
        assert!(vexil_model::AuditEntry::try_from(&bad).unwrap_err().contains("31 bytes"));
    }
}

impl From<vexil_model::NamespaceSettings> for v1::NamespaceSettings {
    fn from(s: vexil_model::NamespaceSettings) -> Self {
        v1::NamespaceSettings { fractional: s.fractional.as_str().into(), strict: s.strict }
    }
}

impl v1::NamespaceSettings {
    /// The model's settings, or the `fractional` name this build does not know.
    pub fn to_model(&self) -> Result<vexil_model::NamespaceSettings, String> {
        let fractional = match self.fractional.as_str() {
            "" => vexil_model::eval::FractionalAlgorithm::default(),
            name => vexil_model::eval::FractionalAlgorithm::parse(name).ok_or_else(|| name.to_string())?,
        };
        Ok(vexil_model::NamespaceSettings { fractional, strict: self.strict })
    }
}
