//! Node configuration: one TOML file, every key overridable by a `VEXIL_*` environment
//! variable and by a command-line flag (flag > environment > file > default).
//!
//! Invalid configuration fails at start with a message naming the key, e.g.
//! "config key `raft.election_timeout_min_ms`: must be greater than ...".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;
use vexil_raft_store::NodeInfo;

/// The whole configuration of one node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's id, unique in the cluster and never reused. 0 means "derive it from the
    /// hostname ordinal" (`vexil-2` → 3), for StatefulSets.
    pub node_id: u64,
    pub data_dir: PathBuf,
    /// Where the public gRPC API listens.
    pub api_listen: SocketAddr,
    /// Where the internal Raft transport listens.
    pub raft_listen: SocketAddr,
    /// The API address other nodes and clients use to reach this node (default: `api_listen`).
    pub api_advertise: String,
    /// The Raft address other nodes use to reach this node (default: `raft_listen`).
    pub raft_advertise: String,
    /// Where the admin HTTP port (`/metrics`, `/livez`, `/readyz`) listens; unset disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Log filter, as in `RUST_LOG` (`info`, `vexil_server=debug,openraft=warn`).
    pub log: String,
    /// Threads that run the node's async work (gRPC, Raft, apply). 0: one per CPU, with work
    /// stealing (the default). 1: one thread and no hand-offs between threads, which costs less
    /// CPU per request and answers sooner on a small machine or one shared with other nodes,
    /// but uses at most one core for that work (WAL syncs and snapshots keep their own
    /// threads); measured in `benches/README.md`. N > 1: N threads.
    pub worker_threads: usize,
    pub cluster: ClusterConfig,
    pub raft: RaftConfig,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Initialise a new cluster from `initial_members` if this node has never been part of
    /// one. Only the member with the lowest id initialises; the others wait to be contacted.
    /// A node with existing state never re-initialises.
    pub bootstrap: bool,
    /// `id=api_addr/raft_addr` for every initial voter, e.g. `1=10.0.0.1:7001/10.0.0.1:7101`.
    pub initial_members: Vec<String>,
    /// Shared secret every Raft RPC must carry; empty disables the check.
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Bound on one append or vote RPC.
    pub rpc_timeout_ms: u64,
    /// Bound on one snapshot chunk RPC (raise for WAN learners).
    pub install_snapshot_timeout_ms: u64,
    /// Build a snapshot after this many entries since the last one. A snapshot copies the whole
    /// state, audit history included, so its cost grows with the history: too low, and a busy
    /// node spends a share of its CPU rewriting snapshots (measured: 10 % of a follower's
    /// samples at 5,000 while taking ~7,000 writes/s; `benches/README.md`).
    pub snapshot_logs_since_last: u64,
    /// Log entries kept after a snapshot, so slightly lagging followers need no snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// Bytes per snapshot chunk on the wire.
    pub snapshot_chunk_bytes: u64,
    /// How long a write may wait for commit before the client is told the outcome is unknown.
    pub write_timeout_ms: u64,
    /// How long a read index stays usable for `lease` reads after it was requested: the bound
    /// on their staleness. Must be below `election_timeout_min_ms`; 0 means half of it.
    pub read_lease_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 0,
            data_dir: PathBuf::from("./vexil-data"),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            raft_listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            api_advertise: String::new(),
            raft_advertise: String::new(),
            admin_listen: None,
            log: "info,openraft=warn".into(),
            worker_threads: 0,
            cluster: ClusterConfig::default(),
            raft: RaftConfig::default(),
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        // openraft 0.9 lets a follower start an election only after the leader's lease
        // (`election_timeout_max_ms`) plus a random timeout, so a failover takes about
        // max + [min, max). 400-700 ms gives ~1.3 s, on a par with etcd's 1 s election timeout
        // (~1.4 s); 1000-2000 ms would take 3-4 s (measured; benches/README.md).
        RaftConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 700,
            rpc_timeout_ms: 1000,
            install_snapshot_timeout_ms: 10_000,
            snapshot_logs_since_last: 20_000,
            max_in_snapshot_log_to_keep: 1000,
            snapshot_chunk_bytes: 1024 * 1024,
            write_timeout_ms: 5000,
            read_lease_ms: 0,
        }
    }
}

/// Largest `worker_threads` accepted: more than any machine this runs on has cores.
const WORKER_THREADS_MAX: usize = 1024;

/// Command-line flags. Each has a `VEXIL_*` environment variable; both override the file.
#[derive(Debug, Parser, Default)]
#[command(name = "vexil", version, about = "A replicated, consensus-backed feature-flag store node")]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "VEXIL_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "VEXIL_NODE_ID")]
    pub node_id: Option<u64>,
    #[arg(long, env = "VEXIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "VEXIL_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    #[arg(long, env = "VEXIL_RAFT_LISTEN")]
    pub raft_listen: Option<SocketAddr>,
    #[arg(long, env = "VEXIL_API_ADVERTISE")]
    pub api_advertise: Option<String>,
    #[arg(long, env = "VEXIL_RAFT_ADVERTISE")]
    pub raft_advertise: Option<String>,
    #[arg(long, env = "VEXIL_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    #[arg(long, env = "VEXIL_LOG")]
    pub log: Option<String>,
    #[arg(long, env = "VEXIL_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    #[arg(long, env = "VEXIL_CLUSTER_BOOTSTRAP")]
    pub cluster_bootstrap: Option<bool>,
    /// Comma-separated `id=api_addr/raft_addr` entries.
    #[arg(long, env = "VEXIL_CLUSTER_INITIAL_MEMBERS", value_delimiter = ',')]
    pub cluster_initial_members: Option<Vec<String>>,
    #[arg(long, env = "VEXIL_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    #[arg(long, env = "VEXIL_RAFT_HEARTBEAT_INTERVAL_MS")]
    pub raft_heartbeat_interval_ms: Option<u64>,
    #[arg(long, env = "VEXIL_RAFT_ELECTION_TIMEOUT_MIN_MS")]
    pub raft_election_timeout_min_ms: Option<u64>,
    #[arg(long, env = "VEXIL_RAFT_ELECTION_TIMEOUT_MAX_MS")]
    pub raft_election_timeout_max_ms: Option<u64>,
    #[arg(long, env = "VEXIL_RAFT_RPC_TIMEOUT_MS")]
    pub raft_rpc_timeout_ms: Option<u64>,
    #[arg(long, env = "VEXIL_RAFT_INSTALL_SNAPSHOT_TIMEOUT_MS")]
    pub raft_install_snapshot_timeout_ms: Option<u64>,
    #[arg(long, env = "VEXIL_RAFT_SNAPSHOT_LOGS_SINCE_LAST")]
    pub raft_snapshot_logs_since_last: Option<u64>,
    #[arg(long, env = "VEXIL_RAFT_MAX_IN_SNAPSHOT_LOG_TO_KEEP")]
    pub raft_max_in_snapshot_log_to_keep: Option<u64>,
    #[arg(long, env = "VEXIL_RAFT_SNAPSHOT_CHUNK_BYTES")]
    pub raft_snapshot_chunk_bytes: Option<u64>,
    #[arg(long, env = "VEXIL_RAFT_WRITE_TIMEOUT_MS")]
    pub raft_write_timeout_ms: Option<u64>,
    #[arg(long, env = "VEXIL_RAFT_READ_LEASE_MS")]
    pub raft_read_lease_ms: Option<u64>,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), problem: problem.into() }
}

impl Config {
    /// The async runtime `worker_threads` asks for, with I/O and timers enabled.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.worker_threads {
            1 => tokio::runtime::Builder::new_current_thread(),
            n => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                if n > 1 {
                    b.worker_threads(n);
                }
                b
            }
        };
        builder.enable_all().build()
    }

    /// Builds the configuration from the file named by `args.config` (if any), then `args`.
    pub fn load(args: &Args) -> Result<Config, ConfigError> {
        let mut cfg = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        cfg.overlay(args);
        cfg.finish()?;
        Ok(cfg)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            // toml names the offending key in its message; keep it and say which file.
            bad("config", format!("{}: {}", path.display(), e.to_string().trim()))
        })
    }

    fn overlay(&mut self, a: &Args) {
        macro_rules! set {
            ($field:expr, $arg:expr) => {
                if let Some(v) = &$arg {
                    $field = v.clone();
                }
            };
        }
        set!(self.node_id, a.node_id);
        set!(self.data_dir, a.data_dir);
        set!(self.api_listen, a.api_listen);
        set!(self.raft_listen, a.raft_listen);
        set!(self.api_advertise, a.api_advertise);
        set!(self.raft_advertise, a.raft_advertise);
        set!(self.log, a.log);
        set!(self.worker_threads, a.worker_threads);
        if a.admin_listen.is_some() {
            self.admin_listen = a.admin_listen;
        }
        set!(self.cluster.bootstrap, a.cluster_bootstrap);
        set!(self.cluster.initial_members, a.cluster_initial_members);
        set!(self.cluster.secret, a.cluster_secret);
        set!(self.raft.heartbeat_interval_ms, a.raft_heartbeat_interval_ms);
        set!(self.raft.election_timeout_min_ms, a.raft_election_timeout_min_ms);
        set!(self.raft.election_timeout_max_ms, a.raft_election_timeout_max_ms);
        set!(self.raft.rpc_timeout_ms, a.raft_rpc_timeout_ms);
        set!(self.raft.install_snapshot_timeout_ms, a.raft_install_snapshot_timeout_ms);
        set!(self.raft.snapshot_logs_since_last, a.raft_snapshot_logs_since_last);
        set!(self.raft.max_in_snapshot_log_to_keep, a.raft_max_in_snapshot_log_to_keep);
        set!(self.raft.snapshot_chunk_bytes, a.raft_snapshot_chunk_bytes);
        set!(self.raft.write_timeout_ms, a.raft_write_timeout_ms);
        set!(self.raft.read_lease_ms, a.raft_read_lease_ms);
    }

    /// Fills derived values and checks every rule.
    fn finish(&mut self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            let host = hostname();
            self.node_id = node_id_from_hostname(&host).ok_or_else(|| {
                bad(
                    "node_id",
                    format!(
                        "is not set, and hostname {host:?} has no trailing ordinal (like vexil-0) to derive it from"
                    ),
                )
            })?;
        }
        if self.api_advertise.is_empty() {
            self.api_advertise = self.api_listen.to_string();
        }
        if self.raft_advertise.is_empty() {
            self.raft_advertise = self.raft_listen.to_string();
        }
        if self.api_listen == self.raft_listen {
            return Err(bad("raft_listen", "must differ from api_listen"));
        }
        if self.worker_threads > WORKER_THREADS_MAX {
            return Err(bad("worker_threads", format!("is {}; at most {WORKER_THREADS_MAX}", self.worker_threads)));
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 {
            return Err(bad("raft.heartbeat_interval_ms", "must be positive"));
        }
        if r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return Err(bad(
                "raft.election_timeout_min_ms",
                format!("must be greater than raft.heartbeat_interval_ms ({})", r.heartbeat_interval_ms),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(bad(
                "raft.election_timeout_max_ms",
                format!("must be greater than raft.election_timeout_min_ms ({})", r.election_timeout_min_ms),
            ));
        }
        if r.rpc_timeout_ms == 0 || r.install_snapshot_timeout_ms == 0 || r.write_timeout_ms == 0 {
            return Err(bad("raft.*_timeout_ms", "timeouts must be positive"));
        }
        if r.read_lease_ms == 0 {
            self.raft.read_lease_ms = r.election_timeout_min_ms / 2;
        }
        let r = &self.raft;
        if r.read_lease_ms == 0 || r.read_lease_ms >= r.election_timeout_min_ms {
            return Err(bad(
                "raft.read_lease_ms",
                format!(
                    "must be positive and below raft.election_timeout_min_ms ({}): a lease bounds read staleness and must expire before a new leader can be elected",
                    r.election_timeout_min_ms
                ),
            ));
        }
        if let Some(admin) = self.admin_listen
            && (admin == self.api_listen || admin == self.raft_listen)
        {
            return Err(bad("admin_listen", "must differ from api_listen and raft_listen"));
        }
        if r.snapshot_chunk_bytes < 4096 || r.snapshot_chunk_bytes > 64 * 1024 * 1024 {
            return Err(bad("raft.snapshot_chunk_bytes", "must be between 4096 and 67108864"));
        }
        if r.snapshot_logs_since_last == 0 {
            return Err(bad("raft.snapshot_logs_since_last", "must be positive"));
        }
        let members = self.initial_members()?;
        if self.cluster.bootstrap {
            if members.is_empty() {
                return Err(bad(
                    "cluster.initial_members",
                    "must list the initial voters when cluster.bootstrap is true",
                ));
            }
            if !members.iter().any(|(id, _)| *id == self.node_id) {
                return Err(bad(
                    "cluster.initial_members",
                    format!("does not include this node (node_id {})", self.node_id),
                ));
            }
        }
        Ok(())
    }

    /// The parsed `cluster.initial_members`.
    pub fn initial_members(&self) -> Result<Vec<(u64, NodeInfo)>, ConfigError> {
        let key = "cluster.initial_members";
        let mut out: Vec<(u64, NodeInfo)> = Vec::new();
        for m in &self.cluster.initial_members {
            let (id, addrs) =
                m.split_once('=').ok_or_else(|| bad(key, format!("{m:?} is not id=api_addr/raft_addr")))?;
            let id: u64 =
                id.trim().parse().map_err(|_| bad(key, format!("{m:?}: node id must be a positive integer")))?;
            let (api, raft) =
                addrs.split_once('/').ok_or_else(|| bad(key, format!("{m:?} is not id=api_addr/raft_addr")))?;
            if id == 0 || api.is_empty() || raft.is_empty() {
                return Err(bad(key, format!("{m:?}: id must be positive and both addresses present")));
            }
            if out.iter().any(|(other, _)| *other == id) {
                return Err(bad(key, format!("node id {id} is listed twice")));
            }
            out.push((id, NodeInfo { api_addr: api.trim().into(), raft_addr: raft.trim().into() }));
        }
        Ok(out)
    }

    /// How this node describes itself in the membership.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo { api_addr: self.api_advertise.clone(), raft_addr: self.raft_advertise.clone() }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_default()
}

/// `vexil-0` → 1, `vexil-2` → 3: StatefulSet ordinals start at 0, node ids at 1.
pub fn node_id_from_hostname(host: &str) -> Option<u64> {
    let (_, ordinal) = host.rsplit_once('-')?;
    ordinal.parse::<u64>().ok().map(|n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("vexil").chain(list.iter().copied())).expect("args parse")
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vexil.toml");
        std::fs::write(&path, "node_id = 2\n[raft]\nheartbeat_interval_ms = 50\n").expect("write");
        let cfg =
            Config::load(&args(&["--config", path.to_str().expect("utf-8"), "--raft-heartbeat-interval-ms", "60"]))
                .expect("load");
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.raft.heartbeat_interval_ms, 60);
        assert_eq!(cfg.raft.election_timeout_min_ms, 400);
        assert_eq!(cfg.api_advertise, "127.0.0.1:7001");
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vexil.toml");
        std::fs::write(&path, "node_id = 1\n[raft]\nheartbeat_intervl_ms = 50\n").expect("write");
        let err = Config::load(&args(&["--config", path.to_str().expect("utf-8")])).expect_err("typo");
        assert!(err.to_string().contains("heartbeat_intervl_ms"), "{err}");

        let err =
            Config::load(&args(&["--node-id", "1", "--raft-election-timeout-min-ms", "50"])).expect_err("too small");
        assert!(err.to_string().contains("raft.election_timeout_min_ms"), "{err}");

        let err = Config::load(&args(&[
            "--node-id",
            "1",
            "--cluster-bootstrap",
            "true",
            "--cluster-initial-members",
            "2=a:1/a:2",
        ]))
        .expect_err("self missing");
        assert!(err.to_string().contains("cluster.initial_members"), "{err}");

        let err =
            Config::load(&args(&["--node-id", "1", "--cluster-initial-members", "1=a:1"])).expect_err("bad member");
        assert!(err.to_string().contains("id=api_addr/raft_addr"), "{err}");
    }

    #[test]
    fn worker_threads_choose_the_runtime() {
        let load = |n: &str| Config::load(&args(&["--node-id", "1", "--worker-threads", n]));
        let one = load("1").expect("valid").runtime().expect("a runtime");
        assert_eq!(one.handle().runtime_flavor(), tokio::runtime::RuntimeFlavor::CurrentThread);
        let three = load("3").expect("valid").runtime().expect("a runtime");
        assert_eq!(three.handle().runtime_flavor(), tokio::runtime::RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
        let default = Config::load(&args(&["--node-id", "1"])).expect("valid").runtime().expect("a runtime");
        assert_eq!(default.handle().runtime_flavor(), tokio::runtime::RuntimeFlavor::MultiThread);
        let err = load("5000").expect_err("too many");
        assert!(err.to_string().contains("`worker_threads`") && err.to_string().contains("1024"), "{err}");
    }

    #[test]
    fn the_read_lease_must_stay_below_the_election_timeout() {
        let err = Config::load(&args(&["--node-id", "1", "--raft-read-lease-ms", "1000"])).expect_err("lease too long");
        assert!(err.to_string().contains("raft.read_lease_ms"), "{err}");
        let cfg = Config::load(&args(&["--node-id", "1", "--raft-election-timeout-min-ms", "300"])).expect("derived");
        assert_eq!(cfg.raft.read_lease_ms, 150, "an unset lease is half the minimum election timeout");
    }

    #[test]
    fn the_example_configuration_in_deploy_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/vexil.toml");
        let cfg = Config::load(&args(&["--config", path])).expect("deploy/vexil.toml loads");
        assert_eq!(cfg.node_id, 1);
        assert_eq!(cfg.initial_members().expect("members").len(), 3);
        assert!(cfg.raft.read_lease_ms < cfg.raft.election_timeout_min_ms);
    }

    #[test]
    fn hostname_ordinals_become_node_ids() {
        assert_eq!(node_id_from_hostname("vexil-0"), Some(1));
        assert_eq!(node_id_from_hostname("flags-vexil-12"), Some(13));
        assert_eq!(node_id_from_hostname("vexil"), None);
    }
}
