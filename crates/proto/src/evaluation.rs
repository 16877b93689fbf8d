//! The evaluation result on the wire: the one conversion of the model's [`Resolution`] to
//! `vexil.v1.FlagEvaluation`, with the caller's requested `ValueType` applied by the model's
//! rule ([`Resolution::with_type`]), and the one JSON rendering of it
//! ([`v1::FlagEvaluation::to_json`]). The server's `Evaluation` service sends it, for one flag
//! and for all of them; `vexilctl` prints the same JSON whether it evaluated on the cluster or
//! offline.

use serde_json::{Value, json};
use vexil_model::eval::{Resolution, TypedValue, ValueType};

use crate::v1;
use crate::v1::flag_evaluation::Value as PbValue;

impl v1::ValueType {
    /// The type the caller asked for; `None` for `VALUE_TYPE_UNSPECIFIED` (whatever type the
    /// flag has).
    pub fn requested(self) -> Option<ValueType> {
        match self {
            v1::ValueType::Unspecified => None,
            v1::ValueType::Bool => Some(ValueType::Bool),
            v1::ValueType::String => Some(ValueType::String),
            v1::ValueType::Int => Some(ValueType::Int),
            v1::ValueType::Float => Some(ValueType::Float),
            v1::ValueType::Object => Some(ValueType::Object),
        }
    }
}

impl From<ValueType> for v1::ValueType {
    fn from(t: ValueType) -> Self {
        match t {
            ValueType::Bool => v1::ValueType::Bool,
            ValueType::String => v1::ValueType::String,
            ValueType::Int => v1::ValueType::Int,
            ValueType::Float => v1::ValueType::Float,
            ValueType::Object => v1::ValueType::Object,
        }
    }
}

impl From<TypedValue<'_>> for PbValue {
    fn from(v: TypedValue<'_>) -> Self {
        match v {
            TypedValue::Bool(b) => PbValue::BoolValue(b),
            TypedValue::String(s) => PbValue::StringValue(s.into()),
            TypedValue::Int(i) => PbValue::IntValue(i),
            TypedValue::Float(f) => PbValue::FloatValue(f),
            TypedValue::Object(v) => PbValue::ObjectJson(v.to_string()),
        }
    }
}

impl v1::FlagEvaluation {
    /// Flag `key`'s resolution as `ty` (`None`: as the type it has). Absent parts are empty
    /// strings, as proto3 has it.
    pub fn from_resolution(key: &str, r: Resolution<'_>, ty: Option<ValueType>) -> Self {
        let r = r.with_type(key, ty);
        v1::FlagEvaluation {
            key: key.into(),
            value: r.typed_value(ty).map(PbValue::from),
            variant: r.variant.unwrap_or_default().into(),
            reason: r.reason.as_str().into(),
            error_code: r.error_code.map(|c| c.as_str().to_string()).unwrap_or_default(),
            error_message: r.error_message.unwrap_or_default(),
            metadata_json: serde_json::Value::Object(r.metadata.clone()).to_string(),
        }
    }

    /// `{"key","value","variant","reason","errorCode","errorMessage","metadata"}`, flagd's names,
    /// with `null` for what is absent. JSON text that does not parse (never sent by a node) is
    /// kept as a string rather than dropped.
    pub fn to_json(&self) -> Value {
        let parse = |s: &str| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()));
        let text = |s: &str| if s.is_empty() { Value::Null } else { Value::String(s.to_string()) };
        let value = match &self.value {
            None => Value::Null,
            Some(PbValue::BoolValue(b)) => json!(b),
            Some(PbValue::StringValue(s)) => json!(s),
            Some(PbValue::IntValue(i)) => json!(i),
            Some(PbValue::FloatValue(f)) => json!(f),
            Some(PbValue::ObjectJson(o)) => parse(o),
        };
        let metadata = if self.metadata_json.is_empty() { json!({}) } else { parse(&self.metadata_json) };
        json!({
            "key": self.key, "value": value, "variant": text(&self.variant), "reason": self.reason,
            "errorCode": text(&self.error_code), "errorMessage": text(&self.error_message), "metadata": metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_model::NamespaceDocument;
    use vexil_model::eval::{CompiledNamespace, EvalContext};

    fn namespace() -> CompiledNamespace {
        let doc = NamespaceDocument::from_json(
            r##"{"flags": {
                "color": {"state": "ENABLED", "variants": {"red": "#f00"}, "defaultVariant": "red"},
                "limit": {"state": "ENABLED", "variants": {"low": 5}, "defaultVariant": "low"},
                "cfg": {"state": "ENABLED", "variants": {"a": {"x": 1}}, "defaultVariant": "a"},
                "off": {"state": "DISABLED", "variants": {"a": true}, "defaultVariant": "a"}},
                "metadata": {"team": "t"}}"##,
        )
        .expect("valid document");
        CompiledNamespace::new(&doc)
    }

    fn eval(ns: &CompiledNamespace, key: &str, ty: v1::ValueType) -> v1::FlagEvaluation {
        v1::FlagEvaluation::from_resolution(key, ns.evaluate(key, &EvalContext::new(), 0), ty.requested())
    }

    #[test]
    fn values_take_the_requested_type_or_their_own() {
        let ns = namespace();
        let e = eval(&ns, "limit", v1::ValueType::Unspecified);
        assert_eq!(e.value, Some(PbValue::IntValue(5)));
        assert_eq!((e.variant.as_str(), e.reason.as_str(), e.error_code.as_str()), ("low", "STATIC", ""));
        assert_eq!(e.metadata_json, r#"{"team":"t"}"#);
        assert_eq!(eval(&ns, "limit", v1::ValueType::Float).value, Some(PbValue::FloatValue(5.0)));
        assert_eq!(eval(&ns, "cfg", v1::ValueType::Object).value, Some(PbValue::ObjectJson(r#"{"x":1}"#.into())));
        assert_eq!(eval(&ns, "cfg", v1::ValueType::Unspecified).value, Some(PbValue::ObjectJson(r#"{"x":1}"#.into())));
        let off = eval(&ns, "off", v1::ValueType::Bool);
        assert_eq!((off.value, off.variant.as_str(), off.reason.as_str()), (None, "", "DISABLED"));
    }

    #[test]
    fn a_wrong_type_is_the_models_type_mismatch() {
        let ns = namespace();
        let e = eval(&ns, "color", v1::ValueType::Bool);
        assert_eq!(e.value, None);
        assert_eq!((e.reason.as_str(), e.error_code.as_str(), e.variant.as_str()), ("ERROR", "TYPE_MISMATCH", "red"));
        let model = ns.evaluate("color", &EvalContext::new(), 0).with_type("color", Some(ValueType::Bool));
        assert_eq!(Some(e.error_message), model.error_message);
        let missing = eval(&ns, "nope", v1::ValueType::Bool);
        assert_eq!(
            (missing.error_code.as_str(), missing.metadata_json.as_str()),
            ("FLAG_NOT_FOUND", r#"{"team":"t"}"#)
        );
    }
}
