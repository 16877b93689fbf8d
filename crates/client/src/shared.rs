//! The state a client's handles and its background tasks share ([`Shared`]): the watched
//! namespaces, the current local copy (an `ArcSwap` evaluation loads lock-free), the status
//! and the change-event channel. The watcher and the disk cache publish through it; the
//! handles in `client.rs` and `eval.rs` read it. It depends only on the data modules
//! (`store.rs`, `status.rs`), so every other module can depend on it without a cycle.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch};

use crate::limits;
use crate::status::{ChangeEvent, StatusState, UpdateKind};
use crate::store::{FlagChange, Snapshot};

/// Everything evaluation and the background tasks share.
pub(crate) struct Shared {
    /// The watched namespaces, in configuration order (the first is the default).
    pub(crate) names: Arc<[Box<str>]>,
    /// The current local copy. Evaluation loads it lock-free; only the watcher (and the disk
    /// cache, before the watcher starts) stores it.
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) status: watch::Sender<StatusState>,
    pub(crate) events: broadcast::Sender<ChangeEvent>,
    /// Whether the copy is stale ([`crate::Status::is_stale`]), changed when it crosses.
    pub(crate) stale: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new(names: Arc<[Box<str>]>) -> Shared {
        Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::empty(names.clone())),
            names,
            status: watch::channel(StatusState::default()).0,
            events: broadcast::channel(limits::CHANGE_EVENTS_CAPACITY).0,
            stale: watch::channel(false).0,
        }
    }

    /// Tells `stale` subscribers when the copy became stale or fresh again. Called wherever
    /// staleness can change: a confirmation, a stream opening or ending, and the watcher's
    /// `max_staleness` timer (the moment an open but silent stream crosses it).
    pub(crate) fn refresh_stale(&self) {
        let now = self.status.borrow().to_status().stale;
        self.stale.send_if_modified(|was| {
            let changed = *was != now;
            *was = now;
            changed
        });
    }

    /// Makes `snap` the current state, then tells subscribers, then status readers. In that
    /// order: a subscriber that reads flags on an event sees the new state, and once a status
    /// wait (`wait_for_revision`, `wait_synced`) returns, every event up to that revision has
    /// been sent, so a subscription taken afterwards never receives an older event.
    pub(crate) fn publish(&self, snap: Snapshot, kind: UpdateKind, changes: Vec<FlagChange>) {
        let revision = snap.revision();
        let source = snap.source();
        self.snapshot.store(Arc::new(snap));
        tracing::debug!(revision, ?kind, changes = changes.len(), "local copy updated");
        // No subscriber is fine.
        let _ = self.events.send(ChangeEvent { revision, kind, changes });
        self.status.send_modify(|s| {
            s.revision = revision;
            s.source = source;
            s.data_version += 1;
        });
        self.refresh_stale();
    }

    /// The cluster confirmed the copy current up to `revision` (a `progress` message, which a
    /// node sends only after confirming it through its read lease): the only confirmation;
    /// a snapshot or a change says what a node has, not that nothing newer exists.
    pub(crate) fn confirm(&self, revision: u64) {
        let current = self.snapshot.load();
        if let Some(next) = current.advance(revision) {
            self.snapshot.store(Arc::new(next));
        }
        let revision = self.snapshot.load().revision();
        self.status.send_modify(|s| {
            s.revision = revision;
            s.confirmed_at = Some((Instant::now(), SystemTime::now()));
        });
        self.refresh_stale();
    }
}
