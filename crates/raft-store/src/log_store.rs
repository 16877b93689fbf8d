//! The Raft log and vote in RocksDB (openraft's `RaftLogStorage`, storage API v2).
//!
//! Durability rules, each enforced where the write happens:
//! - `save_vote` syncs the WAL before it returns: a node must never vote twice in a term, even
//!   across a crash.
//! - `append` makes entries readable at once (memtable) and fires openraft's flush callback only
//!   after a WAL sync that covers them: a leader counts an entry toward the quorum, and a
//!   follower acknowledges it, only once it is on disk. One sync per appended batch.
//! - `truncate` and `purge` are single atomic write batches; `purge` records the new
//!   `last_purged` in the same batch as the deletion, so there is never a hole.
//!
//! Fail-stop: every failed write or sync is returned to openraft as a `StorageError`, never
//! logged and carried on from, never retried. openraft then stops its Raft core, and the node
//! exits with its storage exit code (`vexil-server`, `serve_incoming`). After a failed fsync the
//! kernel may already have dropped the dirty pages it could not write, so a second fsync can
//! succeed without them being on disk (PostgreSQL's "fsyncgate"): only a restart, which reads
//! back what is really on disk, knows what is durable.

// openraft's `StorageError` is large (over 200 bytes) and is the error type its traits demand,
// so our helpers return it as is rather than boxing and unboxing at every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};

use crate::codec;
use crate::db::{CF_RAFT_LOG, CF_RAFT_META, cf};
use crate::limits::LOG_READ_BATCH_MAX;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_IDENTITY: &[u8] = b"identity";

/// The Raft log store. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn rerr(e: rocksdb::Error) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Read, e)
}

fn werr(e: rocksdb::Error) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Write, e)
}

fn sync_opts() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        Self { db }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self.db.get_cf(cf(&self.db, CF_RAFT_META), key).map_err(rerr)? else { return Ok(None) };
        codec::decode(&bytes).map(Some).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    fn encode<T: serde::Serialize>(subject: ErrorSubject<u64>, value: &T) -> Result<Vec<u8>, StorageError> {
        codec::encode(value).map_err(|e| io_err(subject, ErrorVerb::Write, e))
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut iter = self.db.iterator_cf(cf(&self.db, CF_RAFT_LOG), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(rerr)?;
                let entry: Entry = codec::decode(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl crate::identity::IdentityStore for LogStore {
    fn load_identity(&self) -> Result<Option<crate::Identity>, crate::StoreError> {
        let Some(bytes) = self.db.get_cf(cf(&self.db, CF_RAFT_META), KEY_IDENTITY).map_err(crate::db::engine)? else {
            return Ok(None);
        };
        Ok(Some(codec::decode(&bytes)?))
    }

    fn save_identity(&self, identity: &crate::Identity) -> Result<(), crate::StoreError> {
        let bytes = codec::encode(identity)?;
        self.db.put_cf_opt(cf(&self.db, CF_RAFT_META), KEY_IDENTITY, bytes, &sync_opts()).map_err(crate::db::engine)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 0,
        };
        let key = codec::u64_key(start);
        let iter = self.db.iterator_cf(cf(&self.db, CF_RAFT_LOG), IteratorMode::From(&key, Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(rerr)?;
            let index = codec::parse_u64_key(&k).unwrap_or(u64::MAX);
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = codec::decode(&v)
                .map_err(|e| io_err(ErrorSubject::Log(openraft::LogId::default()), ErrorVerb::Read, e))?;
            out.push(entry);
        }
        Ok(out)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let end = end.min(start.saturating_add(LOG_READ_BATCH_MAX));
        self.try_get_log_entries(start..end).await
    }
}

impl openraft::storage::RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = Self::encode(ErrorSubject::Vote, vote)?;
        // Durability: the vote is on disk before we return, so a restarted node cannot vote
        // for a second candidate in the same term. Fail-stop: if the synced write fails, the
        // error stops the Raft core; the vote is not sent.
        self.db
            .put_cf_opt(cf(&self.db, CF_RAFT_META), KEY_VOTE, bytes, &sync_opts())
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: the committed index is a hint that lets a restarted node re-apply sooner;
        // losing it only delays apply until the leader says again what is committed.
        let bytes = Self::encode(ErrorSubject::Store, &committed)?;
        self.db.put_cf(cf(&self.db, CF_RAFT_META), KEY_COMMITTED, bytes).map_err(werr)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log_cf = cf(&self.db, CF_RAFT_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes =
                codec::encode(&entry).map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            batch.put_cf(log_cf, codec::u64_key(entry.log_id.index), bytes);
        }
        // Written to the memtable and the WAL (not yet synced): readable as soon as we return.
        // Fail-stop: an error (a full disk) goes back to openraft, which stops its core.
        self.db.write(batch).map_err(werr)?;
        // Durability: the flush callback, which lets openraft count these entries toward a
        // quorum (leader) or acknowledge them (follower), fires only after the WAL, which holds
        // this batch and everything written before it, is synced to disk. The sync runs off the
        // Raft core task so that the next batch can be prepared meanwhile.
        //
        // Fail-stop: a failed sync goes to the callback as an error, which openraft turns into a
        // fatal storage error that stops its core: these entries are never acknowledged, and the
        // sync is never retried (see the module docs). If this task never runs (the runtime is
        // shutting down), the callback is dropped unanswered, which openraft also reports as a
        // failed write.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let result = db.flush_wal(true).map_err(|e| std::io::Error::other(format!("syncing the WAL: {e}")));
            callback.log_io_completed(result);
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_RAFT_LOG), codec::u64_key(log_id.index), codec::u64_key(u64::MAX));
        // Removes conflicting, uncommitted entries from `log_id` on (inclusive). Synced so that
        // entries a new leader overwrote cannot reappear after a crash.
        self.db.write_opt(batch, &sync_opts()).map_err(werr)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT_META), KEY_LAST_PURGED, Self::encode(ErrorSubject::Store, &log_id)?);
        batch.delete_range_cf(cf(&self.db, CF_RAFT_LOG), codec::u64_key(0), codec::u64_key(log_id.index + 1));
        // One batch: `last_purged` and the deletion up to it (inclusive) land together. Purged
        // entries are covered by a snapshot, so this needs no sync of its own.
        self.db.write(batch).map_err(werr)
    }
}
