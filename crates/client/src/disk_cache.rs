//! The optional on-disk cache: the last good state, so a service restarted while the cluster
//! is unreachable starts with its flags instead of its code defaults.
//!
//! Format: one JSON file (human-readable, diffable, and `serde_json` reads it back exactly):
//!
//! ```json
//! {"format": "vexil-client-cache/1", "revision": 42, "written_at_ms": 1767225600000,
//!  "namespaces": {"checkout": {"evaluators": {..}, "metadata": {..}, "settings": {..},
//!                              "flags": [{"key": "new-checkout", "spec": {..}, "version": 3, ..}]}}}
//! ```
//!
//! Writing: after the local copy changes (only with data from the cluster; never the cache's
//! own data written back), the writer waits [`limits::DISK_CACHE_DEBOUNCE`] for more changes,
//! then writes `<file>.tmp`, fsyncs it, renames it over the file and fsyncs the directory: a
//! crash leaves either the old file or the new one, never a torn one. On [`crate::Client::close`]
//! a pending change is written at once.
//!
//! Loading: at start, before the first connection. A missing, unreadable, corrupt or foreign
//! file is logged and ignored (the client then serves defaults until the cluster answers).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;
use vexil_model::FlagRecord;

use crate::limits;
use crate::shared::Shared;
use crate::status::UpdateKind;
use crate::store::{DataSource, Snapshot, spec_value, state_from_records};

/// The format tag; a file with another tag is ignored.
pub const FORMAT: &str = "vexil-client-cache/1";

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: String,
    revision: u64,
    written_at_ms: i64,
    namespaces: BTreeMap<String, CachedNamespace>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedNamespace {
    #[serde(default)]
    evaluators: Map<String, Value>,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    settings: vexil_model::NamespaceSettings,
    flags: Vec<CachedFlag>,
}

/// A flag as the file holds it: the [`FlagRecord`]'s fields with the flag's key, and the
/// definition as a JSON value rather than text (so the file reads as JSON all the way down).
#[derive(Debug, Serialize, Deserialize)]
struct CachedFlag {
    key: String,
    spec: Value,
    version: u64,
    created_revision: u64,
    mod_revision: u64,
    created_at_ms: i64,
    updated_at_ms: i64,
    updated_by: String,
}

impl CachedFlag {
    fn new(key: &str, record: &FlagRecord) -> CachedFlag {
        let FlagRecord { spec_json, version, created_revision, mod_revision, created_at_ms, updated_at_ms, updated_by } =
            record;
        CachedFlag {
            key: key.to_owned(),
            spec: spec_value(spec_json),
            version: *version,
            created_revision: *created_revision,
            mod_revision: *mod_revision,
            created_at_ms: *created_at_ms,
            updated_at_ms: *updated_at_ms,
            updated_by: updated_by.clone(),
        }
    }

    /// The key and the record. A definition that was not JSON was cached as a JSON string:
    /// its text comes back as it was.
    fn into_record(self) -> (String, FlagRecord) {
        let spec_json = match self.spec {
            Value::String(text) => text,
            spec => spec.to_string(),
        };
        let record = FlagRecord {
            spec_json,
            version: self.version,
            created_revision: self.created_revision,
            mod_revision: self.mod_revision,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            updated_by: self.updated_by,
        };
        (self.key, record)
    }
}

fn encode(snap: &Snapshot) -> Result<Vec<u8>, serde_json::Error> {
    let namespaces = snap
        .names()
        .iter()
        .filter_map(|name| {
            let ns = snap.namespace(name)?;
            Some((
                name.to_string(),
                CachedNamespace {
                    evaluators: ns.evaluators().clone().into_iter().collect(),
                    metadata: ns.metadata().clone(),
                    settings: ns.settings(),
                    flags: ns.records().map(|(key, record)| CachedFlag::new(key, record)).collect(),
                },
            ))
        })
        .collect();
    let file = CacheFile {
        format: FORMAT.into(),
        revision: snap.revision(),
        written_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        namespaces,
    };
    serde_json::to_vec(&file)
}

/// Writes `bytes` to `path` atomically and durably.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        // Durability: the data must be on disk before the rename makes it the cache, or a
        // crash could leave a renamed but empty file.
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // Durability: the rename itself lives in the directory; sync it so it survives a crash.
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(())
}

/// Reads a cache file; `Ok(None)` when there is none.
fn read(path: &Path) -> Result<Option<CacheFile>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if meta.len() > limits::DISK_CACHE_BYTES_MAX {
        return Err(format!("{} bytes; the limit is {}", meta.len(), limits::DISK_CACHE_BYTES_MAX));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| format!("not a cache file: {e}"))?;
    if file.format != FORMAT {
        return Err(format!("format {:?}, expected {FORMAT:?}", file.format));
    }
    Ok(Some(file))
}

/// Loads the cache into the client's state if there is a usable one (the state must still be
/// empty: this runs before the watcher starts).
pub(crate) fn load_into(shared: &Shared, path: &Path) {
    let file = match read(path) {
        Ok(Some(f)) => f,
        Ok(None) => {
            tracing::info!(path = %path.display(), "no disk cache yet");
            return;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the disk cache");
            return;
        }
    };
    if !shared.names.iter().any(|n| file.namespaces.contains_key(&**n)) {
        tracing::warn!(path = %path.display(), "ignoring the disk cache: it holds none of the watched namespaces");
        return;
    }
    let states = file
        .namespaces
        .into_iter()
        .map(|(name, ns)| {
            let records = ns.flags.into_iter().map(CachedFlag::into_record).collect();
            (name, state_from_records(records, ns.evaluators.into_iter().collect(), ns.metadata, ns.settings))
        })
        .collect();
    let (snap, changes) = shared.snapshot.load().replace(file.revision, DataSource::DiskCache, states);
    shared.publish(snap, UpdateKind::DiskCache, changes);
    // The cache's age is how stale its data may be.
    let written = UNIX_EPOCH + Duration::from_millis(file.written_at_ms.max(0) as u64);
    let age = SystemTime::now().duration_since(written).unwrap_or_default();
    if let Some(at) = Instant::now().checked_sub(age) {
        shared.status.send_modify(|s| s.confirmed_at = Some((at, written)));
        shared.refresh_stale();
    }
    tracing::info!(path = %path.display(), revision = file.revision, age_s = age.as_secs(), "started from the disk cache");
}

/// Writes the cache after changes (debounced) until shutdown; then writes a pending change.
/// `written` is the data version the file already reflects (the state at start: the cache
/// itself, or nothing), read before the watcher could change it.
pub(crate) async fn run_writer(
    shared: std::sync::Arc<Shared>,
    path: PathBuf,
    mut written: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut status = shared.status.subscribe();
    // A change published before this task first ran must not be missed.
    status.mark_changed();
    loop {
        let stop = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => true,
            r = status.changed() => r.is_err(),
        };
        if !stop {
            // Debounce: let a burst of changes settle into one write.
            let stop = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => true,
                () = tokio::time::sleep(limits::DISK_CACHE_DEBOUNCE) => false,
            };
            written = flush(&shared, &path, written).await;
            if !stop {
                continue;
            }
        }
        flush(&shared, &path, written).await;
        return;
    }
}

/// Writes the current state if it came from the cluster and changed since `written`; returns
/// the data version now on disk.
async fn flush(shared: &Shared, path: &Path, written: u64) -> u64 {
    let (version, source) = {
        let s = shared.status.borrow();
        (s.data_version, s.source)
    };
    if version == written || source != Some(DataSource::Cluster) {
        return written;
    }
    let snap = shared.snapshot.load_full();
    let path = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        let bytes = encode(&snap).map_err(|e| e.to_string())?;
        write_atomic(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok::<u64, String>(snap.revision())
    })
    .await;
    match result {
        Ok(Ok(revision)) => {
            tracing::debug!(revision, "disk cache written");
            version
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not write the disk cache; will retry after the next change");
            written
        }
        Err(e) => {
            tracing::warn!(error = %e, "the disk cache writer panicked");
            written
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{bool_spec, names, upsert};
    use serde_json::json;
    use std::sync::Arc;
    use vexil_model::eval::EvalContext;
    use vexil_proto::v1 as proto;

    fn shared_with_data() -> Arc<Shared> {
        let shared = Arc::new(Shared::new(names(&["a", "b"])));
        let batch = proto::ChangeBatch {
            revision: 12,
            changes: vec![
                upsert("a", "f", bool_spec("off"), 3, 12),
                proto::Change {
                    revision: 12,
                    namespace: "a".into(),
                    action: "namespace.update".into(),
                    evaluators_json: r#"{"x": {"==": [1, 1]}}"#.into(),
                    metadata_json: r#"{"team": "t"}"#.into(),
                    ..Default::default()
                },
            ],
        };
        let (snap, changes) = shared.snapshot.load().apply_batch(&batch).unwrap();
        shared.publish(snap, UpdateKind::Changes, changes);
        shared
    }

    #[test]
    fn a_written_cache_loads_back_into_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("flags.json");
        let before = shared_with_data();
        write_atomic(&path, &encode(&before.snapshot.load()).unwrap()).unwrap();
        assert!(!dir.path().join("sub").join("flags.json.tmp").exists());

        let after = Shared::new(names(&["a", "b"]));
        load_into(&after, &path);
        let snap = after.snapshot.load();
        assert_eq!(snap.revision(), 12);
        assert_eq!(snap.source(), Some(DataSource::DiskCache));
        let a = snap.namespace("a").unwrap();
        assert_eq!(a.record("f").unwrap().version, 3);
        assert_eq!(a.metadata()["team"], "t");
        assert!(a.evaluators().contains_key("x"));
        let r = a.compiled().evaluate("f", &EvalContext::new(), 0);
        assert_eq!(r.value, Some(&Value::Bool(false)));
        let st = after.status.borrow().to_status();
        assert!(st.ready && st.last_update.is_some());

        // Format 1: a flag is its key, its definition as a JSON value, and its bookkeeping.
        let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let flag = &file["namespaces"]["a"]["flags"][0];
        assert_eq!(
            (&flag["key"], &flag["spec"]["defaultVariant"], &flag["version"]),
            (&json!("f"), &json!("off"), &json!(3))
        );
    }

    #[test]
    fn corrupt_foreign_or_missing_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::new(names(&["a"]));
        load_into(&shared, &dir.path().join("absent.json"));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{\"format\": \"vexil-client-cache/1\", \"revis").unwrap();
        load_into(&shared, &bad);
        let foreign = dir.path().join("foreign.json");
        std::fs::write(&foreign, br#"{"format": "other", "revision": 1, "written_at_ms": 0, "namespaces": {}}"#)
            .unwrap();
        load_into(&shared, &foreign);
        assert!(!shared.snapshot.load().has_data());
    }

    #[tokio::test]
    async fn the_writer_persists_changes_and_flushes_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let shared = Arc::new(Shared::new(names(&["a"])));
        let (stop_tx, stop_rx) = watch::channel(false);
        let writer = tokio::spawn(run_writer(shared.clone(), path.clone(), 0, stop_rx));
        let (snap, ch) = shared
            .snapshot
            .load()
            .apply_batch(&proto::ChangeBatch { revision: 3, changes: vec![upsert("a", "f", bool_spec("on"), 1, 3)] })
            .unwrap();
        shared.publish(snap, UpdateKind::Changes, ch);
        let deadline = Instant::now() + Duration::from_secs(5);
        while read(&path).unwrap().is_none() {
            assert!(Instant::now() < deadline, "the cache was not written within 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(read(&path).unwrap().unwrap().revision, 3);
        // A change right before shutdown is written by the final flush, without the debounce.
        let (snap, ch) = shared
            .snapshot
            .load()
            .apply_batch(&proto::ChangeBatch { revision: 4, changes: vec![upsert("a", "f", bool_spec("off"), 2, 4)] })
            .unwrap();
        shared.publish(snap, UpdateKind::Changes, ch);
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), writer).await.unwrap().unwrap();
        assert_eq!(read(&path).unwrap().unwrap().revision, 4);
    }
}
