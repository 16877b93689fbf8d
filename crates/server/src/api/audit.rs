//! `vexil.v1.Audit`: listing the hash-chained audit log, and cutting it behind a checkpoint
//! (`retention.rs`).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vexil_proto::v1 as pb;
use vexil_proto::v1::audit_server::Audit;
use vexil_proto::v1::{CompactAuditRequest, CompactAuditResponse, Consistency, ListAuditRequest, ListAuditResponse};
use vexil_raft_store::{AuditQuery, Outcome};

use super::{check_key, check_namespace, page_size, read_barrier, request, write_header};
use crate::auth::caller;
use crate::error::ServerError;
use crate::limits::LIST_RESPONSE_BYTES_MAX;
use crate::node::Node;
use vexil_model::access::Need;

pub struct AuditApi {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Audit for AuditApi {
    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace, key = %req.get_ref().key))]
    async fn list_audit(&self, req: Request<ListAuditRequest>) -> Result<Response<ListAuditResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        // One namespace's history is that namespace's to read; the whole log (tokens,
        // membership, every namespace) is the admin's. History names principals and reasons:
        // never for a caller without a token, even of a namespace open to anonymous read.
        who.check(Need::AnyRole)?;
        who.check(if r.namespace.is_empty() { Need::Admin } else { Need::Read(&r.namespace) })?;
        if !r.namespace.is_empty() {
            check_namespace(&r.namespace)?;
        }
        if !r.key.is_empty() {
            if r.namespace.is_empty() {
                return Err(ServerError::invalid("namespace", "is required when `key` is given").into());
            }
            check_key(&r.key)?;
        }
        if r.to_revision != 0 && r.to_revision < r.from_revision {
            return Err(ServerError::invalid("to_revision", "must not be below from_revision").into());
        }
        let header = read_barrier(&self.node, r.read, Consistency::Linearizable).await?;
        let query = AuditQuery {
            from_revision: r.from_revision,
            to_revision: (r.to_revision != 0).then_some(r.to_revision),
            namespace: r.namespace,
            key: r.key,
            after_seq: r.after_seq,
            limit: page_size(r.limit),
            bytes_max: Some(LIST_RESPONSE_BYTES_MAX),
        };
        let page = self.node.reader.list_audit(&query).map_err(ServerError::from)?;
        Ok(Response::new(ListAuditResponse {
            header: header(page.revision),
            entries: page.entries.into_iter().map(pb::AuditEntry::from).collect(),
            more: page.more,
            checkpoint: page.checkpoint.map(pb::AuditCheckpoint::from),
        }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, through_seq = req.get_ref().through_seq))]
    async fn compact_audit(&self, req: Request<CompactAuditRequest>) -> Result<Response<CompactAuditResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        if r.through_seq == 0 {
            return Err(ServerError::invalid("through_seq", "must be at least 1 (the first entry to remove)").into());
        }
        let make = |command| request(&self.node, &who, r.options, command);
        let (resp, leader) = crate::retention::compact_through(&self.node, r.through_seq, make).await?;
        let (checkpoint, removed) = match resp.outcome.map_err(ServerError::Write)? {
            Outcome::AuditCompacted { checkpoint, removed } => (checkpoint, removed),
            other => return Err(ServerError::Internal(format!("an audit cut answered {other:?}")).into()),
        };
        tracing::warn!(through_seq = checkpoint.seq, removed, by = %who.name, "audit entries removed");
        Ok(Response::new(CompactAuditResponse {
            header: write_header(resp.revision, leader),
            checkpoint: Some(checkpoint.into()),
            removed,
        }))
    }
}
