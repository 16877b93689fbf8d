//! Audit retention on a real cluster: with `audit.retain_entries` set, the leader cuts the log
//! behind a checkpoint; every node's own copy then verifies from that checkpoint; a learner
//! added afterwards receives a snapshot holding only what remains, not the whole history, and
//! verifies too; a watch from before the cut is told REVISION_COMPACTED; an operator's cut
//! (`vexilctl audit compact`) after an export works the same way, and a cut past the end of the
//! log is refused naming the field.

// Helpers outside `#[test]` functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::ctl;
use serde_json::{Value, json};
use tonic::Code;
use vexil_client::{AdminClient, WriteOpts};
use vexil_proto::v1::WatchRequest;
use vexil_proto::v1::watch_client::WatchClient;
use vexil_testkit::{Listener, eventually_async};

/// The policy under test: keep about 100 entries (cut once more than 110 stand).
const RETAIN: u64 = 100;
/// Entries the log may hold without being cut again.
const STABLE_MAX: u64 = RETAIN + RETAIN / 10;
/// Sequential writes: enough log entries after the snapshots (every 50) for openraft to purge
/// the log behind them (it purges in batches of 256), so a new member needs a snapshot.
const WRITES: usize = 400;

async fn verify(endpoint: &str) -> Value {
    ctl(&["audit", "verify", "--endpoints", endpoint, "--consistency", "stale", "--output", "json"]).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_cuts_behind_a_checkpoint_every_copy_and_a_later_learner_verify_from() {
    let mut c = common::start(
        3,
        &[
            "--audit-retain-entries",
            &RETAIN.to_string(),
            "--audit-retention-check-interval-ms",
            "100",
            "--raft-snapshot-logs-since-last",
            "50",
            "--raft-max-in-snapshot-log-to-keep",
            "5",
        ],
    )
    .await;
    let ep = c.endpoints(&[1, 2, 3]);
    let admin = AdminClient::new(ep.split(',').map(str::to_string)).expect("admin client");
    let spec = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"});
    for i in 0..WRITES {
        admin.create_flag("shop", &format!("f{i}"), &spec.to_string(), WriteOpts::reason("fill")).await.expect("write");
    }

    // The leader cuts the log to about RETAIN entries; every node's own copy verifies from
    // the same checkpoint to the same head.
    let leader_addr = c.addr(c.wait_leader(Duration::from_secs(10)).await, Listener::Api);
    eventually_async(Duration::from_secs(20), "the log is cut to about 100 entries", || {
        let leader_addr = leader_addr.clone();
        async move {
            let v = verify(&leader_addr).await;
            v["checkpoint"].is_object() && v["entries"].as_u64().is_some_and(|n| n <= STABLE_MAX)
        }
    })
    .await;
    let on_leader = verify(&leader_addr).await;
    let head = on_leader["last_seq"].as_u64().unwrap();
    assert!(head > WRITES as u64, "{on_leader}");
    let checkpoint = on_leader["checkpoint"].clone();
    assert_eq!(on_leader["first_seq"].as_u64(), Some(checkpoint["seq"].as_u64().unwrap() + 1));
    for id in 1..=3 {
        let addr = c.addr(id, Listener::Api);
        eventually_async(Duration::from_secs(10), "every node applied the cut", || {
            let addr = addr.clone();
            async move { verify(&addr).await["last_seq"].as_u64() == Some(head) }
        })
        .await;
        let v = verify(&addr).await;
        assert_eq!((&v["ok"], &v["checkpoint"], &v["head_hash"]), (&json!(true), &checkpoint, &on_leader["head_hash"]));
    }
    let table = ctl(&["audit", "verify", "--endpoints", &ep]).await.ok().to_string();
    assert!(table.contains("after the checkpoint at seq") && table.contains("removed by retention"), "{table}");
    // The log starts after the checkpoint, and its newest checkpoint entry names the cut.
    let listed = ctl(&["audit", "list", "--endpoints", &ep, "--output", "json"]).await.json();
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries[0]["seq"], on_leader["first_seq"]);
    let marker = entries.iter().rev().find(|e| e["action"] == "audit.checkpoint").expect("a checkpoint entry");
    assert_eq!(marker["actor"], "retention");
    assert_eq!(marker["after"]["through_seq"], checkpoint["seq"]);
    assert_eq!(marker["after"]["through_hash"], checkpoint["hash"]);

    // A watch resuming from before the cut must start again from a snapshot.
    let mut watch = WatchClient::new(c.channel(1).await);
    let from_start = WatchRequest { namespaces: vec!["shop".into()], after_revision: 1, initial_snapshot: false };
    let refused = match watch.watch(from_start).await {
        Err(status) => status,
        Ok(stream) => stream.into_inner().message().await.expect_err("the stream fails"),
    };
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("no longer retained"), "{}", refused.message());

    // A learner added now gets a snapshot with only the retained entries, and verifies.
    c.start_outsider(4);
    let added = common::add_learner(&c, 4, 5, &ep, &[]).await;
    assert!(added.ok().contains("; caught up ("), "{}", added.stdout);
    assert!(c.log(4).contains("installed snapshot"), "the learner caught up by snapshot:\n{}", c.log(4));
    let learner = c.addr(4, Listener::Api);
    let on_learner = verify(&learner).await;
    assert_eq!(on_learner["ok"], true, "{on_learner}");
    assert!(on_learner["checkpoint"]["seq"].as_u64() >= checkpoint["seq"].as_u64(), "{on_learner}");
    assert!(
        on_learner["entries"].as_u64().is_some_and(|n| n <= STABLE_MAX),
        "the learner holds the retained entries only: {on_learner}"
    );

    // An operator's cut after an export: the log then verifies from the new checkpoint, which
    // carries the hash of the last exported entry it removed.
    let exported = ctl(&["audit", "list", "--endpoints", &ep, "--output", "json"]).await.json();
    let exported = exported["entries"].as_array().unwrap().clone();
    let through = exported[exported.len() / 2]["seq"].as_u64().unwrap();
    let cut =
        ctl(&["audit", "compact", "--through-seq", &through.to_string(), "--reason", "exported", "--endpoints", &ep])
            .await;
    assert!(cut.ok().starts_with("removed "), "{}", cut.stdout);
    let after = ctl(&["audit", "verify", "--endpoints", &ep, "--output", "json"]).await.json();
    assert_eq!((after["ok"].clone(), after["checkpoint"]["seq"].as_u64()), (json!(true), Some(through)), "{after}");
    let cut_hash = exported.iter().find(|e| e["seq"].as_u64() == Some(through)).unwrap()["hash"].clone();
    assert_eq!(after["checkpoint"]["hash"], cut_hash, "the checkpoint carries the hash of the last exported entry cut");
    let again = ctl(&["audit", "compact", "--through-seq", "1", "--endpoints", &ep]).await;
    assert!(again.ok().starts_with("nothing removed"), "{}", again.stdout);
    let past = ctl(&["audit", "compact", "--through-seq", "99999999", "--endpoints", &ep]).await;
    let err = past.fails(1);
    assert!(err.contains("through_seq") && err.contains("ends at seq"), "{err}");
}
