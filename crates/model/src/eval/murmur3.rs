//! MurmurHash3 x86 32-bit, written here (not taken from a crate) and fed incrementally.
//!
//! flagd's `fractional` hashes `flagKey + targetingKey` with this function, seed 0, read as an
//! unsigned 32-bit number. [`Murmur3`] accepts the input in pieces, so the evaluator hashes the
//! flag key and then the targeting key without building the concatenated string: the result is
//! the same as hashing the concatenation in one go, whatever the split.
//!
//! The `murmurhash3` 0.0.5 crate is deliberately not used (its transmute is unsound). The tests
//! compare this implementation with the independent `murmur3` crate and with published vectors.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Incremental MurmurHash3 x86 32-bit state.
#[derive(Debug, Clone)]
pub struct Murmur3 {
    h1: u32,
    /// Bytes of an incomplete 4-byte block, little-endian, `tail_len` of them.
    tail: u32,
    tail_len: u32,
    /// Total length in bytes, modulo 2^32 (the algorithm mixes in the length as a u32).
    len: u32,
}

#[inline(always)]
fn mix_k1(mut k1: u32) -> u32 {
    k1 = k1.wrapping_mul(C1);
    k1 = k1.rotate_left(15);
    k1.wrapping_mul(C2)
}

#[inline(always)]
fn mix_h1(mut h1: u32, k1: u32) -> u32 {
    h1 ^= mix_k1(k1);
    h1 = h1.rotate_left(13);
    h1.wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

impl Murmur3 {
    pub fn new(seed: u32) -> Self {
        Self { h1: seed, tail: 0, tail_len: 0, len: 0 }
    }

    /// Feeds more input.
    #[inline]
    pub fn write(&mut self, mut bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u32);
        // Complete a block left over from the previous piece first.
        while self.tail_len > 0 && self.tail_len < 4 {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.tail |= u32::from(b) << (8 * self.tail_len);
            self.tail_len += 1;
            bytes = rest;
        }
        if self.tail_len == 4 {
            self.h1 = mix_h1(self.h1, self.tail);
            self.tail = 0;
            self.tail_len = 0;
        }
        let mut blocks = bytes.chunks_exact(4);
        for block in &mut blocks {
            let k1 = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
            self.h1 = mix_h1(self.h1, k1);
        }
        for (i, &b) in blocks.remainder().iter().enumerate() {
            self.tail |= u32::from(b) << (8 * i);
        }
        self.tail_len = blocks.remainder().len() as u32;
    }

    /// The hash of everything written so far.
    #[inline]
    pub fn finish(&self) -> u32 {
        let mut h1 = self.h1;
        if self.tail_len > 0 {
            h1 ^= mix_k1(self.tail);
        }
        fmix32(h1 ^ self.len)
    }
}

/// MurmurHash3 x86 32-bit of `bytes` with `seed`.
pub fn murmur3_x86_32(bytes: &[u8], seed: u32) -> u32 {
    let mut h = Murmur3::new(seed);
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(bytes: &[u8], seed: u32) -> u32 {
        murmur3::murmur3_32(&mut std::io::Cursor::new(bytes), seed).expect("reading from memory cannot fail")
    }

    #[test]
    fn published_vectors() {
        // Vectors published with the reference implementation and widely reproduced.
        let cases: &[(&[u8], u32, u32)] = &[
            (b"", 0, 0),
            (b"", 1, 0x514e_28b7),
            (b"", 0xffff_ffff, 0x81f1_6f39),
            (b"\0\0\0\0", 0, 0x2362_f9de),
            (b"aaaa", 0x9747_b28c, 0x5a97_808a),
            (b"abc", 0, 0xb3dd_93fa),
            (b"Hello, world!", 0x9747_b28c, 0x2488_4cba),
            (b"The quick brown fox jumps over the lazy dog", 0x9747_b28c, 0x2fa8_26cd),
            (b"\xff\xff\xff\xff", 0, 0x7629_3b50),
            (b"\x21\x43\x65\x87", 0, 0xf55b_516b),
            (b"\x21\x43\x65", 0, 0x7e4a_8634),
            (b"\x21\x43", 0, 0xa0f7_b07a),
            (b"\x21", 0, 0x7266_1cf4),
        ];
        for &(input, seed, want) in cases {
            assert_eq!(murmur3_x86_32(input, seed), want, "input {input:?} seed {seed:#x}");
            assert_eq!(reference(input, seed), want, "reference crate disagrees on {input:?}");
        }
    }

    #[test]
    fn matches_the_reference_crate_on_every_length_up_to_64() {
        let data: Vec<u8> = (0..64u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in 0..=data.len() {
            for seed in [0, 1, 0x9747_b28c] {
                assert_eq!(murmur3_x86_32(&data[..len], seed), reference(&data[..len], seed), "len {len}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn matches_the_reference_crate(bytes in proptest::collection::vec(any::<u8>(), 0..200), seed in any::<u32>()) {
            prop_assert_eq!(murmur3_x86_32(&bytes, seed), reference(&bytes, seed));
        }

        #[test]
        fn any_split_hashes_like_the_concatenation(a in ".{0,40}", b in ".{0,40}", c in ".{0,9}") {
            let mut h = Murmur3::new(0);
            h.write(a.as_bytes());
            h.write(b.as_bytes());
            h.write(c.as_bytes());
            let whole = format!("{a}{b}{c}");
            prop_assert_eq!(h.finish(), murmur3_x86_32(whole.as_bytes(), 0));
        }
    }
}
