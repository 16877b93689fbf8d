//! A learner that joins after 10,000 flag writes, when the leader's log has been purged
//! behind a snapshot, catches up by receiving the snapshot: `vexilctl cluster add-learner`
//! reports progress until it is within a few entries of the leader, and the learner then
//! serves every flag and an intact audit chain.

// Helpers outside `#[test]` functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::ctl;
use serde_json::{Map, Value, json};
use vexil_client::{AdminClient, WriteOpts};
use vexil_testkit::Listener;

/// Namespaces written with one `apply` of `FLAGS_PER_APPLY` flags each, and single writes.
const APPLIES: usize = 95;
const FLAGS_PER_APPLY: usize = 100;
const SINGLE_WRITES: usize = 500;

fn bool_flag(tag: usize) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "metadata": {"n": tag}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joining_after_10000_writes_catches_up_by_snapshot() {
    // Small thresholds: a snapshot every 200 entries, keeping only 10 entries behind it.
    let mut c =
        common::start(3, &["--raft-snapshot-logs-since-last", "200", "--raft-max-in-snapshot-log-to-keep", "10"]).await;
    let ep = c.endpoints(&[1, 2, 3]);
    let admin = AdminClient::new(ep.split(',').map(str::to_string)).expect("admin client");

    // 9,500 flag writes as 95 namespace documents in parallel, then 500 single writes one after
    // another. The leader batches concurrent writes into shared log entries, so it is the
    // sequential writes that make the log long enough (500 entries) for openraft to purge it
    // (it purges in batches of 256 entries).
    let mut tasks = tokio::task::JoinSet::new();
    for a in 0..APPLIES {
        let admin = admin.clone();
        tasks.spawn(async move {
            let flags: Map<String, Value> =
                (0..FLAGS_PER_APPLY).map(|i| (format!("flag-{i}"), bool_flag(a * FLAGS_PER_APPLY + i))).collect();
            let doc = json!({"flags": flags}).to_string();
            admin.apply_namespace(&format!("bulk-{a}"), &doc, WriteOpts::reason("bulk")).await.map(|_| ())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("join").expect("write");
    }
    for i in 0..SINGLE_WRITES {
        let key = format!("single-{i}");
        admin.create_flag("single", &key, &bool_flag(i).to_string(), WriteOpts::reason("one")).await.expect("write");
    }
    // With a snapshot every 200 entries keeping 10 behind it, the log's first ~256 entries are
    // purged by now: a new member can only get them inside a snapshot (asserted below from the
    // learner's own log).
    c.start_outsider(4);
    let out = common::add_learner(&c, 4, 5, &ep, &[]).await;
    assert!(out.ok().starts_with("added node 4 as a learner at revision "), "{}", out.stdout);
    assert!(out.stdout.contains("; caught up ("), "{}", out.stdout);
    assert!(out.stderr.lines().any(|l| l.starts_with("node 4: ")), "progress lines: {}", out.stderr);
    assert!(c.log(4).contains("installed snapshot"), "the learner caught up by snapshot:\n{}", c.log(4));

    // The learner serves everything, from its own state.
    let learner = c.addr(4, Listener::Api);
    let single =
        ctl(&["flag", "list", "single", "--endpoints", &learner, "--consistency", "stale", "--output", "json"])
            .await
            .json();
    assert_eq!(single["flags"].as_array().map(Vec::len), Some(SINGLE_WRITES));
    let last_bulk = format!("bulk-{}", APPLIES - 1);
    let bulk =
        ctl(&["flag", "list", &last_bulk, "--endpoints", &learner, "--consistency", "stale", "--output", "json"])
            .await
            .json();
    assert_eq!(bulk["flags"].as_array().map(Vec::len), Some(FLAGS_PER_APPLY));
    let verified =
        ctl(&["audit", "verify", "--endpoints", &learner, "--consistency", "stale", "--output", "json"]).await.json();
    assert_eq!(verified["ok"], true);
    assert!(
        verified["entries"].as_u64().unwrap_or(0) >= (APPLIES * FLAGS_PER_APPLY + SINGLE_WRITES) as u64,
        "{verified}"
    );
    let status = ctl(&["cluster", "status", "--endpoints", &ep]).await;
    let row = status.ok().lines().find(|l| l.starts_with("4 ")).expect("node 4 in the table").to_string();
    assert!(row.contains("learner"), "{row}");
}
