//! Fail-stop on storage errors: a node whose disk fails under it — writes accepted into the page
//! cache, then the fsync that should make them durable failing — stops with the storage exit
//! code and a message naming the failure, says it is not live until it is gone, and, restarted
//! on a working disk, has every write it acknowledged.
//!
//! The failing disk is real, not a mock ([`ThinDisk`]: ext4 on a loop device whose backing
//! store is far smaller than the filesystem, so `write` succeeds and `fsync` fails with EIO).
//!
//! Running out of space: with one node's data directory on a small filesystem ([`SmallDisk`],
//! a tmpfs), the free-space reserve raises the NOSPACE alarm before the disk is full and the
//! whole cluster refuses writes that grow it while reads, evaluation, kill switches and deletes
//! go on, until the disk grows and an operator clears the alarm; with the quota and reserve off,
//! the node fills its disk, stops (fail-stop) and, given more space, recovers everything.
//!
//! Building these disks needs root; without root each test says so and does nothing.

use std::time::{Duration, Instant};

use tonic::Code;
use vexil_proto::v1::audit_client::AuditClient;
use vexil_proto::v1::evaluation_client::EvaluationClient;
use vexil_proto::v1::{
    AuditEntry, ClearAlarmsRequest, Consistency, CreateFlagRequest, DeleteFlagRequest, EvaluateFlagRequest,
    GetFlagRequest, ListAlarmsRequest, ListAuditRequest, ReadOptions, SetFlagStateRequest,
};
use vexil_server::error::{error_info, exit_code};
use vexil_testkit::{Cluster, Listener, SmallDisk, ThinDisk, linearizable, verify_chain};

/// Serialises this file's tests (each fills a disk under a cluster of its own).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the disk can really store.
const BACKING_BYTES: u64 = 24 * 1024 * 1024;
/// What its filesystem believes it has: room for RocksDB's WAL preallocation, which ext4
/// records without writing data.
const FS_BYTES: u64 = 512 * 1024 * 1024;
/// Each flag carries this many variants of [`VARIANT_CHARS`] random hex characters (~60 KB,
/// incompressible): a few hundred fill the backing store.
const VARIANTS: usize = 5;
const VARIANT_CHARS: usize = 12 * 1024;
/// Writes after which a disk that has not failed fails the test.
const WRITES_MAX: usize = 2_000;
/// How long one write may take (a write caught in the failure fails rather than hangs).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the node may take to exit once a write has failed: the fail-stop drain bounds
/// (`FAIL_STOP_DRAIN_MS_MAX` + `SHUTDOWN_RAFT_DRAIN_MS_MAX`) plus slack.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_node_and_a_restart_loses_nothing_acknowledged() {
    // One disk-filling cluster at a time: together they starve each other's elections.
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    if let Err(why) = ThinDisk::available() {
        eprintln!("SKIPPED: a failing disk needs root to build (mount, losetup): {why}");
        return;
    }
    // Drop order (reverse of declaration): the node is killed, then the disk comes apart, then
    // the directory goes.
    let root = tempfile::tempdir().expect("cluster dir");
    let data = root.path().join("node-1").join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let mut disk = ThinDisk::mount(&data, BACKING_BYTES, FS_BYTES).expect("a failing disk under the data directory");
    let mut cluster =
        Cluster::builder(1).bin(env!("CARGO_BIN_EXE_vexil")).dir(root.path()).listener(Listener::Admin).start().await;
    let mut client = cluster.flags(1).await;

    // Write until the disk fails; remember what was acknowledged.
    let mut acknowledged: Vec<(String, serde_json::Value)> = Vec::new();
    let failed = loop {
        let i = acknowledged.len();
        assert!(i < WRITES_MAX, "the disk never failed in {WRITES_MAX} writes of ~60 KB");
        let key = format!("f-{i:04}");
        let spec = big_spec(i as u64);
        let request = CreateFlagRequest {
            namespace: "ns".into(),
            key: key.clone(),
            spec_json: spec.to_string(),
            options: None,
            strict: false,
        };
        match tokio::time::timeout(WRITE_TIMEOUT, client.create_flag(request)).await {
            Ok(Ok(_)) => acknowledged.push((key, spec["variants"].clone())),
            Ok(Err(status)) => break status,
            Err(_) => panic!("write {i} neither succeeded nor failed in {WRITE_TIMEOUT:?}\n{}", cluster.log_tail(1)),
        }
    };
    let failed_at = Instant::now();
    eprintln!("the write after {} acknowledged ones failed: {failed:?}", acknowledged.len());
    assert!(acknowledged.len() >= 10, "the disk failed too early to prove much: {failed:?}");

    // The core has stopped by the time the failed write is answered: the node is not live.
    let livez = admin_get(&cluster, 1, "/livez");
    eprintln!("/livez right after the failed write: {livez:?}");
    if let Some((code, body)) = livez {
        assert_eq!(code, 503, "a node whose storage failed must not say it is live: {body}");
        assert!(body.contains("Raft core has stopped"), "{body}");
    }

    // It exits on its own, with the storage code and a message naming the failure.
    let status = cluster.wait_exit(1, EXIT_TIMEOUT);
    eprintln!("node exited {:?} after the failed write with {status}", failed_at.elapsed());
    let log = cluster.log(1);
    assert_eq!(status.code(), Some(i32::from(exit_code::STORAGE)), "{}", cluster.log_tail(1));
    let fatal = log.lines().find(|l| l.starts_with("vexil: ")).unwrap_or_else(|| panic!("no final message\n{log}"));
    eprintln!("{fatal}");
    assert!(fatal.contains("storage failure, node stopped"), "{fatal}");
    assert!(
        ["Input/output error", "No space left on device", "Read-only file system"].iter().any(|e| fatal.contains(e)),
        "the message must name what the disk said: {fatal}"
    );

    // Move the data directory to a working disk (what an operator does) and restart.
    let fsck = disk.recover_into(&data).unwrap_or_else(|e| panic!("cannot recover the disk: {e}"));
    eprintln!("e2fsck: {fsck}");
    cluster.restart(1);
    cluster.wait_leader(Duration::from_secs(30)).await;
    assert_present(&cluster, 1, &acknowledged, Consistency::Linearizable).await;
    let mut client = cluster.flags(1).await;
    let audit = audit_log(&cluster, 1).await;
    verify_chain(&audit).expect("the audit chain verifies after the restart");
    for (key, _) in &acknowledged {
        assert!(
            audit.iter().any(|e| e.key == *key && e.action == "flag.create"),
            "the audit log lost the acknowledged creation of {key}"
        );
    }
    let after = CreateFlagRequest {
        namespace: "ns".into(),
        key: "after-restart".into(),
        spec_json: big_spec(u64::MAX).to_string(),
        options: None,
        strict: false,
    };
    client.create_flag(after).await.expect("the restarted node takes writes");
    eprintln!(
        "{} acknowledged writes present after the restart; audit chain of {} entries verifies",
        acknowledged.len(),
        audit.len()
    );
}

/// A flag definition of ~60 KB of incompressible text, different for every `seed`.
fn big_spec(seed: u64) -> serde_json::Value {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut variant = || {
        let mut s = String::with_capacity(VARIANT_CHARS);
        while s.len() < VARIANT_CHARS {
            // xorshift64: cheap and good enough to defeat lz4.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(&format!("{x:016x}"));
        }
        serde_json::Value::String(s)
    };
    let variants: serde_json::Map<String, serde_json::Value> =
        (0..VARIANTS).map(|v| (format!("v{v}"), variant())).collect();
    serde_json::json!({"state": "ENABLED", "defaultVariant": "v0", "variants": variants})
}

/// A node's whole audit log, in pages small enough for entries of ~60 KB.
async fn audit_log(cluster: &Cluster, id: u64) -> Vec<AuditEntry> {
    const PAGE: u32 = 16;
    let mut client = AuditClient::new(cluster.channel(id).await).max_decoding_message_size(64 * 1024 * 1024);
    let mut entries: Vec<AuditEntry> = Vec::new();
    loop {
        let after_seq = entries.last().map_or(0, |e| e.seq);
        let request = ListAuditRequest { after_seq, limit: PAGE, read: linearizable(), ..Default::default() };
        let page = client.list_audit(request).await.expect("audit page").into_inner().entries;
        let done = page.len() < PAGE as usize;
        entries.extend(page);
        if done {
            return entries;
        }
    }
}

/// One GET on a node's admin port, `None` when nothing listens any more.
fn admin_get(cluster: &Cluster, id: u64, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", cluster.port(id, Listener::Admin))).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// The small disk under node 2 of a three-node cluster: a tmpfs of [`SMALL_DISK_BYTES`].
const SMALL_DISK_BYTES: u64 = 64 * 1024 * 1024;
/// The reserve node 2 must keep free (the others, on the machine's disk, have far more).
const RESERVE_BYTES: u64 = 24 * 1024 * 1024;

/// A three-node cluster whose node 2 keeps its data on a [`SmallDisk`], started with `flags`.
async fn cluster_with_a_small_disk(root: &std::path::Path, flags: &[&str]) -> (Cluster, SmallDisk) {
    let data = root.join("node-2").join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let disk = SmallDisk::mount(&data, SMALL_DISK_BYTES).expect("a small disk under node 2");
    let cluster = Cluster::builder(3)
        .bin(env!("CARGO_BIN_EXE_vexil"))
        .dir(root)
        .listener(Listener::Admin)
        .flags(flags)
        .start()
        .await;
    (cluster, disk)
}

fn create(key: &str, seed: u64) -> CreateFlagRequest {
    CreateFlagRequest {
        namespace: "ns".into(),
        key: key.into(),
        spec_json: big_spec(seed).to_string(),
        options: None,
        strict: false,
    }
}

fn reason(status: &tonic::Status) -> String {
    error_info(status).map(|(r, _)| r).unwrap_or_default()
}

/// Every acknowledged flag is on node `id` with its definition, read at `consistency`.
async fn assert_present(
    cluster: &Cluster,
    id: u64,
    acknowledged: &[(String, serde_json::Value)],
    consistency: Consistency,
) {
    let mut client = cluster.flags(id).await;
    for (key, variants) in acknowledged {
        let read = Some(ReadOptions { consistency: consistency as i32, min_revision: 0 });
        let flag = client
            .get_flag(GetFlagRequest { namespace: "ns".into(), key: key.clone(), read })
            .await
            .unwrap_or_else(|e| panic!("node {id}: acknowledged flag {key} unreadable: {e}"))
            .into_inner()
            .flag
            .unwrap_or_else(|| panic!("node {id}: acknowledged flag {key} lost"));
        let spec: serde_json::Value = serde_json::from_str(&flag.spec_json).expect("spec json");
        assert_eq!(&spec["variants"], variants, "node {id}: flag {key} came back changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_running_short_turns_the_cluster_read_only_for_growth_until_the_alarm_is_cleared() {
    // One disk-filling cluster at a time: together they starve each other's elections.
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    if let Err(why) = ThinDisk::available() {
        eprintln!("SKIPPED: a small disk needs root to mount: {why}");
        return;
    }
    let root = tempfile::tempdir().expect("cluster dir");
    let reserve = RESERVE_BYTES.to_string();
    let flags = ["--storage-free-bytes-min", reserve.as_str(), "--storage-check-interval-ms", "100"];
    let (mut cluster, disk) = cluster_with_a_small_disk(root.path(), &flags).await;
    cluster.wait_leader(Duration::from_secs(30)).await;
    let mut client = cluster.flags(1).await;

    // Write through node 1 until the cluster refuses: node 2's disk runs short.
    let mut acknowledged: Vec<(String, serde_json::Value)> = Vec::new();
    let refused = loop {
        let i = acknowledged.len();
        assert!(i < WRITES_MAX, "no alarm in {WRITES_MAX} writes of ~60 KB");
        let key = format!("f-{i:04}");
        match tokio::time::timeout(WRITE_TIMEOUT, client.create_flag(create(&key, i as u64))).await {
            Ok(Ok(_)) => acknowledged.push((key, big_spec(i as u64)["variants"].clone())),
            Ok(Err(status)) => break status,
            Err(_) => panic!("write {i} neither succeeded nor failed in {WRITE_TIMEOUT:?}"),
        }
    };
    let free = disk.free_bytes().expect("free space of the small disk");
    eprintln!("refused after {} writes with {free} bytes still free on node 2: {refused:?}", acknowledged.len());
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "NO_SPACE", "{refused:?}");
    assert!(refused.message().contains("storage.free_bytes_min"), "the refusal names the limit: {refused:?}");
    assert!(refused.message().contains("vexilctl cluster alarm clear"), "and the way out: {refused:?}");
    assert!(free > 0, "the alarm must come before the disk is full");
    assert!(acknowledged.len() >= 5, "the alarm came too early to prove much");

    // Every node refuses growth (the alarm is replicated) and still serves.
    for id in 1..=3 {
        let status = cluster.flags(id).await.create_flag(create(&format!("refused-{id}"), 7)).await.unwrap_err();
        assert_eq!(reason(&status), "NO_SPACE", "node {id}: {status:?}");
    }
    let alarms = cluster.cluster(3).await.list_alarms(ListAlarmsRequest {}).await.expect("alarms").into_inner().alarms;
    assert_eq!(alarms.iter().map(|a| a.node_id).collect::<Vec<_>>(), vec![2], "{alarms:?}");
    assert!(alarms[0].reason.contains("storage.free_bytes_min"), "{alarms:?}");
    assert_present(&cluster, 2, &acknowledged, Consistency::Lease).await;
    assert_present(&cluster, 3, &acknowledged, Consistency::Linearizable).await;
    let evaluation = EvaluationClient::new(cluster.channel(2).await)
        .evaluate_flag(EvaluateFlagRequest { namespace: "ns".into(), key: "f-0000".into(), ..Default::default() })
        .await
        .expect("evaluation on the node short of space")
        .into_inner()
        .evaluation
        .expect("an evaluation");
    assert_eq!(evaluation.variant, "v0", "{evaluation:?}");
    // A kill switch and a delete go through: they do not grow the state.
    let off =
        SetFlagStateRequest { namespace: "ns".into(), key: "f-0000".into(), enabled: false, ..Default::default() };
    client.set_flag_state(off).await.expect("a kill switch works during the alarm");
    let (deleted, _) = acknowledged.pop().expect("one to delete");
    let delete = DeleteFlagRequest { namespace: "ns".into(), key: deleted.clone(), ..Default::default() };
    client.delete_flag(delete).await.expect("a delete works during the alarm");

    // Give the node room, clear the alarm: writes work again.
    disk.grow(4 * SMALL_DISK_BYTES).expect("grow the small disk");
    let cleared = cluster
        .cluster(1)
        .await
        .clear_alarms(ClearAlarmsRequest { options: None })
        .await
        .expect("clear the alarms")
        .into_inner()
        .cleared;
    assert_eq!(cleared.iter().map(|a| a.node_id).collect::<Vec<_>>(), vec![2]);
    client.create_flag(create("after-clear", 99)).await.expect("writes are accepted once the alarm is cleared");
    acknowledged.push(("after-clear".into(), big_spec(99)["variants"].clone()));

    // Nothing acknowledged was lost, on any node, across a restart of all of them.
    for id in 1..=3 {
        cluster.stop(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.wait_leader(Duration::from_secs(30)).await;
    for id in 1..=3 {
        assert_present(&cluster, id, &acknowledged, Consistency::Linearizable).await;
    }
    let audit = audit_log(&cluster, 2).await;
    verify_chain(&audit).expect("the audit chain verifies");
    for action in ["alarm.raise", "alarm.clear"] {
        assert!(audit.iter().any(|e| e.action == action), "{action} is audited");
    }
    assert!(audit.iter().any(|e| e.key == deleted && e.action == "flag.delete"), "the delete is audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quota_or_reserve_a_full_disk_stops_its_node_and_more_space_recovers_it() {
    // One disk-filling cluster at a time: together they starve each other's elections.
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    if let Err(why) = ThinDisk::available() {
        eprintln!("SKIPPED: a small disk needs root to mount: {why}");
        return;
    }
    let root = tempfile::tempdir().expect("cluster dir");
    let flags = ["--storage-free-bytes-min", "0", "--storage-quota-bytes", "0"];
    let (mut cluster, disk) = cluster_with_a_small_disk(root.path(), &flags).await;
    cluster.wait_leader_among(&[1, 3], Duration::from_secs(30)).await;
    let mut client = cluster.flags(1).await;

    // Node 2 fills its disk and stops; nodes 1 and 3 keep the cluster writable throughout.
    let mut acknowledged: Vec<(String, serde_json::Value)> = Vec::new();
    let mut livez_failed = false;
    let status = loop {
        let i = acknowledged.len();
        assert!(i < WRITES_MAX, "node 2 never stopped in {WRITES_MAX} writes of ~60 KB");
        let key = format!("f-{i:04}");
        match tokio::time::timeout(WRITE_TIMEOUT, client.create_flag(create(&key, i as u64))).await {
            Ok(Ok(_)) => acknowledged.push((key, big_spec(i as u64)["variants"].clone())),
            Ok(Err(status)) => panic!("a write failed while a majority had room: {status:?}"),
            Err(_) => panic!("write {i} neither succeeded nor failed in {WRITE_TIMEOUT:?}"),
        }
        if let Some((code, _)) = admin_get(&cluster, 2, "/livez") {
            livez_failed |= code != 200;
        }
        if let Some(status) = cluster.process_mut(2).try_wait() {
            break status;
        }
    };
    eprintln!("node 2 stopped after {} writes with {status} (/livez failed first: {livez_failed})", acknowledged.len());
    assert_eq!(status.code(), Some(i32::from(exit_code::STORAGE)), "{}", cluster.log_tail(2));
    assert!(cluster.log(2).contains("No space left on device"), "{}", cluster.log_tail(2));
    // Gone, so a supervisor's liveness probe fails (a core that stopped without the process
    // exiting answers 503: the ThinDisk test above).
    let livez = admin_get(&cluster, 2, "/livez");
    assert!(livez.as_ref().is_none_or(|(code, _)| *code != 200), "{livez:?}");

    // More space, a restart: node 2 has everything acknowledged, and its chain verifies.
    disk.grow(8 * SMALL_DISK_BYTES).expect("grow the small disk");
    cluster.restart(2);
    let last = format!("f-{:04}", acknowledged.len() - 1);
    let mut node2 = cluster.flags(2).await;
    vexil_testkit::eventually_async(Duration::from_secs(60), "node 2 caught up after its restart", || {
        let mut node2 = node2.clone();
        let last = last.clone();
        async move {
            node2.get_flag(GetFlagRequest { namespace: "ns".into(), key: last, read: linearizable() }).await.is_ok()
        }
    })
    .await;
    assert_present(&cluster, 2, &acknowledged, Consistency::Lease).await;
    let audit = audit_log(&cluster, 2).await;
    verify_chain(&audit).expect("node 2's audit chain verifies after the restart");
    node2.create_flag(create("after-restart", 77)).await.expect("the restarted node takes writes");
}
