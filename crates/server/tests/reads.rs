//! Reads from any node at each consistency level: linearizable reads never miss an
//! acknowledged write; a cut-off follower serves lease reads only while its lease lasts, then
//! refuses, and says it is not ready (`/readyz`, gRPC health) while still live; stale reads
//! keep answering; min_revision waits rather than return older data.

mod common;

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::{Consistency, CreateFlagRequest, GetFlagRequest, ReadOptions, UpdateFlagRequest};
use vexil_server::error::{ErrorReason, error_info};
use vexil_testkit::{READ_LEASE_MS, spec};

fn get(key: &str, consistency: Consistency, min_revision: u64) -> GetFlagRequest {
    GetFlagRequest {
        namespace: "ns".into(),
        key: key.into(),
        read: Some(ReadOptions { consistency: consistency as i32, min_revision }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_writes_are_each_seen_by_a_linearizable_read_on_another_node() {
    let cluster = common::start(3).await;
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(cluster.flags(id).await);
    }
    clients[0]
        .create_flag(CreateFlagRequest {
            namespace: "ns".into(),
            key: "k".into(),
            spec_json: spec("0"),
            options: None,
            strict: false,
        })
        .await
        .expect("create");
    for i in 1..=1000u64 {
        let writer = (i % 3) as usize;
        let reader = ((i + 1) % 3) as usize;
        let tag = i.to_string();
        clients[writer]
            .update_flag(UpdateFlagRequest {
                namespace: "ns".into(),
                key: "k".into(),
                spec_json: spec(&tag),
                expected_version: Some(i),
                options: None,
                strict: false,
            })
            .await
            .unwrap_or_else(|e| panic!("write {i} via node {}: {e}", writer + 1));
        let got = clients[reader].get_flag(get("k", Consistency::Linearizable, 0)).await.expect("read").into_inner();
        let flag = got.flag.expect("flag");
        assert_eq!(
            flag.version,
            i + 1,
            "read {i} on node {} missed the write acknowledged by node {}",
            reader + 1,
            writer + 1
        );
        assert_eq!(got.header.expect("header").consistency, Consistency::Linearizable as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_serves_lease_reads_until_the_lease_expires_then_refuses() {
    let mut cluster = common::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let other = (1..=3).find(|id| *id != leader && *id != follower).expect("another follower");
    let created = cluster
        .flags(leader)
        .await
        .create_flag(CreateFlagRequest {
            namespace: "ns".into(),
            key: "k".into(),
            spec_json: spec("v"),
            options: None,
            strict: false,
        })
        .await
        .expect("create")
        .into_inner();
    let revision = created.header.expect("header").revision;
    let mut c: FlagsClient<_> = cluster.flags(follower).await;

    // A steady stream of lease reads keeps the follower's lease fresh.
    for _ in 0..30 {
        let r = c.get_flag(get("k", Consistency::Lease, revision)).await.expect("lease read").into_inner();
        assert_eq!(r.header.expect("header").consistency, Consistency::Lease as i32);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Connected, it is ready, on the admin port and in gRPC health alike.
    let (code, body) = cluster.admin_get(follower, "/readyz");
    assert_eq!(code, 200, "{body}");
    let mut health = HealthClient::new(cluster.channel(follower).await);
    assert_eq!(serving(&mut health).await, ServingStatus::Serving);
    cluster.kill(leader);
    cluster.kill(other);
    let cut_off_at = Instant::now();

    let mut served_after_cut = 0;
    let refused = loop {
        let started = Instant::now();
        match c.get_flag(get("k", Consistency::Lease, 0)).await {
            Ok(r) => {
                // Every lease that can still be valid was taken by a round sent before the cut.
                assert!(
                    started < cut_off_at + Duration::from_millis(READ_LEASE_MS),
                    "a lease read started {:?} after the cut was served; the lease is {READ_LEASE_MS} ms",
                    started - cut_off_at
                );
                assert!(r.into_inner().flag.is_some());
                served_after_cut += 1;
            }
            Err(status) => break status,
        }
        assert!(cut_off_at.elapsed() < Duration::from_secs(5), "lease reads never stopped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(served_after_cut > 0, "the lease should have covered reads right after the cut");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(error_info(&refused).expect("info").0, ErrorReason::LeaseExpired.as_str(), "{}", refused.message());
    assert!(refused.message().contains("lease"), "{}", refused.message());

    // Stale reads keep answering, and say how fresh they are.
    for _ in 0..3 {
        let r = c.get_flag(get("k", Consistency::Stale, 0)).await.expect("stale read").into_inner();
        let header = r.header.expect("header");
        assert_eq!(header.consistency, Consistency::Stale as i32);
        assert!(header.revision >= revision);
    }
    // Lease and linearizable reads stay refused while the node is alone.
    let again = c.get_flag(get("k", Consistency::Lease, 0)).await.expect_err("still cut off");
    assert_eq!(again.code(), Code::Unavailable);
    let lin = c.get_flag(get("k", Consistency::Linearizable, 0)).await.expect_err("no quorum");
    assert_eq!(lin.code(), Code::Unavailable);
    let (_, metrics) = cluster.admin_get(follower, "/metrics");
    assert!(metrics.contains("vexil_read_lease_expiries_total"), "{metrics}");

    // Cut off, it is alive (a restart would not help; a supervisor must leave it be) but not
    // ready (a load balancer must route around it).
    let (code, body) = cluster.admin_get(follower, "/livez");
    assert_eq!(code, 200, "{body}");
    let (code, body) = cluster.admin_get(follower, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: "), "{body}");
    assert_eq!(serving(&mut health).await, ServingStatus::NotServing);
}

/// What `grpc.health.v1` says about the whole node.
async fn serving(health: &mut HealthClient<tonic::transport::Channel>) -> ServingStatus {
    let r = health.check(HealthCheckRequest { service: String::new() }).await.expect("health check").into_inner();
    ServingStatus::try_from(r.status).expect("a known status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_revision_waits_on_a_lagging_node_instead_of_returning_older_data() {
    let cluster = common::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut lc = cluster.flags(leader).await;
    let mut fc = cluster.flags(lagging).await;

    cluster.pause(lagging);
    let mut last = 0;
    for i in 0..100 {
        let key = format!("k{i}");
        let r = lc
            .create_flag(CreateFlagRequest {
                namespace: "ns".into(),
                key,
                spec_json: spec("v"),
                options: None,
                strict: false,
            })
            .await
            .expect("create while a follower is paused");
        last = r.into_inner().header.expect("header").revision;
    }
    cluster.resume(lagging);
    let r = fc.get_flag(get("k99", Consistency::Stale, last)).await.expect("read-your-writes").into_inner();
    assert!(r.header.expect("header").revision >= last);
    assert!(r.flag.is_some(), "the flag written at revision {last} must be there");

    // The admin port reports health and counts reads by level.
    assert_eq!(cluster.admin_get(lagging, "/livez").0, 200);
    let (code, body) = cluster.admin_get(lagging, "/readyz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = cluster.admin_get(lagging, "/metrics");
    assert!(metrics.contains("vexil_reads_total{consistency=\"stale\"}"), "{metrics}");
    assert!(metrics.contains("vexil_raft_applied_index"), "{metrics}");
}
