//! The openraft type configuration and the commands the state machine executes.
//!
//! A [`Request`] is what the leader proposes: one [`Command`] plus who asked, why, when and
//! under which `request_id`. Time is stamped by the proposer so that applying an entry is a
//! pure function of the entry and the prior state: every replica derives identical flags and an
//! identical audit chain. A [`Response`] is what applying it produced, and is also what a
//! repeated `request_id` returns.

use std::fmt;

use serde::{Deserialize, Serialize};
use vexil_model::FlagState;

openraft::declare_raft_types!(
    /// Vexil's Raft types: u64 node ids, [`NodeInfo`] addresses, snapshots that are files on
    /// RocksDB nodes (never held in memory whole), and a runtime whose RNG can be seeded.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot_data::SnapshotData,
        AsyncRuntime = crate::runtime::VexilRuntime,
);

pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;

/// Where a cluster member listens: the internal Raft port and the public API port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub raft_addr: String,
    pub api_addr: String,
    /// The node's incarnation ([`crate::Identity`]) as it answered when the cluster took it
    /// in; every Raft message to it carries this, so a node that lost its data recognises
    /// that it was a member.
    pub incarnation: u64,
}

impl NodeInfo {
    /// A member's addresses before it has joined: its incarnation is not known yet (0).
    pub fn new(api_addr: impl Into<String>, raft_addr: impl Into<String>) -> NodeInfo {
        NodeInfo { raft_addr: raft_addr.into(), api_addr: api_addr.into(), incarnation: 0 }
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "api={} raft={}", self.api_addr, self.raft_addr)
    }
}

/// A state change proposed through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Client-chosen id; a repeated id returns the first [`Response`] instead of applying
    /// again. Empty means "no deduplication".
    pub request_id: String,
    /// The authenticated principal, recorded as the audit `actor`.
    pub actor: String,
    /// Free text recorded in the audit entry.
    pub reason: String,
    /// Unix milliseconds on the proposing leader's clock.
    pub time_ms: i64,
    pub command: Command,
}

impl Request {
    /// About how many bytes this request takes in a log entry (its strings plus framing), for
    /// bounding batches without encoding them.
    pub fn approx_bytes(&self) -> usize {
        const FRAMING: usize = 64;
        let strings = self.request_id.len() + self.actor.len() + self.reason.len();
        let command = match &self.command {
            Command::CreateFlag { namespace, key, spec_json }
            | Command::UpdateFlag { namespace, key, spec_json, .. } => namespace.len() + key.len() + spec_json.len(),
            Command::SetFlagState { namespace, key, .. } | Command::DeleteFlag { namespace, key, .. } => {
                namespace.len() + key.len()
            }
            Command::ApplyNamespace { namespace, document_json } => namespace.len() + document_json.len(),
            Command::RecordMembershipChange { description } => description.len(),
            Command::CreateToken { name, grant, .. } => {
                name.len() + 32 + grant.namespaces.iter().map(String::len).sum::<usize>()
            }
            Command::RevokeToken { name } => name.len(),
            Command::SetAnonymousRead { namespace, .. } => namespace.len(),
            Command::SetNamespaceSettings { namespace, change_json } => namespace.len() + change_json.len(),
            Command::SetNamespacePolicy { namespace, policy_json, .. } => namespace.len() + policy_json.len(),
            Command::ReviewChange { namespace, .. } => namespace.len() + 16,
            Command::DisableFlag { namespace, key, .. } => namespace.len() + key.len(),
            Command::Batch { requests } => requests.iter().map(Request::approx_bytes).sum(),
            Command::RaiseAlarm { reason, .. } => 8 + reason.len(),
            Command::ClearAlarms | Command::CompactAudit { .. } => 16,
        };
        FRAMING + strings + command
    }
}

/// The state changes Vexil knows. JSON travels as canonical strings (bincode cannot carry
/// `serde_json::Value`). Log entries hold a variant by its position: a new command goes at
/// the end (`command_tags_are_stable` holds every position).
///
/// Contract for `CreateFlag` and `UpdateFlag`: `spec_json` is the canonical JSON
/// (`FlagSpec::to_json`) of a definition the proposer validated (`FlagSpec::from_json` and the
/// targeting check against the namespace's `$evaluators`). The state machine stores it as it
/// is, without parsing it again: validation is stateless and was done once, and storing the
/// proposed bytes keeps every replica identical even when replicas of different versions would
/// judge a definition differently. The state-dependent checks (exists, version) are decided in
/// apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateFlag {
        namespace: String,
        key: String,
        spec_json: String,
    },
    UpdateFlag {
        namespace: String,
        key: String,
        spec_json: String,
        expected_version: Option<u64>,
    },
    SetFlagState {
        namespace: String,
        key: String,
        state: FlagState,
        expected_version: Option<u64>,
    },
    DeleteFlag {
        namespace: String,
        key: String,
        expected_version: Option<u64>,
    },
    /// Make a namespace match a whole flagd document in one change.
    ApplyNamespace {
        namespace: String,
        document_json: String,
    },
    /// Record who asked for a membership change (the change itself is Raft's own entry, which
    /// is audited with actor `raft`); `description` is JSON naming the request and its revision.
    RecordMembershipChange {
        description: String,
    },
    /// Create a bearer token. `secret_hash` is the SHA-256 of its secret (the secret itself
    /// never enters the log). A `bootstrap` token (the first admin token, from configuration
    /// or `Init`) applies only if no bootstrap token was ever created.
    CreateToken {
        name: String,
        grant: vexil_model::access::Grant,
        secret_hash: [u8; 32],
        expires_ms: i64,
        bootstrap: bool,
    },
    /// Revoke a token by name: it stops authenticating at this revision on every node.
    RevokeToken {
        name: String,
    },
    /// Let callers without a token read a namespace (flags, evaluation, watch), or stop them.
    SetAnonymousRead {
        namespace: String,
        enabled: bool,
    },
    /// Several client requests proposed as ONE log entry (the leader's write batcher groups the
    /// writes that queue while earlier ones are in flight). They apply in order, each as if it
    /// were its own entry at this revision: its own deduplication record, audit entries and
    /// [`Response`] (in [`Outcome::Batch`]); one failing does not affect the others. The
    /// batch's own `request_id` is ignored (the proposer leaves it empty), and a batch never
    /// contains a batch.
    Batch {
        requests: Vec<Request>,
    },
    /// Node `node_id` ran short of space (its quota or its filesystem's reserve, `reason`):
    /// from this entry on, every replica refuses writes that grow the state
    /// ([`WriteError::NoSpace`]). Proposed by the node itself; a no-op while its alarm stands.
    RaiseAlarm {
        node_id: u64,
        reason: String,
    },
    /// Clear every alarm (an operator made room). A node still short raises its own again.
    ClearAlarms,
    /// Audit retention: remove every audit entry up to and including seq `through_seq` (whose
    /// revision is `through_revision`), record the cut as the new checkpoint, and append an
    /// `audit.checkpoint` entry naming it. Proposed by the leader from the retention policy, or
    /// by an operator after exporting the entries. A cut at or before the current checkpoint is
    /// a no-op; one past the head, or naming an entry that is not there, is refused.
    CompactAudit {
        through_seq: u64,
        through_revision: u64,
    },
    /// Change a namespace's settings ([`vexil_model::NamespaceSettings`]): `change_json` is a
    /// JSON object naming only the settings it changes, merged in apply with the settings the
    /// namespace has at that revision (so two changes of different settings both hold).
    SetNamespaceSettings {
        namespace: String,
        change_json: String,
    },
    /// Set a namespace's change-control policy ([`vexil_model::NamespacePolicy`], its JSON
    /// form), or remove it (`policy_json` empty). `expected_version` is the policy's version the
    /// proposer saw (0: none), checked in apply.
    SetNamespacePolicy {
        namespace: String,
        policy_json: String,
        expected_version: Option<u64>,
    },
    /// Approve, reject or cancel change request `id` of `namespace`. `role` is the caller's
    /// role, stamped by the proposer from the caller's token (the state machine judges the
    /// approval with the policy at this revision). The approval that completes a request
    /// applies its change in this entry.
    ReviewChange {
        namespace: String,
        id: u64,
        verdict: Verdict,
        role: vexil_model::access::Role,
    },
    /// The kill switch with options: disable `key`, and with `cascade` every enabled flag that
    /// depends on it (transitively), in one entry. `break_glass` bypasses a policy's approval
    /// where it allows that, and needs a reason; it is marked in the audit log.
    DisableFlag {
        namespace: String,
        key: String,
        expected_version: Option<u64>,
        cascade: bool,
        break_glass: bool,
    },
}

/// What a reviewer does with a change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Approve,
    Reject,
    /// Withdraw it (its author, or an admin).
    Cancel,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
            Verdict::Cancel => "cancel",
        }
    }
}

impl Command {
    /// Whether this command may apply while `alarms` stand: only what does not grow the state
    /// (kill switches, deletes, revocations, membership records, the alarms themselves) does
    /// then. An update may grow a flag, so it waits, as in etcd.
    pub fn allowed_under_alarms(&self, alarms: &std::collections::BTreeMap<u64, Alarm>) -> bool {
        alarms.is_empty()
            || match self {
                Command::SetFlagState { .. }
                | Command::DeleteFlag { .. }
                | Command::RevokeToken { .. }
                | Command::RecordMembershipChange { .. }
                | Command::SetAnonymousRead { enabled: false, .. }
                | Command::SetNamespaceSettings { .. }
                | Command::SetNamespacePolicy { .. }
                | Command::DisableFlag { .. }
                | Command::RaiseAlarm { .. }
                | Command::ClearAlarms
                | Command::CompactAudit { .. } => true,
                Command::Batch { requests } => requests.iter().all(|r| r.command.allowed_under_alarms(alarms)),
                // A rejection or cancellation shrinks nothing but grows nothing; an approval
                // may apply a change that grows the state, so it waits.
                Command::ReviewChange { verdict, .. } => *verdict != Verdict::Approve,
                Command::CreateFlag { .. }
                | Command::UpdateFlag { .. }
                | Command::ApplyNamespace { .. }
                | Command::CreateToken { .. }
                | Command::SetAnonymousRead { enabled: true, .. } => false,
            }
    }

    pub fn namespace(&self) -> &str {
        match self {
            Command::CreateFlag { namespace, .. }
            | Command::UpdateFlag { namespace, .. }
            | Command::SetFlagState { namespace, .. }
            | Command::DeleteFlag { namespace, .. }
            | Command::ApplyNamespace { namespace, .. }
            | Command::SetAnonymousRead { namespace, .. }
            | Command::SetNamespaceSettings { namespace, .. }
            | Command::SetNamespacePolicy { namespace, .. }
            | Command::ReviewChange { namespace, .. }
            | Command::DisableFlag { namespace, .. } => namespace,
            Command::RecordMembershipChange { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::Batch { .. }
            | Command::RaiseAlarm { .. }
            | Command::ClearAlarms
            | Command::CompactAudit { .. } => "",
        }
    }
}

/// The result of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The log index of the entry: the revision the change created (or would have).
    pub revision: u64,
    pub outcome: Result<Outcome, WriteError>,
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Blank and membership entries.
    None,
    /// A single flag changed; `version` is its new version (0 after a delete).
    Flag { version: u64 },
    /// A namespace document was applied.
    Applied { created: u32, updated: u32, deleted: u32, unchanged: u32 },
    /// A [`Command::Batch`]: one response per request, in order.
    Batch(Vec<Response>),
    /// [`Command::ClearAlarms`]: the alarms that stood.
    AlarmsCleared(Vec<Alarm>),
    /// [`Command::CompactAudit`]: the checkpoint the log now starts after, and how many entries
    /// this command removed (0 when the cut was already behind the checkpoint).
    AuditCompacted { checkpoint: vexil_model::audit::Checkpoint, removed: u64 },
    /// A change request: opened (a write the namespace's policy covers), or reviewed. `status`
    /// is where it stands after this entry; `approvals` how many it has.
    Change { id: u64, status: ChangeStatus, approvals: u32 },
}

/// Where a change request stands in the store. Staleness and expiry are judged when it is
/// reviewed (and shown by readers), not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeStatus {
    Pending,
    Applied,
    Rejected,
    Cancelled,
}

impl ChangeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStatus::Pending => "pending",
            ChangeStatus::Applied => "applied",
            ChangeStatus::Rejected => "rejected",
            ChangeStatus::Cancelled => "cancelled",
        }
    }
}

/// Why a well-formed command did not apply. Decided deterministically by the state machine,
/// so every replica agrees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    #[error("flag {namespace}/{key} does not exist")]
    NotFound { namespace: String, key: String },
    #[error("flag {namespace}/{key} already exists (version {version})")]
    AlreadyExists { namespace: String, key: String, version: u64 },
    #[error("flag {namespace}/{key} is at version {current}, not the expected {expected}")]
    VersionMismatch { namespace: String, key: String, expected: u64, current: u64 },
    #[error("`{field}`: {problem}")]
    Invalid { field: String, problem: String },
    #[error("request_id {request_id:?} was already used for a different request")]
    RequestIdReused { request_id: String },
    #[error("a token named {name:?} already exists")]
    TokenExists { name: String },
    #[error("no token is named {name:?}")]
    TokenNotFound { name: String },
    #[error("the cluster holds {max} {what}, its limit ({limit})")]
    LimitReached { limit: String, what: String, max: u64 },
    #[error("the first admin token was already created; create more with an admin token")]
    AlreadyBootstrapped,
    /// A NOSPACE alarm stands and this write would grow the state.
    #[error(
        "the cluster is out of space and refuses writes that grow it ({alarms}); make room (delete flags, \
         raise storage.quota_bytes, or give the node a larger disk), then run `vexilctl cluster alarm clear`"
    )]
    NoSpace { alarms: String },
    /// A namespace's change-control policy refused the write; `rule` names the rule
    /// (`dependency.disabled`, `lifecycle.active.owner`, `approval.author`, `change.stale`, ...).
    #[error("refused by rule {rule} ({namespace}/{key}): {problem}")]
    RuleViolated { rule: String, namespace: String, key: String, problem: String },
    #[error("change request {id} of namespace {namespace} does not exist")]
    ChangeNotFound { namespace: String, id: u64 },
}

impl WriteError {
    /// The refusal of a write that would grow the state while `alarms` stand.
    pub fn no_space(alarms: &std::collections::BTreeMap<u64, Alarm>) -> WriteError {
        let alarms = alarms.values().map(|a| format!("node {}: {}", a.node_id, a.reason)).collect::<Vec<_>>();
        WriteError::NoSpace { alarms: alarms.join("; ") }
    }
}

/// The kind every [`Alarm`] has today (etcd's name for it).
pub const ALARM_NOSPACE: &str = "NOSPACE";

/// A standing NOSPACE alarm of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    pub node_id: u64,
    /// What the node measured, naming the limit it crossed.
    pub reason: String,
    /// The revision that raised it, and when (the proposer's clock).
    pub revision: u64,
    pub time_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bincode writes an enum's variant as its position; a log written by one build must read
    /// the same in the next, and nodes of two builds must agree on every entry. Appending a
    /// command adds a line here; reordering fails.
    #[test]
    fn command_tags_are_stable() {
        let s = String::new;
        let grant =
            vexil_model::access::Grant { role: vexil_model::access::Role::Reader, namespaces: Default::default() };
        let commands = [
            Command::CreateFlag { namespace: s(), key: s(), spec_json: s() },
            Command::UpdateFlag { namespace: s(), key: s(), spec_json: s(), expected_version: None },
            Command::SetFlagState { namespace: s(), key: s(), state: FlagState::Enabled, expected_version: None },
            Command::DeleteFlag { namespace: s(), key: s(), expected_version: None },
            Command::ApplyNamespace { namespace: s(), document_json: s() },
            Command::RecordMembershipChange { description: s() },
            Command::CreateToken { name: s(), grant, secret_hash: [0; 32], expires_ms: 0, bootstrap: false },
            Command::RevokeToken { name: s() },
            Command::SetAnonymousRead { namespace: s(), enabled: false },
            Command::Batch { requests: vec![] },
            Command::RaiseAlarm { node_id: 0, reason: s() },
            Command::ClearAlarms,
            Command::CompactAudit { through_seq: 0, through_revision: 0 },
            Command::SetNamespaceSettings { namespace: s(), change_json: s() },
            Command::SetNamespacePolicy { namespace: s(), policy_json: s(), expected_version: None },
            Command::ReviewChange {
                namespace: s(),
                id: 0,
                verdict: Verdict::Approve,
                role: vexil_model::access::Role::Editor,
            },
            Command::DisableFlag {
                namespace: s(),
                key: s(),
                expected_version: None,
                cascade: false,
                break_glass: false,
            },
        ];
        for (position, command) in commands.iter().enumerate() {
            let bytes = crate::codec::encode(command).expect("encode");
            // The codec's format tag, then the variant's position (a varint: one byte below 251).
            assert_eq!(bytes[1] as usize, position, "{command:?}");
        }
    }

    /// Outcomes and refusals are stored too (deduplication records): same rule as commands.
    #[test]
    fn outcome_and_error_tags_are_stable() {
        let outcome = Outcome::Change { id: 0, status: ChangeStatus::Pending, approvals: 0 };
        assert_eq!(crate::codec::encode(&outcome).expect("encode")[1], 6);
        let s = String::new;
        let errors = [
            (WriteError::RuleViolated { rule: s(), namespace: s(), key: s(), problem: s() }, 10),
            (WriteError::ChangeNotFound { namespace: s(), id: 0 }, 11),
        ];
        for (e, position) in errors {
            assert_eq!(crate::codec::encode(&e).expect("encode")[1], position, "{e:?}");
        }
    }
}
