//! `vexil.v1.Changes`: a namespace's change-control policy and its change requests. The
//! decisions (who may approve, when a request applies, when it is stale) are the state
//! machine's (`vexil_raft_store::governance`); this surface proposes reviews and reads.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vexil_model::NamespaceDocument;
use vexil_model::access::{Need, Role};
use vexil_model::flag::FlagState;
use vexil_proto::v1::changes_server::Changes;
use vexil_proto::v1::{
    ChangeApproval, ChangeRequest, Consistency, GetChangeRequest, GetChangeResponse, GetNamespacePolicyRequest,
    GetNamespacePolicyResponse, ListChangesRequest, ListChangesResponse, ReviewChangeRequest, ReviewChangeResponse,
    SetNamespacePolicyRequest, SetNamespacePolicyResponse, Verdict as ProtoVerdict,
};
use vexil_raft_store::governance::{describe_command, parse_policy};
use vexil_raft_store::{ChangeStatus, ChangeView, Command, Outcome, Verdict};

use super::{check_namespace, current_document, read_barrier, request, write_header};
use crate::auth::caller;
use crate::error::ServerError;
use crate::node::Node;

pub struct ChangesApi {
    pub node: Arc<Node>,
}

impl ChangesApi {
    /// A request as the API shows it, judged at `now_ms` and under the namespace's policy now.
    fn to_proto(&self, view: ChangeView, now_ms: i64) -> Result<ChangeRequest, ServerError> {
        let ChangeView { record, moved } = view;
        let (_, policy) = self.node.reader.namespace_policy(&record.namespace)?;
        let rule = policy.and_then(|p| parse_policy(&p.policy_json).ok()).and_then(|p| p.approval).unwrap_or_default();
        let status = match (record.status, &moved) {
            (ChangeStatus::Pending, Some(_)) => "stale",
            (ChangeStatus::Pending, None) if now_ms >= record.expires_at_ms => "expired",
            (status, _) => status.as_str(),
        };
        Ok(ChangeRequest {
            id: record.id,
            namespace: record.namespace.clone(),
            key: record.key.clone(),
            author: record.author.clone(),
            reason: record.reason.clone(),
            status: status.into(),
            write_json: describe_command(&record.command).to_string(),
            proposed_revision: record.proposed_revision,
            proposed_at_ms: record.proposed_at_ms,
            expires_at_ms: record.expires_at_ms,
            approvals_required: rule.approvals,
            approvals: record
                .approvals
                .iter()
                .map(|x| ChangeApproval {
                    actor: x.actor.clone(),
                    role: x.role.as_str().into(),
                    revision: x.revision,
                    time_ms: x.time_ms,
                })
                .collect(),
            closed_by: record.closed_by.clone(),
            closed_revision: record.closed_revision,
            stale_key: moved.unwrap_or_default(),
        })
    }
}

/// The namespace document a change would leave, from the current one.
fn after_change(current: &NamespaceDocument, command: &Command) -> Result<NamespaceDocument, ServerError> {
    let mut next = current.clone();
    let parse = |key: &str, json: &str| vexil_model::FlagSpec::from_json(key, json).map_err(ServerError::from);
    match command {
        Command::CreateFlag { key, spec_json, .. } | Command::UpdateFlag { key, spec_json, .. } => {
            next.flags.insert(key.clone(), parse(key, spec_json)?);
        }
        Command::SetFlagState { key, state, .. } => {
            if let Some(spec) = next.flags.get_mut(key) {
                spec.state = *state;
            }
        }
        Command::DisableFlag { key, cascade, .. } => {
            let mut off = vec![key.clone()];
            while let Some(k) = off.pop() {
                if let Some(spec) = next.flags.get_mut(&k) {
                    spec.state = FlagState::Disabled;
                }
                if *cascade {
                    let dependents = next
                        .flags
                        .iter()
                        .filter(|(_, s)| s.state == FlagState::Enabled && s.depends_on.contains(&k))
                        .map(|(d, _)| d.clone());
                    off.extend(dependents);
                }
            }
        }
        Command::DeleteFlag { key, .. } => {
            next.flags.remove(key);
        }
        Command::ApplyNamespace { document_json, .. } => next = NamespaceDocument::from_json(document_json)?,
        _ => {}
    }
    Ok(next)
}

#[tonic::async_trait]
impl Changes for ChangesApi {
    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn set_namespace_policy(
        &self,
        req: Request<SetNamespacePolicyRequest>,
    ) -> Result<Response<SetNamespacePolicyResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        check_namespace(&r.namespace)?;
        // Checked here for a prompt answer naming the field; the state machine checks again.
        if !r.policy_json.is_empty() {
            let value: serde_json::Value = serde_json::from_str(&r.policy_json)
                .map_err(|e| ServerError::invalid("policy_json", format!("is not JSON: {e}")))?;
            vexil_model::NamespacePolicy::from_json(&value).map_err(ServerError::from)?;
        }
        let command = Command::SetNamespacePolicy {
            namespace: r.namespace,
            policy_json: r.policy_json,
            expected_version: r.expected_version,
        };
        let (resp, leader) = self.node.write(request(&self.node, &who, r.options, command)?).await?;
        resp.outcome.map_err(ServerError::Write)?;
        Ok(Response::new(SetNamespacePolicyResponse { header: write_header(resp.revision, leader) }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn get_namespace_policy(
        &self,
        req: Request<GetNamespacePolicyRequest>,
    ) -> Result<Response<GetNamespacePolicyResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Read(&r.namespace))?;
        check_namespace(&r.namespace)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, record) = self.node.reader.namespace_policy(&r.namespace).map_err(ServerError::from)?;
        let (policy_json, version) = record.map(|p| (p.policy_json, p.version)).unwrap_or_default();
        Ok(Response::new(GetNamespacePolicyResponse { header: header(revision), policy_json, version }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn list_changes(&self, req: Request<ListChangesRequest>) -> Result<Response<ListChangesResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Read(&r.namespace))?;
        check_namespace(&r.namespace)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, views) = self.node.reader.changes(&r.namespace, None).map_err(ServerError::from)?;
        let now = self.node.now_ms();
        let mut changes = Vec::new();
        for view in views {
            if r.all || view.record.status == ChangeStatus::Pending {
                changes.push(self.to_proto(view, now)?);
            }
        }
        Ok(Response::new(ListChangesResponse { header: header(revision), changes }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace, id = req.get_ref().id))]
    async fn get_change(&self, req: Request<GetChangeRequest>) -> Result<Response<GetChangeResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Read(&r.namespace))?;
        check_namespace(&r.namespace)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, mut views) = self.node.reader.changes(&r.namespace, Some(r.id)).map_err(ServerError::from)?;
        let Some(view) = views.pop() else {
            let missing = vexil_raft_store::WriteError::ChangeNotFound { namespace: r.namespace, id: r.id };
            return Err(ServerError::Write(missing).into());
        };
        let mut reply = GetChangeResponse { header: header(revision), ..Default::default() };
        if view.record.status == ChangeStatus::Pending {
            let (_, current) = current_document(&self.node, &r.namespace)?;
            let next = after_change(&current, &view.record.command)?;
            let diff = super::flags::dry_run_response(revision, &vexil_model::document::diff(&current, &next));
            reply.diff = diff.diff;
            reply.settings_changed = diff.settings_changed;
        }
        reply.change = Some(self.to_proto(view, self.node.now_ms())?);
        Ok(Response::new(reply))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace, id = req.get_ref().id))]
    async fn review_change(&self, req: Request<ReviewChangeRequest>) -> Result<Response<ReviewChangeResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Write(&r.namespace))?;
        check_namespace(&r.namespace)?;
        let verdict = match ProtoVerdict::try_from(r.verdict) {
            Ok(ProtoVerdict::Approve) => Verdict::Approve,
            Ok(ProtoVerdict::Reject) => Verdict::Reject,
            Ok(ProtoVerdict::Cancel) => Verdict::Cancel,
            _ => return Err(ServerError::invalid("verdict", "must be APPROVE, REJECT or CANCEL").into()),
        };
        // Without tokens (`--insecure`) every caller is the same anonymous admin.
        let role = who.grant.as_ref().map_or(Role::Admin, |g| g.role);
        let command = Command::ReviewChange { namespace: r.namespace, id: r.id, verdict, role };
        let (resp, leader) = self.node.write(request(&self.node, &who, r.options, command)?).await?;
        match resp.outcome {
            Ok(Outcome::Change { status, approvals, .. }) => Ok(Response::new(ReviewChangeResponse {
                header: write_header(resp.revision, leader),
                status: status.as_str().into(),
                approvals,
            })),
            Ok(other) => Err(ServerError::Internal(format!("unexpected outcome {other:?} for a review")).into()),
            Err(e) => Err(ServerError::Write(e).into()),
        }
    }
}
