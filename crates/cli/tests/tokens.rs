//! `vexilctl` against a real secure cluster (TLS on every port, tokens checked): an admin
//! creates, lists and revokes tokens; an editor's token works in its namespace only and is the
//! audit actor of its changes; a missing, insufficient or revoked token gets the advice that
//! fixes it. Alarms are listed by any role and cleared by an admin only.

mod common;

use common::ctl;
use vexil_testkit::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_tokens_and_each_token_does_what_its_role_allows() {
    let c = Cluster::builder(3).write_timeout_ms(5000).rpc_timeout_ms(1000).secure().start().await;
    let ca = c.credentials().ca_file().to_string_lossy().into_owned();
    let endpoints = c.endpoints(&[1, 2, 3]);
    let admin = c.credentials().admin_token().to_string();
    let as_token = |token: &str, args: &[&str]| {
        let mut all = vec!["--cacert", ca.as_str(), "--endpoints", endpoints.as_str()];
        if !token.is_empty() {
            all.extend(["--token", token]);
        }
        all.extend(args);
        all.into_iter().map(str::to_string).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl(&refs).await
    };

    let created = run(as_token(
        &admin,
        &[
            "token",
            "create",
            "ci",
            "--role",
            "editor",
            "--namespace",
            "checkout",
            "--reason",
            "pipeline",
            "--output",
            "json",
        ],
    ))
    .await
    .json();
    let ci = created["secret"].as_str().expect("the secret, once").to_string();
    assert!(ci.starts_with("vexil_"), "{created}");

    let listed = run(as_token(&admin, &["token", "list"])).await;
    let table = listed.ok();
    assert!(table.contains("ci") && table.contains("editor") && table.contains("checkout"), "{table}");
    assert!(!table.contains(&ci) && !table.contains(&admin), "a listing never shows a secret:\n{table}");

    let spec = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}"#;
    run(as_token(&ci, &["flag", "create", "checkout", "banner", "--spec", spec, "--reason", "launch"])).await.ok();
    let denied = run(as_token(&ci, &["flag", "create", "billing", "banner", "--spec", spec])).await;
    let msg = denied.fails(1);
    assert!(msg.contains("\"ci\"") && msg.contains("editor of namespace \"billing\""), "{msg}");
    let anonymous = run(as_token("", &["flag", "list", "checkout"])).await;
    let msg = anonymous.fails(1);
    assert!(msg.contains("--token") && msg.contains("VEXIL_TOKEN"), "{msg}");
    let not_admin = run(as_token(&ci, &["token", "list"])).await;
    assert!(not_admin.fails(1).contains("role admin"), "{}", not_admin.stderr);

    // The editor is the actor of its change.
    let audit = run(as_token(&admin, &["audit", "list", "--output", "json"])).await.json();
    let entries = audit["entries"].as_array().expect("entries");
    let actor_of = |action: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["actor"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(actor_of("flag.create"), ["ci"], "{audit}");
    assert_eq!(actor_of("token.create"), ["bootstrap", "admin"], "{audit}");
    let verified = run(as_token(&admin, &["audit", "verify", "--output", "json"])).await.json();
    assert_eq!(verified["ok"], true, "{verified}");

    // Alarms: any role may list them, only an admin clears them.
    assert_eq!(run(as_token(&ci, &["cluster", "alarm", "list"])).await.ok().trim(), "no alarms");
    let cleared = run(as_token(&ci, &["cluster", "alarm", "clear"])).await;
    assert!(cleared.fails(1).contains("role admin"), "{}", cleared.stderr);
    let cleared = run(as_token(&admin, &["cluster", "alarm", "clear", "--output", "json"])).await.json();
    assert_eq!(cleared["cleared"], serde_json::json!([]), "{cleared}");

    run(as_token(&admin, &["token", "revoke", "ci", "--reason", "rotated"])).await.ok();
    let revoked = run(as_token(&ci, &["flag", "list", "checkout"])).await;
    assert!(revoked.fails(1).contains("not known"), "{}", revoked.stderr);
    let again = run(as_token(&admin, &["token", "revoke", "ci"])).await;
    assert!(again.fails(1).contains("ci"), "{}", again.stderr);
}
