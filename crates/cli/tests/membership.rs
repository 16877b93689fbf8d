//! Membership through `vexilctl cluster` against real clusters: growing three voters to five
//! while writes continue, removing the original leader, and the refusals that keep a quorum.

// Helpers outside `#[test]` functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::ctl;
use serde_json::Value;
use vexil_client::{AdminClient, WriteOpts};
use vexil_testkit::{Listener, spec};

fn keys(list: &Value) -> BTreeSet<String> {
    list["flags"].as_array().expect("flags").iter().map(|f| f["key"].as_str().expect("key").to_string()).collect()
}

#[tokio::test]
async fn grow_three_voters_to_five_then_remove_the_original_leader() {
    let mut c = common::start(3, &[]).await;
    let first_leader = c.wait_leader(Duration::from_secs(20)).await;
    let ep3 = c.endpoints(&[1, 2, 3]);
    let mut written: BTreeSet<String> = BTreeSet::new();
    for i in 0..5 {
        let key = format!("before-{i}");
        ctl(&["flag", "create", "grow", &key, "--spec", &spec(&key), "--endpoints", &ep3]).await.ok();
        written.insert(key);
    }

    // Writes continue in the background through everything that follows.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let stop = stop.clone();
        let acked_count = acked_count.clone();
        let admin = AdminClient::new(c.endpoints(&[1, 2, 3]).split(',').map(str::to_string)).expect("admin client");
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("during-{i}");
                if admin.create_flag("grow", &key, &spec(&key), WriteOpts::reason("load")).await.is_ok() {
                    acked.push(key);
                    acked_count.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };

    c.start_outsider(4);
    c.start_outsider(5);
    for id in [4u64, 5] {
        let out = common::add_learner(&c, id, 20, &ep3, &["--reason", "grow to five"]).await;
        assert!(out.ok().starts_with(&format!("added node {id} as a learner at revision ")), "{}", out.stdout);
        assert!(out.stdout.contains("; caught up ("), "{}", out.stdout);
        assert!(out.stderr.contains(&format!("node {id}: ")), "progress is reported: {}", out.stderr);
    }
    let out = ctl(&["cluster", "promote", "4", "5", "--reason", "grow to five", "--endpoints", &ep3]).await;
    assert!(out.ok().contains("promoted node 4, 5 to voter"), "{}", out.stdout);

    let ep5 = c.endpoints(&[1, 2, 3, 4, 5]);
    let status = ctl(&["cluster", "status", "--endpoints", &ep5, "--output", "json"]).await.json();
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 5, "{status}");
    assert!(members.iter().all(|m| m["voter"] == true && m["reachable"] == true), "{status}");

    // Remove the original leader; the other four elect a new one.
    let out = ctl(&["cluster", "remove", &first_leader.to_string(), "--reason", "retire", "--endpoints", &ep5]).await;
    assert!(out.ok().contains(&format!("removed node {first_leader}")), "{}", out.stdout);
    // However quickly the changes went, the writer must have kept writing through them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked_count.load(Ordering::Relaxed) < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.expect("writer");
    assert!(during.len() >= 10, "writes continued during the changes: only {} acknowledged", during.len());
    written.extend(during);
    c.kill(first_leader);
    let rest: Vec<u64> = (1..=5).filter(|id| *id != first_leader).collect();
    let new_leader = c.wait_leader_among(&rest, Duration::from_secs(30)).await;
    assert_ne!(new_leader, first_leader);
    let ep4 = c.endpoints(&rest);
    for i in 0..5 {
        let key = format!("after-{i}");
        ctl(&["flag", "create", "grow", &key, "--spec", &spec(&key), "--endpoints", &ep4]).await.ok();
        written.insert(key);
    }

    // Every acknowledged flag is readable from every remaining node.
    for id in &rest {
        let list = ctl(&[
            "flag",
            "list",
            "grow",
            "--endpoints",
            &c.addr(*id, Listener::Api),
            "--consistency",
            "linearizable",
            "--output",
            "json",
        ])
        .await
        .json();
        let have = keys(&list);
        let missing: Vec<&String> = written.difference(&have).collect();
        assert!(missing.is_empty(), "node {id} misses {missing:?}");
    }
    let status = ctl(&["cluster", "status", "--endpoints", &ep4, "--output", "json"]).await.json();
    let ids: Vec<u64> = status["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, rest, "{status}");
    assert_eq!(status["leader_id"].as_u64(), Some(new_leader));

    // The audit chain is intact on every node, and the same everywhere.
    let mut heads = BTreeSet::new();
    for id in &rest {
        let v = ctl(&["audit", "verify", "--endpoints", &c.addr(*id, Listener::Api), "--output", "json"]).await.json();
        assert_eq!(v["ok"], true, "node {id}: {v}");
        heads.insert((v["entries"].as_u64(), v["head_hash"].as_str().map(str::to_string)));
    }
    assert_eq!(heads.len(), 1, "every node has the same chain: {heads:?}");

    // Every membership change is in the audit log, with who asked and why.
    let audit = ctl(&["audit", "list", "--endpoints", &ep4, "--output", "json"]).await.json();
    let membership: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "membership.change").collect();
    let asked = |reason: &str, request: &str| {
        membership.iter().any(|e| e["actor"] != "raft" && e["reason"] == reason && e["after"]["request"] == request)
    };
    assert!(asked("grow to five", "add_learner"), "{membership:#?}");
    assert!(asked("grow to five", "change_membership"), "{membership:#?}");
    assert!(
        asked("retire", "remove_node"),
        "{membership:#?}\n--- node {first_leader} ---\n{}",
        c.log_tail(first_leader)
    );
}

#[tokio::test]
async fn demote_and_remove_refuse_to_leave_no_quorum() {
    let mut c = common::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (down, up) = (followers[0], followers[1]);
    c.kill(down);
    let ep = c.endpoints(&[1, 2, 3]);

    // Without `up`, the voters would be {leader, down}: one of two reachable, no quorum.
    for cmd in ["demote", "remove"] {
        let err = ctl(&["cluster", cmd, &up.to_string(), "--endpoints", &ep]).await;
        let msg = err.fails(1);
        assert!(msg.contains("refusing") && msg.contains("--force") && msg.contains(&format!("node {down}")), "{msg}");
    }
    let status = ctl(&["cluster", "status", "--endpoints", &ep, "--output", "json"]).await.json();
    assert!(status["members"].as_array().unwrap().iter().all(|m| m["voter"] == true), "nothing changed: {status}");

    // Demoting the node that is down leaves a healthy pair: allowed.
    let out = ctl(&["cluster", "demote", &down.to_string(), "--endpoints", &ep]).await;
    assert!(out.ok().contains(&format!("demoted node {down} to learner")), "{}", out.stdout);
    let status = ctl(&["cluster", "status", "--endpoints", &ep, "--output", "json"]).await.json();
    let m = status["members"].as_array().unwrap().iter().find(|m| m["id"] == down).cloned().expect("still a member");
    assert_eq!((m["voter"].as_bool(), m["reachable"].as_bool()), (Some(false), Some(false)));
    let out = ctl(&["cluster", "status", "--endpoints", &ep]).await;
    assert!(out.ok().contains(&format!("unreachable: node {down}")), "{}", out.stdout);

    // A single voter is never removed or demoted, even with --force.
    let solo = common::start(1, &[]).await;
    let ep1 = solo.endpoints(&[1]);
    for args in [vec!["remove", "1"], vec!["demote", "1"], vec!["remove", "1", "--force"]] {
        let mut full = vec!["cluster"];
        full.extend(args.iter().copied());
        full.extend(["--endpoints", ep1.as_str()]);
        let err = ctl(&full).await;
        assert!(err.fails(1).contains("last voter"), "{args:?}: {}", err.stderr);
    }
    let err = ctl(&["cluster", "promote", "7", "--endpoints", &ep1]).await;
    assert!(err.fails(1).contains("add-learner 7"), "{}", err.stderr);
}
