//! The state machine in RocksDB (openraft's `RaftStateMachine`) and its snapshots.
//!
//! `apply` runs [`crate::apply::apply_entries`] and commits its writes as one RocksDB write
//! batch, WAL on but not synced: the entries themselves are already synced in the log, so a
//! crash can lose only a suffix of applied state (with `applied` moving back in the same batch),
//! and openraft re-applies that suffix from the log on restart.
//!
//! Fail-stop: a failed write of the state machine (or of a snapshot file, or its sync) is
//! returned to openraft as a `StorageError`, which stops its Raft core and so the node; the
//! in-memory state moves only after the write succeeded, and nothing is retried.
//!
//! Snapshots are files in `<data>/snapshots/` (see [`crate::snapshot`]). Installing one replaces
//! every state-machine table. To make that crash-safe without holding the state in memory, the
//! install writes a synced marker naming the (already durable) snapshot file, replaces the tables
//! in bounded batches, then clears the marker in a synced batch. A node that finds the marker at
//! open installs the file again before serving, so a half-installed state never survives a crash.

use std::fs;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};
use tokio::io::AsyncSeekExt;
use tokio::sync::watch;
use vexil_model::AuditEntry;

use crate::apply;
use crate::db::{CF_RAFT_META, DbView, cf, engine};
use crate::error::StoreError;
use crate::feed::AppliedFeed;
use crate::limits::SNAPSHOT_INSTALL_BATCH_BYTES_MAX;
use crate::record_cache::{CachedView, RecordCache};
use crate::schema::Table;
use crate::sm_state::SmState;
use crate::snapshot::{self, SNAPSHOT_SUFFIX, SnapshotReader, TMP_SUFFIX};
use crate::snapshot_data::SnapshotData;
use crate::txn::Writes;
use crate::types::{Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// `raft_meta` key: the snapshot file an unfinished install was loading.
const KEY_INSTALLING: &[u8] = b"sm_installing";

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, std::io::Error::other(e.to_string()))
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Snapshot(None), verb, std::io::Error::other(e.to_string()))
}

pub(crate) struct SmShared {
    pub(crate) db: Arc<DB>,
    snapshot_dir: PathBuf,
    state: Mutex<SmState>,
    /// The last applied revision and the latest audit entries, for readers.
    pub(crate) feed: Arc<AppliedFeed>,
    /// Committed flag records apply has used (see `record_cache.rs`).
    flag_cache: RecordCache,
}

/// The RocksDB state machine. Cheap to clone: clones share the database and state.
#[derive(Clone)]
pub struct StateMachineStore {
    pub(crate) shared: Arc<SmShared>,
}

impl StateMachineStore {
    /// Opens the state machine over `db`, finishing any snapshot install a crash interrupted.
    pub fn open(db: Arc<DB>, data_dir: &Path) -> Result<Self, StoreError> {
        let snapshot_dir = data_dir.join("snapshots");
        fs::create_dir_all(&snapshot_dir)?;
        for entry in fs::read_dir(&snapshot_dir)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                fs::remove_file(&path)?;
            }
        }
        let state = SmState::load(&DbView { db: &db, snapshot: None })?;
        let feed = Arc::new(AppliedFeed::new(state.applied.map(|l| l.index).unwrap_or(0)));
        feed.set_alarms_standing(!state.alarms.is_empty());
        let sm = StateMachineStore {
            shared: Arc::new(SmShared {
                db,
                snapshot_dir,
                state: Mutex::new(state),
                feed,
                flag_cache: RecordCache::default(),
            }),
        };

        if let Some(name) = sm.shared.db.get_cf(cf(&sm.shared.db, CF_RAFT_META), KEY_INSTALLING).map_err(engine)? {
            let path = sm.shared.snapshot_dir.join(String::from_utf8_lossy(&name).as_ref());
            tracing::warn!(path = %path.display(), "finishing a snapshot install interrupted by a crash");
            sm.restore_from_file(&path)?;
        } else if let Some((path, meta)) = sm.current_snapshot_file()? {
            // A received snapshot can be durable while the crash came before its install began.
            let applied = sm.state().applied;
            if meta.last_log_id > applied {
                tracing::warn!(path = %path.display(), "installing a received snapshot newer than the applied state");
                sm.restore_from_file(&path)?;
            }
        }
        Ok(sm)
    }

    pub(crate) fn state(&self) -> SmState {
        self.shared.state.lock().expect("state machine state lock poisoned").clone()
    }

    /// A receiver of the last applied revision.
    pub fn applied_revision(&self) -> watch::Receiver<u64> {
        self.shared.feed.subscribe()
    }

    /// Writes `writes` as one RocksDB batch, then tells the flag cache what it now holds.
    fn commit(&self, writes: Writes, sync: bool) -> Result<(), StoreError> {
        let db = &self.shared.db;
        let mut batch = WriteBatch::default();
        // Range deletions first: `Writes` says the keys written with them come after.
        for range in &writes.deleted_ranges {
            batch.delete_range_cf(cf(db, range.table.cf_name()), &range.from, &range.to);
        }
        for ((table, key), value) in &writes.keys {
            let handle = cf(db, table.cf_name());
            match value {
                Some(v) => batch.put_cf(handle, key, v),
                None => batch.delete_cf(handle, key),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        db.write_opt(batch, &opts).map_err(engine)?;
        self.shared.flag_cache.committed(writes);
        Ok(())
    }

    /// Swaps in the state after a committed apply and publishes its audit entries.
    fn set_state(&self, state: SmState, audit: Vec<AuditEntry>) {
        let applied = state.applied.map(|l| l.index).unwrap_or(0);
        self.shared.feed.set_alarms_standing(!state.alarms.is_empty());
        *self.shared.state.lock().expect("state machine state lock poisoned") = state;
        self.shared.feed.publish(applied, audit);
    }

    /// The newest complete snapshot file and its meta.
    fn current_snapshot_file(&self) -> Result<Option<(PathBuf, SnapshotMeta)>, StoreError> {
        let mut best: Option<(PathBuf, SnapshotMeta)> = None;
        for entry in fs::read_dir(&self.shared.snapshot_dir)? {
            let path = entry?.path();
            if !path.to_string_lossy().ends_with(SNAPSHOT_SUFFIX) {
                continue;
            }
            let (_, meta) = SnapshotReader::open(&path)?;
            if best.as_ref().is_none_or(|(_, b)| meta.last_log_id > b.last_log_id) {
                best = Some((path, meta));
            }
        }
        Ok(best)
    }

    /// Deletes every snapshot file older than `keep`.
    fn remove_older_snapshots(&self, keep: &Path) -> Result<(), StoreError> {
        let (_, keep_meta) = SnapshotReader::open(keep)?;
        for entry in fs::read_dir(&self.shared.snapshot_dir)? {
            let path = entry?.path();
            if path == keep || !path.to_string_lossy().ends_with(SNAPSHOT_SUFFIX) {
                continue;
            }
            let older = match SnapshotReader::open(&path) {
                Ok((_, meta)) => meta.last_log_id <= keep_meta.last_log_id,
                Err(_) => true,
            };
            if older {
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Replaces every state-machine table with the contents of a verified snapshot file.
    fn restore_from_file(&self, path: &Path) -> Result<(), StoreError> {
        // Check the whole file before touching the state machine.
        snapshot::verify_file(path)?;
        let db = &self.shared.db;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        // Durability: the marker is on disk before the first table is cleared, so a crash from
        // here on leads to a re-install at the next open, never to a half-installed state.
        db.put_cf_opt(cf(db, CF_RAFT_META), KEY_INSTALLING, name.as_bytes(), &sync).map_err(engine)?;
        // The tables are replaced below, not through `commit`: cached records would go stale.
        self.shared.flag_cache.clear();

        for table in Table::ALL {
            let handle = cf(db, table.cf_name());
            let mut batch = WriteBatch::default();
            for item in db.iterator_cf(handle, IteratorMode::Start) {
                let (k, _) = item.map_err(engine)?;
                batch.delete_cf(handle, k);
                if batch.size_in_bytes() >= SNAPSHOT_INSTALL_BATCH_BYTES_MAX {
                    db.write(std::mem::take(&mut batch)).map_err(engine)?;
                }
            }
            db.write(batch).map_err(engine)?;
        }

        let (mut reader, _) = SnapshotReader::open(path)?;
        let mut batch = WriteBatch::default();
        while let Some((table, k, v)) = reader.next_record()? {
            batch.put_cf(cf(db, table.cf_name()), k, v);
            if batch.size_in_bytes() >= SNAPSHOT_INSTALL_BATCH_BYTES_MAX {
                db.write(std::mem::take(&mut batch)).map_err(engine)?;
            }
        }
        batch.delete_cf(cf(db, CF_RAFT_META), KEY_INSTALLING);
        // Durability: the last batch clears the marker and is synced, which also makes every
        // earlier batch of this install durable (one WAL, written in order).
        db.write_opt(batch, &sync).map_err(engine)?;
        let state = SmState::load(&DbView { db, snapshot: None })?;
        let applied = state.applied.map(|l| l.index).unwrap_or(0);
        self.shared.feed.set_alarms_standing(!state.alarms.is_empty());
        *self.shared.state.lock().expect("state machine state lock poisoned") = state;
        self.shared.feed.reset(applied);
        Ok(())
    }

    fn build_snapshot_blocking(&self) -> Result<(PathBuf, SnapshotMeta), StoreError> {
        let db = &self.shared.db;
        let snap = db.snapshot();
        let view = DbView { db, snapshot: Some(&snap) };
        let state = SmState::load(&view)?;
        let unique = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let snapshot_id = match state.applied {
            Some(l) => format!("{}-{}-{unique}", l.leader_id.term, l.index),
            None => format!("0-0-{unique}"),
        };
        let meta = SnapshotMeta { last_log_id: state.applied, last_membership: state.membership.clone(), snapshot_id };
        let path =
            snapshot::write_snapshot(&view, &meta, &self.shared.snapshot_dir, &snapshot::file_stem(&meta.snapshot_id))?;
        self.remove_older_snapshots(&path)?;
        Ok((path, meta))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        let (path, meta) = tokio::task::spawn_blocking(move || this.build_snapshot_blocking())
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| snap_err(ErrorVerb::Read, e))?;
        tracing::info!(snapshot_id = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(SnapshotData::File(file)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.state();
        Ok((st.applied, st.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let state = self.state();
        let view = CachedView { view: DbView { db: &self.shared.db, snapshot: None }, cache: &self.shared.flag_cache };
        let applied = apply::apply_entries(&view, &state, entries).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        // Fail-stop: a failed write stops the Raft core before the new state is published; a
        // restart re-applies these entries from the synced log.
        self.commit(applied.writes, false).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.set_state(applied.state, applied.audit);
        Ok(applied.responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        let unique = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = self.shared.snapshot_dir.join(format!("receiving-{unique}{TMP_SUFFIX}"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Box::new(SnapshotData::File(file)))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<SnapshotData>) -> Result<(), StorageError> {
        // Copy what we received into our own durable file first; the received handle may be a
        // temporary file (or, in tests, another node's snapshot).
        let stem = snapshot::file_stem(&meta.snapshot_id);
        let final_path = self.shared.snapshot_dir.join(format!("{stem}{SNAPSHOT_SUFFIX}"));
        let tmp_path = self.shared.snapshot_dir.join(format!("{stem}{SNAPSHOT_SUFFIX}{TMP_SUFFIX}"));
        let mut src = *snapshot;
        src.seek(SeekFrom::Start(0)).await.map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let mut dst = tokio::fs::File::create(&tmp_path).await.map_err(|e| snap_err(ErrorVerb::Write, e))?;
        tokio::io::copy(&mut src, &mut dst).await.map_err(|e| snap_err(ErrorVerb::Write, e))?;
        // Durability: the file is complete on disk, and renamed into place durably, before the
        // state machine is touched.
        dst.sync_all().await.map_err(|e| snap_err(ErrorVerb::Write, e))?;
        drop(dst);
        tokio::fs::rename(&tmp_path, &final_path).await.map_err(|e| snap_err(ErrorVerb::Write, e))?;
        snapshot::sync_dir(&self.shared.snapshot_dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;

        let this = self.clone();
        let path = final_path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            this.restore_from_file(&path)?;
            this.remove_older_snapshots(&path)
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        tracing::info!(snapshot_id = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((path, meta)) = self.current_snapshot_file().map_err(|e| snap_err(ErrorVerb::Read, e))? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&path).await.map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(SnapshotData::File(file)) }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;
    use crate::txn::{KeyRange, KvRead};
    use crate::types::{Command, Outcome, Request};

    const SPEC: &str = r#"{"defaultVariant":"on","state":"ENABLED","variants":{"off":false,"on":true}}"#;

    fn flag_write(index: u64, command: Command) -> Entry {
        Entry {
            log_id: openraft::testing::log_id(1, 1, index),
            payload: EntryPayload::Normal(Request {
                request_id: String::new(),
                actor: "test".into(),
                reason: String::new(),
                time_ms: 1_700_000_000_000,
                command,
            }),
        }
    }

    fn create(index: u64) -> Entry {
        flag_write(index, Command::CreateFlag { namespace: "ns".into(), key: "f".into(), spec_json: SPEC.into() })
    }

    fn update(index: u64, expected_version: u64) -> Entry {
        let command = Command::UpdateFlag {
            namespace: "ns".into(),
            key: "f".into(),
            spec_json: SPEC.into(),
            expected_version: Some(expected_version),
        };
        flag_write(index, command)
    }

    fn version(response: &Response) -> u64 {
        match &response.outcome {
            Ok(Outcome::Flag { version }) => *version,
            other => panic!("expected a flag write, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_flag_written_after_a_snapshot_install_sees_the_snapshot_not_the_cache() {
        let (dir_a, dir_b) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
        let mut a = StateMachineStore::open(crate::db::open(&dir_a.path().join("db")).expect("db"), dir_a.path())
            .expect("open a");
        let mut b = StateMachineStore::open(crate::db::open(&dir_b.path().join("db")).expect("db"), dir_b.path())
            .expect("open b");
        // On `a` the flag reaches version 2; on `b` it is created (version 1, now cached).
        let done = a.apply(vec![create(1), update(2, 1)]).await.expect("apply on a");
        assert_eq!(version(&done[1]), 2);
        let done = b.apply(vec![create(1)]).await.expect("apply on b");
        assert_eq!(version(&done[0]), 1);

        let snapshot = a.get_snapshot_builder().await.build_snapshot().await.expect("snapshot of a");
        b.install_snapshot(&snapshot.meta, snapshot.snapshot).await.expect("install on b");

        // A stale cached record (version 1) would fail this compare-and-set.
        let done = b.apply(vec![update(3, 2)]).await.expect("apply on b");
        assert_eq!(version(&done[0]), 3, "{:?}", done[0]);
    }

    #[test]
    fn a_committed_range_deletion_comes_before_the_keys_written_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::db::open(&dir.path().join("db")).expect("open db");
        let sm = StateMachineStore::open(db.clone(), dir.path()).expect("open state machine");
        let mut first = Writes::default();
        for key in [&b"a1"[..], b"a2", b"b1"] {
            first.keys.insert((Table::Requests, key.to_vec()), Some(b"old".to_vec()));
        }
        sm.commit(first, false).expect("commit");

        let mut second = Writes::default();
        second.deleted_ranges.push(KeyRange { table: Table::Requests, from: b"a".to_vec(), to: b"b".to_vec() });
        second.keys.insert((Table::Requests, b"a2".to_vec()), Some(b"new".to_vec()));
        sm.commit(second, false).expect("commit");

        let view = DbView { db: &db, snapshot: None };
        let left = view.scan(Table::Requests, &[], &[], 10).expect("scan");
        assert_eq!(left, vec![(b"a2".to_vec(), b"new".to_vec()), (b"b1".to_vec(), b"old".to_vec())]);
    }
}
