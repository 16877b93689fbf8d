//! `vexil.v1.Tokens`: creating, listing and revoking bearer tokens (admin only). A token is
//! replicated state; its secret is made here, returned once, and only its hash is proposed.

use std::collections::BTreeSet;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use vexil_model::access::{Grant, Need, Role, validate_grant, validate_token_name};
use vexil_proto::v1::tokens_server::Tokens;
use vexil_proto::v1::{
    Consistency, CreateTokenRequest, CreateTokenResponse, ListTokensRequest, ListTokensResponse, RevokeTokenRequest,
    RevokeTokenResponse, SetAnonymousReadRequest, SetAnonymousReadResponse,
};
use vexil_raft_store::Command;

use super::{check_namespace, read_barrier, request, write_header};
use crate::auth::{self, caller};
use crate::error::ServerError;
use crate::node::Node;

pub struct TokensApi {
    pub node: Arc<Node>,
}

fn role(value: i32) -> Result<Role, ServerError> {
    match vexil_proto::v1::Role::try_from(value) {
        Ok(vexil_proto::v1::Role::Admin) => Ok(Role::Admin),
        Ok(vexil_proto::v1::Role::Editor) => Ok(Role::Editor),
        Ok(vexil_proto::v1::Role::Reader) => Ok(Role::Reader),
        Ok(vexil_proto::v1::Role::Unspecified) => {
            Err(ServerError::invalid("role", "is required: admin, editor or reader"))
        }
        Err(_) => Err(ServerError::invalid("role", format!("unknown role {value}"))),
    }
}

#[tonic::async_trait]
impl Tokens for TokensApi {
    #[tracing::instrument(skip_all, fields(node = self.node.id, name = %req.get_ref().name))]
    async fn create_token(&self, req: Request<CreateTokenRequest>) -> Result<Response<CreateTokenResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        validate_token_name(&r.name).map_err(|p| ServerError::invalid("name", p))?;
        let grant = Grant { role: role(r.role)?, namespaces: r.namespaces.iter().cloned().collect::<BTreeSet<_>>() };
        validate_grant(&grant).map_err(|(field, problem)| ServerError::invalid(field, problem))?;
        if r.expires_ms < 0 || (r.expires_ms != 0 && r.expires_ms <= self.node.now_ms()) {
            return Err(ServerError::invalid("expires_ms", "must be 0 (never) or in the future").into());
        }
        let secret = auth::new_secret();
        let command = auth::create_token_command(&r.name, grant.clone(), &secret, r.expires_ms, false);
        let proposal = request(&self.node, &who, r.options, command)?;
        let created_ms = proposal.time_ms;
        let (resp, leader) = self.node.write(proposal).await?;
        resp.outcome.map_err(ServerError::Write)?;
        let token = vexil_model::access::TokenRecord {
            name: r.name,
            grant,
            expires_ms: r.expires_ms,
            created_ms,
            created_by: who.name,
            revision: resp.revision,
        };
        Ok(Response::new(CreateTokenResponse {
            header: write_header(resp.revision, leader),
            token: Some(auth::token_to_proto(&token)),
            secret,
        }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id))]
    async fn list_tokens(&self, req: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        caller(&self.node, &req).await?.check(Need::Admin)?;
        let header = read_barrier(&self.node, None, Consistency::Linearizable).await?;
        let (revision, tokens) = self.node.reader.tokens().map_err(ServerError::from)?;
        let anonymous = self.node.reader.anonymous_read_namespaces().map_err(ServerError::from)?;
        Ok(Response::new(ListTokensResponse {
            header: header(revision),
            tokens: tokens.iter().map(auth::token_to_proto).collect(),
            anonymous_read_namespaces: anonymous.into_iter().collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, name = %req.get_ref().name))]
    async fn revoke_token(&self, req: Request<RevokeTokenRequest>) -> Result<Response<RevokeTokenResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        validate_token_name(&r.name).map_err(|p| ServerError::invalid("name", p))?;
        let command = Command::RevokeToken { name: r.name };
        let (resp, leader) = self.node.write(request(&self.node, &who, r.options, command)?).await?;
        resp.outcome.map_err(ServerError::Write)?;
        Ok(Response::new(RevokeTokenResponse { header: write_header(resp.revision, leader) }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn set_anonymous_read(
        &self,
        req: Request<SetAnonymousReadRequest>,
    ) -> Result<Response<SetAnonymousReadResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        check_namespace(&r.namespace)?;
        let command = Command::SetAnonymousRead { namespace: r.namespace, enabled: r.enabled };
        let (resp, leader) = self.node.write(request(&self.node, &who, r.options, command)?).await?;
        resp.outcome.map_err(ServerError::Write)?;
        Ok(Response::new(SetAnonymousReadResponse { header: write_header(resp.revision, leader) }))
    }
}
