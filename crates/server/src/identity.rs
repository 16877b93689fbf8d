//! Cluster membership identity on the Raft port: which cluster a message comes from, which life
//! of this node it is meant for, and the `Join` handshake that hands a new node both.
//!
//! The facts and why they exist are in `vexil_raft_store::identity`. The rules here:
//! - Every Raft call carries the sender's cluster id and the incarnation the sender's
//!   membership records for the target ([`CLUSTER_HEADER`], [`INCARNATION_HEADER`]).
//! - A node answers a Raft call only if both match its own identity. A node of another
//!   cluster (one left running from an earlier cluster on the same address) is refused, and
//!   refuses.
//! - A node with no identity (an empty data directory) answers none: it has not joined a
//!   cluster, so it may neither vote nor acknowledge. If a leader replicates to it under an
//!   incarnation, the cluster knows this node id as a member that had data: this node lost
//!   it. It must never vote with that forgotten log; it stops with the way back (remove, then
//!   add as a new learner).
//! - `Join` (sent when a cluster is formed, to each initial member, and when a learner is
//!   added) gives a node with no identity one: the cluster's id, and an incarnation the node
//!   draws itself and returns, to be recorded in the membership. Joining again the cluster it
//!   is in returns the same incarnation; joining another is refused.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::metadata::AsciiMetadataValue;
use vexil_raft_store::{Identity, IdentityStore, NodeId, StoreError};

use crate::error::ServerError;

/// Metadata header: the sender's cluster id, on every Raft call.
pub const CLUSTER_HEADER: &str = "x-vexil-cluster";
/// Metadata header: the target's incarnation as the sender's membership records it (absent
/// on `Join`, which is how a node gets one).
pub const INCARNATION_HEADER: &str = "x-vexil-incarnation";

/// `Join`: become a member of `cluster` as node `node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub cluster: String,
    pub node: NodeId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JoinReply {
    /// Joined (now or before): the incarnation to record in the membership.
    Joined { incarnation: u64 },
    /// Why not: it belongs to another cluster, or is another node id.
    Refused(String),
}

/// This node's identity, shared by the transport's both sides.
#[derive(Clone)]
pub struct NodeIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeId,
    store: Arc<dyn IdentityStore>,
    /// Read on every Raft call, both ways: checked in place, never cloned there.
    current: RwLock<Option<Current>>,
    /// Set by [`NodeIdentity::fail`].
    lost: watch::Sender<Option<String>>,
}

/// The identity with its cluster id ready to send as a header.
struct Current {
    identity: Identity,
    header: AsciiMetadataValue,
}

impl Current {
    /// `None` if the cluster id cannot be a header value (a peer's `Join` carrying garbage).
    fn new(identity: Identity) -> Option<Current> {
        let header = AsciiMetadataValue::try_from(identity.cluster.as_str()).ok()?;
        Some(Current { identity, header })
    }
}

/// Why a node cannot start on its data directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the data directory belongs to node {found} (of cluster {cluster}), but this node is configured as node \
         {configured}: start it with node_id = {found}, or give node {configured} its own data directory"
    )]
    OtherNode { found: NodeId, configured: NodeId, cluster: String },
    #[error(
        "the data directory of node {node} holds a Raft log or vote but no cluster identity: it was written by a \
         Vexil from before cluster ids, whose nodes cannot talk to this one. Back the cluster up with the old \
         version, form a new cluster with this one and restore into it (deploy/README.md, \"Backups\")"
    )]
    Unversioned { node: NodeId },
    #[error("the data directory's cluster id {0:?} is not valid")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NodeIdentity {
    /// The identity of node `node` on its store; `has_raft_state` says whether the store holds
    /// a log or a vote.
    pub fn open(node: NodeId, store: Arc<dyn IdentityStore>, has_raft_state: bool) -> Result<Self, IdentityError> {
        let current = store.load_identity()?;
        match &current {
            Some(id) if id.node != node => {
                return Err(IdentityError::OtherNode { found: id.node, configured: node, cluster: id.cluster.clone() });
            }
            None if has_raft_state => return Err(IdentityError::Unversioned { node }),
            _ => {}
        }
        let current = match current {
            None => None,
            Some(id) => {
                let cluster = id.cluster.clone();
                Some(Current::new(id).ok_or(IdentityError::Corrupt(cluster))?)
            }
        };
        let (lost, _) = watch::channel(None);
        Ok(NodeIdentity { inner: Arc::new(Inner { node, store, current: RwLock::new(current), lost }) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Current>> {
        self.inner.current.read().expect("identity lock poisoned")
    }

    pub fn current(&self) -> Option<Identity> {
        self.read().as_ref().map(|c| c.identity.clone())
    }

    /// The cluster this node belongs to, if it has joined one.
    pub fn cluster(&self) -> Option<String> {
        self.read().as_ref().map(|c| c.identity.cluster.clone())
    }

    /// The cluster id as the header every Raft call carries (cheap to clone).
    pub fn cluster_header(&self) -> Option<AsciiMetadataValue> {
        self.read().as_ref().map(|c| c.header.clone())
    }

    /// Makes this node the first member of a new cluster, or returns the identity it drew
    /// before (a node that crashed while forming its cluster forms the same one again). A node
    /// that joined a cluster forms none: two Raft groups would share one id.
    pub fn found(&self) -> Result<Identity, ServerError> {
        let mut current = self.inner.current.write().expect("identity lock poisoned");
        if let Some(Current { identity: id, .. }) = &*current {
            if !id.founded {
                return Err(ServerError::Identity(format!(
                    "node {} joined cluster {}; it cannot form another one",
                    id.node, id.cluster
                )));
            }
            return Ok(id.clone());
        }
        let id = Identity::found(self.inner.node);
        let fresh =
            Current::new(id.clone()).ok_or_else(|| ServerError::Internal("a drawn cluster id is not hex".into()))?;
        self.inner.store.save_identity(&id)?;
        tracing::info!(cluster = %id.cluster, "formed a new cluster id");
        *current = Some(fresh);
        Ok(id)
    }

    /// Answers a `Join` (the caller already passed the port's peer checks).
    pub fn join(&self, req: &JoinRequest) -> Result<JoinReply, StoreError> {
        if req.node != self.inner.node {
            return Ok(JoinReply::Refused(format!(
                "this is node {}, not node {}: check the address given for node {}",
                self.inner.node, req.node, req.node
            )));
        }
        let mut current = self.inner.current.write().expect("identity lock poisoned");
        match current.as_ref().map(|c| &c.identity) {
            Some(id) if id.cluster == req.cluster => Ok(JoinReply::Joined { incarnation: id.incarnation }),
            Some(id) => Ok(JoinReply::Refused(format!(
                "node {} belongs to cluster {}, not {}: if it is left from an earlier cluster, stop it or empty its \
                 data directory",
                id.node, id.cluster, req.cluster
            ))),
            None => {
                let id = Identity::join(&req.cluster, req.node);
                let Some(fresh) = Current::new(id.clone()) else {
                    return Ok(JoinReply::Refused(format!("{:?} is not a cluster id", req.cluster)));
                };
                self.inner.store.save_identity(&id)?;
                tracing::info!(cluster = %id.cluster, incarnation = id.incarnation, "joined a cluster");
                *current = Some(fresh);
                Ok(JoinReply::Joined { incarnation: id.incarnation })
            }
        }
    }

    /// Checks a Raft call's identity headers before anything in it is decoded. `replicating`
    /// is true for AppendEntries and InstallSnapshot: only a leader that counts this node as a
    /// member sends them.
    pub fn check(&self, cluster: Option<&str>, incarnation: Option<u64>, replicating: bool) -> Result<(), ServerError> {
        let refuse = |why: String| Err(ServerError::Identity(why));
        let current = self.read();
        let Some(Current { identity: mine, .. }) = current.as_ref() else {
            let (Some(cluster), Some(incarnation)) = (cluster, incarnation.filter(|i| *i != 0)) else {
                return refuse(format!("node {} has not joined a cluster", self.inner.node));
            };
            if replicating {
                let why = format!(
                    "a leader of cluster {cluster} replicates to this node as node {node} (incarnation \
                     {incarnation}), but this node's data directory is empty: it was a member and lost its data, and \
                     must not vote with a forgotten log. To bring it back: `vexilctl cluster remove {node}`, then \
                     start it with an empty data directory and `vexilctl cluster add-learner` it (and promote it). \
                     If no such cluster should exist, a node left from an earlier cluster is still running on a \
                     peer's address: stop it",
                    node = self.inner.node
                );
                self.fail(why.clone());
                return refuse(why);
            }
            return refuse(format!("node {} has not joined a cluster (its data directory is empty)", self.inner.node));
        };
        match cluster {
            Some(c) if c == mine.cluster => {}
            Some(c) => {
                return refuse(format!(
                    "a message of cluster {c}; node {} belongs to cluster {}",
                    mine.node, mine.cluster
                ));
            }
            None => {
                return refuse(format!(
                    "a Raft message without a cluster id; node {} belongs to cluster {}",
                    mine.node, mine.cluster
                ));
            }
        }
        match incarnation {
            Some(i) if i == mine.incarnation => Ok(()),
            i => refuse(format!(
                "a message for incarnation {} of node {}, which is incarnation {}: it was removed and added again; \
                 the sender's membership is older",
                i.unwrap_or(0),
                mine.node,
                mine.incarnation
            )),
        }
    }

    /// Stops the node, saying why: a leader showed that it lost its data, or it cannot form
    /// the cluster it was configured to. The first reason wins.
    pub fn fail(&self, why: String) {
        self.inner.lost.send_if_modified(|lost| {
            let first = lost.is_none();
            if first {
                tracing::error!("{why}");
                *lost = Some(why);
            }
            first
        });
    }

    /// Resolves, with the reason, once [`Self::fail`] was called.
    pub async fn failed(&self) -> String {
        let mut rx = self.inner.lost.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            Err(_) => None,
        };
        match why {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use vexil_raft_store::mem::MemDisk;

    use super::*;

    /// Node `node`'s identity over a fresh in-memory store (the simulation's), and the store.
    fn fresh(node: NodeId) -> (NodeIdentity, Arc<dyn IdentityStore>) {
        let (log, _, _) = MemDisk::default().open().expect("open");
        let store: Arc<dyn IdentityStore> = Arc::new(log);
        (NodeIdentity::open(node, store.clone(), false).expect("a fresh node"), store)
    }

    fn refused(r: Result<(), ServerError>) -> String {
        match r {
            Err(ServerError::Identity(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_data_directory_must_be_this_nodes_and_carry_an_identity() {
        let (id, store) = fresh(2);
        let joined = id.join(&JoinRequest { cluster: "c1".into(), node: 2 }).expect("join");
        assert!(matches!(joined, JoinReply::Joined { .. }));
        let Err(e) = NodeIdentity::open(3, store.clone(), true) else { panic!("node 3 opened node 2's data") };
        assert!(e.to_string().contains("belongs to node 2"), "{e}");
        assert!(NodeIdentity::open(2, store, true).is_ok(), "its own node opens it");
        let (log, _, _) = MemDisk::default().open().expect("open");
        let Err(e) = NodeIdentity::open(1, Arc::new(log), true) else { panic!("a log without identity opened") };
        assert!(matches!(e, IdentityError::Unversioned { node: 1 }), "{e}");
    }

    #[test]
    fn join_is_idempotent_and_refuses_another_cluster_or_node() {
        let (id, _) = fresh(2);
        let join = |cluster: &str, node| id.join(&JoinRequest { cluster: cluster.into(), node }).expect("join");
        let JoinReply::Joined { incarnation } = join("c1", 2) else { panic!("a fresh node joins") };
        assert_ne!(incarnation, 0);
        assert!(matches!(join("c1", 2), JoinReply::Joined { incarnation: again } if again == incarnation));
        assert!(matches!(join("c2", 2), JoinReply::Refused(why) if why.contains("belongs to cluster c1")));
        assert!(matches!(join("c1", 3), JoinReply::Refused(why) if why.contains("this is node 2, not node 3")));
        // A node that joined a cluster forms none under its id.
        let Err(ServerError::Identity(why)) = id.found() else { panic!("a joined node formed a cluster") };
        assert!(why.contains("joined cluster c1"), "{why}");
    }

    #[test]
    fn a_founder_keeps_its_id_across_calls() {
        let (id, store) = fresh(1);
        let first = id.found().expect("found");
        assert!(first.founded && first.cluster.len() == 32, "{first:?}");
        assert_eq!(id.found().expect("again"), first);
        assert_eq!(store.load_identity().expect("load"), Some(first), "saved before it is used");
    }

    #[tokio::test]
    async fn raft_calls_must_match_the_cluster_and_the_incarnation() {
        let (id, _) = fresh(2);
        // No identity: nothing is answered; a vote is refused quietly.
        assert!(refused(id.check(Some("c1"), Some(7), false)).contains("has not joined a cluster"));
        let JoinReply::Joined { incarnation } = id.join(&JoinRequest { cluster: "c1".into(), node: 2 }).expect("join")
        else {
            panic!("joins")
        };
        assert!(id.check(Some("c1"), Some(incarnation), true).is_ok());
        assert!(refused(id.check(Some("c2"), Some(incarnation), true)).contains("a message of cluster c2"));
        assert!(refused(id.check(None, Some(incarnation), false)).contains("without a cluster id"));
        assert!(refused(id.check(Some("c1"), Some(incarnation + 1), true)).contains("incarnation"));
        assert!(refused(id.check(Some("c1"), None, true)).contains("incarnation 0"));
    }

    #[tokio::test]
    async fn replication_to_an_empty_node_under_an_incarnation_stops_it() {
        let (id, _) = fresh(3);
        // A candidate's vote request does not stop it; a leader replicating to it does.
        refused(id.check(Some("c1"), Some(9), false));
        let stopped = tokio::time::timeout(std::time::Duration::from_millis(50), id.failed()).await;
        assert!(stopped.is_err(), "a vote request stopped the node");
        let why = refused(id.check(Some("c1"), Some(9), true));
        assert!(why.contains("vexilctl cluster remove 3"), "{why}");
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(1), id.failed()).await;
        assert_eq!(stopped.expect("stopped"), why);
        // Incarnation 0 (not known to the sender) stops nothing.
        let (id, _) = fresh(3);
        refused(id.check(Some("c1"), Some(0), true));
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), id.failed()).await.is_err());
    }
}
