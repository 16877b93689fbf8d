//! The load generator's clusters: Vexil nodes or etcd members on loopback, which a scenario can
//! kill (-9) and restart by index (0-based; Vexil node `i + 1`).
//!
//! The processes are `vexil-testkit`'s: a Vexil cluster is a [`vexil_testkit::Cluster`] with the
//! benchmark's timings ([`vexil`]), an etcd member a [`vexil_testkit::Process`] running the
//! command line built here. So this file only says how to run etcd. Every member has its own
//! directory under the work directory, holding `node.log`, `pid` (for the comparison script's
//! cleanup trap) and `data/`. The load generator starts the clusters itself (rather than the
//! script) because the failover scenario must kill the leader it finds and start it again
//! between repetitions. Dropping a [`Cluster`] kills every member it started; the caller owns
//! (and removes) the work directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use vexil_testkit::{ClusterBuilder, Process, free_port};

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

/// The Vexil nodes of `spec` under `root`: the benchmark's timings, the server's default write
/// and Raft RPC timeouts, `--log warn`.
pub fn vexil(spec: &ClusterSpec, root: &Path) -> ClusterBuilder {
    vexil_testkit::Cluster::builder(spec.nodes as u64)
        .bin(&spec.bin)
        .dir(root)
        .heartbeat_ms(spec.heartbeat_ms)
        .election_timeout_ms(spec.election_min_ms, spec.election_max_ms)
        .read_lease_ms(spec.read_lease_ms)
        .write_timeout_ms(None)
        .rpc_timeout_ms(None)
        .log("warn")
}

struct EtcdMember {
    client_port: u16,
    process: Process,
}

enum Members {
    // Boxed: a cluster is a few hundred bytes, an etcd member list a pointer.
    Vexil(Box<vexil_testkit::Cluster>),
    Etcd(Vec<EtcdMember>),
}

pub struct Cluster {
    members: Members,
}

impl Cluster {
    /// Starts `spec.nodes` members with data under `root` (which must be empty or absent).
    pub fn start(spec: ClusterSpec, root: &Path) -> anyhow::Result<Cluster> {
        let members = match spec.system {
            System::Vexil => Members::Vexil(Box::new(
                vexil(&spec, root).spawn().with_context(|| format!("starting {}", spec.bin.display()))?,
            )),
            System::Etcd => Members::Etcd(start_etcd(&spec, root)?),
        };
        Ok(Cluster { members })
    }

    pub fn len(&self) -> usize {
        match &self.members {
            Members::Vexil(c) => c.ids().len(),
            Members::Etcd(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn endpoint(&self, i: usize) -> String {
        match &self.members {
            Members::Vexil(c) => c.api_addr(i as u64 + 1),
            Members::Etcd(m) => format!("http://127.0.0.1:{}", m[i].client_port),
        }
    }

    fn process(&self, i: usize) -> &Process {
        match &self.members {
            Members::Vexil(c) => c.process(i as u64 + 1),
            Members::Etcd(m) => &m[i].process,
        }
    }

    fn process_mut(&mut self, i: usize) -> &mut Process {
        match &mut self.members {
            Members::Vexil(c) => c.process_mut(i as u64 + 1),
            Members::Etcd(m) => &mut m[i].process,
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.process(i).pid()
    }

    /// `kill -9`.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        Ok(self.process_mut(i).kill()?)
    }

    /// Starts a killed member again with its data.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        Ok(self.process_mut(i).start()?)
    }

    /// The last lines of a member's log, for error messages.
    pub fn log_tail(&self, i: usize) -> String {
        self.process(i).log_tail()
    }
}

/// Starts `spec.nodes` etcd members named `m1`, `m2`, ... under `root/etcd-<n>`.
fn start_etcd(spec: &ClusterSpec, root: &Path) -> anyhow::Result<Vec<EtcdMember>> {
    let ports: Vec<(u16, u16)> = (0..spec.nodes).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(j, (_, peer))| format!("m{}=http://127.0.0.1:{peer}", j + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    for (i, (client_port, peer_port)) in ports.into_iter().enumerate() {
        let dir = root.join(format!("etcd-{}", i + 1));
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut process = Process::new(format!("etcd member {}", i + 1), &dir, &spec.bin);
        process
            .args(["--name".to_string(), format!("m{}", i + 1)])
            .args(["--data-dir".into(), dir.join("data").into_os_string()])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "vexil-bench"])
            .args(["--heartbeat-interval".into(), spec.heartbeat_ms.to_string()])
            .args(["--election-timeout".into(), spec.election_min_ms.to_string()])
            .args(["--logger", "zap", "--log-level", "warn"]);
        process.start()?;
        members.push(EtcdMember { client_port, process });
    }
    Ok(members)
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Vexil => "vexil",
            System::Etcd => "etcd",
        }
    }
}
