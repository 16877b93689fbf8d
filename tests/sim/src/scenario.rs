//! One simulated run: build the hosts and clients, step the simulation while applying the fault
//! schedule, then run every checker over what was recorded.
//!
//! Timeline (simulated time): the cluster elects a leader during [`WARMUP`]; the workload
//! clients run for `Scenario::workload` while faults are injected; at the end of the workload
//! the network heals and every crashed node restarts; after [`SETTLE`] the final client reads
//! every key on every member and fetches their audit logs.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Once;
use std::time::{Duration, UNIX_EPOCH};

use openraft::ServerState;
use vexil_raft_store::NodeId;
use vexil_raft_store::mem::{Faults, MemDisk};
use vexil_server::node::InjectedFaults;

use crate::changes::{self, ChangeControl, ChangeOp, ChangePlan};
use crate::check::{self, Violation};
use crate::cluster::{self, EPOCH_MS, NodeSetup, READ_LEASE_MS, Registry, Stoppers, host_name};
use crate::history::{self, Recorder};
use crate::nemesis::{self, Action, BASE_MAX_LATENCY, FaultKind, Target};
use crate::watchers;
use crate::workload::{self, AdminStep, Control, WorkloadPlan};

/// Time for the first election before clients start.
pub const WARMUP: Duration = Duration::from_millis(1_500);
/// Time between the heal and the final reads.
pub const SETTLE: Duration = Duration::from_millis(2_500);
/// How long watchers go on after the final reads begin.
pub const WATCH_TAIL: Duration = Duration::from_millis(1_500);

/// Membership work the operator client does during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    None,
    /// Add a learner, promote it, remove a random original voter, add a second learner.
    Membership,
    /// Add a learner once the leader has purged its log, so it must catch up by snapshot.
    SnapshotCatchUp,
}

/// Known bugs to inject (to prove the checkers catch them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Storage acknowledges appends before syncing them.
    pub ack_before_sync: bool,
    /// Lease reads skip the lease check.
    pub lease_skip: bool,
    /// Linearizable reads skip the read-index round.
    pub linearizable_skip: bool,
    /// Watch progress vouches for the local state without confirming it.
    pub progress_skip: bool,
    /// An installed snapshot loses its audit history.
    pub snapshot_drops_audit: bool,
    /// The approval that completes a change request applies it without checking that the
    /// flags it was based on are unchanged (stale requests apply).
    pub stale_changes_apply: bool,
}

/// What one scenario file runs.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The test file, for the reproduce command.
    pub test: &'static str,
    pub voters: u64,
    /// Extra hosts that start empty and are added by the operator.
    pub spares: u64,
    pub clients: usize,
    pub keys: usize,
    pub workload: Duration,
    pub faults: Vec<FaultKind>,
    pub operator: Operator,
    pub bugs: Bugs,
    /// An explicit fault schedule instead of a drawn one (for the bug-injection tests).
    pub fixed_faults: Option<Vec<(Duration, Action)>>,
    /// Watching clients, the i-th starting on voter `i mod voters + 1`.
    pub watchers: usize,
    /// Cut one node off around each membership step of the operator.
    pub operator_under_split: bool,
    /// Change-control clients ([`crate::changes`]). The nodes then check bearer tokens, so
    /// every client is a principal of its own (the harness's other clients use the admin token).
    pub change_control: Option<ChangeControl>,
}

impl Scenario {
    pub fn new(test: &'static str, faults: &[FaultKind]) -> Self {
        Scenario {
            test,
            voters: 3,
            spares: 0,
            clients: 4,
            keys: 3,
            workload: Duration::from_secs(8),
            faults: faults.to_vec(),
            operator: Operator::None,
            bugs: Bugs::default(),
            fixed_faults: None,
            watchers: 0,
            operator_under_split: false,
            change_control: None,
        }
    }

    fn nodes(&self) -> u64 {
        self.voters + self.spares
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    /// `sim seed=<n> ops=<count> history=<digest>`: identical for identical runs.
    pub line: String,
    pub violations: Vec<Violation>,
    /// Keys whose linearizability search ran out of budget.
    pub inconclusive: usize,
    pub ops: usize,
    pub tally: history::Tally,
    /// The whole recorded history.
    pub history: Vec<history::Op>,
    /// What the final client found (audit logs, membership).
    pub finale: Option<workload::Finale>,
    /// The fault schedule that was applied.
    pub schedule: Vec<(Duration, Action)>,
    pub admin_log: Vec<String>,
    /// Per spare node: whether it holds a snapshot it received (spares never build their own).
    pub snapshot_installed: BTreeMap<NodeId, bool>,
    /// What each watcher received.
    pub watches: Vec<watchers::WatchLog>,
    /// The change-control clients' calls.
    pub changes: Vec<ChangeOp>,
    pub test: &'static str,
}

impl Report {
    pub fn reproduce(&self) -> String {
        format!("SIM_SEED={} cargo test -p vexil-sim --test {}", self.seed, self.test)
    }
}

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Counts panics per thread, so a panic inside a simulated host (which turmoil treats like the
/// host's runtime stopping) still fails the run.
fn install_panic_counter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            default(info);
        }));
    });
}

fn leader(registry: &Registry, down: &BTreeSet<NodeId>) -> Option<NodeId> {
    registry
        .borrow()
        .iter()
        .filter(|(id, _)| !down.contains(id))
        .map(|(id, node)| (*id, node.metrics()))
        .filter(|(_, m)| m.state == ServerState::Leader)
        .max_by_key(|(_, m)| m.current_term)
        .map(|(id, _)| id)
}

struct Driver<'a> {
    sim: turmoil::Sim<'a>,
    registry: Registry,
    nodes: Vec<NodeId>,
    down: BTreeSet<NodeId>,
    removed: BTreeSet<NodeId>,
    held: Vec<(NodeId, NodeId)>,
    crashed_leader: Option<NodeId>,
    /// Directed links currently cut.
    cuts: BTreeSet<(NodeId, NodeId)>,
    /// Every host of the simulation, nodes and clients.
    hosts: Vec<String>,
    stoppers: Stoppers,
    /// Nodes stopped gracefully and not restarted yet, with their term when told to stop.
    stopping: BTreeMap<NodeId, u64>,
    /// Nodes that won an election after they were told to stop.
    led_while_leaving: BTreeSet<NodeId>,
}

impl Driver<'_> {
    fn resolve(&self, t: Target) -> Option<NodeId> {
        match t {
            Target::Node(id) => Some(id),
            Target::Leader => leader(&self.registry, &self.down),
        }
    }

    fn cut(&mut self, a: NodeId, b: NodeId) {
        self.sim.partition(host_name(a).as_str(), host_name(b).as_str());
        self.cuts.insert((a, b));
        self.cuts.insert((b, a));
    }

    /// Crashes a node's host like a machine crash: nothing it had in flight, not even the FIN
    /// or RST of its dropped connections, leaves it. (Without this, the order in which tokio
    /// drops the host's tasks — which depends on process-wide task ids — would decide the order
    /// of those messages, and with it the network's random draws: the same seed would not
    /// repeat within one process.)
    fn crash_host(&mut self, id: NodeId) {
        let victim = host_name(id);
        for other in self.hosts.iter().filter(|h| **h != victim) {
            self.sim.partition(victim.as_str(), other.as_str());
        }
        self.sim.crash(victim.as_str());
        for other in self.hosts.iter().filter(|h| **h != victim) {
            self.sim.repair(victim.as_str(), other.as_str());
        }
        // Put back the faults on the victim's links.
        for &(a, b) in self.cuts.iter().filter(|(a, b)| *a == id || *b == id) {
            self.sim.partition_oneway(host_name(a).as_str(), host_name(b).as_str());
        }
        for &(a, b) in self.held.iter().filter(|(a, b)| *a == id || *b == id) {
            self.sim.hold(host_name(a).as_str(), host_name(b).as_str());
        }
    }

    fn apply(&mut self, action: &Action) {
        match action {
            Action::Isolate(t) => {
                if let Some(victim) = self.resolve(*t) {
                    for other in self.nodes.clone() {
                        if other != victim {
                            self.cut(victim, other);
                        }
                    }
                }
            }
            Action::Split { minority, with_leader } => {
                let mut side: BTreeSet<NodeId> = minority.iter().copied().collect();
                if *with_leader && let Some(l) = leader(&self.registry, &self.down) {
                    side.insert(l);
                }
                for &a in &side {
                    for b in self.nodes.clone().into_iter().filter(|b| !side.contains(b)) {
                        self.cut(a, b);
                    }
                }
            }
            Action::OneWay { from, to } => {
                if let Some(from) = self.resolve(*from).filter(|f| f != to) {
                    self.sim.partition_oneway(host_name(from).as_str(), host_name(*to).as_str());
                    self.cuts.insert((from, *to));
                }
            }
            Action::Hold { a, b } => {
                self.sim.hold(host_name(*a).as_str(), host_name(*b).as_str());
                self.held.push((*a, *b));
            }
            Action::SlowLinks { max_latency } => self.for_each_link(|sim, a, b| {
                sim.set_link_max_message_latency(a, b, *max_latency);
            }),
            Action::LossyLinks { rate } => self.for_each_link(|sim, a, b| sim.set_link_fail_rate(a, b, *rate)),
            Action::Crash(targets) => {
                let victims: Vec<NodeId> = targets.iter().filter_map(|t| self.resolve(*t)).collect();
                if let Some(i) = targets.iter().position(|t| *t == Target::Leader) {
                    self.crashed_leader = victims.get(i).copied();
                }
                for id in victims {
                    if self.down.insert(id) {
                        self.crash_host(id);
                    }
                }
            }
            Action::Stop(t) => {
                if let Some(id) = self.resolve(*t).filter(|id| !self.down.contains(id)) {
                    let term = self.registry.borrow().get(&id).map_or(0, |n| n.metrics().current_term);
                    self.down.insert(id);
                    self.stopping.insert(id, term);
                    if let Some(stop) = self.stoppers.borrow().get(&id) {
                        stop.notify_one();
                    }
                }
            }
            Action::Restart(which) => {
                let restart: Vec<NodeId> = self
                    .down
                    .iter()
                    .copied()
                    .filter(|id| which.is_none_or(|w| w == *id) && !self.removed.contains(id))
                    .collect();
                for id in restart {
                    if self.stopping.remove(&id).is_some() {
                        // Whatever the stopped node left running goes, as a process's exit
                        // takes everything with it.
                        self.crash_host(id);
                    }
                    self.down.remove(&id);
                    self.sim.bounce(host_name(id).as_str());
                }
            }
            Action::RestartCrashedLeader => {
                if let Some(id) = self.crashed_leader.take() {
                    self.apply(&Action::Restart(Some(id)));
                }
            }
            Action::HealNetwork => {
                self.cuts.clear();
                for (a, b) in std::mem::take(&mut self.held) {
                    self.sim.release(host_name(a).as_str(), host_name(b).as_str());
                }
                self.for_each_link(|sim, a, b| {
                    sim.repair(a, b);
                    sim.set_link_fail_rate(a, b, 0.0);
                    sim.set_link_max_message_latency(a, b, BASE_MAX_LATENCY);
                });
            }
        }
    }

    /// A node told to stop must never win an election (it would lead while it leaves).
    fn check_leaving(&mut self) {
        for (&id, &term) in &self.stopping {
            let Some(node) = self.registry.borrow().get(&id).cloned() else { continue };
            let m = node.metrics();
            if m.state == ServerState::Leader && m.current_term > term {
                self.led_while_leaving.insert(id);
            }
        }
    }

    fn for_each_link(&mut self, mut f: impl FnMut(&mut turmoil::Sim<'_>, &str, &str)) {
        for &a in &self.nodes {
            for &b in &self.nodes {
                if a < b {
                    f(&mut self.sim, host_name(a).as_str(), host_name(b).as_str());
                }
            }
        }
    }
}

/// The operator's plan for a scenario.
fn operator_steps(scenario: &Scenario, seed: u64) -> Vec<(Duration, AdminStep)> {
    let start = WARMUP;
    let v = scenario.voters;
    match scenario.operator {
        Operator::None => vec![],
        Operator::Membership => {
            let learner = v + 1;
            let removed = 1 + seed % v;
            let mut voters: BTreeSet<NodeId> = (1..=v).collect();
            voters.insert(learner);
            let mut steps = vec![
                (start + Duration::from_millis(1_000), AdminStep::AddLearner(learner)),
                (start + Duration::from_millis(2_500), AdminStep::SetVoters(voters)),
                (start + Duration::from_millis(4_500), AdminStep::Remove(removed)),
            ];
            if scenario.spares > 1 {
                steps.push((start + Duration::from_millis(5_500), AdminStep::AddLearner(v + 2)));
            }
            steps
        }
        Operator::SnapshotCatchUp => (1..=scenario.spares)
            .map(|i| (start + Duration::from_millis(4_000), AdminStep::AddLearner(v + i)))
            .collect(),
    }
}

/// Log entries between snapshots, and kept after one, for scenarios that catch up by snapshot.
const SNAPSHOT_EVERY: u64 = 20;

/// Runs `scenario` with `seed` and checks it.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    install_panic_counter();
    PANICS.with(|p| p.set(0));
    if std::env::var_os("SIM_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("SIM_LOG"))
            .with_test_writer()
            .try_init();
    }
    // openraft's election timeouts come from this thread's generator.
    vexil_raft_store::runtime::seed_thread_rng(seed);

    let workload_end = WARMUP + scenario.workload;
    let final_at = workload_end + SETTLE;
    let sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
        .simulation_duration(final_at + Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .tcp_capacity(4096)
        .max_message_latency(BASE_MAX_LATENCY)
        .build();
    let registry: Registry = Registry::default();
    let nodes: Vec<NodeId> = (1..=scenario.nodes()).collect();
    let mut driver = Driver {
        sim,
        registry: registry.clone(),
        nodes: nodes.clone(),
        down: BTreeSet::new(),
        removed: BTreeSet::new(),
        held: vec![],
        crashed_leader: None,
        cuts: BTreeSet::new(),
        hosts: nodes.iter().map(|id| host_name(*id)).collect(),
        stoppers: Stoppers::default(),
        stopping: BTreeMap::new(),
        led_while_leaving: BTreeSet::new(),
    };

    let storage_bugs = Faults {
        ack_before_sync: scenario.bugs.ack_before_sync,
        snapshot_install_drops_audit: scenario.bugs.snapshot_drops_audit,
        stale_changes_apply: scenario.bugs.stale_changes_apply,
    };
    let server_bugs = InjectedFaults {
        lease_reads_skip_check: scenario.bugs.lease_skip,
        linearizable_reads_skip_read_index: scenario.bugs.linearizable_skip,
        progress_skip_check: scenario.bugs.progress_skip,
    };
    let mut spare_disks: BTreeMap<NodeId, MemDisk> = BTreeMap::new();
    for &id in &nodes {
        let spare = id > scenario.voters;
        let (since_last, keep) = match (scenario.operator, spare) {
            // A spare never builds its own snapshot, so one it holds was received.
            (Operator::SnapshotCatchUp, true) => (1_000_000, SNAPSHOT_EVERY),
            (Operator::SnapshotCatchUp, false) => (SNAPSHOT_EVERY, 0),
            _ => (5_000, 1_000),
        };
        let setup = NodeSetup {
            id,
            voters: scenario.voters,
            snapshot_logs_since_last: since_last,
            max_in_snapshot_log_to_keep: keep,
            bugs: server_bugs,
            tokens: scenario.change_control.is_some(),
        };
        let disk = cluster::disk(storage_bugs);
        if spare {
            spare_disks.insert(id, disk.clone());
        }
        cluster::add_host(&mut driver.sim, setup, disk, registry.clone(), driver.stoppers.clone());
    }

    let rec = Recorder::default();
    let control = Rc::new(Control::default());
    *control.targets.borrow_mut() = (1..=scenario.voters).collect();
    if scenario.change_control.is_some() {
        *control.admin_secret.borrow_mut() = Some(cluster::ADMIN_SECRET.to_string());
    }
    let plan = WorkloadPlan { start: WARMUP, end: workload_end, keys: scenario.keys };
    for c in 0..scenario.clients {
        let name = format!("c{}", c + 1);
        let client_seed = seed.wrapping_mul(1_000).wrapping_add(c as u64 + 1);
        let fut = workload::workload_client(name.clone(), client_seed, plan.clone(), rec.clone(), control.clone());
        driver.sim.client(name.as_str(), fut);
        driver.hosts.push(name);
    }
    let steps = operator_steps(scenario, seed);
    let step_times: Vec<Duration> = steps.iter().map(|(at, _)| *at).collect();
    if !steps.is_empty() {
        driver.sim.client("operator", workload::admin_client(seed ^ 0xad, steps, control.clone()));
        driver.hosts.push("operator".into());
    }
    if let Some(cc) = scenario.change_control {
        let plan = ChangePlan { start: WARMUP, end: workload_end, control: cc };
        let shared = Rc::new(changes::Shared::default());
        let fut = changes::setup_client(seed ^ 0x5e7, plan.clone(), shared.clone(), control.clone());
        driver.sim.client("setup", fut);
        driver.hosts.push("setup".into());
        for (i, (name, _)) in changes::principals(&cc).into_iter().enumerate() {
            let client_seed = seed.wrapping_mul(1_000).wrapping_add(500 + i as u64);
            let (plan, shared, control) = (plan.clone(), shared.clone(), control.clone());
            if i < cc.proposers {
                driver.sim.client(name.as_str(), changes::proposer(name.clone(), client_seed, plan, shared, control));
            } else {
                driver.sim.client(name.as_str(), changes::reviewer(name.clone(), client_seed, plan, shared, control));
            }
            driver.hosts.push(name);
        }
    }
    driver.sim.client("final", workload::final_client(final_at, scenario.keys, rec.clone(), control.clone()));
    driver.hosts.push("final".into());
    for i in 0..scenario.watchers {
        let name = format!("w{}", i + 1);
        let first = i as u64 % scenario.voters + 1;
        let fut = watchers::watcher(name.clone(), first, WARMUP, final_at + WATCH_TAIL, control.clone());
        driver.sim.client(name.as_str(), fut);
        driver.hosts.push(name);
    }

    let mut schedule = match &scenario.fixed_faults {
        Some(fixed) => fixed.clone(),
        None => nemesis::schedule(
            seed,
            &scenario.faults,
            scenario.nodes(),
            WARMUP + Duration::from_millis(500),
            workload_end,
        ),
    };
    if scenario.operator_under_split {
        schedule.extend(nemesis::around(seed, scenario.nodes(), step_times.into_iter()));
        schedule.sort_by_key(|(t, _)| *t);
    }
    let mut violations = Vec::new();
    let mut next = 0;
    loop {
        let now = driver.sim.elapsed();
        while next < schedule.len() && schedule[next].0 <= now {
            let action = schedule[next].1.clone();
            driver.apply(&action);
            next += 1;
        }
        driver.check_leaving();
        for id in control.removed.borrow().iter() {
            if driver.removed.insert(*id) && driver.down.insert(*id) {
                // An operator shuts a removed node down.
                driver.crash_host(*id);
            }
        }
        // A panic in a host task stops that host's runtime, which panics out of `step`: report it
        // with the seed instead of tearing the whole sweep down.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.sim.step())) {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {}
            Err(_) => {
                violations
                    .push(Violation { checker: "panic", detail: "a simulated host panicked (see stderr)".into() });
                break;
            }
            Ok(Err(e)) => {
                violations.push(Violation { checker: "simulation", detail: format!("the simulation failed: {e}") });
                break;
            }
        }
    }

    let snapshot_installed = spare_disks
        .keys()
        .map(|id| {
            let installed = registry.borrow().get(id).is_some_and(|n| n.metrics().snapshot.is_some());
            (*id, installed)
        })
        .collect();
    registry.borrow_mut().clear();
    for id in &driver.led_while_leaving {
        violations.push(Violation {
            checker: "leaving-leader",
            detail: format!("node {id} won an election after it was told to stop"),
        });
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(driver)));

    let ops = rec.ops();
    let panics = PANICS.with(|p| p.get());
    if panics > 0 {
        violations.push(Violation { checker: "panic", detail: format!("{panics} panic(s) inside the simulation") });
    }
    for u in control.unexpected.borrow().iter() {
        violations.push(Violation { checker: "unexpected-error", detail: u.clone() });
    }
    violations.extend(check::provenance(&ops));
    violations.extend(check::monotonic(&ops));
    let applied = check::applied(control.finale.borrow().as_ref());
    let (lin, inconclusive) = check::linearizable(&ops, READ_LEASE_MS, &applied);
    violations.extend(lin);
    if scenario.watchers > 0 {
        violations.extend(check::feed(&ops, &control.watches.borrow()));
    }
    let change_ops = control.changes.borrow().clone();
    match control.finale.borrow().as_ref() {
        Some(finale) => {
            violations.extend(check::audit(&ops, finale));
            violations.extend(check::change_control(finale, &change_ops));
        }
        None => violations.push(Violation { checker: "recovery", detail: "the final client never finished".into() }),
    }
    // The change-control calls are part of the history (none in other scenarios).
    let lines = ops.iter().map(ToString::to_string).chain(change_ops.iter().map(ToString::to_string));
    let line = format!("sim seed={seed} ops={} history={}", ops.len() + change_ops.len(), history::digest_lines(lines));
    Report {
        seed,
        line,
        violations,
        inconclusive,
        ops: ops.len(),
        tally: history::Tally::of(&ops),
        history: ops,
        finale: control.finale.borrow().clone(),
        schedule,
        admin_log: control.admin_log.borrow().clone(),
        snapshot_installed,
        watches: control.watches.borrow().clone(),
        changes: change_ops,
        test: scenario.test,
    }
}
