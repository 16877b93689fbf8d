//! A learner added after the leader purged its log catches up by snapshot (the learner never
//! builds one itself, so a snapshot it holds was received), under light faults; afterwards its
//! reads and audit log agree with everyone else's.

use vexil_sim::{assert_clean, run_seeds, scenarios};

#[test]
fn a_learner_catches_up_by_snapshot_after_the_log_was_purged() {
    let reports = run_seeds(&scenarios::snapshot_catchup(), 30);
    for r in &reports {
        println!("seed {} operator: {:?} snapshot installed: {:?}", r.seed, r.admin_log, r.snapshot_installed);
    }
    assert_clean(&reports);
    let missed: Vec<u64> =
        reports.iter().filter(|r| !r.snapshot_installed.values().all(|installed| *installed)).map(|r| r.seed).collect();
    assert!(missed.is_empty(), "the learner did not receive a snapshot with seeds {missed:?}");
}
