//! `vexilctl change`: the change requests a namespace's policy holds for approval. A flag write
//! (or an `apply`) the policy's approval rule covers does not apply: it opens a request, which
//! reviewers list, inspect (the write, its approvals, and what applying it now would change)
//! and approve, reject or cancel. The approval that completes a request applies its change in
//! the same revision. Reading needs a role on the namespace; reviewing, `editor` or `admin`
//! (as the policy's `approver_roles` say).

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use vexil_client::WriteOpts;
use vexil_proto::v1 as pb;

use crate::apply::{diff_counts, diff_json, render_diff};
use crate::errors::{self, Subject};
use crate::output;
use crate::{Ctx, Failure, Output};

#[derive(Debug, Subcommand)]
pub enum ChangeCommand {
    /// The namespace's change requests still open (with --all, the closed ones it keeps too).
    List(ListArgs),
    /// One change request: the write, who approved it, and what applying it now would change.
    Show(ChangeRef),
    /// Approve a request. The approval that completes it applies the change at once.
    Approve(ReviewArgs),
    /// Reject a request (a reviewer other than its author). It never applies.
    Reject(ReviewArgs),
    /// Withdraw a request (its author, or an admin). It never applies.
    Cancel(ReviewArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    pub namespace: String,
    /// Closed requests too (applied, rejected, cancelled), as far as the namespace keeps them.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ChangeRef {
    pub namespace: String,
    /// The request's id (see `vexilctl change list`).
    #[arg(value_name = "ID")]
    pub id: u64,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    #[command(flatten)]
    pub change: ChangeRef,
    /// Why: recorded in the audit log with the review.
    #[arg(long, default_value = "")]
    pub reason: String,
}

pub async fn run(cmd: &ChangeCommand, ctx: &Ctx) -> Result<String, Failure> {
    match cmd {
        ChangeCommand::List(a) => list(a, ctx).await,
        ChangeCommand::Show(a) => show(a, ctx).await,
        ChangeCommand::Approve(a) => review(a, pb::Verdict::Approve, ctx).await,
        ChangeCommand::Reject(a) => review(a, pb::Verdict::Reject, ctx).await,
        ChangeCommand::Cancel(a) => review(a, pb::Verdict::Cancel, ctx).await,
    }
}

fn subject(c: &ChangeRef) -> Subject<'_> {
    Subject::Change { namespace: &c.namespace, id: c.id }
}

/// What a write that opened change request `id` prints instead of a result: that `what` (e.g.
/// "the change to shop/banner") did not apply and waits for approval, and how to see it.
pub fn awaiting_approval(what: &str, namespace: &str, id: u64, revision: u64) -> String {
    format!(
        "nothing was applied yet: {what} awaits approval as change request {id} (opened at revision {revision}); \
         see it with `vexilctl change show {namespace} {id}`"
    )
}

/// A request's write (`ChangeRequest.write_json`, parsed) in a few words: `create`, `update`,
/// `set state DISABLED`, `delete`, `disable with cascade`, `apply a document`.
pub fn describe_write(write: &Value) -> String {
    let kind = write["kind"].as_str().unwrap_or("-");
    match kind {
        "set_state" => format!("set state {}", write["state"].as_str().unwrap_or("-")),
        "disable" if write["cascade"] == json!(true) => "disable with cascade".to_string(),
        "apply" => "apply a document".to_string(),
        other => other.to_string(),
    }
}

/// The flag a request changes, or the whole namespace for a document.
fn target(c: &pb::ChangeRequest) -> String {
    if c.key.is_empty() { format!("{} (whole document)", c.namespace) } else { format!("{}/{}", c.namespace, c.key) }
}

/// `1/2`: approvals recorded, of those the namespace's policy requires now.
fn approvals(c: &pb::ChangeRequest) -> String {
    format!("{}/{}", c.approvals.len(), c.approvals_required)
}

/// A request as JSON for scripts: the proto fields with the write parsed.
pub fn change_json(c: &pb::ChangeRequest) -> Value {
    json!({
        "id": c.id, "namespace": c.namespace, "key": c.key, "author": c.author, "reason": c.reason,
        "status": c.status, "write": output::parse_json(&c.write_json), "proposed_revision": c.proposed_revision,
        "proposed_at_ms": c.proposed_at_ms, "expires_at_ms": c.expires_at_ms,
        "approvals": c.approvals.iter().map(|x| json!({
            "actor": x.actor, "role": x.role, "revision": x.revision, "time_ms": x.time_ms,
        })).collect::<Vec<_>>(),
        "approvals_required": c.approvals_required, "closed_by": c.closed_by, "closed_revision": c.closed_revision,
        "stale_key": c.stale_key,
    })
}

/// The human `change list` table: one row per request, oldest first.
pub fn render_list(changes: &[pb::ChangeRequest]) -> String {
    output::table(
        &["ID", "STATUS", "FLAG", "WRITE", "AUTHOR", "APPROVALS", "PROPOSED", "EXPIRES", "REASON"],
        changes.iter().map(|c| {
            vec![
                c.id.to_string(),
                c.status.clone(),
                if c.key.is_empty() { "(whole document)".to_string() } else { c.key.clone() },
                describe_write(&output::parse_json(&c.write_json)),
                output::or_dash(&c.author),
                approvals(c),
                output::time_ms(c.proposed_at_ms),
                output::time_ms(c.expires_at_ms),
                output::or_dash(&output::short(&c.reason, 40)),
            ]
        }),
    )
}

/// The human `change show` report: the request's fields and approvals, the definition it
/// writes (create and update), then what applying it now would change (open requests only).
pub fn render_show(r: &pb::GetChangeResponse) -> String {
    let Some(c) = &r.change else { return "the cluster returned no change request".to_string() };
    let write = output::parse_json(&c.write_json);
    let mut rows = vec![
        ("CHANGE", format!("{} ({})", c.id, c.status)),
        ("FLAG", target(c)),
        ("WRITE", describe_write(&write)),
        ("AUTHOR", output::or_dash(&c.author)),
        ("REASON", output::or_dash(&c.reason)),
        ("PROPOSED", format!("revision {} at {}", c.proposed_revision, output::time_ms(c.proposed_at_ms))),
        ("EXPIRES", output::time_ms(c.expires_at_ms)),
        ("APPROVALS", format!("{} of {} required", c.approvals.len(), c.approvals_required)),
    ];
    rows.extend(
        c.approvals.iter().map(|x| {
            ("", format!("{} ({}) at revision {}, {}", x.actor, x.role, x.revision, output::time_ms(x.time_ms)))
        }),
    );
    if c.closed_revision != 0 {
        rows.push((
            "CLOSED",
            format!("{} by {} at revision {}", c.status, output::or_dash(&c.closed_by), c.closed_revision),
        ));
    }
    if c.status == "stale" {
        let what = if c.stale_key.is_empty() {
            format!("namespace {}", c.namespace)
        } else {
            format!("flag {:?}", c.stale_key)
        };
        rows.push((
            "STALE",
            format!(
                "{what} changed after this request was proposed, so it can no longer apply; cancel it \
                 (`vexilctl change cancel {} {}`) and propose the write again",
                c.namespace, c.id
            ),
        ));
    }
    if let Some(h) = &r.header {
        rows.push(("READ AT", format!("revision {}", h.revision)));
    }
    let mut text = output::fields(&rows);
    if matches!(write["kind"].as_str(), Some("create" | "update")) {
        let spec = serde_json::to_string_pretty(&write["spec"]).unwrap_or_else(|_| write["spec"].to_string());
        text.push_str(&format!("\n\ndefinition it writes:\n{spec}"));
    }
    let open = matches!(c.status.as_str(), "pending" | "stale" | "expired");
    if open {
        if r.diff.is_empty() && !r.settings_changed {
            text.push_str("\n\napplying it now would change nothing");
        } else {
            let mut lines = vec![String::new(), "applying it now would change:".to_string()];
            lines.extend(render_diff(&r.diff, r.settings_changed));
            lines.push(String::new());
            lines.push(format!(
                "{}{}",
                diff_counts(&r.diff),
                if r.settings_changed { "; namespace settings change" } else { "" }
            ));
            text.push('\n');
            text.push_str(&lines.join("\n"));
        }
    }
    text
}

/// `change show --output json`: the request, and for an open one the diff applying it now
/// would make (`null` for a closed one).
pub fn show_json(r: &pb::GetChangeResponse) -> Value {
    let open = r.change.as_ref().is_some_and(|c| matches!(c.status.as_str(), "pending" | "stale" | "expired"));
    json!({
        "revision": r.header.as_ref().map_or(0, |h| h.revision),
        "change": r.change.as_ref().map(change_json),
        "diff": open.then(|| Value::Object(diff_json(&r.diff, r.settings_changed))),
    })
}

async fn list(a: &ListArgs, ctx: &Ctx) -> Result<String, Failure> {
    let ns = &a.namespace;
    let r = ctx.conn.admin.list_changes(ns, a.all).await.map_err(|e| errors::from_client(e, Subject::Namespace(ns)))?;
    Ok(match ctx.output {
        Output::Json => output::json(&json!({
            "namespace": ns, "revision": r.header.revision, "changes": r.value.iter().map(change_json).collect::<Vec<_>>(),
        })),
        Output::Table if r.value.is_empty() => format!(
            "no {}change requests in {ns} (at revision {})",
            if a.all { "" } else { "open " },
            r.header.revision
        ),
        Output::Table => render_list(&r.value),
    })
}

async fn show(a: &ChangeRef, ctx: &Ctx) -> Result<String, Failure> {
    let r = ctx.conn.admin.get_change(&a.namespace, a.id).await.map_err(|e| errors::from_client(e, subject(a)))?;
    Ok(match ctx.output {
        Output::Json => output::json(&show_json(&r)),
        Output::Table => render_show(&r),
    })
}

/// `approve`, `reject` or `cancel`.
fn verdict_name(verdict: pb::Verdict) -> &'static str {
    match verdict {
        pb::Verdict::Approve => "approve",
        pb::Verdict::Reject => "reject",
        pb::Verdict::Cancel => "cancel",
        pb::Verdict::Unspecified => "unspecified",
    }
}

/// What a review did, and for an approval that did not complete the request, how many
/// approvals it has of the `required` (when known).
pub fn render_review(
    c: &ChangeRef,
    verdict: pb::Verdict,
    r: &pb::ReviewChangeResponse,
    required: Option<u32>,
) -> String {
    let (ns, id) = (&c.namespace, c.id);
    let revision = r.header.as_ref().map_or(0, |h| h.revision);
    match verdict {
        pb::Verdict::Approve if r.status == "applied" => {
            format!("approved change {id} of {ns}: it applied at revision {revision} ({} approval(s))", r.approvals)
        }
        pb::Verdict::Approve => {
            let of = required.map(|m| format!(" of {m} required")).unwrap_or_default();
            format!(
                "approved change {id} of {ns} at revision {revision}: {} approval(s){of}; nothing applied yet, it \
                 applies with the approval that completes it (see `vexilctl change show {ns} {id}`)",
                r.approvals
            )
        }
        pb::Verdict::Reject => format!("rejected change {id} of {ns} at revision {revision}; it will not apply"),
        pb::Verdict::Cancel | pb::Verdict::Unspecified => {
            format!("cancelled change {id} of {ns} at revision {revision}; it will not apply")
        }
    }
}

async fn review(a: &ReviewArgs, verdict: pb::Verdict, ctx: &Ctx) -> Result<String, Failure> {
    let c = &a.change;
    let admin = &ctx.conn.admin;
    let r = admin
        .review_change(&c.namespace, c.id, verdict, WriteOpts::reason(a.reason.clone()))
        .await
        .map_err(|e| errors::from_client(e, subject(c)))?;
    // How many approvals the request needs is the policy's, read afterwards. The review has
    // happened either way: a failed read only leaves that number out (retrying the approval
    // would be refused as a duplicate).
    let required = if verdict == pb::Verdict::Approve && r.status != "applied" {
        admin.get_change(&c.namespace, c.id).await.ok().and_then(|g| g.change).map(|x| x.approvals_required)
    } else {
        None
    };
    Ok(match ctx.output {
        Output::Json => {
            let mut v = json!({
                "namespace": c.namespace, "change": c.id, "verdict": verdict_name(verdict), "status": r.status,
                "applied": r.status == "applied", "approvals": r.approvals,
                "revision": r.header.as_ref().map_or(0, |h| h.revision),
            });
            if let Some(m) = required {
                v["approvals_required"] = json!(m);
            }
            output::json(&v)
        }
        Output::Table => render_review(c, verdict, &r, required),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000;

    fn request(id: u64, status: &str, write: Value) -> pb::ChangeRequest {
        pb::ChangeRequest {
            id,
            namespace: "shop".into(),
            key: write["key"].as_str().unwrap_or_default().into(),
            author: "alice".into(),
            reason: "turn it on for everyone".into(),
            status: status.into(),
            write_json: write.to_string(),
            proposed_revision: 20,
            proposed_at_ms: T0 + 20_000,
            expires_at_ms: T0 + 72 * 3_600_000,
            approvals: vec![],
            approvals_required: 2,
            ..Default::default()
        }
    }

    fn approval(actor: &str, role: &str, revision: u64) -> pb::ChangeApproval {
        pb::ChangeApproval { actor: actor.into(), role: role.into(), revision, time_ms: T0 + revision as i64 * 1000 }
    }

    fn update() -> Value {
        json!({"kind": "update", "key": "banner", "expected_version": 3, "spec": {
            "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
        }})
    }

    fn field(field: &str, before: &str, after: &str) -> pb::FieldChange {
        pb::FieldChange { field: field.into(), before_json: before.into(), after_json: after.into() }
    }

    #[test]
    fn writes_are_described_in_a_few_words() {
        assert_eq!(describe_write(&update()), "update");
        assert_eq!(describe_write(&json!({"kind": "set_state", "state": "DISABLED"})), "set state DISABLED");
        assert_eq!(describe_write(&json!({"kind": "disable", "cascade": true})), "disable with cascade");
        assert_eq!(describe_write(&json!({"kind": "disable", "cascade": false})), "disable");
        assert_eq!(describe_write(&json!({"kind": "apply", "document": {}})), "apply a document");
        assert_eq!(describe_write(&Value::Null), "-");
    }

    #[test]
    fn list_table() {
        let mut first = request(7, "pending", update());
        first.approvals.push(approval("bob", "editor", 22));
        let changes = vec![
            first,
            request(8, "stale", json!({"kind": "disable", "key": "checkout", "cascade": true})),
            pb::ChangeRequest {
                author: "carol".into(),
                reason: String::new(),
                closed_by: "bob".into(),
                closed_revision: 30,
                ..request(9, "rejected", json!({"kind": "apply", "document": {"flags": {}}}))
            },
        ];
        insta::assert_snapshot!(render_list(&changes));
    }

    #[test]
    fn show_a_pending_request() {
        let mut c = request(7, "pending", update());
        c.approvals.push(approval("bob", "editor", 22));
        let r = pb::GetChangeResponse {
            header: Some(pb::ReadHeader { revision: 24, ..Default::default() }),
            change: Some(c),
            diff: vec![pb::FlagDiff {
                key: "banner".into(),
                change: "changed".into(),
                fields: vec![field("defaultVariant", "\"off\"", "\"on\"")],
            }],
            settings_changed: false,
        };
        insta::assert_snapshot!(render_show(&r));
        let v = show_json(&r);
        assert_eq!(v["change"]["write"]["spec"]["defaultVariant"], "on", "{v}");
        assert_eq!(v["change"]["approvals"][0]["actor"], "bob");
        assert_eq!(v["diff"]["changed"][0]["key"], "banner");
        assert_eq!(v["revision"], 24);
    }

    #[test]
    fn show_a_stale_and_a_closed_request() {
        let stale = pb::GetChangeResponse {
            header: Some(pb::ReadHeader { revision: 40, ..Default::default() }),
            change: Some(pb::ChangeRequest {
                stale_key: "banner".into(),
                ..request(8, "stale", json!({"kind": "set_state", "key": "banner", "state": "DISABLED"}))
            }),
            ..Default::default()
        };
        let text = render_show(&stale);
        assert!(text.contains("STALE") && text.contains("`vexilctl change cancel shop 8`"), "{text}");
        assert!(text.ends_with("applying it now would change nothing"), "{text}");

        let mut applied = request(7, "applied", update());
        applied.approvals = vec![approval("bob", "editor", 22), approval("carol", "admin", 25)];
        (applied.closed_by, applied.closed_revision) = ("carol".into(), 25);
        let closed = pb::GetChangeResponse {
            header: Some(pb::ReadHeader { revision: 40, ..Default::default() }),
            change: Some(applied),
            ..Default::default()
        };
        let text = render_show(&closed);
        assert!(text.contains("CLOSED     applied by carol at revision 25"), "{text}");
        assert!(!text.contains("applying it now"), "a closed request has no diff: {text}");
        assert_eq!(show_json(&closed)["diff"], Value::Null);
    }

    #[test]
    fn reviews_say_whether_the_change_applied() {
        let c = ChangeRef { namespace: "shop".into(), id: 7 };
        let header = Some(pb::WriteHeader { revision: 25, ..Default::default() });
        let applied = pb::ReviewChangeResponse { header, status: "applied".into(), approvals: 2 };
        assert_eq!(
            render_review(&c, pb::Verdict::Approve, &applied, None),
            "approved change 7 of shop: it applied at revision 25 (2 approval(s))"
        );
        let pending = pb::ReviewChangeResponse { header, status: "pending".into(), approvals: 1 };
        let text = render_review(&c, pb::Verdict::Approve, &pending, Some(2));
        assert!(text.contains("1 approval(s) of 2 required; nothing applied yet"), "{text}");
        let text = render_review(&c, pb::Verdict::Approve, &pending, None);
        assert!(text.contains("1 approval(s); nothing applied yet"), "{text}");
        let rejected = pb::ReviewChangeResponse { header, status: "rejected".into(), approvals: 0 };
        assert_eq!(
            render_review(&c, pb::Verdict::Reject, &rejected, None),
            "rejected change 7 of shop at revision 25; it will not apply"
        );
        let cancelled = pb::ReviewChangeResponse { header, status: "cancelled".into(), approvals: 0 };
        assert!(render_review(&c, pb::Verdict::Cancel, &cancelled, None).starts_with("cancelled change 7 of shop"));
    }

    #[test]
    fn the_change_commands_parse() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from(["vexilctl", "change", "approve", "shop", "7", "--reason", "lgtm"])
            .expect("parses");
        let crate::Command::Change(ChangeCommand::Approve(a)) = cli.command else { panic!("{:?}", cli.command) };
        assert_eq!((a.change.namespace.as_str(), a.change.id, a.reason.as_str()), ("shop", 7, "lgtm"));
        let cli = crate::Cli::try_parse_from(["vexilctl", "change", "list", "shop", "--all"]).expect("parses");
        assert!(matches!(cli.command, crate::Command::Change(ChangeCommand::List(ListArgs { all: true, .. }))));
        assert!(crate::Cli::try_parse_from(["vexilctl", "change", "show", "shop", "seven"]).is_err());
    }
}
