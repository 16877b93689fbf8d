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
