//! The audit paging benchmark: `vexilctl audit verify` over a long audit log, for several builds
//! side by side. Each build (its own `vexil` and `vexilctl`) gets a node of its own, filled the
//! same way as the memory measurement ([`memory::fill`]); then the builds' `audit verify` runs
//! alternate, round by round (the order flips every round), against their own nodes, which sit
//! idle in between.
//!
//! Per run: the wall time of the `vexilctl` process (start to exit, paging through the whole log
//! and recomputing every hash) and the CPU time the node spent serving it (user + system, from
//! `/proc/<pid>/stat`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cluster;
use super::limits::CLUSTER_READY_TIMEOUT;
use super::memory::{NODE, audit_seq, fill, one_node};
use super::scenario::process_cpu;

/// One build: `NAME=VEXIL,VEXILCTL`.
#[derive(Debug, Clone)]
pub struct Side {
    pub name: String,
    pub vexil: PathBuf,
    pub vexilctl: PathBuf,
}

impl FromStr for Side {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, bins) = s.split_once('=').ok_or("expected NAME=VEXIL,VEXILCTL")?;
        let (vexil, vexilctl) = bins.split_once(',').ok_or("expected NAME=VEXIL,VEXILCTL")?;
        Ok(Side { name: name.into(), vexil: vexil.into(), vexilctl: vexilctl.into() })
    }
}

#[derive(Debug, Clone)]
pub struct AuditVerifySettings {
    pub sides: Vec<Side>,
    pub flags: usize,
    pub audit_entries: usize,
    pub rounds: usize,
}

/// One `audit verify` run.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRun {
    pub side: String,
    pub round: usize,
    pub entries: u64,
    pub wall_seconds: f64,
    pub server_cpu_seconds: f64,
}

/// Runs `vexilctl audit verify` against `endpoint` and checks that it verified `entries` entries.
async fn verify_once(vexilctl: &Path, endpoint: &str, entries: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = tokio::process::Command::new(vexilctl)
        .args(["--endpoints", endpoint, "--output", "json", "audit", "verify"])
        .output()
        .await?;
    let wall = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "{} audit verify failed: {}{}",
        vexilctl.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(
        verdict["ok"] == true && verdict["entries"] == entries,
        "expected an intact chain of {entries} entries, got {verdict}"
    );
    Ok(wall)
}

pub async fn run(settings: &AuditVerifySettings, work_dir: &Path) -> anyhow::Result<Vec<VerifyRun>> {
    anyhow::ensure!(!settings.sides.is_empty(), "give at least one --side");
    let mut nodes = Vec::new();
    for side in &settings.sides {
        let cluster = cluster::vexil(&one_node(&side.vexil), &work_dir.join(&side.name)).spawn()?;
        cluster.try_wait_leader_among(&[NODE], CLUSTER_READY_TIMEOUT).await?;
        let endpoint = cluster.api_addr(NODE);
        eprintln!("{}: filling {}", side.name, endpoint);
        fill(&endpoint, settings.flags, settings.audit_entries, || Ok(String::new())).await?;
        let entries = audit_seq(&endpoint).await?;
        let pid = cluster.process(NODE).pid().ok_or_else(|| anyhow::anyhow!("the node is not running"))?;
        nodes.push((side, cluster, endpoint, pid, entries));
    }
    // Let background work (memtable flushes, compactions) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut runs = Vec::new();
    for round in 0..settings.rounds {
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (side, _, endpoint, pid, entries) = &nodes[i];
            let cpu_before = process_cpu(*pid).unwrap_or_default();
            let wall = verify_once(&side.vexilctl, endpoint, *entries).await?;
            let server_cpu = process_cpu(*pid).unwrap_or_default().saturating_sub(cpu_before);
            eprintln!(
                "  round {}: {} verified {entries} entries in {:.2} s (node CPU {:.2} s)",
                round + 1,
                side.name,
                wall.as_secs_f64(),
                server_cpu.as_secs_f64()
            );
            runs.push(VerifyRun {
                side: side.name.clone(),
                round: round + 1,
                entries: *entries,
                wall_seconds: wall.as_secs_f64(),
                server_cpu_seconds: server_cpu.as_secs_f64(),
            });
        }
    }
    Ok(runs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A Markdown table: one row per build, its runs and medians, and how many times faster than
/// the first build it is (the first build's median over this one's).
pub fn table(sides: &[Side], runs: &[VerifyRun]) -> String {
    let medians = |name: &str| {
        let of = |f: fn(&VerifyRun) -> f64| median(runs.iter().filter(|r| r.side == name).map(f).collect());
        (of(|r| r.wall_seconds), of(|r| r.server_cpu_seconds))
    };
    let (base_wall, base_cpu) = sides.first().map_or((f64::NAN, f64::NAN), |s| medians(&s.name));
    let mut out = String::from(
        "| build | entries | wall s, each run | wall s (median) | node CPU s (median) | first / this, wall | first / this, node CPU |\n\
         |---|---:|---|---:|---:|---:|---:|\n",
    );
    for side in sides {
        let mine: Vec<&VerifyRun> = runs.iter().filter(|r| r.side == side.name).collect();
        let each: Vec<String> = mine.iter().map(|r| format!("{:.2}", r.wall_seconds)).collect();
        let entries = mine.first().map_or(0, |r| r.entries);
        let (wall, cpu) = medians(&side.name);
        out.push_str(&format!(
            "| {} | {entries} | {} | {wall:.2} | {cpu:.2} | {:.1} | {:.1} |\n",
            side.name,
            each.join(", "),
            base_wall / wall,
            base_cpu / cpu
        ));
    }
    out
}
