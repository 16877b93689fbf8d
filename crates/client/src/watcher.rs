//! The background task that keeps the local copy current from the cluster's watch stream.
//!
//! Protocol (see `proto/vexil/v1/watch.proto`):
//!
//! 1. The first stream of a process asks for `initial_snapshot`: the full state of the
//!    watched namespaces at some revision R, which replaces whatever the client had (nothing,
//!    or the disk cache). Changes follow, each revision's in one `ChangeBatch`.
//! 2. Each batch is applied atomically and only if its revision is greater than the last
//!    applied one ([`Snapshot::apply_batch`]); progress messages move the revision forward
//!    without a change.
//! 3. When a stream breaks (node killed, connection lost, keep-alive unanswered, a batch that
//!    would go backwards), the watcher moves to the next endpoint and resumes with
//!    `after_revision` = the last applied revision, without a snapshot. The serving node waits
//!    until it has applied that revision, then streams every later change: nothing is missed,
//!    nothing applied twice. Consecutive failures back off exponentially with jitter; a stream
//!    that delivered something resets the backoff.
//! 4. `OUT_OF_RANGE` / `REVISION_COMPACTED` means the changes after our revision are no longer
//!    retained: the watcher asks for a snapshot again (step 1) — except that a snapshot older
//!    than what is already applied is refused, so the local copy never goes back in time within
//!    a process.
//!
//! Architecture invariant: the watcher is the only writer of the shared snapshot, and it never
//! waits on evaluation; evaluation never waits on it.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::Code;
use vexil_proto::v1 as proto;
use vexil_proto::v1::watch_client::WatchClient;
use vexil_proto::v1::watch_response::Kind;

use crate::error::{Error, ErrorReason};
use crate::limits;
use crate::shared::Shared;
use crate::status::UpdateKind;
use crate::store::{self, DataSource};
use crate::transport::{NodeChannel, backoff};

/// How one stream ended.
#[derive(Debug)]
enum End {
    /// The process is shutting down.
    Shutdown,
    /// Resync with a snapshot (the revision we would resume from is compacted).
    Compacted,
    /// Try the next endpoint; `delivered` says whether this stream applied anything.
    Failed { delivered: bool, error: String },
    /// An out-of-region stream ran for [`Home::return_after`]: resume in the client's region.
    Home,
}

/// The client's region among the watch channels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Home {
    /// The first `local` channels are in the client's region (0: it has none).
    pub(crate) local: usize,
    /// How long a stream outside the region runs before it resumes in the region.
    pub(crate) return_after: std::time::Duration,
}

/// Runs until `shutdown` flips (or its sender is dropped). `channels` are the watch channels
/// (keep-alive, no deadline, the client's credentials), one per endpoint, the region's first.
pub(crate) async fn run(
    shared: Arc<Shared>,
    channels: Vec<(String, NodeChannel)>,
    region: Home,
    mut shutdown: watch::Receiver<bool>,
) {
    let in_region = region.local;
    let namespaces: Vec<String> = shared.names.iter().map(|n| n.to_string()).collect();
    // Spread many clients over the nodes (of their region, if they have one).
    let home = || rand::random_range(0..if in_region > 0 { in_region } else { channels.len() });
    let mut index = home();
    // Whether this process already holds the cluster's state (and can resume from it).
    let mut synced = false;
    let mut failures = 0u32;
    let mut streams = 0u64;
    loop {
        let (url, channel) = &channels[index];
        let request = if synced {
            proto::WatchRequest {
                namespaces: namespaces.clone(),
                after_revision: shared.snapshot.load().revision(),
                initial_snapshot: false,
            }
        } else {
            proto::WatchRequest { namespaces: namespaces.clone(), after_revision: 0, initial_snapshot: true }
        };
        tracing::debug!(endpoint = %url, after_revision = request.after_revision, snapshot = request.initial_snapshot, "opening watch stream");
        let away = in_region > 0 && index >= in_region;
        let end = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => End::Shutdown,
            end = stream(&shared, url, channel.clone(), request, &mut synced, &mut streams) => end,
            () = tokio::time::sleep(region.return_after), if away => End::Home,
        };
        shared.status.send_modify(|s| {
            s.connected = false;
            s.endpoint = None;
        });
        shared.refresh_stale();
        let delay = match end {
            End::Shutdown => return,
            End::Compacted => {
                tracing::info!(endpoint = %url, "changes after our revision are compacted; resyncing with a snapshot");
                synced = false;
                failures = 0;
                limits::WATCH_BACKOFF_MIN
            }
            End::Failed { delivered, error } => {
                if delivered {
                    failures = 0;
                } else {
                    failures = failures.saturating_add(1);
                }
                tracing::warn!(endpoint = %url, error = %error, "watch stream failed; trying the next node");
                shared.status.send_modify(|s| s.last_error = Some(format!("{url}: {error}")));
                index = (index + 1) % channels.len();
                backoff(failures, limits::WATCH_BACKOFF_MIN, limits::WATCH_BACKOFF_MAX)
            }
            End::Home => {
                tracing::info!(endpoint = %url, "resuming the watch stream in the client's region");
                index = home();
                failures = 0;
                std::time::Duration::ZERO
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn is_compacted(status: &tonic::Status) -> bool {
    status.code() == Code::OutOfRange && Error::from_status(status).reason() == Some(ErrorReason::RevisionCompacted)
}

fn failed(delivered: bool, status: &tonic::Status) -> End {
    if is_compacted(status) {
        End::Compacted
    } else {
        End::Failed { delivered, error: format!("{:?}: {}", status.code(), status.message()) }
    }
}

/// One watch stream, from opening to its end.
async fn stream(
    shared: &Shared,
    url: &str,
    channel: NodeChannel,
    request: proto::WatchRequest,
    synced: &mut bool,
    streams: &mut u64,
) -> End {
    let mut client = WatchClient::new(channel).max_decoding_message_size(limits::WATCH_MESSAGE_BYTES_MAX);
    let mut messages = match client.watch(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(false, &status),
    };
    *streams += 1;
    let reconnects = streams.saturating_sub(1);
    shared.status.send_modify(|s| {
        s.connected = true;
        s.endpoint = Some(url.to_string());
        s.last_error = None;
        s.reconnects = reconnects;
    });
    shared.refresh_stale();
    tracing::info!(endpoint = %url, revision = shared.snapshot.load().revision(), "watch stream open");
    let mut delivered = false;
    let mut last_message = std::time::Instant::now();
    // The parts of a snapshot received so far (it is applied once its last part arrives).
    let mut parts: Option<proto::WatchSnapshot> = None;
    loop {
        // A node that stops confirming (cut off, paused, or silent) is left once the copy has
        // gone `max_staleness` without a confirmation and the stream that long without any
        // message (a new stream, or one still sending a large snapshot, is not cut short; the
        // status says stale meanwhile all the same).
        let (left, max) = {
            let st = shared.status.borrow();
            (st.confirmation_due_in(), st.max_staleness)
        };
        let due_in = left.max(max.saturating_sub(last_message.elapsed()));
        let msg = match tokio::time::timeout(due_in, messages.message()).await {
            Ok(Ok(Some(m))) => {
                last_message = std::time::Instant::now();
                m
            }
            Ok(Ok(None)) => return End::Failed { delivered, error: "the server ended the stream".into() },
            Ok(Err(status)) => return failed(delivered, &status),
            Err(_) => {
                shared.refresh_stale();
                return End::Failed {
                    delivered,
                    error: format!("the node did not confirm the copy current within {max:?}; moving to another node"),
                };
            }
        };
        if parts.is_some() && !matches!(msg.kind, Some(Kind::Snapshot(_))) {
            return End::Failed { delivered, error: "the node sent another message inside a snapshot".into() };
        }
        match msg.kind {
            Some(Kind::Snapshot(part)) => {
                let snap = match parts.take() {
                    Some(mut joined) if joined.revision == part.revision => {
                        joined.absorb(part);
                        joined
                    }
                    Some(_) => {
                        return End::Failed { delivered, error: "the parts of a snapshot differ in revision".into() };
                    }
                    None => part,
                };
                if snap.more {
                    parts = Some(snap);
                    continue;
                }
                let current = shared.snapshot.load();
                if *synced && snap.revision < current.revision() {
                    return End::Failed {
                        delivered,
                        error: format!(
                            "the node sent a snapshot at revision {}, older than the applied revision {}",
                            snap.revision,
                            current.revision()
                        ),
                    };
                }
                let (next, changes) =
                    current.replace(snap.revision, DataSource::Cluster, store::states_from_proto(&snap));
                shared.publish(next, UpdateKind::Snapshot, changes);
                *synced = true;
                tracing::info!(endpoint = %url, revision = snap.revision, "state received from the cluster");
            }
            Some(Kind::Changes(batch)) => {
                if !*synced {
                    return End::Failed { delivered, error: "the node sent changes before a snapshot".into() };
                }
                match shared.snapshot.load().apply_batch(&batch) {
                    Ok((next, changes)) => shared.publish(next, UpdateKind::Changes, changes),
                    Err(e) => return End::Failed { delivered, error: format!("refused a change batch: {e}") },
                }
            }
            Some(Kind::Progress(p)) if *synced => shared.confirm(p.revision),
            // The node is cut off from the leader: move to another before it ends the stream.
            Some(Kind::Stale(s)) => {
                return End::Failed {
                    delivered,
                    error: format!(
                        "the node could not confirm it is current for {} ms: {}",
                        s.unconfirmed_ms, s.reason
                    ),
                };
            }
            Some(Kind::Progress(_)) | None => {}
        }
        delivered = true;
    }
}
