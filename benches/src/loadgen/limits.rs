//! Every bound of the load generator, in one place.

use std::time::Duration;

/// Distinct keys the write and read scenarios spread over.
pub const KEYS: usize = 1_000;
/// HTTP/2 connections the load generator opens to each node; a scenario's clients share them
/// round-robin (so 256 clients are 32 concurrent streams on each of 8 connections).
pub const CONNECTIONS_PER_NODE: usize = 8;
/// The longest one request may take before it counts as an error (every load loop is also
/// bounded by its scenario's duration).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Letters and digits of the etcd users' random passwords (secure mode).
pub const PASSWORD_CHARS: usize = 24;
/// Pause after a failed request, so an unavailable cluster is not hammered in a tight loop.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(5);
/// How long a cluster may take to start and agree on a leader.
pub const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Watch scenario: the writer's pause between writes (so each event is measured on its own,
/// not behind a queue).
pub const WATCH_WRITE_INTERVAL: Duration = Duration::from_millis(10);
/// Watch scenario: how long to wait for events still in flight after the writer stops.
pub const WATCH_DRAIN: Duration = Duration::from_secs(1);

/// Failover scenario: concurrent writers (staggered, so one starts soon after a new leader).
pub const FAILOVER_WRITERS: usize = 8;
/// Failover scenario: per-write timeout (a write stuck on the dead leader is abandoned and
/// retried after this long).
pub const FAILOVER_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// Failover scenario: the longest wait for a write acknowledged after the kill.
pub const FAILOVER_WAIT_MAX: Duration = Duration::from_secs(20);
/// Failover scenario: how long the cluster runs with all members before the next kill.
pub const FAILOVER_SETTLE: Duration = Duration::from_secs(2);

/// Memory scenario: flags per namespace document (one `ApplyNamespace` write each).
pub const FILL_FLAGS_PER_NAMESPACE: usize = 1_000;
/// Memory scenario: `ApplyNamespace` writes in flight at once while filling.
pub const FILL_CONCURRENCY: usize = 4;
/// Memory scenario: the longest wait for a restarted node to serve a linearizable read.
pub const RESTART_WAIT_MAX: Duration = Duration::from_secs(300);

const _: () = assert!(CONNECTIONS_PER_NODE > 0 && KEYS > 0 && FAILOVER_WRITERS > 0);
