//! Typed, local evaluation: `bool_value`, `string_value`, `int_value`, `float_value`,
//! `object_value` and their `*_details` forms, on a [`Namespace`] handle (the client's own
//! methods use its default namespace).
//!
//! The hot path is: load the current snapshot from an `ArcSwap` (lock-free: an atomic load and
//! a hazard-style debt slot, no mutex, no syscall), index the namespace (its position was fixed
//! when the client was built), look the flag up and run the compiled evaluator. Nothing here
//! touches the network or waits for the watcher; the clock read is `SystemTime::now()` (vDSO).
//!
//! The caller's default is served whenever there is no value: no data yet
//! (`PROVIDER_NOT_READY`), an unknown flag, a disabled flag, a flag without a default variant,
//! a type mismatch, a rule error. Values and contexts are never logged above `debug`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
/// Why an evaluation has no value of its own: the model's codes, which include
/// `PROVIDER_NOT_READY` for a client without data.
pub use vexil_model::eval::ErrorCode;
use vexil_model::eval::{self as model, EvalContext, FlagValue, Reason};

use crate::shared::Shared;
use crate::store::Snapshot;

/// A typed evaluation with everything known about it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationDetails<T> {
    /// The flag's value, or the caller's default when there is none.
    pub value: T,
    pub variant: Option<String>,
    pub reason: Reason,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    /// Flag metadata merged over the flag set's.
    pub flag_metadata: Map<String, Value>,
    /// The revision of the local copy the evaluation read.
    pub revision: u64,
}

impl<T> EvaluationDetails<T> {
    /// Whether the value is the caller's default (no value of the flag's own).
    pub fn is_default(&self) -> bool {
        self.variant.is_none()
    }
}

/// The current time in Unix seconds, what `$flagd.timestamp` reads.
#[inline]
pub(crate) fn now_unix_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Evaluates flag `key` of the namespace at `index` in `snap` and owns the result.
fn details<'s, T: FlagValue<'s>, U>(
    snap: &'s Snapshot,
    index: usize,
    key: &str,
    ctx: &EvalContext<'_>,
    default: T,
    own: impl FnOnce(T) -> U,
) -> EvaluationDetails<U> {
    let ns = match snap.namespace_at(index) {
        Some(ns) if snap.has_data() => ns,
        _ => {
            return EvaluationDetails {
                value: own(default),
                variant: None,
                reason: Reason::Error,
                error_code: Some(ErrorCode::ProviderNotReady),
                error_message: Some(
                    "no flag data yet: the cluster has not been reached and no disk cache was loaded".into(),
                ),
                flag_metadata: Map::new(),
                revision: 0,
            };
        }
    };
    let t = ns.compiled().resolve(key, ctx, now_unix_secs(), default);
    let (error_code, error_message) = match (t.error_code, ns.broken(key)) {
        (Some(ErrorCode::FlagNotFound), Some(why)) => {
            (Some(ErrorCode::ParseError), Some(format!("flag {key:?} cannot be parsed by this client: {why}")))
        }
        (code, _) => (code, t.error_message),
    };
    if let Some(code) = error_code {
        tracing::debug!(flag = key, error = %code, "evaluation served the caller's default");
    }
    EvaluationDetails {
        value: own(t.value),
        variant: t.variant.map(str::to_owned),
        reason: t.reason,
        error_code,
        error_message,
        flag_metadata: t.metadata.clone(),
        revision: snap.revision(),
    }
}

/// Evaluates and returns only the value (no allocation for `bool`, `i64`, `f64`).
#[inline]
fn value<'s, T: FlagValue<'s>>(snap: &'s Snapshot, index: usize, key: &str, ctx: &EvalContext<'_>, default: T) -> T {
    match snap.namespace_at(index) {
        Some(ns) if snap.has_data() => ns.compiled().resolve(key, ctx, now_unix_secs(), default).value,
        _ => default,
    }
}

/// One watched namespace of a client: evaluate its flags. Cheap to clone; `'static`, so it can
/// live in application state.
#[derive(Clone)]
pub struct Namespace {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name()).finish()
    }
}

impl Namespace {
    pub fn name(&self) -> &str {
        &self.shared.names[self.index]
    }

    #[inline]
    pub fn bool_value(&self, key: &str, ctx: &EvalContext<'_>, default: bool) -> bool {
        value(&self.shared.snapshot.load(), self.index, key, ctx, default)
    }

    #[inline]
    pub fn int_value(&self, key: &str, ctx: &EvalContext<'_>, default: i64) -> i64 {
        value(&self.shared.snapshot.load(), self.index, key, ctx, default)
    }

    #[inline]
    pub fn float_value(&self, key: &str, ctx: &EvalContext<'_>, default: f64) -> f64 {
        value(&self.shared.snapshot.load(), self.index, key, ctx, default)
    }

    /// The string value (copied out of the snapshot).
    pub fn string_value(&self, key: &str, ctx: &EvalContext<'_>, default: &str) -> String {
        value(&self.shared.snapshot.load(), self.index, key, ctx, default).to_owned()
    }

    /// The object value (copied out of the snapshot).
    pub fn object_value(&self, key: &str, ctx: &EvalContext<'_>, default: &Map<String, Value>) -> Map<String, Value> {
        value(&self.shared.snapshot.load(), self.index, key, ctx, default).clone()
    }

    pub fn bool_details(&self, key: &str, ctx: &EvalContext<'_>, default: bool) -> EvaluationDetails<bool> {
        details(&self.shared.snapshot.load(), self.index, key, ctx, default, |v| v)
    }

    pub fn int_details(&self, key: &str, ctx: &EvalContext<'_>, default: i64) -> EvaluationDetails<i64> {
        details(&self.shared.snapshot.load(), self.index, key, ctx, default, |v| v)
    }

    pub fn float_details(&self, key: &str, ctx: &EvalContext<'_>, default: f64) -> EvaluationDetails<f64> {
        details(&self.shared.snapshot.load(), self.index, key, ctx, default, |v| v)
    }

    pub fn string_details(&self, key: &str, ctx: &EvalContext<'_>, default: &str) -> EvaluationDetails<String> {
        details(&self.shared.snapshot.load(), self.index, key, ctx, default, str::to_owned)
    }

    pub fn object_details(
        &self,
        key: &str,
        ctx: &EvalContext<'_>,
        default: &Map<String, Value>,
    ) -> EvaluationDetails<Map<String, Value>> {
        details(&self.shared.snapshot.load(), self.index, key, ctx, default, Map::clone)
    }

    /// Borrows the current compiled namespace for zero-copy use (`None` without data). The
    /// closure must not block: it holds the snapshot alive, not a lock, but a long hold keeps
    /// an old snapshot's memory.
    pub fn with_flags<R>(&self, f: impl FnOnce(Option<&model::CompiledNamespace>) -> R) -> R {
        let snap = self.shared.snapshot.load();
        f(snap.namespace_at(self.index).filter(|_| snap.has_data()).map(|ns| ns.compiled()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DataSource;
    use crate::store::tests::{bool_spec, names, upsert};
    use serde_json::json;
    use vexil_proto::v1 as proto;

    fn handle(ns: &[&str], batch: Option<proto::ChangeBatch>) -> Namespace {
        let shared = Arc::new(Shared::new(names(ns)));
        if let Some(b) = batch {
            let (snap, _) = shared.snapshot.load().apply_batch(&b).unwrap();
            shared.snapshot.store(Arc::new(snap.with_source(DataSource::Cluster)));
        }
        Namespace { shared, index: 0 }
    }

    #[test]
    fn without_data_the_callers_default_is_served_as_not_ready() {
        let ns = handle(&["a"], None);
        let ctx = EvalContext::new();
        assert!(ns.bool_value("f", &ctx, true));
        assert_eq!(ns.string_value("f", &ctx, "dflt"), "dflt");
        let d = ns.int_details("f", &ctx, 7);
        assert_eq!(d.value, 7);
        assert_eq!(d.reason, Reason::Error);
        assert_eq!(d.error_code, Some(ErrorCode::ProviderNotReady));
    }

    #[test]
    fn typed_values_and_details() {
        let object = json!({"state": "ENABLED", "variants": {"a": {"limit": 5}}, "defaultVariant": "a"});
        let ints = json!({"state": "ENABLED", "variants": {"small": 1, "big": 100}, "defaultVariant": "small",
                          "targeting": {"if": [{">=": [{"var": "age"}, 21]}, "big", null]}});
        let strings = json!({"state": "DISABLED", "variants": {"x": "ex"}, "defaultVariant": "x"});
        let floats = json!({"state": "ENABLED", "variants": {"half": 0.5}, "defaultVariant": "half"});
        let batch = proto::ChangeBatch {
            revision: 4,
            changes: vec![
                upsert("a", "b", bool_spec("on"), 1, 4),
                upsert("a", "o", object, 1, 4),
                upsert("a", "i", ints, 1, 4),
                upsert("a", "s", strings, 1, 4),
                upsert("a", "fl", floats, 1, 4),
            ],
        };
        let ns = handle(&["a"], Some(batch));
        let adult = EvalContext::with_targeting_key("u1").with("age", 30);
        let child = EvalContext::with_targeting_key("u2").with("age", 9);

        assert!(ns.bool_value("b", &adult, false));
        assert_eq!(ns.int_value("i", &adult, 0), 100);
        assert_eq!(ns.int_value("i", &child, 0), 1);
        assert_eq!(ns.float_value("fl", &adult, 0.0), 0.5);
        assert_eq!(ns.float_value("i", &adult, 0.0), 100.0, "an integer flag reads as a float");
        assert_eq!(ns.object_value("o", &adult, &Map::new())["limit"], json!(5));

        let d = ns.int_details("i", &adult, 0);
        assert_eq!((d.variant.as_deref(), d.reason, d.revision), (Some("big"), Reason::TargetingMatch, 4));
        let d = ns.string_details("s", &adult, "fallback");
        assert_eq!((d.value.as_str(), d.reason, d.error_code), ("fallback", Reason::Disabled, None));
        let d = ns.string_details("b", &adult, "fallback");
        assert_eq!((d.value.as_str(), d.error_code), ("fallback", Some(ErrorCode::TypeMismatch)));
        let d = ns.bool_details("missing", &adult, true);
        assert_eq!((d.value, d.error_code), (true, Some(ErrorCode::FlagNotFound)));
    }
}
