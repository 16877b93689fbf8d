//! The leader's write batcher: the writes that queue while earlier ones are in flight go to
//! Raft as ONE log entry.
//!
//! openraft 0.9 handles each `client_write` as its own log append, WAL sync, replication item
//! and state-machine apply, one after another on its core task; measured, that capped a leader
//! near 1,000 writes/s however many clients wrote (`benches/README.md`). etcd batches every
//! proposal that arrives during one Raft round instead. This does the same above openraft:
//!
//! - At most [`WRITE_BATCHES_IN_FLIGHT`] entries are being proposed at a time. A write that
//!   arrives while they are all busy waits in the queue, and the next entry carries every
//!   waiting write (up to [`WRITE_BATCH_REQUESTS_MAX`] requests or [`WRITE_BATCH_BYTES_MAX`]),
//!   so under load entries grow instead of queueing one by one, and an idle leader proposes a
//!   lone write at once, as it is (no wrapper, no added delay).
//! - A batch is a [`Command::Batch`]: the state machine applies its requests in order, each
//!   with its own deduplication record, audit entries and response, at one revision (the
//!   entry's log index). Each caller gets its own response; a failed compare-and-set in a batch
//!   fails only that request.
//! - Requests of concurrent callers carry no order between them, so grouping them changes no
//!   guarantee: a write is still acknowledged only after its entry is committed and applied.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, ForwardToLeader, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use vexil_raft_store::{Command, NodeId, NodeInfo, Outcome, Raft, Request, Response};

use crate::error::ServerError;
use crate::limits::{WRITE_BATCH_BYTES_MAX, WRITE_BATCH_REQUESTS_MAX, WRITE_BATCHES_IN_FLIGHT, WRITE_QUEUE_MAX};

/// What proposing a write on this node gave: the response, or, when this node does not lead,
/// the leader it knows of.
pub type Proposed = Result<Response, Option<(NodeId, NodeInfo)>>;

/// Why a proposal failed, in a form every caller of a batch can get a copy of.
#[derive(Debug, Clone)]
enum Failure {
    /// Not confirmed within the write timeout: the outcome is unknown.
    Timeout,
    /// openraft has stopped: the node is shutting down.
    ShuttingDown,
    /// openraft stopped on a fatal error (storage, panic).
    Fatal(String),
    /// A broken invariant (a bug).
    Internal(String),
}

impl Failure {
    fn into_server(self, timeout_ms: u64) -> ServerError {
        match self {
            Failure::Timeout => ServerError::WriteOutcomeUnknown(timeout_ms),
            Failure::ShuttingDown => ServerError::ShuttingDown,
            // The entry may still commit (followers count their own flushes) and this node is
            // about to stop (fail-stop): the honest answer is "retry elsewhere with the same
            // request_id", which applies it at most once. The cause goes to the log.
            Failure::Fatal(msg) => {
                tracing::error!(error = %msg, "raft stopped on a fatal error with a write in flight");
                ServerError::ShuttingDown
            }
            Failure::Internal(msg) => ServerError::Internal(msg),
        }
    }
}

type Reply = Result<Proposed, Failure>;

struct Pending {
    request: Request,
    bytes: usize,
    reply: oneshot::Sender<Reply>,
}

/// The handle writes are proposed through. Dropping the last one stops the batcher task once
/// the writes already queued are proposed.
pub struct WriteBatcher {
    queue: mpsc::Sender<Pending>,
    timeout: Duration,
}

impl WriteBatcher {
    /// Starts the batcher task on the current runtime. `timeout` bounds each write from when it
    /// is queued to when its entry is applied.
    pub fn start(raft: Raft, timeout: Duration) -> Self {
        let (queue, rx) = mpsc::channel(WRITE_QUEUE_MAX);
        tokio::spawn(run(raft, rx, timeout));
        Self { queue, timeout }
    }

    /// Proposes `request` on this node, in the next entry that has room. Returns once it is
    /// committed and applied, or with the leader to ask when this node does not lead.
    pub async fn propose(&self, request: Request) -> Result<Proposed, ServerError> {
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let (reply, rx) = oneshot::channel();
        let pending = Pending { bytes: request.approx_bytes(), request, reply };
        // The queue closes, or a reply is dropped unsent, only when the runtime drops the
        // batcher's tasks: the node is stopping. UNAVAILABLE, so clients retry on another node
        // (with the same request_id, in case the write was proposed before the drop).
        let outcome = tokio::time::timeout(self.timeout, async {
            self.queue.send(pending).await.map_err(|_| ServerError::ShuttingDown)?;
            rx.await.map_err(|_| ServerError::ShuttingDown)
        })
        .await;
        match outcome {
            Err(_) => Err(ServerError::WriteOutcomeUnknown(timeout_ms)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Ok(proposed))) => Ok(proposed),
            Ok(Ok(Err(failure))) => Err(failure.into_server(timeout_ms)),
        }
    }
}

async fn run(raft: Raft, mut queue: mpsc::Receiver<Pending>, timeout: Duration) {
    let in_flight = Arc::new(Semaphore::new(WRITE_BATCHES_IN_FLIGHT));
    // A write taken from the queue that did not fit the batch being built: it starts the next.
    let mut carried: Option<Pending> = None;
    loop {
        // Wait for a free slot BEFORE taking writes from the queue, so that everything that
        // arrives meanwhile goes into one entry.
        let Ok(slot) = in_flight.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH_REQUESTS_MAX {
            match queue.try_recv() {
                Ok(p) if bytes + p.bytes <= WRITE_BATCH_BYTES_MAX => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Ok(p) => {
                    carried = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose_batch(&raft, batch, timeout).await;
            drop(slot);
        });
    }
}

async fn propose_batch(raft: &Raft, mut batch: Vec<Pending>, timeout: Duration) {
    if batch.len() == 1 {
        let Pending { request, reply, .. } = batch.remove(0);
        let _ = reply.send(client_write(raft, request, timeout).await);
        return;
    }
    let (requests, replies): (Vec<Request>, Vec<oneshot::Sender<Reply>>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let count = requests.len();
    let wrapper = Request {
        request_id: String::new(),
        actor: String::new(),
        reason: String::new(),
        time_ms: requests.iter().map(|r| r.time_ms).max().unwrap_or_default(),
        command: Command::Batch { requests },
    };
    match client_write(raft, wrapper, timeout).await {
        Ok(Ok(Response { outcome: Ok(Outcome::Batch(responses)), .. })) if responses.len() == count => {
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok(Ok(response)));
            }
        }
        Ok(Ok(other)) => {
            // The state machine answers a batch with one response per request; anything else
            // is a bug, reported to every caller rather than guessed at.
            let msg = format!("a batch of {count} writes got an unexpected response: {other:?}");
            tracing::error!("{msg}");
            for reply in replies {
                let _ = reply.send(Err(Failure::Internal(msg.clone())));
            }
        }
        other => {
            for reply in replies {
                let _ = reply.send(other.clone());
            }
        }
    }
}

async fn client_write(raft: &Raft, request: Request, timeout: Duration) -> Reply {
    match tokio::time::timeout(timeout, raft.client_write(request)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Ok(resp)) => Ok(Ok(resp.data)),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader { leader_id, leader_node })))) => {
            Ok(Err(leader_id.zip(leader_node)))
        }
        Ok(Err(RaftError::APIError(e @ ClientWriteError::ChangeMembershipError(_)))) => {
            // Only membership changes can fail this way, and they do not go through here.
            Err(Failure::Internal(format!("a flag write was refused as a membership change: {e}")))
        }
        Ok(Err(RaftError::Fatal(Fatal::Stopped))) => Err(Failure::ShuttingDown),
        Ok(Err(RaftError::Fatal(fatal))) => Err(Failure::Fatal(fatal.to_string())),
    }
}
