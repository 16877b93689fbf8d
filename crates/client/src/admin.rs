//! Typed admin calls: flag writes and reads, namespace documents, the audit log, cluster
//! status, bearer tokens. Any node serves them (followers forward writes to the leader).
//!
//! Retries: a call that fails with a retryable error ([`Error::is_retryable`], the one retry
//! policy: the node is unreachable, there is no leader, a write's outcome is unknown, ...) is
//! sent again, to the next endpoint (or to the leader a `NOT_LEADER` error names), up to
//! [`limits::ADMIN_ATTEMPTS_MAX`] attempts with exponential backoff and jitter. Every attempt of one logical write carries the same `request_id`, which
//! the cluster's state machine remembers, so a write retried after a lost reply applies once and
//! the retry returns the first result.

use std::future::Future;
use std::sync::Arc;

use vexil_model::NamespaceSettings;
use vexil_model::eval::FractionalAlgorithm;
use vexil_proto::v1 as proto;
use vexil_proto::v1::audit_client::AuditClient;
use vexil_proto::v1::changes_client::ChangesClient;
use vexil_proto::v1::cluster_client::ClusterClient;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::tokens_client::TokensClient;

use crate::error::Error;
use crate::limits;
pub use crate::transport::backoff;
use crate::transport::{ConnectOptions, Dialer, Endpoints, NodeChannel};

pub use proto::{Consistency, Role};

/// Options of one write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOpts {
    /// Why: recorded in the audit entry.
    pub reason: String,
    /// The idempotency key. Leave `None` to get a fresh random one per call (reused by that
    /// call's retries); set it to make retries of your own (e.g. after a crash) idempotent too.
    pub request_id: Option<String>,
    /// Refuse targeting that flagd would load but not evaluate as written, instead of writing
    /// it with warnings (create, update, apply).
    pub strict: bool,
}

impl WriteOpts {
    pub fn reason(reason: impl Into<String>) -> WriteOpts {
        WriteOpts { reason: reason.into(), ..WriteOpts::default() }
    }

    pub fn with_request_id(mut self, request_id: impl Into<String>) -> WriteOpts {
        self.request_id = Some(request_id.into());
        self
    }

    pub fn strict(mut self, strict: bool) -> WriteOpts {
        self.strict = strict;
        self
    }
}

/// Consistency of reads (see SPEC "Consistency").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOpts {
    /// `Unspecified` uses the server's default for the call.
    pub consistency: Consistency,
    /// Wait until the serving node has applied this revision (read-your-writes).
    pub min_revision: u64,
}

impl ReadOpts {
    fn to_proto(self) -> proto::ReadOptions {
        proto::ReadOptions { consistency: self.consistency as i32, min_revision: self.min_revision }
    }
}

/// What a flag write created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    /// The revision of the write (wait for it with `Client::wait_for_revision`).
    pub revision: u64,
    pub leader_id: u64,
    /// The flag's version after the write (0 after a delete).
    pub version: u64,
    /// What flagd would load but not evaluate as written (`` `field`: problem ``); the write
    /// was applied ([`WriteOpts::strict`] refuses instead).
    pub warnings: Vec<String>,
    /// Non-zero when the namespace's policy requires approval: the write did not apply but
    /// opened this change request (`version` is then 0).
    pub change_id: u64,
}

/// What applying a namespace document did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    pub revision: u64,
    pub created: u32,
    pub updated: u32,
    pub deleted: u32,
    pub unchanged: u32,
    /// As in [`WriteResult::warnings`].
    pub warnings: Vec<String>,
    /// As in [`WriteResult::change_id`]: the whole document waits for approval as one request.
    pub change_id: u64,
}

/// A read's data with the header saying which revision it reflects and who served it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadResult<T> {
    pub value: T,
    pub header: proto::ReadHeader,
}

/// A token just created: its record and its secret. The cluster keeps only the secret's hash,
/// so this is the one time anyone sees it.
#[derive(Clone, PartialEq)]
pub struct CreatedToken {
    pub token: proto::Token,
    /// The bearer secret (`vexil_...`): send it as `authorization: Bearer <secret>`
    /// ([`ConnectOptions::token`]).
    pub secret: String,
    /// The revision of the write.
    pub revision: u64,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &self.token)
            .field("secret", &"[secret]")
            .field("revision", &self.revision)
            .finish()
    }
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub from_revision: u64,
    /// 0: no upper bound.
    pub to_revision: u64,
    /// Empty: every namespace.
    pub namespace: String,
    /// Empty: every key.
    pub key: String,
    /// Stop after this many entries (0: all).
    pub limit: usize,
}

/// The typed admin client. Cheap to clone; clones share channels.
#[derive(Debug, Clone)]
pub struct AdminClient {
    endpoints: Arc<Endpoints>,
    read: ReadOpts,
    attempts_max: u32,
}

/// A fresh idempotency key: 128 random bits in hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl AdminClient {
    /// A client for these endpoints (`http://host:port` or `host:port`), in plaintext and
    /// without a token. Channels connect lazily, so this succeeds with every node down; it must
    /// be called inside a Tokio runtime.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Result<AdminClient, Error> {
        AdminClient::new_with_options(endpoints, ConnectOptions::default())
    }

    /// A client for these endpoints that presents a token and/or speaks TLS ([`ConnectOptions`]):
    /// with TLS, `host:port` endpoints are dialed as `https://`, and an `http://` endpoint is
    /// an [`Error::Config`] naming it.
    pub fn new_with_options<S: Into<String>>(
        endpoints: impl IntoIterator<Item = S>,
        options: ConnectOptions,
    ) -> Result<AdminClient, Error> {
        let urls: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        AdminClient::from_dialer(&urls, &options.dialer()?)
    }

    /// What [`crate::ClientBuilder`] uses, so the watcher and the admin calls share one check
    /// of the options.
    pub(crate) fn from_dialer(urls: &[String], dialer: &Dialer) -> Result<AdminClient, Error> {
        Ok(AdminClient {
            endpoints: Arc::new(Endpoints::for_unary(urls, dialer)?),
            read: ReadOpts::default(),
            attempts_max: limits::ADMIN_ATTEMPTS_MAX,
        })
    }

    /// The same client with other read options for its reads.
    pub fn with_read(&self, read: ReadOpts) -> AdminClient {
        AdminClient { read, ..self.clone() }
    }

    /// The same client with fewer attempts per call (at least 1, at most the limit).
    pub fn with_attempts(&self, attempts: u32) -> AdminClient {
        AdminClient { attempts_max: attempts.clamp(1, limits::ADMIN_ATTEMPTS_MAX), ..self.clone() }
    }

    /// Runs `call` against the endpoints until it succeeds, fails for good, or the attempts
    /// run out. `call` must be idempotent across attempts (writes reuse their request id).
    async fn retry<T, F, Fut>(&self, what: &'static str, mut call: F) -> Result<T, Error>
    where
        F: FnMut(NodeChannel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut hinted: Option<usize> = None;
        let mut last: Option<Error> = None;
        let mut rotation = 0u32;
        for attempt in 0..self.attempts_max {
            if let Some(i) = hinted.take() {
                // A follower named the leader: go there next.
                self.endpoints.prefer(i);
                rotation = 0;
            }
            let (i, url, channel) = self.endpoints.pick(rotation);
            rotation += 1;
            match call(channel).await {
                Ok(v) => {
                    self.endpoints.prefer(i);
                    return Ok(v);
                }
                Err(status) => {
                    let err = Error::from_status(&status);
                    if !err.is_retryable() {
                        return Err(err);
                    }
                    tracing::debug!(call = what, endpoint = url, attempt, error = %err, "retrying");
                    hinted = Error::leader_hint(&status).and_then(|addr| self.endpoints.index_of(&addr));
                    last = Some(err);
                    if attempt + 1 < self.attempts_max {
                        tokio::time::sleep(backoff(attempt, limits::ADMIN_BACKOFF_MIN, limits::ADMIN_BACKOFF_MAX))
                            .await;
                    }
                }
            }
        }
        let (reason, message) = match last {
            // Its own message, not its Display ("unavailable after 1 attempt(s): ..."), which
            // would repeat in ours.
            Some(Error::Unavailable { reason, message, .. }) => (reason, message),
            Some(e) => (e.reason(), e.to_string()),
            None => (None, "no attempt was made".to_string()),
        };
        tracing::warn!(call = what, attempts = self.attempts_max, "giving up: {message}");
        Err(Error::Unavailable { reason, message, attempts: self.attempts_max })
    }

    fn write_options(opts: &WriteOpts) -> proto::WriteOptions {
        proto::WriteOptions {
            request_id: opts.request_id.clone().unwrap_or_else(new_request_id),
            reason: opts.reason.clone(),
        }
    }

    fn write_result(r: proto::WriteFlagResponse) -> WriteResult {
        let h = r.header.unwrap_or_default();
        WriteResult {
            revision: h.revision,
            leader_id: h.leader_id,
            version: r.version,
            warnings: r.warnings,
            change_id: r.change_id,
        }
    }

    /// Creates a flag (`AlreadyExists` if the key is taken). `spec_json` is flagd's flag object
    /// plus governance fields.
    pub async fn create_flag(
        &self,
        namespace: &str,
        key: &str,
        spec_json: &str,
        opts: WriteOpts,
    ) -> Result<WriteResult, Error> {
        let req = proto::CreateFlagRequest {
            namespace: namespace.into(),
            key: key.into(),
            spec_json: spec_json.into(),
            options: Some(Self::write_options(&opts)),
            strict: opts.strict,
        };
        self.retry("create_flag", |ch| {
            let req = req.clone();
            async move { FlagsClient::new(ch).create_flag(req).await }
        })
        .await
        .map(|r| Self::write_result(r.into_inner()))
    }

    /// Replaces a flag's definition; with `expected_version`, only if the flag is at that
    /// version (`VersionMismatch { current }` otherwise).
    pub async fn update_flag(
        &self,
        namespace: &str,
        key: &str,
        spec_json: &str,
        expected_version: Option<u64>,
        opts: WriteOpts,
    ) -> Result<WriteResult, Error> {
        let req = proto::UpdateFlagRequest {
            namespace: namespace.into(),
            key: key.into(),
            spec_json: spec_json.into(),
            expected_version,
            options: Some(Self::write_options(&opts)),
            strict: opts.strict,
        };
        self.retry("update_flag", |ch| {
            let req = req.clone();
            async move { FlagsClient::new(ch).update_flag(req).await }
        })
        .await
        .map(|r| Self::write_result(r.into_inner()))
    }

    /// The kill switch: enables or disables a flag without touching its definition.
    pub async fn set_flag_state(
        &self,
        namespace: &str,
        key: &str,
        enabled: bool,
        expected_version: Option<u64>,
        opts: WriteOpts,
    ) -> Result<WriteResult, Error> {
        let req = proto::SetFlagStateRequest {
            namespace: namespace.into(),
            key: key.into(),
            enabled,
            expected_version,
            options: Some(Self::write_options(&opts)),
            cascade: false,
            break_glass: false,
        };
        self.retry("set_flag_state", |ch| {
            let req = req.clone();
            async move { FlagsClient::new(ch).set_flag_state(req).await }
        })
        .await
        .map(|r| Self::write_result(r.into_inner()))
    }

    /// The kill switch with options: with `cascade`, every enabled flag that depends on `key`
    /// is disabled in the same revision; with `break_glass`, a namespace policy's approval is
    /// bypassed where it allows that (`opts.reason` is then required, and the audit entry is
    /// marked).
    pub async fn disable_flag(
        &self,
        namespace: &str,
        key: &str,
        expected_version: Option<u64>,
        cascade: bool,
        break_glass: bool,
        opts: WriteOpts,
    ) -> Result<WriteResult, Error> {
        let req = proto::SetFlagStateRequest {
            namespace: namespace.into(),
            key: key.into(),
            enabled: false,
            expected_version,
            options: Some(Self::write_options(&opts)),
            cascade,
            break_glass,
        };
        self.retry("set_flag_state", |ch| {
            let req = req.clone();
            async move { FlagsClient::new(ch).set_flag_state(req).await }
        })
        .await
        .map(|r| Self::write_result(r.into_inner()))
    }

    /// Sets (or with `policy_json` empty, removes) a namespace's change-control policy; returns
    /// the revision. Role `admin` needed.
    pub async fn set_namespace_policy(
        &self,
        namespace: &str,
        policy_json: &str,
        expected_version: Option<u64>,
        opts: WriteOpts,
    ) -> Result<u64, Error> {
        let req = proto::SetNamespacePolicyRequest {
            namespace: namespace.into(),
            policy_json: policy_json.into(),
            expected_version,
            options: Some(Self::write_options(&opts)),
        };
        let r = self
            .retry("set_namespace_policy", |ch| {
                let req = req.clone();
                async move { ChangesClient::new(ch).set_namespace_policy(req).await }
            })
            .await?
            .into_inner();
        Ok(r.header.map_or(0, |h| h.revision))
    }

    /// A namespace's policy (canonical JSON, empty when none) and its version.
    pub async fn namespace_policy(&self, namespace: &str) -> Result<ReadResult<(String, u64)>, Error> {
        let req = proto::GetNamespacePolicyRequest { namespace: namespace.into(), read: Some(self.read.to_proto()) };
        let r = self
            .retry("get_namespace_policy", |ch| {
                let req = req.clone();
                async move { ChangesClient::new(ch).get_namespace_policy(req).await }
            })
            .await?
            .into_inner();
        Ok(ReadResult { value: (r.policy_json, r.version), header: r.header.unwrap_or_default() })
    }

    /// A namespace's change requests: the pending ones, or with `all` the closed ones kept too.
    pub async fn list_changes(
        &self,
        namespace: &str,
        all: bool,
    ) -> Result<ReadResult<Vec<proto::ChangeRequest>>, Error> {
        let req = proto::ListChangesRequest { namespace: namespace.into(), all, read: Some(self.read.to_proto()) };
        let r = self
            .retry("list_changes", |ch| {
                let req = req.clone();
                async move { ChangesClient::new(ch).list_changes(req).await }
            })
            .await?
            .into_inner();
        Ok(ReadResult { value: r.changes, header: r.header.unwrap_or_default() })
    }

    /// One change request, with what it would change now (for a pending one).
    pub async fn get_change(&self, namespace: &str, id: u64) -> Result<proto::GetChangeResponse, Error> {
        let req = proto::GetChangeRequest { namespace: namespace.into(), id, read: Some(self.read.to_proto()) };
        self.retry("get_change", |ch| {
            let req = req.clone();
            async move { ChangesClient::new(ch).get_change(req).await }
        })
        .await
        .map(tonic::Response::into_inner)
    }

    /// Approves, rejects or cancels a change request. The approval that completes it applies
    /// the change in the same revision (the response's status is then `applied`).
    pub async fn review_change(
        &self,
        namespace: &str,
        id: u64,
        verdict: proto::Verdict,
        opts: WriteOpts,
    ) -> Result<proto::ReviewChangeResponse, Error> {
        let req = proto::ReviewChangeRequest {
            namespace: namespace.into(),
            id,
            verdict: verdict as i32,
            options: Some(Self::write_options(&opts)),
        };
        self.retry("review_change", |ch| {
            let req = req.clone();
            async move { ChangesClient::new(ch).review_change(req).await }
        })
        .await
        .map(tonic::Response::into_inner)
    }

    pub async fn delete_flag(
        &self,
        namespace: &str,
        key: &str,
        expected_version: Option<u64>,
        opts: WriteOpts,
    ) -> Result<WriteResult, Error> {
        let req = proto::DeleteFlagRequest {
            namespace: namespace.into(),
            key: key.into(),
            expected_version,
            options: Some(Self::write_options(&opts)),
        };
        self.retry("delete_flag", |ch| {
            let req = req.clone();
            async move { FlagsClient::new(ch).delete_flag(req).await }
        })
        .await
        .map(|r| Self::write_result(r.into_inner()))
    }

    /// Makes a namespace match a whole flagd document, atomically (one revision).
    pub async fn apply_namespace(
        &self,
        namespace: &str,
        document_json: &str,
        opts: WriteOpts,
    ) -> Result<ApplyResult, Error> {
        let req = proto::ApplyNamespaceRequest {
            namespace: namespace.into(),
            document_json: document_json.into(),
            options: Some(Self::write_options(&opts)),
            dry_run: false,
            strict: opts.strict,
        };
        let r = self
            .retry("apply_namespace", |ch| {
                let req = req.clone();
                async move { FlagsClient::new(ch).apply_namespace(req).await }
            })
            .await?
            .into_inner();
        Ok(ApplyResult {
            revision: r.header.map_or(0, |h| h.revision),
            created: r.created,
            updated: r.updated,
            deleted: r.deleted,
            unchanged: r.unchanged,
            warnings: r.warnings,
            change_id: r.change_id,
        })
    }

    pub async fn get_flag(&self, namespace: &str, key: &str) -> Result<ReadResult<proto::Flag>, Error> {
        let req =
            proto::GetFlagRequest { namespace: namespace.into(), key: key.into(), read: Some(self.read.to_proto()) };
        let r = self
            .retry("get_flag", |ch| {
                let req = req.clone();
                async move { FlagsClient::new(ch).get_flag(req).await }
            })
            .await?
            .into_inner();
        let flag = r.flag.ok_or_else(|| Error::NotFound { namespace: namespace.into(), key: key.into() })?;
        Ok(ReadResult { value: flag, header: r.header.unwrap_or_default() })
    }

    /// Every flag of a namespace, in key order (all pages; later pages are read at least at
    /// the first page's revision).
    pub async fn list_flags(&self, namespace: &str) -> Result<ReadResult<Vec<proto::Flag>>, Error> {
        let mut flags = Vec::new();
        let mut header: Option<proto::ReadHeader> = None;
        let mut after_key = String::new();
        loop {
            let mut read = self.read;
            read.min_revision = read.min_revision.max(header.map_or(0, |h| h.revision));
            let req = proto::ListFlagsRequest {
                namespace: namespace.into(),
                after_key: after_key.clone(),
                limit: limits::LIST_PAGE_SIZE,
                read: Some(read.to_proto()),
            };
            let page = self
                .retry("list_flags", |ch| {
                    let req = req.clone();
                    async move { FlagsClient::new(ch).list_flags(req).await }
                })
                .await?
                .into_inner();
            header.get_or_insert(page.header.unwrap_or_default());
            flags.extend(page.flags);
            if page.next_after_key.is_empty() {
                return Ok(ReadResult { value: flags, header: header.unwrap_or_default() });
            }
            after_key = page.next_after_key;
        }
    }

    /// Every namespace the caller may read, in order (all pages).
    pub async fn list_namespaces(&self) -> Result<ReadResult<Vec<String>>, Error> {
        let mut namespaces = Vec::new();
        let mut header: Option<proto::ReadHeader> = None;
        let mut after = String::new();
        loop {
            // Later pages are read at least at the first page's revision.
            let mut read = self.read;
            read.min_revision = read.min_revision.max(header.as_ref().map_or(0, |h| h.revision));
            let req = proto::ListNamespacesRequest { read: Some(read.to_proto()), after: after.clone(), limit: 0 };
            let r = self
                .retry("list_namespaces", |ch| {
                    let req = req.clone();
                    async move { FlagsClient::new(ch).list_namespaces(req).await }
                })
                .await?
                .into_inner();
            header = header.or(r.header);
            namespaces.extend(r.namespaces);
            if r.next_after.is_empty() {
                return Ok(ReadResult { value: namespaces, header: header.unwrap_or_default() });
            }
            after = r.next_after;
        }
    }

    /// A namespace's settings (how `fractional` buckets, whether writes with warnings are
    /// refused).
    pub async fn namespace_settings(&self, namespace: &str) -> Result<ReadResult<NamespaceSettings>, Error> {
        let req = proto::GetNamespaceSettingsRequest { namespace: namespace.into(), read: Some(self.read.to_proto()) };
        let r = self
            .retry("get_namespace_settings", |ch| {
                let req = req.clone();
                async move { FlagsClient::new(ch).get_namespace_settings(req).await }
            })
            .await?
            .into_inner();
        let settings = r.settings.unwrap_or_default().to_model().map_err(|unknown| Error::Invalid {
            field: "fractional".into(),
            problem: format!("the server's algorithm {unknown:?} is unknown to this client; upgrade it"),
        })?;
        Ok(ReadResult { value: settings, header: r.header.unwrap_or_default() })
    }

    /// Changes the settings of `namespace` that are `Some`, leaving the others as they are at
    /// the revision the change applies at. Audited (`namespace.settings`). Returns the revision
    /// of the write. Role `admin` needed.
    pub async fn set_namespace_settings(
        &self,
        namespace: &str,
        fractional: Option<FractionalAlgorithm>,
        strict: Option<bool>,
        opts: WriteOpts,
    ) -> Result<u64, Error> {
        let req = proto::SetNamespaceSettingsRequest {
            namespace: namespace.into(),
            fractional: fractional.map(|f| f.as_str().into()),
            strict,
            options: Some(Self::write_options(&opts)),
        };
        let r = self
            .retry("set_namespace_settings", |ch| {
                let req = req.clone();
                async move { FlagsClient::new(ch).set_namespace_settings(req).await }
            })
            .await?
            .into_inner();
        Ok(r.header.map_or(0, |h| h.revision))
    }

    /// Audit entries matching `filter`, in commit order (all pages, up to `filter.limit`).
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<ReadResult<Vec<proto::AuditEntry>>, Error> {
        let mut entries: Vec<proto::AuditEntry> = Vec::new();
        let mut header: Option<proto::ReadHeader> = None;
        loop {
            let want = if filter.limit == 0 {
                limits::LIST_PAGE_SIZE
            } else {
                (filter.limit - entries.len()).min(limits::LIST_PAGE_SIZE as usize) as u32
            };
            let mut read = self.read;
            read.min_revision = read.min_revision.max(header.map_or(0, |h| h.revision));
            let req = proto::ListAuditRequest {
                from_revision: filter.from_revision,
                to_revision: filter.to_revision,
                namespace: filter.namespace.clone(),
                key: filter.key.clone(),
                after_seq: entries.last().map_or(0, |e| e.seq),
                limit: want,
                read: Some(read.to_proto()),
            };
            let page = self
                .retry("list_audit", |ch| {
                    let req = req.clone();
                    async move { AuditClient::new(ch).list_audit(req).await }
                })
                .await?
                .into_inner();
            header.get_or_insert(page.header.unwrap_or_default());
            // Retention cut the log past where this listing had got: entries went missing
            // between two pages. Say so rather than hand back a list with a hole.
            let after_seq = req.after_seq;
            if after_seq > 0
                && let Some(cp) = page.checkpoint.as_ref().filter(|cp| cp.seq > after_seq)
            {
                return Err(Error::Server {
                    code: tonic::Code::OutOfRange,
                    reason: Some(vexil_proto::ErrorReason::RevisionCompacted),
                    message: format!(
                        "audit retention removed entries up to seq {} while the listing was at seq {after_seq}; list again",
                        cp.seq
                    ),
                });
            }
            entries.extend(page.entries);
            if !page.more || (filter.limit != 0 && entries.len() >= filter.limit) {
                return Ok(ReadResult { value: entries, header: header.unwrap_or_default() });
            }
        }
    }

    /// Removes the audit entries up to `through_seq` on every node, behind a checkpoint that
    /// keeps the rest verifiable (role `admin` needed). Export them first: they are gone
    /// afterwards. Returns the checkpoint and how many entries this call removed.
    pub async fn compact_audit(
        &self,
        through_seq: u64,
        opts: WriteOpts,
    ) -> Result<(proto::AuditCheckpoint, u64), Error> {
        let req = proto::CompactAuditRequest { through_seq, options: Some(Self::write_options(&opts)) };
        let r = self
            .retry("compact_audit", |ch| {
                let req = req.clone();
                async move { AuditClient::new(ch).compact_audit(req).await }
            })
            .await?
            .into_inner();
        Ok((r.checkpoint.unwrap_or_default(), r.removed))
    }

    /// The status of whichever node answers first (role, leader, applied index, members).
    pub async fn cluster_status(&self) -> Result<proto::StatusResponse, Error> {
        self.retry("cluster_status", |ch| async move { ClusterClient::new(ch).status(proto::StatusRequest {}).await })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The standing NOSPACE alarms: while one stands, writes that grow the state are refused
    /// (`NO_SPACE`); reads, kill switches and deletes go on.
    pub async fn alarms(&self) -> Result<ReadResult<Vec<proto::Alarm>>, Error> {
        let r =
            self.retry("list_alarms", |ch| async move {
                ClusterClient::new(ch).list_alarms(proto::ListAlarmsRequest {}).await
            })
            .await?
            .into_inner();
        Ok(ReadResult { value: r.alarms, header: r.header.unwrap_or_default() })
    }

    /// Clears every alarm once room was made; returns those that stood. A node still short of
    /// space raises its alarm again at its next check. Audited; role `admin` needed.
    pub async fn clear_alarms(&self, opts: WriteOpts) -> Result<Vec<proto::Alarm>, Error> {
        let req = proto::ClearAlarmsRequest { options: Some(Self::write_options(&opts)) };
        let r = self
            .retry("clear_alarms", |ch| {
                let req = req.clone();
                async move { ClusterClient::new(ch).clear_alarms(req).await }
            })
            .await?
            .into_inner();
        Ok(r.cleared)
    }

    /// Creates a bearer token (role `admin` needed). An editor or reader token names the
    /// namespaces it covers, an admin token none; `expires_ms` is Unix milliseconds, 0 for
    /// never. The returned secret is shown this once. A retry reuses the request id, so a
    /// lost reply does not create a second token.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        namespaces: &[String],
        expires_ms: i64,
        opts: WriteOpts,
    ) -> Result<CreatedToken, Error> {
        let req = proto::CreateTokenRequest {
            name: name.into(),
            role: role as i32,
            namespaces: namespaces.to_vec(),
            expires_ms,
            options: Some(Self::write_options(&opts)),
        };
        let r = self
            .retry("create_token", |ch| {
                let req = req.clone();
                async move { TokensClient::new(ch).create_token(req).await }
            })
            .await?
            .into_inner();
        Ok(CreatedToken {
            token: r.token.unwrap_or_default(),
            secret: r.secret,
            revision: r.header.map_or(0, |h| h.revision),
        })
    }

    /// Every token, by name: no secrets (the cluster does not have them). Role `admin` needed.
    pub async fn list_tokens(&self) -> Result<ReadResult<Vec<proto::Token>>, Error> {
        let r =
            self.retry("list_tokens", |ch| async move {
                TokensClient::new(ch).list_tokens(proto::ListTokensRequest {}).await
            })
            .await?
            .into_inner();
        Ok(ReadResult { value: r.tokens, header: r.header.unwrap_or_default() })
    }

    /// Revokes a token: it stops working at once on every node, and the streams it opened are
    /// closed. Returns the revision of the write. Role `admin` needed.
    pub async fn revoke_token(&self, name: &str, opts: WriteOpts) -> Result<u64, Error> {
        let req = proto::RevokeTokenRequest { name: name.into(), options: Some(Self::write_options(&opts)) };
        let r = self
            .retry("revoke_token", |ch| {
                let req = req.clone();
                async move { TokensClient::new(ch).revoke_token(req).await }
            })
            .await?
            .into_inner();
        Ok(r.header.map_or(0, |h| h.revision))
    }

    /// The namespaces callers without a token may read. Role `admin` needed.
    pub async fn anonymous_read_namespaces(&self) -> Result<ReadResult<Vec<String>>, Error> {
        let r =
            self.retry("list_tokens", |ch| async move {
                TokensClient::new(ch).list_tokens(proto::ListTokensRequest {}).await
            })
            .await?
            .into_inner();
        Ok(ReadResult { value: r.anonymous_read_namespaces, header: r.header.unwrap_or_default() })
    }

    /// Lets callers without a token read `namespace` (for flagd providers that cannot send
    /// one), or stops them; their open streams end when it is turned off. Audited. Returns the
    /// revision of the write. Role `admin` needed.
    pub async fn set_anonymous_read(&self, namespace: &str, enabled: bool, opts: WriteOpts) -> Result<u64, Error> {
        let req = proto::SetAnonymousReadRequest {
            namespace: namespace.into(),
            enabled,
            options: Some(Self::write_options(&opts)),
        };
        let r = self
            .retry("set_anonymous_read", |ch| {
                let req = req.clone();
                async move { TokensClient::new(ch).set_anonymous_read(req).await }
            })
            .await?
            .into_inner();
        Ok(r.header.map_or(0, |h| h.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn every_attempt_of_a_write_reuses_one_request_id_and_stops_at_the_limit() {
        use tonic_types::StatusExt;
        let admin = AdminClient::new(["http://127.0.0.1:1", "http://127.0.0.1:2"]).unwrap().with_attempts(3);
        let opts = AdminClient::write_options(&WriteOpts::reason("r"));
        let seen = std::sync::Mutex::new(Vec::new());
        let err = admin
            .retry("test", |_ch| {
                seen.lock().unwrap().push(opts.request_id.clone());
                async {
                    Err::<(), _>(tonic::Status::with_error_details(
                        tonic::Code::Unavailable,
                        "no leader",
                        tonic_types::ErrorDetails::with_error_info(
                            crate::error::ErrorReason::NoLeader.as_str(),
                            crate::error::ERROR_DOMAIN,
                            std::collections::HashMap::<String, String>::new(),
                        ),
                    ))
                }
            })
            .await
            .unwrap_err();
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|id| *id == seen[0]));
        assert!(matches!(err, Error::Unavailable { attempts: 3, .. }), "{err:?}");
        assert_eq!(err.reason(), Some(crate::error::ErrorReason::NoLeader));
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let admin = AdminClient::new(["127.0.0.1:1"]).unwrap();
        let mut calls = 0;
        let err = admin
            .retry("test", |_ch| {
                calls += 1;
                async { Err::<(), _>(tonic::Status::invalid_argument("bad")) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert!(matches!(err, Error::Invalid { .. }));
    }
}
