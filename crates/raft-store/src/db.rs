//! Opening the one RocksDB database that holds the Raft log, the vote and the state machine.
//!
//! Architecture invariant: the log, the vote and every state-machine table live in ONE RocksDB
//! instance with column families, so one write-ahead log orders all of them: syncing the WAL
//! after an append also makes every earlier state-machine write durable, and a crash can only
//! lose a suffix of writes, never a write from the middle. The WAL is never disabled.
//!
//! Failures: RocksDB returns a failed WAL write or sync to the call that asked for it and
//! records it as a background error that refuses later writes. The log store and the state
//! machine hand every such error to openraft, which stops its core and so the node (fail-stop,
//! see `log_store.rs`); none is retried, and RocksDB's own recovery from it is never relied on:
//! the restarted node reopens the database and replays what is on disk.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options,
    ReadOptions, SnapshotWithThreadMode,
};

use crate::error::StoreError;
use crate::limits::WAL_BYTES_MAX;
use crate::schema::Table;
use crate::txn::{KvPairs, KvRead};

/// Column family of the Raft log: `index (u64 BE)` → entry.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Column family of Raft's own state: the vote, the last purged log id, the committed log id.
pub const CF_RAFT_META: &str = "raft_meta";

/// Tables read by whole key in the write path (the others are only scanned).
const POINT_LOOKUP_TABLES: [Table; 3] = [Table::Flags, Table::Namespaces, Table::Requests];

/// Tables written at random keys (flags, request ids) or rewritten at the same keys
/// (singletons) on every write, and `raft_meta` for the same reason (the committed index). A memtable insert searches a skip list of every entry since the
/// last flush; at RocksDB's default 64 MiB that was ~80,000 entries, mostly cache misses, and the
/// inserts were the largest single cost of a write (8 % of all server CPU at 64 clients). A
/// 4 MiB memtable keeps that list small; flushing it often is cheap, because flushing drops the
/// overwritten versions. The log and the audit trail, written at increasing keys, keep the
/// default: an insert at the end of the list is cheap whatever its length.
const SMALL_MEMTABLE_TABLES: [Table; 3] = [Table::Flags, Table::Requests, Table::Meta];
const SMALL_MEMTABLE_BYTES: usize = 4 * 1024 * 1024;

pub fn open(path: &Path) -> Result<Arc<DB>, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Flag data is small and compressible JSON; lz4 costs little CPU.
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_keep_log_file_num(4);
    // Bounds what a restart replays: once the WAL holds this much, RocksDB flushes the column
    // families whose unflushed writes keep the oldest WAL file alive. Left at its default (4x
    // the memtables of all nine column families, ~2 GiB), a node holding 1,000,000 audit
    // entries spent seconds replaying its WAL at every start.
    opts.set_max_total_wal_size(WAL_BYTES_MAX);
    // Reuse obsolete WAL files instead of creating new ones. Every acknowledged write waits for a
    // WAL sync; on a file that grows, fdatasync must also persist the new size (0.25 ms here),
    // on a recycled file it overwrites allocated blocks (0.13 ms), and no file is created at a
    // rollover. RocksDB supports this with our (default) point-in-time recovery: recycled
    // records carry their log number, so replay stops at the first stale one.
    opts.set_recycle_log_file_num(2);
    let mut names = vec![CF_RAFT_LOG, CF_RAFT_META];
    names.extend(Table::ALL.iter().map(|t| t.cf_name()));
    let cfs = names.into_iter().map(|name| {
        let mut cf_opts = Options::default();
        cf_opts.set_compression_type(DBCompressionType::Lz4);
        if POINT_LOOKUP_TABLES.iter().any(|t| t.cf_name() == name) {
            // Every write looks up its request id (almost always absent) and its flag. Bloom
            // filters on the table files and the memtable answer "absent" without a binary
            // search through each; measured, those searches were 10-13 % of a node's CPU.
            let mut table_opts = BlockBasedOptions::default();
            table_opts.set_bloom_filter(10.0, false);
            cf_opts.set_block_based_table_factory(&table_opts);
            cf_opts.set_memtable_prefix_bloom_ratio(0.05);
            cf_opts.set_memtable_whole_key_filtering(true);
        }
        if name == CF_RAFT_META || SMALL_MEMTABLE_TABLES.iter().any(|t| t.cf_name() == name) {
            cf_opts.set_write_buffer_size(SMALL_MEMTABLE_BYTES);
        }
        ColumnFamilyDescriptor::new(name, cf_opts)
    });
    // A column family of an older storage format would make RocksDB refuse to open with a
    // generic error; say what it is instead.
    if let Ok(existing) = DB::list_cf(&opts, path)
        && let Some(old) = existing.iter().find(|name| RETIRED_COLUMN_FAMILIES.contains(&name.as_str()))
    {
        return Err(StoreError::Engine(format!(
            "{}: column family `{old}` belongs to an older storage format that this version cannot read; \
             move the data directory aside and let the node catch up from its peers (a snapshot)",
            path.display()
        )));
    }
    let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(engine)?;
    Ok(Arc::new(db))
}

/// Column families of earlier storage formats (`sm_requests_by_rev`: the request-id pruning
/// index, replaced by generations of request ids).
const RETIRED_COLUMN_FAMILIES: [&str; 1] = ["sm_requests_by_rev"];

pub fn engine(e: rocksdb::Error) -> StoreError {
    StoreError::Engine(e.into_string())
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} is created at open"))
}

/// A [`KvRead`] over the live database, or over a point-in-time RocksDB snapshot of it.
pub struct DbView<'a> {
    pub db: &'a DB,
    pub snapshot: Option<&'a SnapshotWithThreadMode<'a, DB>>,
}

impl DbView<'_> {
    fn read_opts(&self) -> ReadOptions {
        let mut ro = ReadOptions::default();
        if let Some(s) = self.snapshot {
            ro.set_snapshot(s);
        }
        ro
    }
}

impl KvRead for DbView<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf_opt(cf(self.db, table.cf_name()), key, &self.read_opts()).map_err(engine)
    }

    fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError> {
        let from = if start < prefix { prefix } else { start };
        let iter = self.db.iterator_cf_opt(
            cf(self.db, table.cf_name()),
            self.read_opts(),
            IteratorMode::From(from, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(engine)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use rocksdb::{WriteBatch, WriteOptions};

    use super::*;

    #[test]
    fn a_data_dir_of_an_older_format_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            DB::open_cf(&opts, &path, ["sm_flags", "sm_requests_by_rev"]).expect("an old-format database");
        }
        let Err(err) = open(&path) else { panic!("an old format must be refused") };
        let err = err.to_string();
        assert!(err.contains("sm_requests_by_rev") && err.contains("older storage format"), "{err}");
        let fresh = dir.path().join("fresh");
        open(&fresh).expect("a new directory opens");
        open(&fresh).expect("and opens again");
    }

    fn wal_files(path: &Path) -> Vec<String> {
        std::fs::read_dir(path)
            .expect("db dir")
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".log"))
            .collect()
    }

    #[test]
    fn a_reopened_database_replays_only_the_new_records_of_a_recycled_wal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let old = vec![b'o'; 1000];
        {
            let db = open(&path).expect("open");
            let log = cf(&db, CF_RAFT_LOG);
            for i in 0..2000u64 {
                db.put_cf_opt(log, i.to_be_bytes(), &old, &sync).expect("put");
            }
            // Everything in the first WAL file is now in table files: the file is obsolete and
            // goes to the recycle list, to be overwritten by the next WAL.
            for name in [CF_RAFT_LOG, CF_RAFT_META].into_iter().chain(Table::ALL.iter().map(|t| t.cf_name())) {
                db.flush_cf(cf(&db, name)).expect("flush");
            }
            db.put_cf_opt(log, 0u64.to_be_bytes(), b"new", &sync).expect("put");
            db.delete_cf_opt(log, 1u64.to_be_bytes(), &sync).expect("delete");
            let mut batch = WriteBatch::default();
            batch.put_cf(log, 2u64.to_be_bytes(), b"new");
            db.write_opt(batch, &sync).expect("write");
            // A recycled file keeps its old length (the stale records after the new ones).
            let live = wal_files(&path);
            let sizes: Vec<u64> =
                live.iter().map(|n| std::fs::metadata(path.join(n)).expect("wal metadata").len()).collect();
            assert!(sizes.iter().any(|&len| len > 1_000_000), "no recycled WAL among {live:?} ({sizes:?})");
        }
        let db = open(&path).expect("reopen");
        let log = cf(&db, CF_RAFT_LOG);
        let get = |i: u64| db.get_cf(log, i.to_be_bytes()).expect("get");
        // A stale record of the recycled file replayed as new would bring back `old` here.
        assert_eq!(get(0).as_deref(), Some(&b"new"[..]));
        assert_eq!(get(1), None);
        assert_eq!(get(2).as_deref(), Some(&b"new"[..]));
        assert_eq!(get(3).as_deref(), Some(&old[..]));
    }
}
