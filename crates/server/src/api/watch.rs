//! `vexil.v1.Watch`: the change feed, replayed from the audit log and then followed live.
//!
//! The audit log is the feed: every state change is an audit entry written in the same batch
//! as the change, keyed by revision, so "changes after revision R" is a key-range scan and a
//! resumed stream can neither skip nor repeat a change. Each stream is one task that alternates
//! between catching up from the audit table and waiting for the node's applied revision to move.
//!
//! A stream may start after any revision the cluster has committed, also one this node has not
//! applied yet (a client moving from a node ahead of this one): the node waits for it, at most
//! the read timeout. A revision beyond the cluster's commit index is refused at once
//! (INVALID_ARGUMENT naming `after_revision`), before the stream takes a slot: no node of this
//! cluster ever served it, so the client's position belongs to another history.
//!
//! A stream needs read access to each namespace it watches (no namespaces: all those the
//! caller may read), and lives as long as its token: it ends UNAUTHENTICATED once the token is
//! revoked (when the revocation applies on this node) or expires. A stream opened without a
//! token (of namespaces open to anonymous read) ends once one of them is closed again.
//!
//! When the node starts leaving ([`Node::leaving`]), every stream ends at once with UNAVAILABLE
//! `ShuttingDown` (and a new one is refused so): its client resumes on another node from its
//! last revision, and the API can drain instead of waiting for watchers to go away.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vexil_model::{AuditAction, AuditEntry};
use vexil_proto::v1::watch_response::Kind;
use vexil_proto::v1::watch_server::Watch;
use vexil_proto::v1::{
    Change, ChangeBatch, Flag, NamespaceState, Progress, Stale, WatchRequest, WatchResponse, WatchSnapshot,
};
use vexil_raft_store::Changes;

use super::check_namespace;
use super::flags::to_proto as flag_to_proto;
use crate::auth::{self, Principal, caller};
use crate::error::ServerError;
use crate::limits::{
    STREAM_TOKEN_CHECK_INTERVAL_MS, WATCH_BATCH_ENTRIES_MAX, WATCH_BUFFER_BYTES_MAX, WATCH_BUFFER_MESSAGES,
    WATCH_NAMESPACES_MAX, WATCH_SNAPSHOT_PART_BYTES,
};
use crate::node::Node;
use crate::read_index;
use vexil_model::access::{Need, Role};

pub struct WatchApi {
    pub node: Arc<Node>,
    /// One permit per open stream (`limits::WATCH_STREAMS_MAX`).
    pub slots: Arc<Semaphore>,
}

/// A message on its way to the client, holding its share of the stream's byte budget until
/// the response stream takes it ([`release`]).
type Queued = (Result<WatchResponse, Status>, Option<OwnedSemaphorePermit>);

fn release(queued: Queued) -> Result<WatchResponse, Status> {
    queued.0
}

/// A stream's way out: at most `WATCH_BUFFER_BYTES_MAX` encoded bytes wait for a slow client
/// (one larger message waits alone), so a stalled client costs the node that much, not its
/// whole snapshot.
struct Outbox {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
}

impl Outbox {
    async fn send(&self, kind: Kind) -> Result<(), ServerError> {
        let msg = WatchResponse { kind: Some(kind) };
        let bytes = msg.encoded_len().clamp(1, WATCH_BUFFER_BYTES_MAX);
        let Ok(permit) = self.budget.clone().acquire_many_owned(u32::try_from(bytes).unwrap_or(u32::MAX)).await else {
            return Ok(());
        };
        // A closed channel means the client went away; `stream` notices through `tx.closed()`.
        let _ = self.tx.send((Ok(msg), Some(permit))).await;
        Ok(())
    }
}

#[tonic::async_trait]
impl Watch for WatchApi {
    type WatchStream = futures::stream::Map<ReceiverStream<Queued>, fn(Queued) -> Result<WatchResponse, Status>>;

    #[tracing::instrument(skip_all, fields(node = self.node.id, after = req.get_ref().after_revision))]
    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let who = caller(&self.node, &req).await?;
        let mut r = req.into_inner();
        if r.namespaces.len() > WATCH_NAMESPACES_MAX {
            return Err(ServerError::invalid("namespaces", format!("lists more than {WATCH_NAMESPACES_MAX}")).into());
        }
        for (i, ns) in r.namespaces.iter().enumerate() {
            check_namespace(ns).map_err(|_| {
                ServerError::invalid(format!("namespaces[{i}]"), format!("{ns:?} is not a valid namespace"))
            })?;
        }
        if r.namespaces.is_empty() {
            // "Every namespace" is every namespace the caller may read.
            match &who.grant {
                Some(g) if g.role != Role::Admin => r.namespaces = g.namespaces.iter().cloned().collect(),
                Some(_) => {}
                // A caller without a token: the namespaces open to it, if any.
                None if !who.anonymous_reads().is_empty() => {
                    r.namespaces = who.anonymous_reads().iter().cloned().collect();
                }
                None => who.check(Need::AnyRole)?,
            }
        }
        for ns in &r.namespaces {
            who.check(Need::Read(ns))?;
        }
        if self.node.leaving.has_begun() {
            return Err(ServerError::ShuttingDown.into());
        }
        check_after_revision(&self.node, r.after_revision).await?;
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| ServerError::WatchLimit)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER_MESSAGES);
        let budget = Arc::new(Semaphore::new(WATCH_BUFFER_BYTES_MAX));
        tokio::spawn(stream(self.node.clone(), r, who, Outbox { tx, budget }, WatchSlot::new(permit, &self.node)));
        let release: fn(Queued) -> Result<WatchResponse, Status> = release;
        Ok(Response::new(ReceiverStream::new(rx).map(release)))
    }
}

/// Refuses a start beyond what the cluster has committed. Only a revision this node has not
/// applied costs a read-index round (which began after the request arrived, so its index covers
/// every revision any node had applied, hence served, before): a lagging node still serves a
/// client that comes from a node ahead of it.
async fn check_after_revision(node: &Arc<Node>, after_revision: u64) -> Result<(), ServerError> {
    if after_revision <= *node.reader.applied_revision().borrow() {
        return Ok(());
    }
    let committed = read_index::shared_read_index(node).await?;
    if after_revision > committed {
        return Err(ServerError::invalid(
            "after_revision",
            format!(
                "revision {after_revision} is beyond the last revision this cluster has committed ({committed}); \
                 resume from a revision this cluster served, or start again with an initial snapshot"
            ),
        ));
    }
    Ok(())
}

async fn stream(node: Arc<Node>, req: WatchRequest, who: Principal, out: Outbox, _slot: WatchSlot) {
    let outcome = tokio::select! {
        r = follow(&node, &req, &who, &out) => r,
        () = out.tx.closed() => Ok(()),
        () = node.leaving.begun() => Err(ServerError::ShuttingDown),
    };
    if let Err(e) = outcome {
        let _ = out.tx.send((Err(e.into()), None)).await;
    }
}

async fn follow(node: &Arc<Node>, req: &WatchRequest, who: &Principal, out: &Outbox) -> Result<(), ServerError> {
    let filter: BTreeSet<&str> = req.namespaces.iter().map(String::as_str).collect();
    let mut applied = node.reader.applied_revision();
    // Resuming on a node that is behind: wait until it has what the client already has (which
    // the cluster has committed: `check_after_revision`), at most the read timeout.
    node.wait_applied(req.after_revision).await?;
    let mut cursor = req.after_revision;

    if req.initial_snapshot {
        // In parts of about WATCH_SNAPSHOT_PART_BYTES, all read from one storage snapshot.
        let mut snapshot = node.reader.state_snapshot(&req.namespaces)?;
        let revision = snapshot.revision();
        let mut part = snapshot.next_part(WATCH_SNAPSHOT_PART_BYTES)?.unwrap_or_default();
        loop {
            let next = snapshot.next_part(WATCH_SNAPSHOT_PART_BYTES)?;
            let namespaces = part.into_iter().map(state_to_proto).collect();
            out.send(Kind::Snapshot(WatchSnapshot { revision, namespaces, more: next.is_some() })).await?;
            match next {
                Some(p) => part = p,
                None => break,
            }
        }
        cursor = cursor.max(revision);
    }

    let token_check_every = Duration::from_millis(STREAM_TOKEN_CHECK_INTERVAL_MS);
    let mut currency = Currency::new(node);
    loop {
        // The stream lives as long as its token: a revocation ends it when it applies here (the
        // applied revision moves), an expiry within a check interval.
        auth::still_valid(node, who, &req.namespaces)?;
        catch_up(node, &filter, &mut cursor, out).await?;
        let now = Instant::now();
        if now >= currency.next_check() {
            match currency.check(node, &mut applied).await {
                Ok(Some(index)) => {
                    // Everything up to the confirmed revision goes out before the progress
                    // that vouches for it (a page may stop short of it: go on until there).
                    catch_up(node, &filter, &mut cursor, out).await?;
                    while cursor < index {
                        let before = cursor;
                        catch_up(node, &filter, &mut cursor, out).await?;
                        if cursor == before {
                            return Err(ServerError::Internal(format!(
                                "the change feed stopped at revision {cursor} below the applied revision {index}"
                            )));
                        }
                    }
                    out.send(Kind::Progress(Progress { revision: cursor })).await?;
                }
                Ok(None) => {}
                Err(lost) => {
                    let stale =
                        Stale { revision: cursor, unconfirmed_ms: lost.unconfirmed_ms, reason: lost.why.clone() };
                    out.send(Kind::Stale(stale)).await?;
                    return Err(lost.into_error("watch another node"));
                }
            }
            continue;
        }
        // Live: wait for the applied revision to move past the cursor, or for the next check.
        let wait = token_check_every.min(currency.next_check() - now);
        let moved = async { applied.wait_for(|a| *a > cursor).await.map(|_| ()) };
        if let Ok(Err(_)) = tokio::time::timeout(wait, moved).await {
            return Err(ServerError::ShuttingDown);
        }
    }
}

/// Sends the changes after `cursor` up to what this node has applied, whole revisions at a
/// time, and moves `cursor` past them.
async fn catch_up(node: &Node, filter: &BTreeSet<&str>, cursor: &mut u64, out: &Outbox) -> Result<(), ServerError> {
    loop {
        let (entries, seen) = match node.reader.changes_after(*cursor, WATCH_BATCH_ENTRIES_MAX)? {
            Changes::Page(entries, seen) => (entries, seen),
            Changes::Compacted(cp) => {
                return Err(ServerError::Compacted { after_revision: *cursor, compacted_revision: cp.revision });
            }
        };
        let caught_up = entries.len() < WATCH_BATCH_ENTRIES_MAX;
        for batch in group_by_revision(entries, filter, node) {
            out.send(Kind::Changes(batch)).await?;
        }
        *cursor = (*cursor).max(seen);
        if caught_up {
            return Ok(());
        }
    }
}

/// Whether the node serving a stream can still vouch that it is current: a check every
/// `watch.progress_interval_ms` confirms a revision through the read lease ([`confirm`]), and a
/// node that could not for `watch.unconfirmed_max_ms` must end its streams so their clients go
/// to a node that can. Shared by every stream a node serves (`Watch`, flagd's `EventStream` and
/// `SyncFlags`).
pub(crate) struct Currency {
    every: Duration,
    unconfirmed_max: Duration,
    next_check: Instant,
    confirmed_at: Instant,
    why_unconfirmed: String,
}

/// A node that could not confirm it is current for too long.
pub(crate) struct Unconfirmed {
    pub unconfirmed_ms: u64,
    pub why: String,
}

impl Unconfirmed {
    /// The error that ends the stream: UNAVAILABLE `LEASE_EXPIRED`, saying what to do (`next`).
    pub fn into_error(self, next: &str) -> ServerError {
        ServerError::LeaseExpired {
            expired_ms: None,
            cause: format!(
                "this node could not confirm it is current for {} ms ({}); {next}",
                self.unconfirmed_ms, self.why
            ),
        }
    }
}

impl Currency {
    /// The first check is due at once: a client must not take what a cut-off node sent it at
    /// the start for current until the node has vouched for it.
    pub fn new(node: &Node) -> Self {
        let now = Instant::now();
        Currency {
            every: Duration::from_millis(node.config.watch.progress_interval_ms),
            unconfirmed_max: Duration::from_millis(node.config.watch.unconfirmed_max_ms),
            next_check: now,
            confirmed_at: now,
            why_unconfirmed: String::from("no confirmation yet"),
        }
    }

    pub fn next_check(&self) -> Instant {
        self.next_check
    }

    /// Runs the check if it is due: `Ok(Some(index))` when the node confirmed `index` now,
    /// `Ok(None)` when not due or not confirmed yet within the bound, `Err` past the bound.
    pub async fn check(
        &mut self,
        node: &Arc<Node>,
        applied: &mut watch::Receiver<u64>,
    ) -> Result<Option<u64>, Unconfirmed> {
        let now = Instant::now();
        if now < self.next_check {
            return Ok(None);
        }
        self.next_check = now + self.every;
        match confirm(node, applied, self.every).await {
            Ok(index) => {
                self.confirmed_at = now;
                return Ok(Some(index));
            }
            Err(why) => self.why_unconfirmed = why,
        }
        let unconfirmed = self.confirmed_at.elapsed();
        if unconfirmed >= self.unconfirmed_max {
            let unconfirmed_ms = u64::try_from(unconfirmed.as_millis()).unwrap_or(u64::MAX);
            return Err(Unconfirmed { unconfirmed_ms, why: self.why_unconfirmed.clone() });
        }
        Ok(None)
    }
}

/// A revision this node has just confirmed through its read lease (every write the cluster
/// acknowledged before the lease's round was sent) and has applied; or why it cannot, within
/// about `wait`.
async fn confirm(node: &Arc<Node>, applied: &mut watch::Receiver<u64>, wait: Duration) -> Result<u64, String> {
    if node.faults.progress_skip_check {
        // Injected bug (simulation only): vouch for whatever this node has applied.
        return Ok(*applied.borrow());
    }
    let index = read_index::probe_lease(node, wait).await?;
    match tokio::time::timeout(wait, applied.wait_for(|a| *a >= index)).await {
        Ok(Ok(_)) => Ok(index),
        Ok(Err(_)) => Err("the node is stopping".into()),
        Err(_) => Err(format!("revision {index} was confirmed but not applied within {} ms", wait.as_millis())),
    }
}

/// One open stream: its slot of `limits::WATCH_STREAMS_MAX`, counted in the
/// `vexil_watch_streams` gauge while held.
pub(crate) struct WatchSlot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl WatchSlot {
    /// A slot of `slots` (shared by every stream a node serves: `Watch`, flagd's
    /// `EventStream` and `SyncFlags`), or `WATCH_LIMIT` when none is free.
    pub(crate) fn take(slots: &Arc<Semaphore>, node: &Node) -> Result<Self, ServerError> {
        let permit = slots.clone().try_acquire_owned().map_err(|_| ServerError::WatchLimit)?;
        Ok(Self::new(permit, node))
    }

    fn new(permit: OwnedSemaphorePermit, node: &Node) -> Self {
        let open = node.metrics.watch_streams.clone();
        open.inc();
        WatchSlot { _permit: permit, open }
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

fn state_to_proto(s: vexil_raft_store::NamespaceState) -> NamespaceState {
    NamespaceState {
        flags: s.flags.into_iter().map(|(k, rec)| flag_to_proto(&s.namespace, &k, rec)).collect(),
        evaluators_json: json_or_empty(&s.record.evaluators_json),
        metadata_json: json_or_empty(&s.record.metadata_json),
        settings: Some(s.settings.into()),
        namespace: s.namespace,
    }
}

fn json_or_empty(s: &str) -> String {
    if s.is_empty() { "{}".into() } else { s.to_string() }
}

/// Turns audit entries into one batch per revision, keeping the watched namespaces' flag and
/// namespace changes (membership and token changes are not part of the flag feed).
fn group_by_revision(entries: Vec<AuditEntry>, filter: &BTreeSet<&str>, node: &Node) -> Vec<ChangeBatch> {
    let mut batches: Vec<ChangeBatch> = Vec::new();
    for e in entries {
        let flag_feed = matches!(
            e.action,
            AuditAction::FlagCreate
                | AuditAction::FlagUpdate
                | AuditAction::FlagSetState
                | AuditAction::FlagDelete
                | AuditAction::NamespaceUpdate
                | AuditAction::NamespaceSettings
        );
        if !flag_feed || (!filter.is_empty() && !filter.contains(e.namespace.as_str())) {
            continue;
        }
        let change = to_change(e, node);
        match batches.last_mut() {
            Some(b) if b.revision == change.revision => b.changes.push(change),
            _ => batches.push(ChangeBatch { revision: change.revision, changes: vec![change] }),
        }
    }
    batches
}

fn to_change(e: AuditEntry, node: &Node) -> Change {
    let mut change = Change {
        revision: e.revision,
        seq: e.seq,
        action: e.action.as_str().into(),
        namespace: e.namespace.clone(),
        key: e.key.clone(),
        flag: None,
        evaluators_json: String::new(),
        metadata_json: String::new(),
        settings: None,
    };
    match (e.action, &e.after) {
        (AuditAction::NamespaceUpdate, Some(after)) => {
            // `after` is {"$evaluators": {...}, "metadata": {...}}.
            let v: serde_json::Value = serde_json::from_str(after).unwrap_or_default();
            change.evaluators_json = v.get("$evaluators").map(|x| x.to_string()).unwrap_or_else(|| "{}".into());
            change.metadata_json = v.get("metadata").map(|x| x.to_string()).unwrap_or_else(|| "{}".into());
        }
        (AuditAction::NamespaceSettings, Some(after)) => {
            // `after` is the settings' JSON form, which the stored settings were made from.
            let parsed =
                serde_json::from_str(after).ok().and_then(|v| vexil_model::NamespaceSettings::from_json(&v).ok());
            change.settings = parsed.map(Into::into);
            // Clients older than this change take any change without a key for a
            // `namespace.update`, replacing `$evaluators` and metadata with what it carries:
            // give them the namespace's current ones (newer than this revision only while a
            // replay catches up, which the later `namespace.update` then repeats).
            let record = node.reader.get_namespace(&e.namespace).ok().and_then(|(_, r)| r).unwrap_or_default();
            change.evaluators_json = json_or_empty(&record.evaluators_json);
            change.metadata_json = json_or_empty(&record.metadata_json);
        }
        (_, Some(after)) => {
            // Creation bookkeeping is not in the audit entry; the current record has it while
            // the flag is the same incarnation (created at or before this change).
            let (created_revision, created_at_ms) = if e.action == AuditAction::FlagCreate {
                (e.revision, e.time_ms)
            } else {
                match node.reader.get_flag(&e.namespace, &e.key) {
                    Ok((_, Some(cur))) if cur.created_revision <= e.revision => {
                        (cur.created_revision, cur.created_at_ms)
                    }
                    _ => (0, 0),
                }
            };
            change.flag = Some(Flag {
                namespace: e.namespace,
                key: e.key,
                spec_json: after.clone(),
                version: e.version,
                created_revision,
                mod_revision: e.revision,
                created_at_ms,
                updated_at_ms: e.time_ms,
                updated_by: e.actor,
            });
        }
        (_, None) => {}
    }
    change
}
