//! The one interface the scenarios drive, implemented for Vexil ([`super::vexil`]) and etcd
//! ([`super::etcd`]). A backend knows how to talk to ONE node; the scenarios decide which node
//! (leader or follower) each client uses.

use std::future::Future;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::security::Secure;

/// A read consistency level, named as each system names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Both systems: a read index confirmed by a quorum.
    Linearizable,
    /// Vexil: served locally under a read lease.
    Lease,
    /// Vexil: served locally, no check.
    Stale,
    /// etcd: served from the member's local state, no read index.
    Serializable,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Linearizable => "linearizable",
            Level::Lease => "lease",
            Level::Stale => "stale",
            Level::Serializable => "serializable",
        }
    }
}

/// What a node says about itself and its leader, in the system's own ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    pub self_id: u64,
    /// 0 when the node knows no leader.
    pub leader_id: u64,
}

/// A watch event as received: the revision it carries and when it arrived.
pub type Receipt = (u64, Instant);

/// A system under test, seen through one connection to one node.
pub trait Backend: Send + Sync + 'static {
    /// A connection to one node; cheap to clone (clones share the HTTP/2 connection).
    type Conn: Clone + Send + Sync + 'static;

    /// "vexil" or "etcd".
    const NAME: &'static str;
    /// The read levels this system offers, strongest first.
    const LEVELS: &'static [Level];

    /// One connection to `endpoint`: TLS with the client certificate and the login of `secure`
    /// when the cluster is secure (the same for both systems: [`super::security::channel`]).
    fn connect(endpoint: &str, secure: Option<&Secure>) -> impl Future<Output = anyhow::Result<Self::Conn>> + Send;

    /// Called once, when the nodes agree on a leader and before the keys are seeded, with a
    /// connection to the leader and every connection the scenarios will use: whatever the
    /// system needs before its clients can work. etcd in secure mode enables auth here and
    /// logs the connections in; nothing else needs it.
    fn prepare(leader: &Self::Conn, all: &[Self::Conn]) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = (leader, all);
        async { Ok(()) }
    }

    /// Creates the benchmark's keys, each with `value`.
    fn seed(conn: &Self::Conn, keys: &[String], value: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Writes `value` under `key`; returns the revision the write created. `request_id` is
    /// unique per attempt (Vexil records it for deduplication, as its client library does).
    fn write(
        conn: &Self::Conn,
        key: &str,
        value: String,
        request_id: String,
    ) -> impl Future<Output = anyhow::Result<u64>> + Send;

    /// Reads `key` at `level`.
    fn read(conn: &Self::Conn, key: &str, level: Level) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Watches every benchmark key from the node's current revision on: signals `ready` once
    /// the stream is established, then sends one [`Receipt`] per changed revision until the
    /// stream ends or `tx` is closed.
    fn watch(
        conn: &Self::Conn,
        ready: oneshot::Sender<()>,
        tx: mpsc::UnboundedSender<Receipt>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn status(conn: &Self::Conn) -> impl Future<Output = anyhow::Result<NodeStatus>> + Send;
}
