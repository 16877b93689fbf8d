//! Executing committed entries: the state machine's logic, independent of the storage engine.
//!
//! [`Txn`] buffers every read and write of one `apply` call over a read-only view of the
//! stored state ([`KvRead`]); the caller then commits [`Txn::into_parts`] as ONE atomic write
//! (a RocksDB write batch, or a map update in the simulation's in-memory store). So a flag
//! change, its audit entries, its deduplication record and the new applied log id become
//! visible together or not at all.
//!
//! Architecture invariant: applying an entry is a pure function of the entry and the stored
//! state. No clock, no randomness, no iteration over unordered maps: every replica computes the
//! same flags, the same responses and the same audit hash chain.

use std::collections::BTreeMap;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vexil_model::audit::{GENESIS_HASH, Hash};
use vexil_model::{AuditAction, AuditEntry, FlagSpec, NamespaceDocument};

use crate::codec::{self, CodecError};
use crate::limits::DEDUP_GENERATION_REQUESTS;
use crate::types::{Command, Entry, LogId, Outcome, Request, Response, StoredMembership, WriteError};

/// The logical tables of the state machine. Each is a RocksDB column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `namespace ‖ 0 ‖ key` → [`FlagRecord`].
    Flags,
    /// `namespace` → [`NamespaceRecord`].
    Namespaces,
    /// `revision ‖ seq` → [`AuditEntry`].
    Audit,
    /// `generation ‖ request_id` → [`DedupRecord`] (see [`dedup_generation`]).
    Requests,
    /// Named singletons: see the `META_*` keys.
    Meta,
}

impl Table {
    pub const ALL: [Table; 5] = [Table::Flags, Table::Namespaces, Table::Audit, Table::Requests, Table::Meta];

    /// The column family that holds this table.
    pub fn cf_name(self) -> &'static str {
        match self {
            Table::Flags => "sm_flags",
            Table::Namespaces => "sm_namespaces",
            Table::Audit => "sm_audit",
            Table::Requests => "sm_requests",
            Table::Meta => "sm_meta",
        }
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Table> {
        Table::ALL.get(usize::from(id)).copied()
    }
}

/// `Meta` key: the last applied [`LogId`].
pub const META_APPLIED: &[u8] = b"applied";
/// `Meta` key: the last applied [`StoredMembership`].
pub const META_MEMBERSHIP: &[u8] = b"membership";
/// `Meta` key: the [`AuditHead`].
pub const META_AUDIT_HEAD: &[u8] = b"audit_head";
/// `Meta` key: how many deduplication records were ever written (numbers the next one).
pub const META_REQUESTS_SEQ: &[u8] = b"requests_seq";

/// The flag record is the model's, shared with the client library (which builds without this
/// crate).
pub use vexil_model::FlagRecord;

/// A namespace's document-level parts: `$evaluators` and flag-set `metadata`, as canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespaceRecord {
    pub evaluators_json: String,
    pub metadata_json: String,
    pub mod_revision: u64,
}

/// The end of the audit chain: the last entry's seq, hash and revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: Hash,
    pub revision: u64,
}

impl Default for AuditHead {
    fn default() -> Self {
        Self { seq: 0, hash: GENESIS_HASH, revision: 0 }
    }
}

/// What a request id resolved to the first time, and a fingerprint of the command it carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    pub fingerprint: Hash,
    pub response: Response,
}

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

/// Key-value pairs in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A read-only, consistent view of the stored tables.
pub trait KvRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` entries with keys `>= start` that start with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError>;
}

/// The keys `from..to` of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub table: Table,
    pub from: Vec<u8>,
    pub to: Vec<u8>,
}

impl KeyRange {
    fn contains(&self, table: Table, key: &[u8]) -> bool {
        table == self.table && self.from.as_slice() <= key && key < self.to.as_slice()
    }

    /// Removes this range's keys from an ordered map keyed like the tables, visiting only them.
    fn remove_from<V>(&self, map: &mut BTreeMap<(Table, Vec<u8>), V>) {
        if self.from >= self.to {
            return;
        }
        let doomed: Vec<(Table, Vec<u8>)> =
            map.range((self.table, self.from.clone())..(self.table, self.to.clone())).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            map.remove(&k);
        }
    }
}

/// One atomic write: first `deleted_ranges`, then `keys` (`None` deletes one key).
#[derive(Debug, Default)]
pub struct Writes {
    pub deleted_ranges: Vec<KeyRange>,
    pub keys: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
}

impl Writes {
    /// Commits these writes to an ordered in-memory table set (the simulation's store).
    pub fn apply_to(self, tables: &mut BTreeMap<(Table, Vec<u8>), Vec<u8>>) {
        for range in &self.deleted_ranges {
            range.remove_from(tables);
        }
        for (k, v) in self.keys {
            match v {
                Some(v) => tables.insert(k, v),
                None => tables.remove(&k),
            };
        }
    }

    fn range_deleted(&self, table: Table, key: &[u8]) -> bool {
        self.deleted_ranges.iter().any(|range| range.contains(table, key))
    }
}

/// Buffered reads and writes over a [`KvRead`] view.
pub struct Txn<'a, R: KvRead + ?Sized> {
    base: &'a R,
    writes: Writes,
    /// The audit entries written, in order (published to readers after the commit).
    audit: Vec<AuditEntry>,
}

impl<'a, R: KvRead + ?Sized> Txn<'a, R> {
    pub fn new(base: &'a R) -> Self {
        Self { base, writes: Writes::default(), audit: Vec::new() }
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.keys.get(&(table, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None if self.writes.range_deleted(table, key) => Ok(None),
            None => self.base.get(table, key),
        }
    }

    pub fn get_decoded<T: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get(table, key)?
            .map(|bytes| codec::decode(&bytes).map_err(|source| StoreError::Corrupt { table, source }))
            .transpose()
    }

    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.writes.keys.insert((table, key), Some(value));
    }

    pub fn put_encoded<T: Serialize>(&mut self, table: Table, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        let bytes = codec::encode(value).map_err(|source| StoreError::Corrupt { table, source })?;
        self.put(table, key, bytes);
        Ok(())
    }

    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.writes.keys.insert((table, key), None);
    }

    /// Deletes every key in `from..to`: those stored, and those written earlier in this txn.
    /// Keys written after this call are kept.
    pub fn delete_range(&mut self, table: Table, from: Vec<u8>, to: Vec<u8>) {
        let range = KeyRange { table, from, to };
        range.remove_from(&mut self.writes.keys);
        self.writes.deleted_ranges.push(range);
    }

    /// Every entry under `prefix`, merging buffered writes over the stored view.
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut out: BTreeMap<Vec<u8>, Vec<u8>> = self
            .base
            .scan(table, prefix, prefix, usize::MAX)?
            .into_iter()
            .filter(|(k, _)| !self.writes.range_deleted(table, k))
            .collect();
        let lo = (table, prefix.to_vec());
        for ((t, k), v) in self.writes.keys.range(lo..) {
            if *t != table || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    /// Writes an audit entry and remembers it.
    fn put_audit(&mut self, entry: AuditEntry) -> Result<(), StoreError> {
        self.put_encoded(Table::Audit, codec::audit_key(entry.revision, entry.seq).to_vec(), &entry)?;
        self.audit.push(entry);
        Ok(())
    }

    /// The writes to commit atomically, and the audit entries among them in order.
    pub fn into_parts(self) -> (Writes, Vec<AuditEntry>) {
        (self.writes, self.audit)
    }
}

/// The state machine's view of itself between `apply` calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmState {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub audit_head: AuditHead,
    /// Deduplication records ever written: the next one is number `requests_seq`.
    pub requests_seq: u64,
}

impl SmState {
    /// Loads only the last applied log id (what every read needs; the other singletons, the
    /// membership above all, cost a decode each).
    pub fn load_applied<R: KvRead + ?Sized>(view: &R) -> Result<Option<LogId>, StoreError> {
        Txn::new(view).get_decoded(Table::Meta, META_APPLIED)
    }

    /// Loads the singletons from a stored view.
    pub fn load<R: KvRead + ?Sized>(view: &R) -> Result<Self, StoreError> {
        let txn = Txn::new(view);
        Ok(SmState {
            applied: Self::load_applied(view)?,
            membership: txn.get_decoded(Table::Meta, META_MEMBERSHIP)?.unwrap_or_default(),
            audit_head: txn.get_decoded(Table::Meta, META_AUDIT_HEAD)?.unwrap_or_default(),
            requests_seq: txn.get_decoded(Table::Meta, META_REQUESTS_SEQ)?.unwrap_or(0),
        })
    }

    fn store<R: KvRead + ?Sized>(&self, txn: &mut Txn<'_, R>) -> Result<(), StoreError> {
        match &self.applied {
            Some(applied) => txn.put_encoded(Table::Meta, META_APPLIED.to_vec(), applied)?,
            None => txn.delete(Table::Meta, META_APPLIED.to_vec()),
        }
        txn.put_encoded(Table::Meta, META_MEMBERSHIP.to_vec(), &self.membership)?;
        txn.put_encoded(Table::Meta, META_AUDIT_HEAD.to_vec(), &self.audit_head)?;
        txn.put_encoded(Table::Meta, META_REQUESTS_SEQ.to_vec(), &self.requests_seq)?;
        Ok(())
    }
}

/// What applying a run of entries produced.
#[derive(Debug)]
pub struct Applied {
    /// To commit as ONE atomic write.
    pub writes: Writes,
    /// The state after the entries, to swap in once `writes` is committed.
    pub state: SmState,
    /// One per entry.
    pub responses: Vec<Response>,
    /// The audit entries `writes` adds, in order (for [`crate::feed::AppliedFeed`]).
    pub audit: Vec<AuditEntry>,
}

/// Applies `entries` in order on top of `view`. `state` is not modified; the caller swaps in
/// the returned state only after the writes are committed.
pub fn apply_entries<R: KvRead + ?Sized>(
    view: &R,
    state: &SmState,
    entries: impl IntoIterator<Item = Entry>,
) -> Result<Applied, StoreError> {
    let mut txn = Txn::new(view);
    let mut st = state.clone();
    let mut responses = Vec::new();
    for entry in entries {
        let revision = entry.log_id.index;
        let response = match entry.payload {
            EntryPayload::Blank => Response { revision, outcome: Ok(Outcome::None) },
            EntryPayload::Normal(request) => apply_request(&mut txn, &mut st, revision, &request)?,
            EntryPayload::Membership(membership) => {
                let after = membership_summary(&membership);
                let before = membership_summary(st.membership.membership());
                st.membership = StoredMembership::new(Some(entry.log_id), membership);
                let mut audit = Auditor {
                    txn: &mut txn,
                    st: &mut st,
                    revision,
                    time_ms: 0,
                    actor: "raft",
                    reason: "",
                    request_id: "",
                };
                audit.record(AuditAction::MembershipChange, "", "", 0, Some(before), Some(after))?;
                Response { revision, outcome: Ok(Outcome::None) }
            }
        };
        st.applied = Some(entry.log_id);
        responses.push(response);
    }
    st.store(&mut txn)?;
    let (writes, audit) = txn.into_parts();
    Ok(Applied { writes, state: st, responses, audit })
}

/// A stable, human-readable description of a membership config for the audit log.
fn membership_summary(m: &openraft::Membership<u64, crate::types::NodeInfo>) -> String {
    let configs: Vec<Vec<u64>> = m.get_joint_config().iter().map(|c| c.iter().copied().collect()).collect();
    let nodes: BTreeMap<String, String> = m.nodes().map(|(id, n)| (id.to_string(), n.to_string())).collect();
    serde_json::json!({ "voters": configs, "nodes": nodes }).to_string()
}

/// Applies one entry's request: a single client request, or each request of a batch in order.
fn apply_request<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    st: &mut SmState,
    revision: u64,
    request: &Request,
) -> Result<Response, StoreError> {
    let Command::Batch { requests } = &request.command else { return apply_one(txn, st, revision, request) };
    let responses =
        requests.iter().map(|sub| apply_one(txn, st, revision, sub)).collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Response { revision, outcome: Ok(Outcome::Batch(responses)) })
}

/// Applies one client request: deduplication, then the command with its audit entries.
fn apply_one<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    st: &mut SmState,
    revision: u64,
    request: &Request,
) -> Result<Response, StoreError> {
    let fingerprint = (!request.request_id.is_empty()).then(|| fingerprint(request)).transpose()?;
    if let Some(fp) = fingerprint
        && let Some(previous) = remembered_request(txn, st, &request.request_id)?
    {
        if previous.fingerprint == fp {
            return Ok(previous.response);
        }
        let err = WriteError::RequestIdReused { request_id: request.request_id.clone() };
        return Ok(Response { revision, outcome: Err(err) });
    }

    let outcome = {
        let mut audit = Auditor {
            txn: &mut *txn,
            st: &mut *st,
            revision,
            time_ms: request.time_ms,
            actor: &request.actor,
            reason: &request.reason,
            request_id: &request.request_id,
        };
        execute(&mut audit, &request.command)?
    };
    let response = Response { revision, outcome };

    if let Some(fp) = fingerprint {
        let record = DedupRecord { fingerprint: fp, response: response.clone() };
        remember_request(txn, st, &request.request_id, &record)?;
    }
    Ok(response)
}

/// The generation a deduplication record numbered `seq` belongs to.
///
/// Request ids are remembered in generations of [`DEDUP_GENERATION_REQUESTS`] records: a
/// lookup sees the current generation and the one before it, and the first record of a new
/// generation drops the generation before those two with ONE range deletion. So an id is
/// remembered for at least that many newer deduplicated writes (at most twice that many), at
/// the cost of one extra point lookup, instead of an index and a delete per forgotten id.
pub fn dedup_generation(seq: u64) -> u64 {
    seq / DEDUP_GENERATION_REQUESTS
}

/// The first response to `request_id`, if it is still remembered.
fn remembered_request<R: KvRead + ?Sized>(
    txn: &Txn<'_, R>,
    st: &SmState,
    request_id: &str,
) -> Result<Option<DedupRecord>, StoreError> {
    let current = dedup_generation(st.requests_seq);
    for generation in [Some(current), current.checked_sub(1)].into_iter().flatten() {
        if let Some(record) = txn.get_decoded(Table::Requests, &codec::request_key(generation, request_id))? {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// Stores the deduplication record of `request_id`, dropping the generation that falls out of
/// the window when this record starts a new one.
fn remember_request<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    st: &mut SmState,
    request_id: &str,
    record: &DedupRecord,
) -> Result<(), StoreError> {
    let generation = dedup_generation(st.requests_seq);
    if st.requests_seq.is_multiple_of(DEDUP_GENERATION_REQUESTS) && generation >= 2 {
        let forgotten = generation - 2;
        txn.delete_range(Table::Requests, codec::u64_key(forgotten).to_vec(), codec::u64_key(forgotten + 1).to_vec());
    }
    txn.put_encoded(Table::Requests, codec::request_key(generation, request_id), record)?;
    st.requests_seq += 1;
    Ok(())
}

fn fingerprint(request: &Request) -> Result<Hash, StoreError> {
    let bytes = codec::encode(&request.command)?;
    Ok(Sha256::digest(&bytes).into())
}

/// Appends audit entries for one request and holds what every entry of it shares.
struct Auditor<'t, 'a, R: KvRead + ?Sized> {
    txn: &'t mut Txn<'a, R>,
    st: &'t mut SmState,
    revision: u64,
    time_ms: i64,
    actor: &'t str,
    reason: &'t str,
    request_id: &'t str,
}

impl<R: KvRead + ?Sized> Auditor<'_, '_, R> {
    fn record(
        &mut self,
        action: AuditAction,
        namespace: &str,
        key: &str,
        version: u64,
        before: Option<String>,
        after: Option<String>,
    ) -> Result<(), StoreError> {
        let head = self.st.audit_head;
        let entry = AuditEntry {
            seq: head.seq + 1,
            revision: self.revision,
            time_ms: self.time_ms,
            version,
            actor: self.actor.to_string(),
            action,
            namespace: namespace.to_string(),
            key: key.to_string(),
            before,
            after,
            reason: self.reason.to_string(),
            request_id: self.request_id.to_string(),
            prev_hash: head.hash,
            hash: [0; 32],
        }
        .seal();
        self.st.audit_head = AuditHead { seq: entry.seq, hash: entry.hash, revision: entry.revision };
        self.txn.put_audit(entry)?;
        Ok(())
    }

    fn get_flag(&self, namespace: &str, key: &str) -> Result<Option<FlagRecord>, StoreError> {
        self.txn.get_decoded(Table::Flags, &codec::flag_key(namespace, key))
    }

    fn put_flag(&mut self, namespace: &str, key: &str, record: &FlagRecord) -> Result<(), StoreError> {
        self.txn.put_encoded(Table::Flags, codec::flag_key(namespace, key), record)
    }

    fn new_record(&self, spec_json: String) -> FlagRecord {
        FlagRecord {
            spec_json,
            version: 1,
            created_revision: self.revision,
            mod_revision: self.revision,
            created_at_ms: self.time_ms,
            updated_at_ms: self.time_ms,
            updated_by: self.actor.to_string(),
        }
    }

    fn next_record(&self, old: &FlagRecord, spec_json: String) -> FlagRecord {
        FlagRecord {
            spec_json,
            version: old.version + 1,
            mod_revision: self.revision,
            updated_at_ms: self.time_ms,
            updated_by: self.actor.to_string(),
            ..old.clone()
        }
    }
}

/// Parses a stored spec (to change its state). A failure means a record this version cannot
/// read (written by a newer one); it is reported, not applied, identically everywhere.
fn parse_spec(key: &str, json: &str) -> Result<FlagSpec, WriteError> {
    FlagSpec::from_json(key, json).map_err(|e| WriteError::Invalid { field: e.field, problem: e.problem })
}

fn check_version(namespace: &str, key: &str, expected: Option<u64>, current: u64) -> Result<(), WriteError> {
    match expected {
        Some(expected) if expected != current => {
            Err(WriteError::VersionMismatch { namespace: namespace.into(), key: key.into(), expected, current })
        }
        _ => Ok(()),
    }
}

fn not_found(namespace: &str, key: &str) -> WriteError {
    WriteError::NotFound { namespace: namespace.into(), key: key.into() }
}

type CommandResult = Result<Result<Outcome, WriteError>, StoreError>;

fn execute<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>, command: &Command) -> CommandResult {
    match command {
        // The definition is stored as the proposer sent it: see `Command::CreateFlag`.
        Command::CreateFlag { namespace, key, spec_json } => {
            if let Some(existing) = a.get_flag(namespace, key)? {
                let err = WriteError::AlreadyExists {
                    namespace: namespace.clone(),
                    key: key.clone(),
                    version: existing.version,
                };
                return Ok(Err(err));
            }
            let canonical = spec_json.clone();
            let record = a.new_record(canonical.clone());
            a.put_flag(namespace, key, &record)?;
            a.record(AuditAction::FlagCreate, namespace, key, record.version, None, Some(canonical))?;
            Ok(Ok(Outcome::Flag { version: record.version }))
        }
        Command::UpdateFlag { namespace, key, spec_json, expected_version } => {
            let Some(old) = a.get_flag(namespace, key)? else { return Ok(Err(not_found(namespace, key))) };
            if let Err(e) = check_version(namespace, key, *expected_version, old.version) {
                return Ok(Err(e));
            }
            let canonical = spec_json.clone();
            let record = a.next_record(&old, canonical.clone());
            a.put_flag(namespace, key, &record)?;
            a.record(AuditAction::FlagUpdate, namespace, key, record.version, Some(old.spec_json), Some(canonical))?;
            Ok(Ok(Outcome::Flag { version: record.version }))
        }
        Command::SetFlagState { namespace, key, state, expected_version } => {
            let Some(old) = a.get_flag(namespace, key)? else { return Ok(Err(not_found(namespace, key))) };
            if let Err(e) = check_version(namespace, key, *expected_version, old.version) {
                return Ok(Err(e));
            }
            let mut spec = match parse_spec(key, &old.spec_json) {
                Ok(spec) => spec,
                Err(e) => return Ok(Err(e)),
            };
            if spec.state == *state {
                // Already in that state: nothing changes, so nothing is audited.
                return Ok(Ok(Outcome::Flag { version: old.version }));
            }
            spec.state = *state;
            let canonical = spec.to_json();
            let record = a.next_record(&old, canonical.clone());
            a.put_flag(namespace, key, &record)?;
            a.record(AuditAction::FlagSetState, namespace, key, record.version, Some(old.spec_json), Some(canonical))?;
            Ok(Ok(Outcome::Flag { version: record.version }))
        }
        Command::DeleteFlag { namespace, key, expected_version } => {
            let Some(old) = a.get_flag(namespace, key)? else { return Ok(Err(not_found(namespace, key))) };
            if let Err(e) = check_version(namespace, key, *expected_version, old.version) {
                return Ok(Err(e));
            }
            a.txn.delete(Table::Flags, codec::flag_key(namespace, key));
            a.record(AuditAction::FlagDelete, namespace, key, 0, Some(old.spec_json), None)?;
            Ok(Ok(Outcome::Flag { version: 0 }))
        }
        Command::ApplyNamespace { namespace, document_json } => apply_namespace(a, namespace, document_json),
        Command::RecordMembershipChange { description } => {
            a.record(AuditAction::MembershipChange, "", "", 0, None, Some(description.clone()))?;
            Ok(Ok(Outcome::None))
        }
        // `apply_request` unpacks a batch; one inside a batch is refused.
        Command::Batch { .. } => Ok(Err(WriteError::Invalid {
            field: "command".into(),
            problem: "a batch cannot contain another batch".into(),
        })),
    }
}

fn apply_namespace<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    namespace: &str,
    document_json: &str,
) -> CommandResult {
    let doc = match NamespaceDocument::from_json(document_json) {
        Ok(doc) => doc,
        Err(e) => return Ok(Err(WriteError::Invalid { field: e.field, problem: e.problem })),
    };
    let prefix = codec::namespace_prefix(namespace);
    let mut current: BTreeMap<String, FlagRecord> = BTreeMap::new();
    for (k, v) in a.txn.scan_prefix(Table::Flags, &prefix)? {
        let key = codec::split_flag_key(&k).map(|(_, key)| key.to_string()).unwrap_or_default();
        let record = codec::decode(&v).map_err(|source| StoreError::Corrupt { table: Table::Flags, source })?;
        current.insert(key, record);
    }
    let (mut created, mut updated, mut deleted, mut unchanged) = (0u32, 0u32, 0u32, 0u32);
    for (key, spec) in &doc.flags {
        let canonical = spec.to_json();
        match current.remove(key) {
            None => {
                let record = a.new_record(canonical.clone());
                a.put_flag(namespace, key, &record)?;
                a.record(AuditAction::FlagCreate, namespace, key, record.version, None, Some(canonical))?;
                created += 1;
            }
            Some(old) if old.spec_json == canonical => unchanged += 1,
            Some(old) => {
                let record = a.next_record(&old, canonical.clone());
                a.put_flag(namespace, key, &record)?;
                a.record(
                    AuditAction::FlagUpdate,
                    namespace,
                    key,
                    record.version,
                    Some(old.spec_json),
                    Some(canonical),
                )?;
                updated += 1;
            }
        }
    }
    for (key, old) in current {
        a.txn.delete(Table::Flags, codec::flag_key(namespace, &key));
        a.record(AuditAction::FlagDelete, namespace, &key, 0, Some(old.spec_json), None)?;
        deleted += 1;
    }

    let evaluators_json = serde_json::to_string(&doc.evaluators).unwrap_or_default();
    let metadata_json = serde_json::to_string(&doc.metadata).unwrap_or_default();
    let old: NamespaceRecord = a.txn.get_decoded(Table::Namespaces, namespace.as_bytes())?.unwrap_or_default();
    let empty = |s: &str| s.is_empty() || s == "{}";
    let same = (old.evaluators_json == evaluators_json || (empty(&old.evaluators_json) && empty(&evaluators_json)))
        && (old.metadata_json == metadata_json || (empty(&old.metadata_json) && empty(&metadata_json)));
    if !same {
        let record = NamespaceRecord { evaluators_json, metadata_json, mod_revision: a.revision };
        let describe = |r: &NamespaceRecord| {
            format!(
                "{{\"$evaluators\":{},\"metadata\":{}}}",
                if r.evaluators_json.is_empty() { "{}" } else { &r.evaluators_json },
                if r.metadata_json.is_empty() { "{}" } else { &r.metadata_json }
            )
        };
        let (before, after) = (describe(&old), describe(&record));
        a.txn.put_encoded(Table::Namespaces, namespace.as_bytes().to_vec(), &record)?;
        a.record(AuditAction::NamespaceUpdate, namespace, "", 0, Some(before), Some(after))?;
    }
    Ok(Ok(Outcome::Applied { created, updated, deleted, unchanged }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};
    use std::cell::RefCell;
    use vexil_model::{ChainVerifier, FlagState};

    /// An in-memory table set for testing the logic without RocksDB.
    #[derive(Default)]
    pub struct MemKv(pub RefCell<BTreeMap<TableKey, Vec<u8>>>);

    type TableKey = (Table, Vec<u8>);

    impl KvRead for MemKv {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.borrow().get(&(table, key.to_vec())).cloned())
        }
        fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError> {
            Ok(self
                .0
                .borrow()
                .range((table, start.to_vec())..)
                .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
                .take(limit)
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect())
        }
    }

    impl MemKv {
        fn commit(&self, writes: Writes) {
            writes.apply_to(&mut self.0.borrow_mut());
        }
    }

    struct Harness {
        kv: MemKv,
        st: SmState,
        index: u64,
    }

    impl Harness {
        fn new() -> Self {
            Harness { kv: MemKv::default(), st: SmState::default(), index: 0 }
        }

        fn run(&mut self, request_id: &str, command: Command) -> Response {
            self.index += 1;
            let req = Request {
                request_id: request_id.into(),
                actor: "alice".into(),
                reason: "test".into(),
                time_ms: 1_000 * self.index as i64,
                command,
            };
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
                payload: EntryPayload::Normal(req),
            };
            let mut applied = apply_entries(&self.kv, &self.st, [entry]).expect("apply");
            assert_eq!(applied.audit.len(), applied.writes.keys.keys().filter(|(t, _)| *t == Table::Audit).count());
            self.kv.commit(applied.writes);
            self.st = applied.state;
            applied.responses.pop().expect("one response per entry")
        }

        fn flag(&self, key: &str) -> Option<FlagRecord> {
            Txn::new(&self.kv).get_decoded(Table::Flags, &codec::flag_key("ns", key)).expect("read")
        }

        fn audit(&self) -> Vec<AuditEntry> {
            self.kv
                .scan(Table::Audit, &[], &[], usize::MAX)
                .expect("scan")
                .into_iter()
                .map(|(_, v)| codec::decode(&v).expect("decode"))
                .collect()
        }
    }

    const ON: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
    const OFF: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}"#;

    /// What a proposer sends: the canonical JSON of a validated definition.
    fn canonical(key: &str, spec: &str) -> String {
        FlagSpec::from_json(key, spec).expect("valid test flag").to_json()
    }
    fn create(key: &str, spec: &str) -> Command {
        Command::CreateFlag { namespace: "ns".into(), key: key.into(), spec_json: canonical(key, spec) }
    }
    fn update(key: &str, spec: &str, expected_version: Option<u64>) -> Command {
        Command::UpdateFlag {
            namespace: "ns".into(),
            key: key.into(),
            spec_json: canonical(key, spec),
            expected_version,
        }
    }

    #[test]
    fn create_update_delete_with_versions_revisions_and_audit() {
        let mut h = Harness::new();
        assert_eq!(h.run("", create("f", ON)).outcome, Ok(Outcome::Flag { version: 1 }));
        assert_eq!(h.run("", update("f", OFF, Some(1))).outcome, Ok(Outcome::Flag { version: 2 }));
        let rec = h.flag("f").expect("exists");
        assert_eq!((rec.version, rec.created_revision, rec.mod_revision), (2, 1, 2));
        assert_eq!((rec.created_at_ms, rec.updated_at_ms), (1_000, 2_000));
        assert_eq!(
            h.run("", Command::DeleteFlag { namespace: "ns".into(), key: "f".into(), expected_version: None }).outcome,
            Ok(Outcome::Flag { version: 0 })
        );
        assert!(h.flag("f").is_none());
        let audit = h.audit();
        let actions: Vec<_> = audit.iter().map(|e| (e.revision, e.action)).collect();
        assert_eq!(
            actions,
            vec![(1, AuditAction::FlagCreate), (2, AuditAction::FlagUpdate), (3, AuditAction::FlagDelete)]
        );
        let mut v = ChainVerifier::new();
        audit.iter().for_each(|e| v.push(e).expect("chain verifies"));
        assert_eq!(h.st.audit_head.seq, 3);
    }

    #[test]
    fn compare_and_set_rejects_stale_versions_without_writing() {
        let mut h = Harness::new();
        h.run("", create("f", ON));
        h.run("", update("f", OFF, Some(1)));
        let r = h.run("", update("f", ON, Some(1)));
        assert_eq!(
            r.outcome,
            Err(WriteError::VersionMismatch { namespace: "ns".into(), key: "f".into(), expected: 1, current: 2 })
        );
        assert_eq!(h.flag("f").expect("exists").version, 2);
        assert_eq!(h.audit().len(), 2, "a failed compare-and-set is not audited");
    }

    #[test]
    fn create_of_existing_and_update_of_missing_fail() {
        let mut h = Harness::new();
        h.run("", create("f", ON));
        assert!(matches!(h.run("", create("f", OFF)).outcome, Err(WriteError::AlreadyExists { version: 1, .. })));
        assert!(matches!(h.run("", update("g", OFF, None)).outcome, Err(WriteError::NotFound { .. })));
    }

    #[test]
    fn a_repeated_request_id_returns_the_first_response() {
        let mut h = Harness::new();
        let first = h.run("req-1", create("f", ON));
        let again = h.run("req-1", create("f", ON));
        assert_eq!(again, first, "same revision and outcome, not AlreadyExists");
        assert_eq!(h.audit().len(), 1);
        let reused = h.run("req-1", create("g", ON));
        assert!(matches!(reused.outcome, Err(WriteError::RequestIdReused { .. })));
        assert!(h.flag("g").is_none());
    }

    #[test]
    fn set_state_is_audited_only_when_it_changes() {
        let mut h = Harness::new();
        h.run("", create("f", ON));
        let off = |v| Command::SetFlagState {
            namespace: "ns".into(),
            key: "f".into(),
            state: FlagState::Disabled,
            expected_version: v,
        };
        assert_eq!(h.run("", off(Some(1))).outcome, Ok(Outcome::Flag { version: 2 }));
        assert_eq!(h.run("", off(None)).outcome, Ok(Outcome::Flag { version: 2 }));
        assert_eq!(h.audit().len(), 2);
        assert!(h.flag("f").expect("exists").spec_json.contains("DISABLED"));
    }

    #[test]
    fn apply_namespace_creates_updates_deletes_in_one_revision() {
        let mut h = Harness::new();
        h.run("", create("keep", ON));
        h.run("", create("change", ON));
        h.run("", create("drop", ON));
        let doc =
            format!(r#"{{"flags":{{"keep":{ON},"change":{OFF},"new":{ON}}},"$evaluators":{{"beta":{{"==":[1,1]}}}}}}"#);
        let r = h.run("", Command::ApplyNamespace { namespace: "ns".into(), document_json: doc.clone() });
        assert_eq!(r.outcome, Ok(Outcome::Applied { created: 1, updated: 1, deleted: 1, unchanged: 1 }));
        assert!(h.flag("drop").is_none() && h.flag("new").is_some());
        let at_4: Vec<_> = h.audit().into_iter().filter(|e| e.revision == 4).map(|e| e.action).collect();
        assert_eq!(at_4.len(), 4, "create + update + delete + namespace update, all at revision 4");
        let again = h.run("", Command::ApplyNamespace { namespace: "ns".into(), document_json: doc });
        assert_eq!(again.outcome, Ok(Outcome::Applied { created: 0, updated: 0, deleted: 0, unchanged: 3 }));
        assert!(h.audit().iter().all(|e| e.revision != 5), "a no-op apply writes no audit entries");
    }

    #[test]
    fn an_invalid_document_changes_nothing() {
        let mut h = Harness::new();
        h.run("", create("keep", ON));
        let doc = r#"{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"nope"}}}"#;
        let r = h.run("", Command::ApplyNamespace { namespace: "ns".into(), document_json: doc.into() });
        assert!(matches!(r.outcome, Err(WriteError::Invalid { ref field, .. }) if field == "flags.a.defaultVariant"));
        assert!(h.flag("keep").is_some());
        assert_eq!(h.audit().len(), 1);
    }

    fn sub(request_id: &str, command: Command) -> Request {
        Request { request_id: request_id.into(), actor: "bob".into(), reason: "batched".into(), time_ms: 7, command }
    }

    fn batch_responses(r: Response) -> Vec<Response> {
        match r.outcome {
            Ok(Outcome::Batch(responses)) => responses,
            other => panic!("expected a batch outcome, got {other:?}"),
        }
    }

    #[test]
    fn a_batch_applies_each_request_in_order_at_one_revision() {
        let mut h = Harness::new();
        h.run("", create("f", ON));
        let requests = vec![
            sub("", update("f", OFF, Some(1))),
            // Compare-and-set against the version before the first request of the batch: it lost.
            sub("", update("f", ON, Some(1))),
            sub("r-g", create("g", ON)),
            // The same request id and command again within the batch: the first response.
            sub("r-g", create("g", ON)),
            sub("", Command::Batch { requests: vec![sub("", create("h", ON))] }),
            sub("", Command::DeleteFlag { namespace: "ns".into(), key: "f".into(), expected_version: Some(2) }),
        ];
        let r = h.run("", Command::Batch { requests });
        assert_eq!(r.revision, 2);
        let responses = batch_responses(r);
        let outcomes: Vec<_> = responses.iter().map(|r| (r.revision, r.outcome.clone())).collect();
        assert_eq!(outcomes[0], (2, Ok(Outcome::Flag { version: 2 })));
        assert_eq!(
            outcomes[1],
            (2, Err(WriteError::VersionMismatch { namespace: "ns".into(), key: "f".into(), expected: 1, current: 2 }))
        );
        assert_eq!(outcomes[2], (2, Ok(Outcome::Flag { version: 1 })));
        assert_eq!(outcomes[3], outcomes[2], "a repeated request id in one batch answers like the first");
        assert!(matches!(&outcomes[4].1, Err(WriteError::Invalid { field, .. }) if field == "command"));
        assert_eq!(outcomes[5], (2, Ok(Outcome::Flag { version: 0 })));
        assert!(h.flag("f").is_none() && h.flag("g").is_some() && h.flag("h").is_none());

        let audit = h.audit();
        let at_2: Vec<_> = audit.iter().filter(|e| e.revision == 2).map(|e| (e.key.as_str(), e.action)).collect();
        assert_eq!(
            at_2,
            vec![("f", AuditAction::FlagUpdate), ("g", AuditAction::FlagCreate), ("f", AuditAction::FlagDelete)]
        );
        assert!(audit.iter().filter(|e| e.revision == 2).all(|e| e.actor == "bob" && e.reason == "batched"));
        let mut v = ChainVerifier::new();
        audit.iter().for_each(|e| v.push(e).expect("chain verifies"));

        // A retry in a later entry still finds the response the batch gave.
        assert_eq!(h.run("r-g", create("g", ON)), responses[2].clone());
        assert_eq!(h.audit().len(), audit.len());
    }

    #[test]
    fn request_ids_are_forgotten_a_whole_generation_at_a_time() {
        const G: u64 = DEDUP_GENERATION_REQUESTS;
        let mut h = Harness::new();
        let ids = |h: &Harness| -> Vec<(u64, Vec<u8>)> {
            h.kv.scan(Table::Requests, &[], &[], 10)
                .expect("scan")
                .into_iter()
                .map(|(k, _)| (codec::parse_u64_key(&k).expect("generation prefix"), k[8..].to_vec()))
                .collect()
        };
        // "a" is the last record of generation 0.
        h.st.requests_seq = G - 1;
        let first_a = h.run("a", create("f1", ON));
        // "b" opens generation 1: "a" (generation 0) is still remembered.
        h.run("b", create("f2", ON));
        assert_eq!(h.run("a", create("f1", ON)), first_a, "the previous generation is still consulted");
        assert_eq!(ids(&h), vec![(0, b"a".to_vec()), (1, b"b".to_vec())]);
        // Once generation 2 is current, generation 0 is not consulted; its first record drops it.
        h.st.requests_seq = 2 * G;
        h.run("c", create("f3", ON));
        assert_eq!(ids(&h), vec![(1, b"b".to_vec()), (2, b"c".to_vec())]);
        let again = h.run("a", create("f1", ON));
        assert!(
            matches!(again.outcome, Err(WriteError::AlreadyExists { .. })),
            "a forgotten id is applied again: {again:?}"
        );
        assert_eq!(h.st.requests_seq, 2 * G + 2);
    }

    #[test]
    fn a_range_deletion_hides_stored_and_earlier_keys_but_not_later_ones() {
        let kv = MemKv::default();
        kv.0.borrow_mut().insert((Table::Requests, b"k1".to_vec()), b"stored".to_vec());
        kv.0.borrow_mut().insert((Table::Requests, b"k5".to_vec()), b"stored".to_vec());
        let mut txn = Txn::new(&kv);
        txn.put(Table::Requests, b"k2".to_vec(), b"before".to_vec());
        txn.put(Table::Flags, b"k2".to_vec(), b"other table".to_vec());
        txn.delete_range(Table::Requests, b"k0".to_vec(), b"k5".to_vec());
        txn.put(Table::Requests, b"k3".to_vec(), b"after".to_vec());
        assert_eq!(txn.get(Table::Requests, b"k1").expect("get"), None);
        assert_eq!(txn.get(Table::Requests, b"k2").expect("get"), None);
        assert_eq!(txn.get(Table::Requests, b"k3").expect("get"), Some(b"after".to_vec()));
        assert_eq!(txn.get(Table::Requests, b"k5").expect("get"), Some(b"stored".to_vec()), "`to` is exclusive");
        assert_eq!(txn.get(Table::Flags, b"k2").expect("get"), Some(b"other table".to_vec()));
        let seen: Vec<_> = txn.scan_prefix(Table::Requests, b"k").expect("scan").into_keys().collect();
        assert_eq!(seen, vec![b"k3".to_vec(), b"k5".to_vec()]);
        let (writes, _) = txn.into_parts();
        kv.commit(writes);
        let left: Vec<_> = kv.0.borrow().keys().cloned().collect();
        assert_eq!(
            left,
            vec![(Table::Flags, b"k2".to_vec()), (Table::Requests, b"k3".to_vec()), (Table::Requests, b"k5".to_vec())]
        );
    }
}
