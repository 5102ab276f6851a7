//! A tiny Fx-style hasher: the engine hashes kernel addresses, chain ids and
//! tids millions of times a second, where SipHash's DoS resistance buys nothing
//! (the input comes from the kernel, not from an attacker choosing keys).
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Kernel addresses are aligned (low bits zero) and the multiply keeps
        // them zero; the table indexes by low bits, so bring the well-mixed
        // high bits down.
        self.hash.rotate_left(26)
    }
}

pub(crate) type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn h<T: Hash>(v: T) -> u64 {
        let mut s = FxHasher::default();
        v.hash(&mut s);
        s.finish()
    }

    #[test]
    fn aligned_keys_spread_over_low_bits() {
        // 1024 socket-like addresses 256 bytes apart must not share low bits.
        let mut buckets = std::collections::HashSet::new();
        for i in 0..1024u64 {
            buckets.insert(h(0xffff_8880_1234_0000u64 + i * 256) & 1023);
        }
        assert!(
            buckets.len() > 500,
            "only {} distinct buckets",
            buckets.len()
        );
    }

    #[test]
    fn byte_writes_hash_all_bytes() {
        assert_ne!(h([1u8, 2, 3]), h([1u8, 2, 4]));
        assert_ne!(h(1u32), h(2u32));
    }
}
