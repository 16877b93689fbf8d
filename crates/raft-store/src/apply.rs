//! Executing committed entries: the state machine's logic, independent of the storage engine.
//!
//! [`apply_entries`] runs a run of entries in one [`Txn`] over a read-only view of the stored
//! state; the caller then commits [`Applied::writes`] as ONE atomic write (a RocksDB write
//! batch, or a map update in the simulation's in-memory store). So a flag change, its audit
//! entries, its deduplication record and the new applied log id become visible together or not
//! at all. The tables and records are in [`crate::schema`], the transaction in [`crate::txn`].
//!
//! Architecture invariant: applying an entry is a pure function of the entry and the stored
//! state. No clock, no randomness, no iteration over unordered maps: every replica computes the
//! same flags, the same responses and the same audit hash chain.

use std::collections::{BTreeMap, BTreeSet};

use openraft::EntryPayload;
use sha2::{Digest, Sha256};
use vexil_model::access::{Grant, TokenRecord, validate_grant, validate_token_name};
use vexil_model::audit::{Checkpoint, Hash};
use vexil_model::{AuditAction, AuditEntry, FlagSpec, NamespaceDocument, NamespaceSettings, limits};

use crate::codec;
use crate::error::StoreError;
use crate::governance;
use crate::limits::DEDUP_GENERATION_REQUESTS;
use crate::schema::{
    AuditHead, DedupRecord, FlagRecord, META_ALARMS, META_ANONYMOUS_READ, META_AUDIT_CHECKPOINT,
    META_TOKENS_BOOTSTRAPPED, NamespaceRecord, Table, namespace_settings_key,
};
use crate::sm_state::SmState;
use crate::txn::{KvRead, Txn, Writes};
use crate::types::{ALARM_NOSPACE, Alarm, Command, Entry, Outcome, Request, Response, StoredMembership, WriteError};

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

/// Bugs the simulation injects into applying (through [`crate::mem::Faults`]) to prove its
/// checkers catch them. Always off on a real node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Complete a change request without checking that the flags it was based on are unchanged.
    pub stale_changes_apply: bool,
}

/// Applies `entries` in order on top of `view`. `state` is not modified; the caller swaps in
/// the returned state only after the writes are committed.
pub fn apply_entries<R: KvRead + ?Sized>(
    view: &R,
    state: &SmState,
    entries: impl IntoIterator<Item = Entry>,
) -> Result<Applied, StoreError> {
    apply_entries_with(view, state, entries, Injected::default())
}

/// [`apply_entries`] with bugs injected (the simulation's).
pub fn apply_entries_with<R: KvRead + ?Sized>(
    view: &R,
    state: &SmState,
    entries: impl IntoIterator<Item = Entry>,
    injected: Injected,
) -> Result<Applied, StoreError> {
    let mut txn = Txn::new(view);
    let mut st = state.clone();
    let mut responses = Vec::new();
    for entry in entries {
        let revision = entry.log_id.index;
        let response = match entry.payload {
            EntryPayload::Blank => Response { revision, outcome: Ok(Outcome::None) },
            EntryPayload::Normal(request) => apply_request(&mut txn, &mut st, revision, &request, injected)?,
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
                    injected,
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
    injected: Injected,
) -> Result<Response, StoreError> {
    let Command::Batch { requests } = &request.command else {
        return apply_one(txn, st, revision, request, injected);
    };
    let responses = requests
        .iter()
        .map(|sub| apply_one(txn, st, revision, sub, injected))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Response { revision, outcome: Ok(Outcome::Batch(responses)) })
}

/// Applies one client request: deduplication, then the command with its audit entries.
fn apply_one<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    st: &mut SmState,
    revision: u64,
    request: &Request,
    injected: Injected,
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

    if !request.command.allowed_under_alarms(&st.alarms) {
        // Deduplicated like any outcome: a retry after the alarm clears gets this answer (the
        // client sends a new request id, as after any refusal).
        let outcome = Err(WriteError::no_space(&st.alarms));
        let response = Response { revision, outcome };
        if let Some(fp) = fingerprint {
            remember_request(
                txn,
                st,
                &request.request_id,
                &DedupRecord { fingerprint: fp, response: response.clone() },
            )?;
        }
        return Ok(response);
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
            injected,
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
pub(crate) struct Auditor<'t, 'a, R: KvRead + ?Sized> {
    pub(crate) txn: &'t mut Txn<'a, R>,
    pub(crate) st: &'t mut SmState,
    pub(crate) revision: u64,
    pub(crate) time_ms: i64,
    pub(crate) actor: &'t str,
    pub(crate) reason: &'t str,
    pub(crate) request_id: &'t str,
    pub(crate) injected: Injected,
}

impl<R: KvRead + ?Sized> Auditor<'_, '_, R> {
    pub(crate) fn record(
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

    pub(crate) fn get_flag(&self, namespace: &str, key: &str) -> Result<Option<FlagRecord>, StoreError> {
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
pub(crate) fn parse_spec(key: &str, json: &str) -> Result<FlagSpec, WriteError> {
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

pub(crate) fn not_found(namespace: &str, key: &str) -> WriteError {
    WriteError::NotFound { namespace: namespace.into(), key: key.into() }
}

pub(crate) type CommandResult = Result<Result<Outcome, WriteError>, StoreError>;

fn execute<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>, command: &Command) -> CommandResult {
    match command {
        Command::CreateFlag { .. }
        | Command::UpdateFlag { .. }
        | Command::SetFlagState { .. }
        | Command::DeleteFlag { .. }
        | Command::ApplyNamespace { .. }
        | Command::DisableFlag { .. } => governance::write(a, command),
        Command::SetNamespacePolicy { namespace, policy_json, expected_version } => {
            governance::set_policy(a, namespace, policy_json, *expected_version)
        }
        Command::ReviewChange { namespace, id, verdict, role } => {
            governance::review(a, namespace, *id, *verdict, *role)
        }
        Command::RecordMembershipChange { description } => {
            a.record(AuditAction::MembershipChange, "", "", 0, None, Some(description.clone()))?;
            Ok(Ok(Outcome::None))
        }
        Command::CreateToken { name, grant, secret_hash, expires_ms, bootstrap } => {
            create_token(a, name, grant, secret_hash, *expires_ms, *bootstrap)
        }
        Command::RevokeToken { name } => revoke_token(a, name),
        Command::SetAnonymousRead { namespace, enabled } => set_anonymous_read(a, namespace, *enabled),
        Command::SetNamespaceSettings { namespace, change_json } => set_namespace_settings(a, namespace, change_json),
        Command::RaiseAlarm { node_id, reason } => raise_alarm(a, *node_id, reason),
        Command::ClearAlarms => clear_alarms(a),
        Command::CompactAudit { through_seq, through_revision } => compact_audit(a, *through_seq, *through_revision),
        // `apply_request` unpacks a batch; one inside a batch is refused.
        Command::Batch { .. } => Ok(Err(WriteError::Invalid {
            field: "command".into(),
            problem: "a batch cannot contain another batch".into(),
        })),
    }
}

/// Executes one flag write as it is, without change control (see [`governance::write`]):
/// refusals write nothing.
pub(crate) fn execute_flag<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>, command: &Command) -> CommandResult {
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
        // `execute` sends only flag writes here.
        _ => Ok(Err(WriteError::Invalid { field: "command".into(), problem: "is not a flag write".into() })),
    }
}

fn store_alarms<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>) -> Result<(), StoreError> {
    if a.st.alarms.is_empty() {
        a.txn.delete(Table::Meta, META_ALARMS.to_vec());
        Ok(())
    } else {
        a.txn.put_encoded(Table::Meta, META_ALARMS.to_vec(), &a.st.alarms)
    }
}

fn raise_alarm<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>, node_id: u64, reason: &str) -> CommandResult {
    // A node no longer (or not yet) a member cannot hold the cluster read-only.
    let member = a.st.membership.membership().get_node(&node_id).is_some();
    if !member || a.st.alarms.contains_key(&node_id) {
        return Ok(Ok(Outcome::None));
    }
    let alarm = Alarm { node_id, reason: reason.into(), revision: a.revision, time_ms: a.time_ms };
    a.st.alarms.insert(node_id, alarm);
    store_alarms(a)?;
    let after = serde_json::json!({ "alarm": ALARM_NOSPACE, "reason": reason }).to_string();
    a.record(AuditAction::AlarmRaise, "", &node_id.to_string(), 0, None, Some(after))?;
    Ok(Ok(Outcome::None))
}

fn clear_alarms<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>) -> CommandResult {
    if a.st.alarms.is_empty() {
        return Ok(Ok(Outcome::AlarmsCleared(vec![])));
    }
    let cleared: Vec<Alarm> = a.st.alarms.values().cloned().collect();
    let before = serde_json::Value::Array(
        cleared
            .iter()
            .map(|x| serde_json::json!({ "node_id": x.node_id, "reason": x.reason, "revision": x.revision }))
            .collect(),
    )
    .to_string();
    a.st.alarms.clear();
    store_alarms(a)?;
    a.record(AuditAction::AlarmClear, "", "", 0, Some(before), None)?;
    Ok(Ok(Outcome::AlarmsCleared(cleared)))
}

/// Removes the audit entries up to `through_seq` behind a checkpoint (see
/// [`Command::CompactAudit`]): one range deletion of the table's prefix (its keys are in chain
/// order), the new checkpoint, and the `audit.checkpoint` entry that puts the cut in the chain.
fn compact_audit<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    through_seq: u64,
    through_revision: u64,
) -> CommandResult {
    let previous: Option<Checkpoint> = a.txn.get_decoded(Table::Meta, META_AUDIT_CHECKPOINT)?;
    let kept_from = previous.map_or(0, |cp| cp.seq);
    if through_seq <= kept_from {
        let checkpoint = previous.unwrap_or(Checkpoint { seq: 0, revision: 0, hash: vexil_model::audit::GENESIS_HASH });
        return Ok(Ok(Outcome::AuditCompacted { checkpoint, removed: 0 }));
    }
    let head = a.st.audit_head;
    if through_seq > head.seq {
        let problem = format!("the audit log ends at seq {}; a cut must be at or before it", head.seq);
        return Ok(Err(WriteError::Invalid { field: "through_seq".into(), problem }));
    }
    let key = codec::audit_key(through_revision, through_seq).to_vec();
    let Some(cut) = a.txn.get_decoded::<AuditEntry>(Table::Audit, &key)? else {
        let problem = format!("no audit entry seq {through_seq} at revision {through_revision}");
        return Ok(Err(WriteError::Invalid { field: "through_revision".into(), problem }));
    };
    let checkpoint = Checkpoint { seq: cut.seq, revision: cut.revision, hash: cut.hash };
    let removed = through_seq - kept_from;
    // Keys run `revision ‖ seq`: everything below `(cut revision, cut seq + 1)` is at or before
    // the cut, and entries after it that share its revision stay.
    let end = codec::audit_key(through_revision, through_seq + 1).to_vec();
    a.txn.delete_range(Table::Audit, codec::audit_key(0, 0).to_vec(), end);
    a.txn.put_encoded(Table::Meta, META_AUDIT_CHECKPOINT.to_vec(), &checkpoint)?;
    a.record(AuditAction::AuditCheckpoint, "", "", 0, None, Some(checkpoint.to_json(removed)))?;
    Ok(Ok(Outcome::AuditCompacted { checkpoint, removed }))
}

/// Every stored token, keyed by its secret's hash. Tokens are few ([`limits::TOKENS_MAX`]).
fn stored_tokens<R: KvRead + ?Sized>(a: &Auditor<'_, '_, R>) -> Result<Vec<(Vec<u8>, TokenRecord)>, StoreError> {
    a.txn
        .scan_prefix(Table::Tokens, &[])?
        .into_iter()
        .map(|(k, v)| {
            let record = codec::decode(&v).map_err(|source| StoreError::Corrupt { table: Table::Tokens, source })?;
            Ok((k, record))
        })
        .collect()
}

fn create_token<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    name: &str,
    grant: &Grant,
    secret_hash: &[u8; 32],
    expires_ms: i64,
    bootstrap: bool,
) -> CommandResult {
    // The proposer validated these; a replica re-checks what the log must never hold.
    if let Err(problem) = validate_token_name(name) {
        return Ok(Err(WriteError::Invalid { field: "name".into(), problem }));
    }
    if let Err((field, problem)) = validate_grant(grant) {
        return Ok(Err(WriteError::Invalid { field: field.into(), problem }));
    }
    if bootstrap && a.txn.get(Table::Meta, META_TOKENS_BOOTSTRAPPED)?.is_some() {
        return Ok(Err(WriteError::AlreadyBootstrapped));
    }
    let existing = stored_tokens(a)?;
    if existing.iter().any(|(_, t)| t.name == name) {
        return Ok(Err(WriteError::TokenExists { name: name.into() }));
    }
    if existing.len() >= limits::TOKENS_MAX {
        return Ok(Err(WriteError::LimitReached {
            limit: "TOKENS_MAX".into(),
            what: "tokens".into(),
            max: limits::TOKENS_MAX as u64,
        }));
    }
    if existing.iter().any(|(k, _)| k.as_slice() == secret_hash) {
        // 256 random bits collide only when a proposer reuses a secret: refuse, never replace.
        return Ok(Err(WriteError::Invalid { field: "secret".into(), problem: "is already in use".into() }));
    }
    let record = TokenRecord {
        name: name.into(),
        grant: grant.clone(),
        expires_ms,
        created_ms: a.time_ms,
        created_by: a.actor.into(),
        revision: a.revision,
    };
    a.txn.put_encoded(Table::Tokens, secret_hash.to_vec(), &record)?;
    if bootstrap {
        a.txn.put(Table::Meta, META_TOKENS_BOOTSTRAPPED.to_vec(), vec![1]);
    }
    a.record(AuditAction::TokenCreate, "", name, 0, None, Some(record.describe().to_string()))?;
    Ok(Ok(Outcome::None))
}

fn revoke_token<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>, name: &str) -> CommandResult {
    let Some((key, record)) = stored_tokens(a)?.into_iter().find(|(_, t)| t.name == name) else {
        return Ok(Err(WriteError::TokenNotFound { name: name.into() }));
    };
    a.txn.delete(Table::Tokens, key);
    a.record(AuditAction::TokenRevoke, "", name, 0, Some(record.describe().to_string()), None)?;
    Ok(Ok(Outcome::None))
}

fn set_anonymous_read<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>, namespace: &str, enabled: bool) -> CommandResult {
    if let Err(problem) = vexil_model::flag::validate_namespace(namespace) {
        return Ok(Err(WriteError::Invalid { field: "namespace".into(), problem }));
    }
    let mut open: BTreeSet<String> = a.txn.get_decoded(Table::Meta, META_ANONYMOUS_READ)?.unwrap_or_default();
    let was = open.contains(namespace);
    if was == enabled {
        return Ok(Ok(Outcome::None));
    }
    if enabled && open.len() >= limits::ANONYMOUS_READ_NAMESPACES_MAX {
        return Ok(Err(WriteError::LimitReached {
            limit: "ANONYMOUS_READ_NAMESPACES_MAX".into(),
            what: "namespaces readable without a token".into(),
            max: limits::ANONYMOUS_READ_NAMESPACES_MAX as u64,
        }));
    }
    if enabled {
        open.insert(namespace.into());
    } else {
        open.remove(namespace);
    }
    if open.is_empty() {
        a.txn.delete(Table::Meta, META_ANONYMOUS_READ.to_vec());
    } else {
        a.txn.put_encoded(Table::Meta, META_ANONYMOUS_READ.to_vec(), &open)?;
    }
    let state = |on: bool| Some(serde_json::json!({ "anonymous_read": on }).to_string());
    a.record(AuditAction::NamespaceAccess, namespace, "", 0, state(was), state(enabled))?;
    Ok(Ok(Outcome::None))
}

fn set_namespace_settings<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    namespace: &str,
    change_json: &str,
) -> CommandResult {
    if let Err(problem) = vexil_model::flag::validate_namespace(namespace) {
        return Ok(Err(WriteError::Invalid { field: "namespace".into(), problem }));
    }
    let change = match serde_json::from_str::<serde_json::Value>(change_json) {
        Ok(serde_json::Value::Object(change)) => change,
        _ => {
            return Ok(Err(WriteError::Invalid {
                field: "settings".into(),
                problem: "must be a JSON object of setting names to values".into(),
            }));
        }
    };
    let key = namespace_settings_key(namespace);
    let old: NamespaceSettings = a.txn.get_decoded(Table::Meta, &key)?.unwrap_or_default();
    let new = match old.merged(&change) {
        Ok(new) => new,
        Err(e) => return Ok(Err(WriteError::Invalid { field: e.field, problem: e.problem })),
    };
    if new == old {
        return Ok(Ok(Outcome::None));
    }
    if new == NamespaceSettings::default() {
        a.txn.delete(Table::Meta, key);
    } else {
        a.txn.put_encoded(Table::Meta, key, &new)?;
    }
    let (before, after) = (old.to_json().to_string(), new.to_json().to_string());
    a.record(AuditAction::NamespaceSettings, namespace, "", 0, Some(before), Some(after))?;
    Ok(Ok(Outcome::None))
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
    use crate::txn::tests::MemKv;
    use openraft::{CommittedLeaderId, LogId};
    use vexil_model::{ChainVerifier, FlagState};

    /// Applies entries one by one on an in-memory table set; `actor` and `reason` go into
    /// the next request.
    pub(crate) struct Harness {
        pub(crate) kv: MemKv,
        pub(crate) st: SmState,
        index: u64,
        pub(crate) actor: &'static str,
        pub(crate) reason: &'static str,
    }

    impl Harness {
        pub(crate) fn new() -> Self {
            Harness { kv: MemKv::default(), st: SmState::default(), index: 0, actor: "alice", reason: "test" }
        }

        pub(crate) fn run(&mut self, request_id: &str, command: Command) -> Response {
            self.index += 1;
            let req = Request {
                request_id: request_id.into(),
                actor: self.actor.into(),
                reason: self.reason.into(),
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

        pub(crate) fn flag(&self, key: &str) -> Option<FlagRecord> {
            Txn::new(&self.kv).get_decoded(Table::Flags, &codec::flag_key("ns", key)).expect("read")
        }

        pub(crate) fn audit(&self) -> Vec<AuditEntry> {
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
    pub(crate) fn canonical(key: &str, spec: &str) -> String {
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

    fn token(name: &str, secret: &str, bootstrap: bool) -> Command {
        Command::CreateToken {
            name: name.into(),
            grant: vexil_model::access::Grant::admin(),
            secret_hash: vexil_model::access::secret_hash(secret),
            expires_ms: 0,
            bootstrap,
        }
    }

    #[test]
    fn tokens_are_created_once_revoked_by_name_and_audited_without_their_hash() {
        let mut h = Harness::new();
        assert!(h.run("", token("root", "s1", true)).outcome.is_ok());
        // The first admin token is created by bootstrap once, whatever happens to it later.
        assert_eq!(h.run("", token("again", "s2", true)).outcome, Err(WriteError::AlreadyBootstrapped));
        assert_eq!(h.run("", token("root", "s3", false)).outcome, Err(WriteError::TokenExists { name: "root".into() }));
        assert!(h.run("", token("ci", "s4", false)).outcome.is_ok());
        let stored = |h: &Harness, secret: &str| -> Option<TokenRecord> {
            Txn::new(&h.kv).get_decoded(Table::Tokens, &vexil_model::access::secret_hash(secret)).expect("read")
        };
        let ci = stored(&h, "s4").expect("stored under its secret's hash");
        assert_eq!((ci.name.as_str(), ci.created_by.as_str(), ci.revision), ("ci", "alice", 4));

        assert!(h.run("", Command::RevokeToken { name: "root".into() }).outcome.is_ok());
        assert!(stored(&h, "s1").is_none(), "a revoked token no longer authenticates");
        assert_eq!(h.run("", token("again", "s5", true)).outcome, Err(WriteError::AlreadyBootstrapped));
        assert_eq!(
            h.run("", Command::RevokeToken { name: "root".into() }).outcome,
            Err(WriteError::TokenNotFound { name: "root".into() })
        );

        let bad = Command::CreateToken {
            name: "ed".into(),
            grant: vexil_model::access::Grant {
                role: vexil_model::access::Role::Editor,
                namespaces: Default::default(),
            },
            secret_hash: [7; 32],
            expires_ms: 0,
            bootstrap: false,
        };
        assert!(matches!(h.run("", bad).outcome, Err(WriteError::Invalid { field, .. }) if field == "namespaces"));

        let audit = h.audit();
        let actions: Vec<(&str, &str)> = audit.iter().map(|e| (e.action.as_str(), e.key.as_str())).collect();
        assert_eq!(actions, [("token.create", "root"), ("token.create", "ci"), ("token.revoke", "root")]);
        assert!(audit.iter().all(|e| {
            let text = format!("{:?}{:?}", e.before, e.after);
            !text.contains("hash") && !text.contains("s1")
        }));
        let mut chain = ChainVerifier::new();
        for e in &audit {
            chain.push(e).expect("the chain verifies");
        }
    }

    #[test]
    fn a_nospace_alarm_refuses_growth_on_every_replica_until_cleared() {
        let mut h = Harness::new();
        let nodes: BTreeMap<u64, crate::types::NodeInfo> =
            (1..=3).map(|id| (id, crate::types::NodeInfo::new("", ""))).collect();
        let voters = vec![nodes.keys().copied().collect::<BTreeSet<u64>>()];
        h.st.membership = StoredMembership::new(None, openraft::Membership::new(voters, nodes));
        assert!(h.run("", create("f", ON)).outcome.is_ok());
        let raise = |node_id| Command::RaiseAlarm { node_id, reason: "under storage.free_bytes_min".into() };
        // A node that is not a member cannot turn the cluster read-only.
        assert!(h.run("", raise(9)).outcome.is_ok());
        assert!(h.st.alarms.is_empty());
        assert!(h.run("", raise(2)).outcome.is_ok());
        // Raised once: a second raise of the same node's alarm records nothing.
        let entries = h.audit().len();
        assert!(h.run("", raise(2)).outcome.is_ok());
        assert_eq!(h.audit().len(), entries);
        assert_eq!(h.st.alarms.keys().copied().collect::<Vec<_>>(), vec![2]);
        // It is stored, so a restarted replica (or one restored from a snapshot) has it too.
        assert_eq!(SmState::load(&h.kv).expect("load").alarms, h.st.alarms);

        let refused = h.run("r-1", create("g", ON)).outcome;
        assert!(matches!(&refused, Err(WriteError::NoSpace { alarms }) if alarms.contains("node 2")), "{refused:?}");
        let update = Command::UpdateFlag {
            namespace: "ns".into(),
            key: "f".into(),
            spec_json: canonical("f", ON),
            expected_version: None,
        };
        assert!(matches!(h.run("", update.clone()).outcome, Err(WriteError::NoSpace { .. })));
        // What does not grow the state goes on: the kill switch, deletes.
        let off = Command::SetFlagState {
            namespace: "ns".into(),
            key: "f".into(),
            state: FlagState::Disabled,
            expected_version: None,
        };
        assert!(h.run("", off).outcome.is_ok());
        assert!(
            h.run("", Command::DeleteFlag { namespace: "ns".into(), key: "f".into(), expected_version: None })
                .outcome
                .is_ok()
        );

        let cleared = h.run("", Command::ClearAlarms).outcome;
        assert!(matches!(&cleared, Ok(Outcome::AlarmsCleared(c)) if c.len() == 1 && c[0].node_id == 2), "{cleared:?}");
        assert!(h.st.alarms.is_empty() && SmState::load(&h.kv).expect("load").alarms.is_empty());
        // The refused request keeps its answer (deduplicated); a new request applies.
        assert!(matches!(h.run("r-1", create("g", ON)).outcome, Err(WriteError::NoSpace { .. })));
        assert!(h.run("r-2", create("g", ON)).outcome.is_ok());
        let actions: Vec<AuditAction> = h.audit().iter().map(|e| e.action).collect();
        assert!(
            actions.contains(&AuditAction::AlarmRaise) && actions.contains(&AuditAction::AlarmClear),
            "{actions:?}"
        );
        let mut chain = ChainVerifier::new();
        for e in &h.audit() {
            chain.push(e).expect("the chain verifies");
        }
    }

    #[test]
    fn compaction_removes_a_prefix_behind_a_checkpoint_the_chain_verifies_from() {
        let mut h = Harness::new();
        for i in 0..10 {
            assert!(h.run("", create(&format!("f{i}"), ON)).outcome.is_ok());
        }
        let full = h.audit();
        let compact = |seq: u64, revision: u64| Command::CompactAudit { through_seq: seq, through_revision: revision };
        // Refused, naming the field, with nothing changed: past the head, or an entry not there.
        let past = h.run("", compact(11, 11)).outcome;
        assert!(matches!(&past, Err(WriteError::Invalid { field, .. }) if field == "through_seq"), "{past:?}");
        let wrong = h.run("", compact(4, 9)).outcome;
        assert!(matches!(&wrong, Err(WriteError::Invalid { field, .. }) if field == "through_revision"), "{wrong:?}");
        assert_eq!(h.audit(), full);

        let cut = &full[3];
        let done = h.run("c-1", compact(4, cut.revision)).outcome;
        let checkpoint = Checkpoint { seq: 4, revision: cut.revision, hash: cut.hash };
        assert_eq!(done, Ok(Outcome::AuditCompacted { checkpoint, removed: 4 }));
        let kept = h.audit();
        assert_eq!(kept.first().map(|e| e.seq), Some(5), "entries 1..=4 are gone");
        assert_eq!(kept.last().map(|e| e.action), Some(AuditAction::AuditCheckpoint));
        let mut v = ChainVerifier::from_checkpoint(checkpoint);
        kept.iter().try_for_each(|e| v.push(e)).expect("the rest verifies from the checkpoint");
        v.finish().expect("and the checkpoint entry names the cut");
        // At or behind the checkpoint: nothing more to do, nothing audited.
        let again = h.run("", compact(2, full[1].revision)).outcome;
        assert_eq!(again, Ok(Outcome::AuditCompacted { checkpoint, removed: 0 }));
        assert_eq!(h.audit(), kept);
        // Compaction shrinks the state, so it goes on while an alarm stands; a later cut that
        // removes the first checkpoint entry too still verifies from the new checkpoint.
        h.st.alarms.insert(1, Alarm { node_id: 1, reason: "test".into(), revision: 1, time_ms: 0 });
        let head = kept.last().cloned().expect("head");
        let later = h.run("", compact(head.seq, head.revision)).outcome;
        assert!(matches!(later, Ok(Outcome::AuditCompacted { removed: 7, .. })), "{later:?}");
        let last = h.audit();
        assert_eq!(last.len(), 1, "only the new checkpoint entry remains: {last:?}");
        let cp = Checkpoint::from_entry(&last[0]).expect("a checkpoint entry");
        let mut v = ChainVerifier::from_checkpoint(cp);
        v.push(&last[0]).expect("links to the cut");
        v.finish().expect("names it");
    }

    #[test]
    fn namespace_settings_merge_in_apply_and_refusals_change_nothing() {
        let mut h = Harness::new();
        let set =
            |ns: &str, change: &str| Command::SetNamespaceSettings { namespace: ns.into(), change_json: change.into() };
        let stored = |h: &Harness| -> Option<NamespaceSettings> {
            Txn::new(&h.kv).get_decoded(Table::Meta, &namespace_settings_key("web")).expect("read")
        };
        assert!(h.run("", set("web", r#"{"fractional": "cbor-murmur3"}"#)).outcome.is_ok());
        // A second change naming another setting keeps the first (merged at apply).
        assert!(h.run("", set("web", r#"{"strict": true}"#)).outcome.is_ok());
        let both = NamespaceSettings { fractional: vexil_model::eval::FractionalAlgorithm::CborMurmur3, strict: true };
        assert_eq!(stored(&h), Some(both));
        let entry = h.audit().last().cloned().expect("audited");
        assert_eq!(entry.action, AuditAction::NamespaceSettings);
        assert_eq!(entry.before.as_deref(), Some(r#"{"fractional":"cbor-murmur3","strict":false}"#));
        assert_eq!(entry.after.as_deref(), Some(r#"{"fractional":"cbor-murmur3","strict":true}"#));
        // The same again: no change, no entry.
        let seqs = h.audit().len();
        assert!(h.run("", set("web", r#"{"strict": true}"#)).outcome.is_ok());
        assert_eq!(h.audit().len(), seqs);
        // Refusals name the field and change nothing.
        for (change, field) in [(r#"{"strict": 1}"#, "strict"), (r#"{"shade": 1}"#, "shade"), ("[1]", "settings")] {
            let out = h.run("", set("web", change)).outcome;
            assert!(matches!(&out, Err(WriteError::Invalid { field: f, .. }) if f == field), "{change}: {out:?}");
        }
        assert_eq!((stored(&h), h.audit().len()), (Some(both), seqs));
        // Back to the defaults: the key goes.
        assert!(h.run("", set("web", r#"{"strict": false, "fractional": "murmur3-scaled"}"#)).outcome.is_ok());
        assert_eq!(stored(&h), None);
    }

    #[test]
    fn anonymous_read_is_a_bounded_audited_setting_of_a_namespace() {
        let mut h = Harness::new();
        let set = |ns: &str, enabled: bool| Command::SetAnonymousRead { namespace: ns.into(), enabled };
        let open = |h: &Harness| -> BTreeSet<String> {
            Txn::new(&h.kv).get_decoded(Table::Meta, META_ANONYMOUS_READ).expect("read").unwrap_or_default()
        };
        assert!(h.run("", set("public", true)).outcome.is_ok());
        assert_eq!(open(&h), BTreeSet::from(["public".to_string()]));
        let entry = h.audit().last().cloned().expect("audited");
        assert_eq!(
            (entry.action, entry.namespace.as_str(), entry.actor.as_str()),
            (AuditAction::NamespaceAccess, "public", "alice")
        );
        assert_eq!(entry.before.as_deref(), Some(r#"{"anonymous_read":false}"#));
        assert_eq!(entry.after.as_deref(), Some(r#"{"anonymous_read":true}"#));
        // Setting it to what it is changes nothing and records nothing.
        let entries = h.audit().len();
        assert!(h.run("", set("public", true)).outcome.is_ok());
        assert_eq!(h.audit().len(), entries);
        // A bad name is refused naming the field.
        let bad = h.run("", set("Not OK", true)).outcome;
        assert!(matches!(&bad, Err(WriteError::Invalid { field, .. }) if field == "namespace"), "{bad:?}");
        // At most ANONYMOUS_READ_NAMESPACES_MAX namespaces, and nothing written past it.
        for i in 1..limits::ANONYMOUS_READ_NAMESPACES_MAX {
            assert!(h.run("", set(&format!("ns{i}"), true)).outcome.is_ok());
        }
        let full = h.run("", set("one-more", true)).outcome;
        assert!(
            matches!(&full, Err(WriteError::LimitReached { limit, .. }) if limit == "ANONYMOUS_READ_NAMESPACES_MAX"),
            "{full:?}"
        );
        assert!(!open(&h).contains("one-more"));
        // Turning it off removes it; the last one off leaves no key behind.
        for ns in open(&h) {
            assert!(h.run("", set(&ns, false)).outcome.is_ok());
        }
        assert!(Txn::new(&h.kv).get(Table::Meta, META_ANONYMOUS_READ).expect("read").is_none());
        assert_eq!(h.audit().last().and_then(|e| e.after.clone()).as_deref(), Some(r#"{"anonymous_read":false}"#));
    }
}
