//! Node configuration: one TOML file, every key overridable by a `VEXIL_*` environment
//! variable and by a command-line flag (flag > environment > file > default).
//!
//! Each key is declared once, as a field of [`Config`] or of one of its groups (`cluster`,
//! `raft`): the field's doc comment is its `--help` text, and its `#[arg]` names the key (`id`,
//! which is also its path in the file: `raft.heartbeat_interval_ms`), its flag
//! (`--raft-heartbeat-interval-ms`), its variable (`VEXIL_RAFT_HEARTBEAT_INTERVAL_MS`) and its
//! default. clap reads flags, variables and defaults; [`Config::load`] then lets the file set
//! each key clap took from its default, and serde checks the file's types. Tests hold every
//! flag and variable name to its key, and every key to `vexil --help` and `deploy/vexil.toml`.
//!
//! To add a key: a field (doc comment, `#[arg]`), its rule in [`Config::finish`] if it needs
//! one, and an example line in `deploy/vexil.toml`.
//!
//! Invalid configuration fails at start with a message naming the key, e.g.
//! "config key `raft.election_timeout_min_ms`: must be greater than ...".

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};
use vexil_raft_store::NodeInfo;

/// The whole configuration of one node.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id, unique in the cluster and never reused.
    ///
    /// 0 derives it from the hostname's trailing ordinal (`vexil-2` → 3), for StatefulSets.
    #[arg(id = "node_id", long = "node-id")]
    #[arg(env = "VEXIL_NODE_ID", value_name = "ID", default_value_t = 0)]
    pub node_id: u64,
    /// Directory of this node's store (Raft log, snapshots, state).
    #[arg(id = "data_dir", long = "data-dir")]
    #[arg(env = "VEXIL_DATA_DIR", value_name = "DIR", default_value = "./vexil-data")]
    pub data_dir: PathBuf,
    /// Where the public gRPC API listens.
    #[arg(id = "api_listen", long = "api-listen")]
    #[arg(env = "VEXIL_API_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:7001")]
    pub api_listen: SocketAddr,
    /// Where the internal Raft transport listens.
    #[arg(id = "raft_listen", long = "raft-listen")]
    #[arg(env = "VEXIL_RAFT_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:7101")]
    pub raft_listen: SocketAddr,
    /// The API address other nodes and clients use to reach this node; empty means api_listen.
    #[arg(id = "api_advertise", long = "api-advertise")]
    #[arg(env = "VEXIL_API_ADVERTISE", value_name = "HOST:PORT", default_value = "")]
    #[arg(hide_default_value = true)]
    pub api_advertise: String,
    /// The Raft address other nodes use to reach this node; empty means raft_listen.
    #[arg(id = "raft_advertise", long = "raft-advertise")]
    #[arg(env = "VEXIL_RAFT_ADVERTISE", value_name = "HOST:PORT", default_value = "")]
    #[arg(hide_default_value = true)]
    pub raft_advertise: String,
    /// Where the admin HTTP port (`/metrics`, `/livez`, `/readyz`) listens; unset disables it.
    #[arg(id = "admin_listen", long = "admin-listen")]
    #[arg(env = "VEXIL_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Where OpenFeature providers connect, comma-separated; empty disables it. Each address
    /// serves every protocol (flagd evaluation v1/v2 over gRPC and Connect, flagd sync, OFREP:
    /// `openfeature/`), so listening on flagd's three ports (8013 evaluation, 8015 sync, 8016
    /// OFREP) lets providers keep their default ports.
    #[arg(id = "openfeature_listen", long = "openfeature-listen")]
    #[arg(env = "VEXIL_OPENFEATURE_LISTEN", value_name = "ADDRS", value_delimiter = ',')]
    #[serde(deserialize_with = "one_or_many")]
    pub openfeature_listen: Vec<SocketAddr>,
    /// Log filter, as in `RUST_LOG` (`info`, `vexil_server=debug,openraft=warn`).
    #[arg(id = "log", long = "log")]
    #[arg(env = "VEXIL_LOG", value_name = "FILTER", default_value = "info,openraft=warn")]
    pub log: String,
    /// Threads that run the node's async work (gRPC, Raft, apply): 0 is one per CPU.
    ///
    /// 0: one per CPU, with work stealing. 1: one thread and no hand-offs between threads,
    /// which costs less CPU per request and answers sooner on a small machine or one shared
    /// with other nodes, but uses at most one core for that work (WAL syncs and snapshots keep
    /// their own threads); measured in `benches/README.md`. N > 1: N threads.
    #[arg(id = "worker_threads", long = "worker-threads")]
    #[arg(env = "VEXIL_WORKER_THREADS", value_name = "N", default_value_t = 0)]
    pub worker_threads: usize,
    /// Run without TLS and tokens: every caller is the admin `anonymous`. Development only.
    ///
    /// Without it a node refuses to start unless tls.cert_file, tls.key_file and tls.ca_file
    /// are set; it then serves TLS on every port, requires a certificate of the cluster CA from
    /// its Raft peers, and a bearer token on every API call. With it, a warning is logged at
    /// every start (TLS is still served if configured, but tokens are not checked).
    #[arg(id = "insecure", long = "insecure")]
    #[arg(env = "VEXIL_INSECURE", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1)]
    #[arg(default_value_t = false, default_missing_value = "true")]
    pub insecure: bool,
    #[command(flatten)]
    pub cluster: ClusterConfig,
    #[command(flatten)]
    pub raft: RaftConfig,
    #[command(flatten)]
    pub tls: TlsConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub watch: WatchConfig,
    #[command(flatten)]
    pub storage: StorageConfig,
    #[command(flatten)]
    pub audit: AuditConfig,
    #[command(flatten)]
    pub openfeature: OpenFeatureConfig,
}

/// The `[openfeature]` keys: how flagd and OFREP requests map onto namespaces.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "OpenFeature providers ([openfeature] in the file)")]
#[serde(deny_unknown_fields)]
pub struct OpenFeatureConfig {
    /// The namespace a flagd or OFREP request without a selector evaluates (a selector
    /// `flagSetId=<namespace>` names another).
    #[arg(id = "openfeature.default_namespace", long = "openfeature-default-namespace")]
    #[arg(env = "VEXIL_OPENFEATURE_DEFAULT_NAMESPACE", value_name = "NAMESPACE", default_value = "default")]
    pub default_namespace: String,
    /// How current the answers on the OpenFeature port must be (flagd's protocols cannot ask):
    /// `lease` (confirmed through the read lease; the default), `linearizable` (a read-index
    /// round per request) or `stale` (whatever this node has applied; fastest, and what a
    /// learner far from the leader may prefer).
    #[arg(id = "openfeature.consistency", long = "openfeature-consistency", value_enum)]
    #[arg(env = "VEXIL_OPENFEATURE_CONSISTENCY", value_name = "LEVEL", default_value = "lease")]
    pub consistency: ReadLevel,
}

/// A list of addresses in a file, or one address (the form files used before it was a list).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "an address (\"host:port\") or a list of addresses")]
    enum OneOrMany {
        One(SocketAddr),
        Many(Vec<SocketAddr>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(addr) => vec![addr],
        OneOrMany::Many(addrs) => addrs,
    })
}

/// A read level a node applies where the request cannot name one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadLevel {
    Linearizable,
    Lease,
    Stale,
}

impl ReadLevel {
    pub fn consistency(self) -> vexil_proto::v1::Consistency {
        match self {
            ReadLevel::Linearizable => vexil_proto::v1::Consistency::Linearizable,
            ReadLevel::Lease => vexil_proto::v1::Consistency::Lease,
            ReadLevel::Stale => vexil_proto::v1::Consistency::Stale,
        }
    }
}

/// The `[audit]` keys: how much audit history the cluster keeps (`retention.rs`). Both limits
/// off keeps everything. The leader applies them; set them alike on every node, so a new leader
/// keeps the same policy.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Audit retention ([audit] in the file)")]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Keep about this many of the newest audit entries: once the log holds a tenth more, the
    /// oldest are removed behind a checkpoint. 0: no limit by count.
    #[arg(id = "audit.retain_entries", long = "audit-retain-entries")]
    #[arg(env = "VEXIL_AUDIT_RETAIN_ENTRIES", value_name = "N", default_value_t = 0)]
    pub retain_entries: u64,
    /// Remove audit entries older than this many days, behind a checkpoint. 0: no limit by age.
    #[arg(id = "audit.retain_days", long = "audit-retain-days")]
    #[arg(env = "VEXIL_AUDIT_RETAIN_DAYS", value_name = "DAYS", default_value_t = 0)]
    pub retain_days: u64,
    /// How often the leader checks the audit log against the limits.
    #[arg(id = "audit.retention_check_interval_ms", long = "audit-retention-check-interval-ms")]
    #[arg(env = "VEXIL_AUDIT_RETENTION_CHECK_INTERVAL_MS", value_name = "MS", default_value_t = 60_000)]
    pub retention_check_interval_ms: u64,
}

/// The `[storage]` keys: how much room the node may take, and when it raises the NOSPACE
/// alarm that turns the cluster read-only for writes that grow it (`space.rs`).
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Storage ([storage] in the file)")]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Most bytes the data directory may hold (log, state, snapshots); at or above it the node
    /// raises the NOSPACE alarm. 0: no quota (the free-space reserve still applies).
    #[arg(id = "storage.quota_bytes", long = "storage-quota-bytes")]
    #[arg(env = "VEXIL_STORAGE_QUOTA_BYTES", value_name = "BYTES", default_value_t = 8 * 1024 * 1024 * 1024)]
    pub quota_bytes: u64,
    /// Least free space the data directory's filesystem must keep; below it the node raises the
    /// NOSPACE alarm, so the disk never fills before the quota does (compactions, other
    /// files). 0: no reserve.
    #[arg(id = "storage.free_bytes_min", long = "storage-free-bytes-min")]
    #[arg(env = "VEXIL_STORAGE_FREE_BYTES_MIN", value_name = "BYTES", default_value_t = 256 * 1024 * 1024)]
    pub free_bytes_min: u64,
    /// How often the node measures its data directory and filesystem.
    #[arg(id = "storage.check_interval_ms", long = "storage-check-interval-ms")]
    #[arg(env = "VEXIL_STORAGE_CHECK_INTERVAL_MS", value_name = "MS", default_value_t = 1000)]
    pub check_interval_ms: u64,
}

/// The `[watch]` keys: how streams tell their clients they are current.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Streams ([watch] in the file)")]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// How often every stream gets a progress message: "current up to revision R", sent only
    /// when this node has just confirmed R through its read lease (so R holds every write the
    /// cluster acknowledged before one lease duration ago).
    #[arg(id = "watch.progress_interval_ms", long = "watch-progress-interval-ms")]
    #[arg(env = "VEXIL_WATCH_PROGRESS_INTERVAL_MS", value_name = "MS", default_value_t = 1000)]
    pub progress_interval_ms: u64,
    /// How long a node may go without confirming it is current (cut off from the leader)
    /// before it tells its streams (a `stale` message) and ends them UNAVAILABLE
    /// (LEASE_EXPIRED), so that their clients move to a node that is. At least twice
    /// watch.progress_interval_ms.
    #[arg(id = "watch.unconfirmed_max_ms", long = "watch-unconfirmed-max-ms")]
    #[arg(env = "VEXIL_WATCH_UNCONFIRMED_MAX_MS", value_name = "MS", default_value_t = 3000)]
    pub unconfirmed_max_ms: u64,
}

/// The `[tls]` keys: certificates for every port. PEM files; a node's certificate needs both
/// the serverAuth and clientAuth usages (it serves, and dials its peers), and a SAN for every
/// name clients and peers dial (`vexilctl tls issue` makes one).
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "TLS ([tls] in the file)")]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate (PEM, may include intermediates), for the API, admin and Raft ports.
    #[arg(id = "tls.cert_file", long = "tls-cert-file")]
    #[arg(env = "VEXIL_TLS_CERT_FILE", value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// The private key of tls.cert_file (PEM).
    #[arg(id = "tls.key_file", long = "tls-key-file")]
    #[arg(env = "VEXIL_TLS_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The cluster CA (PEM): Raft peers must present a certificate it signed (mutual TLS).
    #[arg(id = "tls.ca_file", long = "tls-ca-file")]
    #[arg(env = "VEXIL_TLS_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Also require API clients to present a certificate signed by tls.ca_file.
    ///
    /// Tokens still decide what a client may do; the certificate only decides who may connect.
    #[arg(id = "tls.client_cert_auth", long = "tls-client-cert-auth")]
    #[arg(env = "VEXIL_TLS_CLIENT_CERT_AUTH", value_name = "BOOL", action = ArgAction::Set, default_value_t = false)]
    pub client_cert_auth: bool,
    /// Names a Raft peer's certificate must hold (a DNS or IP SAN), comma-separated; empty
    /// accepts any certificate of the cluster CA.
    #[arg(id = "tls.peer_allowed_names", long = "tls-peer-allowed-names")]
    #[arg(env = "VEXIL_TLS_PEER_ALLOWED_NAMES", value_name = "NAMES", value_delimiter = ',')]
    pub peer_allowed_names: Vec<String>,
}

/// The `[auth]` keys: bearer tokens.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Tokens ([auth] in the file)")]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A file holding the first admin token's secret (`vexil_` and 64 hex digits).
    ///
    /// The first leader creates the token `admin` with it, once in the cluster's life. Without
    /// it, `vexilctl cluster init` creates the first admin token and prints its secret.
    #[arg(id = "auth.bootstrap_token_file", long = "auth-bootstrap-token-file")]
    #[arg(env = "VEXIL_AUTH_BOOTSTRAP_TOKEN_FILE", value_name = "FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Calls per second one principal (a token, or all callers without one) may make to this
    /// node, with bursts of as many; beyond it calls fail RESOURCE_EXHAUSTED (RATE_LIMITED)
    /// saying when to retry. 0 turns the limit off. Not applied on an --insecure node.
    #[arg(id = "auth.principal_requests_per_second", long = "auth-principal-requests-per-second")]
    #[arg(env = "VEXIL_AUTH_PRINCIPAL_REQUESTS_PER_SECOND", value_name = "N", default_value_t = 10_000)]
    pub principal_requests_per_second: u32,
}

/// The `[cluster]` keys: forming the cluster and authenticating its members.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Cluster ([cluster] in the file)")]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Initialise a new cluster from `initial_members` if this node has never been in one.
    ///
    /// Only the member with the lowest id initialises; the others wait to be contacted. A node
    /// with existing state never re-initialises.
    #[arg(id = "cluster.bootstrap", long = "cluster-bootstrap")]
    #[arg(env = "VEXIL_CLUSTER_BOOTSTRAP", value_name = "BOOL", action = ArgAction::Set, default_value_t = false)]
    pub bootstrap: bool,
    /// `id=api_addr/raft_addr` for every initial voter, comma-separated on the command line,
    /// e.g. `1=10.0.0.1:7001/10.0.0.1:7101`.
    #[arg(id = "cluster.initial_members", long = "cluster-initial-members")]
    #[arg(env = "VEXIL_CLUSTER_INITIAL_MEMBERS", value_name = "MEMBERS", value_delimiter = ',')]
    pub initial_members: Vec<String>,
    /// The initial voters by host name pattern instead of a list, for StatefulSets: `{ordinal}`
    /// becomes 0 .. cluster.initial_voters - 1 (node id = ordinal + 1), each at this node's API
    /// and Raft listen ports, e.g. `vexil-{ordinal}.vexil.default.svc.cluster.local`.
    #[arg(id = "cluster.peer_pattern", long = "cluster-peer-pattern")]
    #[arg(env = "VEXIL_CLUSTER_PEER_PATTERN", value_name = "HOST_PATTERN", default_value = "")]
    pub peer_pattern: String,
    /// How many initial voters cluster.peer_pattern names.
    #[arg(id = "cluster.initial_voters", long = "cluster-initial-voters")]
    #[arg(env = "VEXIL_CLUSTER_INITIAL_VOTERS", value_name = "N", default_value_t = 0)]
    pub initial_voters: u64,
    /// Shared secret every Raft RPC must carry; empty disables the check.
    #[arg(id = "cluster.secret", long = "cluster-secret")]
    #[arg(env = "VEXIL_CLUSTER_SECRET", value_name = "SECRET", default_value = "")]
    #[arg(hide_env_values = true, hide_default_value = true)]
    pub secret: String,
}

/// The `[raft]` keys: consensus timings, snapshots and the write and read bounds.
//
// The election defaults: openraft 0.9 lets a follower start an election only after the
// leader's lease (`election_timeout_max_ms`) plus a random timeout, so a failover takes about
// max + [min, max). 400-700 ms gives ~1.3 s, on a par with etcd's 1 s election timeout
// (~1.4 s); 1000-2000 ms would take 3-4 s (measured; benches/README.md).
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Raft ([raft] in the file)")]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    /// How often the leader sends heartbeats to followers.
    ///
    /// openraft also gives every AppendEntries this long to answer: keep it above the round
    /// trip to the farthest node, learners in other regions included.
    #[arg(id = "raft.heartbeat_interval_ms", long = "raft-heartbeat-interval-ms")]
    #[arg(env = "VEXIL_RAFT_HEARTBEAT_INTERVAL_MS", value_name = "MS", default_value_t = 100)]
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the random election timeout; above the heartbeat interval.
    #[arg(id = "raft.election_timeout_min_ms", long = "raft-election-timeout-min-ms")]
    #[arg(env = "VEXIL_RAFT_ELECTION_TIMEOUT_MIN_MS", value_name = "MS", default_value_t = 400)]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the random election timeout, and the leader's lease.
    ///
    /// A follower runs for leader about election_timeout_max_ms plus a random timeout in
    /// [min, max) after it last heard from the leader: failover takes ~1.3 s with the defaults.
    #[arg(id = "raft.election_timeout_max_ms", long = "raft-election-timeout-max-ms")]
    #[arg(env = "VEXIL_RAFT_ELECTION_TIMEOUT_MAX_MS", value_name = "MS", default_value_t = 700)]
    pub election_timeout_max_ms: u64,
    /// Bound on one append or vote RPC.
    #[arg(id = "raft.rpc_timeout_ms", long = "raft-rpc-timeout-ms")]
    #[arg(env = "VEXIL_RAFT_RPC_TIMEOUT_MS", value_name = "MS", default_value_t = 1000)]
    pub rpc_timeout_ms: u64,
    /// Bound on one snapshot chunk RPC (raise for WAN learners).
    #[arg(id = "raft.install_snapshot_timeout_ms", long = "raft-install-snapshot-timeout-ms")]
    #[arg(env = "VEXIL_RAFT_INSTALL_SNAPSHOT_TIMEOUT_MS", value_name = "MS", default_value_t = 10_000)]
    pub install_snapshot_timeout_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    ///
    /// A snapshot copies the whole state, audit history included, so its cost grows with the
    /// history: too low, and a busy node spends a share of its CPU rewriting snapshots
    /// (measured: 10 % of a follower's samples at 5,000 while taking ~7,000 writes/s;
    /// `benches/README.md`).
    #[arg(id = "raft.snapshot_logs_since_last", long = "raft-snapshot-logs-since-last")]
    #[arg(env = "VEXIL_RAFT_SNAPSHOT_LOGS_SINCE_LAST", value_name = "ENTRIES", default_value_t = 20_000)]
    pub snapshot_logs_since_last: u64,
    /// Log entries kept after a snapshot, so slightly lagging followers need no snapshot.
    #[arg(id = "raft.max_in_snapshot_log_to_keep", long = "raft-max-in-snapshot-log-to-keep")]
    #[arg(env = "VEXIL_RAFT_MAX_IN_SNAPSHOT_LOG_TO_KEEP", value_name = "ENTRIES", default_value_t = 1000)]
    pub max_in_snapshot_log_to_keep: u64,
    /// Bytes per snapshot chunk on the wire (4096 to 67108864).
    #[arg(id = "raft.snapshot_chunk_bytes", long = "raft-snapshot-chunk-bytes")]
    #[arg(env = "VEXIL_RAFT_SNAPSHOT_CHUNK_BYTES", value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub snapshot_chunk_bytes: u64,
    /// How long a write may wait for commit before the client is told the outcome is unknown.
    #[arg(id = "raft.write_timeout_ms", long = "raft-write-timeout-ms")]
    #[arg(env = "VEXIL_RAFT_WRITE_TIMEOUT_MS", value_name = "MS", default_value_t = 5000)]
    pub write_timeout_ms: u64,
    /// How long a read index stays usable for `lease` reads: the bound on their staleness.
    ///
    /// Must be below election_timeout_min_ms; 0 means half of it.
    #[arg(id = "raft.read_lease_ms", long = "raft-read-lease-ms")]
    #[arg(env = "VEXIL_RAFT_READ_LEASE_MS", value_name = "MS", default_value_t = 0)]
    pub read_lease_ms: u64,
}

/// Largest `worker_threads` accepted: more than any machine this runs on has cores.
const WORKER_THREADS_MAX: usize = 1024;
/// Bounds of `storage.check_interval_ms`.
const STORAGE_CHECK_INTERVAL_MS_MIN: u64 = 10;
const STORAGE_CHECK_INTERVAL_MS_MAX: u64 = 60_000;
/// Bounds of `audit.retention_check_interval_ms`.
const AUDIT_CHECK_INTERVAL_MS_MIN: u64 = 10;
const AUDIT_CHECK_INTERVAL_MS_MAX: u64 = 86_400_000;
/// Most `audit.retain_days`: a century.
const AUDIT_RETAIN_DAYS_MAX: u64 = 36_500;
/// `cluster.initial_voters`: Raft groups beyond a handful of voters only slow writes down.
const INITIAL_VOTERS_MAX: u64 = 9;
/// Bounds of `watch.progress_interval_ms`.
const WATCH_PROGRESS_INTERVAL_MS_MIN: u64 = 10;
const WATCH_PROGRESS_INTERVAL_MS_MAX: u64 = 60_000;

/// The parsed command line: `-c/--config FILE` and every key as a flag (which also reads the
/// key's `VEXIL_*` variable). It keeps clap's matches, which say where each value came from.
#[derive(Debug, Clone)]
pub struct Args {
    matches: ArgMatches,
}

// What clap parses; `Args` holds its matches. (A `//` comment: clap would take a doc comment
// here, or on a flattened group, as the command's description; `about` and `long_about` set it.)
#[derive(Debug, Parser)]
#[command(
    name = "vexil",
    version,
    about = "A replicated, consensus-backed feature-flag store node",
    long_about = None,
    after_help = "Every option is also a key of the configuration file, e.g. --raft-heartbeat-interval-ms is \
                  heartbeat_interval_ms in its [raft] table. A flag wins over its variable, which wins over the \
                  file, which wins over the default."
)]
struct CommandLine {
    /// TOML configuration file (deploy/vexil.toml is an annotated example).
    #[arg(short = 'c', long = "config", env = "VEXIL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    keys: Config,
}

impl Args {
    /// The `vexil` command: what `--help` prints.
    pub fn command() -> Command {
        CommandLine::command()
    }

    /// Parses the process's arguments and environment; on `--help`, `--version` or a usage
    /// error, prints and exits as clap does.
    pub fn parse() -> Args {
        Args { matches: Self::command().get_matches() }
    }

    /// Parses `args` (the first is the program name) and the process's environment.
    pub fn try_parse_from<I, T>(args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Ok(Args { matches: Self::command().try_get_matches_from(args)? })
    }
}

/// The keys alone as a command (no `--config`, `--help`, `--version`); `with_env: false` drops
/// their variables.
fn keys_command(with_env: bool) -> Command {
    let keys = <Config as clap::Args>::augment_args(Command::new("vexil"));
    if with_env { keys } else { keys.mut_args(|arg| arg.env(None::<&str>)) }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

/// `value` of `key` within `min..=max`, else the error naming both.
fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(bad(key, format!("is {value}; it must be between {min} and {max}")))
    }
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), problem: problem.into() }
}

impl Default for Config {
    /// Every key's declared default, without reading the environment (the simulation builds
    /// its nodes' configuration from this).
    fn default() -> Self {
        let matches =
            keys_command(false).try_get_matches_from(["vexil"]).expect("the declared defaults parse (tested)");
        Config::from_arg_matches(&matches).expect("the declared defaults fit their fields (tested)")
    }
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

    /// Builds the configuration: flags and variables from `args`, then the file named by
    /// `--config` (if any) for every key they left at its default, then checks every rule.
    pub fn load(args: &Args) -> Result<Config, ConfigError> {
        let line = CommandLine::from_arg_matches(&args.matches).map_err(|e| bad("config", e.to_string()))?;
        let mut cfg = match &line.config {
            Some(path) => line.keys.under_file(path, &args.matches)?,
            None => line.keys,
        };
        cfg.finish()?;
        Ok(cfg)
    }

    /// `self` (parsed by clap) with the file's value for every key clap took from its default.
    fn under_file(self, path: &Path, matches: &ArgMatches) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
        // toml names the offending line in its message; keep it and say which file.
        let file: toml::Table = toml::from_str(&text)
            .map_err(|e| bad("config", format!("{}: {}", path.display(), e.to_string().trim())))?;
        // Fails only on a flag TOML cannot hold (an integer above i64::MAX, a non-UTF-8 path).
        let mut merged = toml::Table::try_from(&self)
            .map_err(|e| bad("config", format!("a flag or variable cannot be merged with {}: {e}", path.display())))?;
        let keys: Vec<String> = keys_command(false).get_arguments().map(|a| a.get_id().to_string()).collect();
        fill_from_file(&mut merged, file, "", &keys, matches)
            .map_err(|e| bad(&e.key, format!("{}: {}", path.display(), e.problem)))?;
        // Only the file's values can have the wrong type: clap parsed the rest.
        serde_path_to_error::deserialize(merged)
            .map_err(|e| bad(&e.path().to_string(), format!("{}: {}", path.display(), e.inner().message())))
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
        for (i, &of) in self.openfeature_listen.iter().enumerate() {
            if of == self.api_listen || of == self.raft_listen || Some(of) == self.admin_listen {
                return Err(bad(
                    "openfeature_listen",
                    format!("{of} must differ from api_listen, raft_listen and admin_listen"),
                ));
            }
            if self.openfeature_listen[..i].contains(&of) {
                return Err(bad("openfeature_listen", format!("{of} is listed twice")));
            }
        }
        vexil_model::flag::validate_namespace(&self.openfeature.default_namespace)
            .map_err(|p| bad("openfeature.default_namespace", p))?;
        if r.snapshot_chunk_bytes < 4096 || r.snapshot_chunk_bytes > 64 * 1024 * 1024 {
            return Err(bad("raft.snapshot_chunk_bytes", "must be between 4096 and 67108864"));
        }
        if r.snapshot_logs_since_last == 0 {
            return Err(bad("raft.snapshot_logs_since_last", "must be positive"));
        }
        let w = &self.watch;
        in_range(
            "watch.progress_interval_ms",
            w.progress_interval_ms,
            WATCH_PROGRESS_INTERVAL_MS_MIN,
            WATCH_PROGRESS_INTERVAL_MS_MAX,
        )?;
        if w.unconfirmed_max_ms < 2 * w.progress_interval_ms {
            return Err(bad(
                "watch.unconfirmed_max_ms",
                format!(
                    "is {}; it must be at least twice watch.progress_interval_ms ({})",
                    w.unconfirmed_max_ms, w.progress_interval_ms
                ),
            ));
        }
        in_range(
            "storage.check_interval_ms",
            self.storage.check_interval_ms,
            STORAGE_CHECK_INTERVAL_MS_MIN,
            STORAGE_CHECK_INTERVAL_MS_MAX,
        )?;
        let a = &self.audit;
        in_range(
            "audit.retention_check_interval_ms",
            a.retention_check_interval_ms,
            AUDIT_CHECK_INTERVAL_MS_MIN,
            AUDIT_CHECK_INTERVAL_MS_MAX,
        )?;
        in_range("audit.retain_days", a.retain_days, 0, AUDIT_RETAIN_DAYS_MAX)?;
        self.check_security()?;
        let members = self.initial_members()?;
        if self.cluster.bootstrap {
            if members.is_empty() {
                return Err(bad(
                    "cluster.initial_members",
                    "must list the initial voters (or cluster.peer_pattern name them) when cluster.bootstrap is true",
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

    /// Secure by default: TLS material on every node unless `insecure`; the files are read
    /// (and their contents checked) when the node starts, by `tls::Material::load`.
    fn check_security(&self) -> Result<(), ConfigError> {
        let t = &self.tls;
        match (&t.cert_file, &t.key_file) {
            (Some(_), None) => return Err(bad("tls.key_file", "must be set with tls.cert_file")),
            (None, Some(_)) => return Err(bad("tls.cert_file", "must be set with tls.key_file")),
            (Some(_), Some(_)) if t.ca_file.is_none() => {
                return Err(bad(
                    "tls.ca_file",
                    "must be set with tls.cert_file: Raft peers are authenticated by certificates of the cluster CA",
                ));
            }
            (None, None) if !self.insecure => {
                return Err(bad(
                    "tls.cert_file",
                    "is not set: a node serves TLS and checks tokens unless started with --insecure (for development \
                     only). Create a CA and node certificates with `vexilctl tls create-ca` and `vexilctl tls issue` \
                     (scripts/local-cluster.sh shows how)",
                ));
            }
            _ => {}
        }
        if t.cert_file.is_none() && (t.client_cert_auth || !t.peer_allowed_names.is_empty()) {
            let key = if t.client_cert_auth { "tls.client_cert_auth" } else { "tls.peer_allowed_names" };
            return Err(bad(key, "needs tls.cert_file, tls.key_file and tls.ca_file"));
        }
        if self.insecure && self.auth.bootstrap_token_file.is_some() {
            return Err(bad("auth.bootstrap_token_file", "has no use with --insecure, which checks no tokens"));
        }
        Ok(())
    }

    /// Whether API calls must carry a bearer token.
    pub fn tokens_enabled(&self) -> bool {
        !self.insecure
    }

    /// Whether the ports serve TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.cert_file.is_some()
    }

    /// The initial voters: `cluster.initial_members` parsed, or named by `cluster.peer_pattern`.
    pub fn initial_members(&self) -> Result<Vec<(u64, NodeInfo)>, ConfigError> {
        let key = "cluster.initial_members";
        let mut out: Vec<(u64, NodeInfo)> = Vec::new();
        let (pattern, voters) = (self.cluster.peer_pattern.trim(), self.cluster.initial_voters);
        if !pattern.is_empty() {
            if !self.cluster.initial_members.is_empty() {
                return Err(bad(
                    "cluster.peer_pattern",
                    "and cluster.initial_members both name the initial voters; keep one",
                ));
            }
            if !pattern.contains("{ordinal}") {
                return Err(bad(
                    "cluster.peer_pattern",
                    "must contain {ordinal}, e.g. vexil-{ordinal}.vexil.default.svc.cluster.local",
                ));
            }
            in_range("cluster.initial_voters", voters, 1, INITIAL_VOTERS_MAX)?;
            for ordinal in 0..voters {
                let host = pattern.replace("{ordinal}", &ordinal.to_string());
                let api_addr = format!("{host}:{}", self.api_listen.port());
                let raft_addr = format!("{host}:{}", self.raft_listen.port());
                out.push((ordinal + 1, NodeInfo::new(api_addr, raft_addr)));
            }
            return Ok(out);
        }
        if voters != 0 {
            return Err(bad("cluster.initial_voters", "has no use without cluster.peer_pattern"));
        }
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
            out.push((id, NodeInfo::new(api.trim(), raft.trim())));
        }
        Ok(out)
    }
}

/// Copies each value of `file` (the table at `prefix`) into `merged` unless the key's value
/// came from a flag or variable; refuses a key that is not one.
fn fill_from_file(
    merged: &mut toml::Table,
    file: toml::Table,
    prefix: &str,
    keys: &[String],
    matches: &ArgMatches,
) -> Result<(), ConfigError> {
    for (name, value) in file {
        let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        if let Some(toml::Value::Table(group)) = merged.get_mut(&name) {
            let toml::Value::Table(values) = value else {
                return Err(bad(&key, format!("must be a table ([{key}])")));
            };
            fill_from_file(group, values, &key, keys, matches)?;
        } else if !keys.contains(&key) {
            return Err(bad(&key, "unknown key (`vexil --help` lists every key)"));
        } else if matches!(matches.value_source(&key), None | Some(ValueSource::DefaultValue)) {
            merged.insert(name, value);
        }
    }
    Ok(())
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

    /// `list` as a command line of an `--insecure` node (the rules here are not about TLS).
    fn args(list: &[&str]) -> Args {
        secure_args(&[&["--insecure"], list].concat())
    }

    fn secure_args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("vexil").chain(list.iter().copied())).expect("args parse")
    }

    /// Loads `--config <file holding toml>` plus `flags`.
    fn load_file(toml: &str, flags: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vexil.toml");
        std::fs::write(&path, toml).expect("write");
        let mut list = vec!["--config", path.to_str().expect("utf-8")];
        list.extend_from_slice(flags);
        Config::load(&args(&list))
    }

    /// Every key's id, the path of its value in the file.
    fn keys() -> Vec<clap::Arg> {
        keys_command(true).get_arguments().cloned().collect()
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
    fn the_file_sets_every_kind_of_key_a_flag_leaves_alone() {
        let toml = "node_id = 3\nadmin_listen = \"127.0.0.1:9000\"\n\
                    [cluster]\nbootstrap = true\ninitial_members = [\"3=a:1/a:2\"]\nsecret = \"s\"\n\
                    [raft]\nread_lease_ms = 100\n";
        let cfg = load_file(toml, &["--cluster-secret", "flag"]).expect("load");
        assert_eq!(cfg.node_id, 3);
        assert_eq!(cfg.admin_listen, Some(SocketAddr::from(([127, 0, 0, 1], 9000))));
        assert!(cfg.cluster.bootstrap);
        assert_eq!(cfg.cluster.initial_members, ["3=a:1/a:2"]);
        assert_eq!(cfg.cluster.secret, "flag", "a flag wins over the file");
        assert_eq!(cfg.raft.read_lease_ms, 100);
        assert_eq!(cfg.raft.election_timeout_max_ms, 700, "a key in neither keeps its default");
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
    fn the_openfeature_port_takes_several_addresses_and_a_read_level() {
        let toml = "node_id = 1\nopenfeature_listen = [\"127.0.0.1:8013\", \"127.0.0.1:8015\"]\n\
                    [openfeature]\nconsistency = \"stale\"\n";
        let cfg = load_file(toml, &[]).expect("load");
        assert_eq!(cfg.openfeature_listen.len(), 2);
        assert_eq!(cfg.openfeature.consistency, ReadLevel::Stale);
        let one = load_file("node_id = 1\nopenfeature_listen = \"127.0.0.1:8013\"\n", &[]).expect("one address");
        assert_eq!(one.openfeature_listen, [SocketAddr::from(([127, 0, 0, 1], 8013))]);
        let err = load_file("node_id = 1\nopenfeature_listen = 8013\n", &[]).expect_err("a number");
        assert!(err.to_string().contains("openfeature_listen"), "{err}");
        let cfg = load_file("node_id = 1\n", &["--openfeature-consistency", "linearizable"]).expect("flag");
        assert_eq!(cfg.openfeature.consistency, ReadLevel::Linearizable);
        assert_eq!(load_file("node_id = 1\n", &[]).expect("default").openfeature.consistency, ReadLevel::Lease);
        let err =
            load_file("node_id = 1\n[openfeature]\nconsistency = \"eventual\"\n", &[]).expect_err("no such level");
        assert!(err.to_string().contains("openfeature.consistency"), "{err}");
        let twice = "node_id = 1\nopenfeature_listen = [\"127.0.0.1:8013\", \"127.0.0.1:8013\"]\n";
        let err = load_file(twice, &[]).expect_err("the same address twice");
        assert!(err.to_string().contains("openfeature_listen") && err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn file_errors_name_the_key_and_the_file() {
        let err = load_file("node_id = 1\n[raft]\nheartbeat_interval_ms = \"fast\"\n", &[]).expect_err("a string");
        let text = err.to_string();
        assert!(text.starts_with("config key `raft.heartbeat_interval_ms`: "), "{text}");
        assert!(text.contains("vexil.toml: invalid type: string \"fast\", expected u64"), "{text}");

        let err = load_file("node_id = 1\napi_listen = \"nowhere\"\n", &[]).expect_err("not an address");
        assert!(err.to_string().starts_with("config key `api_listen`:"), "{err}");

        let err = load_file("node_id = 1\nconfig = \"other.toml\"\n", &[]).expect_err("not a key");
        assert!(
            err.to_string().starts_with("config key `config`: ") && err.to_string().contains("unknown key"),
            "{err}"
        );

        let err = load_file("node_id = 1\nraft = 5\n", &[]).expect_err("a group is a table");
        assert!(
            err.to_string().starts_with("config key `raft`: ") && err.to_string().contains("must be a table"),
            "{err}"
        );

        let err = load_file("node_id = 1\n[raft.extra]\nx = 1\n", &[]).expect_err("no nested group");
        assert!(
            err.to_string().starts_with("config key `raft.extra`: ") && err.to_string().contains("unknown key"),
            "{err}"
        );
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
    fn stream_freshness_settings_are_bounded() {
        let load = |extra: &[&str]| {
            let mut list = vec!["--node-id", "1"];
            list.extend_from_slice(extra);
            Config::load(&args(&list))
        };
        let cfg = load(&[]).expect("defaults");
        assert_eq!((cfg.watch.progress_interval_ms, cfg.watch.unconfirmed_max_ms), (1000, 3000));
        let err = load(&["--watch-progress-interval-ms", "5"]).expect_err("too often");
        assert!(err.to_string().starts_with("config key `watch.progress_interval_ms`: is 5;"), "{err}");
        let err = load(&["--watch-progress-interval-ms", "1000", "--watch-unconfirmed-max-ms", "1500"])
            .expect_err("below twice the interval");
        assert!(err.to_string().starts_with("config key `watch.unconfirmed_max_ms`: is 1500;"), "{err}");
        assert!(load(&["--watch-progress-interval-ms", "200", "--watch-unconfirmed-max-ms", "400"]).is_ok());
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
        let cfg = Config::load(&secure_args(&["--config", path])).expect("deploy/vexil.toml loads");
        assert_eq!(cfg.node_id, 1);
        assert!(cfg.tokens_enabled() && cfg.tls_enabled(), "the example is a secure node");
        assert_eq!(cfg.initial_members().expect("members").len(), 3);
        assert!(cfg.raft.read_lease_ms < cfg.raft.election_timeout_min_ms);
    }

    /// The Kubernetes manifest's embedded configuration loads too (as pod `vexil-1` would, with
    /// the advertised names its environment gives).
    #[test]
    fn the_kubernetes_configuration_is_valid() {
        let manifest = include_str!("../../../deploy/kubernetes/vexil.yaml");
        let start = manifest.find("vexil.toml: |\n").expect("the ConfigMap holds vexil.toml") + "vexil.toml: |\n".len();
        let end = start + manifest[start..].find("\n---").expect("the ConfigMap ends");
        let text: String =
            manifest[start..end].lines().map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l))).collect();
        let (dir, advertise) = (tempfile::tempdir().expect("tempdir"), "vexil-1.vexil.vexil.svc.cluster.local");
        let path = dir.path().join("vexil.toml");
        std::fs::write(&path, text).expect("write");
        let (api, raft) = (format!("{advertise}:7001"), format!("{advertise}:7101"));
        let cfg = Config::load(&secure_args(&[
            "--config",
            path.to_str().expect("utf-8"),
            "--node-id",
            &node_id_from_hostname("vexil-1").expect("an ordinal").to_string(),
            "--api-advertise",
            &api,
            "--raft-advertise",
            &raft,
        ]))
        .expect("the manifest's vexil.toml loads");
        assert_eq!(cfg.node_id, 2);
        assert!(cfg.tokens_enabled() && cfg.tls_enabled(), "the manifest runs secure");
        let members = cfg.initial_members().expect("members");
        assert_eq!(members.len(), 3);
        assert_eq!(cfg.openfeature_listen.len(), 3);
    }

    /// The flag and variable names are an interface (scripts, manifests, the test harness):
    /// each follows from the key, so none can drift by a typo.
    #[test]
    fn every_flag_and_variable_follows_from_its_key() {
        for arg in keys() {
            let key = arg.get_id().as_str();
            let long = key.replace(['.', '_'], "-");
            let env = format!("VEXIL_{}", key.replace('.', "_").to_uppercase());
            assert_eq!(arg.get_long(), Some(long.as_str()), "the flag of `{key}`");
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env.as_str()), "the variable of `{key}`");
        }
    }

    /// Each key's id is the path of its field in the file, so the file can set every key.
    #[test]
    fn every_key_is_a_field_and_every_field_a_key() {
        fn paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (name, value) in table {
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                match value {
                    toml::Value::Table(group) => paths(group, &path, out),
                    _ => out.push(path),
                }
            }
        }
        // Optional keys serialise only when set.
        let mut cfg = Config {
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7201))),
            openfeature_listen: vec![
                SocketAddr::from(([127, 0, 0, 1], 8013)),
                SocketAddr::from(([127, 0, 0, 1], 8015)),
            ],
            ..Config::default()
        };
        cfg.tls.cert_file = Some("node.pem".into());
        cfg.tls.key_file = Some("node-key.pem".into());
        cfg.tls.ca_file = Some("ca.pem".into());
        cfg.auth.bootstrap_token_file = Some("admin.token".into());
        let table = toml::Table::try_from(&cfg).expect("serialises");
        let mut fields = Vec::new();
        paths(&table, "", &mut fields);
        let mut ids: Vec<String> = keys().iter().map(|a| a.get_id().to_string()).collect();
        fields.sort();
        ids.sort();
        assert_eq!(fields, ids);
    }

    #[test]
    fn every_key_is_in_the_help_with_its_variable() {
        let help = Args::command().render_long_help().to_string();
        assert!(help.starts_with("A replicated, consensus-backed feature-flag store node\n"), "{help}");
        for arg in keys() {
            let long = format!("--{}", arg.get_long().expect("a flag"));
            let env = arg.get_env().and_then(|e| e.to_str()).expect("a variable");
            assert!(help.contains(&long), "`vexil --help` lacks {long}:\n{help}");
            assert!(help.contains(&format!("[env: {env}")), "`vexil --help` lacks {env}:\n{help}");
        }
        assert!(help.contains("--config") && help.contains("[env: VEXIL_CONFIG"), "{help}");
        assert!(help.contains("[env: VEXIL_CLUSTER_SECRET]"), "the secret's value stays hidden:\n{help}");
    }

    /// The example file sets every key (not merely mentions it in a comment): operators copy it,
    /// and the test above loads it, so every example value is also checked.
    #[test]
    fn every_key_is_set_in_the_example_configuration() {
        let text = include_str!("../../../deploy/vexil.toml");
        let file = toml::Value::Table(toml::from_str(text).expect("deploy/vexil.toml parses"));
        for arg in keys() {
            let key = arg.get_id().as_str();
            let node = key.split('.').try_fold(&file, |node, part| node.get(part));
            assert!(node.is_some(), "deploy/vexil.toml does not set `{key}`");
        }
    }

    #[test]
    fn defaults_are_declared_once_and_read_no_environment() {
        assert!(keys_command(false).get_arguments().all(|a| a.get_env().is_none()));
        let cfg = Config::default();
        assert_eq!(cfg.node_id, 0);
        assert_eq!(cfg.data_dir, PathBuf::from("./vexil-data"));
        assert_eq!(cfg.api_listen, SocketAddr::from(([127, 0, 0, 1], 7001)));
        assert_eq!(cfg.raft_listen, SocketAddr::from(([127, 0, 0, 1], 7101)));
        assert_eq!((cfg.api_advertise.as_str(), cfg.raft_advertise.as_str()), ("", ""));
        assert_eq!(cfg.admin_listen, None);
        assert_eq!(cfg.log, "info,openraft=warn");
        assert_eq!(cfg.worker_threads, 0);
        assert_eq!(
            cfg.cluster,
            ClusterConfig {
                bootstrap: false,
                initial_members: vec![],
                peer_pattern: String::new(),
                initial_voters: 0,
                secret: String::new()
            }
        );
        assert!(!cfg.insecure, "secure by default");
        assert_eq!(
            cfg.tls,
            TlsConfig {
                cert_file: None,
                key_file: None,
                ca_file: None,
                client_cert_auth: false,
                peer_allowed_names: vec![]
            }
        );
        assert_eq!(cfg.auth, AuthConfig { bootstrap_token_file: None, principal_requests_per_second: 10_000 });
        assert_eq!(
            cfg.raft,
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
        );
    }

    #[test]
    fn a_node_without_tls_material_refuses_to_start_unless_insecure() {
        let err = Config::load(&secure_args(&["--node-id", "1"])).expect_err("no TLS, not insecure");
        assert_eq!(err.key, "tls.cert_file");
        assert!(err.problem.contains("--insecure") && err.problem.contains("vexilctl tls"), "{err}");
        let cfg = Config::load(&secure_args(&["--node-id", "1", "--insecure"])).expect("insecure is allowed");
        assert!(!cfg.tokens_enabled() && !cfg.tls_enabled());

        let tls = ["--node-id", "1", "--tls-cert-file", "n.pem", "--tls-key-file", "k.pem"];
        let err = Config::load(&secure_args(&tls)).expect_err("no CA");
        assert_eq!(err.key, "tls.ca_file");
        let err = Config::load(&secure_args(&tls[..4])).expect_err("no key");
        assert_eq!(err.key, "tls.key_file");
        let cfg = Config::load(&secure_args(&[&tls[..], &["--tls-ca-file", "ca.pem"]].concat())).expect("secure");
        assert!(cfg.tokens_enabled() && cfg.tls_enabled());
        let err = Config::load(&secure_args(&["--node-id", "1", "--insecure", "--tls-client-cert-auth", "true"]))
            .expect_err("client certificates without TLS");
        assert_eq!(err.key, "tls.client_cert_auth");
    }

    #[test]
    fn a_peer_pattern_names_the_initial_voters_and_is_checked() {
        let load = |extra: &[&str]| {
            let mut a = vec!["--node-id", "2", "--api-listen", "0.0.0.0:7001", "--raft-listen", "0.0.0.0:7101"];
            a.extend_from_slice(extra);
            Config::load(&args(&a))
        };
        let pattern = ["--cluster-bootstrap", "true", "--cluster-peer-pattern", "vexil-{ordinal}.vexil.ns.svc"];
        let cfg = load(&[&pattern[..], &["--cluster-initial-voters", "3"]].concat()).expect("a pattern loads");
        let members = cfg.initial_members().expect("members");
        assert_eq!(members.len(), 3);
        assert_eq!(members[2].0, 3);
        assert_eq!(
            (members[2].1.api_addr.as_str(), members[2].1.raft_addr.as_str()),
            ("vexil-2.vexil.ns.svc:7001", "vexil-2.vexil.ns.svc:7101")
        );
        let err = |extra: &[&str]| load(extra).expect_err("refused").to_string();
        assert!(err(&pattern).contains("cluster.initial_voters"), "a pattern needs a count");
        let no_ordinal = ["--cluster-peer-pattern", "vexil.ns.svc", "--cluster-initial-voters", "3"];
        assert!(err(&no_ordinal).contains("must contain {ordinal}"));
        let both =
            [&pattern[..], &["--cluster-initial-voters", "3", "--cluster-initial-members", "1=a:1/a:2"]].concat();
        assert!(err(&both).contains("keep one"));
        assert!(err(&["--cluster-initial-voters", "3"]).contains("has no use without cluster.peer_pattern"));
    }

    #[test]
    fn hostname_ordinals_become_node_ids() {
        assert_eq!(node_id_from_hostname("vexil-0"), Some(1));
        assert_eq!(node_id_from_hostname("flags-vexil-12"), Some(13));
        assert_eq!(node_id_from_hostname("vexil"), None);
    }
}
