//! The storage layer's error: stored state that cannot be read or decoded.

use crate::codec::CodecError;
use crate::schema::Table;

/// Errors reading or decoding stored state. Any of these means the store is damaged or
/// unreadable; the state machine stops rather than diverge from its peers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("corrupt value in {table:?}: {source}")]
    Corrupt { table: Table, source: CodecError },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot: {0}")]
    Snapshot(String),
}

impl From<CodecError> for StoreError {
    fn from(source: CodecError) -> Self {
        StoreError::Corrupt { table: Table::Meta, source }
    }
}
