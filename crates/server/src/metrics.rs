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
    pub storage_data_bytes: Gauge,
    pub storage_free_bytes: Gauge,
    pub storage_quota_bytes: Gauge,
    pub alarms: Gauge,
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
            storage_data_bytes: Gauge::default(),
            storage_free_bytes: Gauge::default(),
            storage_quota_bytes: Gauge::default(),
            alarms: Gauge::default(),
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
        registry.register(
            "storage_data_bytes",
            "Bytes in this node's data directory (log, state, snapshots), as last measured",
            m.storage_data_bytes.clone(),
        );
        registry.register(
            "storage_free_bytes",
            "Bytes still free on the data directory's filesystem, as last measured",
            m.storage_free_bytes.clone(),
        );
        registry.register("storage_quota_bytes", "storage.quota_bytes (0: no quota)", m.storage_quota_bytes.clone());
        registry.register(
            "alarms",
            "NOSPACE alarms standing in the cluster (writes that grow the state are refused while any does)",
            m.alarms.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records a space check (`space.rs`).
    pub fn storage(&self, usage: crate::space::Usage, quota_bytes: u64, alarms: usize) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.storage_data_bytes.set(gauge(usage.data_bytes));
        self.storage_free_bytes.set(gauge(usage.free_bytes));
        self.storage_quota_bytes.set(gauge(quota_bytes));
        self.alarms.set(gauge(alarms as u64));
    }

    pub fn read(&self, consistency: &'static str) {
        self.reads.get_or_create(&ConsistencyLabel { consistency }).inc();
    }

    pub fn write(&self, ok: bool) {
        self.writes.get_or_create(&OutcomeLabel { outcome: if ok { "ok" } else { "error" } }).inc();
    }
}
