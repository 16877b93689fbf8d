//! The parts of the API contract that are not messages: the stable error reasons, and the
//! conversion between the audit entry on the wire and the model's (whose hash chain clients
//! verify).

use crate::v1;

/// The `google.rpc.ErrorInfo.domain` of every Vexil error.
pub const ERROR_DOMAIN: &str = "vexil";

/// Stable `google.rpc.ErrorInfo.reason` strings. Clients act on these, never on messages.
pub mod reason {
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    pub const FLAG_NOT_FOUND: &str = "FLAG_NOT_FOUND";
    pub const FLAG_EXISTS: &str = "FLAG_EXISTS";
    pub const VERSION_MISMATCH: &str = "VERSION_MISMATCH";
    pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
    pub const ALREADY_INITIALIZED: &str = "ALREADY_INITIALIZED";
    pub const NOT_LEADER: &str = "NOT_LEADER";
    pub const NO_LEADER: &str = "NO_LEADER";
    pub const WRITE_OUTCOME_UNKNOWN: &str = "WRITE_OUTCOME_UNKNOWN";
    pub const READ_TIMEOUT: &str = "READ_TIMEOUT";
    pub const LEASE_EXPIRED: &str = "LEASE_EXPIRED";
    pub const REVISION_COMPACTED: &str = "REVISION_COMPACTED";
    pub const MEMBERSHIP: &str = "MEMBERSHIP";
    pub const STORAGE: &str = "STORAGE";
    pub const RAFT: &str = "RAFT";
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
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

#[cfg(test)]
mod tests {
    use super::*;

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
