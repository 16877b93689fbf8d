//! Reading the applied state: what the server's read handlers call.
//!
//! Every read runs against one RocksDB point-in-time snapshot and reports the revision (last
//! applied log index) of that same snapshot, so a response's data and its revision always agree.
//! Consistency levels (read index, leases) are the server's business: this layer only reads
//! what is applied locally.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rocksdb::{DB, SnapshotWithThreadMode};
use tokio::sync::watch;
use vexil_model::access::TokenRecord;
use vexil_model::audit::Checkpoint;
use vexil_model::{AuditEntry, NamespaceSettings};

use crate::codec;
use crate::db::DbView;
use crate::error::StoreError;
use crate::feed::{AppliedFeed, PageEnd, trim_to_whole_revisions};
use crate::limits::AUDIT_SCAN_CHUNK_ENTRIES_MAX;
use crate::schema::{
    AuditHead, ChangeRecord, FlagRecord, META_ALARMS, META_ANONYMOUS_READ, META_AUDIT_CHECKPOINT, NamespaceRecord,
    PolicyRecord, Table, change_key, change_prefix, namespace_policy_key, namespace_settings_key,
};
use crate::sm_state::SmState;
use crate::state_machine::StateMachineStore;
use crate::txn::{KvPairs, KvRead};
use crate::types::Alarm;

/// Something that can hand out a consistent, point-in-time view of the state-machine tables.
/// A view may be held across awaits (a snapshot of the state read in parts, [`StateSnapshot`]).
pub trait ViewSource: Send + Sync + 'static {
    fn view(&self) -> Box<dyn KvRead + Send + Sync + '_>;
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
    fn view(&self) -> Box<dyn KvRead + Send + Sync + '_> {
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
    /// Its settings (defaults unless an admin changed them).
    pub settings: NamespaceSettings,
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
    /// Stop before the page's entries would hold more stored bytes than this (a page always
    /// holds at least one entry); `None` for no bound.
    pub bytes_max: Option<usize>,
}

/// One page of the audit log, read at one revision.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub revision: u64,
    pub entries: Vec<AuditEntry>,
    /// More entries may match after the last one (the page stopped at its limit or budget).
    pub more: bool,
    /// Where retention last cut the log (at this same revision): entries up to it are gone.
    pub checkpoint: Option<Checkpoint>,
}

/// What the change feed holds after a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The entries, and the revision up to which the caller has now seen everything.
    Page(Vec<AuditEntry>, u64),
    /// Retention removed entries after the requested revision (up to this checkpoint): the
    /// caller must start again from a snapshot of the state.
    Compacted(Checkpoint),
}

fn load_checkpoint(view: &dyn KvRead) -> Result<Option<Checkpoint>, StoreError> {
    view.get(Table::Meta, META_AUDIT_CHECKPOINT)?.map(|v| decode(Table::Meta, &v)).transpose()
}

/// The key at which a page of audit entries after `after_seq` (and from `from_revision`) starts:
/// at or before the first entry with `seq > after_seq`, and after every earlier one.
///
/// The audit table is its own seq index: its key is `revision ‖ seq` and seq grows with the
/// key (both are chain order), so "the first entry at or after revision `r` has `seq <=
/// after_seq`" is true for every `r` up to some revision and false after it. A binary search over
/// `from_revision..=applied` finds that last revision `r` with one single-key seek per probe;
/// the wanted entry is the first key at or after `r ‖ after_seq + 1`. Seeking by
/// `from_revision ‖ after_seq + 1` alone would start at the beginning of the log and read every
/// earlier entry, which made paging through the log quadratic.
fn page_start(view: &dyn KvRead, from_revision: u64, after_seq: u64, applied: u64) -> Result<Vec<u8>, StoreError> {
    let seen_at = |revision: u64| -> Result<bool, StoreError> {
        let first = view.scan(Table::Audit, &[], &codec::audit_key(revision, 0), 1)?;
        Ok(first.first().and_then(|(k, _)| codec::parse_audit_key(k)).is_some_and(|(_, seq)| seq <= after_seq))
    };
    let (mut lo, mut hi) = (from_revision, applied.max(from_revision));
    if after_seq > 0 && seen_at(lo)? {
        // Invariant: `seen_at(lo)`; the answer is in `lo..=hi`.
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if seen_at(mid)? {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
    }
    Ok(codec::audit_key(lo, after_seq.saturating_add(1)).to_vec())
}

/// Up to `limit` namespaces after `after` that have flags or document-level settings, in order,
/// and whether more follow: a few seeks per namespace, never a scan of their flags.
fn namespaces_after(view: &dyn KvRead, after: &str, limit: usize) -> Result<(Vec<String>, bool), StoreError> {
    let mut names = BTreeSet::new();
    let mut start = after.as_bytes().to_vec();
    if !after.is_empty() {
        start.push(0);
    }
    for (k, _) in view.scan(Table::Namespaces, &[], &start, limit.saturating_add(1))? {
        names.insert(String::from_utf8_lossy(&k).into_owned());
    }
    // Skip from one namespace's prefix to the next.
    let mut start: Vec<u8> = Vec::new();
    if !after.is_empty() {
        start = codec::namespace_prefix(after);
        *start.last_mut().expect("prefix ends with the NUL separator") = 1;
    }
    let mut from_flags = 0;
    while from_flags <= limit
        && let Some((k, _)) = view.scan(Table::Flags, &[], &start, 1)?.pop()
    {
        let Some((ns, _)) = codec::split_flag_key(&k) else { break };
        names.insert(ns.to_string());
        from_flags += 1;
        start = codec::namespace_prefix(ns);
        *start.last_mut().expect("prefix ends with the NUL separator") = 1;
    }
    let more = names.len() > limit;
    Ok((names.into_iter().take(limit).collect(), more))
}

/// The state of some namespaces at one revision, read in parts of bounded size from one
/// storage snapshot: a part costs its own size, never the whole state's, and every part is
/// of the same revision however long the reader takes.
pub struct StateSnapshot<'a> {
    view: Box<dyn KvRead + Send + Sync + 'a>,
    revision: u64,
    /// The namespaces asked for, still to read; `None`: every namespace, found as parts go.
    listed: Option<VecDeque<String>>,
    /// The last namespace started (for finding the next one when reading every namespace).
    last: String,
    /// A namespace found but not started: its record did not fit the previous part.
    pending: Option<String>,
    /// The namespace being read and the key its next flag is at or after.
    current: Option<(String, Vec<u8>)>,
}

/// Flags read per seek while filling a part.
const SNAPSHOT_SCAN_FLAGS: usize = 64;

impl StateSnapshot<'_> {
    /// The revision every part reflects.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The next part, `None` once everything was read: whole flags in (namespace, key) order,
    /// stopping before the part would hold more than `bytes_max` stored bytes (a part holds at
    /// least one item). A namespace may span parts: its record comes in its first part, later
    /// parts carry it with a default record ([`merge_parts`] joins them).
    pub fn next_part(&mut self, bytes_max: usize) -> Result<Option<Vec<NamespaceState>>, StoreError> {
        let mut out: Vec<NamespaceState> = Vec::new();
        let mut bytes = 0usize;
        loop {
            if self.current.is_none() {
                let Some(ns) = self.next_namespace()? else { break };
                let stored = self.view.get(Table::Namespaces, ns.as_bytes())?;
                let size = stored.as_ref().map_or(0, Vec::len);
                if bytes > 0 && bytes.saturating_add(size) > bytes_max {
                    // Its record starts the next part.
                    self.pending = Some(ns);
                    break;
                }
                bytes += size;
                let record = stored.map(|b| decode(Table::Namespaces, &b)).transpose()?.unwrap_or_default();
                let settings = namespace_settings(&*self.view, &ns)?;
                out.push(NamespaceState { namespace: ns.clone(), flags: Vec::new(), record, settings });
                self.current = Some((ns.clone(), codec::namespace_prefix(&ns)));
            }
            let Some((ns, start)) = &mut self.current else { break };
            if out.last().is_none_or(|s| s.namespace != *ns) {
                out.push(NamespaceState {
                    namespace: ns.clone(),
                    flags: Vec::new(),
                    record: NamespaceRecord::default(),
                    settings: NamespaceSettings::default(),
                });
            }
            let state = out.last_mut().expect("pushed above");
            let prefix = codec::namespace_prefix(ns);
            let chunk = self.view.scan(Table::Flags, &prefix, start, SNAPSHOT_SCAN_FLAGS)?;
            let finished = chunk.len() < SNAPSHOT_SCAN_FLAGS;
            for (k, v) in chunk {
                if bytes > 0 && bytes.saturating_add(v.len()) > bytes_max {
                    return Ok(Some(out));
                }
                bytes += v.len();
                let key = codec::split_flag_key(&k).map(|(_, key)| key.to_string()).unwrap_or_default();
                state.flags.push((key, decode(Table::Flags, &v)?));
                *start = k;
                start.push(0);
            }
            if finished {
                self.current = None;
            }
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    fn next_namespace(&mut self) -> Result<Option<String>, StoreError> {
        if let Some(ns) = self.pending.take() {
            return Ok(Some(ns));
        }
        let next = match &mut self.listed {
            Some(listed) => listed.pop_front(),
            None => namespaces_after(&*self.view, &self.last, 1)?.0.pop(),
        };
        if let Some(ns) = &next {
            self.last.clone_from(ns);
        }
        Ok(next)
    }
}

/// Joins the parts of a [`StateSnapshot`] (in order) into one state per namespace.
pub fn merge_parts(parts: impl IntoIterator<Item = Vec<NamespaceState>>) -> Vec<NamespaceState> {
    let mut out: Vec<NamespaceState> = Vec::new();
    for part in parts {
        for state in part {
            match out.last_mut() {
                Some(last) if last.namespace == state.namespace => last.flags.extend(state.flags),
                _ => out.push(state),
            }
        }
    }
    out
}

fn namespace_settings(view: &dyn KvRead, namespace: &str) -> Result<NamespaceSettings, StoreError> {
    let stored = view.get(Table::Meta, &namespace_settings_key(namespace))?;
    Ok(stored.map(|b| decode(Table::Meta, &b)).transpose()?.unwrap_or_default())
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

    /// Up to `limit` namespaces after `after` that have flags or document-level settings, in
    /// order, and whether more follow.
    pub fn list_namespaces(&self, after: &str, limit: usize) -> Result<(u64, Vec<String>, bool), StoreError> {
        self.with_view(|view, rev| {
            let (names, more) = namespaces_after(view, after, limit)?;
            Ok((rev, names, more))
        })
    }

    /// The token whose secret hashes to `secret_hash`, if one is stored (expired or not).
    pub fn token(&self, secret_hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        self.with_view(|view, _| view.get(Table::Tokens, secret_hash)?.map(|b| decode(Table::Tokens, &b)).transpose())
    }

    /// Whether the first admin token was ever created by bootstrap.
    pub fn tokens_bootstrapped(&self) -> Result<bool, StoreError> {
        self.with_view(|view, _| Ok(view.get(Table::Meta, crate::schema::META_TOKENS_BOOTSTRAPPED)?.is_some()))
    }

    /// Every token, by name, and the revision they were read at.
    pub fn tokens(&self) -> Result<(u64, Vec<TokenRecord>), StoreError> {
        self.with_view(|view, rev| {
            let mut out = view
                .scan(Table::Tokens, &[], &[], usize::MAX)?
                .into_iter()
                .map(|(_, v)| decode::<TokenRecord>(Table::Tokens, &v))
                .collect::<Result<Vec<_>, _>>()?;
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok((rev, out))
        })
    }

    /// A namespace's settings (`Command::SetNamespaceSettings`) and the revision read.
    pub fn namespace_settings(&self, namespace: &str) -> Result<(u64, NamespaceSettings), StoreError> {
        self.with_view(|view, rev| Ok((rev, namespace_settings(view, namespace)?)))
    }

    /// A namespace's change-control policy (`Command::SetNamespacePolicy`), if it has one.
    pub fn namespace_policy(&self, namespace: &str) -> Result<(u64, Option<PolicyRecord>), StoreError> {
        self.with_view(|view, rev| {
            let key = namespace_policy_key(namespace);
            Ok((rev, view.get(Table::Meta, &key)?.map(|b| decode(Table::Meta, &b)).transpose()?))
        })
    }

    /// A namespace's change requests in id order (`id = Some`: that one only), each with the
    /// first of its bases that moved since it was proposed (a stale request never applies).
    pub fn changes(&self, namespace: &str, id: Option<u64>) -> Result<(u64, Vec<ChangeView>), StoreError> {
        self.with_view(|view, rev| {
            let prefix = change_prefix(namespace);
            let start = id.map_or_else(|| prefix.clone(), |id| change_key(namespace, id));
            let limit = if id.is_some() { 1 } else { usize::MAX };
            let mut out = Vec::new();
            for (k, v) in view.scan(Table::Meta, &prefix, &start, limit)? {
                let record: ChangeRecord = decode(Table::Meta, &v)?;
                if id.is_some_and(|id| k != change_key(namespace, id)) {
                    break;
                }
                let mut moved = None;
                for base in &record.bases {
                    let (table, at) = crate::governance::base_location(namespace, &base.key);
                    let stored = view.get(table, &at)?;
                    if crate::governance::fingerprint(stored.as_deref()) != base.fingerprint {
                        moved = Some(base.key.clone());
                        break;
                    }
                }
                out.push(ChangeView { record, moved });
            }
            Ok((rev, out))
        })
    }

    /// The namespaces callers without a token may read (`Command::SetAnonymousRead`).
    pub fn anonymous_read_namespaces(&self) -> Result<BTreeSet<String>, StoreError> {
        self.with_view(|view, _| {
            view.get(Table::Meta, META_ANONYMOUS_READ)?
                .map(|b| decode(Table::Meta, &b))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    /// Whether a NOSPACE alarm stood in the last applied state: one atomic load, for the
    /// write path (a `true` is then confirmed by [`Self::alarms`]).
    pub fn alarms_standing(&self) -> bool {
        self.feed.alarms_standing()
    }

    /// The standing NOSPACE alarms by node id (`Command::RaiseAlarm`), with the revision read.
    pub fn alarms(&self) -> Result<(u64, BTreeMap<u64, Alarm>), StoreError> {
        self.with_view(|view, rev| {
            let alarms = view.get(Table::Meta, META_ALARMS)?.map(|b| decode(Table::Meta, &b)).transpose()?;
            Ok((rev, alarms.unwrap_or_default()))
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

    /// Audit entries matching `q`, in chain order, the revision they were read at, and whether
    /// the page stopped at `q.limit` or `q.bytes_max` (so more may match after its last seq).
    ///
    /// A page costs O(page + log revisions), wherever `after_seq` is: the scan starts at the
    /// first entry with `seq > after_seq` ([`page_start`]) instead of at `from_revision`, so
    /// paging through the whole log by `after_seq` reads it once. (A filtered page also reads
    /// the non-matching entries between its matches.)
    pub fn list_audit(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.with_view(|view, rev| {
            let checkpoint = load_checkpoint(view)?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            let mut more = false;
            let mut start = page_start(view, q.from_revision, q.after_seq, rev)?;
            // An unfiltered page reads exactly the entries it returns; a filtered one reads in
            // growing chunks (one iterator per chunk, so not one per entry).
            let filtered = !q.namespace.is_empty() || !q.key.is_empty();
            let mut chunk_len = q.limit.clamp(1, AUDIT_SCAN_CHUNK_ENTRIES_MAX);
            'scan: loop {
                let chunk = view.scan(Table::Audit, &[], &start, chunk_len)?;
                let Some((last, _)) = chunk.last() else { break };
                start = last.clone();
                start.push(0);
                let full = chunk.len() == chunk_len;
                for (_, v) in chunk {
                    let e: AuditEntry = decode(Table::Audit, &v)?;
                    if q.to_revision.is_some_and(|to| e.revision > to) {
                        break 'scan;
                    }
                    let matches = e.seq > q.after_seq
                        && (q.namespace.is_empty() || e.namespace == q.namespace)
                        && (q.key.is_empty() || e.key == q.key);
                    if matches {
                        if !out.is_empty() && q.bytes_max.is_some_and(|max| bytes + v.len() > max) {
                            more = true;
                            break 'scan;
                        }
                        out.push(e);
                        bytes += v.len();
                        if out.len() >= q.limit {
                            more = true;
                            break 'scan;
                        }
                    }
                }
                if !full {
                    break;
                }
                chunk_len = if filtered { chunk_len * 2 } else { q.limit - out.len() };
                chunk_len = chunk_len.clamp(1, AUDIT_SCAN_CHUNK_ENTRIES_MAX);
            }
            Ok(AuditPage { revision: rev, entries: out, more, checkpoint })
        })
    }

    /// Every flag and the document-level record of each namespace, at one revision. An empty
    /// `namespaces` means every namespace. Reads it all at once: for one namespace (whose
    /// document is bounded); a stream reads parts of a [`StateSnapshot`] instead.
    pub fn namespace_states(&self, namespaces: &[String]) -> Result<(u64, Vec<NamespaceState>), StoreError> {
        let mut snapshot = self.state_snapshot(namespaces)?;
        let mut parts = Vec::new();
        while let Some(part) = snapshot.next_part(usize::MAX)? {
            parts.push(part);
        }
        Ok((snapshot.revision(), merge_parts(parts)))
    }

    /// A point-in-time snapshot of `namespaces` (empty: every namespace), to read in parts.
    pub fn state_snapshot(&self, namespaces: &[String]) -> Result<StateSnapshot<'_>, StoreError> {
        let view = self.source.view();
        let revision = SmState::load_applied(&*view)?.map(|l| l.index).unwrap_or(0);
        Ok(StateSnapshot {
            view,
            revision,
            listed: (!namespaces.is_empty()).then(|| namespaces.iter().cloned().collect()),
            last: String::new(),
            pending: None,
            current: None,
        })
    }

    /// Audit entries with revision > `after_revision`, whole revisions only (a revision's
    /// entries come from one atomic batch and must be delivered together), at most about
    /// `max_entries`. Returns the entries and the revision up to which the caller has now seen
    /// everything: the applied revision when the page reached the end, else the last complete
    /// revision of the page.
    ///
    /// Recent revisions come from memory ([`AppliedFeed`]), older ones from the audit table;
    /// [`Changes::Compacted`] when retention removed some of them.
    pub fn changes_after(&self, after_revision: u64, max_entries: usize) -> Result<Changes, StoreError> {
        if let Some((entries, seen)) = self.feed.changes_after(after_revision, max_entries) {
            return Ok(Changes::Page(entries, seen));
        }
        self.with_view(|view, applied| {
            if let Some(cp) = load_checkpoint(view)?
                && after_revision < cp.revision
            {
                return Ok(Changes::Compacted(cp));
            }
            let start = codec::audit_key(after_revision.saturating_add(1), 0);
            let mut entries: Vec<AuditEntry> = Vec::new();
            for (_, v) in view.scan(Table::Audit, &[], &start, max_entries + 1)? {
                entries.push(decode(Table::Audit, &v)?);
            }
            match trim_to_whole_revisions(&mut entries, max_entries) {
                PageEnd::Complete => Ok(Changes::Page(entries, applied.max(after_revision))),
                PageEnd::Through(revision) => Ok(Changes::Page(entries, revision)),
                PageEnd::Whole(revision) => {
                    for (_, v) in view.scan(Table::Audit, &[], &codec::audit_key(revision, 0), usize::MAX)? {
                        let e: AuditEntry = decode(Table::Audit, &v)?;
                        if e.revision > revision {
                            break;
                        }
                        entries.push(e);
                    }
                    Ok(Changes::Page(entries, revision))
                }
            }
        })
    }

    /// Where retention last cut the audit log, if it ever did.
    pub fn audit_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.with_view(|view, _| load_checkpoint(view))
    }

    /// The end of the audit chain (seq 0 and the genesis hash when empty).
    pub fn audit_head(&self) -> Result<AuditHead, StoreError> {
        self.with_view(|view, _| Ok(SmState::load(view)?.audit_head))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use vexil_model::AuditAction;

    use super::*;
    use crate::schema::META_APPLIED;
    use crate::types::LogId;

    /// Tables in a map; counts the entries its scans hand out (the keys a read visits).
    #[derive(Default)]
    struct CountingSource {
        tables: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
        visited: AtomicUsize,
    }

    struct CountingView<'a>(&'a CountingSource);

    impl KvRead for CountingView<'_> {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.tables.get(&(table, key.to_vec())).cloned())
        }
        fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError> {
            let from = if start < prefix { prefix } else { start };
            let out: KvPairs = self
                .0
                .tables
                .range((table, from.to_vec())..)
                .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
                .take(limit)
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect();
            self.0.visited.fetch_add(out.len(), Ordering::Relaxed);
            Ok(out)
        }
    }

    impl ViewSource for CountingSource {
        fn view(&self) -> Box<dyn KvRead + Send + Sync + '_> {
            Box::new(CountingView(self))
        }
    }

    /// An audit log with `sizes[i]` entries at revision `first_revision + i` (0: none), its
    /// entries in namespaces `a`, `b`, `c` and keys `k0`..`k2` by turns; applied up to its last
    /// revision. Returns the reader, its source (for the count) and the entries.
    fn audit_log(first_revision: u64, sizes: &[usize]) -> (StateReader, Arc<CountingSource>, Vec<AuditEntry>) {
        let mut source = CountingSource::default();
        let mut entries = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let revision = first_revision + i as u64;
            for _ in 0..n {
                let seq = entries.len() as u64 + 1;
                let e = AuditEntry {
                    seq,
                    revision,
                    time_ms: 0,
                    version: 1,
                    actor: String::new(),
                    action: AuditAction::FlagUpdate,
                    namespace: ["a", "b", "c"][seq as usize % 3].into(),
                    key: format!("k{}", seq / 3 % 3),
                    before: None,
                    after: Some("{}".into()),
                    reason: String::new(),
                    request_id: String::new(),
                    prev_hash: [0; 32],
                    hash: [0; 32],
                };
                let bytes = codec::encode(&e).expect("encode an audit entry");
                source.tables.insert((Table::Audit, codec::audit_key(revision, seq).to_vec()), bytes);
                entries.push(e);
            }
        }
        let applied = LogId::new(openraft::CommittedLeaderId::new(1, 1), first_revision + sizes.len() as u64 - 1);
        source.tables.insert((Table::Meta, META_APPLIED.to_vec()), codec::encode(&applied).expect("encode"));
        let source = Arc::new(source);
        let reader = StateReader::from_source(source.clone(), Arc::new(AppliedFeed::new(0)));
        (reader, source, entries)
    }

    fn seqs(entries: &[AuditEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_page_after_seq_n_holds_exactly_the_next_matching_entries() {
        // Revisions 5..=44 with 0 to 4 entries each: empty revisions and revisions of several.
        let sizes: Vec<usize> = (0..40).map(|i| (i * 7) % 5).collect();
        let (reader, _, all) = audit_log(5, &sizes);
        let last_seq = all.len() as u64;
        for (namespace, key) in [("", ""), ("b", ""), ("a", "k1")] {
            for (from_revision, to_revision) in [(0, None), (12, None), (0, Some(30)), (12, Some(30))] {
                for limit in [1, 3, 7, 1_000] {
                    let want = |after_seq: u64| -> Vec<u64> {
                        let matching = all.iter().filter(|e| {
                            e.seq > after_seq
                                && e.revision >= from_revision
                                && to_revision.is_none_or(|to| e.revision <= to)
                                && (namespace.is_empty() || e.namespace == namespace)
                                && (key.is_empty() || e.key == key)
                        });
                        matching.take(limit).map(|e| e.seq).collect()
                    };
                    let query = |after_seq: u64| AuditQuery {
                        from_revision,
                        to_revision,
                        namespace: namespace.into(),
                        key: key.into(),
                        after_seq,
                        limit,
                        bytes_max: None,
                    };
                    let case = format!("ns {namespace:?} key {key:?} revisions {from_revision}..{to_revision:?}");
                    for after_seq in 0..=last_seq + 1 {
                        let page = reader.list_audit(&query(after_seq)).expect("list").entries;
                        assert_eq!(seqs(&page), want(after_seq), "{case}, limit {limit}, after seq {after_seq}");
                    }
                    // Paging by the last seq of each page visits every match once, in order.
                    let (mut paged, mut after_seq) = (Vec::new(), 0);
                    loop {
                        let AuditPage { entries: page, more, .. } = reader.list_audit(&query(after_seq)).expect("list");
                        paged.extend(seqs(&page));
                        match page.last() {
                            Some(e) if more => after_seq = e.seq,
                            _ => break,
                        }
                    }
                    let every: Vec<u64> = {
                        let mut q = query(0);
                        q.limit = usize::MAX;
                        seqs(&reader.list_audit(&q).expect("list").entries)
                    };
                    assert_eq!(paged, every, "{case}, paged by {limit}");
                }
            }
        }
    }

    #[test]
    fn a_page_reads_from_its_cursor_not_from_the_start_of_the_log() {
        // 20,000 entries: 1,990 revisions of 10, then one revision of 100.
        let mut sizes = vec![10; 1_990];
        sizes.push(100);
        let (reader, source, all) = audit_log(1, &sizes);
        let visited = |q: &AuditQuery| {
            let before = source.visited.load(Ordering::Relaxed);
            let page = reader.list_audit(q).expect("list").entries;
            (page, source.visited.load(Ordering::Relaxed) - before)
        };
        // A binary search over 2,000 revisions: 11 probes of one key each.
        let probes = 2 * 11 + 1;

        let q = AuditQuery { after_seq: 15_000, limit: 10, ..Default::default() };
        let (page, read) = visited(&q);
        assert_eq!(seqs(&page), (15_001..=15_010).collect::<Vec<_>>());
        assert!(read <= 10 + probes, "a page of 10 after seq 15,000 read {read} entries");

        // Inside the last, large revision.
        let q = AuditQuery { after_seq: 19_950, limit: 10, ..Default::default() };
        let (page, read) = visited(&q);
        assert_eq!(seqs(&page), (19_951..=19_960).collect::<Vec<_>>());
        assert!(read <= 10 + probes, "a page inside the last revision read {read} entries");

        // Filtered: one entry in three matches; the page reads what lies between its matches.
        let q = AuditQuery { after_seq: 15_000, limit: 10, namespace: "b".into(), ..Default::default() };
        let (page, read) = visited(&q);
        assert_eq!(page.len(), 10);
        assert!(page.iter().all(|e| e.namespace == "b" && e.seq > 15_000));
        assert!(read <= 3 * 10 + 40 + probes, "a filtered page read {read} entries");

        // Paging through the whole log by 1,000 reads each entry about once (it read every earlier
        // entry again for every page: 200,000 reads here, quadratic in the log's length).
        let total_before = source.visited.load(Ordering::Relaxed);
        let mut after_seq = 0;
        let mut pages = 0;
        loop {
            let page =
                reader.list_audit(&AuditQuery { after_seq, limit: 1_000, ..Default::default() }).expect("list").entries;
            pages += 1;
            match page.last() {
                Some(e) if page.len() == 1_000 => after_seq = e.seq,
                _ => break,
            }
        }
        let read = source.visited.load(Ordering::Relaxed) - total_before;
        assert_eq!(after_seq, all.len() as u64);
        assert!(read <= all.len() + pages * probes, "paging through {} entries read {read}", all.len());
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_and_says_more_follows() {
        let (reader, _, all) = audit_log(1, &[3; 40]);
        let one = codec_len(&all[0]);
        // A budget of about five entries: five per page, and paging visits every entry once.
        let q = |after_seq| AuditQuery {
            after_seq,
            limit: 1_000,
            bytes_max: Some(5 * one + one / 2),
            ..Default::default()
        };
        let AuditPage { entries: page, more, .. } = reader.list_audit(&q(0)).expect("list");
        assert_eq!(seqs(&page), (1..=5).collect::<Vec<_>>());
        assert!(more, "a page cut by its byte budget says more may follow");
        let (mut paged, mut after_seq) = (Vec::new(), 0);
        loop {
            let AuditPage { entries: page, more, .. } = reader.list_audit(&q(after_seq)).expect("list");
            assert!(page.len() <= 5, "a page of {} entries", page.len());
            paged.extend(seqs(&page));
            match page.last() {
                Some(e) if more => after_seq = e.seq,
                _ => break,
            }
        }
        assert_eq!(paged, seqs(&all));
        // A budget below one entry still returns one: a page always makes progress.
        let AuditPage { entries: page, more, .. } =
            reader.list_audit(&AuditQuery { limit: 10, bytes_max: Some(1), ..Default::default() }).expect("list");
        assert_eq!((seqs(&page), more), (vec![1], true));
        // The end of the log: no more.
        let AuditPage { entries: page, more, .. } = reader.list_audit(&q(all.len() as u64 - 2)).expect("list");
        assert_eq!((page.len(), more), (2, false));
    }

    fn codec_len(e: &AuditEntry) -> usize {
        crate::codec::encode(e).expect("encode").len()
    }

    #[test]
    fn a_state_snapshot_reads_in_parts_of_bounded_size_that_join_to_the_whole() {
        let mut source = CountingSource::default();
        let flag = |n: usize| FlagRecord {
            spec_json: "x".repeat(n),
            version: 1,
            created_revision: 1,
            mod_revision: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
            updated_by: String::new(),
        };
        let mut put_flag = |ns: &str, key: String, n: usize| {
            let bytes = codec::encode(&flag(n)).expect("encode");
            source.tables.insert((Table::Flags, codec::flag_key(ns, &key)), bytes);
        };
        for i in 0..3 {
            put_flag("a", format!("k{i}"), 100);
        }
        for i in 0..150 {
            put_flag("b", format!("k{i:03}"), 100 + i);
        }
        put_flag("d", "only".into(), 5_000);
        let record = NamespaceRecord { evaluators_json: "{}".into(), metadata_json: "m".repeat(300), mod_revision: 1 };
        for ns in ["b", "c"] {
            let bytes = codec::encode(&record).expect("encode");
            source.tables.insert((Table::Namespaces, ns.as_bytes().to_vec()), bytes);
        }
        let applied = LogId::new(openraft::CommittedLeaderId::new(1, 1), 9);
        source.tables.insert((Table::Meta, META_APPLIED.to_vec()), codec::encode(&applied).expect("encode"));
        let reader = StateReader::from_source(Arc::new(source), Arc::new(AppliedFeed::new(9)));
        let flat = |states: &[NamespaceState]| -> Vec<(String, String)> {
            states.iter().flat_map(|s| s.flags.iter().map(|(k, _)| (s.namespace.clone(), k.clone()))).collect()
        };

        let (revision, whole) = reader.namespace_states(&[]).expect("whole");
        assert_eq!(revision, 9);
        assert_eq!(whole.iter().map(|s| s.namespace.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        assert_eq!(flat(&whole).len(), 3 + 150 + 1);

        let budget = 2_000;
        let mut snapshot = reader.state_snapshot(&[]).expect("snapshot");
        let mut parts = Vec::new();
        while let Some(part) = snapshot.next_part(budget).expect("part") {
            let bytes: usize = part
                .iter()
                .map(|s| {
                    let rec = if s.record == NamespaceRecord::default() {
                        0
                    } else {
                        codec::encode(&s.record).expect("encode").len()
                    };
                    rec + s.flags.iter().map(|(_, f)| codec::encode(f).expect("encode").len()).sum::<usize>()
                })
                .sum();
            let items: usize = part.iter().map(|s| s.flags.len()).sum();
            assert!(bytes <= budget || items <= 1, "a part of {bytes} bytes holds {items} flags");
            parts.push(part);
        }
        assert!(parts.len() > 5, "{} parts", parts.len());
        let joined = merge_parts(parts);
        assert_eq!(flat(&joined), flat(&whole), "every flag once, in order");
        assert_eq!(
            joined.iter().map(|s| (&s.namespace, &s.record)).collect::<Vec<_>>(),
            whole.iter().map(|s| (&s.namespace, &s.record)).collect::<Vec<_>>()
        );

        // Named namespaces come in the order asked, also one that does not exist.
        let named = ["d".to_string(), "zz".to_string(), "a".to_string()];
        let mut snapshot = reader.state_snapshot(&named).expect("snapshot");
        let mut parts = Vec::new();
        while let Some(part) = snapshot.next_part(150).expect("part") {
            parts.push(part);
        }
        let joined = merge_parts(parts);
        assert_eq!(joined.iter().map(|s| s.namespace.as_str()).collect::<Vec<_>>(), ["d", "zz", "a"]);
        assert_eq!(flat(&joined).len(), 4);
    }
}

/// A change request as read, with the first base that moved since it was proposed (`""`: the
/// namespace's `$evaluators`/metadata), if one did.
#[derive(Debug, Clone)]
pub struct ChangeView {
    pub record: ChangeRecord,
    pub moved: Option<String>,
}
