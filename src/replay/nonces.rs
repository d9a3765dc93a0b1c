//! The set of nonces remembered, in generations dropped whole.
//!
//! A nonce must be remembered until its request's timestamp leaves the
//! window (`forget_after`). Entries are grouped by `forget_after` into
//! generations `slot_secs` wide; a generation is dropped, in one step, once
//! its last second has passed. So forgetting costs O(1) per request (no
//! sweep walks the entries), a lookup probes the few live generations
//! (`2 * window / slot_secs + 2` at most: 6 with the default slot of half
//! the window), and an entry is kept at most `slot_secs` longer than needed.
//!
//! Each generation is split into 256 hash sets (`SHARDS`) by the key's high bits.
//! A hash set grows by rehashing every entry it holds at once, under the
//! guard's lock, so a call that makes one grow stalls every call behind it:
//! on the benchmark machine a set of 1.8 million nonce keys took 47 ms to
//! grow, one of 7.3 million 201 ms (a busy node holds millions: a minute at
//! 50,000 calls a second is 3 million). Split in 256, a growth moves a
//! 256th of that; a lookup still probes one set per generation.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// The keys are keyed hashes already, uniformly spread: hashing them again
/// (SipHash, the default) would only cost time on every call.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

/// One set of nonce keys with the set's hasher: a shard of a generation
/// (and, whole, the layout before the split, `benches/nonce_growth.rs`'s
/// baseline).
pub type Keys = HashSet<u128, BuildHasherDefault<PassThrough>>;

/// Hash sets per generation (a power of two).
const SHARDS: usize = 256;

struct Generation {
    /// `forget_after.div_euclid(slot_secs)` of every entry.
    slot: i64,
    /// By [`shard_of`] the key: each set grows on its own.
    shards: Box<[Keys]>,
    len: usize,
}

impl Generation {
    fn new(slot: i64) -> Generation {
        Generation {
            slot,
            // Empty sets allocate nothing until their first key.
            shards: (0..SHARDS).map(|_| Keys::default()).collect(),
            len: 0,
        }
    }

    fn contains(&self, key: u128) -> bool {
        self.shards[shard_of(key)].contains(&key)
    }

    /// Whether `key` is new here.
    fn insert(&mut self, key: u128) -> bool {
        let new = self.shards[shard_of(key)].insert(key);
        self.len += usize::from(new);
        new
    }
}

/// The shard of a key: its high bits, which the sets' hasher (the low 64
/// bits, [`PassThrough`]) does not use, so that keys spread evenly over
/// the shards and within each.
fn shard_of(key: u128) -> usize {
    (key >> 64) as usize % SHARDS
}

/// Remembered nonce keys, bounded by `capacity`.
pub struct NonceSet {
    slot_secs: i64,
    capacity: usize,
    len: usize,
    /// Ascending by slot.
    generations: VecDeque<Generation>,
}

/// The set holds `capacity` live nonces: none can be forgotten yet.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl NonceSet {
    pub fn new(slot_secs: i64, capacity: usize) -> NonceSet {
        NonceSet {
            slot_secs: slot_secs.max(1),
            capacity,
            len: 0,
            generations: VecDeque::new(),
        }
    }

    /// Entries remembered (live, or expired in a generation not yet
    /// dropped).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops every generation whose entries have all expired at `now`.
    pub fn forget_expired(&mut self, now: i64) {
        while let Some(oldest) = self.generations.front() {
            // Every entry's forget_after is at most (slot + 1) * slot_secs - 1.
            if (oldest.slot + 1).saturating_mul(self.slot_secs) > now {
                break;
            }
            self.len -= oldest.len;
            self.generations.pop_front();
        }
    }

    pub fn contains(&self, key: u128) -> bool {
        // Newest first: most requests are signed just now.
        self.generations.iter().rev().any(|g| g.contains(key))
    }

    /// Remembers `key` until `forget_after` (unix seconds).
    pub fn insert(&mut self, key: u128, forget_after: i64) -> Result<(), Full> {
        if self.len >= self.capacity {
            return Err(Full);
        }
        let slot = forget_after.div_euclid(self.slot_secs);
        let at = match self.generations.iter().rposition(|g| g.slot <= slot) {
            Some(i) if self.generations[i].slot == slot => i,
            Some(i) => {
                self.generations.insert(i + 1, Generation::new(slot));
                i + 1
            }
            None => {
                self.generations.push_front(Generation::new(slot));
                0
            }
        };
        if self.generations[at].insert(key) {
            self.len += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_kept_until_its_second_and_dropped_with_its_generation() {
        let mut set = NonceSet::new(10, 100);
        set.insert(1, 105).unwrap();
        set.insert(2, 119).unwrap();
        set.insert(3, 95).unwrap();
        set.forget_expired(105);
        assert!(set.contains(1) && set.contains(2));
        assert!(!set.contains(3), "95 is in generation [90, 99]");
        set.forget_expired(109);
        assert!(set.contains(1));
        set.forget_expired(110);
        assert!(!set.contains(1) && set.contains(2));
        set.forget_expired(120);
        assert!(set.is_empty());
    }

    #[test]
    fn a_full_set_refuses_rather_than_forgets() {
        let mut set = NonceSet::new(10, 2);
        set.insert(1, 100).unwrap();
        set.insert(2, 100).unwrap();
        assert_eq!(set.insert(3, 100), Err(Full));
        set.forget_expired(110);
        set.insert(3, 200).unwrap();
        assert_eq!(set.len(), 1);
    }

    /// A growth rehashes one shard: keys as the guard makes them (keyed
    /// hashes) spread over every shard, none holding more than twice its
    /// share.
    #[test]
    fn keys_spread_over_the_shards_so_that_a_growth_moves_a_share() {
        use std::hash::BuildHasher;
        let hashers = (
            std::collections::hash_map::RandomState::new(),
            std::collections::hash_map::RandomState::new(),
        );
        let keys = 100 * SHARDS;
        let mut set = NonceSet::new(10, keys);
        for i in 0..keys {
            let pair = ("key-id", format!("nonce-{i}"));
            let key = (u128::from(hashers.0.hash_one(&pair)) << 64)
                | u128::from(hashers.1.hash_one(&pair));
            set.insert(key, 100).unwrap();
        }
        assert_eq!(set.len(), keys);
        let generation = &set.generations[0];
        assert_eq!(generation.len, keys);
        let sizes: Vec<usize> = generation.shards.iter().map(|s| s.len()).collect();
        let share = keys / SHARDS;
        assert!(
            sizes.iter().all(|&n| n > 0 && n <= 2 * share),
            "shard sizes {sizes:?}, a share {share}"
        );
    }

    #[test]
    fn generations_stay_in_order_whatever_the_insertion_order() {
        let mut set = NonceSet::new(10, 100);
        for (key, at) in [(1, 150), (2, 110), (3, 130), (4, 105), (5, 170)] {
            set.insert(key, at).unwrap();
        }
        let slots: Vec<i64> = set.generations.iter().map(|g| g.slot).collect();
        assert_eq!(slots, vec![10, 11, 13, 15, 17]);
        set.forget_expired(140);
        assert!(!set.contains(3) && set.contains(1) && set.contains(5));
        assert_eq!(set.len(), 2);
    }
}
