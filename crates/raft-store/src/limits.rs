//! Bounds of the storage layer, each a named constant.

/// Deduplication records per generation (`apply.rs`: `dedup_generation`). A request id is remembered
/// for at least this many newer deduplicated writes and at most twice that; a retry that arrives
/// later is applied again. At the flag-write rates Vexil is built for, that is days.
pub const DEDUP_GENERATION_REQUESTS: u64 = 100_000;

/// Log entries read from RocksDB per `limited_get_log_entries` call (bounds one replication
/// message and the memory it needs).
pub const LOG_READ_BATCH_MAX: u64 = 1_024;

/// Bytes per record batch when streaming a snapshot into the state machine.
pub const SNAPSHOT_INSTALL_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest single key or value a snapshot file may hold (guards against a corrupt length).
pub const SNAPSHOT_RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest total size of the write-ahead log before RocksDB flushes memtables to free it: what
/// a restart replays at most.
pub const WAL_BYTES_MAX: u64 = 128 * 1024 * 1024;

/// Bytes of flag records the state machine keeps in memory for apply (`record_cache.rs`):
/// ~50,000 typical definitions. Beyond it the least recently written or read go first.
pub const FLAG_CACHE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Audit entries of the latest revisions a node keeps in memory for the change feed
/// (`feed.rs`); a watch further behind reads the audit table.
pub const RECENT_AUDIT_ENTRIES_MAX: usize = 4_096;

/// Audit entries one scan of a filtered `list_audit` page reads at most (`reader.rs`); an
/// unfiltered page reads exactly the entries it returns.
pub const AUDIT_SCAN_CHUNK_ENTRIES_MAX: usize = 512;

/// Change requests one namespace keeps (`governance.rs`): opening one more drops the oldest
/// closed one (its history stays in the audit log); when all are open, proposals are refused.
pub const CHANGES_KEPT_PER_NAMESPACE: usize = 256;
