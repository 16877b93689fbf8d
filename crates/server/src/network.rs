//! The Raft transport, client side: openraft's `RaftNetwork` over tonic, plus the follower →
//! leader calls (forwarded writes and read-index requests).
//!
//! Every RPC is bounded by a timeout: TCP in a partition can swallow a response forever, and an
//! unbounded RPC would wedge replication to that peer. Channels are cached per address and
//! reconnect on their own.
//!
//! A node that is leaving ([`Leaving`]) asks for no vote and counts no vote answer: it can
//! neither start nor finish winning an election (see `Node::begin_leaving`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use vexil_proto::vexil::raft::v1::RaftPayload;
use vexil_proto::vexil::raft::v1::raft_transport_client::RaftTransportClient;
use vexil_raft_store::codec;
use vexil_raft_store::{NodeId, NodeInfo, Request, Response, TypeConfig};

use crate::identity::{CLUSTER_HEADER, INCARNATION_HEADER, JoinReply, JoinRequest, NodeIdentity};
use crate::shutdown::Leaving;

/// Metadata header carrying the cluster secret on every Raft RPC.
pub const SECRET_HEADER: &str = "x-vexil-cluster-secret";

/// A forwarded write's answer from the (supposed) leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    Applied(Response),
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    Timeout,
    Failed(String),
}

/// A read-index request's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum ReadIndexReply {
    Index(u64),
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    Failed(String),
}

/// Makes a lazily connecting channel to `host:port`: plain TCP in production, simulated
/// connections in the simulation.
pub type ChannelFactory = Arc<dyn Fn(&str, Duration) -> Result<Channel, String> + Send + Sync>;

/// Channels over TCP; over mutual TLS (`https://`, this node's certificate, only the cluster
/// CA trusted) when `tls` is given, so a node with TLS never dials a peer in plaintext.
pub fn tcp_channels(tls: Option<ClientTlsConfig>) -> ChannelFactory {
    Arc::new(move |addr, connect_timeout| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| e.to_string())?;
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| e.to_string())?;
        }
        let endpoint = endpoint
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_lazy())
    })
}

/// Channels to peers' Raft ports, shared by the Raft network and forwarding.
#[derive(Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    factory: ChannelFactory,
    secret: Arc<str>,
    identity: NodeIdentity,
    connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("rpc to {addr} failed: {message}")]
    Rpc { addr: String, message: String },
    #[error("rpc to {addr} timed out after {ms} ms")]
    Timeout { addr: String, ms: u128 },
    #[error("bad payload from {addr}: {message}")]
    Payload { addr: String, message: String },
    #[error("this node is leaving the cluster: it asks {addr} for no vote")]
    Leaving { addr: String },
}

impl Peers {
    pub fn new(secret: &str, identity: NodeIdentity, connect_timeout: Duration, factory: ChannelFactory) -> Self {
        Peers {
            channels: Arc::new(Mutex::new(HashMap::new())),
            factory,
            secret: secret.into(),
            identity,
            connect_timeout,
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        let mut map = self.channels.lock().expect("peer channel map lock poisoned");
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = (self.factory)(addr, self.connect_timeout)
            .map_err(|message| TransportError::Unreachable { addr: addr.into(), message })?;
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// One bounded unary call: encode `req`, call `method` on `addr` (whose incarnation this
    /// node's membership records as `incarnation`), decode the answer.
    pub async fn call<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        incarnation: u64,
        method: Method,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let data =
            codec::encode(req).map_err(|e| TransportError::Payload { addr: addr.into(), message: e.to_string() })?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(timeout);
        if !self.secret.is_empty() {
            let value = self.secret.parse().map_err(|_| TransportError::Payload {
                addr: addr.into(),
                message: "cluster secret is not a valid header value".into(),
            })?;
            request.metadata_mut().insert(SECRET_HEADER, value);
        }
        if let Some(cluster) = self.identity.cluster_header() {
            request.metadata_mut().insert(CLUSTER_HEADER, cluster);
        }
        if !matches!(method, Method::Join) {
            request.metadata_mut().insert(INCARNATION_HEADER, incarnation.into());
        }
        let mut client = RaftTransportClient::new(self.channel(addr)?).max_decoding_message_size(256 * 1024 * 1024);
        let call = async {
            match method {
                Method::AppendEntries => client.append_entries(request).await,
                Method::Vote => client.vote(request).await,
                Method::InstallSnapshot => client.install_snapshot(request).await,
                Method::ForwardWrite => client.forward_write(request).await,
                Method::ReadIndex => client.read_index(request).await,
                Method::Join => client.join(request).await,
            }
        };
        let reply = match tokio::time::timeout(timeout, call).await {
            Err(_) => return Err(TransportError::Timeout { addr: addr.into(), ms: timeout.as_millis() }),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(TransportError::Unreachable { addr: addr.into(), message: status.message().into() });
            }
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                return Err(TransportError::Timeout { addr: addr.into(), ms: timeout.as_millis() });
            }
            Ok(Err(status)) => {
                return Err(TransportError::Rpc {
                    addr: addr.into(),
                    message: format!("{:?}: {}", status.code(), status.message()),
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        codec::decode(&reply.data).map_err(|e| TransportError::Payload { addr: addr.into(), message: e.to_string() })
    }

    /// Forwards a write to the node believed to lead.
    pub async fn forward_write(
        &self,
        leader: &NodeInfo,
        req: &Request,
        timeout: Duration,
    ) -> Result<ForwardReply, TransportError> {
        self.call(&leader.raft_addr, leader.incarnation, Method::ForwardWrite, req, timeout).await
    }

    /// Asks the node believed to lead for a read index.
    pub async fn read_index(&self, leader: &NodeInfo, timeout: Duration) -> Result<ReadIndexReply, TransportError> {
        self.call(&leader.raft_addr, leader.incarnation, Method::ReadIndex, &(), timeout).await
    }

    /// Asks the node at `addr` to join this node's cluster as node `node`.
    pub async fn join(&self, addr: &str, req: &JoinRequest, timeout: Duration) -> Result<JoinReply, TransportError> {
        self.call(addr, 0, Method::Join, req, timeout).await
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
    ForwardWrite,
    ReadIndex,
    Join,
}

/// openraft's network factory: one [`PeerClient`] per target.
#[derive(Clone)]
pub struct Network {
    pub peers: Peers,
    /// Raised when this node leaves: vote requests stop.
    pub leaving: Leaving,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            peers: self.peers.clone(),
            leaving: self.leaving.clone(),
            target,
            addr: node.raft_addr.clone(),
            incarnation: node.incarnation,
        }
    }
}

pub struct PeerClient {
    peers: Peers,
    leaving: Leaving,
    target: NodeId,
    addr: String,
    incarnation: u64,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn send<Req, Resp, E>(&self, method: Method, req: &Req, timeout: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let result: Result<Resp, RaftError<NodeId, E>> =
            self.peers.call(&self.addr, self.incarnation, method, req, timeout).await.map_err(|e| match e {
                // Unreachable makes openraft back off before retrying this peer.
                TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// What openraft gets for a vote once this node is leaving: the peer "unreachable", so the
    /// vote is neither granted nor refused by it, and counts for nothing.
    fn leaving(&self) -> RPCError<NodeId, NodeInfo, RaftError<NodeId>> {
        RPCError::Unreachable(Unreachable::new(&TransportError::Leaving { addr: self.addr.clone() }))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.send(Method::AppendEntries, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.send(Method::InstallSnapshot, &rpc, option.hard_ttl()).await
    }

    /// Refused once this node is leaving, before sending and again when the answer arrives (so
    /// an answer to a request sent just before cannot complete an election either).
    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        if self.leaving.has_begun() {
            return Err(self.leaving());
        }
        let answer = self.send(Method::Vote, &rpc, option.hard_ttl()).await;
        if self.leaving.has_begun() {
            return Err(self.leaving());
        }
        answer
    }
}
