//! Cluster identity on real nodes: a cluster is formed once and keeps its id across restarts; a
//! member restarted with an empty data directory stops instead of voting with a forgotten log,
//! and rejoins the documented way; a node left from an earlier cluster on a member's address is
//! refused, and refuses.

mod common;

use std::time::Duration;

use vexil_proto::v1::{AddLearnerRequest, CreateFlagRequest, GetFlagRequest, Member, RemoveNodeRequest};
use vexil_testkit::{Cluster, Listener, spec};

const EXIT_WITHIN: Duration = Duration::from_secs(30);
const LEADER_WITHIN: Duration = Duration::from_secs(30);
/// `vexil_server::error::exit_code::CONFIG`: restarting will not help.
const EXIT_CONFIG: i32 = 2;

async fn create(c: &Cluster, id: u64, key: &str) -> u64 {
    let req = CreateFlagRequest {
        namespace: "ns".into(),
        key: key.into(),
        spec_json: spec("on"),
        options: None,
        strict: false,
    };
    let resp = c.flags(id).await.create_flag(c.request(req)).await.expect("create").into_inner();
    resp.header.expect("header").revision
}

async fn has_flag(c: &Cluster, id: u64, key: &str) -> bool {
    let req = GetFlagRequest { namespace: "ns".into(), key: key.into(), read: None };
    c.flags(id).await.get_flag(c.request(req)).await.is_ok()
}

async fn cluster_id(c: &Cluster, id: u64) -> String {
    c.status(id).await.unwrap_or_else(|| panic!("node {id} answers")).cluster_id
}

/// Waits for node `id` (empty, among members of `cluster`) to stop with exit code 2, either
/// because a member refused to join (`refusal`) or because that cluster's leader replicated to
/// it; its log.
fn stopped_by_its_old_cluster(c: &mut Cluster, id: u64, refusal: &str, cluster: &str) -> String {
    let status = c.wait_exit(id, EXIT_WITHIN);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{}", c.log_tail(id));
    let log = c.log(id);
    let refused = log.contains(refusal) && log.contains(&format!("belongs to cluster {cluster}"));
    let replicated = log.contains(&format!("replicates to this node as node {id}"));
    assert!(refused || replicated, "neither refusal:\n{log}");
    log
}

fn wipe(c: &Cluster, id: u64) {
    std::fs::remove_dir_all(c.data_dir(id)).expect("wipe the data directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_formed_once_and_keeps_its_id_across_restarts() {
    let mut c = common::start(3).await;
    let leader = c.wait_leader(LEADER_WITHIN).await;
    let id = cluster_id(&c, leader).await;
    assert_eq!(id.len(), 32, "{id:?}");
    for n in 1..=3 {
        assert_eq!(cluster_id(&c, n).await, id, "node {n} joined the cluster node 1 formed");
    }
    create(&c, leader, "before").await;

    // Every node restarts with cluster.bootstrap still set: nobody forms a second cluster.
    c.kill_all();
    for n in 1..=3 {
        c.restart(n);
    }
    let leader = c.wait_leader(LEADER_WITHIN).await;
    for n in 1..=3 {
        assert_eq!(cluster_id(&c, n).await, id, "node {n} after the restart");
    }
    assert!(has_flag(&c, leader, "before").await, "the data survived");
    let initialised = c.log(1).matches("initialised a new cluster").count();
    assert_eq!(initialised, 1, "node 1 formed the cluster once:\n{}", c.log(1));

    // The bootstrapping node itself, back with an empty data directory, forms nothing: the
    // members it asks to join belong to the cluster it lost, and it stops, saying how to rejoin.
    c.kill(1);
    wipe(&c, 1);
    c.restart(1);
    // Node 2 or 3 (joined at once) refused, or the cluster's leader replicated to it first.
    let log = stopped_by_its_old_cluster(&mut c, 1, "refused to join: node ", &id);
    assert!(log.contains("vexilctl cluster remove 1"), "{log}");
    let survivors = c.wait_leader_among(&[2, 3], LEADER_WITHIN).await;
    assert_eq!(cluster_id(&c, survivors).await, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_with_an_empty_data_directory_stops_then_rejoins_as_a_learner() {
    let mut c = common::start(3).await;
    let leader = c.wait_leader(LEADER_WITHIN).await;
    create(&c, leader, "a").await;
    let victim = (1..=3).rev().find(|n| *n != leader).expect("a follower");

    c.kill(victim);
    wipe(&c, victim);
    c.restart(victim);
    let status = c.wait_exit(victim, EXIT_WITHIN);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{}", c.log_tail(victim));
    let log = c.log(victim);
    assert!(log.contains("data directory is empty"), "{log}");
    assert!(log.contains(&format!("vexilctl cluster remove {victim}")), "the way back is named:\n{log}");

    // The way back: remove it, start it empty, add it as a learner.
    c.cluster(leader)
        .await
        .remove_node(c.request(RemoveNodeRequest { node_id: victim, options: None }))
        .await
        .expect("remove");
    wipe(&c, victim);
    c.restart(victim);
    let member =
        Member { node_id: victim, api_addr: c.addr(victim, Listener::Api), raft_addr: c.addr(victim, Listener::Raft) };
    c.cluster(leader)
        .await
        .add_learner(c.request(AddLearnerRequest { member: Some(member), blocking: true, options: None }))
        .await
        .expect("the wiped node joins again as a learner");
    // Adding it again: the same addresses are a no-op; other ones need a removal first.
    let again = |api_addr: String| {
        let member = Member { node_id: victim, api_addr, raft_addr: c.addr(victim, Listener::Raft) };
        AddLearnerRequest { member: Some(member), blocking: false, options: None }
    };
    c.cluster(leader).await.add_learner(c.request(again(c.addr(victim, Listener::Api)))).await.expect("a no-op");
    let moved = c.cluster(leader).await.add_learner(c.request(again("elsewhere:7001".into()))).await;
    let moved = moved.expect_err("a member at other addresses");
    assert!(moved.message().contains("already a member"), "{moved:?}");
    let after = create(&c, leader, "b").await;
    assert!(after > 0);
    c.wait_leader_among(&[1, 2, 3], LEADER_WITHIN).await;
    assert!(has_flag(&c, victim, "a").await && has_flag(&c, victim, "b").await, "it caught up");
    assert_eq!(cluster_id(&c, victim).await, cluster_id(&c, leader).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_left_from_an_earlier_cluster_takes_no_part_in_a_new_one() {
    // The earlier cluster; node 2 of it stays running.
    let mut c = common::start(3).await;
    c.wait_leader(LEADER_WITHIN).await;
    let earlier = cluster_id(&c, 2).await;
    c.kill(1);
    c.kill(3);
    // A new cluster on the same addresses: nodes 1 and 3 start empty, with the same bootstrap
    // configuration. Node 2 of the earlier cluster refuses to join it; node 1 stops saying so
    // (or, if node 2 still led and replicated to them, they learn they were its members).
    wipe(&c, 1);
    wipe(&c, 3);
    c.restart(1);
    c.restart(3);
    stopped_by_its_old_cluster(&mut c, 1, "refused to join: node 2", &earlier);
    // The earlier node kept its cluster and took nothing from the new one.
    assert_eq!(cluster_id(&c, 2).await, earlier);
    let log = c.log(2);
    assert_eq!(log.matches("joined a cluster").count(), 1, "node 2 joined only the earlier cluster:\n{log}");
}
