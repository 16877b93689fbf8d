//! kill -9 of the leader while a client writes continuously: a new leader takes over, writes
//! resume, and once the old leader is back every acknowledged write is on all three nodes with
//! identical, verifiable audit logs.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::{Consistency, CreateFlagRequest, ListFlagsRequest, ReadOptions, WriteOptions};
use vexil_testkit::{spec, verify_chain};

/// One acknowledged write: key → (revision, time of acknowledgement).
type Acked = Arc<Mutex<BTreeMap<String, (u64, Instant)>>>;

async fn writer(addrs: Vec<String>, acked: Acked, stop: Arc<AtomicBool>) {
    let mut clients = Vec::new();
    for a in &addrs {
        let ch = tonic::transport::Channel::from_shared(a.clone())
            .expect("uri")
            .connect_timeout(Duration::from_millis(200))
            .timeout(Duration::from_secs(4))
            .connect_lazy();
        clients.push(FlagsClient::new(ch));
    }
    let mut next = 0usize;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w-{i:05}");
        // Retry the same request_id until it is acknowledged: at most one application.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = clients.len();
            let client = &mut clients[next % n];
            let req = CreateFlagRequest {
                namespace: "load".into(),
                key: key.clone(),
                spec_json: spec(&key),
                options: Some(WriteOptions { request_id: key.clone(), reason: "failover test".into() }),
                strict: false,
            };
            match client.create_flag(req).await {
                Ok(resp) => {
                    let rev = resp.into_inner().header.expect("header").revision;
                    acked.lock().await.insert(key.clone(), (rev, Instant::now()));
                    break;
                }
                Err(_) => {
                    next += 1;
                    assert!(Instant::now() < deadline, "write {key} not acknowledged within 20s");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_write() {
    let mut cluster = common::start(3).await;
    let addrs: Vec<String> = (1..=3).map(|id| cluster.api_addr(id)).collect();
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(writer(addrs, acked.clone(), stop.clone()));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let old_leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let before_kill = acked.lock().await.len();
    assert!(before_kill > 0, "no writes before the kill");
    let killed_at = Instant::now();
    cluster.kill(old_leader);

    let new_leader = cluster.wait_leader(Duration::from_secs(30)).await;
    assert_ne!(new_leader, old_leader);
    // Failover time: from kill -9 to the first write acknowledged after it.
    let resumed_at = loop {
        let first_after = acked.lock().await.values().map(|(_, t)| *t).filter(|t| *t > killed_at).min();
        if let Some(t) = first_after {
            break t;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(20), "writes did not resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("failover: first acknowledged write {:?} after kill -9 of leader {old_leader}", resumed_at - killed_at);

    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.restart(old_leader);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    task.await.expect("writer");

    let acked = acked.lock().await.clone();
    let max_revision = acked.values().map(|(r, _)| *r).max().expect("acked writes");
    println!("acknowledged writes: {} ({} before the kill), last revision {max_revision}", acked.len(), before_kill);

    let mut logs = Vec::new();
    for id in 1..=3u64 {
        let mut client = cluster.flags(id).await;
        let mut present = BTreeMap::new();
        let mut after_key = String::new();
        loop {
            let page = client
                .list_flags(ListFlagsRequest {
                    namespace: "load".into(),
                    after_key: after_key.clone(),
                    limit: 1000,
                    read: Some(ReadOptions { consistency: Consistency::Stale as i32, min_revision: max_revision }),
                })
                .await
                .unwrap_or_else(|e| panic!("list on node {id}: {e}\n{}", cluster.log_tail(id)))
                .into_inner();
            for f in page.flags {
                present.insert(f.key.clone(), f.created_revision);
            }
            if page.next_after_key.is_empty() {
                break;
            }
            after_key = page.next_after_key;
        }
        for (key, (revision, _)) in &acked {
            assert_eq!(present.get(key), Some(revision), "node {id} lost acknowledged write {key}");
        }
        let log = cluster.audit_log(id, max_revision).await;
        verify_chain(&log).unwrap_or_else(|e| panic!("node {id}: {e}"));
        logs.push(log);
    }
    let heads: Vec<_> = logs.iter().map(|l| (l.len(), l.last().map(|e| e.hash.clone()))).collect();
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "audit logs differ between nodes: {heads:?}");
}
