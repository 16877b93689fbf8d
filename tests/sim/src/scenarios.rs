//! The scenarios the test files run, in one place so a debugging tool can run them too.

use crate::changes::ChangeControl;
use crate::nemesis::FaultKind;
use crate::scenario::{Operator, Scenario};

/// Network faults only: isolation of the leader or any node, minority/majority splits, one-way
/// loss, delays and message loss, all healing.
pub fn partitions() -> Scenario {
    Scenario::new(
        "partitions",
        &[
            FaultKind::IsolateLeader,
            FaultKind::Isolate,
            FaultKind::Split,
            FaultKind::OneWay,
            FaultKind::Delay,
            FaultKind::Loss,
        ],
    )
}

/// Crashes of one node, of several at once, and during a split, mixed with partitions.
pub fn crashes() -> Scenario {
    Scenario::new(
        "crashes",
        &[
            FaultKind::Crash,
            FaultKind::CrashMany,
            FaultKind::CrashDuringSplit,
            FaultKind::IsolateLeader,
            FaultKind::Split,
        ],
    )
}

/// Add a learner, promote it, remove a voter, add another learner — under faults.
pub fn membership() -> Scenario {
    let mut s = Scenario::new(
        "membership",
        &[FaultKind::Split, FaultKind::IsolateLeader, FaultKind::Crash, FaultKind::OneWay, FaultKind::Delay],
    );
    s.spares = 2;
    s.operator = Operator::Membership;
    s
}

/// Watchers on every voter while nodes are cut off, crash, restart during a partition and stop
/// gracefully (often the leader): every watcher gets each change within the delivery bound or
/// knows itself stale, and no leaving node wins an election.
pub fn freshness() -> Scenario {
    let mut s = Scenario::new(
        "freshness",
        &[
            FaultKind::Isolate,
            FaultKind::IsolateLeader,
            FaultKind::Split,
            FaultKind::Stop,
            FaultKind::RestartDuringSplit,
            FaultKind::Crash,
            FaultKind::Delay,
        ],
    );
    s.watchers = 3;
    s
}

/// Membership changes made while one node is cut off, with other faults drawn around them.
pub fn membership_under_partition() -> Scenario {
    let mut s = membership();
    s.test = "membership";
    s.operator_under_split = true;
    s.watchers = 2;
    s
}

/// A learner added after the log was purged catches up by snapshot, under light faults.
pub fn snapshot_catchup() -> Scenario {
    let mut s =
        Scenario::new("snapshot_catchup", &[FaultKind::Isolate, FaultKind::OneWay, FaultKind::Delay, FaultKind::Crash]);
    s.spares = 1;
    s.operator = Operator::SnapshotCatchUp;
    s
}

/// Change control under partitions and crashes: a namespace whose policy holds every write for
/// two approvals; three proposers writing the same two flags (each write opens a request, most
/// of them soon stale) and three reviewers approving every open request, each with a token of
/// its own, on random nodes, retrying calls of unknown outcome with their request ids.
pub fn change_control() -> Scenario {
    let mut s = Scenario::new(
        "change_control",
        &[
            FaultKind::IsolateLeader,
            FaultKind::Isolate,
            FaultKind::Split,
            FaultKind::OneWay,
            FaultKind::Delay,
            FaultKind::Crash,
            FaultKind::CrashMany,
        ],
    );
    // No flag workload in `sim` (the other scenarios check it): the run's time goes to change
    // control.
    s.clients = 0;
    s.change_control = Some(ChangeControl { proposers: 3, reviewers: 3, keys: 2 });
    s
}

/// [`change_control`], short, with one node cut off for a second
/// instead of drawn faults: requests on one flag are approved quickly and concurrently, so many
/// go stale and are approved anyway (an approval that applies a stale one is caught here;
/// correct ones refuse every one).
pub fn stale_approvals() -> Scenario {
    use crate::nemesis::{Action, Target};
    use crate::scenario::WARMUP;

    let at = |ms| WARMUP + std::time::Duration::from_millis(ms);
    let mut s = change_control();
    s.test = "checkers_catch_bugs";
    s.workload = std::time::Duration::from_secs(3);
    s.fixed_faults = Some(vec![(at(1_000), Action::Isolate(Target::Node(3))), (at(2_000), Action::HealNetwork)]);
    s
}

/// Every kind of fault at once, with membership changes: the determinism test's scenario.
pub fn everything() -> Scenario {
    let mut s = Scenario::new(
        "determinism",
        &[
            FaultKind::IsolateLeader,
            FaultKind::Split,
            FaultKind::OneWay,
            FaultKind::Loss,
            FaultKind::Delay,
            FaultKind::Crash,
            FaultKind::CrashMany,
            FaultKind::Stop,
            FaultKind::RestartDuringSplit,
        ],
    );
    s.spares = 1;
    s.operator = Operator::Membership;
    s.watchers = 2;
    s
}

/// Every node crashes at once, three times, restarting shortly after (the ack-before-sync bug
/// loses acknowledged writes here; correct storage must not).
pub fn whole_cluster_crashes() -> Scenario {
    use crate::nemesis::{Action, Target};
    use crate::scenario::WARMUP;

    let mut s = Scenario::new("checkers_catch_bugs", &[]);
    let all = || (1..=3).map(Target::Node).collect::<Vec<_>>();
    let mut schedule = Vec::new();
    for start in [2_000, 4_500, 7_000] {
        schedule.push((WARMUP + std::time::Duration::from_millis(start), Action::Crash(all())));
        schedule.push((WARMUP + std::time::Duration::from_millis(start + 300), Action::Restart(None)));
    }
    s.fixed_faults = Some(schedule);
    s
}

/// A follower, then the leader, cut off for several lease durations each (lease reads served
/// without the lease check return stale values here; correct ones must not).
pub fn long_isolations() -> Scenario {
    use crate::nemesis::{Action, Target};
    use crate::scenario::WARMUP;

    let at = |ms| WARMUP + std::time::Duration::from_millis(ms);
    let mut s = Scenario::new("checkers_catch_bugs", &[]);
    s.fixed_faults = Some(vec![
        (at(1_000), Action::Isolate(Target::Node(2))),
        (at(4_000), Action::HealNetwork),
        (at(4_500), Action::Isolate(Target::Leader)),
        (at(7_500), Action::HealNetwork),
    ]);
    s
}

/// A scenario by its test file's name.
pub fn by_name(name: &str) -> Option<Scenario> {
    Some(match name {
        "partitions" => partitions(),
        "crashes" => crashes(),
        "membership" => membership(),
        "membership_under_partition" => membership_under_partition(),
        "freshness" => freshness(),
        "snapshot_catchup" => snapshot_catchup(),
        "determinism" => everything(),
        "leader_bounces" => leader_bounces(),
        "whole_cluster_crashes" => whole_cluster_crashes(),
        "long_isolations" => long_isolations(),
        "change_control" => change_control(),
        "stale_approvals" => stale_approvals(),
        _ => return None,
    })
}

/// The whole cluster crashes again and again and the old leader restarts first, within the
/// election timeout: the regression scenario for a restarted leader resuming its term with a
/// log or commit index that trails what it acknowledged before the crash.
pub fn leader_bounces() -> Scenario {
    use std::time::Duration;

    use crate::nemesis::{Action, Target};
    use crate::scenario::WARMUP;

    let mut s = Scenario::new("crashes", &[]);
    let mut schedule = Vec::new();
    for i in 0..6u64 {
        let t = WARMUP + Duration::from_millis(600 + i * 1_250);
        // The whole cluster goes down; the old leader comes back first (it must not resume its
        // term: see `Node::never_resume_leadership`).
        let all = [Target::Leader, Target::Node(1), Target::Node(2), Target::Node(3)];
        schedule.push((t, Action::Crash(all.to_vec())));
        schedule.push((t + Duration::from_millis(100), Action::RestartCrashedLeader));
        schedule.push((t + Duration::from_millis(160 + 20 * i), Action::Restart(None)));
    }
    s.fixed_faults = Some(schedule);
    s
}
