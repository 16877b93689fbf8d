//! How values and keys are laid out in storage.
//!
//! Every stored value is a one-byte format tag followed by bincode (standard config) of the
//! value, so a later release can change a layout and still read the old one. Keys are built so
//! that RocksDB's byte order is the order we scan in: big-endian integers, and
//! `namespace ‖ 0x00 ‖ key` for flags (neither may contain NUL, see `vexil_model::flag`).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format tag of every value this release writes.
pub const FORMAT_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("value is empty")]
    Empty,
    #[error("value has format tag {0}; this release reads only tag {FORMAT_V1}")]
    UnknownFormat(u8),
    #[error("cannot decode value: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("cannot encode value: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("{0} trailing bytes after value")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_V1];
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&tag, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if tag != FORMAT_V1 {
        return Err(CodecError::UnknownFormat(tag));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config())?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

/// Key of a flag: `namespace ‖ 0x00 ‖ key`.
pub fn flag_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 1 + key.len());
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Prefix of every flag key in a namespace.
pub fn namespace_prefix(namespace: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 1);
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k
}

/// Splits a flag key back into (namespace, key).
pub fn split_flag_key(k: &[u8]) -> Option<(&str, &str)> {
    let nul = k.iter().position(|&b| b == 0)?;
    let ns = std::str::from_utf8(&k[..nul]).ok()?;
    let key = std::str::from_utf8(&k[nul + 1..]).ok()?;
    Some((ns, key))
}

/// Key of an audit entry: `revision ‖ seq`, both big-endian, so key order is chain order and a
/// revision range is a key range.
pub fn audit_key(revision: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&revision.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Splits an audit key back into (revision, seq).
pub fn parse_audit_key(k: &[u8]) -> Option<(u64, u64)> {
    let k: &[u8; 16] = k.try_into().ok()?;
    let (revision, seq) = k.split_at(8);
    Some((u64::from_be_bytes(revision.try_into().ok()?), u64::from_be_bytes(seq.try_into().ok()?)))
}

pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn parse_u64_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(..8)?.try_into().ok()?))
}

/// Key of a deduplication record: `generation ‖ request_id`, so a generation is a key range.
pub fn request_key(generation: u64, request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + request_id.len());
    k.extend_from_slice(&generation.to_be_bytes());
    k.extend_from_slice(request_id.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_tags_are_checked() {
        let v = (7u64, "x".to_string(), Some(3i64));
        let bytes = encode(&v).expect("encode");
        assert_eq!(bytes[0], FORMAT_V1);
        let back: (u64, String, Option<i64>) = decode(&bytes).expect("decode");
        assert_eq!(back, v);
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(decode::<(u64, String, Option<i64>)>(&wrong), Err(CodecError::UnknownFormat(9))));
        let mut long = bytes;
        long.push(0);
        assert!(matches!(decode::<(u64, String, Option<i64>)>(&long), Err(CodecError::Trailing(1))));
    }

    #[test]
    fn flag_keys_sort_by_namespace_then_key() {
        let a = flag_key("a", "zzz");
        let b = flag_key("ab", "a");
        assert!(a < b, "namespace `a` sorts wholly before namespace `ab`");
        assert!(a.starts_with(&namespace_prefix("a")));
        assert!(!b.starts_with(&namespace_prefix("a")));
        assert_eq!(split_flag_key(&a), Some(("a", "zzz")));
    }

    #[test]
    fn audit_keys_sort_by_revision_then_seq() {
        assert!(audit_key(1, 9) < audit_key(2, 1));
        assert!(audit_key(2, 1) < audit_key(2, 2));
        assert_eq!(parse_audit_key(&audit_key(7, u64::MAX)), Some((7, u64::MAX)));
        assert_eq!(parse_audit_key(b"short"), None);
    }
}
