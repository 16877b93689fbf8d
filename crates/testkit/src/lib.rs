//! Test support shared by the workspace's integration tests and benchmarks: a real cluster of
//! `vexil` processes on loopback ports, each with its own data directory, that a test can kill
//! (-9), stop (SIGTERM) and restart.
//!
//! Finding the binary: cargo only tells a crate where its *own* binaries are
//! (`CARGO_BIN_EXE_*`), and `vexil` belongs to `vexil-server`. [`vexil_binary`] therefore
//! runs `cargo build -p vexil-server --bin vexil` (same profile as the caller: debug for tests,
//! release for benches) once per process, which is a no-op taking well under a second when the
//! binary is current, and uses `<target>/<profile>/vexil` (`CARGO_TARGET_DIR` or the workspace's
//! `target/`). `VEXIL_BIN=/path/to/vexil` skips all that. The build inherits the caller's
//! environment, so run tests with the prebuilt RocksDB environment
//! (`eval "$(scripts/rocksdb-env.sh)"`) as every cargo command in this workspace is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vexil_proto::v1::cluster_client::ClusterClient;
use vexil_proto::v1::{StatusRequest, StatusResponse};

/// The workspace root (this crate lives in `crates/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}

/// The path of a `vexil` binary built from this workspace (see the module docs).
pub fn vexil_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("VEXIL_BIN") {
            return PathBuf::from(p);
        }
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let (profile, flag) = if cfg!(debug_assertions) { ("debug", None) } else { ("release", Some("--release")) };
        let bin = target.join(profile).join("vexil");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--quiet", "-p", "vexil-server", "--bin", "vexil"])
            .args(flag)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) if bin.exists() => eprintln!(
                "vexil-testkit: `cargo build -p vexil-server` failed; using the existing {}:\n{}",
                bin.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(o) => panic!("cannot build the vexil binary:\n{}", String::from_utf8_lossy(&o.stderr)),
            Err(e) if bin.exists() => eprintln!("vexil-testkit: cannot run cargo ({e}); using {}", bin.display()),
            Err(e) => panic!("cannot run cargo to build the vexil binary: {e}"),
        }
        assert!(bin.exists(), "{} does not exist after building it", bin.display());
        bin
    })
    .clone()
}

/// The read lease the nodes run with (below their 300 ms minimum election timeout).
pub const READ_LEASE_MS: u64 = 200;

/// A loopback TCP port that is free now and that no other caller in this process gets.
///
/// The ports come from below the kernel's ephemeral range (32768-60999 by default on Linux).
/// A port the kernel picked for `bind(0)` and that was then released goes back into that range,
/// where any outgoing connection (a gRPC client of another test) can take it before the node
/// meant to listen on it starts: seen as "Address already in use" on a node's admin port. Each
/// process starts at an offset derived from its pid, so test binaries running at the same time
/// rarely meet, and every port is checked by binding it before it is handed out.
pub fn free_port() -> u16 {
    const LOW: u64 = 10_000;
    const SPAN: u64 = 22_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let offset = u64::from(std::process::id()).wrapping_mul(7_919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "every loopback port in {LOW}..{} was tried", LOW + SPAN);
        let port = u16::try_from(LOW + (offset + n) % SPAN).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One node process.
pub struct NodeProc {
    pub id: u64,
    pub api_port: u16,
    pub raft_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

/// A cluster of `vexil` processes; dropping it kills them all.
pub struct Cluster {
    _dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeProc>,
    members: String,
    bin: PathBuf,
}

impl Cluster {
    /// Starts `n` voters that bootstrap one cluster, and waits (up to 30 s) for a leader.
    pub async fn start(n: u64) -> Cluster {
        let bin = vexil_binary();
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let data_dir = dir.path().join(format!("node-{id}"));
            nodes.insert(id, NodeProc { id, api_port: free_port(), raft_port: free_port(), data_dir, child: None });
        }
        let members = nodes
            .values()
            .map(|p| format!("{}=127.0.0.1:{}/127.0.0.1:{}", p.id, p.api_port, p.raft_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster { _dir: dir, nodes, members, bin };
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster.wait_leader(Duration::from_secs(30)).await;
        cluster
    }

    fn spawn(&mut self, id: u64) {
        let members = self.members.clone();
        let bin = self.bin.clone();
        let p = self.nodes.get_mut(&id).unwrap();
        std::fs::create_dir_all(&p.data_dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(p.data_dir.join("node.log")).unwrap();
        let child = Command::new(bin)
            .args(["--node-id", &id.to_string()])
            .args(["--data-dir", p.data_dir.to_str().unwrap()])
            .args(["--api-listen", &format!("127.0.0.1:{}", p.api_port)])
            .args(["--raft-listen", &format!("127.0.0.1:{}", p.raft_port)])
            .args(["--cluster-bootstrap", "true", "--cluster-initial-members", &members])
            .args(["--raft-heartbeat-interval-ms", "50"])
            .args(["--raft-election-timeout-min-ms", "300", "--raft-election-timeout-max-ms", "600"])
            .args(["--raft-write-timeout-ms", "3000", "--raft-rpc-timeout-ms", "500"])
            .args(["--raft-read-lease-ms", &READ_LEASE_MS.to_string()])
            .args(["--log", "info,openraft=warn"])
            .env_remove("VEXIL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        p.child = Some(child);
    }

    /// `http://127.0.0.1:<api port>` of node `id`.
    pub fn api_addr(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.nodes[&id].api_port)
    }

    /// Every node's API address, in id order.
    pub fn api_addrs(&self) -> Vec<String> {
        self.nodes.keys().map(|id| self.api_addr(*id)).collect()
    }

    /// The id of the node with this API address.
    pub fn node_at(&self, addr: &str) -> Option<u64> {
        self.nodes.keys().copied().find(|id| self.api_addr(*id) == addr)
    }

    /// A node's status, or `None` if it does not answer within about a second.
    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let ch = Channel::from_shared(self.api_addr(id))
            .unwrap()
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .ok()?;
        let mut c = ClusterClient::new(ch);
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        tokio::time::timeout(Duration::from_millis(800), c.status(req)).await.ok()?.ok().map(|r| r.into_inner())
    }

    /// Waits until every running node agrees on one running leader; returns its id.
    pub async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for (id, p) in &self.nodes {
                if p.child.is_some() {
                    leaders.push(self.status(*id).await.map_or(0, |s| s.leader_id));
                }
            }
            if let Some(&first) = leaders.first()
                && first != 0
                && leaders.iter().all(|l| *l == first)
                && self.nodes.get(&first).is_some_and(|p| p.child.is_some())
            {
                return first;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> =
                    self.running().iter().map(|id| format!("--- node {id} ---\n{}", self.log_tail(*id))).collect();
                panic!("no agreed leader within {within:?}: {leaders:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).unwrap().child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// kill -9 every running node.
    pub fn kill_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }

    /// SIGTERM, then wait (up to 10 s) for a clean exit.
    pub fn stop(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).unwrap().child.take() {
            let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "node {id} exited with {status} after SIGTERM");
                    break;
                }
                assert!(Instant::now() < deadline, "node {id} did not stop within 10s of SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn restart(&mut self, id: u64) {
        assert!(self.nodes[&id].child.is_none(), "node {id} is still running");
        self.spawn(id);
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|p| p.child.is_some()).map(|p| p.id).collect()
    }

    /// The last lines of a node's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(self.nodes[&id].data_dir.join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.nodes.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A boolean flag definition whose default variant is `default` ("on" or "off") and whose
/// metadata carries `tag` (unique tags make every write distinguishable).
pub fn bool_spec(default: &str, tag: &str) -> String {
    serde_json::json!({
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": default,
        "metadata": {"tag": tag}
    })
    .to_string()
}

/// Polls `done` every 10 ms until it holds; panics with `what` after `within`.
pub async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
