//! Deduplication: the event ids counted in a window, hashed with a
//! per-process secret (see the module docs of [`super`], "Deduplication").

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a 128-bit event key into 64 bits with a per-process random key:
/// each half is xored with its own secret word and the two multiplied into
/// 128 bits, whose halves are folded together (foldhash's folded multiply).
/// Event ids come from client SDKs, so anyone can choose them: an unkeyed
/// fold (the xor and multiply this replaced) let 200,000 crafted ids land
/// in one bucket and made deduplication quadratic. Without the secret no
/// one can predict which ids collide; the cost stays one multiply.
struct IdHasher {
    h: u64,
    key: (u64, u64),
}

/// The process's secret for [`IdHasher`], drawn once from std's random
/// source (the one `HashMap`'s default SipHash keys come from).
fn id_hash_key() -> (u64, u64) {
    static KEY: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| {
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        // Odd, so neither half can be cancelled to zero by a known id.
        (s.hash_one(0x1d5_u64) | 1, s.hash_one(0x2e6_u64) | 1)
    })
}

impl Default for IdHasher {
    fn default() -> Self {
        IdHasher { h: 0, key: id_hash_key() }
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.h
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u128(u128::from_le_bytes(b) ^ u128::from(self.h));
        }
    }

    fn write_u128(&mut self, v: u128) {
        let (k0, k1) = self.key;
        let p = u128::from((v as u64) ^ k0) * u128::from(((v >> 64) as u64) ^ k1 ^ self.h);
        self.h = (p as u64) ^ ((p >> 64) as u64);
    }
}

type IdSet = HashSet<u128, BuildHasherDefault<IdHasher>>;

/// Heap bytes per slot of an [`IdSet`]: the key plus hashbrown's control byte.
const ID_SLOT_BYTES: usize = std::mem::size_of::<u128>() + 1;

/// Event time covered by one id set of a window.
pub(super) const IDS_SPAN_US: i64 = 1_000_000;

/// The event ids of one window, in one set per second of event time. A
/// redelivery carries its original's timestamp, so it meets the same set;
/// and as events arrive roughly in time order, the sets being written hold
/// the last second or two of ids, which stay in cache, where one set for a
/// 60 s window grows to hundreds of thousands of ids and costs a cache miss
/// per event (measured: the scaling bench's 60 s windows).
#[derive(Debug, Default)]
pub(super) struct WindowIds {
    sets: Vec<IdSet>,
}

impl WindowIds {
    /// Adds `id` to the set of second `slot`; false if it was there.
    pub(super) fn insert(&mut self, slot: usize, id: u128) -> bool {
        if slot >= self.sets.len() {
            self.sets.resize_with(slot + 1, IdSet::default);
        }
        self.sets[slot].insert(id)
    }

    /// Empties the sets, keeping their capacity for reuse.
    pub(super) fn clear(&mut self) {
        self.sets.iter_mut().for_each(IdSet::clear);
    }

    pub(super) fn len(&self) -> usize {
        self.sets.iter().map(IdSet::len).sum()
    }

    pub(super) fn bytes(&self) -> usize {
        self.sets.iter().map(|s| s.capacity() * ID_SLOT_BYTES).sum()
    }
}
