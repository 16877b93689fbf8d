//! What the scenarios write and read: 1,000 keys and a ~300-byte flag definition that changes
//! on every write (so no write is a no-op for either system).

use super::limits::KEYS;

/// The Vexil namespace (and etcd key prefix) every scenario uses.
pub const NAMESPACE: &str = "bench";

/// Flag keys `flag-0000` … `flag-0999`.
pub fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("flag-{i:04}")).collect()
}

/// A valid Vexil/flagd flag definition of about 300 bytes; `n` makes each write distinct.
pub fn flag_json(n: u64) -> String {
    format!(
        concat!(
            r#"{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"off","#,
            r#""targeting":{{"if":[{{"in":[{{"var":"country"}},["DE","FR","NL"]]}},"on","#,
            r#"{{"fractional":[["on",25],["off",75]]}}]}},"#,
            r#""description":"load generator flag, write {:012}","owner":"team-bench","#,
            r#""tags":["bench","load"],"lifecycle":"active"}}"#
        ),
        n
    )
}

/// A small, fast generator (SplitMix64) so that each client picks keys independently.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_about_300_bytes_and_valid() {
        let json = flag_json(42);
        assert!((280..=320).contains(&json.len()), "{} bytes", json.len());
        vexil_model::FlagSpec::from_json("flag-0042", &json).expect("a valid flag");
    }

    #[test]
    fn keys_are_distinct() {
        let k = keys();
        assert_eq!(k.len(), KEYS);
        assert_eq!(k.iter().collect::<std::collections::BTreeSet<_>>().len(), KEYS);
    }
}
