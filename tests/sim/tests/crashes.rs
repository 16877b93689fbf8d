//! Crashes: one node (often the leader), several at once (up to all of them), and a crash on
//! the majority side of a partition; every crashed node restarts on what its disk had synced.

use vexil_sim::{assert_clean, run_seeds, scenarios};

#[test]
fn crashes_and_restarts_lose_no_acknowledged_write() {
    assert_clean(&run_seeds(&scenarios::crashes(), 60));
}

/// Regression: a leader that restarts before anyone else times out used to resume leading in the
/// same term (openraft restores a committed vote as leadership). Its commit index — and, after a
/// machine crash, the tail of its own log — can trail writes it acknowledged, so reads missed
/// them. Found by this simulation (`crashes`, seeds 11, 507 and 822); fixed in
/// `Node::never_resume_leadership`.
#[test]
fn a_leader_restarted_within_the_election_timeout_serves_no_stale_read() {
    assert_clean(&run_seeds(&scenarios::leader_bounces(), 8));
}
