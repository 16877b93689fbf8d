//! The memory and restart measurement: one Vexil node filled with many flags and a long audit
//! log, its resident size, and how long it takes to restart (SIGTERM, start again) and answer a
//! linearizable read.
//!
//! The fill uses namespace documents: one `ApplyNamespace` of 1,000 flags is one Raft entry that
//! creates (or updates) 1,000 flags and appends 1,000 audit entries, so 100 namespaces × 10
//! rounds give 100,000 flags and 1,000,000 audit entries in 1,000 writes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use super::cluster::{self, ClusterSpec, System};
use super::limits::{
    CLUSTER_READY_TIMEOUT, FILL_CONCURRENCY, FILL_FLAGS_PER_NAMESPACE, RESTART_WAIT_MAX, STOP_TIMEOUT,
};
use super::vexil::{apply_namespace, connect, document, get_linearizable, status};
use super::workload::flag_json;

#[derive(Debug, Clone)]
pub struct MemorySettings {
    pub bin: PathBuf,
    pub flags: usize,
    pub audit_entries: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub flags: usize,
    pub audit_entries: u64,
    pub fill_seconds: f64,
    pub rss_after_fill_mib: f64,
    pub peak_rss_during_fill_mib: f64,
    pub data_dir_mib: f64,
    pub stop_seconds: f64,
    /// From starting the process to its first answer (`Cluster.Status`): storage opened.
    pub restart_to_status_seconds: f64,
    pub restart_to_linearizable_read_seconds: f64,
    pub rss_after_restart_mib: f64,
}

/// The one node's id.
pub const NODE: u64 = 1;

/// One Vexil node that bootstraps a cluster of its own, with the comparison's Raft settings.
pub fn one_node(bin: &Path) -> ClusterSpec {
    ClusterSpec {
        system: System::Vexil,
        bin: bin.to_path_buf(),
        nodes: 1,
        heartbeat_ms: 100,
        election_min_ms: 1000,
        election_max_ms: 2000,
        read_lease_ms: 500,
        secure: false,
    }
}

fn namespace(i: usize) -> String {
    format!("fill-{i:03}")
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Waits until the node at `endpoint` answers a linearizable read of a filled flag; returns
/// when it first answered anything.
async fn wait_serving(endpoint: &str, within: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    let mut first_answer = None;
    loop {
        if first_answer.is_none()
            && let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), audit_seq(endpoint)).await
        {
            first_answer = Some(Instant::now());
        }
        let attempt = async {
            let conn = connect(endpoint, None).await?;
            get_linearizable(&conn, &namespace(0), "flag-0000").await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(())) => return Ok(first_answer.unwrap_or_else(Instant::now)),
            _ if Instant::now() > deadline => anyhow::bail!("{endpoint} did not serve within {within:?}"),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Fills the node at `endpoint` with `flags` flags (rounded up to whole namespace documents)
/// and about `audit_entries` audit entries: every flag is written once per round, until the
/// rounds have written `audit_entries`. After each round, prints its progress and what
/// `after_round` says. Returns the number of flags.
pub async fn fill(
    endpoint: &str,
    flags: usize,
    audit_entries: usize,
    mut after_round: impl FnMut() -> anyhow::Result<String>,
) -> anyhow::Result<usize> {
    let namespaces = flags.div_ceil(FILL_FLAGS_PER_NAMESPACE);
    let rounds = audit_entries.div_ceil(flags.max(1));
    let keys: Vec<String> = (0..FILL_FLAGS_PER_NAMESPACE).map(|i| format!("flag-{i:04}")).collect();
    let fill_start = Instant::now();
    for round in 0..rounds {
        let mut tasks = JoinSet::new();
        for ns in 0..namespaces {
            while tasks.len() >= FILL_CONCURRENCY {
                if let Some(r) = tasks.join_next().await {
                    r??;
                }
            }
            let keys = keys.clone();
            let endpoint = endpoint.to_string();
            tasks.spawn(async move {
                let doc = document(&keys, |i| flag_json((round * 1_000_000 + i) as u64));
                let conn = connect(&endpoint, None).await?;
                apply_namespace(&conn, &namespace(ns), doc, format!("fill-{round}-{ns}")).await.map(|_| ())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        eprintln!(
            "  round {}/{rounds}: {} flags written, {:.0} s, {}",
            round + 1,
            namespaces * FILL_FLAGS_PER_NAMESPACE,
            fill_start.elapsed().as_secs_f64(),
            after_round()?
        );
    }
    Ok(namespaces * FILL_FLAGS_PER_NAMESPACE)
}

/// The number of audit entries of the node at `endpoint` (its audit chain's last seq).
pub async fn audit_seq(endpoint: &str) -> anyhow::Result<u64> {
    let conn = connect(endpoint, None).await?;
    Ok(status(&conn).await?.audit_seq)
}

pub async fn run(settings: &MemorySettings, work_dir: &Path) -> anyhow::Result<MemoryReport> {
    let mut cluster = cluster::vexil(&one_node(&settings.bin), work_dir).spawn()?;
    let endpoint = cluster.api_addr(NODE);
    let pid = cluster.process(NODE).pid().ok_or_else(|| anyhow::anyhow!("the node is not running"))?;
    // The first "serving" probe fails with FLAG_NOT_FOUND, so wait for a leader instead.
    cluster.try_wait_leader_among(&[NODE], CLUSTER_READY_TIMEOUT).await?;

    let fill_start = Instant::now();
    let mut peak_mib: f64 = 0.0;
    let flags = fill(&endpoint, settings.flags, settings.audit_entries, || {
        let (rss, hwm) = rss_mib(pid)?;
        peak_mib = peak_mib.max(hwm);
        Ok(format!("RSS {rss:.0} MiB"))
    })
    .await?;
    let fill_seconds = fill_start.elapsed().as_secs_f64();
    let audit_entries = audit_seq(&endpoint).await?;
    // Let background work (memtable flushes, compactions) settle before reading the size.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_after_fill_mib, hwm) = rss_mib(pid)?;
    peak_mib = peak_mib.max(hwm);
    let data_dir_mib = dir_bytes(cluster.data_dir(NODE)) as f64 / (1024.0 * 1024.0);

    let stop_start = Instant::now();
    cluster.process_mut(NODE).stop(STOP_TIMEOUT)?;
    let stop_seconds = stop_start.elapsed().as_secs_f64();
    let restart_start = Instant::now();
    cluster.process_mut(NODE).start()?;
    let answered = wait_serving(&endpoint, RESTART_WAIT_MAX).await?;
    let restart_to_linearizable_read_seconds = restart_start.elapsed().as_secs_f64();
    let restart_to_status_seconds = answered.duration_since(restart_start).as_secs_f64();
    let pid = cluster.process(NODE).pid().ok_or_else(|| anyhow::anyhow!("the node is not running"))?;
    let (rss_after_restart_mib, _) = rss_mib(pid)?;
    cluster.process_mut(NODE).stop(STOP_TIMEOUT)?;

    Ok(MemoryReport {
        flags,
        audit_entries,
        fill_seconds,
        rss_after_fill_mib,
        peak_rss_during_fill_mib: peak_mib,
        data_dir_mib,
        stop_seconds,
        restart_to_status_seconds,
        restart_to_linearizable_read_seconds,
        rss_after_restart_mib,
    })
}
