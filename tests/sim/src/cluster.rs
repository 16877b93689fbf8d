//! Simulated hosts running the real node: `Node::start_with` over a [`MemDisk`], the real
//! gRPC services through `serve_incoming`, peers over simulated TCP, and a clock derived from
//! simulated time.
//!
//! A node's [`MemDisk`] is created outside the host's software factory, so it survives a crash
//! or bounce; each start calls [`MemDisk::recover`] first, which drops whatever was never
//! synced — exactly what a real crash loses.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use vexil_raft_store::NodeId;
use vexil_raft_store::mem::{Faults, MemDisk};
use vexil_server::config::{RaftConfig, WatchConfig};
use vexil_server::node::{Clock, Environment, InjectedFaults};
use vexil_server::{Config, Node};

use crate::net;

pub const API_PORT: u16 = 7001;
pub const RAFT_PORT: u16 = 7101;

/// Unix time of the simulation's start (2025-01-01T00:00:00Z), fixed so stamped times repeat.
pub const EPOCH_MS: i64 = 1_735_689_600_000;

/// The Raft timings of every simulated node.
pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// The lease bound the lease checker holds `lease` reads to.
pub const READ_LEASE_MS: u64 = 200;
pub const WRITE_TIMEOUT_MS: u64 = 1_500;
/// How often a node's watch streams get progress, and how long it may go unconfirmed before it
/// ends them (a fifth of the defaults, like the Raft timings).
pub const PROGRESS_INTERVAL_MS: u64 = 200;
pub const UNCONFIRMED_MAX_MS: u64 = 600;

pub fn host_name(id: NodeId) -> String {
    format!("n{id}")
}

pub fn api_addr(id: NodeId) -> String {
    format!("n{id}:{API_PORT}")
}

/// The nodes started so far, by id (replaced on every restart). Shared by the hosts and the
/// driver; every simulated host runs on the driver's thread.
pub type Registry = Rc<RefCell<BTreeMap<NodeId, Arc<Node>>>>;

/// The graceful-stop signal of each running node (its SIGTERM): the driver raises it, the
/// node's `serve_incoming` then leaves as a real process does. Replaced on every start.
pub type Stoppers = Rc<RefCell<BTreeMap<NodeId, Arc<Notify>>>>;

/// How one node is set up.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    pub id: NodeId,
    /// The initial voters (bootstrapped by the lowest id); others start empty and wait to be
    /// added.
    pub voters: u64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
    pub bugs: InjectedFaults,
    /// Check bearer tokens: the first leader creates the admin token [`ADMIN_SECRET`], and every
    /// client sends one, so callers are distinct principals. Otherwise the node runs
    /// `--insecure` and every caller is the admin `anonymous`.
    pub tokens: bool,
}

impl NodeSetup {
    pub fn config(&self) -> Config {
        let id = self.id;
        let mut c = Config { node_id: id, data_dir: PathBuf::from(format!("/sim/n{id}")), ..Config::default() };
        // Simulated TCP carries no TLS. Tokens work without it: a scenario that needs distinct
        // principals (change control) turns them on.
        c.insecure = !self.tokens;
        if self.tokens {
            c.auth.bootstrap_token_file = Some(admin_token_file());
            // The rate limiter runs on the real clock, which would make runs depend on the host.
            c.auth.principal_requests_per_second = 0;
        }
        c.api_advertise = api_addr(id);
        c.raft_advertise = format!("n{id}:{RAFT_PORT}");
        c.cluster.bootstrap = id <= self.voters;
        if c.cluster.bootstrap {
            c.cluster.initial_members =
                (1..=self.voters).map(|i| format!("{i}=n{i}:{API_PORT}/n{i}:{RAFT_PORT}")).collect();
        }
        c.raft = RaftConfig {
            heartbeat_interval_ms: HEARTBEAT_MS,
            election_timeout_min_ms: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: ELECTION_TIMEOUT_MAX_MS,
            rpc_timeout_ms: 300,
            install_snapshot_timeout_ms: 1_000,
            snapshot_logs_since_last: self.snapshot_logs_since_last,
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            snapshot_chunk_bytes: 16 * 1024,
            write_timeout_ms: WRITE_TIMEOUT_MS,
            read_lease_ms: READ_LEASE_MS,
        };
        c.watch = WatchConfig { progress_interval_ms: PROGRESS_INTERVAL_MS, unconfirmed_max_ms: UNCONFIRMED_MAX_MS };
        c
    }
}

/// The secret of the first admin token (`admin`) of a cluster that checks tokens: fixed, so
/// runs repeat.
pub const ADMIN_SECRET: &str = "vexil_5133000000000000000000000000000000000000000000000000000000000001";

/// A file holding [`ADMIN_SECRET`], for `auth.bootstrap_token_file` (written once per process).
pub fn admin_token_file() -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("vexil-sim-{}-admin.token", std::process::id()));
        std::fs::write(&path, ADMIN_SECRET).expect("write the simulation's admin token file");
        path
    })
    .clone()
}

/// Unix milliseconds on simulated time.
pub fn sim_clock() -> Clock {
    Arc::new(|| EPOCH_MS + turmoil::sim_elapsed().map(|d| d.as_millis() as i64).unwrap_or(0))
}

/// Registers node `setup.id` as a turmoil host on `disk`.
pub fn add_host(sim: &mut turmoil::Sim<'_>, setup: NodeSetup, disk: MemDisk, registry: Registry, stoppers: Stoppers) {
    let name = host_name(setup.id);
    sim.host(name.as_str(), move || {
        let (setup, disk, registry, stoppers) = (setup.clone(), disk.clone(), registry.clone(), stoppers.clone());
        async move {
            // A start after a crash sees only what was synced.
            disk.recover();
            let (log_store, state_machine, reader) = disk.open()?;
            let api = turmoil::net::TcpListener::bind(("0.0.0.0", API_PORT)).await?;
            let raft = turmoil::net::TcpListener::bind(("0.0.0.0", RAFT_PORT)).await?;
            let env = Environment {
                log_store,
                state_machine,
                reader,
                channels: net::channel_factory(),
                tls: None,
                clock: sim_clock(),
                faults: setup.bugs,
            };
            let node = Node::start_with(setup.config(), env).await?;
            registry.borrow_mut().insert(setup.id, node.clone());
            let stop = Arc::new(Notify::new());
            stoppers.borrow_mut().insert(setup.id, stop.clone());
            let sigterm = async move { stop.notified().await };
            vexil_server::serve_incoming(node, net::incoming(api), net::incoming(raft), Default::default(), sigterm)
                .await?;
            Ok(())
        }
    });
}

/// A disk for a node, with the given storage bugs.
pub fn disk(bugs: Faults) -> MemDisk {
    MemDisk::new(bugs)
}

/// How long an RPC from a simulated client may take before it counts as timed out.
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(2_500);
