//! Stable 64-bit hashing: the consistent-hashing key hash ([`hash_key`]), the fingerprints that
//! identify candidate sets, and the two hashes behind each endpoint's Maglev permutation.
//!
//! Everything here uses fixed constants and little-endian reads, so the same bytes hash to the
//! same value in every run and on every platform (unlike `std`'s randomly keyed `RandomState`):
//! a client's key lands on the same endpoint on every shard and after a restart. The hash is
//! not keyed, so it is no defence against someone choosing keys to collide; consistent hashing
//! does not need one (a client that can choose its key can choose its endpoint anyway).

/// Multiplier of each absorbed word (odd, so the multiplication is a bijection).
const K1: u64 = 0x9e37_79b9_7f4a_7c15;
/// Second multiplier of each absorbed word (odd).
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
/// Initial state of [`hash_key`].
const KEY_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// Murmur3's 64-bit finaliser: a bijection in which every input bit affects every output bit.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A word-at-a-time hasher: every absorbing step is a bijection of the state for a fixed word
/// (xor, odd multiplication, rotation), so two inputs that differ in one word always differ in
/// state; [`Hasher64::finish`] then avalanches with [`mix64`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hasher64 {
    state: u64,
}

impl Hasher64 {
    /// A hasher whose output family is chosen by `seed` (different seeds: unrelated hashes).
    #[inline]
    pub(crate) fn new(seed: u64) -> Hasher64 {
        Hasher64 {
            state: mix64(seed ^ K2),
        }
    }

    /// Absorbs one word.
    #[inline]
    pub(crate) fn write(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .wrapping_mul(K1)
            .rotate_left(31)
            .wrapping_mul(K2);
    }

    /// The hash of everything absorbed so far.
    #[inline]
    pub(crate) fn finish(self) -> u64 {
        mix64(self.state)
    }
}

/// 64-bit hash of a consistent-hashing key: a header value, a cookie, a path or the bytes of a
/// client address. Stable across runs, processes and platforms (the tests pin known values).
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h = Hasher64::new(KEY_SEED);
    h.write(bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h.write(u64::from_le_bytes(w));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Zero padding is unambiguous because the length was absorbed first.
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        h.write(u64::from_le_bytes(w));
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_are_stable() {
        // Pinned outputs: a change here changes which endpoint every existing key maps to.
        let pinned: [(&[u8], u64); 4] = [
            (b"", 0xce85_a186_57d6_e343),
            (b"a", 0x7df0_2e3c_7a54_a761),
            (b"session=0123456789abcdef", 0x3f91_02ce_636b_c9b7),
            (b"10.1.2.3", 0x0370_cb72_91a5_0399),
        ];
        for (bytes, want) in pinned {
            assert_eq!(
                hash_key(bytes),
                want,
                "hash_key({:?}) = {:#018x}",
                String::from_utf8_lossy(bytes),
                hash_key(bytes)
            );
        }
    }

    #[test]
    fn length_and_padding_matter() {
        assert_ne!(hash_key(b"a"), hash_key(b"a\0"));
        assert_ne!(hash_key(b""), hash_key(b"\0"));
        assert_ne!(hash_key(b"abcdefgh"), hash_key(b"abcdefgh\0"));
        assert_ne!(hash_key(b"/a/b"), hash_key(b"/b/a"));
    }

    #[test]
    fn spreads_similar_keys_over_buckets() {
        // Client addresses that differ in their last byte only, bucketed mod 7.
        let mut buckets = [0u32; 7];
        for i in 0..7000u32 {
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            buckets[(hash_key(ip.as_bytes()) % 7) as usize] += 1;
        }
        for b in buckets {
            assert!((850..1150).contains(&b), "{buckets:?}");
        }
    }
}
