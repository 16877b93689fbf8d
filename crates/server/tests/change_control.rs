//! Change control on a real secure cluster (TLS, tokens): a namespace's policy is enforced by
//! the state machine, for every principal and on every node.
//!
//! - an editor's change to a protected flag opens a request and changes nothing; the author's
//!   own approval is refused; a second editor's approval applies it on every node, in the
//!   revision of the approval (whose audit entry precedes the change's);
//! - a request whose flag changed meanwhile never applies (`change.stale`);
//! - a break-glass disable applies at once, needs a reason, and is marked in the audit log;
//! - lifecycle and dependency refusals name their rule; a cascade disables the dependents in the
//!   same revision;
//! - the audit chain, with every new entry kind, verifies.

use vexil_client::admin::{AuditFilter, ReadOpts, WriteOpts};
use vexil_client::error::ErrorReason;
use vexil_client::{AdminClient, ConnectOptions, Error, TlsOptions};
use vexil_proto::v1::{Consistency, Role, Verdict};
use vexil_testkit::{Cluster, verify_chain};

const NS: &str = "payments";

fn options(c: &Cluster, secret: &str) -> ConnectOptions {
    ConnectOptions::new().token(secret).tls(TlsOptions::new(c.credentials().ca_pem()))
}

fn admin_as(c: &Cluster, secret: &str) -> AdminClient {
    AdminClient::new_with_options(c.api_addrs(), options(c, secret)).expect("client")
}

async fn editor(c: &Cluster, root: &AdminClient, name: &str) -> AdminClient {
    let token = root.create_token(name, Role::Editor, &[NS.to_string()], 0, WriteOpts::default()).await;
    admin_as(c, &token.unwrap_or_else(|e| panic!("token {name}: {e}")).secret)
}

fn flag(extra: &str) -> String {
    format!(
        r#"{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"on",
            "owner":"payments-team","description":"d","expires_at":"2099-01-01T00:00:00Z"{extra}}}"#
    )
}

/// The rule a refusal names (`RULE_VIOLATED`'s message says "refused by rule <rule> (...)").
fn rule(e: Error) -> String {
    match e {
        Error::Server { reason: Some(ErrorReason::RuleViolated), message, .. } => message
            .strip_prefix("refused by rule ")
            .and_then(|m| m.split_whitespace().next())
            .unwrap_or_else(|| panic!("no rule in {message:?}"))
            .to_string(),
        other => panic!("expected RULE_VIOLATED, got {other:?}"),
    }
}

/// The flag as node `id` has it once it applied `revision`.
async fn on_node(c: &Cluster, secret: &str, id: u64, key: &str, revision: u64) -> Option<vexil_proto::v1::Flag> {
    let one = AdminClient::new_with_options([c.api_addr(id)], options(c, secret))
        .expect("client")
        .with_read(ReadOpts { consistency: Consistency::Stale, min_revision: revision });
    match one.get_flag(NS, key).await {
        Ok(r) => Some(r.value),
        Err(Error::NotFound { .. }) => None,
        Err(e) => panic!("node {id}: {e}"),
    }
}

async fn audit(root: &AdminClient, key: &str) -> Vec<vexil_proto::v1::AuditEntry> {
    let filter = AuditFilter { namespace: NS.into(), key: key.into(), ..AuditFilter::default() };
    root.list_audit(&filter).await.expect("audit").value
}

/// Every node holds the same audit chain, and it verifies.
async fn same_verified_chain_everywhere(c: &Cluster, secret: &str) {
    let root = admin_as(c, secret);
    let head = root.list_audit(&AuditFilter::default()).await.expect("audit").value;
    let revision = head.last().map_or(0, |e| e.revision);
    for id in c.ids() {
        let one = AdminClient::new_with_options([c.api_addr(id)], options(c, secret))
            .expect("client")
            .with_read(ReadOpts { consistency: Consistency::Stale, min_revision: revision });
        let entries = one.list_audit(&AuditFilter { to_revision: revision, ..AuditFilter::default() }).await;
        let entries = entries.expect("audit").value;
        verify_chain(&entries).unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert_eq!(entries, head, "node {id} holds the same chain");
    }
}

#[tokio::test]
async fn a_protected_change_waits_for_another_editor_and_applies_everywhere_in_one_revision() {
    let c = Cluster::builder(3).bin(env!("CARGO_BIN_EXE_vexil")).secure().start().await;
    let secret = c.credentials().admin_token().to_string();
    let root = admin_as(&c, &secret);
    let (alice, bob) = (editor(&c, &root, "alice").await, editor(&c, &root, "bob").await);

    // Before a policy: plain writes.
    let plain = alice.create_flag(NS, "banner", &flag(""), WriteOpts::default()).await.expect("create");
    assert_eq!((plain.version, plain.change_id), (1, 0));

    // Only an admin sets a policy; a bad one names its field.
    let policy = r#"{"approval": {"covers": {"tags": ["critical"]}, "approvals": 1}}"#;
    let denied = alice.set_namespace_policy(NS, policy, None, WriteOpts::default()).await.unwrap_err();
    assert!(matches!(denied, Error::PermissionDenied { .. }), "{denied:?}");
    let bad = root.set_namespace_policy(NS, r#"{"approval": {"approvals": 0}}"#, None, WriteOpts::default()).await;
    assert!(matches!(&bad, Err(Error::Invalid { field, .. }) if field == "approval.approvals"), "{bad:?}");
    root.set_namespace_policy(NS, policy, Some(0), WriteOpts::reason("payments need four eyes")).await.expect("policy");
    let (stored, version) = root.namespace_policy(NS).await.expect("policy").value;
    assert_eq!(version, 1);
    assert!(stored.contains(r#""author_may_approve":false"#), "{stored}");

    // An editor's change to a protected flag opens a request and changes nothing.
    let opened = alice
        .create_flag(NS, "checkout", &flag(r#","tags":["critical"]"#), WriteOpts::reason("new checkout"))
        .await
        .expect("proposed");
    assert!(opened.change_id > 0 && opened.version == 0, "{opened:?}");
    assert!(on_node(&c, &secret, 1, "checkout", opened.revision).await.is_none());
    let listed = bob.list_changes(NS, false).await.expect("list").value;
    assert_eq!(
        listed.iter().map(|r| (r.id, r.status.as_str(), r.author.as_str())).collect::<Vec<_>>(),
        [(opened.change_id, "pending", "alice")]
    );
    let shown = bob.get_change(NS, opened.change_id).await.expect("show");
    assert_eq!(
        shown.diff.iter().map(|d| (d.key.as_str(), d.change.as_str())).collect::<Vec<_>>(),
        [("checkout", "added")]
    );

    // The author's own approval is refused, naming the rule; an unknown id is CHANGE_NOT_FOUND.
    let own = alice.review_change(NS, opened.change_id, Verdict::Approve, WriteOpts::default()).await.unwrap_err();
    assert_eq!(rule(own), "approval.author");
    let missing = bob.review_change(NS, 999, Verdict::Approve, WriteOpts::default()).await.unwrap_err();
    assert!(matches!(missing, Error::Server { reason: Some(ErrorReason::ChangeNotFound), .. }), "{missing:?}");

    // A second editor's approval applies it, on every node, in the approval's revision.
    let approved = bob.review_change(NS, opened.change_id, Verdict::Approve, WriteOpts::reason("lgtm")).await;
    let approved = approved.expect("approved");
    assert_eq!(approved.status, "applied");
    let revision = approved.header.expect("header").revision;
    for id in c.ids() {
        let f = on_node(&c, &secret, id, "checkout", revision).await.unwrap_or_else(|| panic!("node {id}"));
        assert_eq!((f.mod_revision, f.updated_by.as_str()), (revision, "alice"), "node {id}");
    }
    let history = audit(&root, "checkout").await;
    let at: Vec<(&str, &str, &str)> = history
        .iter()
        .filter(|e| e.revision == revision)
        .map(|e| (e.action.as_str(), e.actor.as_str(), e.request_id.as_str()))
        .collect();
    let change_request = format!("change/{}", opened.change_id);
    assert_eq!(at[0].0, "change.approve");
    assert_eq!((at[0].1, at[1]), ("bob", ("flag.create", "alice", change_request.as_str())));
    let again = bob.review_change(NS, opened.change_id, Verdict::Approve, WriteOpts::default()).await.unwrap_err();
    assert_eq!(rule(again), "change.closed");

    // A request whose flag changed meanwhile never applies.
    let stale = alice
        .update_flag(
            NS,
            "checkout",
            &flag(r#","tags":["critical"],"defaultVariant":"off""#),
            None,
            WriteOpts::default(),
        )
        .await
        .expect("proposed");
    assert!(stale.change_id > 0, "{stale:?}");
    // The kill switch, break-glass: at once, but only with a reason.
    let no_reason = bob.disable_flag(NS, "checkout", None, false, true, WriteOpts::default()).await.unwrap_err();
    assert_eq!(rule(no_reason), "break_glass.reason");
    let glass = bob
        .disable_flag(NS, "checkout", None, false, true, WriteOpts::reason("checkout errors at 30%"))
        .await
        .expect("break-glass");
    assert_eq!(glass.change_id, 0, "break-glass applies at once");
    for id in c.ids() {
        let f = on_node(&c, &secret, id, "checkout", glass.revision).await.expect("flag");
        assert!(f.spec_json.contains("DISABLED"), "node {id}: {}", f.spec_json);
    }
    let marked: Vec<String> =
        audit(&root, "checkout").await.into_iter().filter(|e| e.revision == glass.revision).map(|e| e.action).collect();
    assert_eq!(marked, ["flag.break_glass", "flag.set_state"]);
    // Without break-glass the same disable waits for approval.
    let waits = bob.set_flag_state(NS, "checkout", true, None, WriteOpts::default()).await.expect("proposed");
    assert!(waits.change_id > 0);
    let refused = bob.review_change(NS, stale.change_id, Verdict::Approve, WriteOpts::default()).await.unwrap_err();
    assert_eq!(rule(refused), "change.stale");
    let listed = root.list_changes(NS, false).await.expect("list").value;
    let stale_view = listed.iter().find(|r| r.id == stale.change_id).expect("still listed");
    assert_eq!((stale_view.status.as_str(), stale_view.stale_key.as_str()), ("stale", "checkout"));
    let f = on_node(&c, &secret, 2, "checkout", 0).await.expect("flag");
    assert!(f.spec_json.contains(r#""defaultVariant":"on""#), "the stale update never applied: {}", f.spec_json);
    // Its author withdraws it; another editor may not.
    let not_theirs = bob.review_change(NS, stale.change_id, Verdict::Cancel, WriteOpts::default()).await.unwrap_err();
    assert_eq!(rule(not_theirs), "approval.cancel");
    let cancelled = alice.review_change(NS, stale.change_id, Verdict::Cancel, WriteOpts::default()).await;
    assert_eq!(cancelled.expect("cancelled").status, "cancelled");

    // The audit chain, with every new kind of entry, verifies; the flag's history has the
    // request and its approval in order.
    let kinds: Vec<String> = audit(&root, "checkout").await.into_iter().map(|e| e.action).collect();
    let first = |k: &str| kinds.iter().position(|a| a == k).unwrap_or_else(|| panic!("{k} in {kinds:?}"));
    assert!(first("change.propose") < first("change.approve") && first("change.approve") < first("flag.create"));
    same_verified_chain_everywhere(&c, &secret).await;
}

#[tokio::test]
async fn lifecycle_and_dependency_rules_are_named_and_a_cascade_is_one_revision() {
    let c = Cluster::builder(3).bin(env!("CARGO_BIN_EXE_vexil")).secure().start().await;
    let secret = c.credentials().admin_token().to_string();
    let root = admin_as(&c, &secret);
    let alice = editor(&c, &root, "alice").await;
    root.set_namespace_policy(NS, "{}", None, WriteOpts::default()).await.expect("policy");

    // Lifecycle gates (defaults: `active` needs an owner, a description and an expiry).
    let bare = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
    let e = alice.create_flag(NS, "bare", bare, WriteOpts::default()).await.unwrap_err();
    assert_eq!(rule(e), "lifecycle.active.owner");
    alice.create_flag(NS, "base", &flag(""), WriteOpts::default()).await.expect("base");
    let e = alice
        .update_flag(NS, "base", &flag(r#","lifecycle":"retired""#), None, WriteOpts::default())
        .await
        .unwrap_err();
    assert_eq!(rule(e), "lifecycle.retired.disabled");

    // Dependencies: missing, a cycle, enabled dependents.
    let e = alice.create_flag(NS, "orphan", &flag(r#","depends_on":["nope"]"#), WriteOpts::default()).await;
    assert_eq!(rule(e.unwrap_err()), "dependency.missing");
    alice.create_flag(NS, "mid", &flag(r#","depends_on":["base"]"#), WriteOpts::default()).await.expect("mid");
    alice.create_flag(NS, "top", &flag(r#","depends_on":["mid"]"#), WriteOpts::default()).await.expect("top");
    let e = alice.update_flag(NS, "base", &flag(r#","depends_on":["top"]"#), None, WriteOpts::default()).await;
    assert_eq!(rule(e.unwrap_err()), "dependency.cycle");
    let e = alice.set_flag_state(NS, "base", false, None, WriteOpts::default()).await.unwrap_err();
    assert_eq!(rule(e), "dependency.enabled_dependents");

    // A cascade disables the flag and its dependents in one revision, on every node.
    let cascade = alice.disable_flag(NS, "base", None, true, false, WriteOpts::reason("base is broken")).await;
    let revision = cascade.expect("cascade").revision;
    for id in c.ids() {
        for key in ["base", "mid", "top"] {
            let f = on_node(&c, &secret, id, key, revision).await.expect("flag");
            assert!(f.spec_json.contains("DISABLED") && f.mod_revision == revision, "node {id} {key}: {f:?}");
        }
    }
    // Enabling a dependent while its dependency is off is refused.
    let e = alice.set_flag_state(NS, "top", true, None, WriteOpts::default()).await.unwrap_err();
    assert_eq!(rule(e), "dependency.disabled");
    same_verified_chain_everywhere(&c, &secret).await;
}
