//! A namespace's own settings, kept beside its flags and replicated with them: how its
//! `fractional` rules bucket, and whether a write with warnings is refused.
//!
//! They never appear in the flagd document of the namespace (flagd has no such keys); they
//! decide how that document is evaluated and written. Every evaluator of the namespace — the
//! server's, each Rust client's live copy — compiles with the same settings, which the watch
//! stream carries.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::eval::{CompileOptions, FractionalAlgorithm};
use crate::flag::{ValidationError, type_name};

/// The settings of one namespace (all defaults until an admin changes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespaceSettings {
    /// The `fractional` bucketing: flagd's v2 (`murmur3-scaled`, the default: flagd's server
    /// and the Go, Java, JS and .NET providers) or v3 (`cbor-murmur3`: the in-process
    /// providers of Python `openfeature-flagd-core` 2.x and Rust `open-feature-flagd` 0.3).
    /// Choose the one the namespace's in-process providers use, so that they and the server
    /// put every user in the same bucket.
    pub fractional: FractionalAlgorithm,
    /// Refuse writes that flagd would accept but Vexil warns about (an operator that evaluates
    /// to null, a weight of zero, ...), as `--strict` does for one write.
    pub strict: bool,
}

const FIELDS: [&str; 2] = ["fractional", "strict"];

impl NamespaceSettings {
    pub fn compile_options(&self) -> CompileOptions {
        CompileOptions { fractional: self.fractional }
    }

    /// `{"fractional": "...", "strict": ...}`: the audit log's and the CLI's form.
    pub fn to_json(&self) -> Value {
        json!({ "fractional": self.fractional.as_str(), "strict": self.strict })
    }

    /// Reads the JSON form ([`Self::to_json`]); fields left out keep their defaults.
    pub fn from_json(v: &Value) -> Result<Self, ValidationError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ValidationError::new("settings", format!("must be a JSON object, got {}", type_name(v))))?;
        Self::default().merged(obj)
    }

    /// Reads a change in the JSON form; fields left out keep their value in `self` (so a change names only
    /// what it changes). Unknown fields and wrong types are refused, naming the field.
    pub fn merged(&self, change: &Map<String, Value>) -> Result<Self, ValidationError> {
        let mut out = *self;
        for (field, value) in change {
            match (field.as_str(), value) {
                ("fractional", Value::String(name)) => {
                    out.fractional = FractionalAlgorithm::parse(name).ok_or_else(|| {
                        ValidationError::new(
                            "fractional",
                            format!(
                                "unknown algorithm {name:?}; expected murmur3-scaled, cbor-murmur3 or legacy-percent"
                            ),
                        )
                    })?;
                }
                ("strict", Value::Bool(b)) => out.strict = *b,
                ("fractional" | "strict", other) => {
                    let want = if field == "strict" { "a boolean" } else { "a string" };
                    return Err(ValidationError::new(
                        field.clone(),
                        format!("must be {want}, got {}", type_name(other)),
                    ));
                }
                _ => {
                    return Err(ValidationError::new(
                        field.clone(),
                        format!("unknown setting; expected one of {}", FIELDS.join(", ")),
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_change_names_only_what_it_changes_and_bad_fields_are_named() {
        let base = NamespaceSettings::default();
        let v3 = base.merged(&obj(json!({"fractional": "cbor-murmur3"}))).unwrap_or_default();
        assert_eq!(v3.fractional, FractionalAlgorithm::CborMurmur3);
        assert!(!v3.strict);
        let strict = v3.merged(&obj(json!({"strict": true}))).unwrap_or_default();
        assert_eq!(strict, NamespaceSettings { fractional: FractionalAlgorithm::CborMurmur3, strict: true });
        assert_eq!(strict.to_json(), json!({"fractional": "cbor-murmur3", "strict": true}));
        assert_eq!(NamespaceSettings::from_json(&strict.to_json()).ok(), Some(strict));
        assert_eq!(NamespaceSettings::from_json(&json!(5)).err().map(|e| e.field).as_deref(), Some("settings"));

        for (change, field) in [
            (json!({"fractional": "v9"}), "fractional"),
            (json!({"fractional": 3}), "fractional"),
            (json!({"strict": "yes"}), "strict"),
            (json!({"colour": 1}), "colour"),
        ] {
            let err = base.merged(&obj(change.clone())).err().map(|e| e.field);
            assert_eq!(err.as_deref(), Some(field), "{change}");
        }
    }
}
