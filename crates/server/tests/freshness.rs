//! Freshness on watch streams: while a node can confirm through its read lease that it is
//! current it says so on every stream (`progress`, every `watch.progress_interval_ms`); once it
//! cannot (cut off from the leader) for `watch.unconfirmed_max_ms`, it says `stale` and ends
//! its streams UNAVAILABLE (LEASE_EXPIRED), so that their clients move to a node that can.
//! (The suites' usual cluster, `common::start`, with short freshness settings.)

use std::time::{Duration, Instant};

use tonic::Code;
use vexil_proto::v1::watch_client::WatchClient;
use vexil_proto::v1::watch_response::Kind;
use vexil_proto::v1::{CreateFlagRequest, WatchRequest, WatchResponse, WatchSnapshot};
use vexil_server::error::{ErrorReason, error_info};
use vexil_testkit::{Cluster, Listener, Runtime, spec};

const PROGRESS_MS: u64 = 200;
const UNCONFIRMED_MAX_MS: u64 = 1_000;

async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> Result<Kind, tonic::Status> {
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch message within 10 s")?
        .expect("the stream stays open until it fails");
    Ok(msg.kind.expect("kind"))
}

/// A three-node cluster with short freshness settings, and a watch of namespace `web` on a
/// follower, past its snapshot: (cluster, leader, follower, stream, snapshot).
async fn watch_a_follower() -> (Cluster, u64, u64, tonic::Streaming<WatchResponse>, WatchSnapshot) {
    let c = Cluster::builder(3)
        .bin(env!("CARGO_BIN_EXE_vexil"))
        .listener(Listener::Admin)
        .runtime(Runtime::Mixed)
        .watch_freshness_ms(PROGRESS_MS, UNCONFIRMED_MAX_MS)
        .start()
        .await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut stream = WatchClient::new(c.channel(follower).await)
        .watch(WatchRequest { namespaces: vec!["web".into()], after_revision: 0, initial_snapshot: true })
        .await
        .expect("watch")
        .into_inner();
    let Kind::Snapshot(snapshot) = next(&mut stream).await.expect("the snapshot") else { panic!("snapshot first") };
    (c, leader, follower, stream, snapshot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_confirms_it_is_current_and_a_cut_off_one_says_stale_and_ends_its_streams() {
    let (c, leader, follower, mut stream, snapshot) = watch_a_follower().await;

    // Healthy: progress about every interval, never behind what was delivered.
    let started = Instant::now();
    let mut progress = Vec::new();
    while started.elapsed() < Duration::from_millis(6 * PROGRESS_MS) {
        match next(&mut stream).await.expect("healthy") {
            Kind::Progress(p) => progress.push(p.revision),
            other => panic!("nothing changed, yet {other:?}"),
        }
    }
    assert!(progress.len() >= 4, "{} progress messages in {} ms", progress.len(), 6 * PROGRESS_MS);
    assert!(progress.iter().all(|r| *r >= snapshot.revision), "{progress:?} vs snapshot {}", snapshot.revision);

    // A write through the leader arrives as a change, and the next progress covers it.
    let created = c
        .flags(leader)
        .await
        .create_flag(CreateFlagRequest {
            namespace: "web".into(),
            key: "k".into(),
            spec_json: spec("k"),
            options: None,
            strict: false,
        })
        .await
        .expect("create")
        .into_inner();
    let revision = created.header.expect("header").revision;
    loop {
        match next(&mut stream).await.expect("healthy") {
            Kind::Changes(b) if b.revision == revision => break,
            Kind::Progress(_) => {}
            other => panic!("{other:?}"),
        }
    }
    loop {
        if let Kind::Progress(p) = next(&mut stream).await.expect("healthy") {
            assert!(p.revision >= revision, "progress {} after the change at {revision}", p.revision);
            break;
        }
    }

    // Cut off: the other two stop. Within the bound the follower says stale, then ends.
    let others: Vec<u64> = (1..=3).filter(|id| *id != follower).collect();
    for id in &others {
        c.pause(*id);
    }
    let cut = Instant::now();
    let stale = loop {
        match next(&mut stream).await {
            Ok(Kind::Stale(s)) => break s,
            Ok(Kind::Progress(_)) => {
                // Only while the lease it had still holds.
                assert!(cut.elapsed() < Duration::from_millis(UNCONFIRMED_MAX_MS), "progress while cut off");
            }
            other => panic!("{other:?}"),
        }
    };
    let said_at = cut.elapsed();
    let end = next(&mut stream).await.expect_err("the stream ends after `stale`");
    for id in &others {
        c.resume(*id);
    }
    assert!(stale.unconfirmed_ms >= UNCONFIRMED_MAX_MS, "{stale:?}");
    assert!(stale.revision >= revision && !stale.reason.is_empty(), "{stale:?}");
    // The bound: unconfirmed_max after the last confirmation (which may come up to a lease
    // after the cut, while the lease it had holds), plus one interval for the check and one
    // for the failed confirmation; and room for a loaded machine.
    let bound = Duration::from_millis(UNCONFIRMED_MAX_MS + 2 * PROGRESS_MS + 1_500);
    assert!(said_at <= bound, "stale said {said_at:?} after the cut; bound {bound:?}");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    let (reason, _) = error_info(&end).expect("error info");
    assert_eq!(reason, ErrorReason::LeaseExpired.as_str(), "{end:?}");
    assert!(end.message().contains("could not confirm it is current"), "{end:?}");
}

/// A node removed from the cluster is no longer replicated to: it cannot apply what it would
/// confirm, so its streams end the same way, while the rest of the cluster goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_from_the_cluster_says_stale_and_ends_its_streams() {
    use vexil_proto::v1::RemoveNodeRequest;
    let (c, leader, removed, mut stream, _) = watch_a_follower().await;
    let Kind::Progress(_) = next(&mut stream).await.expect("healthy") else { panic!("progress while healthy") };

    c.cluster(leader)
        .await
        .remove_node(RemoveNodeRequest { node_id: removed, options: None })
        .await
        .expect("remove the follower");
    let out = Instant::now();
    // The others go on: a write commits without it.
    let created = c
        .flags(leader)
        .await
        .create_flag(CreateFlagRequest {
            namespace: "web".into(),
            key: "after".into(),
            spec_json: spec("after"),
            options: None,
            strict: false,
        })
        .await
        .expect("a write without the removed node")
        .into_inner();
    let revision = created.header.expect("header").revision;
    assert!(revision > 0);
    let stale = loop {
        match next(&mut stream).await {
            Ok(Kind::Stale(s)) => break s,
            Ok(Kind::Progress(_) | Kind::Changes(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    let end = next(&mut stream).await.expect_err("the stream ends after `stale`");
    assert!(stale.unconfirmed_ms >= UNCONFIRMED_MAX_MS, "{stale:?}");
    let bound = Duration::from_millis(UNCONFIRMED_MAX_MS + 2 * PROGRESS_MS + 1_500);
    assert!(out.elapsed() <= bound, "stale {:?} after the removal; bound {bound:?}", out.elapsed());
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
}
