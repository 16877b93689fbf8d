//! Flag evaluation, exactly as flagd resolves flags, compiled once and evaluated many times.
//!
//! - [`CompiledFlag`]: one flag with its targeting compiled (`$ref`s resolved, operators and
//!   paths pre-parsed) and its metadata merged over the flag set's. Built when a flag is stored
//!   or loaded; evaluating it parses nothing and allocates nothing on the common paths.
//! - [`CompiledNamespace`]: every flag of a namespace, looked up by key (`FLAG_NOT_FOUND` for
//!   the rest). `Send + Sync`: share it behind an `Arc` and read it from any thread, lock-free.
//! - [`EvalContext`]: a borrowed, allocation-free context (targeting key plus attributes).
//! - [`Resolution`] (`resolution.rs`): what an evaluation returns, the one shape every surface
//!   renders, and the one rule for a requested type ([`ValueType`], [`FlagValue`]).
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
//! | typed request of the wrong type | `ERROR` | `TYPE_MISMATCH` | the caller's default; the variant is kept |
//!
//! `$flagd.flagKey` and `$flagd.timestamp` (the `now_unix_secs` argument: evaluation reads no
//! clock) are visible to rules and always override a caller's `$flagd`.
//!
//! Architecture invariant: nothing in this module does IO, reads a clock or keeps state
//! between evaluations; the same inputs give the same answer on the server and every client.

mod cbor;
mod compile;
pub mod context;
pub mod fractional;
mod logic;
pub mod murmur3;
mod resolution;
pub mod semver;
mod value;

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

pub use compile::{CompileError, OPERATORS, ProblemKind};
pub use context::{Attr, EvalContext, INLINE_ATTRS, TARGETING_KEY};
pub use fractional::FractionalAlgorithm;
pub use resolution::{ErrorCode, FlagValue, Reason, Resolution, Typed, TypedValue, ValueType};

use crate::document::NamespaceDocument;
use crate::flag::{FlagSpec, FlagState, ValidationError, VariantType};
use logic::{Env, Node};
use value::{Val, js_number_string};

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
                Ok(compiled) => Targeting::Rule(compiled.node),
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
}

/// What a flag's targeting holds that flagd would load and decide at evaluation time: a rule
/// that cannot be evaluated (every evaluation PARSE_ERROR), or flagd operators given unusable
/// arguments (they evaluate to null). `Err` only for what Vexil refuses whatever the mode (a
/// rule nested beyond its bounds). Each warning names the field `targeting` and says what it
/// does to evaluation.
pub fn check_targeting(
    spec: &FlagSpec,
    evaluators: &BTreeMap<String, Value>,
) -> Result<Vec<ValidationError>, ValidationError> {
    let Some(rule) = &spec.targeting else { return Ok(Vec::new()) };
    match compile::compile(rule, evaluators) {
        Ok(compiled) => Ok(compiled.notes.iter().map(|n| warning("targeting", n)).collect()),
        Err(e) if e.kind == ProblemKind::Limit => Err(ValidationError::new("targeting", e.to_string())),
        Err(e) => Ok(vec![warning("targeting", &e)]),
    }
}

fn warning(field: &str, e: &CompileError) -> ValidationError {
    let effect = match e.kind {
        ProblemKind::NullOperator => "that operator evaluates to null, as in flagd",
        ProblemKind::Adjusted => "evaluated so, as in flagd",
        ProblemKind::Invalid | ProblemKind::Limit => "every evaluation of this flag is PARSE_ERROR, as in flagd",
    };
    ValidationError::new(field, format!("{e} ({effect})"))
}

/// [`check_targeting`] for every evaluator and flag of a document; warnings name
/// `$evaluators.<name>` or `flags.<key>.targeting`.
pub fn check_document(doc: &NamespaceDocument) -> Result<Vec<ValidationError>, ValidationError> {
    let mut warnings = Vec::new();
    for (name, rule) in &doc.evaluators {
        let field = format!("$evaluators.{name}");
        match compile::compile_evaluator(name, rule, &doc.evaluators) {
            Ok(compiled) => warnings.extend(compiled.notes.iter().map(|n| warning(&field, n))),
            Err(e) if e.kind == ProblemKind::Limit => return Err(ValidationError::new(field, e.to_string())),
            Err(e) => warnings.push(warning(&field, &e)),
        }
    }
    for (key, spec) in &doc.flags {
        let field = format!("flags.{key}.targeting");
        let found = check_targeting(spec, &doc.evaluators).map_err(|e| ValidationError::new(&field, e.problem))?;
        warnings.extend(found.into_iter().map(|w| ValidationError::new(&field, w.problem)));
    }
    Ok(warnings)
}

/// Checks a flag's targeting strictly (Vexil's own rule, `--strict`): any problem
/// [`check_targeting`] finds is refused, naming the field `targeting`.
pub fn validate_targeting(spec: &FlagSpec, evaluators: &BTreeMap<String, Value>) -> Result<(), ValidationError> {
    check_targeting(spec, evaluators)?.into_iter().next().map_or(Ok(()), Err)
}

/// [`check_document`], strictly: the first problem is refused.
pub fn validate_document(doc: &NamespaceDocument) -> Result<(), ValidationError> {
    check_document(doc)?.into_iter().next().map_or(Ok(()), Err)
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

    /// The flag set's own `metadata` (each flag's results merge theirs over it).
    pub fn flag_set_metadata(&self) -> &Map<String, Value> {
        &self.metadata
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
        self.evaluate(key, ctx, now_unix_secs).into_typed(key, default)
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
