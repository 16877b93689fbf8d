//! `fractional`: deterministic percentage bucketing, as a versioned, explicit algorithm.
//!
//! Which bucket a user lands in must agree bit for bit with every other flagd implementation,
//! or a user would see different variants from different services. flagd has changed the
//! algorithm before and is discussing changing it again, so the choice is an enum that each
//! compiled flag carries ([`FractionalAlgorithm`]), never an implicit detail:
//!
//! - [`FractionalAlgorithm::Murmur3Scaled`] (the default): flagd core v0.15+ (flagd PR #1909,
//!   April 2026) and the providers released with it. `h = murmur3_x86_32(bytes, seed 0)` read
//!   as unsigned, `bucket = (h × total_weight) >> 32` in 64-bit arithmetic, then walk the
//!   variants in order accumulating integer weights and take the first whose running total
//!   exceeds `bucket`. Weights are integers, a missing weight is 1, the total is at most
//!   `i32::MAX`.
//! - [`FractionalAlgorithm::LegacyPercent`]: flagd before core v0.15. The same hash read as
//!   signed, `bucket = |h| / i32::MAX × 100` as a float, and each variant covers
//!   `weight × 100 / total` percent.
//!
//! - [`FractionalAlgorithm::CborMurmur3`] ("v3", flagd's accepted ADR "fractional non-string
//!   rand units"), what today's in-process providers compute (Python `openfeature-flagd-core`
//!   2.x, Rust `open-feature-flagd` 0.3): the same bucket arithmetic as `Murmur3Scaled`, over the
//!   deterministic CBOR (`cbor.rs`) of the bucketing value: of `[flagKey, targetingKey]`
//!   without an explicit one, else of whatever non-null, non-array value the expression gives
//!   (a number, boolean or object too, numbers normalised).
//!
//! Under v1 and v2 the bytes hashed are the bucketing expression's string when the rule gives
//! one, otherwise `flagKey` followed by `targetingKey` (hashed incrementally, never
//! concatenated).

use serde_json::Value;

use super::murmur3::Murmur3;

/// How `fractional` maps a bucketing value to a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")] // as `as_str` names them (JSON forms; bincode uses the index)
pub enum FractionalAlgorithm {
    /// flagd core v0.15 and later: `(murmur3(bytes) as u32 × total_weight) >> 32`.
    #[default]
    Murmur3Scaled,
    /// flagd core before v0.15: `|murmur3(bytes) as i32| / i32::MAX × 100` against
    /// per-variant percentages.
    LegacyPercent,
    /// flagd's v3 (in-process providers today): `Murmur3Scaled`'s arithmetic over the
    /// deterministic CBOR of the bucketing value.
    CborMurmur3,
}

/// Most a `fractional` total weight may be (flagd's limit).
pub const TOTAL_WEIGHT_MAX: u64 = i32::MAX as u64;

impl FractionalAlgorithm {
    /// A stable name for logs, exports and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            FractionalAlgorithm::Murmur3Scaled => "murmur3-scaled",
            FractionalAlgorithm::LegacyPercent => "legacy-percent",
            FractionalAlgorithm::CborMurmur3 => "cbor-murmur3",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "murmur3-scaled" => Some(FractionalAlgorithm::Murmur3Scaled),
            "legacy-percent" => Some(FractionalAlgorithm::LegacyPercent),
            "cbor-murmur3" => Some(FractionalAlgorithm::CborMurmur3),
            _ => None,
        }
    }

    /// Hashes the pieces as if concatenated (MurmurHash3 x86-32, seed 0).
    #[inline]
    pub fn hash(self, pieces: &[&[u8]]) -> u32 {
        let mut h = Murmur3::new(0);
        for p in pieces {
            h.write(p);
        }
        h.finish()
    }

    /// The index of the bucket `hash` falls in, given the weights in order; `None` when the
    /// total weight is zero (flagd then answers null, which serves the default variant).
    pub fn bucket(self, hash: u32, weights: impl Iterator<Item = u64> + Clone) -> Option<usize> {
        pick_index(self, hash, weights)
    }
}

/// Checks one weight the way flagd does: integral, negative clamps to 0, at most `i32::MAX`.
pub(crate) fn checked_weight(w: f64) -> Option<u64> {
    if w.is_nan() || w.fract() != 0.0 || w > TOTAL_WEIGHT_MAX as f64 {
        return None;
    }
    Some(if w < 0.0 { 0 } else { w as u64 })
}

pub(crate) fn pick_index(
    algorithm: FractionalAlgorithm,
    hash: u32,
    weights: impl Iterator<Item = u64> + Clone,
) -> Option<usize> {
    let total: u64 = weights.clone().sum();
    if total == 0 || total > TOTAL_WEIGHT_MAX {
        return None;
    }
    match algorithm {
        FractionalAlgorithm::Murmur3Scaled | FractionalAlgorithm::CborMurmur3 => {
            let bucket = (u64::from(hash) * total) >> 32;
            let mut end = 0u64;
            for (i, w) in weights.enumerate() {
                end += w;
                if bucket < end {
                    return Some(i);
                }
            }
            None
        }
        FractionalAlgorithm::LegacyPercent => {
            let ratio = f64::from((hash as i32).unsigned_abs()) / f64::from(i32::MAX);
            let bucket = ratio * 100.0;
            let mut end = 0.0f64;
            for (i, w) in weights.enumerate() {
                end += w as f64 * 100.0 / total as f64;
                if bucket < end {
                    return Some(i);
                }
            }
            None
        }
    }
}

/// A distribution whose variants and weights are all literals, checked once at compile time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Distribution {
    pub(crate) variants: Box<[Value]>,
    pub(crate) weights: Box<[u64]>,
}

impl Distribution {
    #[inline]
    pub(crate) fn pick(&self, algorithm: FractionalAlgorithm, hash: u32) -> Option<&Value> {
        pick_index(algorithm, hash, self.weights.iter().copied()).map(|i| &self.variants[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scaled_bucket_edges() {
        let a = FractionalAlgorithm::Murmur3Scaled;
        // hash 0 is the first bucket, u32::MAX the last; a zero weight is never chosen.
        assert_eq!(pick_index(a, 0, [0u64, 1, 1].into_iter()), Some(1));
        assert_eq!(pick_index(a, u32::MAX, [1u64, 1, 0].into_iter()), Some(1));
        assert_eq!(pick_index(a, 0x8000_0000, [1u64, 1].into_iter()), Some(1));
        assert_eq!(pick_index(a, 0x7fff_ffff, [1u64, 1].into_iter()), Some(0));
        assert_eq!(pick_index(a, 5, [0u64, 0].into_iter()), None);
        assert_eq!(pick_index(a, 5, [TOTAL_WEIGHT_MAX, 1].into_iter()), None);
    }

    #[test]
    fn weights_are_checked_like_flagd() {
        assert_eq!(checked_weight(25.0), Some(25));
        assert_eq!(checked_weight(-3.0), Some(0));
        assert_eq!(checked_weight(0.5), None);
        assert_eq!(checked_weight(f64::NAN), None);
        assert_eq!(checked_weight(3e9), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn every_hash_lands_in_a_positive_weight_bucket(hash in any::<u32>(), weights in proptest::collection::vec(0u64..1000, 1..8)) {
            for a in [FractionalAlgorithm::Murmur3Scaled, FractionalAlgorithm::LegacyPercent, FractionalAlgorithm::CborMurmur3] {
                match pick_index(a, hash, weights.iter().copied()) {
                    Some(i) => prop_assert!(weights[i] > 0),
                    None => prop_assert!(weights.iter().sum::<u64>() == 0 || a == FractionalAlgorithm::LegacyPercent),
                }
            }
        }
    }
}
