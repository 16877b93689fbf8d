//! Values during evaluation, and JsonLogic's (JavaScript's) rules for coercing them.
//!
//! [`Val`] borrows whatever it can: strings and JSON subtrees from the context or from the
//! compiled rule are referenced, never copied. Only computed strings (`cat`, `substr`) and
//! computed arrays (`map`, `filter`, `merge`, `missing`) own memory.
//!
//! Coercions follow json-logic-js, the reference implementation that jsonlogic.com documents:
//! truthiness (`[]`, `""`, `0`, `null` and `NaN` are false), loose equality, relational
//! comparison through `ToPrimitive`/`ToNumber`, `String(x)` for concatenation, and JavaScript's
//! number-to-string formatting.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

// `repr(u64)` puts every payload at offset 8: with the default layout a `bool` sits at offset
// 1 and moving a `Val` becomes unaligned copies that stall store forwarding (measured: ~30 % of
// a three-rule evaluation).
#[derive(Debug, Clone)]
#[repr(u64)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    Owned(String),
    /// A borrowed JSON array or object (primitives are always converted to the variants above).
    Json(&'a Value),
    /// A computed array.
    List(Vec<Val<'a>>),
    /// An owned JSON array or object (rare: whole-context reads, values from computed lists).
    OwnedJson(Box<Value>),
}

impl<'a> Val<'a> {
    #[inline]
    pub(crate) fn from_json(v: &'a Value) -> Self {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(number_to_f64(n)),
            Value::String(s) => Val::Str(s),
            Value::Array(_) | Value::Object(_) => Val::Json(v),
        }
    }

    /// A value that does not borrow (for values read out of a computed list).
    pub(crate) fn from_owned_json(v: Value) -> Self {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(b),
            Value::Number(n) => Val::Num(number_to_f64(&n)),
            Value::String(s) => Val::Owned(s),
            other => Val::OwnedJson(Box::new(other)),
        }
    }

    #[inline]
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Owned(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    fn is_composite(&self) -> bool {
        matches!(self, Val::Json(_) | Val::List(_) | Val::OwnedJson(_))
    }

    /// Number of elements when this is an array.
    pub(crate) fn array_len(&self) -> Option<usize> {
        match self {
            Val::Json(Value::Array(a)) => Some(a.len()),
            Val::OwnedJson(v) => v.as_array().map(Vec::len),
            Val::List(l) => Some(l.len()),
            _ => None,
        }
    }

    /// The elements of an array, borrowed where possible; `None` when this is not an array.
    pub(crate) fn array_items<'s>(&'s self) -> Option<Box<dyn Iterator<Item = Val<'a>> + 's>> {
        match self {
            Val::Json(Value::Array(a)) => Some(Box::new(a.iter().map(Val::from_json))),
            Val::List(l) => Some(Box::new(l.iter().cloned())),
            Val::OwnedJson(v) => v
                .as_array()
                .map(|a| Box::new(a.iter().cloned().map(Val::from_owned_json)) as Box<dyn Iterator<Item = Val<'a>>>),
            _ => None,
        }
    }

    /// Converts to owned JSON (the result of a rule that is returned to a caller).
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => f64_to_json(*n),
            Val::Str(s) => Value::String((*s).to_string()),
            Val::Owned(s) => Value::String(s.clone()),
            Val::Json(v) => (*v).clone(),
            Val::List(l) => Value::Array(l.iter().map(Val::to_json).collect()),
            Val::OwnedJson(v) => (**v).clone(),
        }
    }

    /// One path step (`"tier"`, `"0"`) into an object or array.
    pub(crate) fn step(&self, seg: &str) -> Option<Val<'a>> {
        match self {
            Val::Json(v) => json_step(v, seg).map(Val::from_json),
            Val::OwnedJson(v) => json_step(v, seg).cloned().map(Val::from_owned_json),
            Val::List(l) => seg.parse::<usize>().ok().and_then(|i| l.get(i)).cloned(),
            _ => None,
        }
    }
}

pub(crate) fn json_step<'v>(v: &'v Value, seg: &str) -> Option<&'v Value> {
    match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    }
}

#[inline]
pub(crate) fn number_to_f64(n: &Number) -> f64 {
    // `as_f64` is always `Some` without serde_json's arbitrary-precision feature.
    n.as_f64().unwrap_or(f64::NAN)
}

/// A number as JSON: integral values that fit become integers (as JavaScript prints them),
/// `NaN` and infinities become `null` (as `JSON.stringify` does).
pub(crate) fn f64_to_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// JavaScript truthiness, with json-logic-js's exception that an empty array is false.
#[inline]
pub(crate) fn truthy(v: &Val<'_>) -> bool {
    match v {
        Val::Null => false,
        Val::Bool(b) => *b,
        Val::Num(n) => *n != 0.0 && !n.is_nan(),
        Val::Str(s) => !s.is_empty(),
        Val::Owned(s) => !s.is_empty(),
        Val::Json(Value::Array(a)) => !a.is_empty(),
        Val::List(l) => !l.is_empty(),
        Val::OwnedJson(v) => v.as_array().is_none_or(|a| !a.is_empty()),
        Val::Json(_) => true,
    }
}

/// JavaScript's `Number(x)`.
pub(crate) fn to_number(v: &Val<'_>) -> f64 {
    match v {
        Val::Null => 0.0,
        Val::Bool(b) => f64::from(u8::from(*b)),
        Val::Num(n) => *n,
        Val::Str(s) => str_to_number(s),
        Val::Owned(s) => str_to_number(s),
        composite => str_to_number(&to_js_string(composite)),
    }
}

/// JavaScript's `Number(string)`: whitespace-trimmed decimal (or 0x/0o/0b integer), `""` is 0.
pub(crate) fn str_to_number(s: &str) -> f64 {
    let t = s.trim_matches(|c: char| c.is_whitespace());
    if t.is_empty() {
        return 0.0;
    }
    for (prefix, radix) in [("0x", 16), ("0X", 16), ("0o", 8), ("0O", 8), ("0b", 2), ("0B", 2)] {
        if let Some(digits) = t.strip_prefix(prefix) {
            return u64::from_str_radix(digits, radix).map_or(f64::NAN, |n| n as f64);
        }
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    // Rust also accepts "inf", "nan", "infinity"; JavaScript does not.
    if t.bytes().any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// JavaScript's `parseFloat(String(x))`, which json-logic-js uses for `+` and `*`: the longest
/// decimal prefix, `NaN` when there is none.
pub(crate) fn parse_float(v: &Val<'_>) -> f64 {
    match v {
        Val::Num(n) => *n,
        other => parse_float_str(&to_js_string(other)),
    }
}

fn parse_float_str(s: &str) -> f64 {
    let t = s.trim_start_matches(|c: char| c.is_whitespace());
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    if t[i..].starts_with("Infinity") {
        return if b.first() == Some(&b'-') { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    let digits_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut end = i;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        end = i;
    }
    if end == digits_start || (end == digits_start + 1 && b[digits_start] == b'.') {
        return f64::NAN;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_digits = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_digits {
            end = j;
        }
    }
    t[..end].parse::<f64>().unwrap_or(f64::NAN)
}

/// JavaScript's `String(x)`.
pub(crate) fn to_js_string<'s>(v: &'s Val<'_>) -> Cow<'s, str> {
    match v {
        Val::Null => Cow::Borrowed("null"),
        Val::Bool(true) => Cow::Borrowed("true"),
        Val::Bool(false) => Cow::Borrowed("false"),
        Val::Num(n) => Cow::Owned(js_number_string(*n)),
        Val::Str(s) => Cow::Borrowed(s),
        Val::Owned(s) => Cow::Borrowed(s),
        Val::Json(v) => Cow::Owned(json_to_js_string(v)),
        Val::OwnedJson(v) => Cow::Owned(json_to_js_string(v)),
        Val::List(l) => {
            let parts: Vec<String> =
                l.iter().map(|x| if x.is_null() { String::new() } else { to_js_string(x).into_owned() }).collect();
            Cow::Owned(parts.join(","))
        }
    }
}

fn json_to_js_string(v: &Value) -> String {
    match v {
        Value::Array(a) => {
            let parts: Vec<String> =
                a.iter().map(|x| if x.is_null() { String::new() } else { json_to_js_string(x) }).collect();
            parts.join(",")
        }
        Value::Object(_) => "[object Object]".to_string(),
        other => to_js_string(&Val::from_json(other)).into_owned(),
    }
}

/// JavaScript's `Number.prototype.toString()` (shortest round-trip digits; exponent outside
/// 1e-7 ..= 1e21).
pub(crate) fn js_number_string(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if n == 0.0 {
        return "0".into();
    }
    if n.fract() == 0.0 && n.abs() < 1e21 {
        return format!("{n:.0}");
    }
    // `{:e}` gives the shortest round-trip digits: "1.2345e-7".
    let sci = format!("{:e}", n.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let point = exp + 1; // position of the decimal point relative to the digits
    let sign = if n < 0.0 { "-" } else { "" };
    let body = if k <= point && point <= 21 {
        format!("{digits}{}", "0".repeat((point - k) as usize))
    } else if 0 < point && point <= 21 {
        format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
    } else if -6 < point && point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else {
        let e = point - 1;
        let esign = if e < 0 { '-' } else { '+' };
        if k == 1 {
            format!("{digits}e{esign}{}", e.abs())
        } else {
            format!("{}.{}e{esign}{}", &digits[..1], &digits[1..], e.abs())
        }
    };
    format!("{sign}{body}")
}

/// Same composite value (JavaScript compares objects by identity).
fn same_composite(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Json(x), Val::Json(y)) => std::ptr::eq(*x, *y),
        _ => false,
    }
}

/// JavaScript's `==`.
pub(crate) fn loose_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Null, _) | (_, Val::Null) => false,
        _ if a.is_composite() && b.is_composite() => same_composite(a, b),
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x == y,
            // A composite against a primitive: compare its string form.
            _ if a.is_composite() => loose_eq(&Val::Owned(to_js_string(a).into_owned()), b),
            _ if b.is_composite() => loose_eq(a, &Val::Owned(to_js_string(b).into_owned())),
            // Remaining mixes of number, string and boolean compare as numbers.
            _ => to_number(a) == to_number(b),
        },
    }
}

/// JavaScript's `===`.
pub(crate) fn strict_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x == y,
            _ => same_composite(a, b),
        },
    }
}

/// JavaScript's abstract relational comparison: strings compare as strings, everything else as
/// numbers; `None` when either side is `NaN` (every comparison is then false).
pub(crate) fn js_compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    let pa = if a.is_composite() { Val::Owned(to_js_string(a).into_owned()) } else { a.clone() };
    let pb = if b.is_composite() { Val::Owned(to_js_string(b).into_owned()) } else { b.clone() };
    match (pa.as_str(), pb.as_str()) {
        (Some(x), Some(y)) => Some(cmp_utf16(x, y)),
        _ => to_number(&pa).partial_cmp(&to_number(&pb)),
    }
}

/// Orders strings by UTF-16 code units, as JavaScript does.
fn cmp_utf16(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The `$flagd` object the evaluator injects.
pub(crate) fn flagd_object(flag_key: &str, now_unix_secs: i64) -> Value {
    let mut m = Map::new();
    m.insert("flagKey".into(), Value::String(flag_key.to_string()));
    m.insert("timestamp".into(), Value::from(now_unix_secs));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_number_formatting() {
        let cases = [
            (1.0, "1"),
            (-2.0, "-2"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e-7, "1e-7"),
            (1.25e-7, "1.25e-7"),
            (0.000001, "0.000001"),
            (123456789012.5, "123456789012.5"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (-0.0, "0"),
        ];
        for (n, want) in cases {
            assert_eq!(js_number_string(n), want, "{n}");
        }
    }

    #[test]
    fn javascript_string_to_number() {
        assert_eq!(str_to_number(" 42 "), 42.0);
        assert_eq!(str_to_number(""), 0.0);
        assert_eq!(str_to_number("0x1A"), 26.0);
        assert_eq!(str_to_number("1e3"), 1000.0);
        assert!(str_to_number("12abc").is_nan());
        assert!(str_to_number("inf").is_nan());
        assert_eq!(parse_float(&Val::Str("12abc")), 12.0);
        assert_eq!(parse_float(&Val::Str("  -3.5e2x")), -350.0);
        assert!(parse_float(&Val::Null).is_nan());
        assert!(parse_float(&Val::Str(".")).is_nan());
    }

    #[test]
    fn loose_equality_table() {
        assert!(loose_eq(&Val::Num(1.0), &Val::Str("1")));
        assert!(loose_eq(&Val::Bool(true), &Val::Num(1.0)));
        assert!(loose_eq(&Val::Bool(false), &Val::Str("0")));
        assert!(!loose_eq(&Val::Null, &Val::Num(0.0)));
        assert!(loose_eq(&Val::Str(""), &Val::Num(0.0)));
        assert!(!loose_eq(&Val::Num(f64::NAN), &Val::Num(f64::NAN)));
        assert!(!strict_eq(&Val::Num(1.0), &Val::Str("1")));
        assert!(loose_eq(&Val::List(vec![Val::Num(1.0), Val::Num(2.0)]), &Val::Str("1,2")));
    }
}
