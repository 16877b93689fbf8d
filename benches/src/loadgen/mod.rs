//! The cluster load generator (`loadgen` binary): the same scenarios against a three-node Vexil
//! cluster and a three-node etcd cluster, each started here on loopback, with latency
//! histograms, a Markdown table and JSON for the comparison script (`benches/compare-etcd.sh`).
//!
//! - [`backend`]: the one trait both systems implement; [`vexil`] and [`etcd`] implement it.
//! - [`cluster`]: the Vexil and etcd clusters (their processes are `vexil-testkit`'s).
//! - [`scenario`]: writes, reads per level on leader and follower, watch propagation, failover.
//! - [`memory`]: resident size and restart time of a node holding many flags and audit entries.
//! - [`audit_verify`]: `vexilctl audit verify` over a long audit log, several builds side by side.
//! - [`report`]: rows, tables and the Vexil/etcd comparison.
//! - [`security`]: the secure mode (TLS with client certificates, tokens) of both systems.

pub mod audit_verify;
pub mod backend;
pub mod cluster;
pub mod etcd;
pub mod etcd_proto;
pub mod limits;
pub mod memory;
pub mod report;
pub mod scenario;
pub mod security;
pub mod vexil;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use self::cluster::{Cluster, ClusterSpec, System};
use self::report::Row;
use self::scenario::{Bench, Scenario, Settings};

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Vexil and etcd side by side: throughput, latency, watch, failover")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Start a three-node cluster of one system on loopback and run the scenarios against it.
    Run(RunArgs),
    /// Print the comparison table of a Vexil run and an etcd run (their `--json` files).
    Compare {
        #[arg(long)]
        vexil: PathBuf,
        #[arg(long)]
        etcd: PathBuf,
    },
    /// Fill one Vexil node with flags and audit entries; report its memory and restart time.
    Memory(MemoryArgs),
    /// Time `vexilctl audit verify` over a long audit log, for several builds side by side.
    AuditVerify(AuditVerifyArgs),
    /// Start a cluster as `run` does (a leader agreed, etcd's auth enabled in secure mode, the
    /// keys seeded), write the environment that points a client tool at it to `--env-file`,
    /// and keep it running until SIGTERM or SIGINT: etcd's `ETCDCTL_ENDPOINTS`,
    /// `ETCDCTL_CACERT`, `ETCDCTL_CERT`, `ETCDCTL_KEY`, `ETCDCTL_USER` (for `etcdctl`), Vexil's
    /// `VEXIL_ENDPOINTS`, `VEXIL_CACERT`, `VEXIL_CERT`, `VEXIL_KEY`, `VEXIL_TOKEN` (for
    /// `vexilctl`). For measuring a cluster with the system's own client.
    Hold(HoldArgs),
}

/// Which cluster to start, and how.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[arg(long, value_enum)]
    pub system: System,
    /// The server binary (`target/release/vexil` or `etcd`).
    #[arg(long)]
    pub bin: PathBuf,
    /// Where the members keep their data (default: a new directory under the system's temp
    /// dir, removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Cluster members (3 for every comparison; 1 isolates a node's own write path).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// etcd's `--election-timeout` (it randomises in [t, 2t)); Vexil's minimum.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout_min_ms: u64,
    /// Vexil's maximum election timeout.
    #[arg(long, default_value_t = 2000)]
    pub election_timeout_max_ms: u64,
    /// Vexil's read lease.
    #[arg(long, default_value_t = 500)]
    pub read_lease_ms: u64,
    /// TLS on every port with client certificates required (clients and peers), and a token
    /// on every call: Vexil's admin token, etcd's `bench` user with auth enabled.
    #[arg(long)]
    pub secure: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Measured seconds per scenario run.
    #[arg(long, default_value_t = 6.0)]
    pub duration: f64,
    /// Unmeasured seconds before each run.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Concurrent clients, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "write,read,watch,failover")]
    pub scenarios: Vec<Scenario>,
    #[arg(long, default_value_t = 3)]
    pub failover_repeats: usize,
    /// Also write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where to write the client environment (`NAME='value'` lines, for `set -a; . FILE`),
    /// once the cluster is ready. It holds the token or password: readable by its owner only.
    #[arg(long)]
    pub env_file: PathBuf,
}

/// Where a one-node cluster lives and how much it is filled with (`memory`, `audit-verify`).
#[derive(Debug, Args)]
pub struct FillArgs {
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 100_000)]
    pub flags: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub audit_entries: usize,
}

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// The `vexil` binary.
    #[arg(long)]
    pub bin: PathBuf,
    #[command(flatten)]
    pub fill: FillArgs,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// One build: `NAME=VEXIL,VEXILCTL` (its `vexil` and `vexilctl` binaries); repeat it. Ratios
    /// are to the first.
    #[arg(long = "side", required = true)]
    pub sides: Vec<audit_verify::Side>,
    #[command(flatten)]
    pub fill: FillArgs,
    /// `audit verify` runs per build (the builds alternate, the order flipping every round).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A work directory; removed on drop when this process created it.
struct WorkDir {
    path: PathBuf,
    owned: bool,
}

impl WorkDir {
    fn new(given: Option<&Path>, what: &str) -> anyhow::Result<WorkDir> {
        let (path, owned) = match given {
            Some(p) => (p.join(what), false),
            None => (std::env::temp_dir().join(format!("vexil-loadgen-{}-{what}", std::process::id())), true),
        };
        anyhow::ensure!(!path.exists(), "{} already exists; give an empty --work-dir", path.display());
        std::fs::create_dir_all(&path)?;
        Ok(WorkDir { path, owned })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Starts the cluster `args` describe under `work`.
fn start_cluster(args: &ClusterArgs, work: &WorkDir) -> anyhow::Result<Cluster> {
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    let spec = ClusterSpec {
        system: args.system,
        bin: args.bin.clone(),
        nodes: args.nodes,
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_timeout_min_ms,
        election_max_ms: args.election_timeout_max_ms,
        read_lease_ms: args.read_lease_ms,
        secure: args.secure,
    };
    let mode = if args.secure { "TLS with client certificates, tokens" } else { "plaintext, no tokens" };
    eprintln!("{}: starting {} members ({mode}) under {}", args.system.name(), args.nodes, work.path.display());
    Cluster::start(spec, &work.path)
}

async fn run_system(args: &RunArgs) -> anyhow::Result<Vec<Row>> {
    let work = WorkDir::new(args.cluster.work_dir.as_deref(), args.cluster.system.name())?;
    let settings = Settings {
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        clients: args.clients.clone(),
        scenarios: args.scenarios.clone(),
        failover_repeats: args.failover_repeats,
    };
    let cluster = start_cluster(&args.cluster, &work)?;
    let rows = match args.cluster.system {
        System::Vexil => Bench::<vexil::Vexil>::open(cluster).await?.run(&settings).await?,
        System::Etcd => Bench::<etcd::Etcd>::open(cluster).await?.run(&settings).await?,
    };
    Ok(rows)
}

/// The environment that points `etcdctl` or `vexilctl` at `cluster`.
fn client_env(system: System, cluster: &Cluster) -> Vec<(&'static str, String)> {
    let endpoints: Vec<String> = (0..cluster.len()).map(|i| cluster.endpoint(i)).collect();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    match system {
        System::Etcd => {
            let mut env = vec![("ETCDCTL_API", "3".to_string()), ("ETCDCTL_ENDPOINTS", endpoints.join(","))];
            if let Some(s) = cluster.security() {
                env.push(("ETCDCTL_CACERT", path(&s.ca_file)));
                env.push(("ETCDCTL_CERT", path(&s.client.cert_file)));
                env.push(("ETCDCTL_KEY", path(&s.client.key_file)));
                if let security::Login::EtcdUser { name, password, .. } = &s.login {
                    env.push(("ETCDCTL_USER", format!("{name}:{password}")));
                }
            }
            env
        }
        System::Vexil => {
            // vexilctl takes host:port and picks the scheme from its TLS settings.
            let hosts: Vec<&str> =
                endpoints.iter().map(|e| e.split_once("://").map_or(e.as_str(), |(_, h)| h)).collect();
            let mut env = vec![("VEXIL_ENDPOINTS", hosts.join(","))];
            if let Some(s) = cluster.security() {
                env.push(("VEXIL_CACERT", path(&s.ca_file)));
                env.push(("VEXIL_CERT", path(&s.client.cert_file)));
                env.push(("VEXIL_KEY", path(&s.client.key_file)));
                if let security::Login::Bearer(token) = &s.login {
                    env.push(("VEXIL_TOKEN", token.clone()));
                }
            }
            env
        }
    }
}

async fn hold(args: &HoldArgs) -> anyhow::Result<()> {
    let work = WorkDir::new(args.cluster.work_dir.as_deref(), args.cluster.system.name())?;
    let cluster = start_cluster(&args.cluster, &work)?;
    match args.cluster.system {
        System::Vexil => hold_open::<vexil::Vexil>(System::Vexil, cluster, &args.env_file).await,
        System::Etcd => hold_open::<etcd::Etcd>(System::Etcd, cluster, &args.env_file).await,
    }
}

/// Readies `cluster` as for a benchmark run, writes its client environment to `env_file` and
/// waits for SIGTERM or SIGINT; the cluster stops when this returns.
async fn hold_open<B: backend::Backend>(system: System, cluster: Cluster, env_file: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let bench = Bench::<B>::open(cluster).await?;
    let env = client_env(system, bench.cluster());
    let mut text = String::new();
    for (name, value) in &env {
        anyhow::ensure!(!value.contains('\''), "{name} holds a quote: {value:?}");
        text.push_str(&format!("{name}='{value}'\n"));
    }
    // Written whole, then renamed: a reader never sees half of it.
    let partial = env_file.with_extension("partial");
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&partial, env_file).with_context(|| format!("writing {}", env_file.display()))?;
    let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
    eprintln!("{}: ready; {} in {}; stop with SIGTERM", system.name(), names.join(", "), env_file.display());
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    eprintln!("{}: stopping", system.name());
    Ok(())
}

/// Runs the parsed command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Run(args) => {
            let rows = run_system(&args).await?;
            print!("{}", report::table(&rows));
            if let Some(path) = &args.json {
                write_json(path, &rows)?;
            }
        }
        Cmd::Compare { vexil, etcd } => {
            let read =
                |p: &Path| -> anyhow::Result<Vec<Row>> { Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?) };
            print!("{}", report::comparison(&read(&vexil)?, &read(&etcd)?));
        }
        Cmd::Memory(args) => {
            let work = WorkDir::new(args.fill.work_dir.as_deref(), "memory")?;
            let settings = memory::MemorySettings {
                bin: args.bin.clone(),
                flags: args.fill.flags,
                audit_entries: args.fill.audit_entries,
            };
            let report = memory::run(&settings, &work.path).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Some(path) = &args.json {
                write_json(path, &report)?;
            }
        }
        Cmd::Hold(args) => hold(&args).await?,
        Cmd::AuditVerify(args) => {
            let work = WorkDir::new(args.fill.work_dir.as_deref(), "audit-verify")?;
            let settings = audit_verify::AuditVerifySettings {
                sides: args.sides.clone(),
                flags: args.fill.flags,
                audit_entries: args.fill.audit_entries,
                rounds: args.rounds,
            };
            let runs = audit_verify::run(&settings, &work.path).await?;
            print!("{}", audit_verify::table(&args.sides, &runs));
            if let Some(path) = &args.json {
                write_json(path, &runs)?;
            }
        }
    }
    Ok(())
}
