//! A cluster of `vexil` processes on loopback: [`ClusterBuilder`] says how the nodes run (every
//! setting a suite may differ in), [`Cluster`] starts them and kills (-9), stops (SIGTERM),
//! pauses, resumes and restarts them by node id.
//!
//! Layout: the cluster's directory (a temporary one unless [`ClusterBuilder::dir`] names one)
//! holds `node-<id>/` per node, with `node.log`, `pid` and the node's data directory `data/`
//! (a test may mount a filesystem of its own there before the cluster starts).
//!
//! The gRPC helpers on a cluster (clients, status, leader agreement, audit log) are in
//! `grpc.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::limits::{LEADER_TIMEOUT, STOP_TIMEOUT};
use crate::security::Credentials;
use crate::{Listener, Process, free_port, vexil_binary};

/// The read lease test nodes run with by default (below their 300 ms minimum election timeout).
pub const READ_LEASE_MS: u64 = 200;

/// Which tokio runtime the nodes run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// The server's default (no `--worker-threads`).
    Default,
    /// Even-numbered nodes on the single-threaded runtime (`--worker-threads 1`), odd ones on
    /// the work-stealing one (`0`): every cluster test covers both, and a mix of them.
    Mixed,
}

/// How a cluster's nodes run. [`Cluster::builder`] starts from the test settings: 50 ms
/// heartbeat, 300-600 ms election timeout, 3000 ms write and 500 ms Raft RPC timeout,
/// [`READ_LEASE_MS`], log `info,openraft=warn`, the default runtime, the API and Raft listeners
/// only, and the binary [`vexil_binary`] builds.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    voters: u64,
    bin: Option<PathBuf>,
    dir: Option<PathBuf>,
    heartbeat_ms: u64,
    election_timeout_ms: (u64, u64),
    write_timeout_ms: Option<u64>,
    rpc_timeout_ms: Option<u64>,
    read_lease_ms: u64,
    /// `watch.progress_interval_ms` and `watch.unconfirmed_max_ms`; `None`: the defaults.
    watch_freshness_ms: Option<(u64, u64)>,
    log: String,
    runtime: Runtime,
    listeners: BTreeSet<Listener>,
    flags: Vec<String>,
    secure: bool,
    uninitialised: bool,
}

impl ClusterBuilder {
    fn new(voters: u64) -> ClusterBuilder {
        ClusterBuilder {
            voters,
            bin: None,
            dir: None,
            heartbeat_ms: 50,
            election_timeout_ms: (300, 600),
            write_timeout_ms: Some(3000),
            rpc_timeout_ms: Some(500),
            read_lease_ms: READ_LEASE_MS,
            watch_freshness_ms: None,
            log: "info,openraft=warn".into(),
            runtime: Runtime::Default,
            listeners: Listener::ALL.into_iter().filter(|l| l.always()).collect(),
            flags: Vec::new(),
            secure: false,
            uninitialised: false,
        }
    }

    /// Run this `vexil` binary (`env!("CARGO_BIN_EXE_vexil")`, or the load generator's `--bin`)
    /// instead of building one.
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }

    /// Keep the nodes under this directory (absent, empty, or holding only `node-<id>/data`
    /// directories prepared for the nodes) instead of a temporary one removed on drop.
    pub fn dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.dir = Some(path.into());
        self
    }

    pub fn heartbeat_ms(mut self, ms: u64) -> Self {
        self.heartbeat_ms = ms;
        self
    }

    pub fn election_timeout_ms(mut self, min: u64, max: u64) -> Self {
        self.election_timeout_ms = (min, max);
        self
    }

    /// `None`: the server's default.
    pub fn write_timeout_ms(mut self, ms: impl Into<Option<u64>>) -> Self {
        self.write_timeout_ms = ms.into();
        self
    }

    /// `None`: the server's default.
    pub fn rpc_timeout_ms(mut self, ms: impl Into<Option<u64>>) -> Self {
        self.rpc_timeout_ms = ms.into();
        self
    }

    pub fn read_lease_ms(mut self, ms: u64) -> Self {
        self.read_lease_ms = ms;
        self
    }

    /// How often streams get a lease-confirmed `progress`, and how long a node may go
    /// unconfirmed before it ends its streams (`watch.progress_interval_ms`,
    /// `watch.unconfirmed_max_ms`).
    pub fn watch_freshness_ms(mut self, progress_interval: u64, unconfirmed_max: u64) -> Self {
        self.watch_freshness_ms = Some((progress_interval, unconfirmed_max));
        self
    }

    /// The `--log` filter.
    pub fn log(mut self, filter: &str) -> Self {
        self.log = filter.into();
        self
    }

    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = runtime;
        self
    }

    /// Also open this listener on every node.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.insert(listener);
        self
    }

    /// More `vexil` flags for every node (after the harness's own, so they win).
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Run the nodes secure: TLS on every port with certificates of a cluster CA, mutual TLS
    /// between nodes, and tokens checked (the first admin token from a file;
    /// [`Cluster::credentials`]). Without it nodes run `--insecure`.
    pub fn secure(mut self) -> Self {
        self.secure = true;
        self
    }

    /// Start the voters without forming a cluster (no `--cluster-bootstrap`) and, when secure,
    /// without a first admin token file: the test initialises it through `Init`, which then
    /// creates the first admin token. Use [`ClusterBuilder::spawn`] (there is no leader to
    /// wait for).
    pub fn uninitialised(mut self) -> Self {
        self.uninitialised = true;
        self
    }

    /// Starts the voters and waits (up to 30 s) until they agree on a leader.
    pub async fn start(self) -> Cluster {
        let cluster = self.spawn().unwrap_or_else(|e| panic!("cannot start the cluster: {e}"));
        cluster.wait_leader(LEADER_TIMEOUT).await;
        cluster
    }

    /// Starts the voters without waiting for a leader.
    pub fn spawn(self) -> io::Result<Cluster> {
        let bin = self.bin.clone().unwrap_or_else(vexil_binary);
        let (tempdir, root) = match &self.dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let t = tempfile::tempdir()?;
                let root = t.path().to_path_buf();
                (Some(t), root)
            }
        };
        let ports: Vec<(u64, BTreeMap<Listener, u16>)> = (1..=self.voters).map(|id| (id, self.ports())).collect();
        let members = ports
            .iter()
            .map(|(id, p)| format!("{id}=127.0.0.1:{}/127.0.0.1:{}", p[&Listener::Api], p[&Listener::Raft]))
            .collect::<Vec<_>>()
            .join(",");
        let credentials = if self.secure { Some(Credentials::create(&root.join("pki"))?) } else { None };
        let mut cluster =
            Cluster { _tempdir: tempdir, root, bin, settings: self, members, nodes: BTreeMap::new(), credentials };
        for (id, ports) in ports {
            cluster.add_node(id, ports, true)?;
        }
        Ok(cluster)
    }

    fn ports(&self) -> BTreeMap<Listener, u16> {
        self.listeners.iter().map(|l| (*l, free_port())).collect()
    }
}

/// One node: its ports, its data directory and its process.
#[derive(Debug)]
struct Node {
    ports: BTreeMap<Listener, u16>,
    data_dir: PathBuf,
    process: Process,
}

/// A cluster of `vexil` processes; dropping it kills them all.
#[derive(Debug)]
pub struct Cluster {
    _tempdir: Option<tempfile::TempDir>,
    root: PathBuf,
    bin: PathBuf,
    settings: ClusterBuilder,
    /// `--cluster-initial-members` of the voters.
    members: String,
    nodes: BTreeMap<u64, Node>,
    credentials: Option<Credentials>,
}

impl Cluster {
    /// A cluster of `voters` nodes with the test settings (see [`ClusterBuilder`]).
    pub fn builder(voters: u64) -> ClusterBuilder {
        ClusterBuilder::new(voters)
    }

    /// Starts `n` voters with the test settings and waits (up to 30 s) for a leader.
    pub async fn start(n: u64) -> Cluster {
        Cluster::builder(n).start().await
    }

    /// Starts a node that is not a member yet (to be added as a learner).
    pub fn start_outsider(&mut self, id: u64) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists already");
        let ports = self.settings.ports();
        self.add_node(id, ports, false).unwrap_or_else(|e| panic!("cannot start node {id}: {e}"));
    }

    fn add_node(&mut self, id: u64, ports: BTreeMap<Listener, u16>, voter: bool) -> io::Result<()> {
        let s = &self.settings;
        let dir = self.root.join(format!("node-{id}"));
        let data_dir = dir.join("data");
        let mut p = Process::new(format!("node {id}"), dir, &self.bin);
        p.args(["--node-id".to_string(), id.to_string()])
            .args(["--data-dir".into(), data_dir.clone().into_os_string()]);
        for (listener, port) in &ports {
            p.args([listener.flag().to_string(), format!("127.0.0.1:{port}")]);
        }
        if voter && !s.uninitialised {
            p.args(["--cluster-bootstrap", "true", "--cluster-initial-members", &self.members]);
        }
        p.args(["--raft-heartbeat-interval-ms".into(), s.heartbeat_ms.to_string()])
            .args(["--raft-election-timeout-min-ms".into(), s.election_timeout_ms.0.to_string()])
            .args(["--raft-election-timeout-max-ms".into(), s.election_timeout_ms.1.to_string()]);
        if let Some(ms) = s.write_timeout_ms {
            p.args(["--raft-write-timeout-ms".into(), ms.to_string()]);
        }
        if let Some(ms) = s.rpc_timeout_ms {
            p.args(["--raft-rpc-timeout-ms".into(), ms.to_string()]);
        }
        p.args(["--raft-read-lease-ms".into(), s.read_lease_ms.to_string()]).args(["--log", &s.log]);
        if let Some((progress, unconfirmed)) = s.watch_freshness_ms {
            p.args(["--watch-progress-interval-ms".into(), progress.to_string()])
                .args(["--watch-unconfirmed-max-ms".into(), unconfirmed.to_string()]);
        }
        if s.runtime == Runtime::Mixed {
            p.args(["--worker-threads", if id.is_multiple_of(2) { "1" } else { "0" }]);
        }
        match &self.credentials {
            Some(c) => {
                p.args(c.node_flags(id, !s.uninitialised)?);
            }
            None => {
                p.args(["--insecure"]);
            }
        }
        p.args(&s.flags);
        // Every flag has a `VEXIL_*` variable; a developer's must not reach the nodes.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("VEXIL_") {
                p.env_remove(name);
            }
        }
        self.nodes.insert(id, Node { ports, data_dir, process: p });
        self.process_mut(id).start()
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes.get(&id).unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Every node's id (started or not, voter or outsider).
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The ids of the nodes whose process is running.
    pub fn running(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.process.is_running()).map(|(id, _)| *id).collect()
    }

    /// The port of one of a node's listeners.
    pub fn port(&self, id: u64, listener: Listener) -> u16 {
        *self.node(id).ports.get(&listener).unwrap_or_else(|| {
            panic!("node {id} has no {listener:?} listener; ask for it with ClusterBuilder::listener")
        })
    }

    /// `127.0.0.1:<port>` of one of a node's listeners.
    pub fn addr(&self, id: u64, listener: Listener) -> String {
        format!("127.0.0.1:{}", self.port(id, listener))
    }

    /// `http://127.0.0.1:<api port>` of node `id` (`https://` in a secure cluster).
    pub fn api_addr(&self, id: u64) -> String {
        let scheme = if self.credentials.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr(id, Listener::Api))
    }

    /// A secure cluster's CA and admin token ([`ClusterBuilder::secure`]).
    pub fn credentials(&self) -> &Credentials {
        self.credentials.as_ref().expect("a secure cluster (ClusterBuilder::secure)")
    }

    /// Whether the nodes run secure.
    pub fn is_secure(&self) -> bool {
        self.credentials.is_some()
    }

    /// Every node's API address, in id order.
    pub fn api_addrs(&self) -> Vec<String> {
        self.nodes.keys().map(|id| self.api_addr(*id)).collect()
    }

    /// The API addresses (`host:port`) of these nodes, comma-separated (for `--endpoints`).
    pub fn endpoints(&self, ids: &[u64]) -> String {
        ids.iter().map(|id| self.addr(*id, Listener::Api)).collect::<Vec<_>>().join(",")
    }

    /// The id of the node with this API address.
    pub fn node_at(&self, addr: &str) -> Option<u64> {
        self.nodes.keys().copied().find(|id| self.api_addr(*id) == addr)
    }

    /// The node's data directory (`--data-dir`).
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).data_dir
    }

    /// The node's process, for what the methods below do not cover (its pid).
    pub fn process(&self, id: u64) -> &Process {
        &self.node(id).process
    }

    /// The node's process, to handle its errors instead of failing the test (the load
    /// generator).
    pub fn process_mut(&mut self, id: u64) -> &mut Process {
        &mut self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no node {id}")).process
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        self.process_mut(id).kill().unwrap_or_else(|e| panic!("kill node {id}: {e}"));
    }

    /// kill -9 every running node.
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// SIGTERM, then wait (up to 10 s) for a clean exit.
    pub fn stop(&mut self, id: u64) {
        if let Err(e) = self.process_mut(id).stop(STOP_TIMEOUT) {
            panic!("{e}\n{}", self.log_tail(id));
        }
    }

    /// Waits up to `within` for the node to exit on its own and returns its exit status.
    pub fn wait_exit(&mut self, id: u64, within: std::time::Duration) -> std::process::ExitStatus {
        match self.process_mut(id).wait_exit(within) {
            Ok(status) => status,
            Err(e) => panic!("{e}\n{}", self.log_tail(id)),
        }
    }

    /// Starts a stopped or killed node again, with its data.
    pub fn restart(&mut self, id: u64) {
        self.process_mut(id).start().unwrap_or_else(|e| panic!("restart node {id}: {e}"));
    }

    /// SIGSTOP: the process keeps its sockets but does nothing (a stalled, lagging node).
    pub fn pause(&self, id: u64) {
        self.process(id).pause().unwrap_or_else(|e| panic!("pause node {id}: {e}"));
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&self, id: u64) {
        self.process(id).resume().unwrap_or_else(|e| panic!("resume node {id}: {e}"));
    }

    /// The node's whole log.
    pub fn log(&self, id: u64) -> String {
        self.process(id).log()
    }

    /// The last lines of the node's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        self.process(id).log_tail()
    }
}
