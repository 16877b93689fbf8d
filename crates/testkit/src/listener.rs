//! The sockets a `vexil` node listens on, each declared once: its command-line flag and whether
//! every test node opens it. [`crate::Cluster`] gives every listener a node opens a port from
//! [`crate::free_port`] and passes `<flag> 127.0.0.1:<port>`; tests reach it with
//! [`crate::Cluster::addr`] or [`crate::Cluster::port`]. A new listener is a new variant here (and
//! an entry in [`Listener::ALL`]); nothing else in the workspace changes.

/// One listener of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Listener {
    /// The client API (gRPC: flags, audit, cluster, watch, evaluation).
    Api,
    /// Raft between the nodes.
    Raft,
    /// HTTP: `/livez`, `/readyz`, `/metrics`.
    Admin,
    /// OpenFeature providers: flagd's evaluation protocol (gRPC) and OFREP (HTTP).
    OpenFeature,
}

impl Listener {
    pub const ALL: [Listener; 4] = [Listener::Api, Listener::Raft, Listener::Admin, Listener::OpenFeature];

    /// The `vexil` flag that sets its address.
    pub fn flag(self) -> &'static str {
        match self {
            Listener::Api => "--api-listen",
            Listener::Raft => "--raft-listen",
            Listener::Admin => "--admin-listen",
            Listener::OpenFeature => "--openfeature-listen",
        }
    }

    /// Whether every node opens it; the others only when a cluster asks for them
    /// ([`crate::ClusterBuilder::listener`]).
    pub fn always(self) -> bool {
        match self {
            Listener::Api | Listener::Raft => true,
            Listener::Admin | Listener::OpenFeature => false,
        }
    }
}
