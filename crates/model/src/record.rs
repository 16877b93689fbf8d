//! The stored form of a flag: its definition as JSON text plus the bookkeeping the cluster
//! sets on every write. One type for every holder: the state machine stores it (with bincode,
//! so the field order is the storage format), the vexil.v1 `Flag` carries the same fields, and
//! the client keeps it in its local copy and its disk cache. The flag's key is not part of it:
//! each holder keys its records by namespace and flag key.

use serde::{Deserialize, Serialize};

/// A stored flag: the definition as the proposer validated it, and its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagRecord {
    /// The definition (flagd's flag object plus governance fields), as canonical JSON
    /// ([`crate::FlagSpec::to_json`]) when it was written.
    pub spec_json: String,
    /// +1 on every change; 1 at creation.
    pub version: u64,
    pub created_revision: u64,
    pub mod_revision: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}
