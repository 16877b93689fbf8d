//! Prometheus metrics, one registry per node (a process-global recorder would merge the nodes
//! of a simulation, which share one process). Served on the admin port at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsistencyLabel {
    /// linearizable, lease or stale: the level actually used.
    pub consistency: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// ok or error.
    pub outcome: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub reads: Family<ConsistencyLabel, Counter>,
    pub writes: Family<OutcomeLabel, Counter>,
    pub read_index_rounds: Counter,
    pub lease_renewals: Counter,
    pub lease_expiries: Counter,
    pub raft_term: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_last_log_index: Gauge,
    pub raft_applied_index: Gauge,
    pub watch_streams: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vexil");
        let m = Metrics {
            registry: Registry::default(),
            reads: Family::default(),
            writes: Family::default(),
            read_index_rounds: Counter::default(),
            lease_renewals: Counter::default(),
            lease_expiries: Counter::default(),
            raft_term: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            watch_streams: Gauge::default(),
        };
        registry.register("reads", "Reads served, by the consistency level used", m.reads.clone());
        registry.register("writes", "Writes answered, by outcome", m.writes.clone());
        registry.register(
            "read_index_rounds",
            "Read-index rounds (one serves every read that arrived before it began)",
            m.read_index_rounds.clone(),
        );
        registry.register(
            "read_lease_renewals",
            "Successful read-index rounds, each renewing the lease",
            m.lease_renewals.clone(),
        );
        registry.register(
            "read_lease_expiries",
            "Lease reads refused because the lease had expired and could not be renewed",
            m.lease_expiries.clone(),
        );
        registry.register("raft_term", "Current Raft term", m.raft_term.clone());
        registry.register("raft_is_leader", "1 when this node is the leader", m.raft_is_leader.clone());
        registry.register("raft_last_log_index", "Index of the last log entry", m.raft_last_log_index.clone());
        registry.register(
            "raft_applied_index",
            "Index of the last applied entry (the revision)",
            m.raft_applied_index.clone(),
        );
        registry.register(
            "watch_streams",
            "Watch streams open on this node (each holds one of its WATCH_STREAMS_MAX slots)",
            m.watch_streams.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn read(&self, consistency: &'static str) {
        self.reads.get_or_create(&ConsistencyLabel { consistency }).inc();
    }

    pub fn write(&self, ok: bool) {
        self.writes.get_or_create(&OutcomeLabel { outcome: if ok { "ok" } else { "error" } }).inc();
    }
}
