//! The audit entry and its SHA-256 hash chain.
//!
//! Every state change appends one [`AuditEntry`], in the same Raft entry and the same storage
//! write as the change. Entries carry a contiguous sequence number `seq` (from 1) and the
//! Raft `revision` that produced them (several entries may share a revision when one command
//! changes several flags). Each entry's `hash` covers its own fields and the previous entry's
//! hash, so editing, dropping or reordering any entry breaks every later hash.
//!
//! The hash input is a language-neutral byte string (so auditors can verify it without this
//! crate):
//!
//! ```text
//! "vexil-audit-v1\0" ‖ prev_hash (32 bytes) ‖ seq (u64 BE) ‖ revision (u64 BE) ‖ time_ms (i64 BE)
//!   ‖ version (u64 BE) ‖ str(actor) ‖ str(action) ‖ str(namespace) ‖ str(key) ‖ opt(before) ‖ opt(after)
//!   ‖ str(reason) ‖ str(request_id)
//! str(s) = len(s) as u32 BE ‖ UTF-8 bytes;  opt(None) = 0x00;  opt(Some(s)) = 0x01 ‖ str(s)
//! ```
//!
//! The first entry's `prev_hash` is 32 zero bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: Hash = [0; 32];

const DOMAIN_TAG: &[u8] = b"vexil-audit-v1\0";

/// What a change did. Stored and hashed as its string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditAction {
    FlagCreate,
    FlagUpdate,
    FlagSetState,
    FlagDelete,
    /// A namespace's `$evaluators` or flag-set `metadata` changed (by `apply`).
    NamespaceUpdate,
    MembershipChange,
    TokenCreate,
    TokenRevoke,
    /// A namespace's access setting changed: whether callers without a token may read it.
    NamespaceAccess,
    /// A node ran short of space (`key`: the node id); writes that grow the state are refused.
    AlarmRaise,
    /// An operator cleared the alarms.
    AlarmClear,
}

impl AuditAction {
    pub const ALL: [AuditAction; 11] = [
        AuditAction::FlagCreate,
        AuditAction::FlagUpdate,
        AuditAction::FlagSetState,
        AuditAction::FlagDelete,
        AuditAction::NamespaceUpdate,
        AuditAction::MembershipChange,
        AuditAction::TokenCreate,
        AuditAction::TokenRevoke,
        AuditAction::NamespaceAccess,
        AuditAction::AlarmRaise,
        AuditAction::AlarmClear,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::FlagCreate => "flag.create",
            AuditAction::FlagUpdate => "flag.update",
            AuditAction::FlagSetState => "flag.set_state",
            AuditAction::FlagDelete => "flag.delete",
            AuditAction::NamespaceUpdate => "namespace.update",
            AuditAction::MembershipChange => "membership.change",
            AuditAction::TokenCreate => "token.create",
            AuditAction::TokenRevoke => "token.revoke",
            AuditAction::NamespaceAccess => "namespace.access",
            AuditAction::AlarmRaise => "alarm.raise",
            AuditAction::AlarmClear => "alarm.clear",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One audited change. `before`/`after` are canonical JSON (absent before a create and after
/// a delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub revision: u64,
    /// Unix milliseconds, stamped by the leader that proposed the change.
    pub time_ms: i64,
    /// The flag's version after the change (0 after a delete and for non-flag entries).
    pub version: u64,
    pub actor: String,
    pub action: AuditAction,
    pub namespace: String,
    pub key: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub reason: String,
    pub request_id: String,
    pub prev_hash: Hash,
    pub hash: Hash,
}

impl AuditEntry {
    /// The hash this entry must carry, computed from its other fields.
    pub fn compute_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(DOMAIN_TAG);
        h.update(self.prev_hash);
        h.update(self.seq.to_be_bytes());
        h.update(self.revision.to_be_bytes());
        h.update(self.time_ms.to_be_bytes());
        h.update(self.version.to_be_bytes());
        for s in [&self.actor, self.action.as_str(), &self.namespace, &self.key] {
            put_str(&mut h, s);
        }
        for o in [&self.before, &self.after] {
            match o {
                None => h.update([0u8]),
                Some(s) => {
                    h.update([1u8]);
                    put_str(&mut h, s);
                }
            }
        }
        put_str(&mut h, &self.reason);
        put_str(&mut h, &self.request_id);
        h.finalize().into()
    }

    /// Sets `hash` from the other fields (used once, when the entry is created).
    pub fn seal(mut self) -> Self {
        self.hash = self.compute_hash();
        self
    }
}

fn put_str(h: &mut Sha256, s: &str) {
    let len = u32::try_from(s.len()).expect("audit strings are bounded far below 4 GiB");
    h.update(len.to_be_bytes());
    h.update(s.as_bytes());
}

/// Where and why a chain failed to verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry seq {seq} (revision {revision}): {problem}")]
pub struct ChainError {
    pub seq: u64,
    pub revision: u64,
    pub problem: String,
}

/// Incremental verifier: feed entries in `seq` order; the first bad one is reported.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    prev_hash: Hash,
    last_revision: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// A verifier for a chain that starts at the genesis entry (seq 1).
    pub fn new() -> Self {
        Self::resume(1, GENESIS_HASH, 0)
    }

    /// A verifier that continues after a trusted entry.
    pub fn resume(next_seq: u64, prev_hash: Hash, last_revision: u64) -> Self {
        Self { next_seq, prev_hash, last_revision }
    }

    pub fn push(&mut self, e: &AuditEntry) -> Result<(), ChainError> {
        let fail = |problem: String| ChainError { seq: e.seq, revision: e.revision, problem };
        if e.seq != self.next_seq {
            return Err(fail(format!("expected seq {}, so entries are missing or reordered", self.next_seq)));
        }
        if e.revision < self.last_revision {
            return Err(fail(format!("revision goes back from {}", self.last_revision)));
        }
        if e.prev_hash != self.prev_hash {
            return Err(fail(format!(
                "prev_hash {} does not match the previous entry's hash {}",
                hex::encode(e.prev_hash),
                hex::encode(self.prev_hash)
            )));
        }
        let computed = e.compute_hash();
        if computed != e.hash {
            return Err(fail(format!(
                "content does not match its hash (stored {}, computed {}): the entry was altered",
                hex::encode(e.hash),
                hex::encode(computed)
            )));
        }
        self.next_seq += 1;
        self.prev_hash = e.hash;
        self.last_revision = e.revision;
        Ok(())
    }

    /// Entries verified so far.
    pub fn verified(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn head_hash(&self) -> Hash {
        self.prev_hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let e = AuditEntry {
                    seq,
                    revision: seq * 2,
                    time_ms: 1_700_000_000_000 + seq as i64,
                    version: seq,
                    actor: "alice".into(),
                    action: AuditAction::FlagUpdate,
                    namespace: "checkout".into(),
                    key: format!("flag-{seq}"),
                    before: (seq > 1).then(|| "{\"a\":1}".into()),
                    after: Some("{\"a\":2}".into()),
                    reason: "test".into(),
                    request_id: format!("req-{seq}"),
                    prev_hash: prev,
                    hash: [0; 32],
                }
                .seal();
                prev = e.hash;
                e
            })
            .collect()
    }

    fn verify(entries: &[AuditEntry]) -> Result<u64, ChainError> {
        let mut v = ChainVerifier::new();
        entries.iter().try_for_each(|e| v.push(e))?;
        Ok(v.verified())
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(10)), Ok(10));
    }

    #[test]
    fn an_edited_entry_is_found() {
        let mut c = chain(10);
        c[4].reason = "edited".into();
        let err = verify(&c).unwrap_err();
        assert_eq!(err.seq, 5);
        assert!(err.problem.contains("altered"), "{err}");
    }

    #[test]
    fn a_resealed_edit_breaks_the_next_link() {
        let mut c = chain(10);
        c[4].after = Some("{\"a\":3}".into());
        c[4] = c[4].clone().seal();
        assert_eq!(verify(&c).unwrap_err().seq, 6);
    }

    #[test]
    fn a_gap_is_found() {
        let mut c = chain(10);
        c.remove(3);
        let err = verify(&c).unwrap_err();
        assert_eq!(err.seq, 5);
        assert!(err.problem.contains("missing"), "{err}");
    }

    #[test]
    fn hash_covers_the_option_tag() {
        let c = chain(1);
        let mut e = c[0].clone();
        e.before = Some(String::new());
        assert_ne!(e.compute_hash(), c[0].hash, "None and Some(\"\") must hash differently");
    }

    #[test]
    fn action_names_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(a));
        }
    }
}
