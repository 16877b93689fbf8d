//! A small harness for driving the `vexilctl` binary against real `vexil` processes.
//!
//! `vexil-testkit` starts a fixed set of bootstrapped voters; these tests also need nodes that
//! start outside the membership (future learners) and custom Raft flags (small snapshot
//! thresholds), so the processes are started here. The `vexil` binary is found (and built if
//! stale) by `vexil_testkit::vexil_binary`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vexil_testkit::free_port;

pub struct Node {
    pub id: u64,
    pub api_port: u16,
    pub raft_port: u16,
    pub data_dir: PathBuf,
    /// Whether the node is one of the initial voters (bootstraps the cluster).
    pub initial: bool,
    child: Option<Child>,
}

/// `vexil` processes on loopback; dropping it kills them.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, Node>,
    members: String,
    extra: Vec<String>,
    bin: PathBuf,
}

impl Cluster {
    /// Starts `n` voters that bootstrap one cluster (with `extra` node flags), and waits for a
    /// leader.
    pub async fn start(n: u64, extra: &[&str]) -> Cluster {
        let bin = vexil_testkit::vexil_binary();
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            nodes.insert(id, Node::new(&dir, id, true));
        }
        let members = nodes
            .values()
            .map(|p| format!("{}=127.0.0.1:{}/127.0.0.1:{}", p.id, p.api_port, p.raft_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster { dir, nodes, members, extra: extra.iter().map(|s| s.to_string()).collect(), bin };
        for id in 1..=n {
            c.spawn(id);
        }
        c.wait_leader(Duration::from_secs(30)).await;
        c
    }

    /// Starts a node that is not a member yet (to be added as a learner).
    pub fn start_outsider(&mut self, id: u64) {
        let node = Node::new(&self.dir, id, false);
        self.nodes.insert(id, node);
        self.spawn(id);
    }

    fn spawn(&mut self, id: u64) {
        let p = self.nodes.get_mut(&id).unwrap();
        std::fs::create_dir_all(&p.data_dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(p.data_dir.join("node.log")).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--node-id", &id.to_string()])
            .args(["--data-dir", p.data_dir.to_str().unwrap()])
            .args(["--api-listen", &format!("127.0.0.1:{}", p.api_port)])
            .args(["--raft-listen", &format!("127.0.0.1:{}", p.raft_port)])
            .args(["--raft-heartbeat-interval-ms", "50"])
            .args(["--raft-election-timeout-min-ms", "300", "--raft-election-timeout-max-ms", "600"])
            .args(["--raft-write-timeout-ms", "5000", "--raft-rpc-timeout-ms", "1000"])
            .args(["--raft-read-lease-ms", "200"])
            .args(["--log", "info,openraft=warn"])
            .args(&self.extra);
        if p.initial {
            cmd.args(["--cluster-bootstrap", "true", "--cluster-initial-members", &self.members]);
        }
        let child = cmd
            .env_remove("VEXIL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        p.child = Some(child);
    }

    /// `127.0.0.1:<api port>`.
    pub fn api(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.nodes[&id].api_port)
    }

    pub fn raft(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.nodes[&id].raft_port)
    }

    /// The API addresses of these nodes, comma-separated (for `--endpoints`).
    pub fn endpoints(&self, ids: &[u64]) -> String {
        ids.iter().map(|id| self.api(*id)).collect::<Vec<_>>().join(",")
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|p| p.child.is_some()).map(|p| p.id).collect()
    }

    /// Waits until the running initial voters agree on a leader (asked through `vexilctl`).
    pub async fn wait_leader(&self, within: Duration) -> u64 {
        let ids: Vec<u64> = self.running();
        wait_leader_among(self, &ids, within).await
    }

    /// SIGTERM and wait for a clean exit (up to 10 s).
    pub fn stop(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).unwrap().child.take() {
            let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            assert!(ok.success());
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "node {id} exited with {status} after SIGTERM");
                    return;
                }
                assert!(Instant::now() < deadline, "node {id} did not stop within 10s of SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).unwrap().child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self, id: u64) {
        assert!(self.nodes[&id].child.is_none(), "node {id} is still running");
        self.spawn(id);
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.nodes[&id].data_dir.clone()
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.nodes[&id].data_dir.join("node.log")).unwrap_or_default()
    }
}

impl Node {
    fn new(dir: &tempfile::TempDir, id: u64, initial: bool) -> Node {
        Node {
            id,
            api_port: free_port(),
            raft_port: free_port(),
            data_dir: dir.path().join(format!("node-{id}")),
            initial,
            child: None,
        }
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

/// Polls `cluster status --output json` on `ids` until every one of them names the same
/// running leader, which is one of `ids`.
pub async fn wait_leader_among(c: &Cluster, ids: &[u64], within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let mut seen = Vec::new();
        for id in ids {
            let out = ctl(&["cluster", "status", "--output", "json", "--endpoints", &c.api(*id)]).await;
            let leader = if out.code == 0 {
                let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
                v["members"]
                    .as_array()
                    .and_then(|m| m.iter().find(|m| m["id"] == *id))
                    .and_then(|m| m["leader_id"].as_u64())
                    .unwrap_or(0)
            } else {
                0
            };
            seen.push(leader);
        }
        if let Some(&first) = seen.first()
            && first != 0
            && seen.iter().all(|l| *l == first)
            && ids.contains(&first)
        {
            return first;
        }
        assert!(Instant::now() < deadline, "no agreed leader among {ids:?} within {within:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one `vexilctl` run printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "vexilctl failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        &self.stdout
    }

    /// Asserts exit 0 and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Asserts this exit code and returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit {code}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        &self.stderr
    }
}

/// The `vexilctl` command, isolated from the user's environment and config file.
pub fn ctl_command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vexilctl"));
    cmd.args(args)
        .env_remove("VEXIL_ENDPOINTS")
        .env_remove("VEXILCTL_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", std::env::temp_dir().join("vexilctl-test-home-that-does-not-exist"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `vexilctl` to completion (bounded: 120 s).
pub async fn ctl(args: &[&str]) -> Out {
    let run = ctl_command(args).output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("vexilctl {args:?} did not finish within 120s"))
        .expect("run vexilctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `text` to a file in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

/// Polls `done` until it holds; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
