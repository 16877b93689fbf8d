//! Change control, decided in the state machine: a namespace's policy
//! ([`vexil_model::NamespacePolicy`]) is judged in the entry that applies a write, on every
//! replica, so no node, race or retried request can get around it.
//!
//! A flag write to a namespace with a policy runs under a [`crate::txn::Savepoint`]: it
//! executes, its audit entries say which flags it touched (before and after), and then
//! - the resulting state is checked against the stage gates and the dependency rules; a
//!   violation undoes the write and names the rule;
//! - if the policy's approval rule covers a touched flag (and the write is not a permitted
//!   break-glass disable), the write is undone and kept as a pending change request instead.
//!   The rules were checked first, so a request that could not apply now is refused now.
//!
//! The approval that completes a request applies its change in the same entry, after its own
//! `change.approve` entry, under the same rules (with the author as the change's actor and
//! `change/<id>` as its request id), unless a flag it touches changed since it was proposed
//! (`change.stale`: it never applies). A namespace without a policy is untouched by all of
//! this: entries written before policies existed apply exactly as they did.

use serde_json::{Value, json};
use vexil_model::access::Role;
use vexil_model::policy::{ApprovalRule, Covers, Gate, NamespacePolicy};
use vexil_model::{AuditAction, FlagSpec, FlagState};

use crate::apply::{Auditor, CommandResult, execute_flag};
use crate::codec;
use crate::error::StoreError;
use crate::limits::CHANGES_KEPT_PER_NAMESPACE;
use crate::schema::{
    Approval, ChangeRecord, FlagRecord, META_CHANGE_SEQ, NamespaceRecord, PolicyRecord, Table, change_key,
    change_prefix, namespace_policy_key,
};
use crate::sm_state::SmState;
use crate::txn::{KvRead, Savepoint};
use crate::types::{ChangeStatus, Command, Outcome, Verdict, WriteError};

fn violated(rule: impl Into<String>, namespace: &str, key: &str, problem: impl Into<String>) -> WriteError {
    WriteError::RuleViolated {
        rule: rule.into(),
        namespace: namespace.into(),
        key: key.into(),
        problem: problem.into(),
    }
}

/// Parses a stored policy (its canonical JSON). A failure means a policy written by a newer
/// version; writes to that namespace are refused, identically everywhere.
pub fn parse_policy(json: &str) -> Result<NamespacePolicy, WriteError> {
    serde_json::from_str::<Value>(json)
        .map_err(|e| e.to_string())
        .and_then(|v| NamespacePolicy::from_json(&v).map_err(|e| e.to_string()))
        .map_err(|problem| WriteError::Invalid {
            field: "policy".into(),
            problem: format!("the stored policy cannot be read by this version: {problem}"),
        })
}

fn load_policy<R: KvRead + ?Sized>(
    a: &Auditor<'_, '_, R>,
    namespace: &str,
) -> Result<Option<Result<NamespacePolicy, WriteError>>, StoreError> {
    let record: Option<PolicyRecord> = a.txn.get_decoded(Table::Meta, &namespace_policy_key(namespace))?;
    Ok(record.map(|r| parse_policy(&r.policy_json)))
}

/// A write's state before a savepoint, to restore when it is refused.
struct Undo {
    savepoint: Savepoint,
    state: SmState,
}

impl Undo {
    fn begin<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>) -> Undo {
        Undo { savepoint: a.txn.savepoint(), state: a.st.clone() }
    }

    fn rollback<R: KvRead + ?Sized>(self, a: &mut Auditor<'_, '_, R>) {
        a.txn.rollback(self.savepoint);
        *a.st = self.state;
    }

    fn release<R: KvRead + ?Sized>(self, a: &mut Auditor<'_, '_, R>) {
        a.txn.release(self.savepoint);
    }
}

/// A flag write: as it is where the namespace has no policy, under change control where it has.
pub(crate) fn write<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>, command: &Command) -> CommandResult {
    match load_policy(a, command.namespace())? {
        None => execute_plain(a, command),
        Some(Ok(policy)) => governed(a, command, &policy, false),
        Some(Err(e)) => Ok(Err(e)),
    }
}

fn execute_plain<R: KvRead + ?Sized>(a: &mut Auditor<'_, '_, R>, command: &Command) -> CommandResult {
    match command {
        Command::DisableFlag { .. } => disable(a, command, None),
        _ => execute_flag(a, command),
    }
}

/// One flag touched by a write: its definition before and after (`None`: absent).
struct Touch {
    key: String,
    before: Option<FlagSpec>,
    after: Option<FlagSpec>,
}

/// What the write since `undo` did, read from its audit entries; and whether it changed the
/// namespace's own record (`$evaluators`, metadata).
fn touched<R: KvRead + ?Sized>(a: &Auditor<'_, '_, R>, undo: &Undo) -> Result<(Vec<Touch>, bool), WriteError> {
    let parse = |key: &str, json: &Option<String>| -> Result<Option<FlagSpec>, WriteError> {
        json.as_deref()
            .map(|j| FlagSpec::from_json(key, j))
            .transpose()
            .map_err(|e| WriteError::Invalid { field: e.field, problem: e.problem })
    };
    let mut out: Vec<Touch> = Vec::new();
    let mut namespace = false;
    for e in a.txn.audit_since(&undo.savepoint) {
        match e.action {
            AuditAction::FlagCreate | AuditAction::FlagUpdate | AuditAction::FlagSetState | AuditAction::FlagDelete => {
                let after = parse(&e.key, &e.after)?;
                match out.iter_mut().find(|t| t.key == e.key) {
                    Some(t) => t.after = after,
                    None => out.push(Touch { key: e.key.clone(), before: parse(&e.key, &e.before)?, after }),
                }
            }
            AuditAction::NamespaceUpdate => namespace = true,
            _ => {}
        }
    }
    Ok((out, namespace))
}

/// Executes `command` under `policy`: the rules always, the approval rule unless `approved`
/// (the completing approval of a request) or a permitted break-glass disable.
fn governed<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    command: &Command,
    policy: &NamespacePolicy,
    approved: bool,
) -> CommandResult {
    let namespace = command.namespace();
    let break_glass = matches!(command, Command::DisableFlag { break_glass: true, .. });
    let undo = Undo::begin(a);
    let outcome = match command {
        Command::DisableFlag { .. } => disable(a, command, Some(policy))?,
        _ => execute_flag(a, command)?,
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            undo.rollback(a);
            return Ok(Err(e));
        }
    };
    let (touches, namespace_changed) = match touched(a, &undo) {
        Ok(t) => t,
        Err(e) => {
            undo.rollback(a);
            return Ok(Err(e));
        }
    };
    if let Some(refusal) = check_rules(a, namespace, policy, &touches)? {
        undo.rollback(a);
        return Ok(Err(refusal));
    }
    let covering = policy.approval.as_ref().filter(|rule| {
        !approved
            && !break_glass
            && (touches.iter().any(|t| t.before.iter().chain(t.after.iter()).any(|s| rule.covers(s)))
                || (namespace_changed && rule.covers == Covers::Namespace))
    });
    if let Some(rule) = covering {
        undo.rollback(a);
        let created: Vec<String> = touches.iter().filter(|t| t.before.is_none()).map(|t| t.key.clone()).collect();
        return propose(a, command, rule, &created);
    }
    undo.release(a);
    Ok(Ok(outcome))
}

/// The enabled flags of `namespace` that list `key` in `depends_on`, in key order.
fn enabled_dependents<R: KvRead + ?Sized>(
    a: &Auditor<'_, '_, R>,
    namespace: &str,
    key: &str,
) -> Result<Vec<String>, StoreError> {
    let quoted = format!("\"{key}\"");
    let mut out = Vec::new();
    for (k, v) in a.txn.scan_prefix(Table::Flags, &codec::namespace_prefix(namespace))? {
        let record: FlagRecord =
            codec::decode(&v).map_err(|source| StoreError::Corrupt { table: Table::Flags, source })?;
        // Most flags depend on nothing: skip them without parsing.
        if !record.spec_json.contains("\"depends_on\"") || !record.spec_json.contains(&quoted) {
            continue;
        }
        let Some((_, dependent)) = codec::split_flag_key(&k) else { continue };
        let Ok(spec) = FlagSpec::from_json(dependent, &record.spec_json) else { continue };
        if spec.state == FlagState::Enabled && spec.depends_on.iter().any(|d| d == key) {
            out.push(dependent.to_string());
        }
    }
    Ok(out)
}

fn stored_spec<R: KvRead + ?Sized>(
    a: &Auditor<'_, '_, R>,
    namespace: &str,
    key: &str,
) -> Result<Option<FlagSpec>, StoreError> {
    Ok(a.get_flag(namespace, key)?.and_then(|r| FlagSpec::from_json(key, &r.spec_json).ok()))
}

/// The first rule the state after the write breaks, if any.
fn check_rules<R: KvRead + ?Sized>(
    a: &Auditor<'_, '_, R>,
    ns: &str,
    policy: &NamespacePolicy,
    touches: &[Touch],
) -> Result<Option<WriteError>, StoreError> {
    let was_enabled = |t: &Touch| t.before.as_ref().is_some_and(|b| b.state == FlagState::Enabled);
    for t in touches {
        let key = t.key.as_str();
        let Some(after) = &t.after else {
            if policy.dependencies
                && was_enabled(t)
                && let Some(d) = enabled_dependents(a, ns, key)?.first()
            {
                let problem = format!("enabled flag {d:?} depends on it; disable or change {d:?} first");
                return Ok(Some(violated("dependency.enabled_dependents", ns, key, problem)));
            }
            continue;
        };
        // A kill switch (only the state turned off) is never held back by a stage's gates.
        let kill_switch = after.state == FlagState::Disabled
            && t.before.as_ref().is_some_and(|b| FlagSpec { state: FlagState::Disabled, ..b.clone() } == *after);
        if !kill_switch {
            let stage = after.lifecycle.as_str();
            for gate in policy.gates(after.lifecycle) {
                let problem = match gate {
                    Gate::NoEnabledDependents => enabled_dependents(a, ns, key)?
                        .first()
                        .map(|d| format!("enabled flag {d:?} depends on it, so it cannot be {stage}")),
                    g => g.unmet(after, a.time_ms).map(|p| format!("{p}, which stage {stage} requires")),
                };
                if let Some(problem) = problem {
                    return Ok(Some(violated(format!("lifecycle.{stage}.{}", gate.as_str()), ns, key, problem)));
                }
            }
        }
        if !policy.dependencies {
            continue;
        }
        if after.state == FlagState::Enabled {
            for dep in &after.depends_on {
                match stored_spec(a, ns, dep)? {
                    None => {
                        let problem = format!("it depends on {dep:?}, which does not exist");
                        return Ok(Some(violated("dependency.missing", ns, key, problem)));
                    }
                    Some(spec) if spec.state != FlagState::Enabled => {
                        let problem = format!("it depends on {dep:?}, which is disabled; enable {dep:?} first");
                        return Ok(Some(violated("dependency.disabled", ns, key, problem)));
                    }
                    Some(_) => {}
                }
            }
        } else if was_enabled(t)
            && let Some(d) = enabled_dependents(a, ns, key)?.first()
        {
            let problem = format!("enabled flag {d:?} depends on it; disable with cascade to turn both off");
            return Ok(Some(violated("dependency.enabled_dependents", ns, key, problem)));
        }
        if let Some(path) = cycle_through(a, ns, key, after)? {
            let problem = format!("depends_on forms a cycle: {}", path.join(" -> "));
            return Ok(Some(violated("dependency.cycle", ns, key, problem)));
        }
    }
    Ok(None)
}

/// A `depends_on` path from `key` back to itself, if the stored flags (after the write) form one.
fn cycle_through<R: KvRead + ?Sized>(
    a: &Auditor<'_, '_, R>,
    ns: &str,
    key: &str,
    spec: &FlagSpec,
) -> Result<Option<Vec<String>>, StoreError> {
    // Depth-first over the dependency graph, each flag visited once.
    let mut stack: Vec<Vec<String>> = spec.depends_on.iter().map(|d| vec![key.to_string(), d.clone()]).collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("paths are never empty").clone();
        if last == key {
            return Ok(Some(path));
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        if let Some(next) = stored_spec(a, ns, &last)? {
            for d in next.depends_on {
                let mut longer = path.clone();
                longer.push(d);
                stack.push(longer);
            }
        }
    }
    Ok(None)
}

/// The kill switch with options ([`Command::DisableFlag`]), under a savepoint of its own.
fn disable<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    command: &Command,
    policy: Option<&NamespacePolicy>,
) -> CommandResult {
    let Command::DisableFlag { namespace, key, expected_version, cascade, break_glass } = command else {
        return Ok(Err(WriteError::Invalid { field: "command".into(), problem: "is not a disable".into() }));
    };
    if *break_glass {
        if a.reason.trim().is_empty() {
            let problem = "a break-glass disable needs a reason (it is recorded in the audit log)";
            return Ok(Err(violated("break_glass.reason", namespace, key, problem)));
        }
        if policy.and_then(|p| p.approval.as_ref()).is_some_and(|r| !r.break_glass) {
            let problem = "this namespace's policy does not allow break-glass; the disable needs approval";
            return Ok(Err(violated("break_glass.not_allowed", namespace, key, problem)));
        }
    }
    let undo = Undo::begin(a);
    if *break_glass {
        let marker = json!({ "reason": a.reason, "cascade": cascade }).to_string();
        a.record(AuditAction::FlagBreakGlass, namespace, key, 0, None, Some(marker))?;
    }
    let off = |key: &str, expected_version| Command::SetFlagState {
        namespace: namespace.clone(),
        key: key.to_string(),
        state: FlagState::Disabled,
        expected_version,
    };
    let outcome = match execute_flag(a, &off(key, *expected_version))? {
        Ok(outcome) => outcome,
        Err(e) => {
            undo.rollback(a);
            return Ok(Err(e));
        }
    };
    if *cascade {
        // Breadth-first: each dependent is disabled when first reached, so it is not reached again.
        let mut queue = std::collections::VecDeque::from([key.clone()]);
        while let Some(k) = queue.pop_front() {
            for dependent in enabled_dependents(a, namespace, &k)? {
                if let Err(e) = execute_flag(a, &off(&dependent, None))? {
                    undo.rollback(a);
                    return Ok(Err(e));
                }
                queue.push_back(dependent);
            }
        }
    }
    undo.release(a);
    Ok(Ok(outcome))
}

/// The `mod_revision` a request's base `key` has now (`""`: the namespace record's; 0: absent).
fn base_now<R: KvRead + ?Sized>(a: &Auditor<'_, '_, R>, ns: &str, key: &str) -> Result<u64, StoreError> {
    if key.is_empty() {
        let record: Option<NamespaceRecord> = a.txn.get_decoded(Table::Namespaces, ns.as_bytes())?;
        return Ok(record.map_or(0, |r| r.mod_revision));
    }
    Ok(a.get_flag(ns, key)?.map_or(0, |r| r.mod_revision))
}

/// Keeps `command` as a pending change request instead of applying it.
fn propose<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    command: &Command,
    rule: &ApprovalRule,
    created: &[String],
) -> CommandResult {
    let ns = command.namespace().to_string();
    let (key, mut bases) = match command {
        Command::ApplyNamespace { .. } => {
            // A document replaces the whole namespace: every flag in it is part of the base.
            let mut bases = vec![(String::new(), base_now(a, &ns, "")?)];
            for (k, v) in a.txn.scan_prefix(Table::Flags, &codec::namespace_prefix(&ns))? {
                let record: FlagRecord =
                    codec::decode(&v).map_err(|source| StoreError::Corrupt { table: Table::Flags, source })?;
                let key = codec::split_flag_key(&k).map(|(_, key)| key.to_string()).unwrap_or_default();
                bases.push((key, record.mod_revision));
            }
            (String::new(), bases)
        }
        Command::CreateFlag { key, .. }
        | Command::UpdateFlag { key, .. }
        | Command::SetFlagState { key, .. }
        | Command::DeleteFlag { key, .. }
        | Command::DisableFlag { key, .. } => (key.clone(), vec![(key.clone(), base_now(a, &ns, key)?)]),
        _ => return Ok(Err(WriteError::Invalid { field: "command".into(), problem: "is not a flag write".into() })),
    };
    for k in created {
        if !bases.iter().any(|(b, _)| b == k) {
            bases.push((k.clone(), 0));
        }
    }

    let kept = a.txn.scan_prefix(Table::Meta, &change_prefix(&ns))?;
    if kept.len() >= CHANGES_KEPT_PER_NAMESPACE {
        let mut oldest_closed = None;
        for (k, v) in &kept {
            let record: ChangeRecord = codec::decode(v)?;
            if record.status != ChangeStatus::Pending {
                oldest_closed = Some(k.clone());
                break;
            }
        }
        match oldest_closed {
            // Its history stays in the audit log.
            Some(k) => a.txn.delete(Table::Meta, k),
            None => {
                return Ok(Err(WriteError::LimitReached {
                    limit: "CHANGES_KEPT_PER_NAMESPACE".into(),
                    what: "open change requests in one namespace".into(),
                    max: CHANGES_KEPT_PER_NAMESPACE as u64,
                }));
            }
        }
    }

    let id = a.txn.get_decoded::<u64>(Table::Meta, META_CHANGE_SEQ)?.unwrap_or(0) + 1;
    a.txn.put_encoded(Table::Meta, META_CHANGE_SEQ.to_vec(), &id)?;
    let record = ChangeRecord {
        id,
        namespace: ns.clone(),
        key: key.clone(),
        author: a.actor.to_string(),
        reason: a.reason.to_string(),
        command: command.clone(),
        bases,
        proposed_revision: a.revision,
        proposed_at_ms: a.time_ms,
        expires_at_ms: a.time_ms.saturating_add(rule.open_ms()),
        approvals: vec![],
        status: ChangeStatus::Pending,
        closed_by: String::new(),
        closed_revision: 0,
    };
    a.txn.put_encoded(Table::Meta, change_key(&ns, id), &record)?;
    let described = json!({
        "change": id,
        "write": describe_command(command),
        "bases": record.bases.iter().map(|(k, r)| json!({ "key": k, "mod_revision": r })).collect::<Vec<_>>(),
        "approvals_required": rule.approvals,
        "expires_at_ms": record.expires_at_ms,
    });
    a.record(AuditAction::ChangePropose, &ns, &key, 0, None, Some(described.to_string()))?;
    Ok(Ok(Outcome::Change { id, status: ChangeStatus::Pending, approvals: 0 }))
}

/// A change's write as JSON, for the audit log and for reviewers.
pub fn describe_command(command: &Command) -> Value {
    let parsed = |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.to_string()));
    match command {
        Command::CreateFlag { key, spec_json, .. } => {
            json!({ "kind": "create", "key": key, "spec": parsed(spec_json) })
        }
        Command::UpdateFlag { key, spec_json, expected_version, .. } => json!({
            "kind": "update", "key": key, "spec": parsed(spec_json), "expected_version": expected_version,
        }),
        Command::SetFlagState { key, state, .. } => json!({ "kind": "set_state", "key": key, "state": state.as_str() }),
        Command::DeleteFlag { key, .. } => json!({ "kind": "delete", "key": key }),
        Command::DisableFlag { key, cascade, .. } => json!({ "kind": "disable", "key": key, "cascade": cascade }),
        Command::ApplyNamespace { document_json, .. } => json!({ "kind": "apply", "document": parsed(document_json) }),
        other => json!({ "kind": format!("{other:?}") }),
    }
}

/// The first base of `record` that moved since it was proposed: (key, then, now).
fn moved_base<R: KvRead + ?Sized>(
    a: &Auditor<'_, '_, R>,
    record: &ChangeRecord,
) -> Result<Option<(String, u64, u64)>, StoreError> {
    for (key, then) in &record.bases {
        let now = base_now(a, &record.namespace, key)?;
        if now != *then {
            return Ok(Some((key.clone(), *then, now)));
        }
    }
    Ok(None)
}

/// The approvals of `record` that count under `rule`.
pub fn counted_approvals(record: &ChangeRecord, rule: &ApprovalRule) -> u32 {
    let counted = record
        .approvals
        .iter()
        .filter(|x| rule.approver_roles.contains(&x.role) && (rule.author_may_approve || x.actor != record.author))
        .count();
    u32::try_from(counted).unwrap_or(u32::MAX)
}

/// [`Command::ReviewChange`].
pub(crate) fn review<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    ns: &str,
    id: u64,
    verdict: Verdict,
    role: Role,
) -> CommandResult {
    let Some(mut record) = a.txn.get_decoded::<ChangeRecord>(Table::Meta, &change_key(ns, id))? else {
        return Ok(Err(WriteError::ChangeNotFound { namespace: ns.into(), id }));
    };
    let key = record.key.clone();
    if record.status != ChangeStatus::Pending {
        let problem = format!("change {id} is already {}", record.status.as_str());
        return Ok(Err(violated("change.closed", ns, &key, problem)));
    }
    let policy = match load_policy(a, ns)? {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return Ok(Err(e)),
        None => None,
    };
    // A request outlives a policy that no longer asks for approval: it is judged by the default rule.
    let rule = policy.as_ref().and_then(|p| p.approval.clone()).unwrap_or_default();
    let is_author = a.actor == record.author;
    let expired = a.time_ms >= record.expires_at_ms;
    if expired && verdict != Verdict::Cancel {
        let problem = format!("change {id} expired at {} ms; open a new request", record.expires_at_ms);
        return Ok(Err(violated("change.expired", ns, &key, problem)));
    }
    match verdict {
        Verdict::Cancel | Verdict::Reject => {
            let (action, status) = if verdict == Verdict::Cancel {
                if !is_author && role != Role::Admin {
                    let problem = format!("only its author ({}) or an admin may cancel change {id}", record.author);
                    return Ok(Err(violated("approval.cancel", ns, &key, problem)));
                }
                (AuditAction::ChangeCancel, ChangeStatus::Cancelled)
            } else {
                if is_author {
                    let problem = "the author of a change cancels it rather than rejecting it";
                    return Ok(Err(violated("approval.author", ns, &key, problem)));
                }
                if !rule.approver_roles.contains(&role) {
                    let problem = format!("role {role} may not review changes in this namespace");
                    return Ok(Err(violated("approval.role", ns, &key, problem)));
                }
                (AuditAction::ChangeReject, ChangeStatus::Rejected)
            };
            (record.status, record.closed_by, record.closed_revision) = (status, a.actor.to_string(), a.revision);
            a.txn.put_encoded(Table::Meta, change_key(ns, id), &record)?;
            a.record(action, ns, &key, 0, None, Some(json!({ "change": id }).to_string()))?;
            let approvals = counted_approvals(&record, &rule);
            Ok(Ok(Outcome::Change { id, status, approvals }))
        }
        Verdict::Approve => {
            if is_author && !rule.author_may_approve {
                let problem = format!("{} wrote change {id} and may not approve it; another reviewer must", a.actor);
                return Ok(Err(violated("approval.author", ns, &key, problem)));
            }
            if !rule.approver_roles.contains(&role) {
                let problem = format!("role {role} may not approve changes in this namespace");
                return Ok(Err(violated("approval.role", ns, &key, problem)));
            }
            if record.approvals.iter().any(|x| x.actor == a.actor) {
                let problem = format!("{} already approved change {id}", a.actor);
                return Ok(Err(violated("approval.duplicate", ns, &key, problem)));
            }
            let moved = if a.injected.stale_changes_apply { None } else { moved_base(a, &record)? };
            if let Some((base, then, now)) = moved {
                let what = if base.is_empty() { format!("namespace {ns}") } else { format!("flag {base:?}") };
                let problem = format!(
                    "{what} changed at revision {now} after change {id} was based on revision {then}; it can no \
                     longer apply (cancel it and open a new one)"
                );
                return Ok(Err(violated("change.stale", ns, &base, problem)));
            }
            record.approvals.push(Approval {
                actor: a.actor.to_string(),
                role,
                revision: a.revision,
                time_ms: a.time_ms,
            });
            let approvals = counted_approvals(&record, &rule);
            let complete = approvals >= rule.approvals;
            let undo = Undo::begin(a);
            let note = json!({ "change": id, "approvals": approvals, "required": rule.approvals, "applies": complete });
            a.record(AuditAction::ChangeApprove, ns, &key, 0, None, Some(note.to_string()))?;
            if complete {
                let request_id = format!("change/{id}");
                let mut author = Auditor {
                    txn: &mut *a.txn,
                    st: &mut *a.st,
                    revision: a.revision,
                    time_ms: a.time_ms,
                    actor: &record.author,
                    reason: &record.reason,
                    request_id: &request_id,
                    injected: a.injected,
                };
                let applied = match &policy {
                    Some(policy) => governed(&mut author, &record.command, policy, true)?,
                    None => execute_plain(&mut author, &record.command)?,
                };
                if let Err(e) = applied {
                    undo.rollback(a);
                    return Ok(Err(e));
                }
                (record.status, record.closed_by, record.closed_revision) =
                    (ChangeStatus::Applied, a.actor.to_string(), a.revision);
            }
            a.txn.put_encoded(Table::Meta, change_key(ns, id), &record)?;
            undo.release(a);
            Ok(Ok(Outcome::Change { id, status: record.status, approvals }))
        }
    }
}

/// [`Command::SetNamespacePolicy`].
pub(crate) fn set_policy<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    ns: &str,
    policy_json: &str,
    expected_version: Option<u64>,
) -> CommandResult {
    if let Err(problem) = vexil_model::flag::validate_namespace(ns) {
        return Ok(Err(WriteError::Invalid { field: "namespace".into(), problem }));
    }
    let key = namespace_policy_key(ns);
    let old: Option<PolicyRecord> = a.txn.get_decoded(Table::Meta, &key)?;
    let current = old.as_ref().map_or(0, |r| r.version);
    if let Some(expected) = expected_version
        && expected != current
    {
        return Ok(Err(WriteError::VersionMismatch {
            namespace: ns.into(),
            key: "(policy)".into(),
            expected,
            current,
        }));
    }
    let before = old.as_ref().map(|r| r.policy_json.clone());
    if policy_json.is_empty() {
        if old.is_some() {
            a.txn.delete(Table::Meta, key);
            a.record(AuditAction::NamespacePolicy, ns, "", 0, before, None)?;
        }
        return Ok(Ok(Outcome::None));
    }
    let policy = match serde_json::from_str::<Value>(policy_json) {
        Ok(v) => NamespacePolicy::from_json(&v),
        Err(e) => Err(vexil_model::ValidationError::new("policy", format!("is not JSON: {e}"))),
    };
    let canonical = match policy {
        Ok(p) => p.to_json().to_string(),
        Err(e) => return Ok(Err(WriteError::Invalid { field: e.field, problem: e.problem })),
    };
    if before.as_deref() == Some(canonical.as_str()) {
        return Ok(Ok(Outcome::None));
    }
    let record = PolicyRecord { version: current + 1, policy_json: canonical.clone(), revision: a.revision };
    a.txn.put_encoded(Table::Meta, key, &record)?;
    a.record(AuditAction::NamespacePolicy, ns, "", record.version, before, Some(canonical))?;
    Ok(Ok(Outcome::None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::tests::{Harness, canonical};
    use crate::txn::Txn;
    use vexil_model::ChainVerifier;

    fn policy(h: &mut Harness, json: &str) {
        let set =
            Command::SetNamespacePolicy { namespace: "ns".into(), policy_json: json.into(), expected_version: None };
        assert_eq!(h.run("", set).outcome, Ok(Outcome::None));
    }

    fn spec(extra: &str) -> String {
        format!(r#"{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"on"{extra}}}"#)
    }

    fn create(key: &str, extra: &str) -> Command {
        Command::CreateFlag { namespace: "ns".into(), key: key.into(), spec_json: canonical(key, &spec(extra)) }
    }

    fn set_state(key: &str, on: bool) -> Command {
        let state = if on { FlagState::Enabled } else { FlagState::Disabled };
        Command::SetFlagState { namespace: "ns".into(), key: key.into(), state, expected_version: None }
    }

    fn disable(key: &str, cascade: bool, break_glass: bool) -> Command {
        Command::DisableFlag { namespace: "ns".into(), key: key.into(), expected_version: None, cascade, break_glass }
    }

    fn review(
        h: &mut Harness,
        actor: &'static str,
        role: Role,
        id: u64,
        verdict: Verdict,
    ) -> Result<Outcome, WriteError> {
        h.actor = actor;
        let out = h.run("", Command::ReviewChange { namespace: "ns".into(), id, verdict, role }).outcome;
        h.actor = "alice";
        out
    }

    fn rule_of(out: &Result<Outcome, WriteError>) -> &str {
        match out {
            Err(WriteError::RuleViolated { rule, .. }) => rule,
            other => panic!("expected a rule violation, got {other:?}"),
        }
    }

    fn state(h: &Harness, key: &str) -> Option<FlagState> {
        h.flag(key).map(|r| FlagSpec::from_json(key, &r.spec_json).expect("stored spec").state)
    }

    /// A refused write leaves the tables and the audit chain exactly as they were.
    fn refused_changes_nothing(h: &mut Harness, command: Command, rule: &str) {
        let (audit, flags) = (h.audit(), h.kv.scan(Table::Flags, &[], &[], usize::MAX).expect("scan"));
        let out = h.run("", command);
        assert_eq!(rule_of(&out.outcome), rule, "{out:?}");
        assert_eq!(h.audit(), audit);
        assert_eq!(h.kv.scan(Table::Flags, &[], &[], usize::MAX).expect("scan"), flags);
    }

    #[test]
    fn without_a_policy_nothing_is_enforced() {
        let mut h = Harness::new();
        assert!(h.run("", create("child", r#","depends_on":["missing"]"#)).outcome.is_ok());
        assert!(h.run("", create("p", "")).outcome.is_ok());
        assert!(h.run("", set_state("p", false)).outcome.is_ok());
    }

    #[test]
    fn dependency_rules_name_the_rule_and_a_cascade_disables_dependents_in_one_entry() {
        let mut h = Harness::new();
        policy(&mut h, r#"{"lifecycle": {"active": []}}"#);
        assert!(h.run("", create("base", "")).outcome.is_ok());
        assert!(h.run("", create("mid", r#","depends_on":["base"]"#)).outcome.is_ok());
        assert!(h.run("", create("top", r#","depends_on":["mid"]"#)).outcome.is_ok());
        refused_changes_nothing(&mut h, create("orphan", r#","depends_on":["nope"]"#), "dependency.missing");
        refused_changes_nothing(&mut h, set_state("base", false), "dependency.enabled_dependents");
        refused_changes_nothing(&mut h, disable("base", false, false), "dependency.enabled_dependents");
        let delete = Command::DeleteFlag { namespace: "ns".into(), key: "mid".into(), expected_version: None };
        refused_changes_nothing(&mut h, delete, "dependency.enabled_dependents");
        // base -> mid -> top; making base depend on top closes a cycle.
        let cyclic = Command::UpdateFlag {
            namespace: "ns".into(),
            key: "base".into(),
            spec_json: canonical("base", &spec(r#","depends_on":["top"]"#)),
            expected_version: None,
        };
        refused_changes_nothing(&mut h, cyclic, "dependency.cycle");

        let out = h.run("", disable("base", true, false));
        assert!(out.outcome.is_ok(), "{out:?}");
        assert_eq!([state(&h, "base"), state(&h, "mid"), state(&h, "top")], [Some(FlagState::Disabled); 3]);
        let at: Vec<(String, AuditAction)> =
            h.audit().into_iter().filter(|e| e.revision == out.revision).map(|e| (e.key, e.action)).collect();
        let set = AuditAction::FlagSetState;
        assert_eq!(at, [("base".into(), set), ("mid".into(), set), ("top".into(), set)]);
        // Enabling a flag whose dependency is off is refused.
        refused_changes_nothing(&mut h, set_state("top", true), "dependency.disabled");
        assert!(h.run("", set_state("base", true)).outcome.is_ok());
    }

    #[test]
    fn lifecycle_gates_are_checked_on_every_write_but_never_hold_back_a_kill_switch() {
        let mut h = Harness::new();
        policy(&mut h, "{}");
        refused_changes_nothing(&mut h, create("f", ""), "lifecycle.active.owner");
        refused_changes_nothing(&mut h, create("f", r#","owner":"team""#), "lifecycle.active.description");
        let good = r#","owner":"team","description":"d","expires_at":"2099-01-01T00:00:00Z""#;
        assert!(h.run("", create("f", good)).outcome.is_ok());
        let retired = format!(r#"{good},"lifecycle":"retired""#);
        let update = |extra: &str| Command::UpdateFlag {
            namespace: "ns".into(),
            key: "f".into(),
            spec_json: canonical("f", &spec(extra)),
            expected_version: None,
        };
        refused_changes_nothing(
            &mut h,
            update(&retired),
            "lifecycle.active.owner".replace("active.owner", "retired.disabled").as_str(),
        );
        assert!(h.run("", set_state("f", false)).outcome.is_ok(), "the kill switch is not gated");
        let retired_off = canonical("f", &spec(&retired)).replace("ENABLED", "DISABLED");
        let retire = Command::UpdateFlag {
            namespace: "ns".into(),
            key: "f".into(),
            spec_json: retired_off,
            expected_version: None,
        };
        assert!(h.run("", retire).outcome.is_ok());
        refused_changes_nothing(&mut h, set_state("f", true), "lifecycle.retired.disabled");
    }

    #[test]
    fn a_covered_write_waits_for_another_approver_and_applies_in_the_completing_entry() {
        let mut h = Harness::new();
        policy(&mut h, r#"{"approval": {"covers": {"tags": ["critical"]}}, "lifecycle": {"active": []}}"#);
        // Not covered: applies at once.
        assert!(h.run("", create("plain", "")).outcome.is_ok());
        let out = h.run("r-1", create("pay", r#","tags":["critical"]"#)).outcome;
        assert_eq!(out, Ok(Outcome::Change { id: 1, status: ChangeStatus::Pending, approvals: 0 }));
        assert!(h.flag("pay").is_none(), "a request changes no flag");
        // A retry is deduplicated: still one request.
        assert_eq!(h.run("r-1", create("pay", r#","tags":["critical"]"#)).outcome, out);

        assert_eq!(rule_of(&review(&mut h, "alice", Role::Editor, 1, Verdict::Approve)), "approval.author");
        assert_eq!(
            review(&mut h, "bob", Role::Editor, 9, Verdict::Approve),
            Err(WriteError::ChangeNotFound { namespace: "ns".into(), id: 9 })
        );
        let applied = review(&mut h, "bob", Role::Editor, 1, Verdict::Approve);
        assert_eq!(applied, Ok(Outcome::Change { id: 1, status: ChangeStatus::Applied, approvals: 1 }));
        let rec = h.flag("pay").expect("applied");
        let last: Vec<(String, AuditAction, String)> = h
            .audit()
            .into_iter()
            .filter(|e| e.revision == rec.mod_revision)
            .map(|e| (e.actor, e.action, e.request_id))
            .collect();
        assert_eq!(
            last,
            [
                ("bob".into(), AuditAction::ChangeApprove, String::new()),
                ("alice".into(), AuditAction::FlagCreate, "change/1".into())
            ]
        );
        assert_eq!(rule_of(&review(&mut h, "carol", Role::Editor, 1, Verdict::Approve)), "change.closed");
        let mut chain = ChainVerifier::new();
        h.audit().iter().try_for_each(|e| chain.push(e)).expect("the chain verifies");
    }

    #[test]
    fn a_stale_request_never_applies_and_break_glass_needs_a_reason() {
        let mut h = Harness::new();
        policy(&mut h, r#"{"approval": {"covers": "namespace"}, "lifecycle": {"active": []}}"#);
        let create_pending = h.run("", create("f", "")).outcome;
        assert!(matches!(create_pending, Ok(Outcome::Change { id: 1, .. })));
        assert!(review(&mut h, "bob", Role::Editor, 1, Verdict::Approve).is_ok());
        // Two requests on the same flag: the first to complete makes the other stale.
        assert!(matches!(h.run("", set_state("f", false)).outcome, Ok(Outcome::Change { id: 2, .. })));
        let update = Command::UpdateFlag {
            namespace: "ns".into(),
            key: "f".into(),
            spec_json: canonical("f", &spec(r#","owner":"x""#)),
            expected_version: None,
        };
        assert!(matches!(h.run("", update).outcome, Ok(Outcome::Change { id: 3, .. })));
        assert!(review(&mut h, "bob", Role::Editor, 3, Verdict::Approve).is_ok());
        let (audit, flag) = (h.audit(), h.flag("f"));
        assert_eq!(rule_of(&review(&mut h, "bob", Role::Editor, 2, Verdict::Approve)), "change.stale");
        assert_eq!((h.audit(), h.flag("f")), (audit, flag), "a stale approval writes nothing");
        // A reader cannot approve; the author may cancel; others may not.
        assert_eq!(rule_of(&review(&mut h, "dan", Role::Reader, 2, Verdict::Approve)), "approval.role");
        assert_eq!(rule_of(&review(&mut h, "bob", Role::Editor, 2, Verdict::Cancel)), "approval.cancel");
        assert!(matches!(
            review(&mut h, "alice", Role::Editor, 2, Verdict::Cancel),
            Ok(Outcome::Change { status: ChangeStatus::Cancelled, .. })
        ));

        h.reason = "";
        refused_changes_nothing(&mut h, disable("f", false, true), "break_glass.reason");
        h.reason = "checkout is failing";
        let out = h.run("", disable("f", false, true));
        assert!(matches!(out.outcome, Ok(Outcome::Flag { .. })), "{out:?}");
        assert_eq!(state(&h, "f"), Some(FlagState::Disabled));
        let at: Vec<AuditAction> =
            h.audit().into_iter().filter(|e| e.revision == out.revision).map(|e| e.action).collect();
        assert_eq!(at, [AuditAction::FlagBreakGlass, AuditAction::FlagSetState]);
        // A policy that does not allow it sends the disable through approval.
        policy(&mut h, r#"{"approval": {"break_glass": false}, "lifecycle": {"active": []}}"#);
        refused_changes_nothing(&mut h, disable("f", false, true), "break_glass.not_allowed");
        let stored: Option<ChangeRecord> =
            Txn::new(&h.kv).get_decoded(Table::Meta, &change_key("ns", 2)).expect("read");
        assert_eq!(stored.map(|r| r.status), Some(ChangeStatus::Cancelled));
    }
}
