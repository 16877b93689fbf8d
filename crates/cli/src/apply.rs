//! Flags as code: `apply` makes a namespace match a flagd document in one atomic change
//! (`--dry-run` prints the diff and changes nothing), `export` writes the namespace as a
//! document that `apply` accepts unchanged, so `export | apply` is a no-op.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value, json};
use tokio_stream::StreamExt;
use vexil_client::{ApplyResult, WriteOpts};
use vexil_model::{FlagSpec, NamespaceDocument};
use vexil_proto::v1 as pb;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::watch_client::WatchClient;

use crate::conn::CALL_TIMEOUT;
use crate::errors::{self, Subject};
use crate::flag::{FieldDiff, render_field_diff};
use crate::output;
use crate::{Ctx, Failure, Output};

/// How long `export` waits for a node to send the namespace's state.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The flagd document (`flags`, `$evaluators`, `metadata`); `-` reads stdin.
    #[arg(long, short = 'f', value_name = "FLAGD_JSON")]
    pub file: PathBuf,
    /// The namespace to apply it to (default: the document's `metadata.flagSetId`).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Print what would change (added, changed with field diffs, removed) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why: recorded in the audit log of every change.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Refuse the document if flagd would load but not evaluate some targeting as written (an
    /// operator given unusable arguments, an unknown operator), instead of applying it with
    /// warnings.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The namespace to export.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// Write the document to this file instead of stdout.
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// The document's text and the namespace it goes to, validated locally first (the same
/// validation the cluster runs), so an error names its field before anything is sent.
fn load(a: &ApplyArgs) -> Result<(String, String), Failure> {
    let text = crate::read_input(&a.file, "the document")?;
    let doc = NamespaceDocument::from_json(&text).map_err(|e| {
        Failure::Input(format!("{} is not a valid flag document: `{}`: {}", a.file.display(), e.field, e.problem))
    })?;
    let namespace = match (&a.namespace, doc.metadata.get("flagSetId").and_then(Value::as_str)) {
        (Some(ns), _) => ns.clone(),
        (None, Some(id)) => id.to_string(),
        (None, None) => {
            return Err(Failure::Usage(
                "say which namespace to apply to with --namespace (or set metadata.flagSetId in the document)".into(),
            ));
        }
    };
    Ok((text, namespace))
}

pub async fn run_apply(a: &ApplyArgs, ctx: &Ctx) -> Result<String, Failure> {
    let (document_json, namespace) = load(a)?;
    let sub = Subject::Namespace(&namespace);
    if a.dry_run {
        let req = pb::ApplyNamespaceRequest {
            namespace: namespace.clone(),
            document_json,
            options: None,
            dry_run: true,
            strict: a.strict,
        };
        let r = ctx
            .conn
            .on_any(CALL_TIMEOUT, sub, |ch| {
                let req = req.clone();
                async move { FlagsClient::new(ch).apply_namespace(req).await }
            })
            .await?;
        output::warn(&r.warnings);
        return Ok(match ctx.output {
            Output::Json => output::json(&dry_run_json(&namespace, &r)),
            Output::Table => render_dry_run(&namespace, &r),
        });
    }
    let r = ctx
        .conn
        .admin
        .apply_namespace(&namespace, &document_json, WriteOpts::reason(a.reason.clone()).strict(a.strict))
        .await
        .map_err(|e| errors::from_client(e, sub))?;
    Ok(apply_result(ctx.output, &namespace, &r))
}

/// What an apply did. A document the namespace's policy holds for approval (`change_id`) did
/// not apply: that is said plainly, with the command that shows the request.
fn apply_result(out: Output, namespace: &str, r: &ApplyResult) -> String {
    output::warn(&r.warnings);
    match out {
        Output::Json => output::json(&json!({
            "namespace": namespace, "revision": r.revision, "created": r.created, "updated": r.updated,
            "deleted": r.deleted, "unchanged": r.unchanged, "warnings": r.warnings,
            "applied": r.change_id == 0, "change_id": r.change_id,
        })),
        Output::Table if r.change_id != 0 => crate::change::awaiting_approval(
            &format!("the document for {namespace}"),
            namespace,
            r.change_id,
            r.revision,
        ),
        Output::Table if r.created + r.updated + r.deleted == 0 => {
            format!("{namespace} already matches the document ({} flags unchanged); nothing changed", r.unchanged)
        }
        Output::Table => format!(
            "applied to {namespace} at revision {}: {} created, {} updated, {} deleted, {} unchanged",
            r.revision, r.created, r.updated, r.deleted, r.unchanged
        ),
    }
}

fn json_side(s: &str) -> Option<Value> {
    if s.is_empty() { None } else { Some(output::parse_json(s)) }
}

fn diff_fields(d: &pb::FlagDiff) -> Vec<FieldDiff> {
    d.fields
        .iter()
        .map(|f| FieldDiff {
            field: f.field.clone(),
            before: json_side(&f.before_json),
            after: json_side(&f.after_json),
        })
        .collect()
}

fn keys_with<'a>(diff: &'a [pb::FlagDiff], change: &str) -> Vec<&'a pb::FlagDiff> {
    diff.iter().filter(|d| d.change == change).collect()
}

/// What flag diffs change, for people: one line per flag sorted by key (`+ key` added,
/// `- key` removed, `~ key` changed with its field diffs indented under it), then a line for
/// the namespace's settings when they change. Shared by `apply --dry-run` and `change show`.
pub fn render_diff(diff: &[pb::FlagDiff], settings_changed: bool) -> Vec<String> {
    let mut diffs: Vec<&pb::FlagDiff> = diff.iter().collect();
    diffs.sort_by(|a, b| a.key.cmp(&b.key));
    let mut lines = Vec::new();
    for d in diffs {
        match d.change.as_str() {
            "added" => lines.push(format!("+ {}", d.key)),
            "removed" => lines.push(format!("- {}", d.key)),
            _ => {
                lines.push(format!("~ {}", d.key));
                lines.extend(diff_fields(d).iter().map(|f| format!("    {}", render_field_diff(f))));
            }
        }
    }
    if settings_changed {
        lines.push("~ namespace settings ($evaluators or metadata)".into());
    }
    lines
}

/// `N to add, N to change, N to remove`: the counts of [`render_diff`].
pub fn diff_counts(diff: &[pb::FlagDiff]) -> String {
    let n = |change| keys_with(diff, change).len();
    format!("{} to add, {} to change, {} to remove", n("added"), n("changed"), n("removed"))
}

/// What flag diffs change, for scripts: `added` and `removed` keys, `changed` keys with their
/// field diffs, and `settings_changed`. Shared by `apply --dry-run` and `change show`.
pub fn diff_json(diff: &[pb::FlagDiff], settings_changed: bool) -> Map<String, Value> {
    let keys = |c: &str| keys_with(diff, c).iter().map(|d| d.key.clone()).collect::<Vec<_>>();
    let v = json!({
        "added": keys("added"),
        "removed": keys("removed"),
        "changed": keys_with(diff, "changed").iter().map(|d| json!({
            "key": d.key,
            "fields": diff_fields(d).iter().map(|f| json!({"field": f.field, "before": f.before, "after": f.after})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "settings_changed": settings_changed,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The human dry-run report: one line per flag that would change, field diffs under each
/// changed flag, then the counts.
pub fn render_dry_run(namespace: &str, r: &pb::ApplyNamespaceResponse) -> String {
    let mut lines =
        vec![format!("dry run against namespace {namespace} at revision {} (nothing was changed)", r.dry_run_revision)];
    if r.diff.is_empty() && !r.settings_changed {
        lines.push(String::new());
        lines.push(format!("no changes: {namespace} already matches the document ({} flags)", r.unchanged));
        return lines.join("\n");
    }
    lines.push(String::new());
    lines.extend(render_diff(&r.diff, r.settings_changed));
    lines.push(String::new());
    lines.push(format!(
        "{}, {} unchanged{}",
        diff_counts(&r.diff),
        r.unchanged,
        if r.settings_changed { "; namespace settings change" } else { "" }
    ));
    lines.join("\n")
}

fn dry_run_json(namespace: &str, r: &pb::ApplyNamespaceResponse) -> Value {
    let mut v = diff_json(&r.diff, r.settings_changed);
    v.extend([
        ("dry_run".to_string(), json!(true)),
        ("namespace".to_string(), json!(namespace)),
        ("revision".to_string(), json!(r.dry_run_revision)),
        ("unchanged".to_string(), json!(r.unchanged)),
        ("warnings".to_string(), json!(r.warnings)),
    ]);
    Value::Object(v)
}

/// A namespace's state from a node as the document `apply` accepts.
pub fn document_of(state: Option<&pb::NamespaceState>) -> Result<NamespaceDocument, Failure> {
    let Some(s) = state else { return Ok(NamespaceDocument::default()) };
    let mut flags = BTreeMap::new();
    for f in &s.flags {
        let spec = FlagSpec::from_json(&f.key, &f.spec_json).map_err(|e| {
            Failure::Failed(format!(
                "the cluster returned flag {} that does not validate: `{}`: {}",
                f.key, e.field, e.problem
            ))
        })?;
        flags.insert(f.key.clone(), spec);
    }
    let object = |text: &str| -> Map<String, Value> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    };
    Ok(NamespaceDocument {
        flags,
        evaluators: object(&s.evaluators_json).into_iter().collect(),
        metadata: object(&s.metadata_json),
    })
}

pub async fn run_export(a: &ExportArgs, ctx: &Ctx) -> Result<String, Failure> {
    let sub = Subject::Namespace(&a.namespace);
    // A read at the requested consistency fixes the revision the export must include; the
    // change feed's initial snapshot then comes from a node that has applied at least that.
    let at = ctx.conn.admin.list_namespaces().await.map_err(|e| errors::from_client(e, sub))?.header.revision;
    let req = pb::WatchRequest { namespaces: vec![a.namespace.clone()], after_revision: at, initial_snapshot: true };
    let mut last = String::from("no endpoint");
    let mut snapshot = None;
    for url in &ctx.conn.endpoints {
        let mut client = WatchClient::new(ctx.conn.channel(url, EXPORT_TIMEOUT)?);
        // The state may come in several parts (`more`): join them.
        let first = tokio::time::timeout(EXPORT_TIMEOUT, async {
            let mut stream = client.watch(req.clone()).await?.into_inner();
            let mut joined: Option<pb::WatchSnapshot> = None;
            loop {
                let msg = stream.next().await.unwrap_or_else(|| Err(tonic::Status::unavailable("the stream ended")))?;
                let Some(pb::watch_response::Kind::Snapshot(part)) = msg.kind else { return Ok(None) };
                match joined.as_mut() {
                    Some(j) => j.absorb(part),
                    None => joined = Some(part),
                }
                if joined.as_ref().is_some_and(|j| !j.more) {
                    return Ok(joined);
                }
            }
        })
        .await;
        match first {
            Ok(Ok(Some(s))) => {
                snapshot = Some(s);
                break;
            }
            Ok(Ok(None)) => last = format!("{url} sent changes before the namespace's state"),
            Ok(Err(s)) => {
                let err = vexil_client::Error::from_status(&s);
                if !err.is_retryable() {
                    return Err(errors::from_client(err, sub));
                }
                last = format!("{url}: {}", s.message());
            }
            Err(_) => last = format!("{url} did not send the namespace within {}s", EXPORT_TIMEOUT.as_secs()),
        }
    }
    let Some(snapshot) = snapshot else {
        return Err(Failure::Failed(format!(
            "could not read namespace {} ({last}); check `vexilctl cluster status`",
            a.namespace
        )));
    };
    let state = snapshot.namespaces.iter().find(|n| n.namespace == a.namespace);
    let doc = document_of(state)?;
    let text = serde_json::to_string_pretty(&doc.to_value())
        .map_err(|e| Failure::Failed(format!("cannot render the document: {e}")))?;
    match &a.file {
        None => Ok(text),
        Some(path) => {
            std::fs::write(path, format!("{text}\n"))
                .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))?;
            Ok(match ctx.output {
                Output::Json => output::json(&json!({
                    "namespace": a.namespace, "revision": snapshot.revision, "flags": doc.flags.len(),
                    "file": path.display().to_string(),
                })),
                Output::Table => format!(
                    "exported {} flag(s) of {} at revision {} to {}",
                    doc.flags.len(),
                    a.namespace,
                    snapshot.revision,
                    path.display()
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(key: &str, change: &str, fields: &[(&str, &str, &str)]) -> pb::FlagDiff {
        pb::FlagDiff {
            key: key.into(),
            change: change.into(),
            fields: fields
                .iter()
                .map(|(f, b, a)| pb::FieldChange {
                    field: f.to_string(),
                    before_json: b.to_string(),
                    after_json: a.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn dry_run_report() {
        let r = pb::ApplyNamespaceResponse {
            diff: vec![
                fd("beta-banner", "added", &[]),
                fd(
                    "new-checkout",
                    "changed",
                    &[
                        ("defaultVariant", "\"off\"", "\"on\""),
                        ("targeting", "", r#"{"fractional":[["on",10],["off",90]]}"#),
                    ],
                ),
                fd("old-search", "removed", &[]),
            ],
            settings_changed: true,
            unchanged: 2,
            dry_run_revision: 42,
            ..Default::default()
        };
        insta::assert_snapshot!(render_dry_run("shop", &r));
        let none = pb::ApplyNamespaceResponse { unchanged: 3, dry_run_revision: 7, ..Default::default() };
        insta::assert_snapshot!("dry_run_report_no_changes", render_dry_run("shop", &none));
    }

    #[test]
    fn the_dry_run_json_keeps_its_fields() {
        let r = pb::ApplyNamespaceResponse {
            diff: vec![fd("a", "added", &[]), fd("b", "changed", &[("state", "\"ENABLED\"", "\"DISABLED\"")])],
            unchanged: 1,
            dry_run_revision: 9,
            ..Default::default()
        };
        let v = dry_run_json("shop", &r);
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            [
                "added",
                "changed",
                "dry_run",
                "namespace",
                "removed",
                "revision",
                "settings_changed",
                "unchanged",
                "warnings"
            ]
        );
        assert_eq!(v["changed"][0]["fields"][0], json!({"field": "state", "before": "ENABLED", "after": "DISABLED"}));
        assert_eq!((v["added"].clone(), v["revision"].clone()), (json!(["a"]), json!(9)));
    }

    #[test]
    fn a_document_held_for_approval_says_nothing_was_applied() {
        let r = ApplyResult {
            revision: 31,
            created: 0,
            updated: 0,
            deleted: 0,
            unchanged: 0,
            warnings: vec![],
            change_id: 4,
        };
        let table = apply_result(Output::Table, "shop", &r);
        assert!(table.starts_with("nothing was applied yet: the document for shop awaits approval"), "{table}");
        assert!(table.contains("change request 4") && table.contains("`vexilctl change show shop 4`"), "{table}");
        let v: Value = serde_json::from_str(&apply_result(Output::Json, "shop", &r)).expect("json");
        assert_eq!((v["change_id"].as_u64(), v["applied"].as_bool()), (Some(4), Some(false)), "{v}");
        let applied = ApplyResult { created: 2, change_id: 0, ..r };
        assert_eq!(
            apply_result(Output::Table, "shop", &applied),
            "applied to shop at revision 31: 2 created, 0 updated, 0 deleted, 0 unchanged"
        );
    }

    #[test]
    fn a_missing_namespace_exports_as_an_empty_document() {
        let doc = document_of(None).expect("empty");
        assert_eq!(doc.to_value(), json!({"flags": {}}));
    }
}
