//! The backup and restore procedure of deploy/README.md ("Backups"), command by command, from
//! one cluster into a new one: every namespace's document and settings come back the same (the
//! old cluster's audit log is kept as an export beside them; the new cluster starts its own).

mod common;

use common::{ctl, temp_file};
use serde_json::{Value, json};
use vexil_model::NamespaceDocument;

fn shop() -> Value {
    json!({
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "metadata": {"flagSetId": "shop", "version": "7"},
        "$evaluators": {"beta": {"in": ["@beta.example", {"var": "email"}]}},
        "flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"$ref": "beta"}, "on", {"fractional": [["on", 10], ["off", 90]]}]},
                "owner": "payments",
                "description": "the new checkout flow"
            },
            "color": {"state": "DISABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red"}
        }
    })
}

fn search() -> Value {
    json!({"flags": {"ranker": {"state": "ENABLED", "variants": {"v1": 1, "v2": 2}, "defaultVariant": "v2"}}})
}

/// `vexilctl namespace list`, then per namespace `export` and `namespace settings`, and the
/// audit log: the backup, as files in `dir`.
async fn backup(ep: &str, dir: &std::path::Path) -> Vec<String> {
    let listed = ctl(&["namespace", "list", "--endpoints", ep]).await;
    let namespaces: Vec<String> = listed.ok().lines().map(str::to_string).collect();
    for ns in &namespaces {
        let file = dir.join(format!("{ns}.json"));
        ctl(&["export", "-n", ns, "-f", file.to_str().expect("path"), "--endpoints", ep]).await.ok();
        let settings = ctl(&["namespace", "settings", ns, "--output", "json", "--endpoints", ep]).await;
        std::fs::write(dir.join(format!("{ns}.settings.json")), settings.ok()).expect("write settings");
    }
    let audit = ctl(&["audit", "list", "--output", "json", "--endpoints", ep]).await;
    std::fs::write(dir.join("audit.json"), audit.ok()).expect("write audit");
    namespaces
}

#[tokio::test]
async fn a_backup_restores_into_a_new_cluster() {
    let old = common::start(3, &[]).await;
    let ep = old.endpoints(&[1, 2, 3]);
    for (ns, doc) in [("shop", shop()), ("search", search())] {
        let (_d, path) = temp_file("doc.json", &doc.to_string());
        ctl(&["apply", "-f", &path, "-n", ns, "--reason", "import", "--endpoints", &ep]).await.ok();
    }
    ctl(&["namespace", "settings", "shop", "--fractional", "cbor-murmur3", "--strict", "true", "--endpoints", &ep])
        .await
        .ok();

    let dir = tempfile::tempdir().expect("backup dir");
    let namespaces = backup(&ep, dir.path()).await;
    assert_eq!(namespaces, ["search", "shop"]);
    let audit: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("audit.json")).unwrap()).unwrap();
    assert!(audit["entries"].as_array().is_some_and(|e| e.len() >= 4), "{audit}");
    drop(old);

    // Restore into a new cluster: apply each document, then its settings.
    let new = common::start(3, &[]).await;
    let ep = new.endpoints(&[1, 2, 3]);
    for ns in &namespaces {
        let file = dir.path().join(format!("{ns}.json"));
        let out =
            ctl(&["apply", "-f", file.to_str().unwrap(), "-n", ns, "--reason", "restore", "--endpoints", &ep]).await;
        assert!(out.ok().contains("created"), "{}", out.stdout);
        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(format!("{ns}.settings.json"))).unwrap())
                .unwrap();
        let s = &saved["settings"];
        let (fractional, strict) = (s["fractional"].as_str().unwrap(), s["strict"].as_bool().unwrap().to_string());
        ctl(&["namespace", "settings", ns, "--fractional", fractional, "--strict", &strict, "--endpoints", &ep])
            .await
            .ok();
    }

    // The new cluster holds what the old one did.
    let restored = tempfile::tempdir().expect("second backup");
    assert_eq!(backup(&ep, restored.path()).await, namespaces);
    for ns in &namespaces {
        let read = |d: &std::path::Path, f: String| std::fs::read_to_string(d.join(f)).expect("read");
        let before = NamespaceDocument::from_json(&read(dir.path(), format!("{ns}.json"))).expect("valid");
        let after = NamespaceDocument::from_json(&read(restored.path(), format!("{ns}.json"))).expect("valid");
        assert_eq!(before, after, "namespace {ns}");
        let settings = |d: &std::path::Path| -> Value {
            serde_json::from_str::<Value>(&read(d, format!("{ns}.settings.json"))).unwrap()["settings"].clone()
        };
        assert_eq!(settings(dir.path()), settings(restored.path()), "namespace {ns}");
    }
    let shop = ctl(&["namespace", "settings", "shop", "--endpoints", &ep]).await;
    assert!(shop.ok().contains("cbor-murmur3"), "{}", shop.stdout);
}
