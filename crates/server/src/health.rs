//! What a node says about its own health, decided once here and reported on every surface:
//! `/livez` and `/readyz` on the admin port (`admin.rs`), `grpc.health.v1` on the API port
//! (`api/health.rs`).
//!
//! - **Live**: the Raft core runs. Once it has stopped on its own (a storage failure, a panic)
//!   the node is dead whatever else still answers, and `/livez` fails; the node also exits then
//!   (`lib.rs`, "Fail-stop"), so a supervisor restarts it either way.
//! - **Ready**: the node would serve a `lease` read now, without waiting: it is a member, it is
//!   not leaving, it knows a leader, its read lease is valid (a leader it can reach confirmed a
//!   read index less than a lease ago) and it has applied up to that index. A probe reuses the
//!   lease that reads keep fresh, or joins the one shared read-index round (`read_index.rs`):
//!   probes add no quorum round of their own. A live node that is not ready (cut off from the
//!   leader, catching up, leaving) must be routed around, not restarted.

use std::sync::Arc;
use std::time::Duration;

use vexil_raft_store::NodeId;

use crate::limits::READY_CHECK_MS_MAX;
use crate::node::Node;
use crate::read_index;

/// Why a node is not live: how its Raft core stopped.
pub type CoreStop = openraft::error::Fatal<NodeId>;

/// A ready node: the leader it follows and the revision it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub leader: NodeId,
    pub applied: u64,
    /// The read index its lease (or the round the probe joined) confirmed.
    pub lease_index: u64,
}

/// Why the node is not live: how its Raft core stopped. `None` while the core runs.
pub fn why_not_live(node: &Node) -> Option<CoreStop> {
    node.raft_stopped()
}

/// `Ok` when the node would serve a lease read now; `Err` says why not, for a person. Takes at
/// most [`READY_CHECK_MS_MAX`].
pub async fn readiness(node: &Arc<Node>) -> Result<Ready, String> {
    if let Some(stop) = node.raft_stopped() {
        return Err(format!("the Raft core has stopped ({stop}); the node is exiting"));
    }
    if node.leaving.has_begun() {
        return Err("the node is shutting down".into());
    }
    let m = node.metrics();
    if m.membership_config.membership().get_node(&node.id).is_none() {
        return Err("this node is not a cluster member yet".into());
    }
    let Some(leader) = m.current_leader else { return Err("no leader is known".into()) };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(READY_CHECK_MS_MAX);
    let lease_index = read_index::probe_lease(node, Duration::from_millis(READY_CHECK_MS_MAX))
        .await
        .map_err(|why| format!("no valid read lease: {why}"))?;
    let mut applied = node.reader.applied_revision();
    let caught_up = tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= lease_index)).await.map(|r| r.is_ok());
    let applied_now = *applied.borrow();
    match caught_up {
        Ok(true) => Ok(Ready { leader, applied: applied_now, lease_index }),
        // The applied revision's sender goes away only with the state machine.
        Ok(false) => Err("the state machine has stopped".into()),
        Err(_) => Err(format!("applied revision {applied_now} is behind the leased read index {lease_index}")),
    }
}
