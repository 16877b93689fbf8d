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

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vexil_model::access::Role;
use vexil_model::audit::Hash;
use vexil_model::policy::{ApprovalRule, Gate, NamespacePolicy};
use vexil_model::{AuditAction, FlagSpec, FlagState};

use crate::apply::{Auditor, CommandResult, execute_flag, parse_spec};
use crate::codec;
use crate::error::StoreError;
use crate::limits::CHANGES_KEPT_PER_NAMESPACE;
use crate::schema::{
    Approval, Base, ChangeRecord, FlagRecord, META_CHANGE_SEQ, NamespaceRecord, PolicyRecord, Table, change_key,
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
        Some(Ok(policy)) => governed(a, command, &policy, None),
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
    let parse = |key: &str, json: &Option<String>| json.as_deref().map(|j| parse_spec(key, j)).transpose();
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
/// (the completing approval of a request, with the bases it was proposed on) or a permitted
/// break-glass disable.
fn governed<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    command: &Command,
    policy: &NamespacePolicy,
    approved: Option<&ChangeRecord>,
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
    // A request applies only to what its reviewers saw: a flag it would now change beyond its
    // bases (created since, or a dependent a cascade now reaches) makes it stale.
    if let Some(record) = approved
        && let Some(t) = touches.iter().find(|t| !record.bases.iter().any(|b| b.key == t.key))
    {
        undo.rollback(a);
        let problem = format!(
            "applying change {} now would also change flag {:?}, which it was not based on (created or enabled \
             since); cancel it and open a new one",
            record.id, t.key
        );
        return Ok(Err(violated("change.stale", namespace, &t.key, problem)));
    }
    if let Some(refusal) = check_rules(a, namespace, policy, &touches)? {
        undo.rollback(a);
        return Ok(Err(refusal));
    }
    // A change of the namespace's own record (`$evaluators`, which any flag may `$ref`) counts
    // as covered whatever the rule covers.
    let covering = policy.approval.as_ref().filter(|rule| {
        approved.is_none()
            && !break_glass
            && (namespace_changed
                || touches.iter().any(|t| t.before.iter().chain(t.after.iter()).any(|s| rule.covers(s))))
    });
    if let Some(rule) = covering {
        let keys: Vec<String> = touches.iter().map(|t| t.key.clone()).collect();
        undo.rollback(a);
        return propose(a, command, rule, &keys);
    }
    undo.release(a);
    Ok(Ok(outcome))
}

/// A namespace's `depends_on` graph after a write, read with one scan when a rule needs it:
/// each flag that depends on something, whether it is enabled, and what it depends on.
struct Dependencies {
    of: BTreeMap<String, (bool, Vec<String>)>,
}

impl Dependencies {
    fn load<R: KvRead + ?Sized>(a: &Auditor<'_, '_, R>, namespace: &str) -> Result<Dependencies, StoreError> {
        let mut of = BTreeMap::new();
        for (k, v) in a.txn.scan_prefix(Table::Flags, &codec::namespace_prefix(namespace))? {
            let record: FlagRecord =
                codec::decode(&v).map_err(|source| StoreError::Corrupt { table: Table::Flags, source })?;
            // Most flags depend on nothing: skip them without parsing.
            if !record.spec_json.contains("\"depends_on\"") {
                continue;
            }
            let Some((_, key)) = codec::split_flag_key(&k) else { continue };
            let Ok(spec) = FlagSpec::from_json(key, &record.spec_json) else { continue };
            if !spec.depends_on.is_empty() {
                of.insert(key.to_string(), (spec.state == FlagState::Enabled, spec.depends_on));
            }
        }
        Ok(Dependencies { of })
    }

    /// The enabled flags that list `key` in `depends_on`, in key order.
    fn enabled_dependents<'d>(&'d self, key: &'d str) -> impl Iterator<Item = &'d str> + 'd {
        self.of.iter().filter(move |(_, (on, deps))| *on && deps.iter().any(|d| d == key)).map(|(k, _)| k.as_str())
    }

    /// A `depends_on` path from one of `starts` back to a flag on it, if the graph has one
    /// reachable from them. Depth-first with three colours: every flag is visited once.
    fn cycle_from<'d>(&'d self, starts: impl Iterator<Item = &'d str>) -> Option<Vec<String>> {
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for start in starts {
            let mut path: Vec<&str> = Vec::new();
            // (flag, index of the next dependency to follow)
            let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
            while let Some((flag, next)) = stack.pop() {
                if next == 0 {
                    if done.contains(flag) {
                        continue;
                    }
                    if let Some(at) = path.iter().position(|p| *p == flag) {
                        let mut cycle: Vec<String> = path[at..].iter().map(|p| p.to_string()).collect();
                        cycle.push(flag.to_string());
                        return Some(cycle);
                    }
                    path.push(flag);
                }
                match self.of.get(flag).and_then(|(_, deps)| deps.get(next)) {
                    Some(dep) => {
                        stack.push((flag, next + 1));
                        stack.push((dep.as_str(), 0));
                    }
                    None => {
                        path.pop();
                        done.insert(flag);
                    }
                }
            }
        }
        None
    }
}

fn stored_spec<R: KvRead + ?Sized>(
    a: &Auditor<'_, '_, R>,
    namespace: &str,
    key: &str,
) -> Result<Option<FlagSpec>, StoreError> {
    Ok(a.get_flag(namespace, key)?.and_then(|r| FlagSpec::from_json(key, &r.spec_json).ok()))
}

/// The first rule the state after the write breaks, if any. The dependency graph is read once,
/// and only when a rule needs it (a flag turned off or deleted, a `no_enabled_dependents`
/// gate, a touched flag that depends on something).
fn check_rules<R: KvRead + ?Sized>(
    a: &Auditor<'_, '_, R>,
    ns: &str,
    policy: &NamespacePolicy,
    touches: &[Touch],
) -> Result<Option<WriteError>, StoreError> {
    let mut cache: Option<Dependencies> = None;
    fn loaded<'g, R: KvRead + ?Sized>(
        cache: &'g mut Option<Dependencies>,
        a: &Auditor<'_, '_, R>,
        ns: &str,
    ) -> Result<&'g Dependencies, StoreError> {
        if cache.is_none() {
            *cache = Some(Dependencies::load(a, ns)?);
        }
        Ok(cache.get_or_insert_with(|| Dependencies { of: BTreeMap::new() }))
    }
    let was_enabled = |t: &Touch| t.before.as_ref().is_some_and(|b| b.state == FlagState::Enabled);
    for t in touches {
        let key = t.key.as_str();
        let Some(after) = &t.after else {
            if policy.dependencies
                && was_enabled(t)
                && let Some(d) = loaded(&mut cache, a, ns)?.enabled_dependents(key).next()
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
                    Gate::NoEnabledDependents => loaded(&mut cache, a, ns)?
                        .enabled_dependents(key)
                        .next()
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
            && let Some(d) = loaded(&mut cache, a, ns)?.enabled_dependents(key).next()
        {
            let problem = format!("enabled flag {d:?} depends on it; disable with cascade to turn both off");
            return Ok(Some(violated("dependency.enabled_dependents", ns, key, problem)));
        }
    }
    let depending = touches.iter().filter(|t| t.after.as_ref().is_some_and(|s| !s.depends_on.is_empty()));
    if policy.dependencies && depending.clone().next().is_some() {
        let graph = loaded(&mut cache, a, ns)?;
        if let Some(cycle) = graph.cycle_from(depending.map(|t| t.key.as_str())) {
            let key = cycle.first().cloned().unwrap_or_default();
            let problem = format!("depends_on forms a cycle: {}", cycle.join(" -> "));
            return Ok(Some(violated("dependency.cycle", ns, &key, problem)));
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
        // Breadth-first over the graph as it was before the cascade: a cascade only turns flags
        // off, so each enabled dependent is reached once.
        let graph = Dependencies::load(a, namespace)?;
        let mut reached: BTreeSet<&str> = BTreeSet::from([key.as_str()]);
        let mut queue = std::collections::VecDeque::from([key.as_str()]);
        while let Some(k) = queue.pop_front() {
            for dependent in graph.enabled_dependents(k) {
                if !reached.insert(dependent) {
                    continue;
                }
                if let Err(e) = execute_flag(a, &off(dependent, None))? {
                    undo.rollback(a);
                    return Ok(Err(e));
                }
                queue.push_back(dependent);
            }
        }
    }
    // Nothing was on: no change, and no break-glass to mark.
    if *break_glass && a.txn.audit_since(&undo.savepoint).len() == 1 {
        undo.rollback(a);
        return Ok(Ok(outcome));
    }
    undo.release(a);
    Ok(Ok(outcome))
}

/// What a change request was based on: `key` (`""`: the namespace's own record) as stored then.
/// `fingerprint` is the SHA-256 of its stored bytes (zero when absent), so any write moves it,
/// even one that shares a revision with the proposal (a batched entry).
pub fn fingerprint(stored: Option<&[u8]>) -> Hash {
    stored.map_or([0; 32], |bytes| Sha256::digest(bytes).into())
}

/// Where base `key` of namespace `ns` is stored: the flag, or for `""` the namespace record.
pub fn base_location(ns: &str, key: &str) -> (Table, Vec<u8>) {
    if key.is_empty() { (Table::Namespaces, ns.as_bytes().to_vec()) } else { (Table::Flags, codec::flag_key(ns, key)) }
}

/// Base `key` as stored now: read once, fingerprinted, and decoded for its `mod_revision`.
fn base_of<R: KvRead + ?Sized>(a: &Auditor<'_, '_, R>, ns: &str, key: &str) -> Result<Base, StoreError> {
    let (table, at) = base_location(ns, key);
    let stored = a.txn.get(table, &at)?;
    let mod_revision = match (&stored, table) {
        (None, _) => 0,
        (Some(bytes), Table::Flags) => {
            codec::decode::<FlagRecord>(bytes).map_err(|source| StoreError::Corrupt { table, source })?.mod_revision
        }
        (Some(bytes), _) => {
            codec::decode::<NamespaceRecord>(bytes)
                .map_err(|source| StoreError::Corrupt { table, source })?
                .mod_revision
        }
    };
    Ok(Base { key: key.to_string(), mod_revision, fingerprint: fingerprint(stored.as_deref()) })
}

/// Keeps `command` as a pending change request instead of applying it; `touched` are the flags
/// executing it touched (read before it, after the rollback).
fn propose<R: KvRead + ?Sized>(
    a: &mut Auditor<'_, '_, R>,
    command: &Command,
    rule: &ApprovalRule,
    touched: &[String],
) -> CommandResult {
    let ns = command.namespace().to_string();
    let mut keys: BTreeSet<String> = touched.iter().cloned().collect();
    let key = match command {
        Command::ApplyNamespace { .. } => {
            // A document replaces the whole namespace: its record and every flag in it.
            keys.insert(String::new());
            for (k, _) in a.txn.scan_prefix(Table::Flags, &codec::namespace_prefix(&ns))? {
                keys.extend(codec::split_flag_key(&k).map(|(_, key)| key.to_string()));
            }
            String::new()
        }
        Command::CreateFlag { key, .. }
        | Command::UpdateFlag { key, .. }
        | Command::SetFlagState { key, .. }
        | Command::DeleteFlag { key, .. }
        | Command::DisableFlag { key, .. } => {
            keys.insert(key.clone());
            key.clone()
        }
        _ => return Ok(Err(WriteError::Invalid { field: "command".into(), problem: "is not a flag write".into() })),
    };
    let bases = keys.iter().map(|k| base_of(a, &ns, k)).collect::<Result<Vec<_>, _>>()?;

    let kept = a.txn.scan_prefix(Table::Meta, &change_prefix(&ns))?;
    if kept.len() >= CHANGES_KEPT_PER_NAMESPACE {
        // The oldest one closed or expired goes (its history stays in the audit log).
        let mut evictable = None;
        for (k, v) in &kept {
            let record: ChangeRecord = codec::decode(v)?;
            if record.status != ChangeStatus::Pending || a.time_ms >= record.expires_at_ms {
                evictable = Some(k.clone());
                break;
            }
        }
        match evictable {
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
        "bases": record.bases.iter().map(|b| json!({ "key": b.key, "mod_revision": b.mod_revision })).collect::<Vec<_>>(),
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

/// The first base of `record` that moved since it was proposed: (key, mod_revision then, now).
fn moved_base<R: KvRead + ?Sized>(
    a: &Auditor<'_, '_, R>,
    record: &ChangeRecord,
) -> Result<Option<(String, u64, u64)>, StoreError> {
    for base in &record.bases {
        let now = base_of(a, &record.namespace, &base.key)?;
        if now.fingerprint != base.fingerprint {
            return Ok(Some((base.key.clone(), base.mod_revision, now.mod_revision)));
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
                    Some(policy) => governed(&mut author, &record.command, policy, Some(&record))?,
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

    fn request(actor: &str, reason: &str, command: Command) -> crate::types::Request {
        crate::types::Request {
            request_id: String::new(),
            actor: actor.into(),
            reason: reason.into(),
            time_ms: 1,
            command,
        }
    }

    #[test]
    fn a_write_in_the_same_entry_as_the_proposal_still_makes_it_stale() {
        let mut h = Harness::new();
        policy(&mut h, r#"{"approval": {"covers": "namespace"}, "lifecycle": {"active": []}}"#);
        assert!(matches!(h.run("", create("f", "")).outcome, Ok(Outcome::Change { id: 1, .. })));
        // One batched entry: bob's approval creates f, alice proposes an update of it (based on
        // f at this very revision), then dave pulls f's kill switch, still at this revision.
        let update = Command::UpdateFlag {
            namespace: "ns".into(),
            key: "f".into(),
            spec_json: canonical("f", &spec(r#","owner":"x""#)),
            expected_version: None,
        };
        let approve =
            Command::ReviewChange { namespace: "ns".into(), id: 1, verdict: Verdict::Approve, role: Role::Editor };
        let batch = Command::Batch {
            requests: vec![
                request("bob", "", approve),
                request("alice", "", update),
                request("dave", "incident", disable("f", false, true)),
            ],
        };
        let out = h.run("", batch);
        let Ok(Outcome::Batch(answers)) = &out.outcome else { panic!("{out:?}") };
        assert!(answers.iter().all(|r| r.outcome.is_ok()), "{answers:?}");
        assert_eq!(h.flag("f").map(|r| r.mod_revision), Some(out.revision));
        assert_eq!(state(&h, "f"), Some(FlagState::Disabled));
        // f's mod_revision is the proposal's own, but it was written after: stale.
        assert_eq!(rule_of(&review(&mut h, "bob", Role::Editor, 2, Verdict::Approve)), "change.stale");
        assert_eq!(state(&h, "f"), Some(FlagState::Disabled), "the kill switch holds");
    }

    #[test]
    fn a_document_is_stale_once_it_would_change_a_flag_it_was_not_based_on() {
        let mut h = Harness::new();
        policy(&mut h, r#"{"approval": {"covers": {"tags": ["critical"]}}, "lifecycle": {"active": []}}"#);
        let doc = format!(r#"{{"flags": {{"pay": {}}}}}"#, spec(r#","tags":["critical"]"#));
        let apply = Command::ApplyNamespace { namespace: "ns".into(), document_json: doc };
        assert!(matches!(h.run("", apply).outcome, Ok(Outcome::Change { id: 1, .. })));
        // Not covered: applies at once. The document would delete it.
        assert!(h.run("", create("extra", "")).outcome.is_ok());
        let out = review(&mut h, "bob", Role::Editor, 1, Verdict::Approve);
        assert_eq!(rule_of(&out), "change.stale");
        assert!(h.flag("extra").is_some() && h.flag("pay").is_none());
        // A change of `$evaluators` alone is covered whatever the rule covers: any flag may use it.
        let evaluators = r#"{"flags": {"extra": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}},
            "$evaluators": {"beta": {"in": ["@beta", {"var": "email"}]}}}"#;
        let apply = Command::ApplyNamespace { namespace: "ns".into(), document_json: evaluators.into() };
        assert!(matches!(h.run("", apply).outcome, Ok(Outcome::Change { id: 2, .. })));
    }

    #[test]
    fn break_glass_on_a_flag_already_off_marks_nothing() {
        let mut h = Harness::new();
        policy(&mut h, r#"{"lifecycle": {"active": []}}"#);
        assert!(h.run("", create("f", "")).outcome.is_ok());
        assert!(h.run("", set_state("f", false)).outcome.is_ok());
        let entries = h.audit().len();
        h.reason = "incident";
        assert!(h.run("", disable("f", false, true)).outcome.is_ok());
        assert_eq!(h.audit().len(), entries);
    }
}
