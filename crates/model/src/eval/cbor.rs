//! The deterministic CBOR encoding (RFC 8949 §4.2.1, "core deterministic encoding") of a JSON
//! value, which `fractional` v3 hashes ([`super::FractionalAlgorithm::CborMurmur3`]).
//!
//! Numbers are normalised first, as flagd's ADR "fractional non-string rand units" says: a
//! float with no fractional part in [-2^63, 2^64 - 1] is an integer (and -0.0 is 0). Integers
//! and lengths take the shortest head; floats the shortest IEEE width that holds them exactly
//! (half, single, double); maps sort their keys by their encoded bytes. Non-finite numbers do not
//! occur in JSON.

use serde_json::Value;

const UINT: u8 = 0;
const NINT: u8 = 1;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

/// Appends the deterministic CBOR of `v` to `out`.
pub(crate) fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => head(UINT, u, out),
            (None, Some(i)) => head(NINT, (-1 - i) as u64, out),
            (None, None) => float(n.as_f64().unwrap_or(0.0), out),
        },
        Value::String(s) => text(s, out),
        Value::Array(items) => {
            head(ARRAY, items.len() as u64, out);
            for item in items {
                encode(item, out);
            }
        }
        Value::Object(map) => {
            let mut entries: Vec<(Vec<u8>, &Value)> = map
                .iter()
                .map(|(k, v)| {
                    let mut key = Vec::with_capacity(k.len() + 1);
                    text(k, &mut key);
                    (key, v)
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            head(MAP, entries.len() as u64, out);
            for (key, value) in entries {
                out.extend_from_slice(&key);
                encode(value, out);
            }
        }
    }
}

/// A text string.
pub(crate) fn text(s: &str, out: &mut Vec<u8>) {
    head(TEXT, s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// A two-element array head (`fractional`'s `[flagKey, targetingKey]`).
pub(crate) const PAIR: u8 = 0x82;

fn head(major: u8, n: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn float(f: f64, out: &mut Vec<u8>) {
    // Normalise: an integral float in range is an integer.
    if f.fract() == 0.0 {
        if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
            return head(UINT, f as u64, out);
        }
        if f < 0.0 && f >= i64::MIN as f64 {
            return head(NINT, (-1 - f as i64) as u64, out);
        }
    }
    if let Some(h) = to_half(f) {
        out.push(0xf9);
        out.extend_from_slice(&h.to_be_bytes());
    } else if f64::from(f as f32) == f {
        out.push(0xfa);
        out.extend_from_slice(&(f as f32).to_bits().to_be_bytes());
    } else {
        out.push(0xfb);
        out.extend_from_slice(&f.to_bits().to_be_bytes());
    }
}

/// `f` as an IEEE half-precision float, when that holds it exactly.
fn to_half(f: f64) -> Option<u16> {
    let sign: u16 = if f.is_sign_negative() { 0x8000 } else { 0 };
    let a = f.abs();
    if a == 0.0 {
        return Some(sign);
    }
    // Subnormal halves: m × 2^-24, m in 1..=1023.
    let sub = a * 16_777_216.0;
    if sub.fract() == 0.0 && sub <= 1023.0 {
        return Some(sign | sub as u16);
    }
    // Normal halves: (1 + m/1024) × 2^e, e in -14..=15.
    let e = a.log2().floor() as i32;
    if !(-14..=15).contains(&e) {
        return None;
    }
    let mantissa = (a / 2f64.powi(e) - 1.0) * 1024.0;
    if mantissa.fract() != 0.0 || !(0.0..1024.0).contains(&mantissa) {
        return None;
    }
    Some(sign | (((e + 15) as u16) << 10) | mantissa as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(v: Value) -> String {
        let mut out = Vec::new();
        encode(&v, &mut out);
        out.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Examples from RFC 8949 Appendix A, in their deterministic forms.
    #[test]
    fn rfc_8949_examples() {
        assert_eq!(hex(json!(0)), "00");
        assert_eq!(hex(json!(23)), "17");
        assert_eq!(hex(json!(24)), "1818");
        assert_eq!(hex(json!(1000)), "1903e8");
        assert_eq!(hex(json!(1_000_000)), "1a000f4240");
        assert_eq!(hex(json!(1_000_000_000_000u64)), "1b000000e8d4a51000");
        assert_eq!(hex(json!(-1)), "20");
        assert_eq!(hex(json!(-1000)), "3903e7");
        assert_eq!(hex(json!(1.5)), "f93e00");
        assert_eq!(hex(json!(65504.5)), "fa477fe080");
        assert_eq!(hex(json!(100000.5)), "fa47c35040");
        assert_eq!(hex(json!(1.1)), "fb3ff199999999999a");
        assert_eq!(hex(json!(5.960464477539063e-8)), "f90001");
        assert_eq!(hex(json!(-4.1)), "fbc010666666666666");
        assert_eq!(hex(json!("IETF")), "6449455446");
        assert_eq!(hex(json!([1, [2, 3]])), "8201820203");
        assert_eq!(hex(json!({"a": 1, "b": [2, 3]})), "a26161016162820203");
        assert_eq!(hex(json!(false)), "f4");
        assert_eq!(hex(json!(null)), "f6");
    }

    #[test]
    fn integral_floats_are_integers_and_keys_sort_by_their_encoding() {
        assert_eq!(hex(json!(2.0)), hex(json!(2)));
        assert_eq!(hex(json!(-0.0)), "00");
        assert_eq!(hex(json!(-3.0)), "22");
        // "b" (one byte) sorts before "aa" (two): shorter encodings first.
        assert_eq!(hex(json!({"aa": 1, "b": 2})), "a261620262616101");
    }
}
