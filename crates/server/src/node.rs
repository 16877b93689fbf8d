//! One Vexil node: storage, the Raft instance, the write path and the read barrier.
//!
//! Writes: a write is proposed on the leader through the write batcher (`batcher.rs`), which
//! groups the writes that queue while earlier ones are in flight into one Raft entry and
//! returns once that entry is committed by a quorum and applied locally; only then is the
//! client answered. A write that reaches a follower is forwarded to the leader over the Raft
//! port; if the leader is unknown or changes mid-flight the client gets UNAVAILABLE with a
//! leader hint and can retry with the same `request_id` (the state machine applies it at most
//! once).
//!
//! Reads: see [`Node::read_barrier`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use vexil_proto::v1::Consistency;
use vexil_raft_store::types::Vote;
use vexil_raft_store::{IdentityStore, NodeId, NodeInfo, Raft, Request, Response, StateReader, TypeConfig, WriteError};

use crate::batcher::{Proposed, WriteBatcher};
use crate::config::Config;
use crate::error::{LeaderHint, NodeError, ServerError};
use crate::identity::{JoinReply, JoinRequest, NodeIdentity};
use crate::metrics::Metrics;
use crate::network::{ChannelFactory, ForwardReply, Network, Peers, ReadIndexReply, tcp_channels};
use crate::read_index::{self, ReadCounters, ReadGate, ReadIndexSource};
use crate::shutdown::Leaving;

pub struct Node {
    pub id: NodeId,
    pub config: Config,
    pub raft: Raft,
    pub reader: StateReader,
    /// Which cluster this node belongs to, and which life of its id it is (`identity.rs`).
    pub identity: NodeIdentity,
    pub peers: Peers,
    pub reads: ReadGate,
    pub metrics: Metrics,
    /// Raised when the node starts leaving; see [`Node::begin_leaving`].
    pub leaving: Leaving,
    /// TLS material of every port (`[tls]`); `None` serves plaintext.
    pub tls: Option<crate::tls::Material>,
    /// Calls per second per principal (`auth.principal_requests_per_second`).
    pub rates: crate::auth::PrincipalRates,
    batcher: WriteBatcher,
    clock: Clock,
    pub(crate) faults: InjectedFaults,
}

/// Unix milliseconds now. Injected so the simulation can run on simulated time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// What a node runs on besides its configuration: storage, how it reaches peers, and a clock.
/// Production uses [`Node::start`] (RocksDB, TCP, the system clock); the simulation supplies
/// in-memory storage, simulated connections and simulated time.
pub struct Environment<LS, SM> {
    pub log_store: LS,
    pub state_machine: SM,
    pub reader: StateReader,
    pub channels: ChannelFactory,
    /// TLS for the node's ports; the channels must dial peers with it when set.
    pub tls: Option<crate::tls::Material>,
    pub clock: Clock,
    /// Bugs to inject; always [`InjectedFaults::default`] (none) outside the simulation.
    pub faults: InjectedFaults,
}

/// Known bugs the deterministic simulation injects to prove its checkers catch them. Not
/// reachable from configuration or the command line: only code that builds an [`Environment`]
/// itself (the simulation) can set them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InjectedFaults {
    /// Serve `lease` reads at the last applied index with no lease check at all.
    pub lease_reads_skip_check: bool,
    /// Serve `linearizable` reads at the last applied index, without a read-index round.
    pub linearizable_reads_skip_read_index: bool,
    /// Send watch `Progress` for whatever this node has applied, without confirming it through
    /// the read lease (a cut-off node keeps vouching for an old state).
    pub progress_skip_check: bool,
}

/// How often a node forming a cluster, or adding a learner, asks a member that has not
/// answered to join; how often it says whom it still waits for; the least time it gives one
/// join call (a first TLS handshake to a peer starting up is slow).
const JOIN_RETRY_INTERVAL: Duration = Duration::from_millis(300);
const JOIN_WAIT_LOG_INTERVAL: Duration = Duration::from_secs(5);
const JOIN_RPC_TIMEOUT_MS_MIN: u64 = 2_000;

/// How many times a write follows a changing leader before giving up.
const FORWARD_ATTEMPTS_MAX: usize = 3;

impl Node {
    /// Opens RocksDB storage under `data_dir` and starts the Raft instance over TCP (servers are
    /// started by the caller).
    pub async fn start(config: Config) -> Result<Arc<Node>, NodeError> {
        let (log_store, state_machine) = vexil_raft_store::open(&config.data_dir)?;
        let reader = StateReader::new(&state_machine);
        let tls = crate::tls::Material::load(&config.tls)?;
        let env = Environment {
            log_store,
            state_machine,
            reader,
            channels: tcp_channels(tls.as_ref().map(crate::tls::Material::raft_client)),
            tls,
            clock: system_clock(),
            faults: InjectedFaults::default(),
        };
        Self::start_with(config, env).await
    }

    /// Starts a node on the given storage, connections and clock.
    pub async fn start_with<LS, SM>(config: Config, env: Environment<LS, SM>) -> Result<Arc<Node>, NodeError>
    where
        LS: RaftLogStorage<TypeConfig> + IdentityStore + Clone,
        SM: RaftStateMachine<TypeConfig>,
    {
        let Environment { mut log_store, state_machine: mut sm, reader, channels, tls, clock, faults } = env;
        // A log this version cannot read (written before cluster ids) counts as state too.
        let has_raft_state = log_store.read_vote().await?.is_some()
            || log_store.get_log_state().await.map_or(true, |s| s.last_log_id.is_some());
        let identity = NodeIdentity::open(config.node_id, Arc::new(log_store.clone()), has_raft_state)?;
        Self::never_resume_leadership(config.node_id, &mut log_store).await?;
        Self::committed_covers_applied(&mut log_store, &mut sm).await?;
        let r = &config.raft;
        let raft_config = openraft::Config {
            cluster_name: "vexil".into(),
            heartbeat_interval: r.heartbeat_interval_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            install_snapshot_timeout: r.install_snapshot_timeout_ms,
            snapshot_max_chunk_size: r.snapshot_chunk_bytes,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: r.max_in_snapshot_log_to_keep,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate()?);
        let peers =
            Peers::new(&config.cluster.secret, identity.clone(), Duration::from_millis(r.rpc_timeout_ms), channels);
        let leaving = Leaving::default();
        let network = Network { peers: peers.clone(), leaving: leaving.clone() };
        let metrics = Metrics::new();
        let counters = ReadCounters {
            rounds: metrics.read_index_rounds.clone(),
            renewals: metrics.lease_renewals.clone(),
            expiries: metrics.lease_expiries.clone(),
        };
        let reads = ReadGate::new(Duration::from_millis(r.read_lease_ms), r.write_timeout_ms, counters);
        let raft = Raft::new(config.node_id, raft_config, network, log_store, sm).await?;
        let batcher = WriteBatcher::start(raft.clone(), Duration::from_millis(config.raft.write_timeout_ms));
        let rates =
            crate::auth::PrincipalRates::new(config.auth.principal_requests_per_second, config.tokens_enabled());
        let node = Arc::new(Node {
            id: config.node_id,
            config,
            raft,
            reader,
            identity,
            peers,
            reads,
            metrics,
            leaving,
            tls,
            rates,
            batcher,
            clock,
            faults,
        });
        node.bootstrap_if_configured().await?;
        Ok(node)
    }

    /// Forms the cluster from `cluster.initial_members`, exactly once: only the lowest listed
    /// id does it, in the background (it waits for every initial member to answer), and only
    /// if this node has never been initialised: openraft refuses to initialise a node with any
    /// log or vote, so a restart never re-bootstraps. A node that cannot form the cluster
    /// because a member belongs to another one stops, saying why ([`NodeIdentity::fail`]).
    async fn bootstrap_if_configured(self: &Arc<Self>) -> Result<(), NodeError> {
        if !self.config.cluster.bootstrap {
            return Ok(());
        }
        let members = self.config.initial_members()?;
        let lowest = members.iter().map(|(id, _)| *id).min();
        if lowest != Some(self.id) {
            return Ok(());
        }
        if self.raft.is_initialized().await? {
            tracing::info!("cluster already initialised; bootstrap skipped");
            return Ok(());
        }
        let node = self.clone();
        tokio::spawn(async move {
            // Ends when the node starts leaving: it must not form a cluster on its way out.
            let formed = tokio::select! {
                formed = node.initialize(members.into_iter().collect(), None) => formed,
                () = node.leaving.begun() => return,
            };
            match formed {
                Ok(()) => tracing::info!("initialised a new cluster"),
                Err(ServerError::AlreadyInitialized) => {
                    tracing::info!("cluster already initialised; bootstrap skipped")
                }
                Err(ServerError::Identity(why)) => node.identity.fail(format!(
                    "cannot form the cluster from cluster.initial_members: {why}. If these members formed a \
                     cluster before, this node lost its data and must rejoin it: `vexilctl cluster remove {id}`, then \
                     start it with an empty data directory, cluster.bootstrap = false, and `vexilctl cluster \
                     add-learner` it; if a member is left from an earlier cluster, stop it or empty its data directory",
                    id = node.id
                )),
                Err(e) => node.identity.fail(format!("cannot form the cluster from cluster.initial_members: {e}")),
            }
        });
        Ok(())
    }

    /// Forms a new cluster of `members` (this node among them), exactly once: this node draws
    /// the cluster id (or keeps the one it drew before a crash), every other member joins it and
    /// answers its incarnation, and only then does openraft write the first membership, with
    /// those incarnations. Waits for members that do not answer for `patience` (`None`: for
    /// ever); a member that refuses (it belongs to another cluster) fails it at once.
    pub async fn initialize(
        &self,
        mut members: BTreeMap<NodeId, NodeInfo>,
        patience: Option<Duration>,
    ) -> Result<(), ServerError> {
        if self.raft.is_initialized().await? {
            return Err(ServerError::AlreadyInitialized);
        }
        if !members.contains_key(&self.id) {
            return Err(ServerError::invalid("members", format!("must include this node ({})", self.id)));
        }
        let me = self.identity.found()?;
        let deadline = patience.map(|p| tokio::time::Instant::now() + p);
        // All at once: a member that refuses (another cluster's) fails the formation even
        // while another one does not answer yet.
        let joins = members.iter().filter(|(id, _)| **id != self.id).map(|(id, info)| async move {
            Ok::<_, ServerError>((*id, self.join_member(*id, &info.raft_addr, deadline).await?))
        });
        let joined: BTreeMap<NodeId, u64> = futures::future::try_join_all(joins).await?.into_iter().collect();
        for (id, info) in members.iter_mut() {
            info.incarnation = if *id == self.id { me.incarnation } else { joined.get(id).copied().unwrap_or(0) };
        }
        self.initialize_raft(members).await
    }

    /// Has the node at `addr` join this node's cluster as node `id`; its incarnation. Retries
    /// an unreachable node until `deadline` (`None`: for ever), logging whom it waits for.
    async fn join_member(
        &self,
        id: NodeId,
        addr: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<u64, ServerError> {
        let cluster = self.identity.cluster().ok_or_else(|| ServerError::Internal("joining before founding".into()))?;
        let req = JoinRequest { cluster, node: id };
        let per_call = Duration::from_millis(self.config.raft.rpc_timeout_ms.max(JOIN_RPC_TIMEOUT_MS_MIN));
        let started = tokio::time::Instant::now();
        let mut logged = started;
        loop {
            // Each call within what is left of the deadline.
            let left = deadline.map_or(per_call, |d| d.saturating_duration_since(tokio::time::Instant::now()));
            let why = match self.peers.join(addr, &req, per_call.min(left).max(JOIN_RETRY_INTERVAL)).await {
                Ok(JoinReply::Joined { incarnation }) => return Ok(incarnation),
                Ok(JoinReply::Refused(why)) => {
                    return Err(ServerError::Identity(format!("node {id} at {addr} refused to join: {why}")));
                }
                Err(e) => e.to_string(),
            };
            let now = tokio::time::Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(ServerError::PeerUnreachable(format!("node {id} at {addr} did not answer a join: {why}")));
            }
            if now.duration_since(logged) >= JOIN_WAIT_LOG_INTERVAL {
                logged = now;
                tracing::warn!(node = id, addr, waited_s = now.duration_since(started).as_secs(), error = %why, "waiting for a member to join");
            }
            tokio::time::sleep(JOIN_RETRY_INTERVAL).await;
        }
    }

    async fn initialize_raft(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<(), ServerError> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Err(ServerError::AlreadyInitialized),
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(ServerError::invalid("members", e.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(fatal.into()),
        }
    }

    /// Unix milliseconds on this node's clock (stamped into proposed writes).
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    pub fn metrics(&self) -> RaftMetrics<NodeId, NodeInfo> {
        self.raft.metrics().borrow().clone()
    }

    /// The leader this node knows of, with its addresses.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let info = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, info))
    }

    fn hint(leader: Option<(NodeId, NodeInfo)>) -> ServerError {
        match leader {
            Some((id, info)) => ServerError::NotLeader(Some(LeaderHint { id, api_addr: info.api_addr })),
            None => ServerError::NoLeader,
        }
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.config.raft.write_timeout_ms)
    }

    /// Proposes `req` on this node if it leads (batched with other writes; see `batcher.rs`).
    pub async fn write_local(&self, req: Request) -> Result<Proposed, ServerError> {
        self.batcher.propose(req).await
    }

    /// Proposes a write, forwarding it to the leader when this node does not lead. Returns once
    /// the write is committed and applied on the leader.
    pub async fn write(&self, req: Request) -> Result<(Response, NodeId), ServerError> {
        let result = self.write_inner(req).await;
        self.metrics.write(result.as_ref().is_ok_and(|(r, _)| r.outcome.is_ok()));
        result
    }

    async fn write_inner(&self, req: Request) -> Result<(Response, NodeId), ServerError> {
        // While a NOSPACE alarm stands here, a write that would grow the state is refused before
        // it is proposed: a refusal must not grow the log either. (Apply decides again, for
        // writes proposed before the alarm applied on the leader.)
        if self.reader.alarms_standing() {
            let (revision, alarms) = self.reader.alarms()?;
            if !req.command.allowed_under_alarms(&alarms) {
                return Ok((Response { revision, outcome: Err(WriteError::no_space(&alarms)) }, self.id));
            }
        }
        // A node removed from the cluster (a leader that removed itself included) hears from
        // no leader again and can no longer commit, yet must still reach the cluster (to audit
        // its own removal): it asks a voter of the membership it was removed by.
        let mut leader = if self.removed() {
            self.another_voter()
        } else {
            match self.write_local(req.clone()).await? {
                Ok(resp) => return Ok((resp, self.id)),
                // Not knowing the leader (an election), ask a voter.
                Err(leader) => leader.or_else(|| self.another_voter()),
            }
        };
        for _ in 0..FORWARD_ATTEMPTS_MAX {
            let Some((leader_id, info)) = leader.clone() else { return Err(ServerError::NoLeader) };
            if leader_id == self.id {
                // Metrics lag behind elections by a moment; ask our own Raft again.
                match self.write_local(req.clone()).await? {
                    Ok(resp) => return Ok((resp, self.id)),
                    Err(next) => {
                        leader = next;
                        continue;
                    }
                }
            }
            match self.peers.forward_write(&info, &req, self.write_timeout()).await {
                Ok(ForwardReply::Applied(resp)) => return Ok((resp, leader_id)),
                Ok(ForwardReply::NotLeader { leader: next }) => leader = next,
                Ok(ForwardReply::Timeout) => {
                    return Err(ServerError::WriteOutcomeUnknown(self.config.raft.write_timeout_ms));
                }
                Ok(ForwardReply::Failed(msg)) => {
                    // The leader's openraft failed, or it hit a bug: it needs an operator.
                    return Err(ServerError::RaftFailed(format!(
                        "the leader (node {leader_id}) failed the write: {msg}"
                    )));
                }
                Err(e) => {
                    // The request may or may not have reached the leader: only a retry with the
                    // same request_id is safe, so say so.
                    tracing::warn!(error = %e, leader = leader_id, "forwarding a write failed");
                    return Err(ServerError::WriteOutcomeUnknown(self.config.raft.write_timeout_ms));
                }
            }
        }
        Err(Self::hint(leader))
    }

    /// Whether the latest membership this node knows has voters but not this node.
    fn removed(&self) -> bool {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        membership.voter_ids().next().is_some() && membership.get_node(&self.id).is_none()
    }

    /// A voter of the current membership other than this node, if there is one.
    fn another_voter(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .find(|id| *id != self.id)
            .and_then(|id| membership.get_node(&id).map(|info| (id, info.clone())))
    }

    /// openraft's read index on the leader: `max(committed, first log id of this leadership)`,
    /// confirmed by a quorum. `Err` carries openraft's answer when this node does not lead.
    ///
    /// A confirmation round that did not hear from a quorum in time (followers slow to answer
    /// a heartbeat on a loaded machine) is tried again, a heartbeat interval later, until
    /// `deadline`: a read waits for a quorum as long as a write would, instead of failing at the
    /// first slow round. Losing leadership or a fatal error ends it at once.
    pub async fn leader_read_index(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<u64, RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>>> {
        let pause = Duration::from_millis(self.config.raft.heartbeat_interval_ms);
        loop {
            match self.raft.get_read_log_id().await {
                Ok((read_log_id, _applied)) => return Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))
                    if tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes a node that led before it stopped start as a follower that must win a new election.
    ///
    /// openraft resumes leading at once, in the same term, when the stored vote is this node's
    /// committed vote. But entries a leader acknowledged may be committed on followers while its
    /// own copy was never synced, so after a machine crash its log can lack acknowledged entries:
    /// resuming in the same term it would serve read indexes that miss them, and propose new
    /// entries under log ids the followers already hold with other contents. Downgrading the
    /// stored vote to an uncommitted one for the same term (this node still voted for itself in
    /// that term, so it grants no other vote in it) forces a new election in a higher term, whose
    /// winner holds every committed entry and commits its own first entry before serving reads.
    /// Found by the deterministic simulation (`tests/sim`, `crashes.rs`).
    async fn never_resume_leadership<LS: RaftLogStorage<TypeConfig>>(
        id: NodeId,
        log_store: &mut LS,
    ) -> Result<(), NodeError> {
        if let Some(vote) = log_store.read_vote().await?
            && vote.is_committed()
            && vote.leader_id().voted_for() == Some(id)
        {
            log_store.save_vote(&Vote::new(vote.leader_id().term, id)).await?;
            tracing::info!(node_id = id, term = vote.leader_id().term, "led before stopping; will stand for election");
        }
        Ok(())
    }

    /// Raises the stored commit index to what the state machine has applied or snapshotted.
    ///
    /// The commit index is saved without a sync, while a snapshot file is synced on its own, so
    /// after a machine crash the snapshot (or the state installed from it) can cover entries past
    /// the stored commit index. Those entries were committed (only committed entries are
    /// applied), so this restores a fact, and openraft's startup invariant `snapshot <=
    /// committed` holds. Found by the deterministic simulation (`snapshot_catchup.rs`).
    async fn committed_covers_applied<LS, SM>(log_store: &mut LS, sm: &mut SM) -> Result<(), NodeError>
    where
        LS: RaftLogStorage<TypeConfig>,
        SM: RaftStateMachine<TypeConfig>,
    {
        let (applied, _) = sm.applied_state().await?;
        let snapshot = sm.get_current_snapshot().await?.and_then(|s| s.meta.last_log_id);
        let covered = applied.max(snapshot);
        if covered > log_store.read_committed().await? {
            log_store.save_committed(covered).await?;
        }
        Ok(())
    }

    /// A quorum-confirmed read index from the leader (this node or, for followers and learners,
    /// the leader over the Raft port).
    pub async fn read_index(&self) -> Result<u64, ServerError> {
        let timeout = self.write_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.leader_read_index(deadline)).await {
            Err(_) => {
                return Err(ServerError::ReadTimeout(
                    self.config.raft.write_timeout_ms,
                    "leadership was not confirmed".into(),
                ));
            }
            Ok(Ok(index)) => return Ok(index),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {}
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                return Err(ServerError::ReadTimeout(self.config.raft.write_timeout_ms, e.to_string()));
            }
            Ok(Err(RaftError::Fatal(fatal))) => return Err(fatal.into()),
        }
        let Some((leader_id, info)) = self.leader() else { return Err(ServerError::NoLeader) };
        if leader_id == self.id {
            return Err(ServerError::NoLeader);
        }
        match self.peers.read_index(&info, timeout).await {
            Ok(ReadIndexReply::Index(i)) => Ok(i),
            Ok(ReadIndexReply::NotLeader { leader }) => Err(Self::hint(leader)),
            Ok(ReadIndexReply::Failed(msg)) => Err(ServerError::ReadTimeout(self.config.raft.write_timeout_ms, msg)),
            Err(e) => Err(ServerError::ReadTimeout(
                self.config.raft.write_timeout_ms,
                format!("the leader is unreachable: {e}"),
            )),
        }
    }

    /// Waits until this node has applied `revision`, within the read timeout.
    pub async fn wait_applied(&self, revision: u64) -> Result<(), ServerError> {
        let mut rx = self.reader.applied_revision();
        let timeout = self.write_timeout();
        let result =
            tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= revision)).await.map(|r| r.is_ok());
        match result {
            Ok(true) => Ok(()),
            // The applied revision's sender goes away only with the state machine.
            Ok(false) => Err(ServerError::ShuttingDown),
            Err(_) => Err(ServerError::ReadTimeout(
                self.config.raft.write_timeout_ms,
                format!(
                    "this node has applied revision {} and revision {revision} did not arrive in time",
                    *rx.borrow()
                ),
            )),
        }
    }

    /// Makes a read safe at `requested` consistency (or `default` when unspecified), then waits
    /// for `min_revision`. Returns the level actually used. See `read_index.rs`.
    ///
    /// - LINEARIZABLE: a read index from a round that began after the read arrived, then wait
    ///   until applied.
    /// - LEASE: the read lease's index while the lease is valid (no round trip), else a fresh
    ///   round; UNAVAILABLE when the lease has expired and cannot be renewed.
    /// - STALE: no check.
    pub async fn read_barrier(
        self: &Arc<Self>,
        requested: Consistency,
        default: Consistency,
        min_revision: u64,
    ) -> Result<Consistency, ServerError> {
        let level = if requested == Consistency::Unspecified { default } else { requested };
        let used = match level {
            Consistency::Stale => Consistency::Stale,
            Consistency::Lease => {
                let index = if self.faults.lease_reads_skip_check {
                    // Injected bug (simulation only): whatever this node has applied, however old.
                    *self.reader.applied_revision().borrow()
                } else {
                    read_index::lease_read_index(self).await?
                };
                self.wait_applied(index).await?;
                Consistency::Lease
            }
            Consistency::Linearizable | Consistency::Unspecified => {
                let index = if self.faults.linearizable_reads_skip_read_index {
                    // Injected bug (simulation only): a follower's local state taken as current.
                    *self.reader.applied_revision().borrow()
                } else {
                    read_index::shared_read_index(self).await?
                };
                self.wait_applied(index).await?;
                Consistency::Linearizable
            }
        };
        if min_revision > 0 {
            self.wait_applied(min_revision).await?;
        }
        self.metrics.read(match used {
            Consistency::Stale => "stale",
            Consistency::Lease => "lease",
            _ => "linearizable",
        });
        Ok(used)
    }

    /// Changes the voter set through joint consensus (new voters must be learners already).
    pub async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, NodeInfo>,
        retain: bool,
    ) -> Result<u64, ServerError> {
        match self.raft.change_membership(change, retain).await {
            Ok(resp) => Ok(resp.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Self::hint(f.leader_id.zip(f.leader_node)))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ServerError::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(fatal.into()),
        }
    }

    /// Adds a learner: the leader first has it join (it must have an empty data directory or
    /// already be in this cluster), then records it with its incarnation. A node already a
    /// member keeps the incarnation it has.
    pub async fn add_learner(&self, id: NodeId, mut info: NodeInfo, blocking: bool) -> Result<u64, ServerError> {
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return Err(Self::hint(self.leader()));
        }
        info.incarnation = match m.membership_config.membership().get_node(&id) {
            // openraft keeps a member's recorded addresses: the same request again is a no-op,
            // anything else needs the member removed first.
            Some(known) if known.api_addr == info.api_addr && known.raft_addr == info.raft_addr => known.incarnation,
            Some(known) => {
                return Err(ServerError::Membership(format!(
                    "node {id} is already a member at {known}; to add it again (new addresses, or an emptied data \
                     directory), remove it first"
                )));
            }
            None => {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.raft.write_timeout_ms);
                self.join_member(id, &info.raft_addr, Some(deadline)).await?
            }
        };
        match self.raft.add_learner(id, info, blocking).await {
            Ok(resp) => Ok(resp.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Self::hint(f.leader_id.zip(f.leader_node)))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ServerError::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(fatal.into()),
        }
    }

    /// Removes a node: a voter is first demoted (joint consensus), then the learner dropped.
    pub async fn remove_node(&self, id: NodeId) -> Result<u64, ServerError> {
        let membership = self.metrics().membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ServerError::Membership(format!(
                    "node {id} is the last voter; removing it would destroy the cluster"
                )));
            }
            // `retain = false`: the demoted voter is dropped from the membership entirely.
            self.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false).await
        } else if membership.get_node(&id).is_some() {
            self.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false).await
        } else {
            Err(ServerError::Membership(format!("node {id} is not a member")))
        }
    }

    /// Takes this node out of elections for good and ends its watch streams: step 2 of leaving
    /// (the whole sequence is on `serve_incoming` in `lib.rs`).
    ///
    /// openraft 0.9 has no "leave" and no leadership transfer, but it lets a node stop running
    /// for leader: `runtime_config().elect(false)` keeps its election timer from making it a
    /// candidate. That does not stop an election already under way, nor `trigger().elect()`,
    /// so the Raft network also refuses, from now on, to send a vote request or to return a
    /// vote answer (`network.rs`): this node can neither start nor finish winning an election.
    /// It still grants votes and follows (or, if it leads, leads) until Raft shuts down.
    pub fn begin_leaving(&self) {
        self.raft.runtime_config().elect(false);
        self.leaving.begin();
    }

    /// How the Raft core stopped, once it has (on its own or because the node is leaving).
    ///
    /// openraft records why in its metrics (`running_state`) as the core stops; a core that
    /// panicked drops its metrics sender without saying, which counts as a panic.
    pub fn raft_stopped(&self) -> Option<openraft::error::Fatal<NodeId>> {
        let rx = self.raft.metrics();
        if let Err(stop) = &rx.borrow().running_state {
            return Some(stop.clone());
        }
        rx.has_changed().is_err().then_some(openraft::error::Fatal::Panicked)
    }

    /// Resolves once the Raft core has stopped, with why (see [`Node::raft_stopped`]).
    pub async fn raft_stops(&self) -> openraft::error::Fatal<NodeId> {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(stop) = &rx.borrow_and_update().running_state {
                return stop.clone();
            }
            if rx.changed().await.is_err() {
                return rx.borrow().running_state.clone().err().unwrap_or(openraft::error::Fatal::Panicked);
            }
        }
    }

    pub fn role(&self) -> &'static str {
        match self.metrics().state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
    }
}

impl ReadIndexSource for Node {
    fn read_gate(&self) -> &ReadGate {
        &self.reads
    }

    fn read_index(&self) -> impl std::future::Future<Output = Result<u64, ServerError>> + Send {
        Node::read_index(self)
    }
}
