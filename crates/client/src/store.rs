//! The local copy of the watched namespaces: immutable [`Snapshot`]s, published through an
//! `ArcSwap`, so evaluation reads the current one without a lock while the watcher builds the
//! next.
//!
//! A snapshot holds, per watched namespace (in the order the client was configured with, so a
//! namespace handle finds its namespace by index), the flag records as the cluster sent them,
//! their parsed specs, and a [`CompiledNamespace`] that evaluation uses. Applying a change never
//! mutates a published snapshot: [`Snapshot::apply_batch`] and [`Snapshot::replace`] return a
//! new one that shares every untouched namespace and flag with the old (`Arc`).
//!
//! Architecture invariant: a snapshot reflects every change up to and including its `revision`
//! and nothing after; a batch is applied whole or not at all, and only when its revision is
//! greater than the snapshot's (never twice, never backwards).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use vexil_model::eval::{CompiledFlag, CompiledNamespace};
use vexil_model::{AuditAction, FlagRecord, FlagSpec, NamespaceSettings};
use vexil_proto::v1 as proto;

/// Where the data of a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataSource {
    /// Loaded from the on-disk cache at start; not confirmed by the cluster yet.
    DiskCache,
    /// Received from the cluster (a watch snapshot, then its changes).
    Cluster,
}

/// A flag from the wire. A `spec_json` that is not JSON is kept as it is; it then fails to
/// parse as a spec and evaluates as `PARSE_ERROR`.
fn record_from_proto(f: &proto::Flag) -> FlagRecord {
    FlagRecord {
        spec_json: f.spec_json.clone(),
        version: f.version,
        created_revision: f.created_revision,
        mod_revision: f.mod_revision,
        created_at_ms: f.created_at_ms,
        updated_at_ms: f.updated_at_ms,
        updated_by: f.updated_by.clone(),
    }
}

/// A definition's text as a JSON value; text that is not JSON becomes a JSON string (which no
/// spec is, so it is reported as unparseable rather than dropped).
pub(crate) fn spec_value(spec_json: &str) -> Value {
    serde_json::from_str(spec_json).unwrap_or_else(|_| Value::String(spec_json.to_owned()))
}

/// Whether two records hold the same flag: the same bookkeeping and the same definition as
/// JSON (the text may differ in key order: the disk cache stores it as a value).
fn same_record(a: &FlagRecord, b: &FlagRecord) -> bool {
    if a == b {
        return true;
    }
    let FlagRecord { spec_json, version, created_revision, mod_revision, created_at_ms, updated_at_ms, updated_by } = a;
    (*version, *created_revision, *mod_revision, *created_at_ms, *updated_at_ms, updated_by)
        == (b.version, b.created_revision, b.mod_revision, b.created_at_ms, b.updated_at_ms, &b.updated_by)
        && spec_value(spec_json) == spec_value(&b.spec_json)
}

/// A flag record with its parsed spec (or why it did not parse).
#[derive(Debug)]
pub(crate) struct FlagEntry {
    pub(crate) record: FlagRecord,
    pub(crate) spec: Result<FlagSpec, String>,
}

impl FlagEntry {
    fn new(key: &str, record: FlagRecord) -> FlagEntry {
        let spec = FlagSpec::from_value(key, &spec_value(&record.spec_json), "spec").map_err(|e| e.to_string());
        FlagEntry { record, spec }
    }
}

/// One watched namespace at one revision.
#[derive(Debug, Default)]
pub struct NamespaceState {
    pub(crate) flags: BTreeMap<String, Arc<FlagEntry>>,
    pub(crate) evaluators: BTreeMap<String, Value>,
    pub(crate) metadata: Map<String, Value>,
    /// How its flags compile (`fractional` bucketing), as the cluster set them.
    pub(crate) settings: NamespaceSettings,
    /// Compiled from the above; what evaluation reads.
    pub(crate) compiled: CompiledNamespace,
    /// Flags whose definition this client cannot parse (a newer server, say): they evaluate as
    /// `PARSE_ERROR` instead of disappearing.
    pub(crate) broken: BTreeMap<String, String>,
}

impl NamespaceState {
    /// Builds a namespace from its parts, compiling every flag.
    pub(crate) fn build(
        flags: BTreeMap<String, Arc<FlagEntry>>,
        evaluators: BTreeMap<String, Value>,
        metadata: Map<String, Value>,
        settings: NamespaceSettings,
    ) -> NamespaceState {
        let mut broken = BTreeMap::new();
        let options = settings.compile_options();
        let compiled = CompiledNamespace::from_flags(
            flags.iter().filter_map(|(key, f)| match &f.spec {
                Ok(spec) => Some(CompiledFlag::with_options(key, spec, &evaluators, &metadata, options)),
                Err(e) => {
                    broken.insert(key.clone(), e.clone());
                    None
                }
            }),
            metadata.clone(),
        );
        NamespaceState { flags, evaluators, metadata, settings, compiled, broken }
    }

    /// Its settings (how `fractional` buckets), as the cluster last sent them.
    pub fn settings(&self) -> NamespaceSettings {
        self.settings
    }

    /// The compiled flags, for evaluation.
    pub fn compiled(&self) -> &CompiledNamespace {
        &self.compiled
    }

    /// The flag records with their keys, in key order.
    pub fn records(&self) -> impl Iterator<Item = (&str, &FlagRecord)> {
        self.flags.iter().map(|(key, f)| (key.as_str(), &f.record))
    }

    pub fn record(&self, key: &str) -> Option<&FlagRecord> {
        self.flags.get(key).map(|f| &f.record)
    }

    /// The namespace's `$evaluators`.
    pub fn evaluators(&self) -> &BTreeMap<String, Value> {
        &self.evaluators
    }

    /// The flag-set metadata.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    pub(crate) fn broken(&self, key: &str) -> Option<&str> {
        self.broken.get(key).map(String::as_str)
    }
}

/// What changed, as reported to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagChange {
    /// Created or changed; `version` is the flag's version after the change.
    Upserted {
        namespace: String,
        key: String,
        version: u64,
    },
    Deleted {
        namespace: String,
        key: String,
    },
    /// The namespace's `$evaluators` or flag-set metadata changed (every flag may evaluate
    /// differently).
    NamespaceUpdated {
        namespace: String,
    },
}

/// The whole local copy at one revision. Immutable once published.
#[derive(Debug)]
pub struct Snapshot {
    revision: u64,
    source: Option<DataSource>,
    names: Arc<[Box<str>]>,
    namespaces: Box<[Arc<NamespaceState>]>,
}

/// A batch that cannot be applied; the watcher drops the stream and resumes elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error("revision {got} does not follow the applied revision {applied}")]
    NotAfter { applied: u64, got: u64 },
    #[error("change of revision {change} inside the batch of revision {batch}")]
    MixedRevisions { batch: u64, change: u64 },
}

impl Snapshot {
    /// No data at all: every evaluation serves the caller's default.
    pub(crate) fn empty(names: Arc<[Box<str>]>) -> Snapshot {
        let namespaces = names.iter().map(|_| Arc::new(NamespaceState::default())).collect();
        Snapshot { revision: 0, source: None, names, namespaces }
    }

    /// The revision this state reflects (0 before any data).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Where the data came from; `None` when there is none yet.
    pub fn source(&self) -> Option<DataSource> {
        self.source
    }

    pub fn has_data(&self) -> bool {
        self.source.is_some()
    }

    /// The watched namespaces' names, in configuration order.
    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }

    /// A watched namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceState> {
        self.names.iter().position(|n| &**n == name).map(|i| &*self.namespaces[i])
    }

    /// A watched namespace by its configuration index (the hot path: no string compare).
    #[inline]
    pub(crate) fn namespace_at(&self, index: usize) -> Option<&NamespaceState> {
        self.namespaces.get(index).map(|n| &**n)
    }

    #[cfg(test)]
    pub(crate) fn with_source(&self, source: DataSource) -> Snapshot {
        Snapshot {
            revision: self.revision,
            source: Some(source),
            names: self.names.clone(),
            namespaces: self.namespaces.clone(),
        }
    }

    /// A whole new state (a watch snapshot or the disk cache), with the differences from this
    /// one. Namespaces the new state does not mention are empty.
    pub(crate) fn replace(
        &self,
        revision: u64,
        source: DataSource,
        mut incoming: BTreeMap<String, NamespaceState>,
    ) -> (Snapshot, Vec<FlagChange>) {
        let mut changes = Vec::new();
        let mut namespaces = Vec::with_capacity(self.names.len());
        for (name, old) in self.names.iter().zip(self.namespaces.iter()) {
            let new = incoming.remove(&**name).unwrap_or_default();
            diff(name, old, &new, &mut changes);
            namespaces.push(Arc::new(new));
        }
        let snap =
            Snapshot { revision, source: Some(source), names: self.names.clone(), namespaces: namespaces.into() };
        (snap, changes)
    }

    /// Applies one revision's changes atomically. Changes of namespaces this client does not
    /// watch are ignored.
    pub(crate) fn apply_batch(&self, batch: &proto::ChangeBatch) -> Result<(Snapshot, Vec<FlagChange>), ApplyError> {
        if batch.revision <= self.revision {
            return Err(ApplyError::NotAfter { applied: self.revision, got: batch.revision });
        }
        if let Some(c) = batch.changes.iter().find(|c| c.revision != 0 && c.revision != batch.revision) {
            return Err(ApplyError::MixedRevisions { batch: batch.revision, change: c.revision });
        }
        let mut namespaces: Vec<Arc<NamespaceState>> = self.namespaces.to_vec();
        let mut changes = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            let mine: Vec<&proto::Change> = batch.changes.iter().filter(|c| c.namespace == **name).collect();
            if mine.is_empty() {
                continue;
            }
            let old = &self.namespaces[i];
            let mut flags = old.flags.clone();
            let mut evaluators = None;
            let mut metadata = None;
            let mut settings = None;
            for c in mine {
                if c.action == AuditAction::NamespaceSettings.as_str() {
                    // A change that carries no settings (a server that lost them) keeps ours.
                    settings = c.settings.as_ref().map(|s| settings_from_proto(Some(s))).or(settings);
                    changes.push(FlagChange::NamespaceUpdated { namespace: name.to_string() });
                } else if c.key.is_empty() {
                    evaluators = Some(parse_evaluators(&c.evaluators_json));
                    metadata = Some(parse_object(&c.metadata_json));
                    changes.push(FlagChange::NamespaceUpdated { namespace: name.to_string() });
                } else if let Some(f) = &c.flag {
                    let record = record_from_proto(f);
                    changes.push(FlagChange::Upserted {
                        namespace: name.to_string(),
                        key: c.key.clone(),
                        version: record.version,
                    });
                    flags.insert(c.key.clone(), Arc::new(FlagEntry::new(&c.key, record)));
                } else {
                    flags.remove(&c.key);
                    changes.push(FlagChange::Deleted { namespace: name.to_string(), key: c.key.clone() });
                }
            }
            let evaluators = evaluators.unwrap_or_else(|| old.evaluators.clone());
            let metadata = metadata.unwrap_or_else(|| old.metadata.clone());
            let settings = settings.unwrap_or(old.settings);
            namespaces[i] = Arc::new(NamespaceState::build(flags, evaluators, metadata, settings));
        }
        let snap = Snapshot {
            revision: batch.revision,
            source: Some(DataSource::Cluster),
            names: self.names.clone(),
            namespaces: namespaces.into(),
        };
        Ok((snap, changes))
    }

    /// Moves the revision forward without a change (a progress message: nothing in the watched
    /// namespaces changed up to `revision`). Returns `None` when `revision` is not ahead.
    pub(crate) fn advance(&self, revision: u64) -> Option<Snapshot> {
        (revision > self.revision).then(|| Snapshot {
            revision,
            source: self.source,
            names: self.names.clone(),
            namespaces: self.namespaces.clone(),
        })
    }
}

/// Converts a watch snapshot to namespace states.
pub(crate) fn states_from_proto(s: &proto::WatchSnapshot) -> BTreeMap<String, NamespaceState> {
    s.namespaces
        .iter()
        .map(|ns| {
            let flags = ns
                .flags
                .iter()
                .map(|f| (f.key.clone(), Arc::new(FlagEntry::new(&f.key, record_from_proto(f)))))
                .collect();
            let state = NamespaceState::build(
                flags,
                parse_evaluators(&ns.evaluators_json),
                parse_object(&ns.metadata_json),
                settings_from_proto(ns.settings.as_ref()),
            );
            (ns.namespace.clone(), state)
        })
        .collect()
}

/// Builds a namespace state from records and their keys (the disk cache).
pub(crate) fn state_from_records(
    records: Vec<(String, FlagRecord)>,
    evaluators: BTreeMap<String, Value>,
    metadata: Map<String, Value>,
    settings: NamespaceSettings,
) -> NamespaceState {
    let flags = records
        .into_iter()
        .map(|(key, r)| {
            let entry = FlagEntry::new(&key, r);
            (key, Arc::new(entry))
        })
        .collect();
    NamespaceState::build(flags, evaluators, metadata, settings)
}

/// A namespace's settings from the wire. Settings this build does not know (a newer server's
/// bucketing) are logged and the defaults used: its evaluations may then differ from the
/// server's for `fractional` rules until the client is upgraded.
fn settings_from_proto(s: Option<&proto::NamespaceSettings>) -> NamespaceSettings {
    s.map_or_else(NamespaceSettings::default, |s| {
        s.to_model().unwrap_or_else(|unknown| {
            tracing::error!(fractional = %unknown, "the server uses a fractional algorithm this client does not know; upgrade the client");
            NamespaceSettings::default()
        })
    })
}

fn parse_object(json: &str) -> Map<String, Value> {
    if json.trim().is_empty() {
        return Map::new();
    }
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => m,
        _ => {
            tracing::warn!("the server sent namespace data that is not a JSON object; treating it as empty");
            Map::new()
        }
    }
}

fn parse_evaluators(json: &str) -> BTreeMap<String, Value> {
    parse_object(json).into_iter().collect()
}

/// The flag-level differences between two states of one namespace.
fn diff(name: &str, old: &NamespaceState, new: &NamespaceState, out: &mut Vec<FlagChange>) {
    if old.evaluators != new.evaluators || old.metadata != new.metadata || old.settings != new.settings {
        out.push(FlagChange::NamespaceUpdated { namespace: name.to_string() });
    }
    for (key, f) in &new.flags {
        let same = old.flags.get(key).is_some_and(|o| same_record(&o.record, &f.record));
        if !same {
            out.push(FlagChange::Upserted { namespace: name.to_string(), key: key.clone(), version: f.record.version });
        }
    }
    for key in old.flags.keys() {
        if !new.flags.contains_key(key) {
            out.push(FlagChange::Deleted { namespace: name.to_string(), key: key.clone() });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use vexil_model::eval::{EvalContext, Reason};

    pub(crate) fn flag(ns: &str, key: &str, spec: Value, version: u64, revision: u64) -> proto::Flag {
        proto::Flag {
            namespace: ns.into(),
            key: key.into(),
            spec_json: spec.to_string(),
            version,
            created_revision: revision,
            mod_revision: revision,
            ..Default::default()
        }
    }

    pub(crate) fn bool_spec(default: &str) -> Value {
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": default})
    }

    pub(crate) fn upsert(ns: &str, key: &str, spec: Value, version: u64, revision: u64) -> proto::Change {
        proto::Change {
            revision,
            action: if version == 1 { "flag.create" } else { "flag.update" }.into(),
            namespace: ns.into(),
            key: key.into(),
            flag: Some(flag(ns, key, spec, version, revision)),
            ..Default::default()
        }
    }

    pub(crate) fn names(ns: &[&str]) -> Arc<[Box<str>]> {
        ns.iter().map(|n| Box::from(*n)).collect()
    }

    fn on(s: &Snapshot, ns: &str, key: &str) -> Option<bool> {
        let ctx = EvalContext::new();
        s.namespace(ns)?.compiled().evaluate(key, &ctx, 0).value.and_then(Value::as_bool)
    }

    #[test]
    fn batches_apply_in_order_and_never_twice() {
        let s0 = Snapshot::empty(names(&["a", "b"]));
        let b5 = proto::ChangeBatch { revision: 5, changes: vec![upsert("a", "f", bool_spec("on"), 1, 5)] };
        let (s5, ch) = s0.apply_batch(&b5).unwrap();
        assert_eq!(s5.revision(), 5);
        assert_eq!(on(&s5, "a", "f"), Some(true));
        assert_eq!(ch, vec![FlagChange::Upserted { namespace: "a".into(), key: "f".into(), version: 1 }]);
        // The same revision again, or an older one, is refused and changes nothing.
        assert_eq!(s5.apply_batch(&b5).unwrap_err(), ApplyError::NotAfter { applied: 5, got: 5 });
        let b4 = proto::ChangeBatch { revision: 4, changes: vec![] };
        assert!(s5.apply_batch(&b4).is_err());
        // A batch whose changes claim another revision is refused whole.
        let bad = proto::ChangeBatch {
            revision: 6,
            changes: vec![upsert("a", "f", bool_spec("off"), 2, 6), upsert("a", "g", bool_spec("on"), 1, 7)],
        };
        assert!(matches!(s5.apply_batch(&bad), Err(ApplyError::MixedRevisions { .. })));
        assert_eq!(on(&s5, "a", "f"), Some(true));
        // Untouched namespaces are shared with the previous snapshot.
        assert!(Arc::ptr_eq(&s0.namespaces[1], &s5.namespaces[1]));
    }

    #[test]
    fn a_batch_is_applied_atomically_with_deletes_and_namespace_updates() {
        let s0 = Snapshot::empty(names(&["a"]));
        let targeted = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                              "targeting": {"if": [{"$ref": "vip"}, "on", null]}});
        let b1 = proto::ChangeBatch {
            revision: 1,
            changes: vec![
                upsert("a", "x", bool_spec("on"), 1, 1),
                upsert("a", "t", targeted, 1, 1),
                proto::Change {
                    revision: 1,
                    action: "namespace.update".into(),
                    namespace: "a".into(),
                    evaluators_json: json!({"vip": {"==": [{"var": "tier"}, "gold"]}}).to_string(),
                    metadata_json: json!({"team": "t1"}).to_string(),
                    ..Default::default()
                },
                upsert("other", "y", bool_spec("on"), 1, 1),
            ],
        };
        let (s1, changes) = s0.apply_batch(&b1).unwrap();
        assert_eq!(changes.len(), 3, "changes of unwatched namespaces are ignored: {changes:?}");
        let ns = s1.namespace("a").unwrap();
        let gold = EvalContext::new().with("tier", "gold");
        let r = ns.compiled().evaluate("t", &gold, 0);
        assert_eq!((r.value, r.reason), (Some(&json!(true)), Reason::TargetingMatch));
        assert_eq!(ns.compiled().get("x").unwrap().metadata()["team"], json!("t1"));

        // Removing the evaluator turns the targeted flag into a PARSE_ERROR, not a crash.
        let b2 = proto::ChangeBatch {
            revision: 2,
            changes: vec![
                proto::Change {
                    revision: 2,
                    action: "namespace.update".into(),
                    namespace: "a".into(),
                    evaluators_json: "{}".into(),
                    metadata_json: "{}".into(),
                    ..Default::default()
                },
                proto::Change {
                    revision: 2,
                    action: "flag.delete".into(),
                    namespace: "a".into(),
                    key: "x".into(),
                    ..Default::default()
                },
            ],
        };
        let (s2, _) = s1.apply_batch(&b2).unwrap();
        let ns = s2.namespace("a").unwrap();
        assert!(ns.compiled().get("x").is_none());
        assert!(ns.compiled().evaluate("t", &gold, 0).is_error());
        // The old snapshot is untouched.
        assert!(s1.namespace("a").unwrap().compiled().get("x").is_some());
    }

    #[test]
    fn replace_reports_the_differences() {
        let s0 = Snapshot::empty(names(&["a"]));
        let (s1, _) = s0
            .apply_batch(&proto::ChangeBatch {
                revision: 3,
                changes: vec![upsert("a", "keep", bool_spec("on"), 1, 3), upsert("a", "gone", bool_spec("on"), 1, 3)],
            })
            .unwrap();
        let snap = proto::WatchSnapshot {
            revision: 9,
            namespaces: vec![proto::NamespaceState {
                namespace: "a".into(),
                flags: vec![flag("a", "keep", bool_spec("on"), 1, 3), flag("a", "new", bool_spec("off"), 1, 9)],
                evaluators_json: "{}".into(),
                metadata_json: "{}".into(),
                settings: None,
            }],
            more: false,
        };
        let (s2, changes) = s1.replace(9, DataSource::Cluster, states_from_proto(&snap));
        assert_eq!(s2.revision(), 9);
        assert_eq!(
            changes,
            vec![
                FlagChange::Upserted { namespace: "a".into(), key: "new".into(), version: 1 },
                FlagChange::Deleted { namespace: "a".into(), key: "gone".into() },
            ]
        );
        assert_eq!(on(&s2, "a", "new"), Some(false));
    }

    #[test]
    fn the_same_definition_in_other_text_is_not_a_change() {
        let cached = FlagRecord {
            spec_json: bool_spec("on").to_string(),
            version: 1,
            created_revision: 3,
            mod_revision: 3,
            created_at_ms: 0,
            updated_at_ms: 0,
            updated_by: String::new(),
        };
        let states = BTreeMap::from([(
            "a".to_string(),
            state_from_records(vec![("f".into(), cached)], BTreeMap::new(), Map::new(), NamespaceSettings::default()),
        )]);
        let (s1, _) = Snapshot::empty(names(&["a"])).replace(3, DataSource::DiskCache, states);
        let cluster = |spec_json: &str| {
            let mut f = flag("a", "f", bool_spec("on"), 1, 3);
            f.spec_json = spec_json.into();
            let ns = proto::NamespaceState {
                namespace: "a".into(),
                flags: vec![f],
                evaluators_json: "{}".into(),
                metadata_json: "{}".into(),
                settings: None,
            };
            states_from_proto(&proto::WatchSnapshot { revision: 3, namespaces: vec![ns], more: false })
        };
        let reordered = r#"{"variants": {"off": false, "on": true}, "state": "ENABLED", "defaultVariant": "on"}"#;
        assert_eq!(s1.replace(3, DataSource::Cluster, cluster(reordered)).1, vec![]);
        let changed = r#"{"variants": {"off": false, "on": true}, "state": "ENABLED", "defaultVariant": "off"}"#;
        assert_eq!(
            s1.replace(3, DataSource::Cluster, cluster(changed)).1,
            vec![FlagChange::Upserted { namespace: "a".into(), key: "f".into(), version: 1 }]
        );
    }

    #[test]
    fn a_settings_change_recompiles_the_namespace_with_its_bucketing() {
        use vexil_model::eval::{EvalContext, FractionalAlgorithm};
        let rollout = json!({"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
            "targeting": {"fractional": [["a", 50], ["b", 50]]}});
        let (s1, _) = Snapshot::empty(names(&["a"]))
            .apply_batch(&proto::ChangeBatch { revision: 3, changes: vec![upsert("a", "r", rollout, 1, 3)] })
            .unwrap();
        let buckets = |s: &Snapshot| -> Vec<String> {
            let ns = s.namespace("a").unwrap();
            (0..64)
                .map(|i| {
                    let key = format!("user-{i}");
                    let ctx = EvalContext::with_targeting_key(&key);
                    format!("{:?}", ns.compiled().evaluate("r", &ctx, 0).value)
                })
                .collect()
        };
        let v3 =
            proto::NamespaceSettings { fractional: FractionalAlgorithm::CborMurmur3.as_str().into(), strict: false };
        let change = proto::Change {
            revision: 4,
            action: "namespace.settings".into(),
            namespace: "a".into(),
            settings: Some(v3),
            ..Default::default()
        };
        let (s2, changes) = s1.apply_batch(&proto::ChangeBatch { revision: 4, changes: vec![change] }).unwrap();
        assert_eq!(changes, vec![FlagChange::NamespaceUpdated { namespace: "a".into() }]);
        assert_eq!(s2.namespace("a").unwrap().settings().fractional, FractionalAlgorithm::CborMurmur3);
        assert_ne!(buckets(&s1), buckets(&s2), "v2 and v3 place some of 64 users differently");
        // A later flag change keeps the namespace's settings.
        let (s3, _) = s2
            .apply_batch(&proto::ChangeBatch { revision: 5, changes: vec![upsert("a", "x", bool_spec("on"), 1, 5)] })
            .unwrap();
        assert_eq!(buckets(&s3), buckets(&s2));
    }

    #[test]
    fn an_unparseable_flag_is_kept_as_broken() {
        let s0 = Snapshot::empty(names(&["a"]));
        let mut c = upsert("a", "weird", bool_spec("on"), 1, 1);
        c.flag.as_mut().unwrap().spec_json = r#"{"state": "SIDEWAYS", "variants": {}}"#.into();
        let (s1, _) = s0.apply_batch(&proto::ChangeBatch { revision: 1, changes: vec![c] }).unwrap();
        let ns = s1.namespace("a").unwrap();
        assert!(ns.compiled().get("weird").is_none());
        assert!(ns.broken("weird").is_some());
        assert_eq!(ns.record("weird").unwrap().version, 1);
    }

    #[test]
    fn progress_only_moves_forward() {
        let s0 = Snapshot::empty(names(&["a"]));
        let s1 = s0.advance(10).unwrap();
        assert_eq!(s1.revision(), 10);
        assert!(s1.advance(10).is_none());
        assert!(s1.advance(3).is_none());
    }
}
