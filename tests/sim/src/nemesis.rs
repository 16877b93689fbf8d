//! The fault scheduler: a timed list of faults drawn from the seed before the run starts, applied
//! by the driver between simulation steps. Targets like "the leader" are resolved when the fault
//! fires. Every fault ends (the network heals, crashed nodes restart) before the workload does,
//! and a final heal at the end of the workload undoes anything left.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use vexil_raft_store::NodeId;

/// The kinds of fault a scenario may draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Cut the current leader off from every other node.
    IsolateLeader,
    /// Cut one random node off.
    Isolate,
    /// Split the nodes into a minority and a majority; sometimes the leader is in the minority.
    Split,
    /// Drop messages in one direction only between two nodes (sometimes from the leader).
    OneWay,
    /// Hold messages on a link, then deliver them all late; raise latency on every link.
    Delay,
    /// Randomly lose messages on every link between nodes.
    Loss,
    /// Crash one node (often the leader) and restart it later.
    Crash,
    /// Crash several nodes at once (possibly all), restart them one by one.
    CrashMany,
    /// Split the cluster and crash a node on the majority side.
    CrashDuringSplit,
    /// Split the cluster; while it lasts, a node (either side) crashes and restarts.
    RestartDuringSplit,
    /// Stop a node gracefully, as SIGTERM does (often the leader), with watchers attached;
    /// restart it later.
    Stop,
}

/// Who a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Leader,
    Node(NodeId),
}

/// One step of the fault schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Isolate(Target),
    /// Two-way partition between `minority` (plus the leader when `with_leader`) and the rest.
    Split {
        minority: Vec<NodeId>,
        with_leader: bool,
    },
    OneWay {
        from: Target,
        to: NodeId,
    },
    Hold {
        a: NodeId,
        b: NodeId,
    },
    SlowLinks {
        max_latency: Duration,
    },
    LossyLinks {
        rate: f64,
    },
    Crash(Vec<Target>),
    /// A graceful stop (SIGTERM): the node leaves as a real process does.
    Stop(Target),
    /// Restart every node crashed or stopped so far (except removed ones), or just the given one.
    Restart(Option<NodeId>),
    /// Restart the node that was leader when a `Crash` of `Target::Leader` last fired.
    RestartCrashedLeader,
    /// Repair every link, release held messages, reset latency and loss.
    HealNetwork,
}

/// The default maximum one-way latency between simulated hosts.
pub const BASE_MAX_LATENCY: Duration = Duration::from_millis(20);

/// One node (drawn from the seed) cut off from the others around each of `times`: from 100 ms
/// before to 1.2 s after (membership changes made during a partition).
pub fn around(seed: u64, nodes: u64, times: impl Iterator<Item = Duration>) -> Vec<(Duration, Action)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7370_6c69_7421);
    let mut out = Vec::new();
    for at in times {
        let victim = rng.random_range(1..=nodes);
        out.push((
            at.saturating_sub(Duration::from_millis(100)),
            Action::Split { minority: vec![victim], with_leader: false },
        ));
        out.push((at + Duration::from_millis(1_200), Action::HealNetwork));
    }
    out
}

/// Draws the schedule of faults between `from` and `until` over nodes `1..=nodes`.
pub fn schedule(
    seed: u64,
    kinds: &[FaultKind],
    nodes: u64,
    from: Duration,
    until: Duration,
) -> Vec<(Duration, Action)> {
    let mut out = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    let ids: Vec<NodeId> = (1..=nodes).collect();
    let ms = |n: u64| Duration::from_millis(n);
    let mut t = from;
    while t + ms(300) < until {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let dur = ms(rng.random_range(400..2_500)).min(until.saturating_sub(t));
        let end = t + dur;
        let random_node = |rng: &mut StdRng| ids[rng.random_range(0..ids.len())];
        let minority = |rng: &mut StdRng| {
            let mut shuffled = ids.clone();
            shuffled.shuffle(rng);
            let size = rng.random_range(1..=(ids.len() - 1) / 2);
            shuffled.truncate(size);
            shuffled
        };
        match kind {
            FaultKind::IsolateLeader => out.push((t, Action::Isolate(Target::Leader))),
            FaultKind::Isolate => out.push((t, Action::Isolate(Target::Node(random_node(&mut rng))))),
            FaultKind::Split => {
                let with_leader = rng.random_bool(0.5);
                let mut m = minority(&mut rng);
                if with_leader {
                    m.pop();
                }
                out.push((t, Action::Split { minority: m, with_leader }));
            }
            FaultKind::OneWay => {
                let to = random_node(&mut rng);
                let from = if rng.random_bool(0.5) {
                    Target::Leader
                } else {
                    Target::Node(
                        ids.iter().copied().filter(|&i| i != to).nth(rng.random_range(0..ids.len() - 1)).unwrap_or(to),
                    )
                };
                out.push((t, Action::OneWay { from, to }));
            }
            FaultKind::Delay => {
                let a = random_node(&mut rng);
                let b = ids.iter().copied().filter(|&i| i != a).nth(rng.random_range(0..ids.len() - 1)).unwrap_or(a);
                out.push((t, Action::SlowLinks { max_latency: ms(rng.random_range(50..250)) }));
                out.push((t, Action::Hold { a, b }));
            }
            FaultKind::Loss => out.push((t, Action::LossyLinks { rate: [0.01, 0.03, 0.1][rng.random_range(0..3)] })),
            FaultKind::Crash => {
                let target = if rng.random_bool(0.5) { Target::Leader } else { Target::Node(random_node(&mut rng)) };
                out.push((t, Action::Crash(vec![target])));
                out.push((end, Action::Restart(None)));
            }
            FaultKind::CrashMany => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut rng);
                shuffled.truncate(rng.random_range(2..=ids.len()));
                let mut restart_at = end;
                for &id in &shuffled {
                    out.push((restart_at, Action::Restart(Some(id))));
                    restart_at += ms(rng.random_range(0..400));
                }
                out.push((t, Action::Crash(shuffled.into_iter().map(Target::Node).collect())));
            }
            FaultKind::CrashDuringSplit => {
                let m = minority(&mut rng);
                let majority: Vec<NodeId> = ids.iter().copied().filter(|i| !m.contains(i)).collect();
                let victim = majority[rng.random_range(0..majority.len())];
                out.push((t, Action::Split { minority: m, with_leader: false }));
                out.push((t + dur / 3, Action::Crash(vec![Target::Node(victim)])));
                out.push((end, Action::Restart(None)));
            }
            FaultKind::RestartDuringSplit => {
                let victim = random_node(&mut rng);
                out.push((t, Action::Split { minority: minority(&mut rng), with_leader: false }));
                out.push((t + dur / 4, Action::Crash(vec![Target::Node(victim)])));
                out.push((t + dur / 2, Action::Restart(Some(victim))));
            }
            FaultKind::Stop => {
                let target = if rng.random_bool(0.5) { Target::Leader } else { Target::Node(random_node(&mut rng)) };
                out.push((t, Action::Stop(target)));
                out.push((end, Action::Restart(None)));
            }
        }
        out.push((end, Action::HealNetwork));
        t = end + ms(rng.random_range(100..800));
    }
    out.push((until, Action::HealNetwork));
    out.push((until, Action::Restart(None)));
    // Stable: equal times keep their drawn order.
    out.sort_by_key(|(t, _)| *t);
    out
}
