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

pub mod audit_verify;
pub mod backend;
pub mod cluster;
pub mod etcd;
pub mod etcd_proto;
pub mod limits;
pub mod memory;
pub mod report;
pub mod scenario;
pub mod vexil;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

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
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    pub system: System,
    /// The server binary (`target/release/vexil` or `etcd`).
    #[arg(long)]
    pub bin: PathBuf,
    /// Where the members keep their data (default: a new directory under the system's temp
    /// dir, removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
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
    /// Also write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
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

async fn run_system(args: &RunArgs) -> anyhow::Result<Vec<Row>> {
    let work = WorkDir::new(args.work_dir.as_deref(), args.system.name())?;
    let spec = ClusterSpec {
        system: args.system,
        bin: args.bin.clone(),
        nodes: args.nodes,
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_timeout_min_ms,
        election_max_ms: args.election_timeout_max_ms,
        read_lease_ms: args.read_lease_ms,
    };
    let settings = Settings {
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        clients: args.clients.clone(),
        scenarios: args.scenarios.clone(),
        failover_repeats: args.failover_repeats,
    };
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    eprintln!("{}: starting {} members under {}", args.system.name(), args.nodes, work.path.display());
    let cluster = Cluster::start(spec, &work.path)?;
    let rows = match args.system {
        System::Vexil => Bench::<vexil::Vexil>::open(cluster).await?.run(&settings).await?,
        System::Etcd => Bench::<etcd::Etcd>::open(cluster).await?.run(&settings).await?,
    };
    Ok(rows)
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
