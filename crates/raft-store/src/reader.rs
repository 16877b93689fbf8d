//! Reading the applied state: what the server's read handlers call.
//!
//! Every read runs against one RocksDB point-in-time snapshot and reports the revision (last
//! applied log index) of that same snapshot, so a response's data and its revision always agree.
//! Consistency levels (read index, leases) are the server's business: this layer only reads
//! what is applied locally.

use std::sync::Arc;

use rocksdb::{DB, SnapshotWithThreadMode};
use tokio::sync::watch;
use vexil_model::AuditEntry;

use crate::codec;
use crate::db::DbView;
use crate::error::StoreError;
use crate::feed::{AppliedFeed, PageEnd, trim_to_whole_revisions};
use crate::schema::{AuditHead, FlagRecord, NamespaceRecord, Table};
use crate::sm_state::SmState;
use crate::state_machine::StateMachineStore;
use crate::txn::{KvPairs, KvRead};

/// Something that can hand out a consistent, point-in-time view of the state-machine tables.
pub trait ViewSource: Send + Sync + 'static {
    fn view(&self) -> Box<dyn KvRead + '_>;
}

/// RocksDB: a view is a RocksDB snapshot.
struct RocksSource {
    db: Arc<DB>,
}

struct RocksSnapshotView<'a> {
    db: &'a DB,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl KvRead for RocksSnapshotView<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        DbView { db: self.db, snapshot: Some(&self.snapshot) }.get(table, key)
    }

    fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError> {
        DbView { db: self.db, snapshot: Some(&self.snapshot) }.scan(table, prefix, start, limit)
    }
}

impl ViewSource for RocksSource {
    fn view(&self) -> Box<dyn KvRead + '_> {
        Box::new(RocksSnapshotView { db: &self.db, snapshot: self.db.snapshot() })
    }
}

/// A cheap, cloneable handle for reading the state machine.
#[derive(Clone)]
pub struct StateReader {
    source: Arc<dyn ViewSource>,
    feed: Arc<AppliedFeed>,
}

/// One namespace's whole state, for snapshots of the change feed.
#[derive(Debug, Clone)]
pub struct NamespaceState {
    pub namespace: String,
    pub flags: Vec<(String, FlagRecord)>,
    pub record: NamespaceRecord,
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// First revision to include.
    pub from_revision: u64,
    /// Last revision to include; `None` for no upper bound.
    pub to_revision: Option<u64>,
    /// Only entries of this namespace (empty for all).
    pub namespace: String,
    /// Only entries of this flag key (needs `namespace`; empty for all).
    pub key: String,
    /// Skip entries with `seq <= after_seq` (pagination).
    pub after_seq: u64,
    pub limit: usize,
}

fn decode<T: serde::de::DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|source| StoreError::Corrupt { table, source })
}

impl StateReader {
    /// A reader of a RocksDB state machine.
    pub fn new(sm: &StateMachineStore) -> Self {
        Self { source: Arc::new(RocksSource { db: sm.shared.db.clone() }), feed: sm.shared.feed.clone() }
    }

    /// A reader over any view source (the simulation's in-memory store), with the feed its
    /// state machine publishes to.
    pub fn from_source(source: Arc<dyn ViewSource>, feed: Arc<AppliedFeed>) -> Self {
        Self { source, feed }
    }

    /// A receiver of the last applied revision, for readers that wait for one.
    pub fn applied_revision(&self) -> watch::Receiver<u64> {
        self.feed.subscribe()
    }

    fn with_view<T>(&self, f: impl FnOnce(&dyn KvRead, u64) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let view = self.source.view();
        let applied = SmState::load_applied(&*view)?;
        f(&*view, applied.map(|l| l.index).unwrap_or(0))
    }

    /// The last applied revision.
    pub fn revision(&self) -> Result<u64, StoreError> {
        self.with_view(|_, rev| Ok(rev))
    }

    /// One flag and the revision it was read at.
    pub fn get_flag(&self, namespace: &str, key: &str) -> Result<(u64, Option<FlagRecord>), StoreError> {
        self.with_view(|view, rev| {
            let rec = view
                .get(Table::Flags, &codec::flag_key(namespace, key))?
                .map(|b| decode(Table::Flags, &b))
                .transpose()?;
            Ok((rev, rec))
        })
    }

    /// Up to `limit` flags of a namespace with keys after `after_key`, in key order.
    pub fn list_flags(
        &self,
        namespace: &str,
        after_key: &str,
        limit: usize,
    ) -> Result<(u64, Vec<(String, FlagRecord)>), StoreError> {
        self.with_view(|view, rev| {
            let prefix = codec::namespace_prefix(namespace);
            let mut start = codec::flag_key(namespace, after_key);
            if !after_key.is_empty() {
                start.push(0);
            }
            let mut out = Vec::new();
            for (k, v) in view.scan(Table::Flags, &prefix, &start, limit)? {
                let key = codec::split_flag_key(&k).map(|(_, key)| key.to_string()).unwrap_or_default();
                out.push((key, decode(Table::Flags, &v)?));
            }
            Ok((rev, out))
        })
    }

    /// Every namespace that has flags or document-level settings, in order.
    pub fn list_namespaces(&self) -> Result<(u64, Vec<String>), StoreError> {
        self.with_view(|view, rev| {
            let mut names = std::collections::BTreeSet::new();
            for (k, _) in view.scan(Table::Namespaces, &[], &[], usize::MAX)? {
                names.insert(String::from_utf8_lossy(&k).into_owned());
            }
            // Namespaces are few; skip from one namespace's prefix to the next.
            let mut start: Vec<u8> = Vec::new();
            while let Some((k, _)) = view.scan(Table::Flags, &[], &start, 1)?.pop() {
                let Some((ns, _)) = codec::split_flag_key(&k) else { break };
                names.insert(ns.to_string());
                start = codec::namespace_prefix(ns);
                *start.last_mut().expect("prefix ends with the NUL separator") = 1;
            }
            Ok((rev, names.into_iter().collect()))
        })
    }

    /// A namespace's `$evaluators` and metadata, if it has any.
    pub fn get_namespace(&self, namespace: &str) -> Result<(u64, Option<NamespaceRecord>), StoreError> {
        self.with_view(|view, rev| {
            let rec = view
                .get(Table::Namespaces, namespace.as_bytes())?
                .map(|b| decode(Table::Namespaces, &b))
                .transpose()?;
            Ok((rev, rec))
        })
    }

    /// Audit entries matching `q`, in chain order, and the revision they were read at.
    pub fn list_audit(&self, q: &AuditQuery) -> Result<(u64, Vec<AuditEntry>), StoreError> {
        self.with_view(|view, rev| {
            let mut out = Vec::new();
            let mut start = codec::audit_key(q.from_revision, q.after_seq.saturating_add(1)).to_vec();
            const CHUNK: usize = 512;
            'scan: loop {
                let chunk = view.scan(Table::Audit, &[], &start, CHUNK)?;
                let Some((last, _)) = chunk.last() else { break };
                start = last.clone();
                start.push(0);
                let full = chunk.len() == CHUNK;
                for (_, v) in chunk {
                    let e: AuditEntry = decode(Table::Audit, &v)?;
                    if q.to_revision.is_some_and(|to| e.revision > to) {
                        break 'scan;
                    }
                    let matches = e.seq > q.after_seq
                        && (q.namespace.is_empty() || e.namespace == q.namespace)
                        && (q.key.is_empty() || e.key == q.key);
                    if matches {
                        out.push(e);
                        if out.len() >= q.limit {
                            break 'scan;
                        }
                    }
                }
                if !full {
                    break;
                }
            }
            Ok((rev, out))
        })
    }

    /// Every flag and the document-level record of each namespace, at one revision. An empty
    /// `namespaces` means every namespace.
    pub fn namespace_states(&self, namespaces: &[String]) -> Result<(u64, Vec<NamespaceState>), StoreError> {
        self.with_view(|view, rev| {
            let names: Vec<String> = if namespaces.is_empty() {
                let mut all = std::collections::BTreeSet::new();
                for (k, _) in view.scan(Table::Namespaces, &[], &[], usize::MAX)? {
                    all.insert(String::from_utf8_lossy(&k).into_owned());
                }
                for (k, _) in view.scan(Table::Flags, &[], &[], usize::MAX)? {
                    if let Some((ns, _)) = codec::split_flag_key(&k) {
                        all.insert(ns.to_string());
                    }
                }
                all.into_iter().collect()
            } else {
                namespaces.to_vec()
            };
            let mut out = Vec::with_capacity(names.len());
            for ns in names {
                let prefix = codec::namespace_prefix(&ns);
                let mut flags = Vec::new();
                for (k, v) in view.scan(Table::Flags, &prefix, &prefix, usize::MAX)? {
                    let key = codec::split_flag_key(&k).map(|(_, key)| key.to_string()).unwrap_or_default();
                    flags.push((key, decode(Table::Flags, &v)?));
                }
                let record =
                    view.get(Table::Namespaces, ns.as_bytes())?.map(|b| decode(Table::Namespaces, &b)).transpose()?;
                out.push(NamespaceState { namespace: ns, flags, record: record.unwrap_or_default() });
            }
            Ok((rev, out))
        })
    }

    /// Audit entries with revision > `after_revision`, whole revisions only (a revision's
    /// entries come from one atomic batch and must be delivered together), at most about
    /// `max_entries`. Returns the entries and the revision up to which the caller has now seen
    /// everything: the applied revision when the page reached the end, else the last complete
    /// revision of the page.
    ///
    /// Recent revisions come from memory ([`AppliedFeed`]), older ones from the audit table.
    pub fn changes_after(&self, after_revision: u64, max_entries: usize) -> Result<(Vec<AuditEntry>, u64), StoreError> {
        if let Some(recent) = self.feed.changes_after(after_revision, max_entries) {
            return Ok(recent);
        }
        self.with_view(|view, applied| {
            let start = codec::audit_key(after_revision.saturating_add(1), 0);
            let mut entries: Vec<AuditEntry> = Vec::new();
            for (_, v) in view.scan(Table::Audit, &[], &start, max_entries + 1)? {
                entries.push(decode(Table::Audit, &v)?);
            }
            match trim_to_whole_revisions(&mut entries, max_entries) {
                PageEnd::Complete => Ok((entries, applied.max(after_revision))),
                PageEnd::Through(revision) => Ok((entries, revision)),
                PageEnd::Whole(revision) => {
                    for (_, v) in view.scan(Table::Audit, &[], &codec::audit_key(revision, 0), usize::MAX)? {
                        let e: AuditEntry = decode(Table::Audit, &v)?;
                        if e.revision > revision {
                            break;
                        }
                        entries.push(e);
                    }
                    Ok((entries, revision))
                }
            }
        })
    }

    /// The end of the audit chain (seq 0 and the genesis hash when empty).
    pub fn audit_head(&self) -> Result<AuditHead, StoreError> {
        self.with_view(|view, _| Ok(SmState::load(view)?.audit_head))
    }
}
