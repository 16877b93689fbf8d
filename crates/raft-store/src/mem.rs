//! An in-memory store with the same traits and the same durability model as the RocksDB store,
//! for the deterministic simulation (RocksDB's own threads and files cannot run inside it).
//!
//! A [`MemDisk`] is one node's disk. It outlives the node (the simulation keeps it outside the
//! simulated host), and holds two copies of everything: what is *durable* and what is *current*
//! (written but maybe not synced). A sync copies current to durable — like one RocksDB WAL sync,
//! which makes every earlier write durable. [`MemDisk::recover`], called when a node starts,
//! throws away everything that was never synced: a simulated crash loses exactly what a real
//! crash could lose. The sync points are the RocksDB store's: `save_vote` and `truncate` sync
//! before returning; `append` fires its flush callback only after a sync; snapshot installs end
//! with a sync; state-machine writes ride on the next sync. [`MemDisk::fail_syncs`] makes the
//! disk fail every later sync, reported as RocksDB reports it (fail-stop, see `log_store.rs`).
//!
//! The state machine runs the same [`crate::apply`] code and writes the same snapshot format.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use vexil_model::AuditEntry;

use crate::apply;
use crate::error::StoreError;
use crate::feed::AppliedFeed;
use crate::reader::{StateReader, ViewSource};
use crate::schema::Table;
use crate::sm_state::SmState;
use crate::snapshot::{self, SnapshotReader};
use crate::snapshot_data::SnapshotData;
use crate::txn::{KvPairs, KvRead, Writes};
use crate::types::{Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote};

/// How long a simulated fsync takes.
const SYNC_DELAY: Duration = Duration::from_millis(1);

type Tables = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

#[derive(Debug, Clone, Default)]
struct Disk {
    identity: Option<crate::Identity>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
    tables: Tables,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

/// Bugs the simulation can inject to prove its checkers catch them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Fire the append flush callback before the entries are synced (and never sync them).
    pub ack_before_sync: bool,
    /// Install a received snapshot without its audit history (the node's chain then starts
    /// wherever the snapshot was cut).
    pub snapshot_install_drops_audit: bool,
    /// Complete change requests without checking their bases ([`crate::apply::Injected`]).
    pub stale_changes_apply: bool,
}

#[derive(Debug, Default)]
struct DiskState {
    durable: Disk,
    current: Disk,
    faults: Faults,
    snapshots_built: u64,
    /// Set by [`MemDisk::fail_syncs`].
    syncs_fail: bool,
}

/// One node's disk. Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    inner: Arc<Mutex<DiskState>>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, std::io::Error::other(e.to_string()))
}

impl MemDisk {
    pub fn new(faults: Faults) -> Self {
        let disk = MemDisk::default();
        disk.lock().faults = faults;
        disk
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.inner.lock().expect("mem disk lock poisoned")
    }

    /// Forgets every write that was never synced (a crash, seen from the next start).
    pub fn recover(&self) {
        let mut d = self.lock();
        d.current = d.durable.clone();
    }

    /// From now on every sync fails, as on a disk that died under the node: an append is never
    /// acknowledged (its flush callback gets the I/O error), a vote, a truncation or a snapshot
    /// install returns it. What was synced before stays durable.
    pub fn fail_syncs(&self) {
        self.lock().syncs_fail = true;
    }

    fn sync(&self) -> std::io::Result<()> {
        let mut d = self.lock();
        if d.syncs_fail {
            return Err(std::io::Error::other("injected disk failure: fsync failed"));
        }
        d.durable = d.current.clone();
        Ok(())
    }

    /// Opens the stores over this disk, as a node does at start (after [`Self::recover`]).
    pub fn open(&self) -> Result<(MemLogStore, MemStateMachine, StateReader), StoreError> {
        let state = {
            let d = self.lock();
            SmState::load(&TablesView(&d.current.tables))?
        };
        let feed = Arc::new(AppliedFeed::new(state.applied.map(|l| l.index).unwrap_or(0)));
        feed.set_alarms_standing(!state.alarms.is_empty());
        let sm = MemStateMachine { disk: self.clone(), state: Arc::new(Mutex::new(state)), feed: feed.clone() };
        let reader = StateReader::from_source(Arc::new(MemSource { disk: self.clone() }), feed);
        Ok((MemLogStore { disk: self.clone() }, sm, reader))
    }
}

/// A [`KvRead`] over a borrowed table map.
struct TablesView<'a>(&'a Tables);

impl KvRead for TablesView<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(&(table, key.to_vec())).cloned())
    }

    fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError> {
        let from = if start < prefix { prefix } else { start };
        Ok(self
            .0
            .range((table, from.to_vec())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// A point-in-time copy of the current tables (simulations hold little data).
struct MemSource {
    disk: MemDisk,
}

struct OwnedTables(Tables);

impl KvRead for OwnedTables {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        TablesView(&self.0).get(table, key)
    }
    fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError> {
        TablesView(&self.0).scan(table, prefix, start, limit)
    }
}

impl ViewSource for MemSource {
    fn view(&self) -> Box<dyn KvRead + Send + Sync + '_> {
        Box::new(OwnedTables(self.disk.lock().current.tables.clone()))
    }
}

/// The log and vote.
#[derive(Debug, Clone)]
pub struct MemLogStore {
    disk: MemDisk,
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.disk.lock().current.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl crate::identity::IdentityStore for MemLogStore {
    fn load_identity(&self) -> Result<Option<crate::Identity>, StoreError> {
        Ok(self.disk.lock().current.identity.clone())
    }

    fn save_identity(&self, identity: &crate::Identity) -> Result<(), StoreError> {
        self.disk.lock().current.identity = Some(identity.clone());
        Ok(self.disk.sync()?)
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let d = self.disk.lock();
        let last = d.current.log.values().next_back().map(|e| e.log_id).or(d.current.last_purged);
        Ok(LogState { last_purged_log_id: d.current.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.disk.lock().current.vote = Some(*vote);
        self.disk.sync().map_err(|e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.disk.lock().current.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.disk.lock().current.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.disk.lock().current.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let ack_before_sync = {
            let mut d = self.disk.lock();
            for e in entries {
                d.current.log.insert(e.log_id.index, e);
            }
            d.faults.ack_before_sync
        };
        if ack_before_sync {
            // Injected bug: acknowledge what is not on disk.
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let disk = self.disk.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SYNC_DELAY).await;
            callback.log_io_completed(disk.sync());
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk.lock().current.log.retain(|i, _| *i < log_id.index);
        self.disk.sync().map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut d = self.disk.lock();
        d.current.last_purged = Some(log_id);
        d.current.log.retain(|i, _| *i > log_id.index);
        Ok(())
    }
}

/// The state machine.
#[derive(Clone)]
pub struct MemStateMachine {
    disk: MemDisk,
    state: Arc<Mutex<SmState>>,
    feed: Arc<AppliedFeed>,
}

impl MemStateMachine {
    fn state(&self) -> SmState {
        self.state.lock().expect("mem sm state lock poisoned").clone()
    }

    fn set_state(&self, st: SmState, audit: Vec<AuditEntry>) {
        let applied = st.applied.map(|l| l.index).unwrap_or(0);
        self.feed.set_alarms_standing(!st.alarms.is_empty());
        *self.state.lock().expect("mem sm state lock poisoned") = st;
        self.feed.publish(applied, audit);
    }

    fn commit(tables: &mut Tables, writes: Writes) {
        writes.apply_to(tables);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, bytes) = {
            let mut d = self.disk.lock();
            let view = TablesView(&d.current.tables);
            let st = SmState::load(&view).map_err(|e| sm_err(ErrorVerb::Read, e))?;
            let n = d.snapshots_built;
            let snapshot_id = match st.applied {
                Some(l) => format!("{}-{}-{n}", l.leader_id.term, l.index),
                None => format!("0-0-{n}"),
            };
            let meta = SnapshotMeta { last_log_id: st.applied, last_membership: st.membership, snapshot_id };
            let bytes = snapshot::write_stream(&view, &meta, Vec::new()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            d.snapshots_built += 1;
            d.current.snapshot = Some((meta.clone(), bytes.clone()));
            // A snapshot file is fsynced on its own, without syncing the log.
            d.durable.snapshot = d.current.snapshot.clone();
            (meta, bytes)
        };
        Ok(Snapshot { meta, snapshot: Box::new(SnapshotData::Memory(Cursor::new(bytes))) })
    }
}

impl RaftStateMachine<TypeConfig> for MemStateMachine {
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
        let applied = {
            let mut d = self.disk.lock();
            let injected = apply::Injected { stale_changes_apply: d.faults.stale_changes_apply };
            let mut applied = apply::apply_entries_with(&TablesView(&d.current.tables), &state, entries, injected)
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            Self::commit(&mut d.current.tables, std::mem::take(&mut applied.writes));
            applied
        };
        self.set_state(applied.state, applied.audit);
        Ok(applied.responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(SnapshotData::Memory(Cursor::new(Vec::new()))))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<SnapshotData>) -> Result<(), StorageError> {
        let mut src = *snapshot;
        let mut bytes = Vec::new();
        src.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| sm_err(ErrorVerb::Read, e))?;
        src.read_to_end(&mut bytes).await.map_err(|e| sm_err(ErrorVerb::Read, e))?;
        // Verify the whole snapshot before touching the state machine.
        let (mut reader, _) = SnapshotReader::new(bytes.as_slice()).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let mut tables = Tables::new();
        let drop_audit = self.disk.lock().faults.snapshot_install_drops_audit;
        while let Some((table, k, v)) = reader.next_record().map_err(|e| sm_err(ErrorVerb::Read, e))? {
            if drop_audit && table == Table::Audit {
                continue;
            }
            tables.insert((table, k), v);
        }
        let st = SmState::load(&TablesView(&tables)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        {
            let mut d = self.disk.lock();
            d.current.tables = tables;
            d.current.snapshot = Some((meta.clone(), bytes));
        }
        // Like the RocksDB install, which ends with a synced batch.
        self.disk.sync().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let applied = st.applied.map(|l| l.index).unwrap_or(0);
        self.feed.set_alarms_standing(!st.alarms.is_empty());
        *self.state.lock().expect("mem sm state lock poisoned") = st;
        self.feed.reset(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let d = self.disk.lock();
        Ok(d.current
            .snapshot
            .clone()
            .map(|(meta, bytes)| Snapshot { meta, snapshot: Box::new(SnapshotData::Memory(Cursor::new(bytes))) }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::StorageError;
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    struct MemBuilder;

    impl StoreBuilder<TypeConfig, MemLogStore, MemStateMachine, ()> for MemBuilder {
        async fn build(&self) -> Result<((), MemLogStore, MemStateMachine), StorageError<u64>> {
            let (log, sm, _) = MemDisk::new(Faults::default()).open().expect("open");
            Ok(((), log, sm))
        }
    }

    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(MemBuilder).expect("openraft storage suite");
    }

    #[tokio::test]
    async fn a_crash_loses_exactly_what_was_not_synced() {
        let disk = MemDisk::new(Faults::default());
        let (mut log, _, _) = disk.open().expect("open");
        log.save_vote(&Vote::new(3, 1)).await.expect("vote");
        disk.lock().current.log.insert(7, Entry::default());
        disk.recover();
        assert_eq!(disk.lock().current.vote, Some(Vote::new(3, 1)), "a saved vote survives");
        assert!(disk.lock().current.log.is_empty(), "an unsynced entry does not");
    }

    #[tokio::test]
    async fn a_disk_that_fails_its_syncs_makes_nothing_more_durable_and_says_so() {
        let disk = MemDisk::new(Faults::default());
        let (mut log, _, _) = disk.open().expect("open");
        log.save_vote(&Vote::new(3, 1)).await.expect("vote");
        disk.fail_syncs();
        log.save_vote(&Vote::new(4, 1)).await.expect_err("a vote whose sync failed is an error");
        disk.recover();
        assert_eq!(disk.lock().current.vote, Some(Vote::new(3, 1)), "only the synced vote survives");
    }
}
