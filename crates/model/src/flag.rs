//! The flag definition: flagd's flag object plus Vexil's governance fields.
//!
//! A [`FlagSpec`] is what a user writes. Its JSON form is exactly a flagd flag object
//! (`state`, `variants`, `defaultVariant`, `targeting`, `metadata`) with the governance keys
//! `description`, `owner`, `tags`, `lifecycle`, `expires_at` and `depends_on` beside them, so a
//! flagd file is a valid Vexil input and a Vexil export is a valid flagd file once the
//! governance keys are dropped ([`FlagSpec::to_flagd_value`]).
//!
//! Parsing is validation: [`FlagSpec::from_value`] either returns a spec that satisfies every
//! rule below or a [`ValidationError`] naming the first offending field by its JSON path. The
//! canonical JSON form ([`FlagSpec::to_json`]) has sorted keys, so equal specs serialise to
//! equal bytes; the store keeps that form.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits;

/// A rule that input broke, with the JSON path of the field (`flags.new-checkout.variants`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {problem}")]
pub struct ValidationError {
    pub field: String,
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

type VResult<T> = Result<T, ValidationError>;

/// Whether a flag serves its variants (`ENABLED`) or is switched off (`DISABLED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlagState {
    Enabled,
    Disabled,
}

impl FlagState {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagState::Enabled => "ENABLED",
            FlagState::Disabled => "DISABLED",
        }
    }
}

/// Where a flag is in its life, from idea to removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Planned,
    InFlight,
    Tested,
    #[default]
    Active,
    Deprecated,
    Retired,
}

impl Lifecycle {
    /// Every stage with its name, from idea to removal.
    pub const ALL: [(&'static str, Lifecycle); 6] = [
        ("planned", Lifecycle::Planned),
        ("in_flight", Lifecycle::InFlight),
        ("tested", Lifecycle::Tested),
        ("active", Lifecycle::Active),
        ("deprecated", Lifecycle::Deprecated),
        ("retired", Lifecycle::Retired),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, l)| *l == self).map(|(s, _)| *s).unwrap_or("active")
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(name, _)| *name == s).map(|(_, l)| *l)
    }
}

/// The JSON type shared by all of a flag's variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VariantType {
    Bool,
    String,
    Number,
    Object,
}

impl VariantType {
    pub fn of(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(_) => Some(VariantType::Bool),
            Value::String(_) => Some(VariantType::String),
            Value::Number(_) => Some(VariantType::Number),
            Value::Object(_) => Some(VariantType::Object),
            Value::Null | Value::Array(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VariantType::Bool => "boolean",
            VariantType::String => "string",
            VariantType::Number => "number",
            VariantType::Object => "object",
        }
    }
}

/// A validated flag definition. Construct it with [`FlagSpec::from_json`] or
/// [`FlagSpec::from_value`]; every field then satisfies the rules in this module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlagSpec {
    pub state: FlagState,
    pub variants: BTreeMap<String, Value>,
    #[serde(rename = "defaultVariant", skip_serializing_if = "Option::is_none")]
    pub default_variant: Option<String>,
    /// `None` when the flag has no targeting (absent, `null` or `{}` in the input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targeting: Option<Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub lifecycle: Lifecycle,
    /// RFC 3339 timestamp after which the flag is reported as stale, kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl FlagSpec {
    /// Parses and validates one flag object. `key` is the flag's key (checked too, and used
    /// to reject a flag that depends on itself).
    pub fn from_json(key: &str, json: &str) -> VResult<Self> {
        if json.len() > limits::FLAG_BYTES_MAX {
            return Err(ValidationError::new(
                "flag",
                format!("definition is {} bytes; the limit is {}", json.len(), limits::FLAG_BYTES_MAX),
            ));
        }
        let value: Value =
            serde_json::from_str(json).map_err(|e| ValidationError::new("flag", format!("malformed JSON: {e}")))?;
        // The text is within the limit, so its compact form is too: no need to measure again.
        Self::validate_value(key, &value, "")
    }

    /// Validates a parsed flag object. `path` prefixes field names in errors (`flags.<key>`
    /// inside a document, empty for a lone flag).
    pub fn from_value(key: &str, value: &Value, path: &str) -> VResult<Self> {
        let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > limits::FLAG_BYTES_MAX {
            return Err(ValidationError::new(
                if path.is_empty() { "flag" } else { path },
                format!("definition is {size} bytes; the limit is {}", limits::FLAG_BYTES_MAX),
            ));
        }
        Self::validate_value(key, value, path)
    }

    /// [`FlagSpec::from_value`] without the size check, for a value whose size is known.
    fn validate_value(key: &str, value: &Value, path: &str) -> VResult<Self> {
        let field = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
        validate_flag_key(key).map_err(|p| ValidationError::new(field("key"), p))?;
        let obj = value.as_object().ok_or_else(|| {
            ValidationError::new(if path.is_empty() { "flag" } else { path }, "must be a JSON object")
        })?;
        for name in obj.keys() {
            if !KNOWN_FLAG_FIELDS.contains(&name.as_str()) {
                return Err(ValidationError::new(
                    field(name),
                    format!("unknown field; expected one of {}", KNOWN_FLAG_FIELDS.join(", ")),
                ));
            }
        }

        let state = match obj.get("state") {
            Some(Value::String(s)) if s == "ENABLED" => FlagState::Enabled,
            Some(Value::String(s)) if s == "DISABLED" => FlagState::Disabled,
            Some(other) => {
                return Err(ValidationError::new(
                    field("state"),
                    format!("must be \"ENABLED\" or \"DISABLED\", got {other}"),
                ));
            }
            None => return Err(ValidationError::new(field("state"), "is required (\"ENABLED\" or \"DISABLED\")")),
        };

        let variants = parse_variants(obj.get("variants"), &field("variants"))?;

        let default_variant = match obj.get("defaultVariant") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => {
                if !variants.contains_key(name) {
                    return Err(ValidationError::new(
                        field("defaultVariant"),
                        format!("names variant {name:?}, which is not in `variants`"),
                    ));
                }
                Some(name.clone())
            }
            Some(other) => {
                return Err(ValidationError::new(
                    field("defaultVariant"),
                    format!("must be a variant name or null, got {other}"),
                ));
            }
        };

        let targeting = match obj.get("targeting") {
            None | Some(Value::Null) => None,
            Some(Value::Object(rule)) if rule.is_empty() => None,
            Some(rule @ Value::Object(_)) => {
                check_json_logic(rule, &field("targeting"), limits::TARGETING_BYTES_MAX)?;
                Some(rule.clone())
            }
            Some(other) => {
                return Err(ValidationError::new(
                    field("targeting"),
                    format!("must be a JsonLogic object, got {}", type_name(other)),
                ));
            }
        };

        let metadata = parse_metadata(obj.get("metadata"), &field("metadata"))?;
        let description = parse_string(obj.get("description"), &field("description"), limits::DESCRIPTION_BYTES_MAX)?;
        let owner = parse_string(obj.get("owner"), &field("owner"), limits::OWNER_BYTES_MAX)?;
        let tags = parse_string_list(obj.get("tags"), &field("tags"), limits::TAGS_MAX, |tag| {
            if tag.is_empty() || tag.len() > limits::TAG_BYTES_MAX {
                Err(format!("each tag must be 1 to {} bytes", limits::TAG_BYTES_MAX))
            } else {
                Ok(())
            }
        })?;
        let lifecycle = match obj.get("lifecycle") {
            None | Some(Value::Null) => Lifecycle::default(),
            Some(Value::String(s)) => Lifecycle::parse(s).ok_or_else(|| {
                ValidationError::new(
                    field("lifecycle"),
                    format!(
                        "unknown lifecycle {s:?}; expected planned, in_flight, tested, active, deprecated or retired"
                    ),
                )
            })?,
            Some(other) => {
                return Err(ValidationError::new(
                    field("lifecycle"),
                    format!("must be a string, got {}", type_name(other)),
                ));
            }
        };
        let expires_at = match obj.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                parse_rfc3339(s).ok_or_else(|| {
                    ValidationError::new(
                        field("expires_at"),
                        format!("{s:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z"),
                    )
                })?;
                Some(s.clone())
            }
            Some(other) => {
                return Err(ValidationError::new(
                    field("expires_at"),
                    format!("must be an RFC 3339 string, got {}", type_name(other)),
                ));
            }
        };
        let depends_on =
            parse_string_list(obj.get("depends_on"), &field("depends_on"), limits::DEPENDS_ON_MAX, |dep| {
                validate_flag_key(dep)?;
                if dep == key { Err("a flag cannot depend on itself".to_string()) } else { Ok(()) }
            })?;

        Ok(FlagSpec {
            state,
            variants,
            default_variant,
            targeting,
            metadata,
            description,
            owner,
            tags,
            lifecycle,
            expires_at,
            depends_on,
        })
    }

    /// The type every variant shares (validation guarantees there is exactly one).
    pub fn variant_type(&self) -> VariantType {
        self.variants.values().next().and_then(VariantType::of).expect("validated spec has at least one typed variant")
    }

    /// `expires_at` as Unix seconds, if set.
    pub fn expires_at_unix(&self) -> Option<i64> {
        self.expires_at.as_deref().and_then(parse_rfc3339)
    }

    /// The canonical JSON form: sorted keys, no insignificant whitespace.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a FlagSpec always serialises")
    }

    /// The JSON value of the canonical form.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a FlagSpec always serialises")
    }

    /// The plain flagd flag object, without Vexil's governance keys.
    pub fn to_flagd_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("state".into(), Value::String(self.state.as_str().into()));
        obj.insert("variants".into(), Value::Object(self.variants.clone().into_iter().collect()));
        if let Some(d) = &self.default_variant {
            obj.insert("defaultVariant".into(), Value::String(d.clone()));
        }
        obj.insert("targeting".into(), self.targeting.clone().unwrap_or_else(|| Value::Object(Map::new())));
        if !self.metadata.is_empty() {
            obj.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        Value::Object(obj)
    }
}

/// Every key a flag object may carry: flagd's five, then Vexil's governance fields.
pub const KNOWN_FLAG_FIELDS: [&str; 11] = [
    "state",
    "variants",
    "defaultVariant",
    "targeting",
    "metadata",
    "description",
    "owner",
    "tags",
    "lifecycle",
    "expires_at",
    "depends_on",
];

/// Flag keys: 1 to [`limits::FLAG_KEY_BYTES_MAX`] bytes of Unicode letters, digits and
/// `- _ . : / @`, not starting with `$` (reserved for flagd's `$evaluators` and `$flagd`).
pub fn validate_flag_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > limits::FLAG_KEY_BYTES_MAX {
        return Err(format!("is {} bytes; the limit is {}", key.len(), limits::FLAG_KEY_BYTES_MAX));
    }
    if let Some(c) = key.chars().find(|c| !(c.is_alphanumeric() || "-_.:/@".contains(*c))) {
        return Err(format!("{key:?} contains {c:?}; keys may hold letters, digits and - _ . : / @"));
    }
    Ok(())
}

/// Namespaces: 1 to [`limits::NAMESPACE_BYTES_MAX`] bytes of lowercase ASCII letters, digits,
/// `-`, `_` and `.`, starting with a letter or digit (they appear in headers and selectors).
pub fn validate_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty() {
        return Err("must not be empty".into());
    }
    if ns.len() > limits::NAMESPACE_BYTES_MAX {
        return Err(format!("is {} bytes; the limit is {}", ns.len(), limits::NAMESPACE_BYTES_MAX));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    if let Some(c) = ns.chars().find(|c| !ok_char(*c)) {
        return Err(format!("{ns:?} contains {c:?}; namespaces may hold a-z, 0-9, - _ and ."));
    }
    if !ns.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("{ns:?} must start with a letter or digit"));
    }
    Ok(())
}

fn parse_variants(value: Option<&Value>, field: &str) -> VResult<BTreeMap<String, Value>> {
    let obj = match value {
        Some(Value::Object(obj)) => obj,
        Some(other) => {
            return Err(ValidationError::new(
                field,
                format!("must be an object of variant name to value, got {}", type_name(other)),
            ));
        }
        None => return Err(ValidationError::new(field, "is required: an object of variant name to value")),
    };
    if obj.is_empty() {
        return Err(ValidationError::new(field, "must declare at least one variant"));
    }
    if obj.len() > limits::VARIANTS_MAX {
        return Err(ValidationError::new(
            field,
            format!("declares {} variants; the limit is {}", obj.len(), limits::VARIANTS_MAX),
        ));
    }
    let mut first: Option<(&str, VariantType)> = None;
    for (name, v) in obj {
        let vfield = format!("{field}.{name}");
        if name.is_empty() || name.len() > limits::VARIANT_NAME_BYTES_MAX {
            return Err(ValidationError::new(
                vfield,
                format!("variant names must be 1 to {} bytes", limits::VARIANT_NAME_BYTES_MAX),
            ));
        }
        let Some(ty) = VariantType::of(v) else {
            return Err(ValidationError::new(
                vfield,
                format!("variant values must be a boolean, string, number or object, got {}", type_name(v)),
            ));
        };
        match first {
            None => first = Some((name, ty)),
            Some((first_name, first_ty)) if first_ty != ty => {
                return Err(ValidationError::new(
                    vfield,
                    format!(
                        "is a {} but variant {first_name:?} is a {}; all variants of a flag must have one type",
                        ty.as_str(),
                        first_ty.as_str()
                    ),
                ));
            }
            Some(_) => {}
        }
        let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > limits::VARIANT_VALUE_BYTES_MAX {
            return Err(ValidationError::new(
                vfield,
                format!("value is {size} bytes; the limit is {}", limits::VARIANT_VALUE_BYTES_MAX),
            ));
        }
        if ty == VariantType::Object {
            check_depth(v, &vfield, 0)?;
        }
    }
    Ok(obj.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Checks a JsonLogic expression's size and depth. Operator-level checks happen when the
/// evaluator compiles the rule.
pub fn check_json_logic(rule: &Value, field: &str, bytes_max: usize) -> VResult<()> {
    let size = serde_json::to_vec(rule).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > bytes_max {
        return Err(ValidationError::new(field, format!("rule is {size} bytes; the limit is {bytes_max}")));
    }
    check_depth(rule, field, 0)
}

fn check_depth(value: &Value, field: &str, depth: usize) -> VResult<()> {
    if depth > limits::JSON_LOGIC_DEPTH_MAX {
        return Err(ValidationError::new(field, format!("nests deeper than {} levels", limits::JSON_LOGIC_DEPTH_MAX)));
    }
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| check_depth(v, field, depth + 1)),
        Value::Object(obj) => obj.values().try_for_each(|v| check_depth(v, field, depth + 1)),
        _ => Ok(()),
    }
}

/// flagd metadata: an object whose values are booleans, strings or numbers.
pub fn parse_metadata(value: Option<&Value>, field: &str) -> VResult<Map<String, Value>> {
    let obj = match value {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(obj)) => obj,
        Some(other) => return Err(ValidationError::new(field, format!("must be an object, got {}", type_name(other)))),
    };
    if obj.len() > limits::METADATA_ENTRIES_MAX {
        return Err(ValidationError::new(
            field,
            format!("has {} entries; the limit is {}", obj.len(), limits::METADATA_ENTRIES_MAX),
        ));
    }
    for (k, v) in obj {
        let efield = format!("{field}.{k}");
        if k.is_empty() || k.len() > limits::METADATA_STRING_BYTES_MAX {
            return Err(ValidationError::new(
                efield,
                format!("keys must be 1 to {} bytes", limits::METADATA_STRING_BYTES_MAX),
            ));
        }
        match v {
            Value::Bool(_) | Value::Number(_) => {}
            Value::String(s) if s.len() <= limits::METADATA_STRING_BYTES_MAX => {}
            Value::String(_) => {
                return Err(ValidationError::new(
                    efield,
                    format!("string values must be at most {} bytes", limits::METADATA_STRING_BYTES_MAX),
                ));
            }
            other => {
                return Err(ValidationError::new(
                    efield,
                    format!("metadata values must be a boolean, string or number, got {}", type_name(other)),
                ));
            }
        }
    }
    Ok(obj.clone())
}

fn parse_string(value: Option<&Value>, field: &str, bytes_max: usize) -> VResult<String> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s.len() <= bytes_max => Ok(s.clone()),
        Some(Value::String(s)) => {
            Err(ValidationError::new(field, format!("is {} bytes; the limit is {bytes_max}", s.len())))
        }
        Some(other) => Err(ValidationError::new(field, format!("must be a string, got {}", type_name(other)))),
    }
}

fn parse_string_list(
    value: Option<&Value>,
    field: &str,
    count_max: usize,
    check: impl Fn(&str) -> Result<(), String>,
) -> VResult<Vec<String>> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ValidationError::new(field, format!("must be an array of strings, got {}", type_name(other))));
        }
    };
    if items.len() > count_max {
        return Err(ValidationError::new(field, format!("has {} entries; the limit is {count_max}", items.len())));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::String(s) = item else {
            return Err(ValidationError::new(
                format!("{field}[{i}]"),
                format!("must be a string, got {}", type_name(item)),
            ));
        };
        check(s).map_err(|p| ValidationError::new(format!("{field}[{i}]"), p))?;
        if out.contains(s) {
            return Err(ValidationError::new(format!("{field}[{i}]"), format!("{s:?} is listed twice")));
        }
        out.push(s.clone());
    }
    Ok(out)
}

/// How messages name a JSON value's type ("a number", "an object", ...).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses an RFC 3339 timestamp (`2027-01-31T00:00:00Z`, `…T00:00:00.5+02:00`) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

impl fmt::Display for FlagSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> VResult<FlagSpec> {
        FlagSpec::from_value("new-checkout", &v, "")
    }

    #[test]
    fn accepts_a_plain_flagd_flag_and_round_trips_canonically() {
        let s = spec(json!({
            "state": "ENABLED",
            "variants": {"on": true, "off": false},
            "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "email"}, "a@b.c"]}, "on", null]},
            "metadata": {"team": "checkout", "weight": 3}
        }))
        .unwrap();
        assert_eq!(s.variant_type(), VariantType::Bool);
        assert_eq!(s.lifecycle, Lifecycle::Active);
        let again = FlagSpec::from_json("new-checkout", &s.to_json()).unwrap();
        assert_eq!(again, s);
        assert_eq!(again.to_json(), s.to_json());
    }

    #[test]
    fn empty_targeting_means_none_and_null_default_is_allowed() {
        let s = spec(json!({"state": "DISABLED", "variants": {"a": "x"}, "defaultVariant": null, "targeting": {}}))
            .unwrap();
        assert_eq!(s.targeting, None);
        assert_eq!(s.default_variant, None);
    }

    #[test]
    fn governance_fields_parse_and_drop_out_of_the_flagd_form() {
        let s = spec(json!({
            "state": "ENABLED", "variants": {"a": 1, "b": 2.5}, "defaultVariant": "a",
            "description": "d", "owner": "team-x", "tags": ["t1"], "lifecycle": "deprecated",
            "expires_at": "2027-01-31T00:00:00Z", "depends_on": ["other"]
        }))
        .unwrap();
        assert_eq!(s.expires_at_unix(), Some(1_801_353_600));
        let flagd = s.to_flagd_value();
        assert!(flagd.get("owner").is_none() && flagd.get("lifecycle").is_none());
        assert_eq!(flagd["defaultVariant"], json!("a"));
    }

    #[test]
    fn utf8_keys_are_accepted() {
        assert!(validate_flag_key("größe-änderung").is_ok());
        assert!(validate_flag_key("新功能").is_ok());
        assert!(validate_flag_key("$flagd").is_err());
        assert!(validate_flag_key("has space").is_err());
        assert!(validate_flag_key(&"k".repeat(limits::FLAG_KEY_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn namespaces_are_lowercase_ascii() {
        assert!(validate_namespace("payments-prod").is_ok());
        assert!(validate_namespace("Payments").is_err());
        assert!(validate_namespace("-x").is_err());
        assert!(validate_namespace("").is_err());
    }

    fn err_of(v: Value) -> ValidationError {
        spec(v).expect_err("must be rejected")
    }

    #[test]
    fn each_bad_input_names_its_field() {
        let e = err_of(json!({"state": "ON", "variants": {"a": true}}));
        assert_eq!(e.field, "state");
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": true, "b": "x"}}));
        assert_eq!(e.field, "variants.b");
        assert!(e.problem.contains("one type"), "{e}");
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": true}, "defaultVariant": "b"}));
        assert_eq!(e.field, "defaultVariant");
        let e = err_of(json!({"state": "ENABLED", "variants": {}}));
        assert_eq!(e.field, "variants");
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": [1]}}));
        assert_eq!(e.field, "variants.a");
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": true}, "defaultvariant": "a"}));
        assert_eq!(e.field, "defaultvariant");
        assert!(e.problem.contains("unknown field"));
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": true}, "targeting": [1]}));
        assert_eq!(e.field, "targeting");
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": true}, "lifecycle": "done"}));
        assert_eq!(e.field, "lifecycle");
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": true}, "expires_at": "tomorrow"}));
        assert_eq!(e.field, "expires_at");
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": true}, "depends_on": ["new-checkout"]}));
        assert_eq!(e.field, "depends_on[0]");
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": true}, "metadata": {"x": {"y": 1}}}));
        assert_eq!(e.field, "metadata.x");
    }

    #[test]
    fn oversized_and_malformed_input_is_rejected() {
        let e = FlagSpec::from_json("k", "{\"state\": ").unwrap_err();
        assert_eq!(e.field, "flag");
        assert!(e.problem.contains("malformed JSON"));
        let big = "x".repeat(limits::VARIANT_VALUE_BYTES_MAX + 1);
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": big}}));
        assert_eq!(e.field, "variants.a");
        let huge = "y".repeat(limits::FLAG_BYTES_MAX);
        let e = FlagSpec::from_json("k", &format!("{{\"description\": \"{huge}\"}}")).unwrap_err();
        assert_eq!(e.field, "flag");
        let mut deep = json!(1);
        for _ in 0..=limits::JSON_LOGIC_DEPTH_MAX {
            deep = json!([deep]);
        }
        let e = err_of(json!({"state": "ENABLED", "variants": {"a": true}, "targeting": {"if": deep}}));
        assert_eq!(e.field, "targeting");
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00+01:00"), Some(951_868_800 - 3600));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00.250Z"), Some(1_709_208_000));
        assert_eq!(parse_rfc3339("2023-02-29T12:00:00Z"), None);
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }
}
