//! Concurrent compare-and-set updates of one flag: exactly one wins per version; the others get
//! FAILED_PRECONDITION carrying the current version. Retried writes apply once.

mod common;

use futures::future::join_all;
use tonic::Code;
use vexil_proto::v1::{CreateFlagRequest, GetFlagRequest, UpdateFlagRequest, WriteOptions};
use vexil_server::error::{ErrorReason, error_info};
use vexil_testkit::spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_compare_and_set_wins_per_version() {
    let cluster = common::start(3).await;
    let mut c1 = cluster.flags(1).await;
    c1.create_flag(CreateFlagRequest {
        namespace: "ns".into(),
        key: "cas".into(),
        spec_json: spec("v1"),
        options: None,
        strict: false,
    })
    .await
    .expect("create");
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(cluster.flags(id).await);
    }
    for version in 1..=5u64 {
        let attempts = (0..9).map(|i| {
            let mut c = clients[i % 3].clone();
            async move {
                c.update_flag(UpdateFlagRequest {
                    namespace: "ns".into(),
                    key: "cas".into(),
                    spec_json: spec(&format!("v{version}-writer{i}")),
                    expected_version: Some(version),
                    options: None,
                    strict: false,
                })
                .await
            }
        });
        let results = join_all(attempts).await;
        let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "version {version}: {results:?}");
        assert_eq!(winners[0].as_ref().expect("ok").get_ref().version, version + 1);
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(r.code(), Code::FailedPrecondition, "{r:?}");
            let (why, meta) = error_info(r).expect("error info");
            assert_eq!(why, ErrorReason::VersionMismatch.as_str());
            assert_eq!(meta.get("current_version").map(String::as_str), Some((version + 1).to_string().as_str()));
        }
    }
    let got = c1
        .get_flag(GetFlagRequest { namespace: "ns".into(), key: "cas".into(), read: vexil_testkit::linearizable() })
        .await
        .expect("get")
        .into_inner()
        .flag
        .expect("flag");
    assert_eq!(got.version, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_with_the_same_request_id_applies_once() {
    let cluster = common::start(3).await;
    let create = |tag: &str| CreateFlagRequest {
        namespace: "ns".into(),
        key: "once".into(),
        spec_json: spec(tag),
        options: Some(WriteOptions { request_id: "client-42".into(), reason: String::new() }),
        strict: false,
    };
    let first = cluster.flags(2).await.create_flag(create("a")).await.expect("first").into_inner();
    // The retry lands on another node, as a client that lost its connection would send it.
    let again = cluster.flags(3).await.create_flag(create("a")).await.expect("retry").into_inner();
    assert_eq!(again.header.expect("h").revision, first.header.expect("h").revision);
    let reused = cluster.flags(1).await.create_flag(create("b")).await.expect_err("different body");
    assert_eq!(error_info(&reused).expect("info").0, ErrorReason::RequestIdReused.as_str());
    let log = cluster.audit_log(1, 0).await;
    assert_eq!(log.iter().filter(|e| e.key == "once").count(), 1);
}

/// 64 concurrent writes on the leader queue behind the entries in flight and share entries
/// (`batcher.rs`): each caller still gets its own answer, every change is audited once under its
/// own request id, and the audit chain holds on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_each_gets_its_own_answer() {
    const WRITERS: usize = 64;
    let cluster = common::start(3).await;
    let leader = cluster.wait_leader(std::time::Duration::from_secs(10)).await;
    let client = cluster.flags(leader).await;
    let writes = (0..WRITERS).map(|i| {
        let mut c = client.clone();
        async move {
            c.create_flag(CreateFlagRequest {
                namespace: "batch".into(),
                key: format!("f{i}"),
                spec_json: spec(&format!("v{i}")),
                options: Some(WriteOptions { request_id: format!("batch-{i}"), reason: format!("writer {i}") }),
                strict: false,
            })
            .await
            .map(|r| r.into_inner())
        }
    });
    // One more writer that loses a compare-and-set inside whatever entry it lands in.
    let mut loser = client.clone();
    let lose = async move {
        loser
            .update_flag(UpdateFlagRequest {
                namespace: "batch".into(),
                key: "missing".into(),
                spec_json: spec("x"),
                expected_version: Some(1),
                options: None,
                strict: false,
            })
            .await
    };
    let (results, lost) = tokio::join!(join_all(writes), lose);
    assert_eq!(lost.expect_err("no such flag").code(), Code::NotFound);
    let mut revisions = std::collections::BTreeSet::new();
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap_or_else(|e| panic!("write {i}: {e:?}"));
        assert_eq!(r.version, 1);
        revisions.insert(r.header.as_ref().expect("header").revision);
    }
    assert!(
        revisions.len() < WRITERS,
        "{WRITERS} concurrent writes used {} entries: none were batched",
        revisions.len()
    );

    let max = *revisions.last().expect("some");
    for id in 1..=3 {
        let log = cluster.audit_log(id, max).await;
        vexil_testkit::verify_chain(&log).expect("chain verifies");
        for (i, r) in results.iter().enumerate() {
            let r = r.as_ref().expect("ok");
            let entries: Vec<_> = log.iter().filter(|e| e.request_id == format!("batch-{i}")).collect();
            assert_eq!(entries.len(), 1, "node {id}: write {i} audited once");
            assert_eq!(entries[0].key, format!("f{i}"));
            assert_eq!(entries[0].reason, format!("writer {i}"));
            assert_eq!(entries[0].revision, r.header.as_ref().expect("header").revision);
        }
    }
}
