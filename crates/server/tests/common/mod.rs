//! A real cluster for integration tests: `vexil` processes on loopback ports, each with its own
//! data directory, that a test can kill (-9), stop (SIGTERM) and restart.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vexil_proto::v1::audit_client::AuditClient;
use vexil_proto::v1::cluster_client::ClusterClient;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::{AuditEntry, Consistency, ListAuditRequest, ReadOptions, StatusRequest, StatusResponse};
use vexil_testkit::free_port;

pub struct NodeProc {
    pub id: u64,
    pub api_port: u16,
    pub raft_port: u16,
    pub admin_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

pub struct TestCluster {
    _dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeProc>,
    members: String,
}

/// The read lease the test nodes run with (below their 300 ms minimum election timeout).
pub const LEASE_MS: u64 = 200;

impl TestCluster {
    /// Starts `n` voters that bootstrap one cluster, and waits for a leader.
    pub async fn start(n: u64) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let data_dir = dir.path().join(format!("node-{id}"));
            nodes.insert(
                id,
                NodeProc {
                    id,
                    api_port: free_port(),
                    raft_port: free_port(),
                    admin_port: free_port(),
                    data_dir,
                    child: None,
                },
            );
        }
        let members = nodes
            .values()
            .map(|p| format!("{}=127.0.0.1:{}/127.0.0.1:{}", p.id, p.api_port, p.raft_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestCluster { _dir: dir, nodes, members };
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster.wait_leader(Duration::from_secs(30)).await;
        cluster
    }

    fn spawn(&mut self, id: u64) {
        let members = self.members.clone();
        let p = self.nodes.get_mut(&id).unwrap();
        std::fs::create_dir_all(&p.data_dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(p.data_dir.join("node.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vexil"))
            .args(["--node-id", &id.to_string()])
            .args(["--data-dir", p.data_dir.to_str().unwrap()])
            .args(["--api-listen", &format!("127.0.0.1:{}", p.api_port)])
            .args(["--raft-listen", &format!("127.0.0.1:{}", p.raft_port)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", p.admin_port)])
            .args(["--cluster-bootstrap", "true", "--cluster-initial-members", &members])
            .args(["--raft-heartbeat-interval-ms", "50"])
            .args(["--raft-election-timeout-min-ms", "300", "--raft-election-timeout-max-ms", "600"])
            .args([
                "--raft-write-timeout-ms",
                "3000",
                "--raft-rpc-timeout-ms",
                "500",
                "--raft-read-lease-ms",
                &LEASE_MS.to_string(),
            ])
            .args(["--log", "info,openraft=warn"])
            // Even-numbered nodes run on the single-threaded runtime, odd ones on the default
            // work-stealing one: every cluster test covers both, and a mix of them.
            .args(["--worker-threads", if id.is_multiple_of(2) { "1" } else { "0" }])
            .env_remove("VEXIL_CONFIG")
            .env_remove("VEXIL_WORKER_THREADS")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        p.child = Some(child);
    }

    pub fn api_addr(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.nodes[&id].api_port)
    }

    async fn channel(&self, id: u64) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Channel::from_shared(self.api_addr(id))
                .unwrap()
                .connect_timeout(Duration::from_millis(500))
                .connect()
                .await
            {
                Ok(ch) => return ch,
                Err(e) if Instant::now() > deadline => panic!("node {id} is not reachable: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn flags(&self, id: u64) -> FlagsClient<Channel> {
        FlagsClient::new(self.channel(id).await)
    }

    pub async fn audit(&self, id: u64) -> AuditClient<Channel> {
        AuditClient::new(self.channel(id).await)
    }

    pub async fn cluster(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(id).await)
    }

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
        c.status(req).await.ok().map(|r| r.into_inner())
    }

    /// Waits until every running node agrees on one leader; returns its id.
    pub async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for (id, p) in &self.nodes {
                if p.child.is_some() {
                    leaders.push(self.status(*id).await.map(|s| s.leader_id).unwrap_or(0));
                }
            }
            if let Some(&first) = leaders.first()
                && first != 0
                && leaders.iter().all(|l| *l == first)
                && self.nodes[&first].child.is_some()
            {
                return first;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> =
                    self.running().into_iter().map(|id| format!("--- node {id}:\n{}", self.log_tail(id))).collect();
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

    /// SIGTERM, then wait for a clean exit.
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

    /// SIGSTOP: the process keeps its sockets but does nothing (a stalled, lagging node).
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    fn signal(&self, id: u64, sig: &str) {
        let pid = self.nodes[&id].child.as_ref().expect("running").id();
        assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    }

    /// One HTTP GET on the node's admin port: (status code, body).
    pub fn admin_get(&self, id: u64, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.nodes[&id].admin_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (code, body)
    }

    pub fn restart(&mut self, id: u64) {
        assert!(self.nodes[&id].child.is_none(), "node {id} is still running");
        self.spawn(id);
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|p| p.child.is_some()).map(|p| p.id).collect()
    }

    /// The node's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(self.nodes[&id].data_dir.join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Every audit entry a node holds, read locally once it has applied `min_revision`.
    pub async fn audit_log(&self, id: u64, min_revision: u64) -> Vec<AuditEntry> {
        let mut client = self.audit(id).await;
        let mut out = Vec::new();
        let mut after_seq = 0;
        loop {
            let page = client
                .list_audit(ListAuditRequest {
                    after_seq,
                    limit: 1000,
                    read: Some(ReadOptions { consistency: Consistency::Stale as i32, min_revision }),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let n = page.entries.len();
            out.extend(page.entries);
            if n < 1000 {
                return out;
            }
            after_seq = out.last().unwrap().seq;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for p in self.nodes.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A boolean flag definition whose default variant names `tag` (unique values make every
/// write distinguishable).
pub fn spec(tag: &str) -> String {
    serde_json::json!({
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "on",
        "metadata": {"tag": tag}
    })
    .to_string()
}

/// Checks a node's audit log against the hash chain, from genesis.
pub fn verify_chain(entries: &[AuditEntry]) -> Result<u64, vexil_model::ChainError> {
    let mut v = vexil_model::ChainVerifier::new();
    for e in entries {
        let entry = vexil_model::AuditEntry::try_from(e).expect("a well-formed audit entry");
        v.push(&entry)?;
    }
    Ok(v.verified())
}

/// Read options for read-your-writes: a default (lease) read on a follower may predate a write
/// that was just acknowledged, within the lease bound.
pub fn linearizable() -> Option<vexil_proto::v1::ReadOptions> {
    Some(vexil_proto::v1::ReadOptions { consistency: Consistency::Linearizable as i32, min_revision: 0 })
}
