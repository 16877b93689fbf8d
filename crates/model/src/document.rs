//! A whole namespace as one flagd document: `flags`, `$evaluators` and flag-set `metadata`.
//!
//! This is flagd's file format (what `flagd` reads from disk and what `flagd.sync.v1` pushes),
//! so a file kept in git for flagd can be applied to a Vexil namespace unchanged, and an export
//! from Vexil is accepted by `apply` unchanged.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::flag::{FlagSpec, ValidationError, check_json_logic, parse_metadata, type_name};
use crate::limits;

/// A validated namespace document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamespaceDocument {
    pub flags: BTreeMap<String, FlagSpec>,
    /// Named JsonLogic fragments that targeting rules include with `{"$ref": "name"}`.
    pub evaluators: BTreeMap<String, Value>,
    /// Flag-set metadata, merged under each flag's own metadata at evaluation.
    pub metadata: Map<String, Value>,
}

const KNOWN_DOCUMENT_FIELDS: [&str; 4] = ["$schema", "flags", "$evaluators", "metadata"];

impl NamespaceDocument {
    pub fn from_json(json: &str) -> Result<Self, ValidationError> {
        if json.len() > limits::DOCUMENT_BYTES_MAX {
            return Err(ValidationError::new(
                "document",
                format!("is {} bytes; the limit is {}", json.len(), limits::DOCUMENT_BYTES_MAX),
            ));
        }
        let value: Value =
            serde_json::from_str(json).map_err(|e| ValidationError::new("document", format!("malformed JSON: {e}")))?;
        Self::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<Self, ValidationError> {
        let obj = value.as_object().ok_or_else(|| {
            ValidationError::new("document", format!("must be a JSON object, got {}", type_name(value)))
        })?;
        for name in obj.keys() {
            if !KNOWN_DOCUMENT_FIELDS.contains(&name.as_str()) {
                return Err(ValidationError::new(
                    name.clone(),
                    format!("unknown field; expected one of {}", KNOWN_DOCUMENT_FIELDS.join(", ")),
                ));
            }
        }
        let flags_obj = match obj.get("flags") {
            Some(Value::Object(f)) => f,
            Some(other) => {
                return Err(ValidationError::new(
                    "flags",
                    format!("must be an object of flag key to flag, got {}", type_name(other)),
                ));
            }
            None => return Err(ValidationError::new("flags", "is required: an object of flag key to flag")),
        };
        if flags_obj.len() > limits::DOCUMENT_FLAGS_MAX {
            return Err(ValidationError::new(
                "flags",
                format!("holds {} flags; the limit is {}", flags_obj.len(), limits::DOCUMENT_FLAGS_MAX),
            ));
        }
        let mut flags = BTreeMap::new();
        for (key, flag) in flags_obj {
            let spec = FlagSpec::from_value(key, flag, &format!("flags.{key}"))?;
            flags.insert(key.clone(), spec);
        }
        let evaluators = Self::parse_evaluators(obj.get("$evaluators"))?;
        let metadata = parse_metadata(obj.get("metadata"), "metadata")?;
        let doc = NamespaceDocument { flags, evaluators, metadata };
        doc.check_dependencies()?;
        Ok(doc)
    }

    fn parse_evaluators(value: Option<&Value>) -> Result<BTreeMap<String, Value>, ValidationError> {
        let obj = match value {
            None | Some(Value::Null) => return Ok(BTreeMap::new()),
            Some(Value::Object(o)) => o,
            Some(other) => {
                return Err(ValidationError::new(
                    "$evaluators",
                    format!("must be an object of name to JsonLogic, got {}", type_name(other)),
                ));
            }
        };
        if obj.len() > limits::EVALUATORS_MAX {
            return Err(ValidationError::new(
                "$evaluators",
                format!("holds {} evaluators; the limit is {}", obj.len(), limits::EVALUATORS_MAX),
            ));
        }
        let mut out = BTreeMap::new();
        for (name, rule) in obj {
            let field = format!("$evaluators.{name}");
            if name.is_empty() {
                return Err(ValidationError::new(field, "evaluator names must not be empty"));
            }
            check_json_logic(rule, &field, limits::TARGETING_BYTES_MAX)?;
            out.insert(name.clone(), rule.clone());
        }
        Ok(out)
    }

    /// `depends_on` must name flags of the same document.
    fn check_dependencies(&self) -> Result<(), ValidationError> {
        for (key, spec) in &self.flags {
            for (i, dep) in spec.depends_on.iter().enumerate() {
                if !self.flags.contains_key(dep) {
                    return Err(ValidationError::new(
                        format!("flags.{key}.depends_on[{i}]"),
                        format!("names flag {dep:?}, which is not in this document"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The document as JSON, governance fields included (what `export` writes and `apply` reads).
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("flags".into(), Value::Object(self.flags.iter().map(|(k, f)| (k.clone(), f.to_value())).collect()));
        if !self.evaluators.is_empty() {
            obj.insert("$evaluators".into(), Value::Object(self.evaluators.clone().into_iter().collect()));
        }
        if !self.metadata.is_empty() {
            obj.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        Value::Object(obj)
    }

    /// The document as plain flagd JSON (governance fields dropped), for flagd sync consumers.
    pub fn to_flagd_value(&self) -> Value {
        let mut v = self.to_value();
        v["flags"] = Value::Object(self.flags.iter().map(|(k, f)| (k.clone(), f.to_flagd_value())).collect());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_flagd_file_parses_and_round_trips() {
        let v = json!({
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "flags": {
                "new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                                 "targeting": {"if": [{"$ref": "beta"}, "on", null]}},
                "color": {"state": "DISABLED", "variants": {"red": "r"}, "defaultVariant": "red", "depends_on": ["new-checkout"]}
            },
            "$evaluators": {"beta": {"in": [{"var": "email"}, ["a@x.io"]]}},
            "metadata": {"team": "checkout"}
        });
        let doc = NamespaceDocument::from_value(&v).unwrap();
        assert_eq!(doc.flags.len(), 2);
        assert_eq!(NamespaceDocument::from_value(&doc.to_value()).unwrap(), doc);
        assert!(doc.to_flagd_value()["flags"]["color"].get("depends_on").is_none());
    }

    #[test]
    fn errors_carry_the_flag_path() {
        let v = json!({"flags": {"a": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "y"}}});
        assert_eq!(NamespaceDocument::from_value(&v).unwrap_err().field, "flags.a.defaultVariant");
        let v = json!({"flags": {"a": {"state": "ENABLED", "variants": {"x": 1}, "depends_on": ["b"]}}});
        assert_eq!(NamespaceDocument::from_value(&v).unwrap_err().field, "flags.a.depends_on[0]");
        let v = json!({"flag": {}});
        assert_eq!(NamespaceDocument::from_value(&v).unwrap_err().field, "flag");
        assert_eq!(NamespaceDocument::from_json("[").unwrap_err().field, "document");
    }
}

/// What applying a document would change in a namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocumentDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Changed flags, each with the top-level fields that differ.
    pub changed: Vec<(String, Vec<FieldChange>)>,
    pub unchanged: usize,
    /// `$evaluators` or flag-set metadata differ.
    pub settings_changed: bool,
}

/// One top-level field of a flag that differs; `None` where the field is absent.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl DocumentDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty() && !self.settings_changed
    }
}

/// Compares a namespace's current state with a document that would replace it.
pub fn diff(current: &NamespaceDocument, next: &NamespaceDocument) -> DocumentDiff {
    let mut d = DocumentDiff {
        settings_changed: current.evaluators != next.evaluators || current.metadata != next.metadata,
        ..DocumentDiff::default()
    };
    for (key, spec) in &next.flags {
        match current.flags.get(key) {
            None => d.added.push(key.clone()),
            Some(old) if old == spec => d.unchanged += 1,
            Some(old) => d.changed.push((key.clone(), field_changes(&old.to_value(), &spec.to_value()))),
        }
    }
    d.removed = current.flags.keys().filter(|k| !next.flags.contains_key(*k)).cloned().collect();
    d
}

fn field_changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    let empty = Map::new();
    let (b, a) = (before.as_object().unwrap_or(&empty), after.as_object().unwrap_or(&empty));
    let fields: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    fields
        .into_iter()
        .filter(|f| b.get(*f) != a.get(*f))
        .map(|f| FieldChange { field: f.clone(), before: b.get(f).cloned(), after: a.get(f).cloned() })
        .collect()
}

#[cfg(test)]
mod diff_tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> NamespaceDocument {
        NamespaceDocument::from_value(&v).expect("valid document")
    }

    #[test]
    fn diff_lists_added_removed_and_changed_fields() {
        let flag = |dv: &str| json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": dv});
        let current = doc(json!({"flags": {"same": flag("on"), "edit": flag("on"), "gone": flag("on")}}));
        let next = doc(json!({"flags": {"same": flag("on"), "edit": flag("off"), "new": flag("on")},
                              "metadata": {"team": "x"}}));
        let d = diff(&current, &next);
        assert_eq!(d.added, ["new"]);
        assert_eq!(d.removed, ["gone"]);
        assert_eq!(d.unchanged, 1);
        assert!(d.settings_changed);
        let (key, fields) = &d.changed[0];
        assert_eq!(key, "edit");
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].field, "defaultVariant");
        assert_eq!((fields[0].before.clone(), fields[0].after.clone()), (Some(json!("on")), Some(json!("off"))));
        assert!(diff(&next, &next).is_empty());
    }
}
