//! Which cluster a node belongs to, and which life of its node id it is: the two facts that
//! keep a node from taking part in a cluster it does not belong to, or voting with a log it has
//! forgotten.
//!
//! A node gets its [`Identity`] once, when a cluster takes it in (the bootstrapping node makes
//! its own and gives one to each initial member; later members get theirs when a leader adds
//! them as learners), and keeps it for as long as its data directory lives. The cluster id is
//! random, made when the cluster is first formed; the incarnation is random, made by the node
//! when it joins, and recorded in the cluster's membership beside its addresses. Every Raft
//! message carries both: the sender's cluster id and the incarnation it believes the target has.
//! A node with an empty data directory has no identity, so it answers no Raft message at all;
//! one the cluster knows under an older incarnation learns, from the first message, that it was
//! a member and lost its data.
//!
//! Saved with a sync, in the same store as the vote: a node must never answer a Raft message
//! under an identity it could lose in a crash.

use serde::{Deserialize, Serialize};

use rand08::RngCore;

use crate::error::StoreError;
use crate::runtime::ThreadRng;
use crate::types::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster's id: 32 hexadecimal digits, random, made once when the cluster was formed.
    pub cluster: String,
    /// The node id this data directory was joined under.
    pub node: NodeId,
    /// This node's life under that id: random, never 0 (0 means "not known" in a message).
    pub incarnation: u64,
    /// Whether this node formed the cluster (drew its id) rather than joined it: only the
    /// node that drew an id may form a cluster under it.
    pub founded: bool,
}

impl Identity {
    /// A new cluster id (128 random bits, from the thread's generator: seeded in the
    /// simulation, so a seed replays the same ids).
    pub fn new_cluster_id() -> String {
        let mut rng = ThreadRng;
        format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
    }

    /// A new incarnation for `node` in `cluster`, which it joins.
    pub fn join(cluster: &str, node: NodeId) -> Identity {
        Identity { cluster: cluster.to_string(), node, incarnation: ThreadRng.next_u64().max(1), founded: false }
    }

    /// The identity of `node` forming a new cluster.
    pub fn found(node: NodeId) -> Identity {
        Identity { founded: true, ..Identity::join(&Identity::new_cluster_id(), node) }
    }
}

/// Where a node keeps its [`Identity`]: the log store, beside the vote.
pub trait IdentityStore: Send + Sync + 'static {
    fn load_identity(&self) -> Result<Option<Identity>, StoreError>;
    /// Durable (synced) before it returns.
    fn save_identity(&self, identity: &Identity) -> Result<(), StoreError>;
}
