//! Freshness under faults: watchers start on each voter while nodes are cut off, crash, restart
//! during a partition and stop gracefully (often the leader, with the watchers attached).
//! Every watcher gets each acknowledged change within the delivery bound or knows itself stale
//! — never neither —, every `Progress` vouches only for what was delivered, every watcher ends
//! current, and no node that was told to stop wins an election.

use vexil_sim::{assert_clean, run_seeds, scenarios};

#[test]
fn every_watcher_sees_each_change_within_the_bound_or_knows_it_is_stale() {
    assert_clean(&run_seeds(&scenarios::freshness(), 30));
}
