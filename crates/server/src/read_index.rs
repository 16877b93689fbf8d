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
//!
//! Where the index comes from is the caller's business ([`ReadIndexSource`], implemented by the
//! node: openraft on the leader, the leader over the Raft port elsewhere), so this module knows
//! nothing of the node, and the node owns one [`ReadGate`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{LeaderHint, ServerError};

/// Where read indexes come from, and the gate that batches and leases them.
pub trait ReadIndexSource: Send + Sync + 'static {
    /// The gate this source's reads go through (one per node).
    fn read_gate(&self) -> &ReadGate;
    /// One quorum-confirmed read index from the leader.
    fn read_index(&self) -> impl Future<Output = Result<u64, ServerError>> + Send;
}

/// Why a round failed, cloneable so one failure answers every read of the round.
#[derive(Debug, Clone)]
enum RoundError {
    NoLeader,
    NotLeader(Option<LeaderHint>),
    Unavailable(String),
}

impl RoundError {
    fn from_server(e: ServerError) -> Self {
        match e {
            ServerError::NoLeader => RoundError::NoLeader,
            ServerError::NotLeader(h) => RoundError::NotLeader(h),
            // Its cause, not its whole message: `into_server` wraps it in a ReadTimeout again.
            ServerError::ReadTimeout(_, cause) => RoundError::Unavailable(cause),
            other => RoundError::Unavailable(other.to_string()),
        }
    }

    fn into_server(self, timeout_ms: u64) -> ServerError {
        match self {
            RoundError::NoLeader => ServerError::NoLeader,
            RoundError::NotLeader(h) => ServerError::NotLeader(h),
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

/// The counters a gate keeps (registered in the node's metrics registry).
#[derive(Debug, Clone, Default)]
pub struct ReadCounters {
    pub rounds: Counter,
    pub renewals: Counter,
    pub expiries: Counter,
}

/// Per-node read state: the pending round and the lease.
pub struct ReadGate {
    lease_duration: Duration,
    /// Reported in the error of a read whose round failed.
    round_timeout_ms: u64,
    counters: ReadCounters,
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
    pub fn new(lease_duration: Duration, round_timeout_ms: u64, counters: ReadCounters) -> Self {
        ReadGate {
            lease_duration,
            round_timeout_ms,
            counters,
            rounds: Mutex::new(Rounds::default()),
            lease: Mutex::new(None),
            renewing: AtomicBool::new(false),
        }
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

/// A quorum-confirmed read index obtained by a round that began after this call.
pub async fn shared_read_index<S: ReadIndexSource>(source: &Arc<S>) -> Result<u64, ServerError> {
    let gate = source.read_gate();
    match join_next_round(source).await {
        Ok(result) => result.map_err(|e| e.into_server(gate.round_timeout_ms)),
        // `run_rounds` answers every waiter it takes; a waiter is dropped unanswered only when
        // the runtime drops that task: the node is stopping.
        Err(_) => Err(ServerError::ShuttingDown),
    }
}

fn join_next_round<S: ReadIndexSource>(source: &Arc<S>) -> oneshot::Receiver<Result<u64, RoundError>> {
    let (tx, rx) = oneshot::channel();
    let start = {
        let mut rounds = source.read_gate().rounds.lock().expect("read rounds lock poisoned");
        rounds.waiting.push(tx);
        !std::mem::replace(&mut rounds.in_flight, true)
    };
    if start {
        tokio::spawn(run_rounds(source.clone()));
    }
    rx
}

/// Runs rounds back to back while reads are waiting, one at a time.
async fn run_rounds<S: ReadIndexSource>(source: Arc<S>) {
    let gate = source.read_gate();
    loop {
        let batch = {
            let mut rounds = gate.rounds.lock().expect("read rounds lock poisoned");
            if rounds.waiting.is_empty() {
                rounds.in_flight = false;
                return;
            }
            std::mem::take(&mut rounds.waiting)
        };
        // The lease counts from before the request leaves this node.
        let sent_at = Instant::now();
        gate.counters.rounds.inc();
        let result = source.read_index().await.map_err(RoundError::from_server);
        if let Ok(index) = result {
            gate.record_lease(index, sent_at);
            gate.counters.renewals.inc();
        }
        for waiter in batch {
            let _ = waiter.send(result.clone());
        }
    }
}

/// The index a `lease` read must wait for: the lease's when it is valid (renewing it in the
/// background once half used), else a fresh round's — which fails the read, within about a
/// lease duration, when the lease cannot be renewed.
pub async fn lease_read_index<S: ReadIndexSource>(source: &Arc<S>) -> Result<u64, ServerError> {
    let gate = source.read_gate();
    let now = Instant::now();
    if let Some(index) = leased_index(source, now) {
        return Ok(index);
    }
    let wait = gate.lease_duration.max(Duration::from_millis(100));
    let rx = join_next_round(source);
    let failure = match tokio::time::timeout(wait, rx).await {
        Ok(Ok(Ok(index))) => return Ok(index),
        Ok(Ok(Err(e))) => e.into_server(gate.round_timeout_ms).to_string(),
        Ok(Err(_)) => "the read-index round was dropped".to_string(),
        Err(_) => format!("the leader did not confirm a read index within {} ms", wait.as_millis()),
    };
    gate.counters.expiries.inc();
    let expired_ms = gate
        .lease
        .lock()
        .expect("lease lock poisoned")
        .map(|l| now.saturating_duration_since(l.sent_at + gate.lease_duration).as_millis() as u64);
    Err(ServerError::LeaseExpired { expired_ms, cause: failure })
}

/// The lease's index while the lease is valid at `now`, renewing it in the background once half
/// used (one renewal at a time).
fn leased_index<S: ReadIndexSource>(source: &Arc<S>, now: Instant) -> Option<u64> {
    let gate = source.read_gate();
    let (lease, half_used) = gate.valid_lease(now)?;
    if half_used && !gate.renewing.swap(true, Ordering::AcqRel) {
        let source = source.clone();
        tokio::spawn(async move {
            let _ = shared_read_index(&source).await;
            source.read_gate().renewing.store(false, Ordering::Release);
        });
    }
    Some(lease.index)
}

/// For a readiness probe: the index a `lease` read would wait for now, or why there is none.
///
/// The same rule as [`lease_read_index`], and no more rounds: a valid lease answers with no
/// round trip (and is renewed as a read would renew it); otherwise the probe joins the next
/// shared round, which it starts only if none is pending, and gives up after `wait`. Unlike a
/// read, a failed probe is not counted as a refused lease read.
pub async fn probe_lease<S: ReadIndexSource>(source: &Arc<S>, wait: Duration) -> Result<u64, String> {
    if let Some(index) = leased_index(source, Instant::now()) {
        return Ok(index);
    }
    let gate = source.read_gate();
    match tokio::time::timeout(wait, join_next_round(source)).await {
        Ok(Ok(Ok(index))) => Ok(index),
        Ok(Ok(Err(e))) => Err(e.into_server(gate.round_timeout_ms).to_string()),
        Ok(Err(_)) => Err("the read-index round was dropped".to_string()),
        Err(_) => Err(format!("the leader did not confirm a read index within {} ms", wait.as_millis())),
    }
}
