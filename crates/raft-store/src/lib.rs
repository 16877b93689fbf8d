//! Vexil's Raft storage: the openraft type config, the RocksDB log store and state machine,
//! and snapshots. No networking lives here (see `vexil-server`).
//!
//! - [`types`]: `TypeConfig`, the proposed [`Request`]/[`Command`] and the [`Response`].
//! - [`schema`]: the tables (column families), their named keys and the records they hold;
//!   [`error`]: [`StoreError`].
//! - [`apply`]: executing committed entries, independent of the storage engine, in a [`txn`]
//!   (buffered reads and writes over a read-only view) that evolves the [`sm_state`].
//! - [`governance`]: change control (policies, change requests, stage gates, dependency
//!   rules), judged in apply.
//! - [`log_store`], [`state_machine`], [`snapshot`]: the RocksDB implementation of openraft's
//!   storage traits, with the durability rules written at each sync.
//! - [`reader`]: consistent reads of the applied state for the server.
//! - [`feed`]: the applied revision and the latest audit entries, published after each apply.
//!
//! Architecture invariant: one RocksDB database per node holds the log, the vote and the state
//! machine (see [`db`]), so one write-ahead log orders every write.

pub mod apply;
pub mod codec;
pub mod db;
pub mod error;
pub mod feed;
pub mod governance;
pub mod identity;
pub mod limits;
pub mod log_store;
pub mod mem;
pub mod reader;
pub mod record_cache;
pub mod runtime;
pub mod schema;
pub mod sm_state;
pub mod snapshot;
pub mod snapshot_data;
pub mod state_machine;
pub mod txn;
pub mod types;

use std::path::Path;

pub use error::StoreError;
pub use identity::{Identity, IdentityStore};
pub use log_store::LogStore;
pub use reader::{
    AuditPage, AuditQuery, ChangeView, Changes, NamespaceState, StateReader, StateSnapshot, ViewSource, merge_parts,
};
pub use schema::{Approval, AuditHead, ChangeRecord, FlagRecord, NamespaceRecord, PolicyRecord};
pub use state_machine::StateMachineStore;
pub use types::{
    ChangeStatus, Command, NodeId, NodeInfo, Outcome, Raft, Request, Response, TypeConfig, Verdict, WriteError,
};

/// Opens (or creates) a node's storage under `data_dir`: the database in `data_dir/db`,
/// snapshots in `data_dir/snapshots`.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    std::fs::create_dir_all(data_dir)?;
    let db = db::open(&data_dir.join("db"))?;
    let sm = StateMachineStore::open(db.clone(), data_dir)?;
    Ok((LogStore::new(db), sm))
}
