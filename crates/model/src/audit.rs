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
//!
//! Retention removes a prefix of the chain only behind a [`Checkpoint`]: the seq, revision and
//! hash of the last entry removed. The same command appends an `audit.checkpoint` entry naming
//! that cut (its `after` is [`Checkpoint::to_json`]), so the chain still verifies from the
//! checkpoint on ([`ChainVerifier::from_checkpoint`]), and the cut itself is in the chain: moving
//! it (removing more, or claiming a different hash) breaks the check in [`ChainVerifier::finish`].

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
    /// Retention removed the entries up to a [`Checkpoint`] (the entry's `after`).
    AuditCheckpoint,
    /// A namespace's settings changed (`before`/`after`: [`crate::NamespaceSettings::to_json`]).
    NamespaceSettings,
    /// A namespace's change-control policy changed (`before`/`after`: its canonical JSON).
    NamespacePolicy,
    /// A write the policy covers became change request `key` (`after`: the request).
    ChangePropose,
    /// An approval of change request `key`; the one that completes it is followed, in the same
    /// revision, by the change's own entries (request id `change/<key>`).
    ChangeApprove,
    /// A reviewer rejected change request `key`.
    ChangeReject,
    /// The author (or an admin) withdrew change request `key`.
    ChangeCancel,
    /// Flag `key` was disabled bypassing approval (`after` names the reason and the cascade);
    /// the disable's own entries follow in the same revision.
    FlagBreakGlass,
}

impl AuditAction {
    pub const ALL: [AuditAction; 19] = [
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
        AuditAction::AuditCheckpoint,
        AuditAction::NamespaceSettings,
        AuditAction::NamespacePolicy,
        AuditAction::ChangePropose,
        AuditAction::ChangeApprove,
        AuditAction::ChangeReject,
        AuditAction::ChangeCancel,
        AuditAction::FlagBreakGlass,
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
            AuditAction::AuditCheckpoint => "audit.checkpoint",
            AuditAction::NamespaceSettings => "namespace.settings",
            AuditAction::NamespacePolicy => "namespace.policy",
            AuditAction::ChangePropose => "change.propose",
            AuditAction::ChangeApprove => "change.approve",
            AuditAction::ChangeReject => "change.reject",
            AuditAction::ChangeCancel => "change.cancel",
            AuditAction::FlagBreakGlass => "flag.break_glass",
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

/// Where retention cut the chain: the last entry it removed. Entries after `seq` remain, the
/// first of them carrying `hash` as its `prev_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub revision: u64,
    pub hash: Hash,
}

impl Checkpoint {
    /// The `after` of the `audit.checkpoint` entry that records this cut; `removed` is how many
    /// entries this cut removed (those after the previous checkpoint).
    pub fn to_json(&self, removed: u64) -> String {
        serde_json::json!({
            "through_seq": self.seq,
            "through_revision": self.revision,
            "through_hash": hex::encode(self.hash),
            "removed": removed,
        })
        .to_string()
    }

    /// The cut an `audit.checkpoint` entry records; `None` for any other entry or a malformed one.
    pub fn from_entry(e: &AuditEntry) -> Option<Checkpoint> {
        if e.action != AuditAction::AuditCheckpoint {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(e.after.as_deref()?).ok()?;
        let hash = hex::decode(v.get("through_hash")?.as_str()?).ok()?.try_into().ok()?;
        Some(Checkpoint { seq: v.get("through_seq")?.as_u64()?, revision: v.get("through_revision")?.as_u64()?, hash })
    }
}

/// Incremental verifier: feed entries in `seq` order; the first bad one is reported. Call
/// [`ChainVerifier::finish`] after the last entry.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    prev_hash: Hash,
    last_revision: u64,
    /// The checkpoint the chain was verified from, if it does not start at genesis.
    start: Option<Checkpoint>,
    /// The cut named by the latest `audit.checkpoint` entry pushed (with its seq).
    latest_cut: Option<(u64, Option<Checkpoint>)>,
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
        Self { next_seq, prev_hash, last_revision, start: None, latest_cut: None }
    }

    /// A verifier for a chain whose entries up to `cp` were removed by retention: it starts at
    /// `cp.seq + 1`, and [`ChainVerifier::finish`] requires the latest `audit.checkpoint` entry
    /// to name exactly this cut.
    pub fn from_checkpoint(cp: Checkpoint) -> Self {
        Self { start: Some(cp), ..Self::resume(cp.seq + 1, cp.hash, cp.revision) }
    }

    /// The checkpoint this verifier started from (`None`: from genesis).
    pub fn start(&self) -> Option<Checkpoint> {
        self.start
    }

    /// Checks what only the whole chain shows: a chain verified from a checkpoint holds an
    /// `audit.checkpoint` entry, and the latest one names that checkpoint. Without it, anyone
    /// who can delete entries could drop a prefix and claim a later cut.
    pub fn finish(&self) -> Result<(), ChainError> {
        let Some(start) = self.start else { return Ok(()) };
        let fail = |seq: u64, problem: String| ChainError { seq, revision: self.last_revision, problem };
        match self.latest_cut {
            None => Err(fail(
                start.seq + 1,
                format!(
                    "the log starts after seq {} but holds no audit.checkpoint entry recording that cut: entries were removed",
                    start.seq
                ),
            )),
            Some((seq, None)) => Err(fail(seq, "this audit.checkpoint entry does not name a cut".into())),
            Some((seq, Some(cut))) if cut != start => Err(fail(
                seq,
                format!(
                    "the latest audit.checkpoint entry cuts at seq {} (hash {}), but the log starts after seq {} (hash {}): entries were removed",
                    cut.seq,
                    hex::encode(cut.hash),
                    start.seq,
                    hex::encode(start.hash)
                ),
            )),
            Some(_) => Ok(()),
        }
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
        if e.action == AuditAction::AuditCheckpoint {
            self.latest_cut = Some((e.seq, Checkpoint::from_entry(e)));
        }
        self.next_seq += 1;
        self.prev_hash = e.hash;
        self.last_revision = e.revision;
        Ok(())
    }

    /// Entries verified so far.
    pub fn verified(&self) -> u64 {
        self.next_seq - 1 - self.start.map_or(0, |cp| cp.seq)
    }

    /// The seq of the last entry verified (the checkpoint's, or 0, before the first).
    pub fn last_seq(&self) -> u64 {
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

    /// `chain(n)`'s entries after a cut at `through`, followed by the `audit.checkpoint` entry.
    fn compacted(n: u64, through: u64) -> (Checkpoint, Vec<AuditEntry>) {
        let full = chain(n);
        let cut = &full[through as usize - 1];
        let cp = Checkpoint { seq: cut.seq, revision: cut.revision, hash: cut.hash };
        let last = full.last().cloned().expect("non-empty");
        let entry = AuditEntry {
            seq: last.seq + 1,
            revision: last.revision + 1,
            action: AuditAction::AuditCheckpoint,
            namespace: String::new(),
            key: String::new(),
            before: None,
            after: Some(cp.to_json(through)),
            prev_hash: last.hash,
            ..last
        }
        .seal();
        let mut kept: Vec<AuditEntry> = full.into_iter().skip(through as usize).collect();
        kept.push(entry);
        (cp, kept)
    }

    fn verify_from(cp: Checkpoint, entries: &[AuditEntry]) -> Result<u64, ChainError> {
        let mut v = ChainVerifier::from_checkpoint(cp);
        entries.iter().try_for_each(|e| v.push(e))?;
        v.finish()?;
        Ok(v.verified())
    }

    #[test]
    fn a_chain_verifies_from_its_checkpoint() {
        let (cp, kept) = compacted(10, 4);
        assert_eq!(Checkpoint::from_entry(kept.last().expect("entry")), Some(cp));
        assert_eq!(verify_from(cp, &kept), Ok(7), "seq 5..=11 verified after the cut at 4");
    }

    #[test]
    fn a_prefix_removed_past_the_checkpoint_is_found() {
        let (cp, kept) = compacted(10, 4);
        // Someone removes two more entries and presents the cut at seq 6 as the checkpoint.
        let moved = Checkpoint { seq: 6, revision: kept[1].revision, hash: kept[1].hash };
        let err = verify_from(moved, &kept[2..]).unwrap_err();
        assert_eq!(err.seq, 11, "the checkpoint entry names another cut: {err}");
        assert!(err.problem.contains("cuts at seq 4"), "{err}");
        // A prefix dropped with no checkpoint entry at all.
        let plain = chain(10);
        let cut = Checkpoint { seq: 3, revision: plain[2].revision, hash: plain[2].hash };
        let err = verify_from(cut, &plain[3..]).unwrap_err();
        assert!(err.problem.contains("no audit.checkpoint entry"), "{err}");
        // And a checkpoint whose hash does not lead to the first remaining entry.
        let wrong = Checkpoint { hash: [7; 32], ..cp };
        let err = verify_from(wrong, &kept).unwrap_err();
        assert_eq!(err.seq, 5);
        assert!(err.problem.contains("prev_hash"), "{err}");
    }

    #[test]
    fn action_names_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(a));
        }
    }
}
