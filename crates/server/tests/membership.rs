//! Membership changes through the API: a removed voter leaves the cluster, writes continue,
//! and the change is audited twice — Raft's own entry, and who asked and why.

mod common;

use std::time::Duration;

use vexil_proto::v1::{CreateFlagRequest, RemoveNodeRequest, StatusRequest, WriteOptions};
use vexil_testkit::{spec, verify_chain};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_voter_is_audited_with_who_asked_and_why() {
    let cluster = common::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    let resp = cluster
        .cluster(leader)
        .await
        .remove_node(RemoveNodeRequest {
            node_id: victim,
            options: Some(WriteOptions { request_id: "ops-7".into(), reason: "decommission rack 2".into() }),
        })
        .await
        .expect("remove")
        .into_inner();
    assert_eq!(resp.voters.len(), 2);
    assert!(resp.voters.iter().all(|m| m.node_id != victim));

    let status = cluster.cluster(leader).await.status(StatusRequest {}).await.expect("status").into_inner();
    assert_eq!(status.voters.len(), 2);
    let w = cluster
        .flags(leader)
        .await
        .create_flag(CreateFlagRequest {
            namespace: "ns".into(),
            key: "after".into(),
            spec_json: spec("v"),
            options: None,
            strict: false,
        })
        .await
        .expect("writes continue with two voters")
        .into_inner();

    let log = cluster.audit_log(leader, w.header.expect("header").revision).await;
    verify_chain(&log).expect("chain");
    let asked: Vec<_> = log.iter().filter(|e| e.action == "membership.change" && e.actor != "raft").collect();
    assert_eq!(asked.len(), 1, "{log:?}");
    assert_eq!((asked[0].reason.as_str(), asked[0].request_id.as_str()), ("decommission rack 2", "ops-7"));
    let after = asked[0].after.as_deref().expect("description");
    assert!(after.contains("remove_node") && after.contains(&format!("\"node_id\":{victim}")), "{after}");
    assert!(log.iter().filter(|e| e.action == "membership.change" && e.actor == "raft").count() >= 2);
}
