//! What an evaluation returns, and the one rule for reading it as a requested type.
//!
//! Every surface renders the same [`Resolution`]: the vexil.v1 `FlagEvaluation` (conversion in
//! `vexil-proto`), the JSON of `vexilctl eval` and OFREP ([`Resolution::to_json`]), the client's
//! typed details ([`Typed`]). A caller that asks for a type gets `TYPE_MISMATCH` when the value
//! has another, by flagd's rules ([`FlagValue`]); that result is built in exactly one place
//! here, so its message and shape are the same on every surface.
//!
//! - [`Resolution::with_type`] applies a requested [`ValueType`] (a transport that names the
//!   type at run time); [`Resolution::typed_value`] then reads the value as a [`TypedValue`],
//!   for transports whose messages have one field per type.
//! - [`Resolution::into_typed`] reads it as a Rust type with the caller's default (the
//!   client's hot path: no allocation unless there is an error).

use std::fmt;

use serde_json::{Map, Value};

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

/// What went wrong, when the reason is [`Reason::Error`] (OpenFeature's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No flag data yet: a client that has neither reached the cluster nor loaded a disk
    /// cache. Evaluation itself never reports it.
    ProviderNotReady,
    FlagNotFound,
    TypeMismatch,
    ParseError,
    General,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ProviderNotReady => "PROVIDER_NOT_READY",
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

impl<'f> Resolution<'f> {
    pub fn is_error(&self) -> bool {
        self.error_code.is_some()
    }

    /// Applies a requested type (`None`: whatever type the flag has, nothing changes). A value
    /// of another type makes this a `TYPE_MISMATCH`: no value (the caller's default applies),
    /// reason `ERROR`, the variant kept (as flagd keeps it).
    pub fn with_type(self, key: &str, ty: Option<ValueType>) -> Self {
        match (self.value, ty) {
            (Some(v), Some(ty)) if !ty.accepts(v) => self.type_mismatch(key, v, ty.as_str()),
            _ => self,
        }
    }

    /// The value as `ty` (`None`: in the type it has, see [`TypedValue::of`]); `None` without a
    /// value or when the value is not of that type (apply [`Resolution::with_type`] first to
    /// report that).
    pub fn typed_value(&self, ty: Option<ValueType>) -> Option<TypedValue<'f>> {
        let v = self.value?;
        match ty {
            Some(ty) => ty.read(v),
            None => TypedValue::of(v),
        }
    }

    /// Reads the value as `T`, falling back to `default` whenever there is none (see [`Typed`]);
    /// a value of another type is a `TYPE_MISMATCH`, as in [`Resolution::with_type`].
    pub fn into_typed<T: FlagValue<'f>>(self, key: &str, default: T) -> Typed<'f, T> {
        match self.value.map(|v| (v, T::from_variant(v))) {
            Some((_, Some(value))) => Typed::new(value, self),
            Some((v, None)) => Typed::new(default, self.type_mismatch(key, v, T::TYPE_NAME)),
            None => Typed::new(default, self),
        }
    }

    /// The one place a `TYPE_MISMATCH` is made.
    fn type_mismatch(self, key: &str, value: &Value, type_name: &str) -> Self {
        Resolution {
            value: None,
            reason: Reason::Error,
            error_code: Some(ErrorCode::TypeMismatch),
            error_message: Some(format!(
                "flag {key:?} resolved to {value}, which is not {} {type_name}",
                article(type_name)
            )),
            ..self
        }
    }
}

/// "an" before a vowel, "a" otherwise ("an integer", "a boolean").
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
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

impl<'f, T> Typed<'f, T> {
    fn new(value: T, r: Resolution<'f>) -> Self {
        Typed {
            value,
            variant: r.variant,
            reason: r.reason,
            error_code: r.error_code,
            error_message: r.error_message,
            metadata: r.metadata,
        }
    }
}

/// A type a caller can ask a flag's value to have, named at run time (vexil.v1's `ValueType`,
/// flagd's typed resolve calls). Its rules are those of the matching [`FlagValue`] type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Bool,
    String,
    Int,
    Float,
    Object,
}

impl ValueType {
    /// Every type, in the order tools list them.
    pub const ALL: [ValueType; 5] =
        [ValueType::Bool, ValueType::String, ValueType::Int, ValueType::Float, ValueType::Object];

    /// The short name tools take (`--type int`).
    pub fn short_name(self) -> &'static str {
        match self {
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Object => "object",
        }
    }

    /// The type whose [`ValueType::short_name`] is `name`.
    pub fn from_short_name(name: &str) -> Option<ValueType> {
        ValueType::ALL.into_iter().find(|t| t.short_name() == name)
    }

    /// The type as named in mismatch messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Bool => <bool as FlagValue>::TYPE_NAME,
            ValueType::String => <&str as FlagValue>::TYPE_NAME,
            ValueType::Int => <i64 as FlagValue>::TYPE_NAME,
            ValueType::Float => <f64 as FlagValue>::TYPE_NAME,
            ValueType::Object => <&Map<String, Value> as FlagValue>::TYPE_NAME,
        }
    }

    /// Whether `value` reads as this type.
    pub fn accepts(self, value: &Value) -> bool {
        self.read(value).is_some()
    }

    /// `value` read as this type; `None` when it is not one.
    pub fn read(self, value: &Value) -> Option<TypedValue<'_>> {
        match self {
            ValueType::Bool => bool::from_variant(value).map(TypedValue::Bool),
            ValueType::String => <&str>::from_variant(value).map(TypedValue::String),
            ValueType::Int => i64::from_variant(value).map(TypedValue::Int),
            ValueType::Float => f64::from_variant(value).map(TypedValue::Float),
            ValueType::Object => <&Map<String, Value>>::from_variant(value).map(|_| TypedValue::Object(value)),
        }
    }
}

/// A flag value read as one type, for transports with a field per type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TypedValue<'f> {
    Bool(bool),
    String(&'f str),
    Int(i64),
    Float(f64),
    /// An object; read with no type asked for, also any other value (variants are validated
    /// to be none, so this is a safeguard).
    Object(&'f Value),
}

impl<'f> TypedValue<'f> {
    /// `value` in the type it has: a number that fits an `i64` is an integer, any other a
    /// float.
    pub fn of(value: &'f Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(TypedValue::Bool(*b)),
            Value::String(s) => Some(TypedValue::String(s)),
            Value::Number(n) if n.is_i64() => n.as_i64().map(TypedValue::Int),
            Value::Number(n) => n.as_f64().map(TypedValue::Float),
            other => Some(TypedValue::Object(other)),
        }
    }
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
