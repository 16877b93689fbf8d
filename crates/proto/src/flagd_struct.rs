//! JSON to and from `google.protobuf.Struct`, in which the flagd protocols carry evaluation
//! contexts, object values and metadata.
//!
//! A `Struct` number is a double. Integral doubles that fit in JSON's exact integer range come
//! back as JSON integers, so `{"age": 30}` sent by a provider compares like the `30` a rule
//! holds. Every `Value` built here has its kind set: some providers unwrap it unchecked.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value as PbValue};
use serde_json::{Map, Number, Value};

/// Largest integer a double holds exactly (2^53).
const EXACT_INT_MAX: f64 = 9_007_199_254_740_992.0;

/// A JSON value as a protobuf `Value` (numbers become doubles).
pub fn to_value(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(to_value).collect() }),
        Value::Object(m) => Kind::StructValue(to_struct(m)),
    };
    PbValue { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`.
pub fn to_struct(m: &Map<String, Value>) -> Struct {
    Struct { fields: m.iter().map(|(k, v)| (k.clone(), to_value(v))).collect() }
}

/// A protobuf `Value` as JSON; a `Value` without a kind reads as null, a non-finite number as
/// null (JSON has none).
pub fn from_value(v: &PbValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(f)) => number(*f),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => Value::Object(from_struct(s)),
    }
}

/// A protobuf `Struct` as a JSON object.
pub fn from_struct(s: &Struct) -> Map<String, Value> {
    s.fields.iter().map(|(k, v)| (k.clone(), from_value(v))).collect()
}

fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() <= EXACT_INT_MAX {
        // Exact: |f| <= 2^53 and integral.
        return Value::Number(Number::from(f as i64));
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_with_integral_numbers_kept_integral() {
        let doc = json!({"a": 1, "b": 2.5, "c": "x", "d": [true, null, {"e": -3}], "f": {}});
        let Value::Object(m) = doc.clone() else { unreachable!() };
        assert_eq!(Value::Object(from_struct(&to_struct(&m))), doc);
        // A double the provider sent for an integer attribute.
        let sent = PbValue { kind: Some(Kind::NumberValue(30.0)) };
        assert_eq!(from_value(&sent), json!(30));
        assert_eq!(from_value(&PbValue { kind: Some(Kind::NumberValue(f64::NAN)) }), Value::Null);
        assert_eq!(from_value(&PbValue { kind: None }), Value::Null);
        assert!(to_struct(&m).fields.values().all(|v| v.kind.is_some()), "every kind set");
    }
}
