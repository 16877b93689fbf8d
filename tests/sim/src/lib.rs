//! Deterministic simulation of a Vexil cluster: the real node (openraft, the state machine, the
//! Raft transport and the public gRPC handlers over tonic) inside turmoil hosts, with
//! in-memory storage that loses exactly what was not synced, faults injected from a seed, and
//! the recorded history checked against a model.
//!
//! - [`net`]: tonic over turmoil's simulated TCP.
//! - [`cluster`]: a node as a turmoil host; its configuration and simulated clock.
//! - [`workload`]: the clients (workload, operator, final reads) and what they record;
//!   [`watchers`]: clients following the change feed; [`changes`]: clients proposing and
//!   approving change requests under a namespace's policy.
//! - [`history`]: the recorded operations and their digest.
//! - [`nemesis`]: the fault schedule.
//! - [`scenario`]: one run, start to verdict; [`scenarios`]: the runs the test files make.
//! - [`check`], [`linearizability`]: the checkers.
//!
//! Determinism: turmoil's `rng_seed` drives its network and seeds each host's tokio scheduler
//! (the workspace builds with `--cfg tokio_unstable`), openraft's election timer draws from
//! [`vexil_raft_store::runtime::seed_thread_rng`], and every harness decision comes from a
//! `StdRng` seeded from the run's seed. Every host runs on the calling thread. The same seed
//! therefore prints the same `sim seed=<n> ops=<count> history=<digest>` line.
//!
//! `SIM_SEED=<n>` runs one seed; `SIM_SEEDS=<count>` runs seeds `1..=count`; `SIM_THREADS`
//! bounds how many seeds run at once (default: the machine's cores).

pub mod changes;
pub mod check;
pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod net;
pub mod scenario;
pub mod scenarios;
pub mod watchers;
pub mod workload;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub use scenario::{Bugs, Operator, Report, Scenario, run};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The seeds to run: `SIM_SEED`, else `1..=SIM_SEEDS`, else `1..=default_count`.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SIM_SEED") {
        return vec![seed];
    }
    (1..=env_u64("SIM_SEEDS").unwrap_or(default_count)).collect()
}

/// Runs every seed of [`seeds`] (spread over threads, each run on one), prints each run's seed
/// line, and returns the reports in seed order.
pub fn run_seeds(scenario: &Scenario, default_count: u64) -> Vec<Report> {
    let queue: Arc<Mutex<VecDeque<u64>>> = Arc::new(Mutex::new(seeds(default_count).into()));
    let threads = env_u64("SIM_THREADS")
        .map(|n| n as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .max(1);
    let reports: Arc<Mutex<Vec<Report>>> = Arc::default();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (queue, reports) = (queue.clone(), reports.clone());
            s.spawn(move || {
                loop {
                    let Some(seed) = queue.lock().expect("seed queue lock").pop_front() else { return };
                    let report = run(scenario, seed);
                    println!("{}", report.line);
                    reports.lock().expect("reports lock").push(report);
                }
            });
        }
    });
    let mut reports = std::mem::take(&mut *reports.lock().expect("reports lock"));
    reports.sort_by_key(|r| r.seed);
    reports
}

/// Fails the test if any report has a violation, printing each with the command that
/// reproduces it.
pub fn assert_clean(reports: &[Report]) {
    let mut failed = 0;
    for r in reports {
        if r.violations.is_empty() {
            continue;
        }
        failed += 1;
        eprintln!("\nFAILED {}  ({} violations)", r.line, r.violations.len());
        for v in r.violations.iter().take(10) {
            eprintln!("  [{}] {}", v.checker, v.detail);
        }
        for line in &r.admin_log {
            eprintln!("  operator: {line}");
        }
        eprintln!("  reproduce: {}", r.reproduce());
    }
    let ops: usize = reports.iter().map(|r| r.ops).sum();
    let mut t = history::Tally::default();
    for r in reports {
        t.add(&r.tally);
    }
    let inconclusive: usize = reports.iter().map(|r| r.inconclusive).sum();
    println!(
        "{} seeds, {ops} ops: writes {} acknowledged, {} refused, {} unknown; reads ok {} linearizable, {} lease, \
         {} stale, {} failed; {inconclusive} inconclusive key searches; {failed} seeds failed",
        reports.len(),
        t.written,
        t.refused,
        t.unknown_writes,
        t.reads_ok[0],
        t.reads_ok[1],
        t.reads_ok[2],
        t.reads_failed,
    );
    assert_eq!(failed, 0, "{failed} of {} seeds violated a checked property (see above)", reports.len());
}
