//! The checkers, cheapest first. Each returns human-readable violations; an empty list means
//! the run is correct.
//!
//! 1. Provenance: every value a read returned was written by an op that did not definitely
//!    fail, with the version and revision that write reported.
//! 2. Per-client monotonic revisions for acknowledged writes and linearizable reads.
//! 3. Linearizability per key of writes and `linearizable` reads (Wing–Gong search), then the
//!    same with `lease` reads added under the lease bound.
//! 4. The audit logs of all members after the heal: identical, hash chain valid, and every
//!    acknowledged write present at its revision (no acknowledged write lost), no definitely
//!    failed write present, no request applied twice (retried writes keep their request id).
//! 5. The change feed as the watchers received it ([`feed`]): in order, true to what was
//!    written, every `Progress` vouching only for what was delivered, and each acknowledged
//!    write reaching every watcher within the delivery bound unless that watcher knew itself
//!    stale.
//! 6. Change control ([`change_control`]), from the audit log after the heal and what the
//!    change-control clients were told: a change request applies at most once, only in the
//!    approval that completes it, never when a flag it was based on had changed, and only with
//!    enough approvals by distinct reviewers other than its author.

use std::collections::{BTreeMap, BTreeSet};

use vexil_model::{AuditAction, AuditEntry, ChainVerifier};
use vexil_proto::v1 as pb;
use vexil_raft_store::NodeId;

use crate::changes::{ChangeCall, ChangeOp, ChangeRet, GOVERNED};
use crate::cluster::{PROGRESS_INTERVAL_MS, READ_LEASE_MS};
use crate::history::{Level, Micros, Op, OpKind, Ret};
use crate::linearizability::{self, ModelOp, ModelRet, TimedOp, ValueIds, Verdict};
use crate::nemesis::BASE_MAX_LATENCY;
use crate::watchers::{Delivered, MAX_STALENESS, WatchEvent, WatchLog};
use crate::workload::{Finale, NAMESPACE};

/// Slack added to the lease bound: simulated hosts advance in 1 ms ticks.
pub const LEASE_SLACK_US: i64 = 2_000;

/// A checker's finding, tagged by checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub checker: &'static str,
    pub detail: String,
}

fn violation(checker: &'static str, detail: impl Into<String>) -> Violation {
    Violation { checker, detail: detail.into() }
}

/// Every value read was written (by an op that did not definitely fail), with matching
/// version and revision when the write was acknowledged.
pub fn provenance(ops: &[Op]) -> Vec<Violation> {
    let mut writers: BTreeMap<(&str, &str), &Op> = BTreeMap::new();
    for op in ops {
        if let Some(v) = op.kind.written_value() {
            writers.insert((op.key.as_str(), v), op);
        }
    }
    let mut out = Vec::new();
    for op in ops {
        let Some((_, Ret::Read { flag: Some(seen), .. })) = &op.ret else { continue };
        match writers.get(&(op.key.as_str(), seen.value.as_str())) {
            None => out.push(violation("provenance", format!("read returned a value nobody wrote: {op}"))),
            Some(w) => match &w.ret {
                Some((_, Ret::Written { version, revision }))
                    if (*version, *revision) != (seen.version, seen.mod_revision) =>
                {
                    out.push(violation(
                        "provenance",
                        format!("read saw version {} revision {} of a write that reported version {version} revision {revision}: {op} / {w}", seen.version, seen.mod_revision),
                    ))
                }
                Some((_, r)) if r.is_definite() && !matches!(r, Ret::Written { .. }) => out.push(violation(
                    "provenance",
                    format!("read saw the value of a write that definitely failed: {op} / {w}"),
                )),
                _ => {}
            },
        }
    }
    out
}

/// Per client, the revisions of acknowledged writes and linearizable reads never go back.
pub fn monotonic(ops: &[Op]) -> Vec<Violation> {
    let mut last: BTreeMap<&str, (u64, &Op)> = BTreeMap::new();
    let mut out = Vec::new();
    for op in ops {
        let revision = match (&op.kind, &op.ret) {
            (_, Some((_, Ret::Written { revision, .. }))) => *revision,
            (OpKind::Read { level: Level::Linearizable }, Some((_, Ret::Read { flag: Some(_), revision, .. }))) => {
                *revision
            }
            _ => continue,
        };
        if let Some((prev, prev_op)) = last.get(op.client.as_str())
            && revision < *prev
        {
            out.push(violation(
                "monotonic",
                format!("revision went back from {prev} ({prev_op}) to {revision} ({op})"),
            ));
        }
        last.insert(&op.client, (revision, op));
    }
    out
}

/// Which writes took effect, from the audit log after the heal: a write of unknown outcome took
/// effect exactly when its request id is audited. `None` when no complete audit log was read.
pub type Applied = Option<BTreeSet<String>>;

/// The model's view of one key's ops; `lease_us = None` leaves `lease` reads out. With `applied`,
/// writes of unknown outcome become definite: ones never audited are left out (they did not
/// take effect), audited ones must be placed.
fn model_ops(ops: &[&Op], lease_us: Option<i64>, applied: &Applied) -> Vec<TimedOp> {
    let mut ids = ValueIds::default();
    let mut out = Vec::new();
    for op in ops {
        let (invoke, ret) = (op.invoke as i64, op.ret.as_ref().map(|(t, r)| (*t as i64, r)));
        let model = match &op.kind {
            OpKind::Read { level } => {
                let Some((t, Ret::Read { flag, .. })) = ret else { continue };
                let shift = match (level, lease_us) {
                    (Level::Linearizable, _) => 0,
                    (Level::Lease, Some(lease)) => lease + LEASE_SLACK_US,
                    _ => continue,
                };
                let seen = flag.as_ref().map(|f| (ids.id(&f.value), f.version));
                let read = ModelOp::Read { seen };
                out.push(TimedOp {
                    id: op.id,
                    invoke: invoke - shift,
                    ret: Some(t),
                    op: read,
                    result: ModelRet::ReadDone,
                    took_effect: false,
                });
                continue;
            }
            OpKind::Create { value } => ModelOp::Create { value: ids.id(value) },
            OpKind::Update { value, expected } => ModelOp::Update { value: ids.id(value), expected: *expected },
            OpKind::Delete { expected } => ModelOp::Delete { expected: *expected },
        };
        let definite = |result| (result, ret.map(|(t, _)| t), false);
        let (result, ret, took_effect) = match ret.map(|(_, r)| r) {
            Some(Ret::Written { version, .. }) => definite(ModelRet::Ok { version: *version }),
            Some(Ret::NotFound) => definite(ModelRet::NotFound),
            Some(Ret::Exists) => definite(ModelRet::Exists),
            Some(Ret::VersionMismatch { current }) => definite(ModelRet::Mismatch { current: *current }),
            // Unknown outcome: open until the end, unless the audit log settles it.
            _ => match applied {
                Some(audited) if audited.contains(&op.request_id) => (ModelRet::Open, None, true),
                Some(_) => continue,
                None => (ModelRet::Open, None, false),
            },
        };
        out.push(TimedOp { id: op.id, invoke, ret, op: model, result, took_effect });
    }
    out
}

fn describe(ops: &[Op], key: &str, f: &linearizability::Failure) -> String {
    let by_id: BTreeMap<usize, &Op> = ops.iter().map(|o| (o.id, o)).collect();
    let mut s = format!(
        "key {key}: no linearization; placed {} ops, ending in state {:?}; none of these fits next:",
        f.placed.len(),
        f.state
    );
    for id in &f.stuck {
        if let Some(op) = by_id.get(id) {
            s.push_str(&format!("\n    {op}"));
        }
    }
    if let Some(last) = f.placed.last().and_then(|id| by_id.get(id)) {
        s.push_str(&format!("\n  last placed: {last}"));
    }
    s
}

/// A search that gave up proves nothing: the run fails rather than passing unchecked.
fn budget_exhausted(key: &str, ops: usize) -> String {
    format!(
        "the search for {key} ({ops} ops) explored {} configurations without a verdict",
        linearizability::SEARCH_BUDGET
    )
}

/// Linearizability per key; then the lease bound for `lease` reads.
pub fn linearizable(ops: &[Op], lease_ms: u64, applied: &Applied) -> (Vec<Violation>, usize) {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut out = Vec::new();
    let mut inconclusive = 0;
    for (key, key_ops) in by_key {
        match linearizability::check(&model_ops(&key_ops, None, applied)) {
            Verdict::NotLinearizable(f) => {
                out.push(violation("linearizability", describe(ops, key, &f)));
                continue;
            }
            Verdict::Inconclusive => {
                inconclusive += 1;
                out.push(violation("linearizability-budget", budget_exhausted(key, key_ops.len())));
                continue;
            }
            Verdict::Linearizable => {}
        }
        match linearizability::check(&model_ops(&key_ops, Some(lease_ms as i64 * 1000), applied)) {
            Verdict::NotLinearizable(f) => out.push(violation("lease-bound", describe(ops, key, &f))),
            Verdict::Inconclusive => {
                inconclusive += 1;
                out.push(violation("linearizability-budget", budget_exhausted(key, key_ops.len())));
            }
            Verdict::Linearizable => {}
        }
    }
    (out, inconclusive)
}

fn from_proto(e: &pb::AuditEntry) -> Result<AuditEntry, String> {
    let hash = |b: &[u8]| <[u8; 32]>::try_from(b).map_err(|_| format!("seq {}: hash is not 32 bytes", e.seq));
    Ok(AuditEntry {
        seq: e.seq,
        revision: e.revision,
        time_ms: e.time_ms,
        version: e.version,
        actor: e.actor.clone(),
        action: AuditAction::parse(&e.action).ok_or_else(|| format!("seq {}: unknown action {}", e.seq, e.action))?,
        namespace: e.namespace.clone(),
        key: e.key.clone(),
        before: e.before.clone(),
        after: e.after.clone(),
        reason: e.reason.clone(),
        request_id: e.request_id.clone(),
        prev_hash: hash(&e.prev_hash)?,
        hash: hash(&e.hash)?,
    })
}

/// The audit logs after the heal: identical on every member, chain valid, and in agreement with
/// what clients were told.
pub fn audit(ops: &[Op], finale: &Finale) -> Vec<Violation> {
    let mut out = Vec::new();
    for (node, key) in &finale.unrecovered {
        out.push(violation("recovery", format!("after the heal, node {node} served no read of {key}")));
    }
    let mut reference: Option<(NodeId, &Vec<pb::AuditEntry>)> = None;
    for (node, log) in &finale.audit {
        let log = match log {
            Ok(log) => log,
            Err(e) => {
                out.push(violation("recovery", format!("node {node}: audit log unreadable after the heal: {e}")));
                continue;
            }
        };
        let mut verifier = ChainVerifier::new();
        for e in log {
            match from_proto(e).map(|entry| verifier.push(&entry).map_err(|err| err.to_string())) {
                Ok(Ok(())) => {}
                Ok(Err(err)) | Err(err) => {
                    out.push(violation("audit-chain", format!("node {node}: {err}")));
                    break;
                }
            }
        }
        match reference {
            None => reference = Some((*node, log)),
            Some((ref_node, ref_log)) if ref_log != log => {
                let at =
                    ref_log.iter().zip(log.iter()).position(|(a, b)| a != b).unwrap_or(ref_log.len().min(log.len()));
                out.push(violation(
                    "audit-identical",
                    format!(
                        "nodes {ref_node} and {node} differ at entry {at} ({} vs {} entries up to revision {})",
                        ref_log.len(),
                        log.len(),
                        finale.revision
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let Some((node, log)) = reference else { return out };
    // One request may write several entries, all at its revision (a change request's approval
    // writes the change's entries under `change/<id>`): taking effect twice is two revisions.
    let mut audited: BTreeMap<&str, &pb::AuditEntry> = BTreeMap::new();
    for e in log.iter().filter(|e| e.namespace == NAMESPACE && !e.request_id.is_empty()) {
        match audited.get(e.request_id.as_str()) {
            None => {
                audited.insert(e.request_id.as_str(), e);
            }
            Some(first) if first.revision != e.revision => out.push(violation(
                "applied-twice",
                format!("request {} took effect at revisions {} and {}", e.request_id, first.revision, e.revision),
            )),
            Some(_) => {}
        }
    }
    let mut seen_ids = BTreeSet::new();
    for op in ops {
        if !op.kind.is_write() {
            continue;
        }
        seen_ids.insert(op.request_id.as_str());
        let entry = audited.get(op.request_id.as_str());
        match (&op.ret, entry) {
            (Some((_, Ret::Written { .. })), None) => out.push(violation(
                "lost-write",
                format!("acknowledged write missing from node {node}'s audit log after the heal: {op}"),
            )),
            (Some((_, Ret::Written { revision, .. })), Some(e)) if e.revision != *revision => out.push(violation(
                "lost-write",
                format!("acknowledged at revision {revision} but audited at {}: {op}", e.revision),
            )),
            (Some((_, r)), Some(e)) if r.is_definite() && !matches!(r, Ret::Written { .. }) => out.push(violation(
                "audit-agreement",
                format!("a write that definitely failed is audited at revision {}: {op}", e.revision),
            )),
            (_, Some(e)) if e.key != op.key || e.namespace != NAMESPACE => out.push(violation(
                "audit-agreement",
                format!("audited under {}/{} but sent for {}: {op}", e.namespace, e.key, op.key),
            )),
            _ => {}
        }
    }
    for id in audited.keys() {
        if !seen_ids.contains(id) {
            out.push(violation("audit-agreement", format!("audit entry for a request nobody sent: {id}")));
        }
    }
    out
}

/// The audit actions that change a flag (and its `mod_revision`).
const FLAG_WRITES: [&str; 4] = ["flag.create", "flag.update", "flag.set_state", "flag.delete"];

/// The request id of the entries a change request writes when it applies.
fn change_of(request_id: &str) -> Option<u64> {
    request_id.strip_prefix("change/").and_then(|id| id.parse().ok())
}

fn after_json(e: &pb::AuditEntry) -> serde_json::Value {
    e.after.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default()
}

/// One change request as its audit entries tell it.
#[derive(Default)]
struct ChangeSeen<'a> {
    proposed: Option<&'a pb::AuditEntry>,
    approvers: Vec<&'a str>,
    /// The revision of the approval that applied it.
    applied: Option<u64>,
    /// Rejected or cancelled, at this revision.
    closed: Option<u64>,
    flag_revisions: BTreeSet<u64>,
}

/// Change control, from the audit log after the heal (the first readable member's: [`audit`]
/// checks they are all the same) and the change-control clients' calls:
/// - applied once, by its approval: the flag entries of change N (request id `change/N`) are
///   all at one revision, behind a `change.approve` of N with `applies: true` in that same
///   revision; nothing approves, rejects or applies a change after it applied or closed;
/// - never stale: when change N applies, each flag it was based on (`bases` of its
///   `change.propose`: key and `mod_revision`) was not written between the proposal and the
///   applying approval (by audit seq: several writes can share a revision), and was last
///   written at exactly that revision — or, for a base of 0, is absent again (never written,
///   or last deleted);
/// - approvals: each approval is of a proposed change, by an actor who had not approved it yet
///   and (unless the namespace's policy lets authors approve) is not its author; it counts no
///   more approvals than that, and the one that applies the change at least the required ones;
/// - held for approval: where the namespace's policy covers every flag, every flag entry is a
///   change's (or follows a break-glass marker in its revision);
/// - once per request id: a proposal's or approval's request id is audited at one revision,
///   however often the client sent it;
/// - agreement with the clients: an acknowledged proposal is that change's `change.propose`,
///   at the revision and by the principal the client was told and called as; an acknowledged
///   approval is a `change.approve` of that change there, with the approvals and status the
///   client was told; a refused call left no entry; no entry of [`GOVERNED`] has a request id
///   nobody sent; and no write there applied without a request.
pub fn change_control(finale: &Finale, calls: &[ChangeOp]) -> Vec<Violation> {
    let Some(log) = finale.audit.values().find_map(|l| l.as_ref().ok()) else { return vec![] };
    let mut found: Vec<String> = Vec::new();
    let mut changes: BTreeMap<u64, ChangeSeen<'_>> = BTreeMap::new();
    // The policy of each namespace, as the log has it so far.
    let mut policies: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    // Per (namespace, key): its last flag write so far, and whether that deleted it.
    // Each flag's last write: its revision, whether it was a delete, and its audit seq.
    let mut written: BTreeMap<(&str, &str), (u64, bool, u64)> = BTreeMap::new();
    let mut break_glass: Option<(u64, &str, &str)> = None;
    let mut by_request: BTreeMap<&str, Vec<&pb::AuditEntry>> = BTreeMap::new();
    for e in log {
        let action = e.action.as_str();
        let (ns, key) = (e.namespace.as_str(), e.key.as_str());
        let after = after_json(e);
        let id = after.get("change").and_then(|c| c.as_u64()).unwrap_or_default();
        if (action.starts_with("change.") || FLAG_WRITES.contains(&action))
            && !e.request_id.is_empty()
            && change_of(&e.request_id).is_none()
        {
            let same = by_request.entry(e.request_id.as_str()).or_default();
            if let Some(first) = same.first()
                && first.revision != e.revision
            {
                found.push(format!(
                    "request {} took effect at revisions {} and {}",
                    e.request_id, first.revision, e.revision
                ));
            }
            same.push(e);
        }
        match action {
            "namespace.policy" => {
                match &e.after {
                    Some(_) => policies.insert(ns, after.clone()),
                    None => policies.remove(ns),
                };
            }
            "change.propose" => {
                let c = changes.entry(id).or_default();
                if let Some(first) = c.proposed {
                    found.push(format!("change {id} proposed at revisions {} and {}", first.revision, e.revision));
                }
                c.proposed = Some(e);
            }
            "change.reject" | "change.cancel" => {
                let c = changes.entry(id).or_default();
                if c.applied.is_some() || c.closed.is_some() {
                    found.push(format!("change {id}: {action} at revision {} after it was closed", e.revision));
                }
                c.closed = Some(e.revision);
            }
            "change.approve" => {
                let c = changes.entry(id).or_default();
                let at = e.revision;
                let Some(proposed) = c.proposed else {
                    found.push(format!("change {id} approved at revision {at} but never proposed"));
                    continue;
                };
                if let Some(closed) = c.applied.or(c.closed) {
                    found.push(format!("change {id} approved at revision {at}, after it closed at {closed}"));
                }
                let policy = policies.get(ns).and_then(|p| p.get("approval"));
                let author_may = policy.and_then(|a| a.get("author_may_approve")).and_then(|b| b.as_bool());
                if e.actor == proposed.actor && author_may != Some(true) {
                    found.push(format!("change {id} approved at revision {at} by its author {}", e.actor));
                }
                if c.approvers.contains(&e.actor.as_str()) {
                    found.push(format!("change {id} approved twice by {} (again at revision {at})", e.actor));
                } else {
                    c.approvers.push(&e.actor);
                }
                let approvals = after.get("approvals").and_then(|a| a.as_u64()).unwrap_or_default();
                let required = after.get("required").and_then(|a| a.as_u64()).unwrap_or_default();
                if approvals > c.approvers.len() as u64 {
                    found.push(format!(
                        "change {id} counts {approvals} approvals at revision {at}, but only {:?} approved it",
                        c.approvers
                    ));
                }
                if after.get("applies").and_then(|a| a.as_bool()) != Some(true) {
                    continue;
                }
                if approvals < required {
                    found
                        .push(format!("change {id} applied at revision {at} with {approvals} of {required} approvals"));
                }
                if c.applied.is_none() {
                    c.applied = Some(at);
                }
                // Every flag the change was based on must be as it was then (the log up to
                // here is everything before the approval, in the same revision too).
                let bases = after_json(proposed).get("bases").and_then(|b| b.as_array()).cloned().unwrap_or_default();
                for base in bases {
                    let base_key = base.get("key").and_then(|k| k.as_str()).unwrap_or_default();
                    let then = base.get("mod_revision").and_then(|r| r.as_u64()).unwrap_or_default();
                    // "" is the namespace's own record (a whole-document change): not audited
                    // with revisions this checker tracks.
                    if base_key.is_empty() {
                        continue;
                    }
                    let last = written.get(&(proposed.namespace.as_str(), base_key));
                    let now = match last {
                        None | Some((_, true, _)) => 0,
                        Some((revision, false, _)) => *revision,
                    };
                    // Exact, whatever shares a revision: no write of a flag that existed between
                    // the proposal and this approval. A flag absent then and absent again counts
                    // as unchanged (as a compare of etcd's mod_revision 0 does).
                    let since = then != 0 && last.is_some_and(|(_, _, seq)| *seq > proposed.seq);
                    if now != then || since {
                        found.push(format!(
                            "change {id} applied at revision {at} although stale: it was based on flag {base_key:?} \
                             at revision {then}, which was last written at revision {now}"
                        ));
                    }
                }
            }
            "flag.break_glass" => break_glass = Some((e.revision, ns, key)),
            _ if FLAG_WRITES.contains(&action) => {
                match change_of(&e.request_id) {
                    Some(id) => {
                        let c = changes.entry(id).or_default();
                        c.flag_revisions.insert(e.revision);
                        if c.applied != Some(e.revision) {
                            found.push(format!(
                                "change {id} wrote {action} {ns}/{key} at revision {} without an approval applying it \
                                 there (applied at {:?})",
                                e.revision, c.applied
                            ));
                        }
                    }
                    None => {
                        let covers = policies.get(ns).and_then(|p| p.get("approval")).and_then(|a| a.get("covers"));
                        if covers.and_then(|c| c.as_str()) == Some("namespace")
                            && break_glass != Some((e.revision, ns, key))
                        {
                            found.push(format!(
                                "{action} {ns}/{key} applied at revision {} without approval (request {:?}), although \
                                 the namespace's policy covers every flag",
                                e.revision, e.request_id
                            ));
                        }
                    }
                }
                written.insert((ns, key), (e.revision, action == "flag.delete", e.seq));
            }
            _ => {}
        }
    }
    for (id, c) in &changes {
        if c.flag_revisions.len() > 1 {
            found.push(format!("change {id} applied at revisions {:?}", c.flag_revisions));
        }
    }

    // What the clients were told.
    let sent: BTreeSet<&str> = calls.iter().map(|c| c.request_id.as_str()).collect();
    for (request_id, entries) in &by_request {
        if entries.iter().any(|e| e.namespace == GOVERNED) && !sent.contains(request_id) {
            found.push(format!("audit entry for a request nobody sent: {request_id}"));
        }
    }
    for op in calls {
        let Some((_, ret)) = &op.ret else { continue };
        // Acknowledged after the audit logs were read (a call still in flight then).
        if op.acknowledged_revision().is_some_and(|r| r > finale.revision) {
            continue;
        }
        let entries = by_request.get(op.request_id.as_str()).map(Vec::as_slice).unwrap_or_default();
        let told = |action: &str, revision: u64, change: u64| {
            entries.iter().find(|e| {
                e.action == action
                    && e.revision == revision
                    && e.actor == op.principal
                    && after_json(e).get("change").and_then(|c| c.as_u64()) == Some(change)
            })
        };
        match (ret, &op.call) {
            (ChangeRet::Opened { change, revision }, _) if told("change.propose", *revision, *change).is_none() => {
                found.push(format!("told it opened change {change} at revision {revision}, not audited so: {op}"));
            }
            (ChangeRet::Applied { revision }, _) => {
                found.push(format!("a write applied at revision {revision} without a change request: {op}"))
            }
            (ChangeRet::Reviewed { status, approvals, revision }, ChangeCall::Approve { change }) => {
                let entry = told("change.approve", *revision, *change).map(|e| after_json(e));
                let matches = entry.is_some_and(|a| {
                    a.get("approvals").and_then(|x| x.as_u64()) == Some(u64::from(*approvals))
                        && a.get("applies").and_then(|x| x.as_bool()) == Some(status == "applied")
                });
                if !matches {
                    found.push(format!(
                        "told {status} with {approvals} approvals at revision {revision}, not audited so: {op}"
                    ));
                }
            }
            (ChangeRet::Refused { .. }, _) if !entries.is_empty() => {
                found.push(format!("refused, yet audited at revision {}: {op}", entries[0].revision));
            }
            _ => {}
        }
    }
    found.into_iter().map(|d| violation("change-control", d)).collect()
}

/// How long after it is acknowledged a write has reached every watcher, unless that watcher
/// knew itself stale: the watcher's `max_staleness` plus how old a `Progress` may be
/// ([`progress_age_max`]).
pub fn delivery_bound() -> Micros {
    MAX_STALENESS.as_micros() as Micros + progress_age_max()
}

/// What a `Progress` that arrives at T vouches for: every write acknowledged before T minus
/// this. The node began confirming at most two progress intervals before it sent it (the lease
/// probe and the wait for the confirmed revision to apply are each bounded by one interval);
/// what it confirmed holds every write acknowledged before that moment minus the read lease;
/// and the message crossed one client link.
pub fn progress_age_max() -> Micros {
    1_000 * (READ_LEASE_MS + 2 * PROGRESS_INTERVAL_MS)
        + BASE_MAX_LATENCY.as_micros() as Micros
        + LEASE_SLACK_US as Micros
}

/// An acknowledged write, as the feed must show it.
struct Acked<'a> {
    op: &'a Op,
    at: Micros,
    revision: u64,
}

/// The change feed against the history, per watcher:
/// - order: change batches arrive in strictly increasing revisions across all of a watcher's
///   streams (a resumed stream neither repeats nor goes back);
/// - content: every delivered change is a write some client sent, of that key, and an
///   acknowledged write arrives at its revision with its value;
/// - progress: a `Progress` arriving at T carries a revision at least that of every write
///   acknowledged before T − [`progress_age_max`], each of which arrived before it;
/// - delivery bound: [`delivery_bound`] after a write is acknowledged, each watcher has received
///   it or is stale (no `Progress` within `MAX_STALENESS`) — never neither;
/// - recovery: when the run ends (healed and settled) every watcher is confirmed and has
///   received every acknowledged write.
pub fn feed(ops: &[Op], watches: &[WatchLog]) -> Vec<Violation> {
    let mut acked: Vec<Acked<'_>> = ops
        .iter()
        .filter(|o| o.kind.is_write())
        .filter_map(|op| match &op.ret {
            Some((at, Ret::Written { revision, .. })) => Some(Acked { op, at: *at, revision: *revision }),
            _ => None,
        })
        .collect();
    acked.sort_by_key(|a| a.at);
    // A batched entry applies several writes at one revision.
    let mut by_revision: BTreeMap<u64, Vec<&Acked<'_>>> = BTreeMap::new();
    for a in &acked {
        by_revision.entry(a.revision).or_default().push(a);
    }
    let by_value: BTreeMap<&str, &Op> = ops.iter().filter_map(|o| o.kind.written_value().map(|v| (v, o))).collect();
    let mut out = Vec::new();
    for w in watches {
        let mut push = |checker: &'static str, detail: String| {
            out.push(violation(checker, format!("watcher {}: {detail}", w.name)));
        };
        // Arrival time of each revision's batch, and of each progress.
        let mut arrived: BTreeMap<u64, Micros> = BTreeMap::new();
        let mut progress: Vec<(Micros, u64)> = Vec::new();
        let mut last_revision = 0;
        for (at, e) in &w.events {
            match e {
                WatchEvent::Changes { revision, changes } => {
                    if *revision <= last_revision {
                        push("feed-order", format!("revision {revision} arrived after revision {last_revision}"));
                    }
                    last_revision = last_revision.max(*revision);
                    arrived.entry(*revision).or_insert(*at);
                    for c in changes {
                        let sent = match &c.value {
                            Some(v) => by_value.get(v.as_str()).is_some_and(|o| o.key == c.key),
                            None => ops.iter().any(|o| o.key == c.key && matches!(o.kind, OpKind::Delete { .. })),
                        };
                        if !sent {
                            push("feed-content", format!("revision {revision} delivered {c:?}, which nobody wrote"));
                        }
                    }
                    for a in by_revision.get(revision).into_iter().flatten() {
                        let expected =
                            Delivered { key: a.op.key.clone(), value: a.op.kind.written_value().map(str::to_string) };
                        if !changes.contains(&expected) {
                            push("feed-content", format!("revision {revision} delivered {changes:?}, not {}", a.op));
                        }
                    }
                }
                WatchEvent::Progress { revision } => progress.push((*at, *revision)),
                _ => {}
            }
        }
        // The first progress that vouched for too much (later ones mostly repeat it).
        'progress: for &(at, revision) in &progress {
            let vouched = at.saturating_sub(progress_age_max());
            for a in acked.iter().take_while(|a| a.at < vouched) {
                if a.revision > revision {
                    push(
                        "progress",
                        format!(
                            "progress {revision} at {at}us, but revision {} was acknowledged at {}us: {}",
                            a.revision, a.at, a.op
                        ),
                    );
                    break 'progress;
                }
                if arrived.get(&a.revision).is_none_or(|t| *t > at) {
                    push(
                        "feed-gap",
                        format!("progress {revision} at {at}us before revision {} arrived: {}", a.revision, a.op),
                    );
                    break 'progress;
                }
            }
        }
        let stale_at = |t: Micros| {
            let last = progress.iter().take_while(|(at, _)| *at <= t).last();
            last.is_none_or(|(at, _)| t - at > MAX_STALENESS.as_micros() as Micros)
        };
        for a in &acked {
            let t = a.at + delivery_bound();
            if t > w.end {
                break;
            }
            let received = arrived.get(&a.revision).is_some_and(|at| *at <= t);
            if !received && !stale_at(t) {
                push(
                    "delivery-bound",
                    format!(
                        "{}us after revision {} was acknowledged it had neither arrived nor was the watcher stale: {}",
                        delivery_bound(),
                        a.revision,
                        a.op
                    ),
                );
                break;
            }
        }
        if stale_at(w.end) {
            push(
                "recovery",
                format!(
                    "still stale when the run ended (last events: {:?})",
                    w.events.iter().rev().take(3).collect::<Vec<_>>()
                ),
            );
        } else if let Some(missing) = acked.iter().find(|a| !arrived.contains_key(&a.revision)) {
            push("recovery", format!("never received revision {}: {}", missing.revision, missing.op));
        }
    }
    out
}

/// The request ids audited on the first member whose log could be read, if every member's
/// could.
pub fn applied(finale: Option<&Finale>) -> Applied {
    let finale = finale?;
    let mut logs = finale.audit.values();
    let first = logs.next()?.as_ref().ok()?;
    if logs.any(|l| l.is_err()) || !finale.unrecovered.is_empty() {
        return None;
    }
    Some(first.iter().filter(|e| !e.request_id.is_empty()).map(|e| e.request_id.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Seen;

    fn entry(seq: u64, revision: u64, prev_hash: [u8; 32], request_id: &str) -> AuditEntry {
        AuditEntry {
            seq,
            revision,
            time_ms: 0,
            version: 1,
            actor: "anonymous".into(),
            action: AuditAction::FlagCreate,
            namespace: NAMESPACE.into(),
            key: "flag-0".into(),
            before: None,
            after: Some("{}".into()),
            reason: String::new(),
            request_id: request_id.into(),
            prev_hash,
            hash: [0; 32],
        }
        .seal()
    }

    fn to_proto(e: &AuditEntry) -> pb::AuditEntry {
        pb::AuditEntry {
            seq: e.seq,
            revision: e.revision,
            time_ms: e.time_ms,
            version: e.version,
            actor: e.actor.clone(),
            action: e.action.as_str().into(),
            namespace: e.namespace.clone(),
            key: e.key.clone(),
            before: e.before.clone(),
            after: e.after.clone(),
            reason: e.reason.clone(),
            request_id: e.request_id.clone(),
            prev_hash: e.prev_hash.to_vec(),
            hash: e.hash.to_vec(),
        }
    }

    fn write(id: usize, request_id: &str, revision: u64) -> Op {
        Op {
            id,
            client: "c1".into(),
            node: 1,
            key: "flag-0".into(),
            request_id: request_id.into(),
            kind: OpKind::Create { value: request_id.into() },
            invoke: 0,
            retries: vec![],
            ret: Some((10, Ret::Written { version: 1, revision })),
        }
    }

    fn finale(logs: Vec<Vec<pb::AuditEntry>>) -> Finale {
        Finale {
            members: (1..=logs.len() as u64).collect(),
            audit: logs.into_iter().enumerate().map(|(i, l)| (i as u64 + 1, Ok(l))).collect(),
            revision: 5,
            unrecovered: vec![],
        }
    }

    fn checkers(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.checker).collect()
    }

    #[test]
    fn the_audit_checker_accepts_a_valid_chain_and_flags_tampering_divergence_and_loss() {
        let first = entry(1, 2, [0; 32], "a");
        let second = entry(2, 3, first.hash, "b");
        let good = vec![to_proto(&first), to_proto(&second)];
        let ops = [write(0, "a", 2), write(1, "b", 3)];
        assert!(audit(&ops, &finale(vec![good.clone(), good.clone()])).is_empty());

        let mut tampered = good.clone();
        tampered[1].after = Some("{\"x\":1}".into());
        let found = checkers(&audit(&ops, &finale(vec![good.clone(), tampered])));
        assert!(found.contains(&"audit-chain") && found.contains(&"audit-identical"), "{found:?}");

        let lost = [write(0, "a", 2), write(1, "b", 3), write(2, "c", 4)];
        assert_eq!(checkers(&audit(&lost, &finale(vec![good.clone()]))), vec!["lost-write"]);
    }

    /// An entry of the governed namespace (the change-control checker reads no hashes).
    fn governed(
        seq: u64,
        revision: u64,
        actor: &str,
        action: &str,
        key: &str,
        request_id: &str,
        after: &str,
    ) -> pb::AuditEntry {
        pb::AuditEntry {
            seq,
            revision,
            actor: actor.into(),
            action: action.into(),
            namespace: GOVERNED.into(),
            key: key.into(),
            after: (!after.is_empty()).then(|| after.to_string()),
            request_id: request_id.into(),
            ..Default::default()
        }
    }

    /// The change-control findings on `log`, every request id in it sent (answer unknown).
    fn change_checkers(log: Vec<pb::AuditEntry>) -> Vec<String> {
        let sent: Vec<ChangeOp> = log
            .iter()
            .map(|e| ChangeOp {
                client: e.actor.clone(),
                principal: e.actor.clone(),
                request_id: e.request_id.clone(),
                call: ChangeCall::Approve { change: 0 },
                nodes: vec![1],
                invoke: 0,
                ret: None,
            })
            .collect();
        change_control(&finale(vec![log]), &sent).into_iter().map(|v| v.detail).collect()
    }

    #[test]
    fn the_change_control_checker_accepts_a_change_applied_by_its_approvals_and_flags_a_stale_one() {
        let policy = r#"{"approval": {"covers": "namespace", "author_may_approve": false}}"#;
        let propose = |seq, revision, id: u64, rid: &str, base: u64| {
            let after = format!(r#"{{"change": {id}, "bases": [{{"key": "f", "mod_revision": {base}}}]}}"#);
            governed(seq, revision, "alice", "change.propose", "f", rid, &after)
        };
        let approve = |seq, revision, actor: &str, id: u64, n: u64, applies: bool| {
            let after = format!(r#"{{"change": {id}, "approvals": {n}, "required": 2, "applies": {applies}}}"#);
            governed(seq, revision, actor, "change.approve", "f", &format!("{actor}-{seq}"), &after)
        };
        let mut log = vec![
            governed(1, 1, "admin", "namespace.policy", "", "setup", policy),
            propose(3, 3, 1, "p-1", 0),
            propose(4, 4, 2, "p-2", 0),
            approve(5, 5, "bob", 1, 1, false),
            approve(6, 6, "carol", 1, 2, true),
            // Its entries share the request id `change/1` in one revision.
            governed(7, 6, "alice", "flag.create", "f", "change/1", "{}"),
        ];
        assert_eq!(change_checkers(log.clone()), Vec::<String>::new());
        // Change 2 was based on the absent flag too: stale once change 1 applied.
        log.push(approve(8, 7, "bob", 2, 1, false));
        log.push(approve(9, 8, "carol", 2, 2, true));
        log.push(governed(10, 8, "alice", "flag.update", "f", "change/2", "{}"));
        let found = change_checkers(log.clone());
        assert!(found.len() == 1 && found[0].contains("although stale"), "{found:?}");
        // A write without a request; an author's approval; a change applied again.
        log.truncate(6);
        log.push(governed(8, 7, "alice", "flag.update", "f", "p-3", "{}"));
        log.push(approve(9, 8, "alice", 2, 1, false));
        log.push(governed(10, 9, "alice", "flag.update", "f", "change/1", "{}"));
        let found = change_checkers(log).join("\n");
        for expected in ["without approval", "by its author", "without an approval applying it", "applied at revisions"]
        {
            assert!(found.contains(expected), "{expected}: {found}");
        }
        // The audit checker counts revisions, not entries, of one request id.
        let first = entry(1, 2, [0; 32], "a");
        let second = entry(2, 2, first.hash, "a");
        assert!(audit(&[write(0, "a", 2)], &finale(vec![vec![to_proto(&first), to_proto(&second)]])).is_empty());
    }

    #[test]
    fn provenance_flags_values_nobody_wrote() {
        let mut read = write(1, "", 0);
        read.kind = OpKind::Read { level: Level::Stale };
        read.ret = Some((
            20,
            Ret::Read {
                flag: Some(Seen { value: "ghost".into(), version: 1, mod_revision: 2 }),
                revision: 2,
                served_by: 1,
            },
        ));
        assert_eq!(checkers(&provenance(&[write(0, "a", 2), read])), vec!["provenance"]);
    }
}
