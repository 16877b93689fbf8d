//! Flag evaluation, exactly as flagd resolves flags, compiled once and evaluated many times.
//!
//! - [`CompiledFlag`]: one flag with its targeting compiled (`$ref`s resolved, operators and
//!   paths pre-parsed) and its metadata merged over the flag set's. Built when a flag is stored
//!   or loaded; evaluating it parses nothing and allocates nothing on the common paths.
//! - [`CompiledNamespace`]: every flag of a namespace, looked up by key (`FLAG_NOT_FOUND` for
//!   the rest). `Send + Sync`: share it behind an `Arc` and read it from any thread, lock-free.
//! - [`EvalContext`]: a borrowed, allocation-free context (targeting key plus attributes).
//! - [`validate_targeting`] / [`validate_document`]: the write-time check, naming the field.
//!
//! Resolution (flagd's, see `core/pkg/evaluator/json.go` in flagd):
//!
//! | situation | reason | error code | value / variant |
//! |---|---|---|---|
//! | flag not in the namespace | `ERROR` | `FLAG_NOT_FOUND` | none |
//! | `state` is `DISABLED` | `DISABLED` | | none (the caller's default) |
//! | no targeting | `STATIC` | | the default variant |
//! | targeting returns `null` | `DEFAULT` | | the default variant |
//! | targeting returns a variant name (`true`/`false` name `"true"`/`"false"`, numbers their decimal form) | `TARGETING_MATCH` | | that variant |
//! | targeting returns anything else | `ERROR` | `GENERAL` | none |
//! | targeting does not compile (e.g. `$ref` to a removed evaluator) | `ERROR` | `PARSE_ERROR` | none |
//! | no default variant where one is needed | `DEFAULT` | | none (the caller's default) |
//! | typed request of the wrong type | `ERROR` | `TYPE_MISMATCH` | the caller's default |
//!
//! `$flagd.flagKey` and `$flagd.timestamp` (the `now_unix_secs` argument: evaluation reads no
//! clock) are visible to rules and always override a caller's `$flagd`.
//!
//! Architecture invariant: nothing in this module does IO, reads a clock or keeps state
//! between evaluations; the same inputs give the same answer on the server and every client.

mod compile;
pub mod context;
pub mod fractional;
mod logic;
pub mod murmur3;
pub mod semver;
mod value;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value};

pub use compile::{CompileError, OPERATORS};
pub use context::{Attr, EvalContext, INLINE_ATTRS, TARGETING_KEY};
pub use fractional::FractionalAlgorithm;

use crate::document::NamespaceDocument;
use crate::flag::{FlagSpec, FlagState, ValidationError, VariantType};
use logic::{Env, Node};
use value::{Val, js_number_string};

/// Why a flag resolved as it did (OpenFeature's reasons, as flagd reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Static,
    TargetingMatch,
    Default,
    Disabled,
    Error,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, when the reason is [`Reason::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    FlagNotFound,
    TypeMismatch,
    ParseError,
    General,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::General => "GENERAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of evaluating a flag. Borrows the value, variant name and metadata from the
/// compiled flag, so producing it copies nothing; only errors allocate (their message).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution<'f> {
    /// `None` when the caller's default applies (disabled, no default variant, error).
    pub value: Option<&'f Value>,
    pub variant: Option<&'f str>,
    pub reason: Reason,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    /// Flag metadata merged over the flag set's.
    pub metadata: &'f Map<String, Value>,
}

impl Resolution<'_> {
    pub fn is_error(&self) -> bool {
        self.error_code.is_some()
    }

    /// The OFREP-style JSON form: `{"key","value","variant","reason","errorCode","errorMessage","metadata"}`
    /// (absent parts are `null`).
    pub fn to_json(&self, key: &str) -> Value {
        let mut m = Map::new();
        m.insert("key".into(), Value::String(key.to_string()));
        m.insert("value".into(), self.value.cloned().unwrap_or(Value::Null));
        m.insert("variant".into(), self.variant.map_or(Value::Null, |v| Value::String(v.to_string())));
        m.insert("reason".into(), Value::String(self.reason.as_str().into()));
        m.insert("errorCode".into(), self.error_code.map_or(Value::Null, |c| Value::String(c.as_str().into())));
        m.insert("errorMessage".into(), self.error_message.clone().map_or(Value::Null, Value::String));
        m.insert("metadata".into(), Value::Object(self.metadata.clone()));
        Value::Object(m)
    }
}

/// A typed resolution: `value` is the flag's value, or the caller's `default` whenever there is
/// none (disabled, no default variant, any error).
#[derive(Debug, Clone, PartialEq)]
pub struct Typed<'f, T> {
    pub value: T,
    pub variant: Option<&'f str>,
    pub reason: Reason,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    pub metadata: &'f Map<String, Value>,
}

/// A Rust type a flag can be read as. flagd's rules: an integer request on a number with a
/// fraction (`1.5`, or any JSON float such as `2.0`) is a type mismatch; a float request on an
/// integer is fine.
pub trait FlagValue<'f>: Sized {
    /// The type as named in mismatch messages.
    const TYPE_NAME: &'static str;
    fn from_variant(v: &'f Value) -> Option<Self>;
}

impl FlagValue<'_> for bool {
    const TYPE_NAME: &'static str = "boolean";
    fn from_variant(v: &Value) -> Option<Self> {
        v.as_bool()
    }
}
impl<'f> FlagValue<'f> for &'f str {
    const TYPE_NAME: &'static str = "string";
    fn from_variant(v: &'f Value) -> Option<Self> {
        v.as_str()
    }
}
impl FlagValue<'_> for i64 {
    const TYPE_NAME: &'static str = "integer";
    fn from_variant(v: &Value) -> Option<Self> {
        v.as_i64()
    }
}
impl FlagValue<'_> for f64 {
    const TYPE_NAME: &'static str = "float";
    fn from_variant(v: &Value) -> Option<Self> {
        v.as_f64()
    }
}
impl<'f> FlagValue<'f> for &'f Map<String, Value> {
    const TYPE_NAME: &'static str = "object";
    fn from_variant(v: &'f Value) -> Option<Self> {
        v.as_object()
    }
}

/// Options fixed when a flag is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompileOptions {
    /// The `fractional` bucketing algorithm (default: current released flagd).
    pub fractional: FractionalAlgorithm,
}

#[derive(Debug, Clone, PartialEq)]
enum Targeting {
    None,
    Rule(Node),
    Invalid(CompileError),
}

/// One flag, compiled for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledFlag {
    key: Box<str>,
    state: FlagState,
    /// Sorted by name (binary search).
    variants: Box<[(Box<str>, Value)]>,
    default_variant: Option<usize>,
    targeting: Targeting,
    metadata: Map<String, Value>,
    variant_type: VariantType,
    options: CompileOptions,
}

const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<CompiledFlag>();
    shared::<CompiledNamespace>();
};

/// flagd's metadata rule: the flag set's entries, overridden by the flag's own.
fn merge_metadata(flag_set: &Map<String, Value>, flag: &Map<String, Value>) -> Map<String, Value> {
    let mut m = flag_set.clone();
    for (k, v) in flag {
        if !v.is_null() {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

impl CompiledFlag {
    /// Compiles a flag; a targeting rule that does not compile is kept as an error that every
    /// evaluation reports as `PARSE_ERROR` (use this when loading stored flags, so one broken
    /// flag never hides the others). See [`CompiledFlag::compile`] for the strict form.
    pub fn new(
        key: &str,
        spec: &FlagSpec,
        evaluators: &BTreeMap<String, Value>,
        flag_set_metadata: &Map<String, Value>,
    ) -> Self {
        Self::with_options(key, spec, evaluators, flag_set_metadata, CompileOptions::default())
    }

    /// [`CompiledFlag::new`] with explicit options (the `fractional` algorithm).
    pub fn with_options(
        key: &str,
        spec: &FlagSpec,
        evaluators: &BTreeMap<String, Value>,
        flag_set_metadata: &Map<String, Value>,
        options: CompileOptions,
    ) -> Self {
        let targeting = match &spec.targeting {
            None => Targeting::None,
            Some(rule) => match compile::compile(rule, evaluators) {
                Ok(node) => Targeting::Rule(node),
                Err(e) => Targeting::Invalid(e),
            },
        };
        let variants: Box<[(Box<str>, Value)]> =
            spec.variants.iter().map(|(k, v)| (Box::from(k.as_str()), v.clone())).collect();
        let default_variant =
            spec.default_variant.as_deref().and_then(|d| variants.binary_search_by(|(n, _)| (**n).cmp(d)).ok());
        CompiledFlag {
            key: key.into(),
            state: spec.state,
            variant_type: spec.variants.values().next().and_then(VariantType::of).unwrap_or(VariantType::Object),
            variants,
            default_variant,
            targeting,
            metadata: merge_metadata(flag_set_metadata, &spec.metadata),
            options,
        }
    }

    /// Compiles a flag, refusing targeting that does not compile (the write path). The error
    /// names the field `targeting`.
    pub fn compile(
        key: &str,
        spec: &FlagSpec,
        evaluators: &BTreeMap<String, Value>,
        flag_set_metadata: &Map<String, Value>,
    ) -> Result<Self, ValidationError> {
        let flag = Self::new(key, spec, evaluators, flag_set_metadata);
        match &flag.targeting {
            Targeting::Invalid(e) => Err(ValidationError::new("targeting", e.to_string())),
            _ => Ok(flag),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn state(&self) -> FlagState {
        self.state
    }

    pub fn variant_type(&self) -> VariantType {
        self.variant_type
    }

    /// The merged metadata (flag over flag set).
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    pub fn fractional_algorithm(&self) -> FractionalAlgorithm {
        self.options.fractional
    }

    /// Why the targeting rule did not compile, if it did not.
    pub fn targeting_error(&self) -> Option<&CompileError> {
        match &self.targeting {
            Targeting::Invalid(e) => Some(e),
            _ => None,
        }
    }

    fn variant(&self, name: &str) -> Option<&(Box<str>, Value)> {
        self.variants.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| &self.variants[i])
    }

    fn resolution<'f>(&'f self, value: Option<&'f (Box<str>, Value)>, reason: Reason) -> Resolution<'f> {
        Resolution {
            value: value.map(|(_, v)| v),
            variant: value.map(|(n, _)| &**n),
            reason,
            error_code: None,
            error_message: None,
            metadata: &self.metadata,
        }
    }

    fn error(&self, code: ErrorCode, message: String) -> Resolution<'_> {
        Resolution {
            value: None,
            variant: None,
            reason: Reason::Error,
            error_code: Some(code),
            error_message: Some(message),
            metadata: &self.metadata,
        }
    }

    /// The default variant with `reason`, or no value (the caller's default) when the flag has
    /// no default variant; flagd reports the latter as `DEFAULT` too.
    fn default_resolution(&self, reason: Reason) -> Resolution<'_> {
        match self.default_variant {
            Some(i) => self.resolution(Some(&self.variants[i]), reason),
            None => self.resolution(None, Reason::Default),
        }
    }

    /// Evaluates the flag for `ctx` at `now_unix_secs` (what `$flagd.timestamp` reads).
    pub fn evaluate(&self, ctx: &EvalContext<'_>, now_unix_secs: i64) -> Resolution<'_> {
        if self.state == FlagState::Disabled {
            return self.resolution(None, Reason::Disabled);
        }
        let node = match &self.targeting {
            Targeting::None => return self.default_resolution(Reason::Static),
            Targeting::Rule(node) => node,
            Targeting::Invalid(e) => {
                return self
                    .error(ErrorCode::ParseError, format!("targeting of flag {:?} is invalid: {e}", &*self.key));
            }
        };
        let env = Env { ctx, flag_key: &self.key, now_unix_secs, algorithm: self.options.fractional };
        let result = logic::eval(node, &env);
        let found = match &result {
            Val::Null => return self.default_resolution(Reason::Default),
            Val::Str(s) => self.variant(s),
            Val::Owned(s) => self.variant(s),
            Val::Bool(true) => self.variant("true"),
            Val::Bool(false) => self.variant("false"),
            Val::Num(n) => self.variant(&js_number_string(*n)),
            _ => None,
        };
        match found {
            Some(v) => self.resolution(Some(v), Reason::TargetingMatch),
            None => self.error(
                ErrorCode::General,
                format!(
                    "targeting of flag {:?} returned {}, which is not one of its variants",
                    &*self.key,
                    result.to_json()
                ),
            ),
        }
    }

    /// Evaluates and reads the value as `T`, falling back to `default` (see [`Typed`]).
    pub fn resolve<'f, T: FlagValue<'f>>(
        &'f self,
        ctx: &EvalContext<'_>,
        now_unix_secs: i64,
        default: T,
    ) -> Typed<'f, T> {
        typed(self.evaluate(ctx, now_unix_secs), &self.key, default)
    }

    pub fn bool_value(&self, ctx: &EvalContext<'_>, now_unix_secs: i64, default: bool) -> Typed<'_, bool> {
        self.resolve(ctx, now_unix_secs, default)
    }

    pub fn string_value<'f>(
        &'f self,
        ctx: &EvalContext<'_>,
        now_unix_secs: i64,
        default: &'f str,
    ) -> Typed<'f, &'f str> {
        self.resolve(ctx, now_unix_secs, default)
    }

    pub fn int_value(&self, ctx: &EvalContext<'_>, now_unix_secs: i64, default: i64) -> Typed<'_, i64> {
        self.resolve(ctx, now_unix_secs, default)
    }

    pub fn float_value(&self, ctx: &EvalContext<'_>, now_unix_secs: i64, default: f64) -> Typed<'_, f64> {
        self.resolve(ctx, now_unix_secs, default)
    }

    pub fn object_value<'f>(
        &'f self,
        ctx: &EvalContext<'_>,
        now_unix_secs: i64,
        default: &'f Map<String, Value>,
    ) -> Typed<'f, &'f Map<String, Value>> {
        self.resolve(ctx, now_unix_secs, default)
    }
}

fn typed<'f, T: FlagValue<'f>>(r: Resolution<'f>, key: &str, default: T) -> Typed<'f, T> {
    let (value, reason, error_code, error_message) = match r.value {
        Some(v) => match T::from_variant(v) {
            Some(x) => (x, r.reason, r.error_code, r.error_message),
            None => (
                default,
                Reason::Error,
                Some(ErrorCode::TypeMismatch),
                Some(format!("flag {key:?} resolved to {v}, which is not a {}", T::TYPE_NAME)),
            ),
        },
        None => (default, r.reason, r.error_code, r.error_message),
    };
    Typed { value, variant: r.variant, reason, error_code, error_message, metadata: r.metadata }
}

/// Checks a flag's targeting at write time: unknown operators, wrong argument counts, missing
/// or nested `$ref`s, bad `fractional` weights, bad `sem_ver` literals. The error names the
/// field `targeting`.
pub fn validate_targeting(spec: &FlagSpec, evaluators: &BTreeMap<String, Value>) -> Result<(), ValidationError> {
    match &spec.targeting {
        None => Ok(()),
        Some(rule) => {
            compile::compile(rule, evaluators).map(drop).map_err(|e| ValidationError::new("targeting", e.to_string()))
        }
    }
}

/// Checks every evaluator and every flag's targeting of a document; errors name
/// `$evaluators.<name>` or `flags.<key>.targeting`.
pub fn validate_document(doc: &NamespaceDocument) -> Result<(), ValidationError> {
    for (name, rule) in &doc.evaluators {
        compile::compile_evaluator(name, rule, &doc.evaluators)
            .map_err(|e| ValidationError::new(format!("$evaluators.{name}"), e.to_string()))?;
    }
    for (key, spec) in &doc.flags {
        validate_targeting(spec, &doc.evaluators)
            .map_err(|e| ValidationError::new(format!("flags.{key}.targeting"), e.problem))?;
    }
    Ok(())
}

/// Every flag of a namespace, compiled. Immutable: build a new one when flags change and swap
/// the `Arc` readers hold.
#[derive(Debug, Clone, Default)]
pub struct CompiledNamespace {
    flags: HashMap<Box<str>, CompiledFlag>,
    metadata: Map<String, Value>,
}

impl CompiledNamespace {
    /// Compiles a document, refusing any targeting or evaluator that does not compile (the
    /// write path: `apply`).
    pub fn compile(doc: &NamespaceDocument) -> Result<Self, ValidationError> {
        validate_document(doc)?;
        Ok(Self::new(doc))
    }

    /// Compiles a document, keeping flags whose targeting does not compile as `PARSE_ERROR`
    /// at evaluation (the read path: loading what is stored).
    pub fn new(doc: &NamespaceDocument) -> Self {
        Self::with_options(doc, CompileOptions::default())
    }

    pub fn with_options(doc: &NamespaceDocument, options: CompileOptions) -> Self {
        let flags = doc
            .flags
            .iter()
            .map(|(k, spec)| {
                (Box::from(k.as_str()), CompiledFlag::with_options(k, spec, &doc.evaluators, &doc.metadata, options))
            })
            .collect();
        CompiledNamespace { flags, metadata: doc.metadata.clone() }
    }

    /// A namespace from flags compiled one by one (e.g. as a watch stream delivers them).
    pub fn from_flags(flags: impl IntoIterator<Item = CompiledFlag>, flag_set_metadata: Map<String, Value>) -> Self {
        CompiledNamespace {
            flags: flags.into_iter().map(|f| (f.key.clone(), f)).collect(),
            metadata: flag_set_metadata,
        }
    }

    pub fn get(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags.get(key)
    }

    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Flag keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.flags.keys().map(|k| &**k)
    }

    pub fn flags(&self) -> impl Iterator<Item = &CompiledFlag> {
        self.flags.values()
    }

    /// The flag set's metadata.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// Evaluates flag `key`; `FLAG_NOT_FOUND` when there is no such flag.
    pub fn evaluate(&self, key: &str, ctx: &EvalContext<'_>, now_unix_secs: i64) -> Resolution<'_> {
        match self.flags.get(key) {
            Some(flag) => flag.evaluate(ctx, now_unix_secs),
            None => self.not_found(key),
        }
    }

    fn not_found(&self, key: &str) -> Resolution<'_> {
        Resolution {
            value: None,
            variant: None,
            reason: Reason::Error,
            error_code: Some(ErrorCode::FlagNotFound),
            error_message: Some(format!("flag {key:?} not found")),
            metadata: &self.metadata,
        }
    }

    /// Typed evaluation of flag `key` (see [`Typed`]).
    pub fn resolve<'f, T: FlagValue<'f>>(
        &'f self,
        key: &str,
        ctx: &EvalContext<'_>,
        now_unix_secs: i64,
        default: T,
    ) -> Typed<'f, T> {
        typed(self.evaluate(key, ctx, now_unix_secs), key, default)
    }

    pub fn bool_value(&self, key: &str, ctx: &EvalContext<'_>, now_unix_secs: i64, default: bool) -> Typed<'_, bool> {
        self.resolve(key, ctx, now_unix_secs, default)
    }

    pub fn string_value<'f>(
        &'f self,
        key: &str,
        ctx: &EvalContext<'_>,
        now_unix_secs: i64,
        default: &'f str,
    ) -> Typed<'f, &'f str> {
        self.resolve(key, ctx, now_unix_secs, default)
    }

    pub fn int_value(&self, key: &str, ctx: &EvalContext<'_>, now_unix_secs: i64, default: i64) -> Typed<'_, i64> {
        self.resolve(key, ctx, now_unix_secs, default)
    }

    pub fn float_value(&self, key: &str, ctx: &EvalContext<'_>, now_unix_secs: i64, default: f64) -> Typed<'_, f64> {
        self.resolve(key, ctx, now_unix_secs, default)
    }

    pub fn object_value<'f>(
        &'f self,
        key: &str,
        ctx: &EvalContext<'_>,
        now_unix_secs: i64,
        default: &'f Map<String, Value>,
    ) -> Typed<'f, &'f Map<String, Value>> {
        self.resolve(key, ctx, now_unix_secs, default)
    }
}

#[cfg(test)]
mod tests;
