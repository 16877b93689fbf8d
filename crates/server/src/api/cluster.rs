//! `vexil.v1.Cluster`: initialisation, status, membership changes and alarms.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::ChangeMembers;
use tonic::{Request, Response, Status};
use vexil_proto::v1::cluster_server::Cluster;
use vexil_proto::v1::{
    AddLearnerRequest, Alarm, ChangeMembershipRequest, ClearAlarmsRequest, ClearAlarmsResponse, Consistency,
    InitRequest, InitResponse, ListAlarmsRequest, ListAlarmsResponse, Member, MembershipResponse, RemoveNodeRequest,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use vexil_raft_store::{Command, NodeId, NodeInfo, Outcome};

use super::{read_barrier, request, write_header};
use crate::auth::{self, Principal, caller};
use crate::error::ServerError;
use vexil_model::access::Need;

/// How long Init waits for the new cluster's first leader to create the first admin token.
const FIRST_TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
use crate::node::Node;

pub struct ClusterApi {
    pub node: Arc<Node>,
}

fn alarm_to_proto(a: &vexil_raft_store::types::Alarm) -> Alarm {
    Alarm {
        node_id: a.node_id,
        alarm: vexil_raft_store::types::ALARM_NOSPACE.into(),
        reason: a.reason.clone(),
        revision: a.revision,
        time_ms: a.time_ms,
    }
}

fn member(id: NodeId, info: &NodeInfo) -> Member {
    Member { node_id: id, api_addr: info.api_addr.clone(), raft_addr: info.raft_addr.clone() }
}

fn from_member(m: &Member, field: &str) -> Result<(NodeId, NodeInfo), ServerError> {
    if m.node_id == 0 {
        return Err(ServerError::invalid(format!("{field}.node_id"), "must be positive"));
    }
    if m.api_addr.is_empty() || m.raft_addr.is_empty() {
        return Err(ServerError::invalid(field, "api_addr and raft_addr are both required"));
    }
    Ok((m.node_id, NodeInfo::new(m.api_addr.clone(), m.raft_addr.clone())))
}

impl ClusterApi {
    /// Runs a membership change, then audits who asked for it, in a task that outlives the RPC:
    /// a client that gives up (its deadline, a dropped connection) must not leave a committed
    /// change without the record of its actor and reason. Raft's own membership entries are
    /// audited too (actor `raft`); this entry adds the actor, reason and request id.
    async fn change_and_record<F>(
        &self,
        who: Principal,
        options: Option<vexil_proto::v1::WriteOptions>,
        change: F,
        describe: impl FnOnce(u64) -> serde_json::Value + Send + 'static,
    ) -> Result<u64, ServerError>
    where
        F: std::future::Future<Output = Result<u64, ServerError>> + Send + 'static,
    {
        let node = self.node.clone();
        let task = tokio::spawn(async move {
            let revision = change.await?;
            record(&node, &who, options, describe(revision)).await;
            Ok(revision)
        });
        task.await.map_err(|e| ServerError::Internal(format!("membership change task failed: {e}")))?
    }
}

/// Appends the audit record of a committed membership change. The change has already happened,
/// so a failure here is logged, not returned; it is retried (at most once applied, by request
/// id) for as long as a write may take.
async fn record(node: &Node, who: &Principal, options: Option<vexil_proto::v1::WriteOptions>, what: serde_json::Value) {
    let mut options = options.unwrap_or_default();
    if options.request_id.is_empty() {
        // Derived from the change's revision, so a retry below is applied at most once.
        options.request_id = format!("membership-record-{}", what["revision"]);
    }
    let command = Command::RecordMembershipChange { description: what.to_string() };
    let req = match super::request(node, who, Some(options), command) {
        Ok(req) => req,
        Err(e) => {
            tracing::error!(error = %e, change = %what, "membership change committed but its actor cannot be audited");
            return;
        }
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(node.config.raft.write_timeout_ms);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match node.write(req.clone()).await {
            Ok((resp, _)) => {
                // A client's retry of the whole call carries the same request id with another
                // revision: the first call's record stands, and this one is refused as a reuse.
                if let Err(e) = resp.outcome {
                    tracing::info!(error = %e, change = %what, "membership change already audited by an earlier attempt");
                }
                return;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::error!(error = %e, attempt, change = %what, "membership change committed but its actor could not be audited");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "retrying the audit record of a membership change");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

impl ClusterApi {
    /// Whether this cluster checks tokens, takes its first admin token from Init (not from
    /// `auth.bootstrap_token_file`) and has none yet.
    fn needs_first_token(&self) -> Result<bool, ServerError> {
        let config = &self.node.config;
        Ok(config.tokens_enabled()
            && config.auth.bootstrap_token_file.is_none()
            && !self.node.reader.tokens_bootstrapped()?)
    }

    /// Creates the first admin token and returns its secret, once the new cluster has a leader.
    async fn create_first_token(&self) -> Result<String, ServerError> {
        let secret = auth::new_secret();
        let req = auth::first_token_request(&self.node, &secret, "init", "vexilctl cluster init");
        // A cluster initialised a moment ago elects its first leader now.
        let deadline = tokio::time::Instant::now() + FIRST_TOKEN_WAIT;
        loop {
            match self.node.write(req.clone()).await {
                Ok((resp, _)) => {
                    resp.outcome.map_err(ServerError::Write)?;
                    tracing::info!("created the first admin token");
                    return Ok(secret);
                }
                Err(e @ (ServerError::NoLeader | ServerError::NotLeader(_)))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "waiting for a leader to create the first admin token");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn membership_response(&self, revision: u64) -> MembershipResponse {
        let m = self.node.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut resp = MembershipResponse {
            header: write_header(revision, m.current_leader.unwrap_or(0)),
            voters: vec![],
            learners: vec![],
        };
        for (id, info) in membership.nodes() {
            if voters.contains(id) {
                resp.voters.push(member(*id, info))
            } else {
                resp.learners.push(member(*id, info))
            }
        }
        resp
    }
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    #[tracing::instrument(skip_all, fields(node = self.node.id))]
    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        // Until the first admin token exists nobody holds one: Init is the one call a caller
        // without a token may make. A caller with a token must be an admin.
        let who = caller(&self.node, &req).await?;
        if who.grant.is_some() {
            who.check(Need::Admin)?;
        }
        let r = req.into_inner();
        if r.members.is_empty() {
            return Err(ServerError::invalid("members", "must list at least one voter").into());
        }
        let mut members = BTreeMap::new();
        for (i, m) in r.members.iter().enumerate() {
            let (id, info) = from_member(m, &format!("members[{i}]"))?;
            if members.insert(id, info).is_some() {
                return Err(ServerError::invalid(
                    format!("members[{i}].node_id"),
                    format!("node id {id} is listed twice"),
                )
                .into());
            }
        }
        // Every member must answer within a write's time: a cluster is formed whole or not at all.
        let patience = std::time::Duration::from_millis(self.node.config.raft.write_timeout_ms);
        let initialised = match self.node.initialize(members, Some(patience)).await {
            Ok(()) => true,
            // A cluster formed by configuration, or by an Init whose token step failed, still
            // gets its first admin token here, once.
            Err(ServerError::AlreadyInitialized) if self.needs_first_token()? => false,
            Err(e) => return Err(e.into()),
        };
        if initialised {
            tracing::info!("cluster initialised through the API");
        }
        let admin_token = if self.needs_first_token()? { self.create_first_token().await? } else { String::new() };
        Ok(Response::new(InitResponse { admin_token }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        caller(&self.node, &req).await?.check(Need::AnyRole)?;
        let m = self.node.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last_log_index = m.last_log_index.unwrap_or(0);
        let head = self.node.reader.audit_head().map_err(ServerError::from)?;
        let leader = self.node.leader();
        let mut resp = StatusResponse {
            node_id: self.node.id,
            role: self.node.role().into(),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            leader_api_addr: leader.map(|(_, i)| i.api_addr).unwrap_or_default(),
            last_log_index,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            voters: vec![],
            learners: vec![],
            lag: Default::default(),
            audit_seq: head.seq,
            audit_head_hash: hex::encode(head.hash),
            cluster_id: self.node.identity.cluster().unwrap_or_default(),
        };
        for (id, info) in membership.nodes() {
            if voters.contains(id) {
                resp.voters.push(member(*id, info))
            } else {
                resp.learners.push(member(*id, info))
            }
        }
        if let Some(replication) = &m.replication {
            for (id, matched) in replication {
                resp.lag.insert(*id, last_log_index.saturating_sub(matched.map(|l| l.index).unwrap_or(0)));
            }
        }
        Ok(Response::new(resp))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id))]
    async fn add_learner(&self, req: Request<AddLearnerRequest>) -> Result<Response<MembershipResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        let m = r.member.ok_or_else(|| ServerError::invalid("member", "is required"))?;
        let (id, info) = from_member(&m, "member")?;
        let node = self.node.clone();
        let (api_addr, raft_addr) = (info.api_addr.clone(), info.raft_addr.clone());
        let blocking = r.blocking;
        let change = async move { node.add_learner(id, info, blocking).await };
        let revision = self
            .change_and_record(who, r.options, change, move |revision| {
                serde_json::json!({"request": "add_learner", "node_id": id, "api_addr": api_addr,
                                   "raft_addr": raft_addr, "revision": revision})
            })
            .await?;
        tracing::info!(learner = id, "learner added");
        Ok(Response::new(self.membership_response(revision)))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id))]
    async fn change_membership(
        &self,
        req: Request<ChangeMembershipRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        if r.voters.is_empty() {
            return Err(ServerError::invalid("voters", "must name at least one voter").into());
        }
        let voters: BTreeSet<NodeId> = r.voters.iter().copied().collect();
        let node = self.node.clone();
        let (change_voters, retain) = (voters.clone(), r.retain);
        let change =
            async move { node.change_membership(ChangeMembers::ReplaceAllVoters(change_voters), retain).await };
        let audited = voters.clone();
        let revision = self
            .change_and_record(who, r.options, change, move |revision| {
                serde_json::json!({"request": "change_membership", "voters": audited, "retain": retain,
                                   "revision": revision})
            })
            .await?;
        tracing::info!(?voters, "voters changed");
        Ok(Response::new(self.membership_response(revision)))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id))]
    async fn remove_node(&self, req: Request<RemoveNodeRequest>) -> Result<Response<MembershipResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        let (node, id) = (self.node.clone(), r.node_id);
        let change = async move { node.remove_node(id).await };
        let revision = self
            .change_and_record(
                who,
                r.options,
                change,
                move |revision| serde_json::json!({"request": "remove_node", "node_id": id, "revision": revision}),
            )
            .await?;
        tracing::info!(removed = r.node_id, "node removed");
        Ok(Response::new(self.membership_response(revision)))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id))]
    async fn snapshot(&self, req: Request<SnapshotRequest>) -> Result<Response<SnapshotResponse>, Status> {
        caller(&self.node, &req).await?.check(Need::Admin)?;
        let target = self.node.metrics().last_applied.map(|l| l.index).unwrap_or(0);
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.node.config.raft.write_timeout_ms.max(30_000));
        // openraft drops a trigger that arrives while it is already building a snapshot (which
        // may end below `target`), so trigger again until one covers `target`.
        loop {
            self.node.raft.trigger().snapshot().await.map_err(ServerError::from)?;
            let waited = self
                .node
                .raft
                .wait(Some(std::time::Duration::from_millis(500)))
                .metrics(|m| m.snapshot.is_some_and(|s| s.index >= target), "snapshot built")
                .await;
            if let Ok(m) = waited {
                let last_included_index = m.snapshot.map(|s| s.index).unwrap_or(0);
                tracing::info!(last_included_index, "snapshot built on request");
                return Ok(Response::new(SnapshotResponse { last_included_index }));
            }
            if tokio::time::Instant::now() >= deadline {
                let latest = self.node.metrics().snapshot.map(|s| s.index).unwrap_or(0);
                return Err(ServerError::SnapshotTimeout { target, latest }.into());
            }
        }
    }

    async fn list_alarms(&self, req: Request<ListAlarmsRequest>) -> Result<Response<ListAlarmsResponse>, Status> {
        caller(&self.node, &req).await?.check(Need::AnyRole)?;
        let header = read_barrier(&self.node, None, Consistency::Linearizable).await?;
        let (revision, alarms) = self.node.reader.alarms().map_err(ServerError::from)?;
        Ok(Response::new(ListAlarmsResponse {
            header: header(revision),
            alarms: alarms.values().map(alarm_to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id))]
    async fn clear_alarms(&self, req: Request<ClearAlarmsRequest>) -> Result<Response<ClearAlarmsResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        let (resp, leader) = self.node.write(request(&self.node, &who, r.options, Command::ClearAlarms)?).await?;
        let cleared = match resp.outcome.map_err(ServerError::Write)? {
            Outcome::AlarmsCleared(cleared) => cleared,
            other => return Err(ServerError::Internal(format!("clearing alarms answered {other:?}")).into()),
        };
        tracing::warn!(cleared = cleared.len(), by = %who.name, "alarms cleared");
        Ok(Response::new(ClearAlarmsResponse {
            header: write_header(resp.revision, leader),
            cleared: cleared.iter().map(alarm_to_proto).collect(),
        }))
    }
}
