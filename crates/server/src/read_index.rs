//! Read-index batching and the read lease: how a node (leader, follower or learner) makes a
//! read safe without a quorum round per read.
//!
//! **Batching.** A read index is a quorum-confirmed log index from the leader: every write
//! acknowledged before the request was sent has an index ≤ it. One round runs at a time per
//! node and serves every read that arrived before the round *began*; reads that arrive while a
//! round is in flight wait for the next one (the current round may have been sent before their
//! writes were acknowledged, so its index could miss them).
//!
//! **Lease.** Each successful round also renews the node's read lease: (index `R`, local
//! monotonic time `t` at which the round was *sent*), valid until `t + read_lease_ms`. While it is
//! valid, a `lease` read waits only for the local applied index to reach `R` and is served with
//! no round trip. It misses at most the writes acknowledged after `t`, so its staleness is
//! bounded by the lease duration, using only this node's clock rate — no clock agreement between
//! nodes. Once half the lease is used, a read triggers a background renewal, so a steady stream
//! of reads keeps the lease fresh. When the lease has expired and a renewal fails, the read fails
//! with UNAVAILABLE (`LEASE_EXPIRED`): a cut-off node never serves older data under `lease`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{LeaderHint, ServerError};
use crate::node::Node;

/// Why a round failed, cloneable so one failure answers every read of the round.
#[derive(Debug, Clone)]
pub enum RoundError {
    NoLeader,
    NotLeader(Option<LeaderHint>),
    ShuttingDown,
    Unavailable(String),
}

impl RoundError {
    fn from_server(e: ServerError) -> Self {
        match e {
            ServerError::NoLeader => RoundError::NoLeader,
            ServerError::NotLeader(h) => RoundError::NotLeader(h),
            ServerError::ShuttingDown => RoundError::ShuttingDown,
            other => RoundError::Unavailable(other.to_string()),
        }
    }

    fn into_server(self, timeout_ms: u64) -> ServerError {
        match self {
            RoundError::NoLeader => ServerError::NoLeader,
            RoundError::NotLeader(h) => ServerError::NotLeader(h),
            RoundError::ShuttingDown => ServerError::ShuttingDown,
            RoundError::Unavailable(msg) => ServerError::ReadTimeout(timeout_ms, msg),
        }
    }
}

type Waiter = oneshot::Sender<Result<u64, RoundError>>;

#[derive(Debug, Clone, Copy)]
struct Lease {
    index: u64,
    sent_at: Instant,
}

/// Per-node read state: the pending round and the lease.
pub struct ReadGate {
    lease_duration: Duration,
    rounds: Mutex<Rounds>,
    lease: Mutex<Option<Lease>>,
    renewing: AtomicBool,
}

#[derive(Default)]
struct Rounds {
    in_flight: bool,
    waiting: Vec<Waiter>,
}

impl ReadGate {
    pub fn new(lease_duration: Duration) -> Self {
        ReadGate {
            lease_duration,
            rounds: Mutex::new(Rounds::default()),
            lease: Mutex::new(None),
            renewing: AtomicBool::new(false),
        }
    }

    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    fn record_lease(&self, index: u64, sent_at: Instant) {
        let mut lease = self.lease.lock().expect("lease lock poisoned");
        let newer = lease.is_none_or(|l| sent_at > l.sent_at);
        if newer {
            *lease = Some(Lease { index: lease.map_or(index, |l| l.index.max(index)), sent_at });
        }
    }

    fn valid_lease(&self, now: Instant) -> Option<(Lease, bool)> {
        let lease = (*self.lease.lock().expect("lease lock poisoned"))?;
        let age = now.saturating_duration_since(lease.sent_at);
        (age < self.lease_duration).then_some((lease, age >= self.lease_duration / 2))
    }
}

impl Node {
    /// A quorum-confirmed read index obtained by a round that began after this call.
    pub async fn shared_read_index(self: &Arc<Self>) -> Result<u64, ServerError> {
        let rx = self.join_next_round();
        match rx.await {
            Ok(result) => result.map_err(|e| e.into_server(self.config.raft.write_timeout_ms)),
            // `run_rounds` answers every waiter it takes; a waiter is dropped unanswered only
            // when the runtime drops that task: the node is stopping.
            Err(_) => Err(ServerError::ShuttingDown),
        }
    }

    fn join_next_round(self: &Arc<Self>) -> oneshot::Receiver<Result<u64, RoundError>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut rounds = self.reads.rounds.lock().expect("read rounds lock poisoned");
            rounds.waiting.push(tx);
            !std::mem::replace(&mut rounds.in_flight, true)
        };
        if start {
            tokio::spawn(self.clone().run_rounds());
        }
        rx
    }

    /// Runs rounds back to back while reads are waiting, one at a time.
    async fn run_rounds(self: Arc<Self>) {
        loop {
            let batch = {
                let mut rounds = self.reads.rounds.lock().expect("read rounds lock poisoned");
                if rounds.waiting.is_empty() {
                    rounds.in_flight = false;
                    return;
                }
                std::mem::take(&mut rounds.waiting)
            };
            // The lease counts from before the request leaves this node.
            let sent_at = Instant::now();
            self.metrics.read_index_rounds.inc();
            let result = self.read_index().await.map_err(RoundError::from_server);
            if let Ok(index) = result {
                self.reads.record_lease(index, sent_at);
                self.metrics.lease_renewals.inc();
            }
            for waiter in batch {
                let _ = waiter.send(result.clone());
            }
        }
    }

    /// The index a `lease` read must wait for: the lease's when it is valid (renewing it in the
    /// background once half used), else a fresh round's — which fails the read, within about a
    /// lease duration, when the lease cannot be renewed.
    pub async fn lease_read_index(self: &Arc<Self>) -> Result<u64, ServerError> {
        if self.faults.lease_reads_skip_check {
            // Injected bug (simulation only): whatever this node has applied, however old.
            return Ok(*self.reader.applied_revision().borrow());
        }
        let now = Instant::now();
        if let Some((lease, half_used)) = self.reads.valid_lease(now) {
            if half_used && !self.reads.renewing.swap(true, Ordering::AcqRel) {
                let node = self.clone();
                tokio::spawn(async move {
                    let _ = node.shared_read_index().await;
                    node.reads.renewing.store(false, Ordering::Release);
                });
            }
            return Ok(lease.index);
        }
        let wait = self.reads.lease_duration.max(Duration::from_millis(100));
        let rx = self.join_next_round();
        let failure = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(index))) => return Ok(index),
            Ok(Ok(Err(e))) => e.into_server(self.config.raft.write_timeout_ms).to_string(),
            Ok(Err(_)) => "the read-index round was dropped".to_string(),
            Err(_) => format!("the leader did not confirm a read index within {} ms", wait.as_millis()),
        };
        self.metrics.lease_expiries.inc();
        let expired_ms = self
            .reads
            .lease
            .lock()
            .expect("lease lock poisoned")
            .map(|l| now.saturating_duration_since(l.sent_at + self.reads.lease_duration).as_millis() as u64);
        Err(ServerError::LeaseExpired { expired_ms, cause: failure })
    }
}
