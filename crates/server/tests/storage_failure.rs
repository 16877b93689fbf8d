//! Fail-stop on storage errors: a node whose disk fails under it — writes accepted into the page
//! cache, then the fsync that should make them durable failing — stops with the storage exit
//! code and a message naming the failure, says it is not live until it is gone, and, restarted
//! on a working disk, has every write it acknowledged.
//!
//! The failing disk is real, not a mock ([`ThinDisk`]: ext4 on a loop device whose backing
//! store is far smaller than the filesystem, so `write` succeeds and `fsync` fails with EIO).
//! Building it needs root; without root the test says so and does nothing.

use std::time::{Duration, Instant};

use vexil_proto::v1::audit_client::AuditClient;
use vexil_proto::v1::{AuditEntry, CreateFlagRequest, GetFlagRequest, ListAuditRequest};
use vexil_server::error::exit_code;
use vexil_testkit::{Cluster, Listener, ThinDisk, linearizable, verify_chain};

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
        let request =
            CreateFlagRequest { namespace: "ns".into(), key: key.clone(), spec_json: spec.to_string(), options: None };
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
    let livez = admin_get(&cluster, "/livez");
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
    let mut client = cluster.flags(1).await;
    for (key, variants) in &acknowledged {
        let flag = client
            .get_flag(GetFlagRequest { namespace: "ns".into(), key: key.clone(), read: linearizable() })
            .await
            .unwrap_or_else(|e| panic!("acknowledged flag {key} lost: {e}"))
            .into_inner()
            .flag
            .unwrap_or_else(|| panic!("acknowledged flag {key} lost"));
        let spec: serde_json::Value = serde_json::from_str(&flag.spec_json).expect("spec json");
        assert_eq!(&spec["variants"], variants, "flag {key} came back changed");
    }
    let audit = audit_log(&cluster).await;
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

/// The node's whole audit log, in pages small enough for entries of ~60 KB.
async fn audit_log(cluster: &Cluster) -> Vec<AuditEntry> {
    const PAGE: u32 = 16;
    let mut client = AuditClient::new(cluster.channel(1).await).max_decoding_message_size(64 * 1024 * 1024);
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

/// One GET on the node's admin port, `None` when nothing listens any more.
fn admin_get(cluster: &Cluster, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", cluster.port(1, Listener::Admin))).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}
