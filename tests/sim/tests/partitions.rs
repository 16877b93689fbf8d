//! Network faults: leader isolation, minority and majority partitions, one-way loss, delays and
//! message loss, all healing; checked for linearizability, the lease bound, lost writes and
//! identical audit logs.

use vexil_sim::{assert_clean, run_seeds, scenarios};

#[test]
fn partitions_heal_without_violations() {
    assert_clean(&run_seeds(&scenarios::partitions(), 60));
}
