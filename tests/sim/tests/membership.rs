//! Membership changes during faults: add a learner, promote it to voter, remove an original
//! voter (possibly the leader), add a second learner — while partitions, crashes and delays go
//! on. The removed node is shut down; the final checks cover every remaining member.

use vexil_sim::{assert_clean, run_seeds, scenarios};

#[test]
fn membership_changes_under_faults_stay_linearizable() {
    let reports = run_seeds(&scenarios::membership(), 30);
    for r in &reports {
        println!("seed {} operator: {:?}", r.seed, r.admin_log);
    }
    assert_clean(&reports);
}

/// Each membership step is made while one node (maybe the leader, maybe the node being added
/// or removed) is cut off; watchers follow the feed throughout.
#[test]
fn membership_changes_during_a_partition_stay_linearizable() {
    assert_clean(&run_seeds(&scenarios::membership_under_partition(), 10));
}
