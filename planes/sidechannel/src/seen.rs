//! The dedupe cache: ids of messages accepted within the freshness window, kept until that
//! window has passed for them, never evicted early.
//!
//! An id is filed under its message's timestamp (`ts`), not under its arrival time, in
//! buckets of `window / 8`; a bucket is dropped whole once every `ts` it can hold is older
//! than the window, because from then on the freshness check rejects any copy of those
//! messages before the dedupe is consulted. So an id is remembered exactly as long as a
//! copy could still be accepted, whatever else arrives meanwhile: no burst can push it out.
//!
//! ```text
//!   ts:  |--b0--|--b1--|--b2--| ... |--bk--|        buckets of window/8 ms, by ts
//!        ^ dropped once now >= end(b0) + window
//! ```
//!
//! Memory is bounded by a hard cap on the number of ids (`max`): when it is reached a new
//! id is refused ([`SeenCache::insert`] returns `false`, the plane drops the message as
//! `dedupe_full`) rather than forgetting an id still inside the window. Ids are stored as
//! 16-byte digests (the first half of SHA-256 of the key; a collision needs ~2^64 tries and
//! costs one message dropped as a duplicate): ~19-39 bytes per id in the hash sets
//! depending on their fill, see [`SeenCache::heap_bytes`].
//!
//! Lookups probe every live bucket (at most ~11 with a 30 s clock-skew allowance).

use std::collections::{HashSet, VecDeque};

use sha2::{Digest, Sha256};

/// Buckets per window: a finer split frees memory sooner, a coarser one probes fewer sets.
const BUCKETS_PER_WINDOW: u64 = 8;

/// A remembered id: the first 16 bytes of `SHA-256(key)`.
type IdDigest = [u8; 16];

fn digest(key: &str) -> IdDigest {
    let full = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[derive(Debug, Clone)]
struct Bucket {
    /// `ts / bucket_ms` of every id in it.
    index: u64,
    ids: HashSet<IdDigest>,
}

/// Ids filed by message timestamp, expiring a window after it, capped in count.
#[derive(Debug, Clone)]
pub struct SeenCache {
    max: usize,
    window_ms: u64,
    bucket_ms: u64,
    /// Sorted by `index`, ascending.
    buckets: VecDeque<Bucket>,
    len: usize,
    refused: u64,
}

impl SeenCache {
    /// A cache holding at most `max` ids, each until `window_ms` after its message's `ts`.
    pub fn new(max: usize, window_ms: u64) -> Self {
        let window_ms = window_ms.max(1);
        SeenCache {
            max: max.max(1),
            window_ms,
            bucket_ms: (window_ms / BUCKETS_PER_WINDOW).max(1),
            buckets: VecDeque::new(),
            len: 0,
            refused: 0,
        }
    }

    /// Whether the bucket may still hold an id a copy of which could be accepted at
    /// `now_ms`: its last possible `ts` is at most `window_ms` old.
    fn live(&self, b: &Bucket, now_ms: u64) -> bool {
        let end = b.index.saturating_add(1).saturating_mul(self.bucket_ms);
        end.saturating_add(self.window_ms) > now_ms
    }

    /// Whether `key` is remembered (and not expired at `now_ms`).
    pub fn contains(&self, key: &str, now_ms: u64) -> bool {
        let d = digest(key);
        self.buckets
            .iter()
            .any(|b| self.live(b, now_ms) && b.ids.contains(&d))
    }

    /// Whether one more id fits at `now_ms` (expired buckets do not count).
    pub fn has_room(&self, now_ms: u64) -> bool {
        let live: usize = self
            .buckets
            .iter()
            .filter(|b| self.live(b, now_ms))
            .map(|b| b.ids.len())
            .sum();
        live < self.max
    }

    /// Remembers `key` for the message stamped `ts_ms` (already known: nothing changes).
    /// `false` when the cap is reached: the id is not remembered, and the caller must not
    /// deliver the message. `ts_ms` is clamped to `now_ms` from below the window, so an id
    /// is always kept at least until the window after `now_ms - window_ms`.
    pub fn insert(&mut self, key: &str, ts_ms: u64, now_ms: u64) -> bool {
        self.purge(now_ms);
        let d = digest(key);
        if self.buckets.iter().any(|b| b.ids.contains(&d)) {
            return true;
        }
        if self.len >= self.max {
            self.refused += 1;
            return false;
        }
        let ts = ts_ms.max(now_ms.saturating_sub(self.window_ms));
        let index = ts / self.bucket_ms;
        let pos = self.buckets.partition_point(|b| b.index < index);
        match self.buckets.get_mut(pos) {
            Some(b) if b.index == index => {
                b.ids.insert(d);
            }
            _ => self.buckets.insert(
                pos,
                Bucket {
                    index,
                    ids: HashSet::from([d]),
                },
            ),
        }
        self.len += 1;
        true
    }

    /// Drops the buckets whose every id is older than the window at `now_ms`.
    pub fn purge(&mut self, now_ms: u64) {
        while let Some(b) = self.buckets.front() {
            if self.live(b, now_ms) {
                break;
            }
            self.len -= b.ids.len();
            self.buckets.pop_front();
        }
    }

    /// Number of ids held (expired buckets not yet purged included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts an id refused by the policy, which saw no room before inserting.
    pub fn note_refused(&mut self) {
        self.refused += 1;
    }

    /// Ids refused because the cache was full (each one a message dropped as `dedupe_full`
    /// or, for our own sends, not remembered).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Heap bytes of the id sets, from hashbrown's layout: a power-of-two number of slots
    /// (capacity 7/8 of them, or one less than them below 8), each a 16-byte digest and a
    /// control byte, plus 16 trailing control bytes. Between 19 and 39 bytes per id.
    pub fn heap_bytes(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| {
                let cap = b.ids.capacity();
                let slots = match cap {
                    0 => return 0,
                    1..8 => (cap + 1).next_power_of_two(),
                    _ => (cap * 8 / 7).next_power_of_two(),
                };
                slots * (std::mem::size_of::<IdDigest>() + 1) + 16
            })
            .sum::<usize>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }
}

/// Fuzz entry point: a sequence of lookups and inserts under a clock that moves forward,
/// checked against a plain map of what was inserted. An id inserted with timestamp `t` must
/// be found until `t + window` and gone one bucket later; the cache never holds more than
/// its cap and refuses an insert only when full.
///
/// The first two bytes pick the window (8-2,048 ms) and the cap (1-64); then each 4-byte
/// record is a clock step, a key (32 possible) and a timestamp from a window back to half
/// a window ahead.
pub fn fuzz_ops(data: &[u8]) {
    use std::collections::HashMap;
    let Some(([w, m], mut rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let window = 8 + u64::from(*w) * 8;
    let max = 1 + usize::from(*m % 64);
    let mut cache = SeenCache::new(max, window);
    let bucket = cache.bucket_ms;
    let mut model: HashMap<u8, u64> = HashMap::new();
    let mut now = 1_000_000u64;
    while let Some(([step, key, t0, t1], tail)) = rest.split_first_chunk::<4>() {
        rest = tail;
        now += u64::from(*step) * window / 64;
        let key = key % 32;
        let name = format!("id-{key}");
        let offset = u64::from(u16::from_le_bytes([*t0, *t1])) % (window + window / 2 + 1);
        let ts = now - window + offset;
        // The model forgets what is surely gone.
        model.retain(|_, t| now < *t + window + bucket);
        for (k, t) in &model {
            if now <= *t + window {
                assert!(
                    cache.contains(&format!("id-{k}"), now),
                    "id-{k} lost inside the window"
                );
            }
        }
        let known = cache.contains(&name, now);
        if !known {
            assert!(model.get(&key).is_none_or(|t| now > *t + window));
        }
        let room = cache.has_room(now);
        let inserted = cache.insert(&name, ts, now);
        assert!(cache.len() <= max);
        if known {
            assert!(inserted, "a known id is accepted");
        } else {
            assert_eq!(inserted, room, "refused only when full");
            if inserted {
                model.insert(key, ts.max(now - window));
            }
        }
        if inserted {
            assert!(cache.contains(&name, now));
        }
    }
    // Long after the last timestamp everything is gone.
    let later = now + 3 * window + bucket;
    assert!(model
        .keys()
        .all(|k| !cache.contains(&format!("id-{k}"), later)));
    cache.purge(later);
    assert!(cache.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 120_000;

    #[test]
    fn an_id_lives_until_its_ts_leaves_the_window() {
        let mut c = SeenCache::new(10, W);
        let now = 1_000_000;
        assert!(c.insert("a", now, now));
        assert!(c.contains("a", now + W));
        // Bucket granularity keeps it at most one bucket longer, never shorter.
        assert!(!c.contains("a", now + W + W / BUCKETS_PER_WINDOW));
        // Filed by ts, not arrival: an id stamped 100 s ago expires 20 s from now.
        assert!(c.insert("old", now - 100_000, now));
        assert!(c.contains("old", now + 19_999));
        assert!(!c.contains("old", now + 20_000 + W / BUCKETS_PER_WINDOW));
        // A future ts (clock skew) keeps it longer.
        assert!(c.insert("future", now + 30_000, now));
        assert!(c.contains("future", now + 30_000 + W));
        c.purge(now + 10 * W);
        assert!(c.is_empty());
    }

    #[test]
    fn a_full_cache_refuses_instead_of_evicting() {
        let mut c = SeenCache::new(3, W);
        let now = 5_000_000;
        for k in ["a", "b", "c"] {
            assert!(c.insert(k, now, now));
        }
        assert!(c.insert("a", now, now), "a known id is not a new one");
        assert!(!c.has_room(now));
        assert!(!c.insert("d", now, now));
        assert_eq!(c.refused(), 1);
        assert!(["a", "b", "c"].iter().all(|k| c.contains(k, now + W)));
        assert!(!c.contains("d", now));
        // Room again once the window has passed for the old ids.
        let later = now + W + W / BUCKETS_PER_WINDOW;
        assert!(c.has_room(later));
        assert!(c.insert("d", later, later));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn fuzz_ops_on_pseudo_random_input() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in [0, 2, 6, 64, 400, 4_000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            fuzz_ops(&data);
        }
    }

    #[test]
    fn buckets_stay_sorted_and_memory_is_counted() {
        let mut c = SeenCache::new(100_000, W);
        let now = 10_000_000;
        for i in 0..20_000u64 {
            // Timestamps spread over the window, out of order.
            let ts = now - (i * 7_919) % W;
            assert!(c.insert(&format!("id{i}"), ts, now));
        }
        assert!(c
            .buckets
            .iter()
            .zip(c.buckets.iter().skip(1))
            .all(|(a, b)| a.index < b.index));
        assert_eq!(c.len(), 20_000);
        let per_id = c.heap_bytes() as f64 / 20_000.0;
        assert!((17.0..=40.0).contains(&per_id), "{per_id} bytes per id");
    }
}
