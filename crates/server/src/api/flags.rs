//! `vexil.v1.Flags`: flag writes (through Raft) and reads (behind the read barrier).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vexil_model::{FlagSpec, FlagState, NamespaceDocument};
use vexil_proto::v1::flags_server::Flags;
use vexil_proto::v1::{
    ApplyNamespaceRequest, ApplyNamespaceResponse, Consistency, CreateFlagRequest, DeleteFlagRequest, FieldChange,
    Flag, FlagDiff, GetFlagRequest, GetFlagResponse, GetNamespaceSettingsRequest, GetNamespaceSettingsResponse,
    ListFlagsRequest, ListFlagsResponse, ListNamespacesRequest, ListNamespacesResponse, SetFlagStateRequest,
    SetNamespaceSettingsRequest, SetNamespaceSettingsResponse, UpdateFlagRequest, WriteFlagResponse,
};
use vexil_raft_store::{Command, FlagRecord, Outcome, WriteError};

use super::{check_key, check_namespace, page_size, read_barrier, request, write_header};
use crate::auth::{Principal, caller};
use crate::error::ServerError;
use crate::limits::LIST_RESPONSE_BYTES_MAX;
use crate::node::Node;
use vexil_model::access::Need;

pub struct FlagsApi {
    pub node: Arc<Node>,
}

pub(crate) fn to_proto(namespace: &str, key: &str, r: FlagRecord) -> Flag {
    Flag {
        namespace: namespace.into(),
        key: key.into(),
        spec_json: r.spec_json,
        version: r.version,
        created_revision: r.created_revision,
        mod_revision: r.mod_revision,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        updated_by: r.updated_by,
    }
}

impl FlagsApi {
    /// Proposes a single-flag command and shapes the reply.
    async fn write_flag(
        &self,
        who: &Principal,
        options: Option<vexil_proto::v1::WriteOptions>,
        command: Command,
    ) -> Result<WriteFlagResponse, ServerError> {
        let (resp, leader) = self.node.write(request(&self.node, who, options, command)?).await?;
        match resp.outcome {
            Ok(Outcome::Flag { version }) => {
                Ok(WriteFlagResponse { header: write_header(resp.revision, leader), version, ..Default::default() })
            }
            // The namespace's policy holds the write for approval.
            Ok(Outcome::Change { id, .. }) => Ok(WriteFlagResponse {
                header: write_header(resp.revision, leader),
                change_id: id,
                ..Default::default()
            }),
            Ok(other) => Err(ServerError::Internal(format!("unexpected outcome {other:?} for a flag write"))),
            Err(e) => Err(ServerError::Write(e)),
        }
    }

    /// The warnings of a write to `ns` as the API reports them (`` `field`: problem ``), or the
    /// first one refused (INVALID_ARGUMENT naming its field) when the request or the
    /// namespace's settings ask for strictness. The settings are read only when there is a
    /// warning, behind a lease read barrier: a write that races a change of the setting is
    /// judged by the setting a lease read saw.
    async fn judged(
        &self,
        ns: &str,
        warnings: Vec<vexil_model::ValidationError>,
        requested: bool,
    ) -> Result<Vec<String>, ServerError> {
        let Some(first) = warnings.first() else { return Ok(Vec::new()) };
        let strict = requested || {
            self.node.read_barrier(Consistency::Lease, Consistency::Lease, 0).await?;
            self.node.reader.namespace_settings(ns)?.1.strict
        };
        if strict {
            return Err(first.clone().into());
        }
        Ok(warnings.iter().map(ToString::to_string).collect())
    }

    /// Validates a definition, including its targeting against the namespace's current
    /// `$evaluators`, and returns its canonical JSON and the warnings about its targeting
    /// (refused instead when `strict`, by the request or the namespace).
    async fn validated_spec(
        &self,
        ns: &str,
        key: &str,
        spec_json: &str,
        strict: bool,
    ) -> Result<(String, Vec<String>), ServerError> {
        check_namespace(ns)?;
        check_key(key)?;
        let spec = FlagSpec::from_json(key, spec_json)?;
        let mut warnings = Vec::new();
        // Only targeting can refer to the namespace's `$evaluators`: read them only then.
        if spec.targeting.is_some() {
            let (_, record) = self.node.reader.get_namespace(ns)?;
            let evaluators =
                record.map(|r| serde_json::from_str(&r.evaluators_json).unwrap_or_default()).unwrap_or_default();
            warnings = vexil_model::eval::check_targeting(&spec, &evaluators)?;
        }
        Ok((spec.to_json(), self.judged(ns, warnings, strict).await?))
    }
}

#[tonic::async_trait]
impl Flags for FlagsApi {
    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace, key = %req.get_ref().key))]
    async fn create_flag(&self, req: Request<CreateFlagRequest>) -> Result<Response<WriteFlagResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Write(&r.namespace))?;
        let (spec_json, warnings) = self.validated_spec(&r.namespace, &r.key, &r.spec_json, r.strict).await?;
        let command = Command::CreateFlag { namespace: r.namespace, key: r.key, spec_json };
        Ok(Response::new(WriteFlagResponse { warnings, ..self.write_flag(&who, r.options, command).await? }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace, key = %req.get_ref().key))]
    async fn update_flag(&self, req: Request<UpdateFlagRequest>) -> Result<Response<WriteFlagResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Write(&r.namespace))?;
        let (spec_json, warnings) = self.validated_spec(&r.namespace, &r.key, &r.spec_json, r.strict).await?;
        let command =
            Command::UpdateFlag { namespace: r.namespace, key: r.key, spec_json, expected_version: r.expected_version };
        Ok(Response::new(WriteFlagResponse { warnings, ..self.write_flag(&who, r.options, command).await? }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace, key = %req.get_ref().key))]
    async fn set_flag_state(&self, req: Request<SetFlagStateRequest>) -> Result<Response<WriteFlagResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Write(&r.namespace))?;
        check_namespace(&r.namespace)?;
        check_key(&r.key)?;
        let command = match (r.enabled, r.cascade || r.break_glass) {
            (false, true) => Command::DisableFlag {
                namespace: r.namespace,
                key: r.key,
                expected_version: r.expected_version,
                cascade: r.cascade,
                break_glass: r.break_glass,
            },
            (true, true) => {
                let field = if r.cascade { "cascade" } else { "break_glass" };
                return Err(ServerError::invalid(field, "applies only to a disable (`enabled` false)").into());
            }
            (enabled, false) => Command::SetFlagState {
                namespace: r.namespace,
                key: r.key,
                state: if enabled { FlagState::Enabled } else { FlagState::Disabled },
                expected_version: r.expected_version,
            },
        };
        Ok(Response::new(self.write_flag(&who, r.options, command).await?))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace, key = %req.get_ref().key))]
    async fn delete_flag(&self, req: Request<DeleteFlagRequest>) -> Result<Response<WriteFlagResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Write(&r.namespace))?;
        check_namespace(&r.namespace)?;
        check_key(&r.key)?;
        let command = Command::DeleteFlag { namespace: r.namespace, key: r.key, expected_version: r.expected_version };
        Ok(Response::new(self.write_flag(&who, r.options, command).await?))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace, key = %req.get_ref().key))]
    async fn get_flag(&self, req: Request<GetFlagRequest>) -> Result<Response<GetFlagResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Read(&r.namespace))?;
        check_namespace(&r.namespace)?;
        check_key(&r.key)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, record) = self.node.reader.get_flag(&r.namespace, &r.key).map_err(ServerError::from)?;
        let record = record.ok_or_else(|| {
            ServerError::Write(WriteError::NotFound { namespace: r.namespace.clone(), key: r.key.clone() })
        })?;
        Ok(Response::new(GetFlagResponse {
            header: header(revision),
            flag: Some(to_proto(&r.namespace, &r.key, record)),
        }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn list_flags(&self, req: Request<ListFlagsRequest>) -> Result<Response<ListFlagsResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Read(&r.namespace))?;
        check_namespace(&r.namespace)?;
        let limit = page_size(r.limit);
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, mut flags) =
            self.node.reader.list_flags(&r.namespace, &r.after_key, limit).map_err(ServerError::from)?;
        let full = flags.len() == limit;
        // A page ends early rather than grow past LIST_RESPONSE_BYTES_MAX (a thousand flags of
        // up to 256 KiB each would be a quarter of a GiB); it always holds one flag.
        let mut bytes = 0;
        let fits = flags
            .iter()
            .position(|(k, rec)| {
                bytes += k.len() + rec.spec_json.len() + rec.updated_by.len();
                bytes > LIST_RESPONSE_BYTES_MAX
            })
            .map(|at| at.max(1));
        let trimmed = fits.is_some_and(|at| at < flags.len());
        if let Some(at) = fits {
            flags.truncate(at);
        }
        let next_after_key =
            if full || trimmed { flags.last().map(|(k, _)| k.clone()).unwrap_or_default() } else { String::new() };
        let flags = flags.into_iter().map(|(k, rec)| to_proto(&r.namespace, &k, rec)).collect();
        Ok(Response::new(ListFlagsResponse { header: header(revision), flags, next_after_key }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id))]
    async fn list_namespaces(
        &self,
        req: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::AnyRole)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let limit = page_size(r.limit);
        let (revision, mut namespaces, more) =
            self.node.reader.list_namespaces(&r.after, limit).map_err(ServerError::from)?;
        let next_after = if more { namespaces.last().cloned().unwrap_or_default() } else { String::new() };
        // A caller sees the namespaces it may read, and no others.
        namespaces.retain(|ns| who.can_read(ns));
        Ok(Response::new(ListNamespacesResponse { header: header(revision), namespaces, next_after }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn set_namespace_settings(
        &self,
        req: Request<SetNamespaceSettingsRequest>,
    ) -> Result<Response<SetNamespaceSettingsResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        who.check(Need::Admin)?;
        let r = req.into_inner();
        check_namespace(&r.namespace)?;
        let mut change = serde_json::Map::new();
        if let Some(fractional) = r.fractional {
            change.insert("fractional".into(), fractional.into());
        }
        if let Some(strict) = r.strict {
            change.insert("strict".into(), strict.into());
        }
        if change.is_empty() {
            return Err(
                ServerError::invalid("settings", "name at least one setting to change (fractional, strict)").into()
            );
        }
        // Checked here for a prompt answer; applied by merging into the settings the namespace
        // has at the change's revision.
        vexil_model::NamespaceSettings::default().merged(&change).map_err(ServerError::from)?;
        let command = Command::SetNamespaceSettings {
            namespace: r.namespace,
            change_json: serde_json::Value::Object(change).to_string(),
        };
        let (resp, leader) = self.node.write(request(&self.node, &who, r.options, command)?).await?;
        resp.outcome.map_err(ServerError::Write)?;
        Ok(Response::new(SetNamespaceSettingsResponse { header: write_header(resp.revision, leader) }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn get_namespace_settings(
        &self,
        req: Request<GetNamespaceSettingsRequest>,
    ) -> Result<Response<GetNamespaceSettingsResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Read(&r.namespace))?;
        check_namespace(&r.namespace)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, settings) = self.node.reader.namespace_settings(&r.namespace).map_err(ServerError::from)?;
        Ok(Response::new(GetNamespaceSettingsResponse { header: header(revision), settings: Some(settings.into()) }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn apply_namespace(
        &self,
        req: Request<ApplyNamespaceRequest>,
    ) -> Result<Response<ApplyNamespaceResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Write(&r.namespace))?;
        check_namespace(&r.namespace)?;
        let doc = NamespaceDocument::from_json(&r.document_json).map_err(ServerError::from)?;
        let warnings = vexil_model::eval::check_document(&doc).map_err(ServerError::from)?;
        let warnings = self.judged(&r.namespace, warnings, r.strict).await?;
        if r.dry_run {
            let _linearizable = read_barrier(&self.node, None, Consistency::Linearizable).await?;
            let (revision, current) = super::current_document(&self.node, &r.namespace)?;
            let diff = dry_run_response(revision, &vexil_model::document::diff(&current, &doc));
            return Ok(Response::new(ApplyNamespaceResponse { warnings, ..diff }));
        }
        let command = Command::ApplyNamespace { namespace: r.namespace, document_json: r.document_json };
        let (resp, leader) = self.node.write(request(&self.node, &who, r.options, command)?).await?;
        match resp.outcome {
            Ok(Outcome::Applied { created, updated, deleted, unchanged }) => {
                Ok(Response::new(ApplyNamespaceResponse {
                    header: write_header(resp.revision, leader),
                    created,
                    updated,
                    deleted,
                    unchanged,
                    warnings,
                    ..Default::default()
                }))
            }
            Ok(Outcome::Change { id, .. }) => Ok(Response::new(ApplyNamespaceResponse {
                header: write_header(resp.revision, leader),
                change_id: id,
                warnings,
                ..Default::default()
            })),
            Ok(other) => Err(ServerError::Internal(format!("unexpected outcome {other:?} for an apply")).into()),
            Err(e) => Err(ServerError::Write(e).into()),
        }
    }
}

pub(crate) fn dry_run_response(revision: u64, d: &vexil_model::DocumentDiff) -> ApplyNamespaceResponse {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut diff: Vec<FlagDiff> = Vec::new();
    diff.extend(d.added.iter().map(|k| FlagDiff { key: k.clone(), change: "added".into(), fields: vec![] }));
    diff.extend(d.changed.iter().map(|(k, fields)| {
        FlagDiff {
            key: k.clone(),
            change: "changed".into(),
            fields: fields
                .iter()
                .map(|f| FieldChange {
                    field: f.field.clone(),
                    before_json: json(&f.before),
                    after_json: json(&f.after),
                })
                .collect(),
        }
    }));
    diff.extend(d.removed.iter().map(|k| FlagDiff { key: k.clone(), change: "removed".into(), fields: vec![] }));
    ApplyNamespaceResponse {
        header: None,
        created: count(d.added.len()),
        updated: count(d.changed.len()),
        deleted: count(d.removed.len()),
        unchanged: count(d.unchanged),
        diff,
        settings_changed: d.settings_changed,
        warnings: vec![],
        dry_run_revision: revision,
        change_id: 0,
    }
}
