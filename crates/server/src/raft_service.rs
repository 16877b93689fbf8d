//! The Raft transport, server side: the internal gRPC service on the Raft port.
//!
//! Each call decodes an openraft request, hands it to the local Raft instance and encodes the
//! `Result` back, so remote Raft errors reach the caller's openraft intact. When a cluster
//! secret is configured, a call without it is refused before anything is decoded. This port's
//! own refusals (no secret, an undecodable payload) are `ServerError`s too, turned into
//! statuses by the one mapping in `error.rs`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vexil_proto::vexil::raft::v1::RaftPayload;
use vexil_proto::vexil::raft::v1::raft_transport_server::RaftTransport;
use vexil_raft_store::codec;

use crate::error::ServerError;
use crate::network::{ForwardReply, ReadIndexReply, SECRET_HEADER};
use crate::node::Node;

pub struct RaftService {
    pub node: Arc<Node>,
}

impl RaftService {
    fn check_secret<T>(&self, req: &Request<T>) -> Result<(), ServerError> {
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

    fn decode<T: serde::de::DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, ServerError> {
        codec::decode(&req.into_inner().data)
            .map_err(|e| ServerError::invalid("data", format!("undecodable raft payload: {e}")))
    }

    fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
        let data = codec::encode(value).map_err(|e| ServerError::Internal(format!("cannot encode reply: {e}")))?;
        Ok(Response::new(RaftPayload { data }))
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_secret(&req)?;
        let rpc = Self::decode(req)?;
        Self::reply(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_secret(&req)?;
        let rpc = Self::decode(req)?;
        Self::reply(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_secret(&req)?;
        let rpc = Self::decode(req)?;
        Self::reply(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward_write(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_secret(&req)?;
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
        self.check_secret(&req)?;
        let () = Self::decode(req)?;
        let reply = match self.node.leader_read_index().await {
            Ok(index) => ReadIndexReply::Index(index),
            Err(openraft::error::RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                ReadIndexReply::NotLeader { leader: f.leader_id.zip(f.leader_node) }
            }
            Err(e) => ReadIndexReply::Failed(e.to_string()),
        };
        Self::reply(&reply)
    }
}
