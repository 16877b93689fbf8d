//! Clusters of real processes on loopback: three Vexil nodes or three etcd members, each with
//! its own data directory, that a scenario can kill (-9), stop (SIGTERM) and restart.
//!
//! The load generator starts the clusters itself (rather than the script) because the failover
//! scenario must kill the leader it finds and start it again between repetitions. Dropping a
//! [`Cluster`] kills every member it started; the caller owns (and removes) the work directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::limits::STOP_TIMEOUT;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Vexil,
    Etcd,
}

/// How to start a cluster. Both systems get the same heartbeat and election timeout; both
/// fsync their logs before acknowledging (etcd always; Vexil syncs its WAL per append batch).
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub system: System,
    pub bin: PathBuf,
    pub nodes: usize,
    pub heartbeat_ms: u64,
    /// etcd takes one election timeout and randomises it in [t, 2t); Vexil takes the range.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Vexil's read lease (below the minimum election timeout).
    pub read_lease_ms: u64,
}

struct Member {
    /// Client port (Vexil API, etcd client URL).
    api_port: u16,
    /// Peer port (Vexil Raft, etcd peer URL).
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    spec: ClusterSpec,
    members: Vec<Member>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    /// Starts `spec.nodes` members with data under `root` (which must be empty or absent).
    pub fn start(spec: ClusterSpec, root: &Path) -> anyhow::Result<Cluster> {
        let mut members = Vec::new();
        for i in 0..spec.nodes {
            members.push(Member {
                api_port: free_port()?,
                peer_port: free_port()?,
                dir: root.join(format!("{}-{}", spec.system.name(), i + 1)),
                child: None,
            });
        }
        let mut cluster = Cluster { spec, members };
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].api_port)
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].dir
    }

    fn command(&self, i: usize) -> Command {
        let s = &self.spec;
        let m = &self.members[i];
        let mut cmd = Command::new(&s.bin);
        match s.system {
            System::Vexil => {
                let members = self
                    .members
                    .iter()
                    .enumerate()
                    .map(|(j, p)| format!("{}=127.0.0.1:{}/127.0.0.1:{}", j + 1, p.api_port, p.peer_port))
                    .collect::<Vec<_>>()
                    .join(",");
                cmd.args(["--node-id", &(i + 1).to_string()])
                    .arg("--data-dir")
                    .arg(m.dir.join("data"))
                    .args(["--api-listen", &format!("127.0.0.1:{}", m.api_port)])
                    .args(["--raft-listen", &format!("127.0.0.1:{}", m.peer_port)])
                    .args(["--cluster-bootstrap", "true", "--cluster-initial-members", &members])
                    .args(["--raft-heartbeat-interval-ms", &s.heartbeat_ms.to_string()])
                    .args(["--raft-election-timeout-min-ms", &s.election_min_ms.to_string()])
                    .args(["--raft-election-timeout-max-ms", &s.election_max_ms.to_string()])
                    .args(["--raft-read-lease-ms", &s.read_lease_ms.to_string()])
                    .args(["--log", "warn"])
                    .env_remove("VEXIL_CONFIG");
            }
            System::Etcd => {
                let initial = self
                    .members
                    .iter()
                    .enumerate()
                    .map(|(j, p)| format!("m{}=http://127.0.0.1:{}", j + 1, p.peer_port))
                    .collect::<Vec<_>>()
                    .join(",");
                let client = format!("http://127.0.0.1:{}", m.api_port);
                let peer = format!("http://127.0.0.1:{}", m.peer_port);
                cmd.args(["--name", &format!("m{}", i + 1)])
                    .arg("--data-dir")
                    .arg(m.dir.join("data"))
                    .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", "vexil-bench"])
                    .args(["--heartbeat-interval", &s.heartbeat_ms.to_string()])
                    .args(["--election-timeout", &s.election_min_ms.to_string()])
                    .args(["--logger", "zap", "--log-level", "warn"]);
            }
        }
        cmd
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let mut cmd = self.command(i);
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(m.dir.join("node.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.spec.bin.display()))?;
        // For the comparison script's cleanup trap, which kills what a crashed run left behind.
        std::fs::write(m.dir.join("pid"), child.id().to_string())?;
        m.child = Some(child);
        Ok(())
    }

    /// `kill -9`.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(mut child) = self.members[i].child.take() else { return Ok(()) };
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                anyhow::bail!("member {} did not stop within {STOP_TIMEOUT:?} of SIGTERM", i + 1);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Starts a stopped or killed member again with its data.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.members[i].child.is_none(), "member {} is still running", i + 1);
        self.spawn(i)
    }

    /// The last lines of a member's log, for error messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.members[i].dir.join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Vexil => "vexil",
            System::Etcd => "etcd",
        }
    }
}
