//! The checkers can fail: inject a known bug into the real code and assert that the checker
//! meant to catch it reports it — and that the same faults without the bug are clean.
//!
//! - Storage that acknowledges appends before syncing them, with whole-cluster crashes: an
//!   acknowledged write disappears (lost-write, linearizability or monotonic violations).
//! - Lease reads served without the lease check, with isolated nodes: a cut-off node serves
//!   values older than the lease bound (lease-bound violations).
//! - Linearizable reads served without a read-index round, with isolated nodes: a cut-off node
//!   serves values older than writes acknowledged before the read began (linearizability).
//! - Watch progress sent without confirming through the lease, with isolated nodes: a watcher
//!   on a cut-off node is told it is current while changes pass it by (delivery bound).
//! - A snapshot installed without its audit history, on a learner catching up by snapshot: its
//!   audit log differs from the others' (audit identity).
//! - Change requests completed without checking their bases, with reviewers approving every
//!   open request: a request made stale by another on the same flag applies (change control).

use vexil_sim::scenarios::{long_isolations, snapshot_catchup, stale_approvals, whole_cluster_crashes};
use vexil_sim::{Bugs, Report, run, seeds};

fn checkers(r: &Report) -> Vec<&'static str> {
    let mut c: Vec<&'static str> = r.violations.iter().map(|v| v.checker).collect();
    c.dedup();
    c
}

fn show(r: &Report) {
    println!("{} -> {:?}", r.line, checkers(r));
    for v in r.violations.iter().take(3) {
        println!("  [{}] {}", v.checker, v.detail);
    }
}

#[test]
fn acknowledging_before_sync_loses_writes_and_is_caught() {
    for seed in seeds(2) {
        let mut buggy = whole_cluster_crashes();
        buggy.bugs = Bugs { ack_before_sync: true, ..Bugs::default() };
        let r = run(&buggy, seed);
        show(&r);
        assert!(
            r.violations.iter().any(|v| matches!(v.checker, "lost-write" | "linearizability" | "monotonic")),
            "ack-before-sync was not caught: {}",
            r.reproduce()
        );
        let correct = run(&whole_cluster_crashes(), seed);
        show(&correct);
        assert!(
            correct.violations.is_empty(),
            "the same crashes without the bug must be clean: {}",
            correct.reproduce()
        );
    }
}

#[test]
fn lease_reads_without_the_lease_check_are_caught() {
    for seed in seeds(2) {
        let mut buggy = long_isolations();
        buggy.bugs = Bugs { lease_skip: true, ..Bugs::default() };
        let r = run(&buggy, seed);
        show(&r);
        assert!(
            r.violations.iter().any(|v| v.checker == "lease-bound"),
            "lease reads without the lease check were not caught: {}",
            r.reproduce()
        );
        assert!(
            !r.violations.iter().any(|v| v.checker == "linearizability"),
            "only lease reads are wrong, so only the lease checker may complain: {}",
            r.reproduce()
        );
        let correct = run(&long_isolations(), seed);
        show(&correct);
        assert!(
            correct.violations.is_empty(),
            "the same isolations without the bug must be clean: {}",
            correct.reproduce()
        );
    }
}

#[test]
fn linearizable_reads_without_a_read_index_are_caught() {
    for seed in seeds(2) {
        let mut buggy = long_isolations();
        buggy.bugs = Bugs { linearizable_skip: true, ..Bugs::default() };
        let r = run(&buggy, seed);
        show(&r);
        assert!(
            r.violations.iter().any(|v| v.checker == "linearizability"),
            "linearizable reads without a read index were not caught: {}",
            r.reproduce()
        );
    }
}

#[test]
fn progress_without_confirmation_breaks_the_delivery_bound_and_is_caught() {
    for seed in seeds(2) {
        let mut buggy = long_isolations();
        buggy.watchers = 3;
        buggy.bugs = Bugs { progress_skip: true, ..Bugs::default() };
        let r = run(&buggy, seed);
        show(&r);
        assert!(
            r.violations.iter().any(|v| v.checker == "delivery-bound"),
            "progress without confirmation was not caught: {}",
            r.reproduce()
        );
        let mut correct = long_isolations();
        correct.watchers = 3;
        let correct = run(&correct, seed);
        show(&correct);
        assert!(
            correct.violations.is_empty(),
            "the same isolations with watchers must be clean: {}",
            correct.reproduce()
        );
    }
}

#[test]
fn a_snapshot_without_its_audit_history_is_caught() {
    for seed in seeds(2) {
        let mut buggy = snapshot_catchup();
        buggy.test = "checkers_catch_bugs";
        buggy.bugs = Bugs { snapshot_drops_audit: true, ..Bugs::default() };
        let r = run(&buggy, seed);
        show(&r);
        assert!(
            r.snapshot_installed.values().any(|installed| *installed),
            "the learner must have caught up by snapshot for this test to mean anything: {}",
            r.reproduce()
        );
        assert!(
            r.violations.iter().any(|v| matches!(v.checker, "audit-identical" | "audit-chain")),
            "a snapshot without its audit history was not caught: {}",
            r.reproduce()
        );
    }
}

#[test]
fn stale_change_requests_that_apply_are_caught() {
    for seed in seeds(2) {
        let mut buggy = stale_approvals();
        buggy.bugs = Bugs { stale_changes_apply: true, ..Bugs::default() };
        let r = run(&buggy, seed);
        show(&r);
        let caught = r.violations.iter().find(|v| v.checker == "change-control" && v.detail.contains("although stale"));
        assert!(caught.is_some(), "stale change requests that apply were not caught: {}", r.reproduce());
        println!("  caught: {}", caught.map(|v| v.detail.as_str()).unwrap_or_default());
        let correct = run(&stale_approvals(), seed);
        show(&correct);
        assert!(correct.violations.is_empty(), "the same run without the bug must be clean: {}", correct.reproduce());
    }
}
