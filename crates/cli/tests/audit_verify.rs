//! `vexilctl audit verify` finds an audit entry that was altered on disk: one node is stopped,
//! one entry's `reason` is rewritten in its RocksDB without resealing the hash, the node is
//! restarted, and verifying that node's own copy (stale reads: no leader involved) reports
//! exactly that entry, while the healthy nodes still verify.

// Helpers outside `#[test]` functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::ctl;
use serde_json::json;
use vexil_model::AuditEntry;
use vexil_raft_store::{codec, db};
use vexil_testkit::{Listener, eventually_async};

#[tokio::test]
async fn verify_reports_the_entry_altered_in_a_stopped_nodes_data_directory() {
    let mut c = common::start(3, &[]).await;
    let ep = c.endpoints(&[1, 2, 3]);
    let spec = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}).to_string();
    for i in 0..6 {
        let key = format!("f{i}");
        ctl(&["flag", "create", "shop", &key, "--spec", &spec, "--reason", &format!("create {i}"), "--endpoints", &ep])
            .await
            .ok();
    }
    // Entries of about 180 KiB each (the whole flag is in the entry): the log no longer fits one
    // response, so `list` and `verify` must page by the server's `more`, not by a page's length.
    let value = "v".repeat(15_000);
    let variants: serde_json::Map<String, serde_json::Value> =
        (0..12).map(|v| (format!("v{v}"), json!(value))).collect();
    let big = json!({"state": "ENABLED", "variants": variants, "defaultVariant": "v0"}).to_string();
    // Too long for one command-line argument: from a file.
    let (_dir, big_file) = common::temp_file("big.json", &big);
    for i in 0..25 {
        ctl(&["flag", "create", "shop", &format!("big{i}"), "--file", &big_file, "--endpoints", &ep]).await.ok();
    }
    let all = ctl(&["audit", "list", "--endpoints", &ep, "--output", "json"]).await.json();
    let listed = all["entries"].as_array().expect("entries");
    let seqs: Vec<u64> = listed.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "every entry once, from the first");
    assert_eq!(listed.iter().filter(|e| e["action"] == "flag.create").count(), 31);
    // The namespace (about 4.5 MB) reaches `export` in several snapshot parts, joined whole.
    let exported = ctl(&["export", "-n", "shop", "--endpoints", &ep]).await.ok().to_string();
    let doc: serde_json::Value = serde_json::from_str(&exported).expect("the export is JSON");
    assert_eq!(doc["flags"].as_object().map(serde_json::Map::len), Some(31), "every flag exported");
    let entries = all["entries"].as_array().expect("entries").clone();
    let victim = entries.iter().find(|e| e["reason"] == "create 3").expect("the entry of create 3").clone();
    let (seq, revision) = (victim["seq"].as_u64().unwrap(), victim["revision"].as_u64().unwrap());
    let intact = ctl(&["audit", "verify", "--endpoints", &ep, "--output", "json"]).await.json();
    assert_eq!(intact["ok"], true);
    assert_eq!(intact["entries"].as_u64(), entries.last().and_then(|e| e["seq"].as_u64()));

    // Node 3 must have the entry before it is stopped.
    let node3 = c.addr(3, Listener::Api);
    eventually_async(Duration::from_secs(10), "node 3 applied every entry", || {
        let node3 = node3.clone();
        let want = intact["entries"].as_u64();
        async move {
            let v =
                ctl(&["audit", "verify", "--endpoints", &node3, "--consistency", "stale", "--output", "json"]).await;
            v.code == 0
                && serde_json::from_str::<serde_json::Value>(&v.stdout).ok().and_then(|v| v["entries"].as_u64()) == want
        }
    })
    .await;
    c.stop(3);
    {
        let store = db::open(&c.data_dir(3).join("db")).expect("open the stopped node's database");
        let cf = db::cf(&store, "sm_audit");
        let key = codec::audit_key(revision, seq);
        let bytes = store.get_cf(cf, key).expect("read").expect("the entry is stored under revision ‖ seq");
        let mut entry: AuditEntry = codec::decode(&bytes).expect("decode");
        assert_eq!(entry.reason, "create 3");
        entry.reason = "nothing to see here".into();
        store.put_cf(cf, key, codec::encode(&entry).expect("encode")).expect("write back");
    }
    c.restart(3);
    eventually_async(Duration::from_secs(20), "node 3 serves again", || {
        let node3 = node3.clone();
        async move { ctl(&["cluster", "status", "--endpoints", &node3]).await.code == 0 }
    })
    .await;

    let out = ctl(&["audit", "verify", "--endpoints", &node3, "--consistency", "stale"]).await;
    let stderr = out.fails(1);
    assert!(stderr.contains(&format!("broken at seq {seq} (revision {revision})")), "{stderr}");
    assert!(stderr.contains("altered"), "{stderr}");
    let out = ctl(&["audit", "verify", "--endpoints", &node3, "--consistency", "stale", "--output", "json"]).await;
    assert_eq!(out.code, 1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("a JSON report on stdout");
    assert_eq!((report["ok"].as_bool(), report["first_bad_seq"].as_u64()), (Some(false), Some(seq)));
    assert_eq!(report["verified"].as_u64(), Some(seq - 1));

    // The other nodes' copies are intact.
    for id in [1, 2] {
        let v = ctl(&[
            "audit",
            "verify",
            "--endpoints",
            &c.addr(id, Listener::Api),
            "--consistency",
            "stale",
            "--output",
            "json",
        ])
        .await;
        assert_eq!(v.json()["ok"], true, "node {id}");
    }
}
