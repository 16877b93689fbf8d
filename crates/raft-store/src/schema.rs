//! The state machine's storage schema: the logical tables (one RocksDB column family each),
//! the named keys of the `Meta` table, and the records the tables hold. How keys are encoded
//! is [`crate::codec`]'s; every record is stored with [`crate::codec::encode`] (bincode, so a
//! record's field order is its format).

use serde::{Deserialize, Serialize};
/// The flag record is the model's, shared with the client library (which builds without this
/// crate).
pub use vexil_model::FlagRecord;
use vexil_model::audit::{GENESIS_HASH, Hash};

use crate::types::Response;

/// The logical tables of the state machine. Each is a RocksDB column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `namespace ‖ 0 ‖ key` → [`FlagRecord`].
    Flags,
    /// `namespace` → [`NamespaceRecord`].
    Namespaces,
    /// `revision ‖ seq` → [`vexil_model::AuditEntry`].
    Audit,
    /// `generation ‖ request_id` → [`DedupRecord`] (see [`crate::apply::dedup_generation`]).
    Requests,
    /// Named singletons: see the `META_*` keys and [`crate::sm_state::SmState`].
    Meta,
    /// SHA-256 of a token's secret → [`vexil_model::access::TokenRecord`]: authenticating a
    /// call is one point lookup.
    Tokens,
}

impl Table {
    pub const ALL: [Table; 6] =
        [Table::Flags, Table::Namespaces, Table::Audit, Table::Requests, Table::Meta, Table::Tokens];

    /// The column family that holds this table.
    pub fn cf_name(self) -> &'static str {
        match self {
            Table::Flags => "sm_flags",
            Table::Namespaces => "sm_namespaces",
            Table::Audit => "sm_audit",
            Table::Requests => "sm_requests",
            Table::Meta => "sm_meta",
            Table::Tokens => "sm_tokens",
        }
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Table> {
        Table::ALL.get(usize::from(id)).copied()
    }
}

/// `Meta` key: the last applied [`crate::types::LogId`].
pub const META_APPLIED: &[u8] = b"applied";
/// `Meta` key: the last applied [`crate::types::StoredMembership`].
pub const META_MEMBERSHIP: &[u8] = b"membership";
/// `Meta` key: the [`AuditHead`].
pub const META_AUDIT_HEAD: &[u8] = b"audit_head";
/// `Meta` key: the [`vexil_model::audit::Checkpoint`] retention last cut the audit log at
/// (absent while nothing was ever removed). The `Audit` table holds exactly the entries after it.
pub const META_AUDIT_CHECKPOINT: &[u8] = b"audit_checkpoint";
/// `Meta` key, present once the first admin token was created by bootstrap (configuration or
/// `Init`): a bootstrap token is refused after that, whatever happened to it since.
pub const META_TOKENS_BOOTSTRAPPED: &[u8] = b"tokens_bootstrapped";
/// The namespaces callers without a token may read: an encoded `BTreeSet<String>`, absent
/// when there are none.
pub const META_ANONYMOUS_READ: &[u8] = b"anonymous_read";
/// `Meta` key: the standing NOSPACE alarms, an encoded `BTreeMap<u64, Alarm>` by node id
/// (absent when there are none); cached in [`crate::sm_state::SmState::alarms`].
pub const META_ALARMS: &[u8] = b"alarms";
/// `Meta` key prefix: `namespace_settings/<namespace>` → the namespace's
/// [`vexil_model::NamespaceSettings`], absent while they are the defaults.
pub const META_NAMESPACE_SETTINGS_PREFIX: &[u8] = b"namespace_settings/";

/// The `Meta` key of a namespace's settings.
pub fn namespace_settings_key(namespace: &str) -> Vec<u8> {
    [META_NAMESPACE_SETTINGS_PREFIX, namespace.as_bytes()].concat()
}

/// `Meta` key prefix: `namespace_policy/<namespace>` → the namespace's [`PolicyRecord`],
/// absent while it has none (no change control).
pub const META_NAMESPACE_POLICY_PREFIX: &[u8] = b"namespace_policy/";

/// The `Meta` key of a namespace's change-control policy.
pub fn namespace_policy_key(namespace: &str) -> Vec<u8> {
    [META_NAMESPACE_POLICY_PREFIX, namespace.as_bytes()].concat()
}

/// `Meta` key: the id of the last change request opened (cluster-wide; numbers the next one).
pub const META_CHANGE_SEQ: &[u8] = b"change_seq";
/// `Meta` key prefix: `change/<namespace> ‖ 0 ‖ id (u64 BE)` → [`ChangeRecord`], so one
/// namespace's requests scan in id order.
pub const META_CHANGE_PREFIX: &[u8] = b"change/";

/// The `Meta` key prefix of a namespace's change requests.
pub fn change_prefix(namespace: &str) -> Vec<u8> {
    [META_CHANGE_PREFIX, namespace.as_bytes(), &[0]].concat()
}

/// The `Meta` key of change request `id` of `namespace`.
pub fn change_key(namespace: &str, id: u64) -> Vec<u8> {
    [change_prefix(namespace).as_slice(), &id.to_be_bytes()].concat()
}

/// A namespace's change-control policy as stored: its canonical JSON
/// ([`vexil_model::NamespacePolicy::to_json`]), +1 per change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub version: u64,
    pub policy_json: String,
    pub revision: u64,
}

/// One thing a change request was based on, as it was when proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// A flag key; `""` for the namespace's own record.
    pub key: String,
    /// Its `mod_revision` then (0: absent), for people and the audit log.
    pub mod_revision: u64,
    /// SHA-256 of its stored bytes then (zero: absent): what staleness is judged by, since
    /// several writes can share one revision.
    pub fingerprint: vexil_model::audit::Hash,
}

/// One approval of a change request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub actor: String,
    pub role: vexil_model::access::Role,
    pub revision: u64,
    pub time_ms: i64,
}

/// A change request: a write a namespace's policy covers, held until enough approvals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub id: u64,
    pub namespace: String,
    /// The flag it changes (empty for a whole document).
    pub key: String,
    pub author: String,
    pub reason: String,
    /// The write as proposed; applied as it is, by the approval that completes the request.
    pub command: crate::types::Command,
    /// What the change was based on: each flag it touched when proposed (a cascade's
    /// dependents included), and for a document every flag of the namespace and `""` (the
    /// namespace record). A request whose base moved, or that would now touch a flag beyond its
    /// bases, is stale and never applies.
    pub bases: Vec<Base>,
    pub proposed_revision: u64,
    pub proposed_at_ms: i64,
    pub expires_at_ms: i64,
    pub approvals: Vec<Approval>,
    pub status: crate::types::ChangeStatus,
    /// Who applied (completed), rejected or cancelled it, and at which revision.
    pub closed_by: String,
    pub closed_revision: u64,
}

/// `Meta` key: how many deduplication records were ever written (numbers the next one).
pub const META_REQUESTS_SEQ: &[u8] = b"requests_seq";

/// A namespace's document-level parts: `$evaluators` and flag-set `metadata`, as canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespaceRecord {
    pub evaluators_json: String,
    pub metadata_json: String,
    pub mod_revision: u64,
}

/// The end of the audit chain: the last entry's seq, hash and revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: Hash,
    pub revision: u64,
}

impl Default for AuditHead {
    fn default() -> Self {
        Self { seq: 0, hash: GENESIS_HASH, revision: 0 }
    }
}

/// What a request id resolved to the first time, and a fingerprint of the command it carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    pub fingerprint: Hash,
    pub response: Response,
}
