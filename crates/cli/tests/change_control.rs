//! Change control through `vexilctl` on a real secure cluster, as two editors and an admin use
//! it: the admin sets a policy; an editor's update opens a request; `change list`/`show` show it
//! with its diff; the author's approval is refused naming the rule; the other editor's applies
//! it; a break-glass disable applies at once; `flag history` shows the request, the approval,
//! the change and the break-glass in order; `audit verify` accepts the chain with every new
//! kind of entry.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Out, ctl};
use vexil_testkit::Cluster;

const SPEC: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
  "owner":"shop-team","description":"the new checkout","expires_at":"2099-01-01T00:00:00Z","tags":["critical"]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_editors_and_a_policy_through_vexilctl() {
    let c = Cluster::builder(3).write_timeout_ms(5000).rpc_timeout_ms(1000).secure().start().await;
    let ca = c.credentials().ca_file().to_string_lossy().into_owned();
    let endpoints = c.endpoints(&[1, 2, 3]);
    let as_token = |token: &str, args: &[&str]| {
        let mut all = vec!["--cacert".to_string(), ca.clone(), "--endpoints".into(), endpoints.clone()];
        all.extend(["--token".to_string(), token.to_string()]);
        all.extend(args.iter().map(|s| s.to_string()));
        all
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl(&refs).await
    };
    let admin = c.credentials().admin_token().to_string();
    let editor = |name: &'static str| {
        let args =
            as_token(&admin, &["token", "create", name, "--role", "editor", "--namespace", "shop", "--output", "json"]);
        async move { run(args).await.json()["secret"].as_str().unwrap().to_string() }
    };
    let (alice, bob) = (editor("alice").await, editor("bob").await);

    let flag = |who: &str, args: &[&str]| as_token(who, &[&["flag"], args].concat());
    run(flag(&alice, &["create", "shop", "checkout", "--spec", SPEC])).await.ok();
    let policy = r#"{"approval": {"covers": {"tags": ["critical"]}}}"#;
    run(as_token(&admin, &["namespace", "policy", "set", "shop", "--json", policy])).await.ok();
    let shown = run(as_token(&alice, &["namespace", "policy", "get", "shop", "--output", "json"])).await.json();
    assert_eq!(shown["version"], 1, "{shown}");

    // An editor's update opens a request; nothing applies.
    let on = SPEC.replace(r#""defaultVariant":"off""#, r#""defaultVariant":"on""#);
    let held =
        run(flag(&alice, &["update", "shop", "checkout", "--spec", &on, "--reason", "go live", "--output", "json"]))
            .await
            .json();
    let id = held["change_id"].as_u64().unwrap_or_else(|| panic!("a change id: {held}"));
    assert!(id > 0, "{held}");
    let get = run(flag(&bob, &["get", "shop", "checkout", "--output", "json"])).await.json();
    assert_eq!(get["flag"]["spec"]["defaultVariant"], "off", "unchanged until approved: {get}");
    let id_arg = id.to_string();
    let listed = run(as_token(&bob, &["change", "list", "shop"])).await;
    assert!(listed.ok().contains("pending") && listed.ok().contains("alice"), "{}", listed.ok());
    let show = run(as_token(&bob, &["change", "show", "shop", &id_arg])).await;
    assert!(show.ok().contains("defaultVariant"), "the diff names the field:\n{}", show.ok());

    // The author may not approve; another editor's approval applies it.
    let own: Out = run(as_token(&alice, &["change", "approve", "shop", &id_arg])).await;
    assert!(own.fails(1).contains("approval.author"), "{}", own.stderr);
    let approved = run(as_token(&bob, &["change", "approve", "shop", &id_arg, "--reason", "lgtm", "--output", "json"]))
        .await
        .json();
    assert_eq!(approved["status"], "applied", "{approved}");
    let get = run(flag(&bob, &["get", "shop", "checkout", "--output", "json"])).await.json();
    assert_eq!(get["flag"]["spec"]["defaultVariant"], "on", "applied: {get}");

    // Break-glass needs a reason, then applies at once.
    let no_reason = run(flag(&bob, &["disable", "shop", "checkout", "--break-glass"])).await;
    assert!(no_reason.fails(2).contains("--reason"), "{}", no_reason.stderr);
    run(flag(&bob, &["disable", "shop", "checkout", "--break-glass", "--reason", "incident 9"])).await.ok();

    // The history shows the request, its approval, the change it applied and the break-glass,
    // in that order.
    let history = run(flag(&bob, &["history", "shop", "checkout"])).await;
    let text = history.ok();
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle:?} in:\n{text}"));
    let proposed = at(&format!("change {id} proposed"));
    let applied = at(&format!("approved change {id} (1/1)"));
    let glass = at("BREAK-GLASS: incident 9");
    assert!(proposed < applied && applied < glass, "{text}");
    run(as_token(&admin, &["audit", "verify"])).await.ok();
}
