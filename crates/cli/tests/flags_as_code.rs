//! Flags as code and a flag's life, driven through the `vexilctl` binary against a real
//! three-node cluster: apply / dry-run / export round trip, history and rollback, the change
//! stream of `audit tail --follow`, and the exit codes and messages scripts rely on.

// Helpers outside `#[test]` functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{ctl, ctl_command, temp_file};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use vexil_model::NamespaceDocument;
use vexil_testkit::Listener;

fn doc_v1() -> Value {
    json!({
        "flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"$ref": "beta"}, "on", null]},
                "owner": "checkout-team",
                "lifecycle": "in_flight"
            },
            "color": {"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "red"},
            "old-search": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}
        },
        "$evaluators": {"beta": {"ends_with": [{"var": "email"}, "@beta.example"]}},
        "metadata": {"flagSetId": "shop", "team": "web"}
    })
}

fn doc_v2() -> Value {
    let mut v = doc_v1();
    v["flags"]["new-checkout"]["defaultVariant"] = json!("on");
    v["flags"]["new-checkout"]["tags"] = json!(["q3"]);
    v["flags"].as_object_mut().unwrap().remove("old-search");
    v["flags"]["beta-banner"] =
        json!({"state": "ENABLED", "variants": {"a": "Hello", "b": "Hi"}, "defaultVariant": "a"});
    v
}

/// Masks what changes from run to run: the revision a dry run was computed at.
fn mask_revision(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("at revision ") {
            Some(i) => {
                let rest = &l[i + "at revision ".len()..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                format!("{}at revision <REV>{}", &l[..i], &rest[digits..])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn apply_dry_run_and_export_round_trip() {
    let c = common::start(3, &[]).await;
    let ep = c.endpoints(&[1, 2, 3]);
    let (_d1, v1) = temp_file("v1.json", &doc_v1().to_string());
    let (_d2, v2) = temp_file("v2.json", &doc_v2().to_string());

    // A dry run against the empty namespace lists every flag as added and changes nothing.
    let out = ctl(&["apply", "-f", &v1, "--dry-run", "--endpoints", &ep, "--output", "json"]).await;
    let dry = out.json();
    assert_eq!(dry["namespace"], "shop", "the namespace comes from metadata.flagSetId");
    assert_eq!(dry["added"], json!(["color", "new-checkout", "old-search"]));
    assert_eq!(dry["settings_changed"], true);
    let listed = ctl(&["flag", "list", "shop", "--endpoints", &ep, "--output", "json"]).await.json();
    assert_eq!(listed["flags"], json!([]), "a dry run must not write");

    let out = ctl(&["apply", "-f", &v1, "-n", "shop", "--reason", "initial import", "--endpoints", &ep]).await;
    assert!(out.ok().contains("3 created, 0 updated, 0 deleted"), "{}", out.stdout);

    // Export, then apply the export: nothing to change, and the same document.
    let exported = ctl(&["export", "-n", "shop", "--endpoints", &ep]).await.ok().to_string();
    let (_d3, exported_path) = temp_file("exported.json", &exported);
    let again =
        ctl(&["apply", "-f", &exported_path, "-n", "shop", "--dry-run", "--endpoints", &ep, "--output", "json"])
            .await
            .json();
    assert_eq!((&again["added"], &again["removed"], &again["changed"]), (&json!([]), &json!([]), &json!([])));
    assert_eq!(again["settings_changed"], false);
    assert_eq!(again["unchanged"], 3);
    assert_eq!(
        NamespaceDocument::from_json(&exported).expect("export is a valid document"),
        NamespaceDocument::from_value(&doc_v1()).expect("v1 is valid"),
        "the export is the applied document"
    );
    let noop = ctl(&["apply", "-f", &exported_path, "-n", "shop", "--endpoints", &ep]).await;
    assert!(noop.ok().contains("already matches"), "{}", noop.stdout);

    // The human dry-run report of a real change (added, changed with field diffs, removed).
    let out = ctl(&["apply", "-f", &v2, "-n", "shop", "--dry-run", "--endpoints", &ep]).await;
    insta::assert_snapshot!("apply_dry_run_v1_to_v2", mask_revision(out.ok()));

    let out = ctl(&["apply", "-f", &v2, "-n", "shop", "--endpoints", &ep, "--output", "json"]).await.json();
    assert_eq!(
        (&out["created"], &out["updated"], &out["deleted"], &out["unchanged"]),
        (&json!(1), &json!(1), &json!(1), &json!(1))
    );
    let applied_at = out["revision"].as_u64().expect("revision");
    // One atomic change: every audit entry of the apply carries the same revision.
    let audit = ctl(&[
        "audit",
        "list",
        "-n",
        "shop",
        "--from-revision",
        &applied_at.to_string(),
        "--endpoints",
        &ep,
        "--output",
        "json",
    ])
    .await
    .json();
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3, "{audit}");
    assert!(entries.iter().all(|e| e["revision"] == applied_at), "{audit}");

    // Round trip again after the change.
    let exported = ctl(&["export", "-n", "shop", "--endpoints", &ep]).await.ok().to_string();
    assert_eq!(NamespaceDocument::from_json(&exported).unwrap(), NamespaceDocument::from_value(&doc_v2()).unwrap());
    let (_d4, file_out) = temp_file("placeholder", "");
    let out = ctl(&["export", "-n", "shop", "-f", &file_out, "--endpoints", &ep]).await;
    assert!(out.ok().contains("exported 3 flag(s) of shop"), "{}", out.stdout);
    let written = std::fs::read_to_string(&file_out).unwrap();
    assert_eq!(NamespaceDocument::from_json(&written).unwrap(), NamespaceDocument::from_value(&doc_v2()).unwrap());

    // Inputs: a missing file and an invalid document fail (1) naming the problem; no
    // namespace at all is bad usage (2).
    let err = ctl(&["apply", "-f", "/no/such/flags.json", "-n", "shop", "--endpoints", &ep]).await;
    assert!(err.fails(1).contains("/no/such/flags.json"));
    let (_d5, bad) = temp_file("bad.json", r#"{"flags": {"x": {"state": "ON", "variants": {"a": 1}}}}"#);
    let err = ctl(&["apply", "-f", &bad, "-n", "shop", "--endpoints", &ep]).await;
    assert!(err.fails(1).contains("flags.x.state"), "{}", err.stderr);
    let (_d6, no_ns) = temp_file("no-ns.json", r#"{"flags": {}}"#);
    let err = ctl(&["apply", "-f", &no_ns, "--endpoints", &ep]).await;
    assert!(err.fails(2).contains("--namespace"), "{}", err.stderr);
}

/// Masks times and revisions in the history table (they differ per run) and collapses column
/// padding (whose width follows the masked values).
fn mask_history(text: &str) -> String {
    text.lines()
        .map(|l| {
            let mut l = l.to_string();
            let digits = l.chars().take_while(char::is_ascii_digit).count();
            if digits > 0 {
                l = format!("<REV>{}", &l[digits..]);
            }
            if let Some(i) = l.find("rollback to revision ") {
                let start = i + "rollback to revision ".len();
                let n = l[start..].chars().take_while(char::is_ascii_digit).count();
                l = format!("{}<REV>{}", &l[..start], &l[start + n..]);
            }
            let words: Vec<String> = l
                .split("  ")
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    let s = s.trim();
                    if s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T' {
                        "<TIME>".to_string()
                    } else {
                        s.to_string()
                    }
                })
                .collect();
            let indent = if l.starts_with(' ') { "  ... " } else { "" };
            format!("{indent}{}", words.join("  "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn history_rollback_and_the_change_stream() {
    let c = common::start(3, &[]).await;
    let ep = c.endpoints(&[1, 2, 3]);
    let v1 = json!({"state": "ENABLED", "variants": {"a": "Welcome", "b": "Hello"}, "defaultVariant": "a"});
    let v2 = json!({"state": "ENABLED", "variants": {"a": "Welcome", "b": "Hello"}, "defaultVariant": "b",
                    "targeting": {"fractional": [["a", 50], ["b", 50]]}});

    // Follow the audit log from now on, in JSON lines.
    let mut tail = ctl_command(&["audit", "tail", "--follow", "--lines", "0", "--output", "json", "--endpoints", &ep])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn audit tail");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();

    ctl(&["flag", "create", "shop", "banner", "--spec", &v1.to_string(), "--reason", "launch", "--endpoints", &ep])
        .await
        .ok();
    let out = ctl(&[
        "flag",
        "update",
        "shop",
        "banner",
        "--spec",
        &v2.to_string(),
        "--expected-version",
        "1",
        "--reason",
        "a/b test",
        "--endpoints",
        &ep,
    ])
    .await;
    assert!(out.ok().contains("version 2"), "{}", out.stdout);
    ctl(&["flag", "disable", "shop", "banner", "--reason", "incident 4711", "--endpoints", &ep]).await.ok();

    // The stream printed the three changes, in order.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .expect("audit tail --follow printed the change within 15s")
            .expect("read")
            .expect("a line");
        let e: Value = serde_json::from_str(&line).expect("JSON line");
        seen.push((e["action"].as_str().unwrap().to_string(), e["reason"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        seen,
        [("flag.create", "launch"), ("flag.update", "a/b test"), ("flag.set_state", "incident 4711")]
            .map(|(a, r)| (a.to_string(), r.to_string()))
    );
    let _ = tail.kill().await;

    // A stale compare-and-set fails with exit 1 and says which version to retry with.
    let err = ctl(&[
        "flag",
        "update",
        "shop",
        "banner",
        "--spec",
        &v1.to_string(),
        "--expected-version",
        "1",
        "--endpoints",
        &ep,
    ])
    .await;
    assert!(err.fails(1).contains("--expected-version 3"), "{}", err.stderr);

    let history = ctl(&["flag", "history", "shop", "banner", "--endpoints", &ep, "--output", "json"]).await.json();
    let created_at = history[0]["revision"].as_u64().expect("revision of the create");
    assert_eq!(history[1]["changes"].as_array().map(|c| c.len()), Some(2), "defaultVariant and targeting: {history}");

    // Roll back to the first definition: a new, audited change (version 4), same definition.
    let out = ctl(&[
        "flag",
        "rollback",
        "shop",
        "banner",
        "--to",
        &created_at.to_string(),
        "--reason",
        "copy review",
        "--endpoints",
        &ep,
    ])
    .await;
    assert!(out.ok().contains("version 4"), "{}", out.stdout);
    let got = ctl(&["flag", "get", "shop", "banner", "--endpoints", &ep, "--output", "json"]).await.json();
    let canonical = vexil_model::FlagSpec::from_value("banner", &v1, "").expect("valid").to_value();
    assert_eq!(got["flag"]["spec"], canonical, "the definition of the create is back");
    assert_eq!(got["flag"]["version"], 4);
    let history = ctl(&["flag", "history", "shop", "banner", "--endpoints", &ep, "--output", "json"]).await.json();
    let last = &history[3];
    assert_eq!(last["action"], "flag.update");
    assert_eq!(last["reason"], format!("rollback to revision {created_at}: copy review"));
    // Rolling back again to the same revision changes nothing.
    let out = ctl(&["flag", "rollback", "shop", "banner", "--to", &created_at.to_string(), "--endpoints", &ep]).await;
    assert!(out.ok().contains("nothing changed"), "{}", out.stdout);
    // Before the flag existed there is nothing to restore.
    let err = ctl(&["flag", "rollback", "shop", "banner", "--to", "1", "--endpoints", &ep]).await;
    assert!(err.fails(1).contains("did not exist at revision 1"), "{}", err.stderr);

    let human = ctl(&["flag", "history", "shop", "banner", "--endpoints", &ep]).await;
    insta::assert_snapshot!("flag_history", mask_history(human.ok()));

    // And the audit chain of all this verifies.
    let v = ctl(&["audit", "verify", "--endpoints", &ep, "--output", "json"]).await.json();
    assert_eq!(v["ok"], true);
}

#[tokio::test]
async fn cluster_status_and_flag_commands_in_a_table() {
    let c = common::start(3, &[]).await;
    let ep = c.endpoints(&[1, 2, 3]);
    let status = ctl(&["cluster", "status", "--endpoints", &ep]).await;
    let text = status.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "ADDRESS", "MEMBER", "ROLE", "TERM", "APPLIED", "LAG", "LEADER"]
    );
    assert_eq!(lines[1..4].iter().filter(|l| l.contains(" leader ")).count(), 1, "{text}");
    assert_eq!(lines[1..4].iter().filter(|l| l.contains(" follower ")).count(), 2, "{text}");
    assert!(text.contains("leader: node "), "{text}");
    let out = ctl(&["cluster", "snapshot", "--node", "2", "--endpoints", &ep, "--output", "json"]).await.json();
    assert_eq!(out["node_id"], 2);
    assert!(out["last_included_index"].as_u64() > Some(0), "{out}");

    let spec = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}).to_string();
    ctl(&["flag", "create", "shop", "dark-mode", "--spec", &spec, "--endpoints", &ep]).await.ok();
    let list = ctl(&["flag", "list", "shop", "--endpoints", &ep]).await;
    assert!(list.ok().starts_with("KEY"), "{}", list.stdout);
    assert!(list.stdout.contains("dark-mode  ENABLED"), "{}", list.stdout);
    let eval = ctl(&[
        "flag",
        "eval",
        "shop",
        "dark-mode",
        "--context",
        r#"{"targetingKey":"u1"}"#,
        "--endpoints",
        &ep,
        "--output",
        "json",
    ])
    .await
    .json();
    assert_eq!((&eval["value"], &eval["reason"]), (&json!(false), &json!("STATIC")));
    ctl(&["flag", "enable", "shop", "dark-mode", "--endpoints", &ep]).await.ok();
    let out = ctl(&["flag", "delete", "shop", "dark-mode", "--reason", "done", "--endpoints", &ep]).await;
    assert!(out.ok().starts_with("deleted shop/dark-mode"), "{}", out.stdout);
    let err = ctl(&["flag", "get", "shop", "dark-mode", "--endpoints", &ep]).await;
    assert!(err.fails(1).contains("vexilctl flag list shop"), "{}", err.stderr);
    let err = ctl(&["flag", "create", "shop", "x", "--spec", "{\"state\":\"ON\"}", "--endpoints", &ep]).await;
    assert!(err.fails(1).contains("`state`"), "{}", err.stderr);

    // Bad usage is exit 2 (clap's own errors included).
    ctl(&["flag", "update", "shop", "x", "--endpoints", &ep]).await.fails(2);
    ctl(&["cluster", "promote", "--endpoints", &ep]).await.fails(2);
    ctl(&["flag", "eval", "shop", "x", "--context", "[1]", "--endpoints", &ep]).await.fails(2);
    ctl(&["cluster", "init", "--member", "one=a/b", "--endpoints", &ep]).await.fails(2);
    // Initialising twice is refused with a pointer to `cluster status`.
    let member = format!("1={}/{}", c.addr(1, Listener::Api), c.addr(1, Listener::Raft));
    let err = ctl(&["cluster", "init", "--member", &member, "--endpoints", &ep]).await;
    assert!(err.fails(1).contains("already initialised"), "{}", err.stderr);
}

#[tokio::test]
async fn an_unreachable_cluster_fails_with_a_hint() {
    let err = ctl(&["cluster", "status", "--endpoints", "127.0.0.1:1"]).await;
    assert!(err.fails(1).contains("--endpoints"), "{}", err.stderr);
    let (_d, cfg) = temp_file("vexilctl.toml", "endpoints = [\"127.0.0.1:1\"]\n");
    let err = ctl(&["cluster", "status", "--config", &cfg]).await;
    assert!(err.fails(1).contains("127.0.0.1:1"), "{}", err.stderr);
    let (_d, bad) = temp_file("vexilctl.toml", "endpoint = 1\n");
    ctl(&["cluster", "status", "--config", &bad]).await.fails(2);
}

/// flagd's own shared test flag set (open-feature/flagd-testbed, `flags/testkit-flags.json`)
/// loads as flagd loads it: applied whole, with a warning for each rule flagd would evaluate to
/// null or PARSE_ERROR; refused with `--strict`, naming the field; the dry run shows the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagds_own_test_flag_set_applies_with_warnings_and_strict_refuses_it() {
    let c = common::start(3, &[]).await;
    let ep = c.endpoints(&[1, 2, 3]);
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flagd-testbed-flags.json");
    let flags = serde_json::from_str::<Value>(&std::fs::read_to_string(file).unwrap()).unwrap()["flags"]
        .as_object()
        .unwrap()
        .len();

    let strict = ctl(&["apply", "-f", file, "-n", "testbed", "--strict", "--endpoints", &ep]).await;
    let err = strict.fails(1);
    assert!(err.contains("`flags.") && err.contains(".targeting`"), "names the field: {err}");
    let dry = ctl(&["apply", "-f", file, "-n", "testbed", "--dry-run", "--endpoints", &ep, "--output", "json"]).await;
    let dry_warnings = dry.json()["warnings"].as_array().unwrap().len();
    // ends_with, starts_with and sem_ver (twice) with unusable arguments, zero and negative
    // fractional weights, a `$ref` to a missing evaluator.
    assert_eq!(dry_warnings, 7, "{}", dry.stdout);

    let out = ctl(&["apply", "-f", file, "-n", "testbed", "--endpoints", &ep, "--output", "json"]).await;
    let applied = out.json();
    assert_eq!(applied["created"].as_u64(), Some(flags as u64), "every flag applied: {applied}");
    assert_eq!(applied["warnings"].as_array().unwrap().len(), dry_warnings);
    let printed = out.stderr.lines().filter(|l| l.starts_with("warning: `flags.")).count();
    assert_eq!(printed, dry_warnings, "each warning on stderr too:\n{}", out.stderr);

    // A namespace can make strict the rule for every write to it: the same document, unchanged,
    // is refused now without --strict, and the setting reads back and is audited.
    let set =
        ctl(&["namespace", "settings", "testbed", "--strict", "true", "--reason", "no nulls", "--endpoints", &ep])
            .await;
    assert!(set.ok().contains("strict      true"), "{}", set.stdout);
    let again = ctl(&["apply", "-f", file, "-n", "testbed", "--endpoints", &ep]).await;
    assert!(again.fails(1).contains(".targeting`"), "{}", again.stderr);
    let shown = ctl(&["namespace", "settings", "testbed", "--endpoints", &ep, "--output", "json"]).await.json();
    assert_eq!(shown["settings"], serde_json::json!({"fractional": "murmur3-scaled", "strict": true}), "{shown}");
    let audit = ctl(&["audit", "list", "--namespace", "testbed", "--endpoints", &ep, "--output", "json"]).await.json();
    let last = audit["entries"].as_array().and_then(|a| a.last()).cloned().unwrap_or_default();
    assert_eq!(
        (last["action"].as_str(), last["reason"].as_str()),
        (Some("namespace.settings"), Some("no nulls")),
        "{last}"
    );
    let bad = ctl(&["namespace", "settings", "Not A Namespace", "--strict", "true", "--endpoints", &ep]).await;
    assert!(bad.fails(2).contains("namespace"), "{}", bad.stderr);
}
