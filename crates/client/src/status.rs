//! Readiness, staleness and change events: what an application (or its readiness probe) can
//! ask about the local copy, and how it learns that flags changed.
//!
//! The watcher is the only writer. Status lives in a `tokio::sync::watch` channel (read with a
//! short lock, never on the evaluation path); change events go out on a `broadcast` channel,
//! one event per applied revision, in revision order.

use std::time::{Duration, Instant, SystemTime};

use crate::store::{DataSource, FlagChange};

/// Why the local copy changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    /// The disk cache was loaded at start.
    DiskCache,
    /// A full state from the cluster (the first connection, or a resync after compaction).
    Snapshot,
    /// One revision's changes from the watch stream.
    Changes,
}

/// One update of the local copy. Subscribe with [`crate::Client::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The revision the local copy reflects after this update.
    pub revision: u64,
    pub kind: UpdateKind,
    /// Flags that changed (for a snapshot: the differences from the previous state).
    pub changes: Vec<FlagChange>,
}

/// A point-in-time report on the local copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// There is flag data to evaluate (from the cluster or the disk cache). Without it every
    /// evaluation serves the caller's default with `PROVIDER_NOT_READY`.
    pub ready: bool,
    pub source: Option<DataSource>,
    /// A watch stream is open and has delivered its first message.
    pub connected: bool,
    /// The node the stream is open to (when connected).
    pub endpoint: Option<String>,
    /// The revision the local copy reflects (0 without data).
    pub revision: u64,
    /// When the cluster last confirmed the copy current (a progress message, sent by a node
    /// only after confirming through its read lease; the disk cache's write time before any);
    /// `None` if it never has.
    pub last_update: Option<SystemTime>,
    /// Time since `last_update`: how stale the copy may be.
    pub since_last_update: Option<Duration>,
    /// Ready, but not confirmed current within `max_staleness` (or not connected): serving
    /// last-known-good values.
    pub stale: bool,
    /// Streams (re)opened after the first one.
    pub reconnects: u64,
    /// The last connection or stream error, if the stream is down.
    pub last_error: Option<String>,
}

impl Status {
    /// Ready, but not connected or not confirmed current within `max_staleness`: serving
    /// last-known-good values.
    pub fn is_stale(&self) -> bool {
        self.stale
    }
}

/// The watcher's view of the status (kept in a `watch` channel; `Status` is derived from it).
#[derive(Debug, Clone)]
pub(crate) struct StatusState {
    pub(crate) source: Option<DataSource>,
    pub(crate) revision: u64,
    pub(crate) connected: bool,
    pub(crate) endpoint: Option<String>,
    pub(crate) confirmed_at: Option<(Instant, SystemTime)>,
    /// `ClientBuilder::max_staleness`.
    pub(crate) max_staleness: Duration,
    pub(crate) reconnects: u64,
    pub(crate) last_error: Option<String>,
    /// +1 per data change (not per progress message): what the disk cache writer follows.
    pub(crate) data_version: u64,
}

impl Default for StatusState {
    fn default() -> Self {
        StatusState {
            source: None,
            revision: 0,
            connected: false,
            endpoint: None,
            confirmed_at: None,
            max_staleness: crate::limits::MAX_STALENESS_DEFAULT,
            reconnects: 0,
            last_error: None,
            data_version: 0,
        }
    }
}

impl StatusState {
    /// How long the stream may stay silent before the copy is stale: what is left of
    /// `max_staleness` since the last confirmation (all of it if there was none yet).
    pub(crate) fn confirmation_due_in(&self) -> Duration {
        match self.confirmed_at {
            Some((mono, _)) => self.max_staleness.saturating_sub(mono.elapsed()),
            None => self.max_staleness,
        }
    }

    pub(crate) fn to_status(&self) -> Status {
        Status {
            ready: self.source.is_some(),
            source: self.source,
            connected: self.connected,
            endpoint: self.endpoint.clone(),
            revision: self.revision,
            last_update: self.confirmed_at.map(|(_, wall)| wall),
            since_last_update: self.confirmed_at.map(|(mono, _)| mono.elapsed()),
            stale: self.source.is_some()
                && (!self.connected || self.confirmed_at.is_none_or(|(mono, _)| mono.elapsed() > self.max_staleness)),
            reconnects: self.reconnects,
            last_error: self.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_is_derived_from_the_last_confirmation() {
        let mut s = StatusState::default();
        let st = s.to_status();
        assert!(!st.ready && !st.is_stale() && st.since_last_update.is_none());
        s.source = Some(DataSource::Cluster);
        s.connected = true;
        s.confirmed_at = Some((Instant::now() - Duration::from_secs(3), SystemTime::now()));
        let st = s.to_status();
        assert!(st.ready && !st.is_stale());
        assert!(st.since_last_update.unwrap() >= Duration::from_secs(3));
        s.connected = false;
        assert!(s.to_status().is_stale());
        // Connected, but not confirmed within max_staleness: stale too.
        s.connected = true;
        s.max_staleness = Duration::from_secs(2);
        assert!(s.to_status().is_stale());
        assert_eq!(s.confirmation_due_in(), Duration::ZERO);
        s.confirmed_at = Some((Instant::now(), SystemTime::now()));
        assert!(!s.to_status().is_stale());
        assert!(s.confirmation_due_in() > Duration::from_millis(1_900));
    }
}
