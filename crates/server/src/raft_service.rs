//! The Raft transport, server side: the internal gRPC service on the Raft port.
//!
//! Each call decodes an openraft request, hands it to the local Raft instance and encodes the
//! `Result` back, so remote Raft errors reach the caller's openraft intact. With TLS the port
//! takes only peers with a certificate of the cluster CA (mutual TLS, and
//! `tls.peer_allowed_names`); when a cluster secret is configured, a call without it is refused
//! too; both before anything is decoded. This port's
//! own refusals (no secret, an undecodable payload) are `ServerError`s too, turned into
//! statuses by the one mapping in `error.rs`.
//!
//! Once the local Raft core has stopped (the node is leaving; see `serve_incoming` in `lib.rs`)
//! a Raft call is answered UNAVAILABLE `ShuttingDown` instead of with openraft's `Stopped`
//! error, so the caller's network reports this node unreachable: peers back off from it and
//! count it as no voter, until the listener closes.

use std::sync::Arc;

use openraft::error::RaftError;
use tonic::{Request, Response, Status};
use vexil_proto::vexil::raft::v1::RaftPayload;
use vexil_proto::vexil::raft::v1::raft_transport_server::RaftTransport;
use vexil_raft_store::{NodeId, codec};

use crate::error::ServerError;
use crate::identity::{CLUSTER_HEADER, INCARNATION_HEADER};
use crate::network::{ForwardReply, ReadIndexReply, SECRET_HEADER};
use crate::node::Node;

pub struct RaftService {
    pub node: Arc<Node>,
}

impl RaftService {
    /// Who may speak Raft here: with TLS, a peer whose certificate the cluster CA signed (the
    /// handshake checked that) holding one of `tls.peer_allowed_names` when set; with a cluster
    /// secret, one that sends it. Checked before anything is decoded.
    fn check_peer<T>(&self, req: &Request<T>) -> Result<(), ServerError> {
        if let Some(tls) = &self.node.tls {
            let chain = req.peer_certs();
            tls.peer_names()
                .allows(chain.as_deref().map(Vec::as_slice))
                .map_err(|why| ServerError::Unauthenticated(format!("not a peer of this cluster: {why}")))?;
        }
        let secret = &self.node.config.cluster.secret;
        if secret.is_empty() {
            return Ok(());
        }
        let given = req.metadata().get(SECRET_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        // Constant-time comparison: no early exit on the first differing byte.
        let same = given.len() == secret.len()
            && given.bytes().zip(secret.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same {
            Ok(())
        } else {
            Err(ServerError::Unauthenticated("missing or wrong cluster secret on the Raft port".into()))
        }
    }

    /// The peer checks, then the identity check (`identity.rs`); `replicating` for the calls
    /// only a leader sends.
    fn check_member<T>(&self, req: &Request<T>, replicating: bool) -> Result<(), ServerError> {
        self.check_peer(req)?;
        let header = |name| req.metadata().get(name).and_then(|v| v.to_str().ok());
        let incarnation = header(INCARNATION_HEADER).map(|v| v.parse::<u64>().unwrap_or(0));
        self.node.identity.check(header(CLUSTER_HEADER), incarnation, replicating)
    }

    fn decode<T: serde::de::DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, ServerError> {
        codec::decode(&req.into_inner().data)
            .map_err(|e| ServerError::invalid("data", format!("undecodable raft payload: {e}")))
    }

    fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
        let data = codec::encode(value).map_err(|e| ServerError::Internal(format!("cannot encode reply: {e}")))?;
        Ok(Response::new(RaftPayload { data }))
    }

    /// The local Raft's answer to a peer's Raft call, or `ShuttingDown` once the core stopped.
    fn raft_reply<T: serde::Serialize, E: serde::Serialize>(
        result: Result<T, RaftError<NodeId, E>>,
    ) -> Result<Response<RaftPayload>, Status> {
        // Stopped or failed alike: this node is going away, so peers count it unreachable
        // (and back off) instead of retrying a remote fatal error every heartbeat.
        if let Err(RaftError::Fatal(_)) = &result {
            return Err(ServerError::ShuttingDown.into());
        }
        Self::reply(&result)
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_member(&req, true)?;
        let rpc = Self::decode(req)?;
        Self::raft_reply(self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_member(&req, false)?;
        let rpc = Self::decode(req)?;
        Self::raft_reply(self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_member(&req, true)?;
        let rpc = Self::decode(req)?;
        Self::raft_reply(self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward_write(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_member(&req, false)?;
        let write = Self::decode(req)?;
        let reply = match self.node.write_local(write).await {
            Ok(Ok(resp)) => ForwardReply::Applied(resp),
            Ok(Err(leader)) => ForwardReply::NotLeader { leader },
            // A leader shutting down may have proposed the write before it stopped: to the
            // follower (and its client) the outcome is unknown, as after a timeout.
            Err(ServerError::WriteOutcomeUnknown(_) | ServerError::ShuttingDown) => ForwardReply::Timeout,
            Err(e) => ForwardReply::Failed(e.to_string()),
        };
        Self::reply(&reply)
    }

    async fn read_index(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_member(&req, false)?;
        let () = Self::decode(req)?;
        // Bounded like a write: the follower asking gives up after the same time.
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::from_millis(self.node.config.raft.write_timeout_ms);
        let reply = match self.node.leader_read_index(deadline).await {
            Ok(index) => ReadIndexReply::Index(index),
            Err(openraft::error::RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                ReadIndexReply::NotLeader { leader: f.leader_id.zip(f.leader_node) }
            }
            Err(e) => ReadIndexReply::Failed(e.to_string()),
        };
        Self::reply(&reply)
    }

    async fn join(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_peer(&req)?;
        let join = Self::decode(req)?;
        let reply = self.node.identity.join(&join).map_err(ServerError::from)?;
        Self::reply(&reply)
    }
}
