//! Disk space: each node measures its data directory and the free space of the filesystem it
//! lives on, and raises the replicated NOSPACE alarm before either runs out — while the disk
//! still has room to commit the alarm and to keep serving.
//!
//! - **Quota** (`storage.quota_bytes`): the data directory (log, state machine, snapshots) may
//!   hold at most this many bytes (file lengths, as `du --apparent-size` counts them).
//! - **Reserve** (`storage.free_bytes_min`): the filesystem keeps at least this much free, for
//!   what a quota cannot see: other files on the disk, RocksDB compactions (which rewrite data
//!   before they delete the old copy), and the writes that land between two checks.
//!
//! Crossing either raises the alarm of this node ([`Command::RaiseAlarm`], one log entry,
//! audited). Once any alarm is raised the state machine refuses every write that grows the
//! state (`WriteError::NoSpace`), on every node alike; reads, evaluation, streams, kill
//! switches, deletes and token revocations go on. An operator clears the alarms
//! (`vexilctl cluster alarm clear`) after making room; a node still short of space raises
//! its alarm again at its next check. Alarms are never cleared automatically (as etcd's
//! are not): a cluster that ran out once needs someone to look at why.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vexil_raft_store::{Command, Request};

use crate::node::Node;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the data directory (every file's length, recursively).
    pub data_bytes: u64,
    /// Bytes an unprivileged process may still write to the filesystem.
    pub free_bytes: u64,
}

/// The size of everything under `dir`. Files that vanish while it walks (RocksDB deletes
/// obsolete files at any time) count as gone.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += dir_bytes(&entry.path()).unwrap_or(0);
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Measures `dir` and its filesystem.
pub fn measure(dir: &Path) -> std::io::Result<Usage> {
    let stat = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    let free_bytes = stat.f_bavail.saturating_mul(stat.f_frsize);
    Ok(Usage { data_bytes: dir_bytes(dir)?, free_bytes })
}

/// Why `usage` needs the alarm under the configured limits, naming the key to change; `None`
/// when it does not. A limit of 0 is off.
pub fn shortage(usage: Usage, quota_bytes: u64, free_bytes_min: u64) -> Option<String> {
    if quota_bytes > 0 && usage.data_bytes >= quota_bytes {
        return Some(format!(
            "the data directory holds {} bytes, at or over storage.quota_bytes = {quota_bytes}",
            usage.data_bytes
        ));
    }
    if free_bytes_min > 0 && usage.free_bytes < free_bytes_min {
        return Some(format!(
            "the filesystem has {} bytes free, under storage.free_bytes_min = {free_bytes_min}",
            usage.free_bytes
        ));
    }
    None
}

/// Checks this node's space every `storage.check_interval_ms` until the node leaves: updates
/// the metrics and raises this node's alarm when it is short and none of its own is raised.
pub async fn monitor(node: Arc<Node>) {
    let every = Duration::from_millis(node.config.storage.check_interval_ms);
    let mut raised = 0u64;
    loop {
        tokio::select! {
            () = node.leaving.begun() => return,
            () = tokio::time::sleep(every) => {}
        }
        // A directory walk and a statvfs: blocking, and slowest on the sick disk this watches.
        let dir = node.config.data_dir.clone();
        let measured = tokio::task::spawn_blocking(move || measure(&dir)).await;
        let usage = match measured.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, dir = %node.config.data_dir.display(), "cannot measure the data directory");
                continue;
            }
        };
        let alarms = match node.reader.alarms() {
            Ok((_, alarms)) => alarms,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alarms");
                continue;
            }
        };
        node.metrics.storage(usage, node.config.storage.quota_bytes, alarms.len());
        let Some(why) = shortage(usage, node.config.storage.quota_bytes, node.config.storage.free_bytes_min) else {
            continue;
        };
        if alarms.contains_key(&node.id) {
            continue;
        }
        raised += 1;
        tracing::error!(reason = %why, "out of space: raising the NOSPACE alarm; the cluster refuses writes that grow it");
        let req = Request {
            request_id: format!("alarm-{}-{}-{raised}", node.id, node.now_ms()),
            actor: format!("node-{}", node.id),
            reason: why.clone(),
            time_ms: node.now_ms(),
            command: Command::RaiseAlarm { node_id: node.id, reason: why },
        };
        if let Err(e) = node.write(req).await {
            tracing::warn!(error = %e, "the NOSPACE alarm could not be raised yet; trying again at the next check");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_is_due_at_the_quota_or_under_the_reserve_and_names_the_key() {
        let usage = |data_bytes, free_bytes| Usage { data_bytes, free_bytes };
        assert_eq!(shortage(usage(99, 1_000), 100, 10), None);
        let over = shortage(usage(100, 1_000), 100, 10).expect("at the quota");
        assert!(over.contains("storage.quota_bytes = 100"), "{over}");
        let low = shortage(usage(1, 9), 100, 10).expect("under the reserve");
        assert!(low.contains("storage.free_bytes_min = 10"), "{low}");
        assert_eq!(shortage(usage(u64::MAX, 0), 0, 0), None, "0 turns both off");
    }

    #[test]
    fn a_measure_counts_every_file_under_the_directory() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).expect("a");
        std::fs::create_dir(dir.path().join("sub")).expect("sub");
        std::fs::write(dir.path().join("sub").join("b"), vec![0u8; 234]).expect("b");
        let usage = measure(dir.path()).expect("measure");
        assert_eq!(usage.data_bytes, 1234);
        assert!(usage.free_bytes > 0);
    }
}
