//! `vexilctl flag`: one flag's reads and writes, its history from the audit log, rollback to
//! the definition it had at a revision (a new, audited change), and server-side evaluation.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use vexil_client::{AuditFilter, WriteOpts, WriteResult};
use vexil_proto::v1 as pb;
use vexil_proto::v1::evaluation_client::EvaluationClient;

use crate::conn::CALL_TIMEOUT;
use crate::errors::{self, Subject};
use vexil_model::AuditAction;
use vexil_model::eval::ValueType;

use crate::output;
use crate::{Ctx, Failure, Output};

#[derive(Debug, Subcommand)]
pub enum FlagCommand {
    /// Show one flag: its definition and bookkeeping.
    Get(FlagRef),
    /// List the flags of a namespace (or, without one, the namespaces).
    List(ListArgs),
    /// Create a flag from a definition (flagd's flag object plus governance fields).
    Create(WriteSpecArgs),
    /// Replace a flag's definition (compare-and-set with --expected-version).
    Update(WriteSpecArgs),
    /// Turn a flag on (state ENABLED) without touching the rest of its definition.
    Enable(StateArgs),
    /// The kill switch: turn a flag off (state DISABLED); with --cascade the enabled flags that
    /// depend on it too, with --break-glass bypassing the namespace's approval rule.
    Disable(DisableArgs),
    /// Delete a flag.
    Delete(StateArgs),
    /// A flag's changes from the audit log: revision, time, actor, reason, field diff.
    History(HistoryArgs),
    /// Restore the definition a flag had at a revision, as a new audited change.
    Rollback(RollbackArgs),
    /// Evaluate a flag on the cluster for a context (the same engine the client embeds).
    Eval(EvalArgs),
    /// Stale flags of a namespace: past `expires_at`, deprecated or retired but still enabled,
    /// or unchanged for N days while serving one variant to everyone.
    Stale(StaleArgs),
}

#[derive(Debug, Args)]
pub struct StaleArgs {
    pub namespace: String,
    /// Report flags unchanged for at least this many days that serve one variant to everyone.
    #[arg(long, default_value_t = 30)]
    pub unchanged_days: u32,
}

#[derive(Debug, Args)]
pub struct FlagRef {
    pub namespace: String,
    pub key: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct WriteSpecArgs {
    pub namespace: String,
    pub key: String,
    /// The definition as JSON, e.g. '{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}'.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub spec: Option<String>,
    /// Read the definition from this JSON file (`-` for stdin).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Apply only if the flag is at this version (update only).
    #[arg(long, value_name = "VERSION")]
    pub expected_version: Option<u64>,
    /// Why: recorded in the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Refuse targeting that flagd would load but not evaluate as written (an operator given
    /// unusable arguments, an unknown operator), instead of writing it with a warning.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    pub namespace: String,
    pub key: String,
    /// Apply only if the flag is at this version.
    #[arg(long, value_name = "VERSION")]
    pub expected_version: Option<u64>,
    /// Why: recorded in the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct DisableArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Also disable, in the same revision, every enabled flag that depends on this one
    /// (`depends_on`, transitively). Without it, a namespace whose policy enforces dependencies
    /// refuses to disable a flag enabled flags depend on.
    #[arg(long)]
    pub cascade: bool,
    /// Disable at once although the namespace's policy requires approval (where the policy
    /// allows break-glass). Needs --reason; the audit log marks it `flag.break_glass`.
    #[arg(long)]
    pub break_glass: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub namespace: String,
    pub key: String,
    /// Show at most this many of the most recent changes (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub namespace: String,
    pub key: String,
    /// The revision whose definition to restore (see `vexilctl flag history`).
    #[arg(long = "to", value_name = "REVISION")]
    pub to: u64,
    /// Why: recorded in the audit log after "rollback to revision N".
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    pub namespace: String,
    pub key: String,
    /// The evaluation context as a JSON object, e.g. '{"targetingKey":"user-1"}'.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    /// Read the value as this type (a different type is reported as TYPE_MISMATCH).
    #[arg(long = "type", value_parser = crate::eval::value_type_parser(), value_name = "TYPE")]
    pub value_type: Option<ValueType>,
}

pub async fn run(cmd: &FlagCommand, ctx: &Ctx) -> Result<String, Failure> {
    match cmd {
        FlagCommand::Get(a) => get(a, ctx).await,
        FlagCommand::List(a) => list(a, ctx).await,
        FlagCommand::Create(a) => create_or_update(a, ctx, true).await,
        FlagCommand::Update(a) => create_or_update(a, ctx, false).await,
        FlagCommand::Enable(a) => set_state(a, ctx, true).await,
        FlagCommand::Disable(a) => disable(a, ctx).await,
        FlagCommand::Delete(a) => delete(a, ctx).await,
        FlagCommand::History(a) => history(a, ctx).await,
        FlagCommand::Rollback(a) => rollback(a, ctx).await,
        FlagCommand::Eval(a) => evaluate(a, ctx).await,
        FlagCommand::Stale(a) => stale(a, ctx, crate::unix_now_ms()).await,
    }
}

fn subject<'a>(ns: &'a str, key: &'a str) -> Subject<'a> {
    Subject::Flag { namespace: ns, key }
}

/// A flag as JSON for scripts: the proto fields with the definition parsed.
pub fn flag_json(f: &pb::Flag) -> Value {
    json!({
        "namespace": f.namespace, "key": f.key, "spec": output::parse_json(&f.spec_json), "version": f.version,
        "created_revision": f.created_revision, "mod_revision": f.mod_revision, "created_at_ms": f.created_at_ms,
        "updated_at_ms": f.updated_at_ms, "updated_by": f.updated_by,
    })
}

async fn get(a: &FlagRef, ctx: &Ctx) -> Result<String, Failure> {
    let r = ctx
        .conn
        .admin
        .get_flag(&a.namespace, &a.key)
        .await
        .map_err(|e| errors::from_client(e, subject(&a.namespace, &a.key)))?;
    let f = &r.value;
    Ok(match ctx.output {
        Output::Json => output::json(&json!({"flag": flag_json(f), "revision": r.header.revision})),
        Output::Table => {
            let spec = output::parse_json(&f.spec_json);
            let pretty = serde_json::to_string_pretty(&spec).unwrap_or_else(|_| f.spec_json.clone());
            format!(
                "{}\n\n{pretty}",
                output::fields(&[
                    ("FLAG", format!("{}/{}", f.namespace, f.key)),
                    ("STATE", spec["state"].as_str().unwrap_or("-").to_string()),
                    ("VERSION", f.version.to_string()),
                    ("CREATED", format!("revision {} at {}", f.created_revision, output::time_ms(f.created_at_ms))),
                    (
                        "UPDATED",
                        format!(
                            "revision {} at {} by {}",
                            f.mod_revision,
                            output::time_ms(f.updated_at_ms),
                            output::or_dash(&f.updated_by)
                        )
                    ),
                    ("READ AT", format!("revision {}", r.header.revision)),
                ])
            )
        }
    })
}

async fn list(a: &ListArgs, ctx: &Ctx) -> Result<String, Failure> {
    let Some(ns) = &a.namespace else {
        let r = ctx.conn.admin.list_namespaces().await.map_err(|e| errors::from_client(e, Subject::Cluster))?;
        return Ok(match ctx.output {
            Output::Json => output::json(&json!({"namespaces": r.value, "revision": r.header.revision})),
            Output::Table => output::table(&["NAMESPACE"], r.value.iter().map(|n| vec![n.clone()])),
        });
    };
    let r = ctx.conn.admin.list_flags(ns).await.map_err(|e| errors::from_client(e, Subject::Namespace(ns)))?;
    Ok(match ctx.output {
        Output::Json => output::json(&json!({
            "namespace": ns, "revision": r.header.revision, "flags": r.value.iter().map(flag_json).collect::<Vec<_>>(),
        })),
        Output::Table => {
            if r.value.is_empty() {
                return Ok(format!("namespace {ns} has no flags (at revision {})", r.header.revision));
            }
            output::table(
                &["KEY", "STATE", "DEFAULT", "VARIANTS", "VERSION", "UPDATED", "BY"],
                r.value.iter().map(|f| {
                    let spec = output::parse_json(&f.spec_json);
                    let variants = spec["variants"].as_object().map(|m| m.len()).unwrap_or(0);
                    vec![
                        f.key.clone(),
                        spec["state"].as_str().unwrap_or("-").to_string(),
                        spec["defaultVariant"].as_str().unwrap_or("-").to_string(),
                        variants.to_string(),
                        f.version.to_string(),
                        output::time_ms(f.updated_at_ms),
                        output::or_dash(&f.updated_by),
                    ]
                }),
            )
        }
    })
}

/// The definition from `--spec` or `--file`, checked locally first so a typo is reported with
/// its field before anything is sent.
fn read_spec(a: &WriteSpecArgs) -> Result<String, Failure> {
    let text = match (&a.spec, &a.file) {
        (Some(s), _) => s.clone(),
        (None, Some(p)) => crate::read_input(p, "the definition")?,
        (None, None) => return Err(Failure::Usage("give the definition with --spec JSON or --file PATH".into())),
    };
    let spec = vexil_model::FlagSpec::from_json(&a.key, &text)
        .map_err(|e| Failure::Input(format!("the definition is invalid: `{}`: {}", e.field, e.problem)))?;
    Ok(spec.to_json())
}

/// What a flag write did. A write the namespace's policy holds for approval (`change_id`) did
/// not apply: that is said plainly, with the command that shows the request.
fn write_result(out: Output, verb: &str, ns: &str, key: &str, w: &WriteResult) -> String {
    output::warn(&w.warnings);
    match out {
        Output::Json => output::json(&json!({
            "namespace": ns, "key": key, "revision": w.revision, "version": w.version, "leader_id": w.leader_id,
            "warnings": w.warnings, "applied": w.change_id == 0, "change_id": w.change_id,
        })),
        Output::Table if w.change_id != 0 => {
            crate::change::awaiting_approval(&format!("the change to {ns}/{key}"), ns, w.change_id, w.revision)
        }
        Output::Table if w.version == 0 => format!("{verb} {ns}/{key} at revision {}", w.revision),
        Output::Table => format!("{verb} {ns}/{key}: version {} at revision {}", w.version, w.revision),
    }
}

async fn create_or_update(a: &WriteSpecArgs, ctx: &Ctx, create: bool) -> Result<String, Failure> {
    let spec = read_spec(a)?;
    let opts = WriteOpts::reason(a.reason.clone()).strict(a.strict);
    let admin = &ctx.conn.admin;
    let sub = subject(&a.namespace, &a.key);
    let (verb, w) = if create {
        if a.expected_version.is_some() {
            return Err(Failure::Usage("--expected-version applies to update, not create".into()));
        }
        ("created", admin.create_flag(&a.namespace, &a.key, &spec, opts).await)
    } else {
        ("updated", admin.update_flag(&a.namespace, &a.key, &spec, a.expected_version, opts).await)
    };
    let w = w.map_err(|e| errors::from_client(e, sub))?;
    Ok(write_result(ctx.output, verb, &a.namespace, &a.key, &w))
}

async fn set_state(a: &StateArgs, ctx: &Ctx, enabled: bool) -> Result<String, Failure> {
    let w = ctx
        .conn
        .admin
        .set_flag_state(&a.namespace, &a.key, enabled, a.expected_version, WriteOpts::reason(a.reason.clone()))
        .await
        .map_err(|e| errors::from_client(e, subject(&a.namespace, &a.key)))?;
    Ok(write_result(ctx.output, if enabled { "enabled" } else { "disabled" }, &a.namespace, &a.key, &w))
}

/// A break-glass disable without a reason is refused here, before anything is sent (the
/// cluster would refuse it too: the reason is what the audit log shows for it).
fn check_disable(a: &DisableArgs) -> Result<(), Failure> {
    if a.break_glass && a.state.reason.trim().is_empty() {
        return Err(Failure::Usage(format!(
            "--break-glass needs --reason: say why {}/{} is disabled without approval (the audit log records it)",
            a.state.namespace, a.state.key
        )));
    }
    Ok(())
}

/// The kill switch; with --cascade or --break-glass, the disable that carries them.
async fn disable(a: &DisableArgs, ctx: &Ctx) -> Result<String, Failure> {
    let s = &a.state;
    if !(a.cascade || a.break_glass) {
        return set_state(s, ctx, false).await;
    }
    check_disable(a)?;
    let opts = WriteOpts::reason(s.reason.clone());
    let w = ctx
        .conn
        .admin
        .disable_flag(&s.namespace, &s.key, s.expected_version, a.cascade, a.break_glass, opts)
        .await
        .map_err(|e| errors::from_client(e, subject(&s.namespace, &s.key)))?;
    Ok(write_result(ctx.output, "disabled", &s.namespace, &s.key, &w))
}

async fn delete(a: &StateArgs, ctx: &Ctx) -> Result<String, Failure> {
    let w = ctx
        .conn
        .admin
        .delete_flag(&a.namespace, &a.key, a.expected_version, WriteOpts::reason(a.reason.clone()))
        .await
        .map_err(|e| errors::from_client(e, subject(&a.namespace, &a.key)))?;
    Ok(write_result(ctx.output, "deleted", &a.namespace, &a.key, &w))
}

/// One top-level field that differs between two definitions.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDiff {
    pub field: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The top-level fields that differ between two JSON objects, in field order.
pub fn field_diff(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldDiff> {
    let empty = Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let names: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    names
        .into_iter()
        .filter(|n| b.get(*n) != a.get(*n))
        .map(|n| FieldDiff { field: n.clone(), before: b.get(n).cloned(), after: a.get(n).cloned() })
        .collect()
}

/// `field: before → after`, `-` for an absent side, values cut to one short line.
pub fn render_field_diff(d: &FieldDiff) -> String {
    let show = |v: &Option<Value>| v.as_ref().map_or("-".to_string(), output::inline);
    format!("{}: {} → {}", d.field, show(&d.before), show(&d.after))
}

/// Whether an audit entry records a flag definition (its `before`/`after` are definitions).
/// A flag's history also holds the change-control entries about it (`change.*`,
/// `flag.break_glass`), whose `after` is a note, not a definition.
fn is_definition(e: &pb::AuditEntry) -> bool {
    matches!(
        AuditAction::parse(&e.action),
        Some(AuditAction::FlagCreate | AuditAction::FlagUpdate | AuditAction::FlagSetState | AuditAction::FlagDelete)
    )
}

fn entry_changes(e: &pb::AuditEntry) -> Vec<FieldDiff> {
    if !is_definition(e) {
        return Vec::new();
    }
    let before = e.before.as_deref().map(output::parse_json);
    let after = e.after.as_deref().map(output::parse_json);
    field_diff(before.as_ref(), after.as_ref())
}

/// What a change-control entry says, in a few words: `change 7 proposed (update; needs 2
/// approvals)`, `approved change 7 (2/2) — applied`, `rejected change 7`, `cancelled change 7`,
/// `BREAK-GLASS: <reason>`. `None` for other entries.
pub fn describe_control(e: &pb::AuditEntry) -> Option<String> {
    let action = AuditAction::parse(&e.action)?;
    let note = e.after.as_deref().map(output::parse_json).unwrap_or(Value::Null);
    let id = &note["change"];
    Some(match action {
        AuditAction::ChangePropose => {
            let needs = note["approvals_required"].as_u64().unwrap_or(0);
            format!(
                "change {id} proposed ({}; needs {needs} approval{})",
                crate::change::describe_write(&note["write"]),
                if needs == 1 { "" } else { "s" }
            )
        }
        AuditAction::ChangeApprove => format!(
            "approved change {id} ({}/{}){}",
            note["approvals"],
            note["required"],
            if note["applies"] == json!(true) { " — applied" } else { "" }
        ),
        AuditAction::ChangeReject => format!("rejected change {id}"),
        AuditAction::ChangeCancel => format!("cancelled change {id}"),
        AuditAction::FlagBreakGlass => format!(
            "BREAK-GLASS: {}{}",
            note["reason"].as_str().unwrap_or(&e.reason),
            if note["cascade"] == json!(true) { " (cascade)" } else { "" }
        ),
        _ => return None,
    })
}

/// The change request a definition entry was applied by (its request id is `change/<id>`).
fn applied_by_change(e: &pb::AuditEntry) -> Option<&str> {
    e.request_id.strip_prefix("change/").filter(|_| is_definition(e))
}

/// The human `flag history` table: one row per change, the field diff in the last column;
/// change-control entries (proposals, reviews, break-glass) described in words.
pub fn render_history(entries: &[pb::AuditEntry]) -> String {
    output::table(
        &["REVISION", "TIME", "ACTOR", "ACTION", "VERSION", "REASON", "CHANGES"],
        entries.iter().map(|e| {
            let mut changes = match AuditAction::parse(&e.action) {
                Some(AuditAction::FlagCreate) => "created".to_string(),
                Some(AuditAction::FlagDelete) => "deleted".to_string(),
                _ if is_definition(e) => {
                    let d = entry_changes(e);
                    if d.is_empty() {
                        "no change".to_string()
                    } else {
                        d.iter().map(render_field_diff).collect::<Vec<_>>().join("\n")
                    }
                }
                // An action this vexilctl does not know (from a newer cluster): its note as is.
                _ => describe_control(e).unwrap_or_else(|| {
                    e.after.as_deref().map_or("-".to_string(), |a| output::inline(&output::parse_json(a)))
                }),
            };
            if let Some(id) = applied_by_change(e) {
                changes = format!("(change {id}) {changes}");
            }
            vec![
                e.revision.to_string(),
                output::time_ms(e.time_ms),
                output::or_dash(&e.actor),
                e.action.clone(),
                if is_definition(e) { e.version.to_string() } else { "-".to_string() },
                output::or_dash(&output::short(&e.reason, 40)),
                changes,
            ]
        }),
    )
}

/// The `flag history --output json` entries: the audit fields, `before`/`after` parsed, the
/// field diff of a definition change (`changes`, empty for change-control entries), and
/// `summary`, the words `render_history` shows for a change-control entry (absent otherwise).
pub fn history_json(entries: &[pb::AuditEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "seq": e.seq, "revision": e.revision, "time_ms": e.time_ms, "actor": e.actor, "action": e.action,
                    "version": e.version, "reason": e.reason, "request_id": e.request_id,
                    "before": e.before.as_deref().map(output::parse_json),
                    "after": e.after.as_deref().map(output::parse_json),
                    "changes": entry_changes(e).iter().map(|d| json!({"field": d.field, "before": d.before, "after": d.after})).collect::<Vec<_>>(),
                });
                if let Some(summary) = describe_control(e) {
                    v["summary"] = json!(summary);
                }
                v
            })
            .collect(),
    )
}

async fn flag_audit(ctx: &Ctx, ns: &str, key: &str) -> Result<Vec<pb::AuditEntry>, Failure> {
    let filter = AuditFilter { namespace: ns.into(), key: key.into(), ..AuditFilter::default() };
    let r = ctx.conn.admin.list_audit(&filter).await.map_err(|e| errors::from_client(e, subject(ns, key)))?;
    Ok(r.value)
}

async fn history(a: &HistoryArgs, ctx: &Ctx) -> Result<String, Failure> {
    let mut entries = flag_audit(ctx, &a.namespace, &a.key).await?;
    if entries.is_empty() {
        return Err(Failure::Failed(format!(
            "flag {}/{} has no history: it never existed; see the flags with `vexilctl flag list {}`",
            a.namespace, a.key, a.namespace
        )));
    }
    if a.limit > 0 && entries.len() > a.limit {
        entries.drain(..entries.len() - a.limit);
    }
    Ok(match ctx.output {
        Output::Json => output::json(&history_json(&entries)),
        Output::Table => render_history(&entries),
    })
}

async fn rollback(a: &RollbackArgs, ctx: &Ctx) -> Result<String, Failure> {
    let (ns, key) = (a.namespace.as_str(), a.key.as_str());
    let mut entries = flag_audit(ctx, ns, key).await?;
    // Change-control entries carry notes, not definitions: only definitions are restored.
    entries.retain(is_definition);
    let Some(then) = entries.iter().rev().find(|e| e.revision <= a.to) else {
        let first = entries.first().map(|e| format!(" (its first change is at revision {})", e.revision));
        return Err(Failure::Failed(format!(
            "flag {ns}/{key} did not exist at revision {}{}; pick a revision from `vexilctl flag history {ns} {key}`",
            a.to,
            first.unwrap_or_default()
        )));
    };
    let Some(spec) = then.after.clone() else {
        return Err(Failure::Failed(format!(
            "flag {ns}/{key} was deleted at revision {} (as of revision {}); to remove it now use `vexilctl flag delete {ns} {key}`",
            then.revision, a.to
        )));
    };
    let reason = if a.reason.is_empty() {
        format!("rollback to revision {}", a.to)
    } else {
        format!("rollback to revision {}: {}", a.to, a.reason)
    };
    let admin = &ctx.conn.admin;
    let current = match admin.get_flag(ns, key).await {
        Ok(r) => Some(r.value),
        Err(vexil_client::Error::NotFound { .. }) => None,
        Err(e) => return Err(errors::from_client(e, subject(ns, key))),
    };
    let w = match &current {
        Some(cur) if output::parse_json(&cur.spec_json) == output::parse_json(&spec) => {
            return Ok(match ctx.output {
                Output::Json => output::json(&json!({
                    "namespace": ns, "key": key, "changed": false, "version": cur.version, "revision": cur.mod_revision,
                })),
                Output::Table => format!(
                    "{ns}/{key} already has the definition of revision {} (version {}); nothing changed",
                    a.to, cur.version
                ),
            });
        }
        // Compare-and-set on the version just read: a change made meanwhile is not overwritten.
        Some(cur) => admin.update_flag(ns, key, &spec, Some(cur.version), WriteOpts::reason(reason)).await,
        None => admin.create_flag(ns, key, &spec, WriteOpts::reason(reason)).await,
    }
    .map_err(|e| errors::from_client(e, subject(ns, key)))?;
    output::warn(&w.warnings);
    Ok(match ctx.output {
        Output::Json => output::json(&json!({
            "namespace": ns, "key": key, "changed": w.change_id == 0, "restored_from_revision": then.revision,
            "revision": w.revision, "version": w.version, "applied": w.change_id == 0, "change_id": w.change_id,
        })),
        Output::Table if w.change_id != 0 => crate::change::awaiting_approval(
            &format!("the rollback of {ns}/{key} to revision {}", a.to),
            ns,
            w.change_id,
            w.revision,
        ),
        Output::Table => format!(
            "rolled back {ns}/{key} to its definition at revision {} (set at revision {}): version {} at revision {}",
            a.to, then.revision, w.version, w.revision
        ),
    })
}

/// A server evaluation in the shape `vexilctl eval` prints.
async fn evaluate(a: &EvalArgs, ctx: &Ctx) -> Result<String, Failure> {
    let context_json = match &a.context {
        None => "{}".to_string(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => v.to_string(),
            Ok(other) => return Err(Failure::Usage(format!("--context must be a JSON object, got {other}"))),
            Err(e) => return Err(Failure::Usage(format!("--context is not valid JSON: {e}"))),
        },
    };
    let ty = a.value_type.map_or(pb::ValueType::Unspecified, pb::ValueType::from);
    let req = pb::EvaluateFlagRequest {
        namespace: a.namespace.clone(),
        key: a.key.clone(),
        context_json,
        r#type: ty as i32,
        read: Some(ctx.conn.read_options()),
    };
    let r = ctx
        .conn
        .on_any(CALL_TIMEOUT, subject(&a.namespace, &a.key), |ch| {
            let req = req.clone();
            async move { EvaluationClient::new(ch).evaluate_flag(req).await }
        })
        .await?;
    let v = r.evaluation.unwrap_or_default().to_json();
    Ok(match ctx.output {
        Output::Json => v.to_string(),
        Output::Table => crate::eval::table(&v),
    })
}

/// The stale-flag report over a namespace's current flags (`vexil_model::stale`).
async fn stale(a: &StaleArgs, ctx: &Ctx, now_ms: i64) -> Result<String, Failure> {
    let ns = &a.namespace;
    let r = ctx.conn.admin.list_flags(ns).await.map_err(|e| errors::from_client(e, Subject::Namespace(ns)))?;
    let mut specs = Vec::new();
    for f in &r.value {
        match vexil_model::FlagSpec::from_json(&f.key, &f.spec_json) {
            Ok(spec) => specs.push((f, spec)),
            Err(e) => {
                return Err(Failure::Failed(format!("flag {ns}/{}: stored definition does not parse: {e}", f.key)));
            }
        }
    }
    let activity = specs.iter().map(|(f, spec)| vexil_model::stale::FlagActivity {
        key: &f.key,
        spec,
        last_change_unix_ms: f.updated_at_ms,
    });
    let report = vexil_model::stale::stale_report(activity, now_ms, a.unchanged_days);
    Ok(match ctx.output {
        Output::Json => output::json(&json!({
            "namespace": ns,
            "revision": r.header.revision,
            "stale": report.iter().map(|f| json!({
                "key": f.key,
                "reasons": f.reasons.iter().map(|r| r.describe()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        Output::Table if report.is_empty() => {
            format!("no stale flags in {ns} ({} checked at revision {})", r.value.len(), r.header.revision)
        }
        Output::Table => output::table(
            &["KEY", "WHY"],
            report
                .iter()
                .map(|f| vec![f.key.clone(), f.reasons.iter().map(|r| r.describe()).collect::<Vec<_>>().join("; ")]),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        seq: u64,
        revision: u64,
        action: &str,
        before: Option<Value>,
        after: Option<Value>,
        reason: &str,
    ) -> pb::AuditEntry {
        pb::AuditEntry {
            seq,
            revision,
            time_ms: 1_767_225_600_000 + revision as i64 * 61_000,
            actor: "anonymous".into(),
            action: action.into(),
            namespace: "shop".into(),
            key: "new-checkout".into(),
            before: before.map(|v| v.to_string()),
            after: after.map(|v| v.to_string()),
            reason: reason.into(),
            request_id: format!("req-{seq}"),
            version: if action == "flag.delete" { 0 } else { seq },
            ..Default::default()
        }
    }

    #[test]
    fn history_table() {
        let v1 = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"});
        let mut v2 = v1.clone();
        v2["defaultVariant"] = json!("on");
        v2["targeting"] = json!({"fractional": [["on", 10], ["off", 90]]});
        let mut v3 = v2.clone();
        v3["state"] = json!("DISABLED");
        let entries = vec![
            entry(1, 5, "flag.create", None, Some(v1.clone()), "new checkout flow"),
            entry(2, 9, "flag.update", Some(v1.clone()), Some(v2.clone()), "10% rollout"),
            entry(3, 12, "flag.set_state", Some(v2.clone()), Some(v3.clone()), "incident 4711"),
            entry(4, 15, "flag.update", Some(v3), Some(v1), "rollback to revision 5"),
        ];
        insta::assert_snapshot!(render_history(&entries));
    }

    /// A flag's history under change control: a proposal approved twice (the second approval
    /// applies it, followed by the author's update), one cancelled, one rejected, a break-glass.
    fn governed_history() -> Vec<pb::AuditEntry> {
        let v1 = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"});
        let mut v2 = v1.clone();
        v2["defaultVariant"] = json!("on");
        let mut v3 = v2.clone();
        v3["state"] = json!("DISABLED");
        let control = |seq, revision, actor: &str, action: &str, note: Value, reason: &str| pb::AuditEntry {
            actor: actor.into(),
            version: 0,
            ..entry(seq, revision, action, None, Some(note), reason)
        };
        let write = json!({"kind": "update", "key": "new-checkout", "spec": v2, "expected_version": null});
        vec![
            entry(1, 5, "flag.create", None, Some(v1.clone()), "new checkout flow"),
            control(
                2,
                20,
                "alice",
                "change.propose",
                json!({"change": 7, "write": write, "bases": [{"key": "new-checkout", "mod_revision": 5}], "approvals_required": 2, "expires_at_ms": 1_767_484_800_000_i64}),
                "turn it on",
            ),
            control(
                3,
                22,
                "bob",
                "change.approve",
                json!({"change": 7, "approvals": 1, "required": 2, "applies": false}),
                "lgtm",
            ),
            control(
                4,
                25,
                "carol",
                "change.approve",
                json!({"change": 7, "approvals": 2, "required": 2, "applies": true}),
                "",
            ),
            pb::AuditEntry {
                actor: "alice".into(),
                request_id: "change/7".into(),
                version: 2,
                ..entry(5, 25, "flag.update", Some(v1), Some(v2.clone()), "turn it on")
            },
            control(
                6,
                30,
                "alice",
                "change.propose",
                json!({"change": 8, "write": {"kind": "delete", "key": "new-checkout"}, "approvals_required": 1}),
                "clean up",
            ),
            control(7, 31, "alice", "change.cancel", json!({"change": 8}), "too early"),
            control(
                8,
                33,
                "dave",
                "change.propose",
                json!({"change": 9, "write": {"kind": "set_state", "key": "new-checkout", "state": "DISABLED"}, "approvals_required": 1}),
                "",
            ),
            control(9, 34, "bob", "change.reject", json!({"change": 9}), "no reason given"),
            control(
                10,
                40,
                "oncall",
                "flag.break_glass",
                json!({"reason": "incident 4712", "cascade": true}),
                "incident 4712",
            ),
            pb::AuditEntry {
                actor: "oncall".into(),
                version: 3,
                ..entry(11, 40, "flag.set_state", Some(v2), Some(v3), "incident 4712")
            },
        ]
    }

    #[test]
    fn history_table_with_change_control() {
        insta::assert_snapshot!(render_history(&governed_history()));
    }

    #[test]
    fn history_json_describes_change_control_entries_instead_of_diffing_them() {
        let v = history_json(&governed_history());
        assert_eq!(v[1]["summary"], "change 7 proposed (update; needs 2 approvals)");
        assert_eq!(v[1]["changes"], json!([]), "a proposal's note is not a definition: {}", v[1]);
        assert_eq!(v[1]["after"]["change"], 7, "the note itself stays readable");
        assert_eq!(v[3]["summary"], "approved change 7 (2/2) — applied");
        assert_eq!(v[4]["changes"][0]["field"], "defaultVariant");
        assert!(v[4].get("summary").is_none(), "a definition change has no summary: {}", v[4]);
        assert_eq!(v[9]["summary"], "BREAK-GLASS: incident 4712 (cascade)");
    }

    #[test]
    fn only_definition_entries_can_be_rolled_back_to() {
        let entries = governed_history();
        let definitions: Vec<u64> = entries.iter().filter(|e| is_definition(e)).map(|e| e.seq).collect();
        assert_eq!(definitions, [1, 5, 11]);
        assert_eq!(applied_by_change(&entries[4]), Some("7"));
        assert_eq!(applied_by_change(&entries[3]), None, "the approval itself is not the applied write");
    }

    fn written(change_id: u64) -> WriteResult {
        WriteResult { revision: 20, leader_id: 1, version: 0, warnings: vec![], change_id }
    }

    #[test]
    fn a_write_held_for_approval_says_nothing_was_applied() {
        let table = write_result(Output::Table, "updated", "shop", "banner", &written(7));
        assert_eq!(
            table,
            "nothing was applied yet: the change to shop/banner awaits approval as change request 7 (opened at \
             revision 20); see it with `vexilctl change show shop 7`"
        );
        let v: Value =
            serde_json::from_str(&write_result(Output::Json, "updated", "shop", "banner", &written(7))).expect("json");
        assert_eq!((v["change_id"].as_u64(), v["applied"].as_bool()), (Some(7), Some(false)), "{v}");
        let v: Value =
            serde_json::from_str(&write_result(Output::Json, "updated", "shop", "banner", &written(0))).expect("json");
        assert_eq!((v["change_id"].as_u64(), v["applied"].as_bool()), (Some(0), Some(true)), "{v}");
        assert_eq!(
            write_result(Output::Table, "deleted", "shop", "banner", &written(0)),
            "deleted shop/banner at revision 20"
        );
    }

    #[test]
    fn disable_takes_cascade_and_break_glass_and_break_glass_needs_a_reason() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let cli = crate::Cli::try_parse_from([&["vexilctl", "flag", "disable", "shop", "banner"], args].concat())
                .expect("parses");
            let crate::Command::Flag(FlagCommand::Disable(a)) = cli.command else { panic!("{:?}", cli.command) };
            a
        };
        let a = parse(&["--cascade", "--break-glass", "--reason", "incident 4712", "--expected-version", "3"]);
        assert!(a.cascade && a.break_glass);
        assert_eq!((a.state.reason.as_str(), a.state.expected_version), ("incident 4712", Some(3)));
        assert_eq!(check_disable(&a), Ok(()));
        for args in [&["--break-glass"][..], &["--break-glass", "--reason", " "]] {
            let f = check_disable(&parse(args)).expect_err("refused without a reason");
            assert_eq!(f.exit_code(), 2);
            assert!(
                f.to_string().starts_with("--break-glass needs --reason") && f.to_string().contains("shop/banner"),
                "{f}"
            );
        }
        assert_eq!(check_disable(&parse(&["--cascade"])), Ok(()), "a cascade needs no reason");
    }

    #[test]
    fn field_diffs_cover_added_changed_and_removed_fields() {
        let d = field_diff(Some(&json!({"a": 1, "b": 2})), Some(&json!({"b": 3, "c": 4})));
        let shown: Vec<String> = d.iter().map(render_field_diff).collect();
        assert_eq!(shown, ["a: 1 → -", "b: 2 → 3", "c: - → 4"]);
    }
}
