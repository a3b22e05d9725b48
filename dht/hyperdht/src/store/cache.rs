//! Ports of the two generational caches a HyperDHT node keeps its records in, with the
//! `setInterval` garbage collection turned into an explicit clock.
//!
//! * [`Xache`] is `xache` 1.x: three maps, `latest`, `oldest` and `retained`. A `set`
//!   goes to `latest`; when `latest` reaches `maxSize` entries, or when the GC tick
//!   fires, `oldest` is dropped and `latest` becomes `oldest`. Reading an `oldest` entry
//!   moves it back to `latest`. `retained` entries never expire and shadow `set`.
//! * [`RecordCache`] is `record-cache` 1.x: per-name sets of records keyed by public
//!   key, in a `fresh` and a `stale` generation. Adding moves a record out of `stale`
//!   into `fresh` (a record already in `fresh` keeps its old value); when `fresh`
//!   holds more than `maxSize` records, or when the GC tick fires, `stale` is dropped
//!   and `fresh` becomes `stale`. Reading does not refresh.
//!
//! Both start a timer of `ceil(2/3 · maxAge)` ms when `maxAge > 0`; each tick collects
//! unless a size-triggered collection already happened since the previous tick. An
//! entry therefore lives between 2/3 and 4/3 of `maxAge` after its last write.

use std::collections::HashMap;
use std::hash::Hash;

/// `{ maxSize, maxAge }` of one cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Entry count that triggers a collection (`usize::MAX` for none).
    pub max_size: usize,
    /// Age (ms) the GC tick is derived from; 0 disables timed collection.
    pub max_age_ms: u64,
}

impl CacheLimits {
    /// Limits with both values set.
    pub const fn new(max_size: usize, max_age_ms: u64) -> Self {
        CacheLimits {
            max_size,
            max_age_ms,
        }
    }

    /// The GC tick interval: `Math.ceil(2 / 3 * maxAge)`, or `None` without a max age.
    pub fn gc_interval_ms(&self) -> Option<u64> {
        (self.max_age_ms > 0).then(|| ((2.0 / 3.0) * self.max_age_ms as f64).ceil() as u64)
    }
}

/// The `setInterval` of a cache, driven by explicit time.
///
/// The interval starts at the first time the clock is advanced (the moment the JS cache
/// would have been constructed).
#[derive(Debug, Clone)]
struct GcClock {
    interval: Option<u64>,
    next: Option<u64>,
    /// Set by every collection, cleared by every tick (`_gced`).
    gced: bool,
}

impl GcClock {
    fn new(limits: &CacheLimits) -> Self {
        GcClock {
            interval: limits.gc_interval_ms(),
            next: None,
            gced: false,
        }
    }

    /// Number of ticks due at `now_ms`, capped at 3: after that many ticks without
    /// writes both caches are empty, so further ticks change nothing.
    fn due(&mut self, now_ms: u64) -> u64 {
        let Some(interval) = self.interval else {
            return 0;
        };
        let next = *self.next.get_or_insert(now_ms.saturating_add(interval));
        if now_ms < next {
            return 0;
        }
        let missed = (now_ms - next) / interval + 1;
        self.next = Some(next.saturating_add(missed.saturating_mul(interval)));
        missed.min(3)
    }

    fn next_at(&self) -> Option<u64> {
        self.next
    }
}

/// `xache`: a two-generation map with retained (never expiring) entries.
#[derive(Debug, Clone)]
pub struct Xache<K, V> {
    max_size: usize,
    latest: HashMap<K, V>,
    oldest: HashMap<K, V>,
    retained: HashMap<K, V>,
    clock: GcClock,
}

impl<K: Eq + Hash + Clone, V> Xache<K, V> {
    /// An empty cache.
    pub fn new(limits: CacheLimits) -> Self {
        Xache {
            max_size: limits.max_size,
            latest: HashMap::new(),
            oldest: HashMap::new(),
            retained: HashMap::new(),
            clock: GcClock::new(&limits),
        }
    }

    /// Entries in all three maps.
    pub fn len(&self) -> usize {
        self.latest.len() + self.oldest.len() + self.retained.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `set`: ignored for a retained key; collects when `latest` reaches `max_size`.
    pub fn set(&mut self, k: K, v: V) {
        if self.retained.contains_key(&k) {
            return;
        }
        if self.oldest.remove(&k).is_none() {
            self.retained.remove(&k);
        }
        self.latest.insert(k, v);
        if self.latest.len() >= self.max_size {
            self.gc();
        }
    }

    /// `retain`: keeps the entry until it is deleted.
    pub fn retain(&mut self, k: K, v: V) {
        if self.latest.remove(&k).is_none() {
            self.oldest.remove(&k);
        }
        self.retained.insert(k, v);
    }

    /// `delete`, from whichever map holds the key.
    pub fn delete(&mut self, k: &K) -> Option<V> {
        self.latest
            .remove(k)
            .or_else(|| self.oldest.remove(k))
            .or_else(|| self.retained.remove(k))
    }

    /// `has`.
    pub fn contains(&self, k: &K) -> bool {
        self.latest.contains_key(k) || self.oldest.contains_key(k) || self.retained.contains_key(k)
    }

    /// True when `k` is a retained entry.
    pub fn is_retained(&self, k: &K) -> bool {
        self.retained.contains_key(k)
    }

    /// `get`: an `oldest` entry is moved back to `latest` (without a size check, as in JS).
    pub fn get(&mut self, k: &K) -> Option<&V> {
        if !self.latest.contains_key(k) {
            if let Some(v) = self.oldest.remove(k) {
                self.latest.insert(k.clone(), v);
            }
        }
        self.latest.get(k).or_else(|| self.retained.get(k))
    }

    /// Reads without moving the entry between generations.
    pub fn peek(&self, k: &K) -> Option<&V> {
        self.latest
            .get(k)
            .or_else(|| self.oldest.get(k))
            .or_else(|| self.retained.get(k))
    }

    /// `clear`: drops everything, retained entries included.
    pub fn clear(&mut self) {
        self.clock.gced = true;
        self.latest.clear();
        self.oldest.clear();
        self.retained.clear();
    }

    /// Runs the GC ticks due at `now_ms`.
    pub fn advance(&mut self, now_ms: u64) {
        for _ in 0..self.clock.due(now_ms) {
            if !self.clock.gced {
                self.gc();
            }
            self.clock.gced = false;
        }
    }

    /// When the next GC tick is due, once the clock has started.
    pub fn next_gc_at(&self) -> Option<u64> {
        self.clock.next_at()
    }

    fn gc(&mut self) {
        self.clock.gced = true;
        self.oldest = std::mem::take(&mut self.latest);
    }
}

/// One name's records in one generation: insertion-ordered, removed by swapping with the
/// last entry (`RecordSet`).
#[derive(Debug, Clone, Default)]
struct RecordSet {
    list: Vec<([u8; 32], Vec<u8>)>,
    index: HashMap<[u8; 32], usize>,
}

impl RecordSet {
    fn add(&mut self, key: [u8; 32], record: Vec<u8>) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key, self.list.len());
        self.list.push((key, record));
        true
    }

    fn remove(&mut self, key: &[u8; 32]) -> bool {
        let Some(i) = self.index.remove(key) else {
            return false;
        };
        self.list.swap_remove(i);
        if let Some((moved, _)) = self.list.get(i) {
            self.index.insert(*moved, i);
        }
        true
    }
}

/// One generation of a [`RecordCache`] (`RecordStore`).
#[derive(Debug, Clone, Default)]
struct Generation {
    names: HashMap<[u8; 32], RecordSet>,
    size: usize,
}

impl Generation {
    fn add(&mut self, name: [u8; 32], key: [u8; 32], record: Vec<u8>) -> bool {
        let added = self.names.entry(name).or_default().add(key, record);
        if added {
            self.size += 1;
        }
        added
    }

    fn remove(&mut self, name: &[u8; 32], key: &[u8; 32]) -> bool {
        let Some(set) = self.names.get_mut(name) else {
            return false;
        };
        if !set.remove(key) {
            return false;
        }
        self.size -= 1;
        if set.list.is_empty() {
            self.names.remove(name);
        }
        true
    }

    fn get(&self, name: &[u8; 32]) -> &[([u8; 32], Vec<u8>)] {
        self.names.get(name).map_or(&[], |s| s.list.as_slice())
    }
}

/// `record-cache`: records grouped by name, keyed by a 32-byte record key.
#[derive(Debug, Clone)]
pub struct RecordCache {
    max_size: usize,
    fresh: Generation,
    stale: Generation,
    clock: GcClock,
}

impl RecordCache {
    /// An empty cache.
    pub fn new(limits: CacheLimits) -> Self {
        RecordCache {
            max_size: limits.max_size,
            fresh: Generation::default(),
            stale: Generation::default(),
            clock: GcClock::new(&limits),
        }
    }

    /// Records in both generations.
    pub fn len(&self) -> usize {
        self.fresh.size + self.stale.size
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `add`: moves `key` out of `stale` into `fresh`. A record already in `fresh` keeps
    /// its old value. Collects when `fresh` grows past `max_size`.
    pub fn add(&mut self, name: [u8; 32], key: [u8; 32], record: Vec<u8>) {
        self.stale.remove(&name, &key);
        if self.fresh.add(name, key, record) && self.fresh.size > self.max_size {
            self.gc();
        }
    }

    /// `remove` from both generations.
    pub fn remove(&mut self, name: &[u8; 32], key: &[u8; 32]) {
        self.fresh.remove(name, key);
        self.stale.remove(name, key);
    }

    /// Every record under `name`, fresh ones first.
    pub fn all(&self, name: &[u8; 32]) -> impl Iterator<Item = &[u8]> {
        self.fresh
            .get(name)
            .iter()
            .chain(self.stale.get(name))
            .map(|(_, r)| r.as_slice())
    }

    /// `get(name, n)`: up to `n` records (all when `n` is 0), a uniformly random subset
    /// in random order. `rand(k)` must return a uniform integer below `k`.
    pub fn sample(
        &self,
        name: &[u8; 32],
        n: usize,
        mut rand: impl FnMut(usize) -> usize,
    ) -> Vec<&[u8]> {
        let mut all: Vec<&[u8]> = self.all(name).collect();
        let n = if n == 0 || n > all.len() {
            all.len()
        } else {
            n
        };
        for i in 0..n {
            let j = i + rand(all.len() - i);
            all.swap(i, j);
        }
        all.truncate(n);
        all
    }

    /// Drops both generations.
    pub fn clear(&mut self) {
        self.gc();
        self.gc();
    }

    /// Runs the GC ticks due at `now_ms`.
    pub fn advance(&mut self, now_ms: u64) {
        for _ in 0..self.clock.due(now_ms) {
            if !self.clock.gced {
                self.gc();
            }
            self.clock.gced = false;
        }
    }

    /// When the next GC tick is due, once the clock has started.
    pub fn next_gc_at(&self) -> Option<u64> {
        self.clock.next_at()
    }

    fn gc(&mut self) {
        self.stale = std::mem::take(&mut self.fresh);
        self.clock.gced = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_matches_js() {
        assert_eq!(
            CacheLimits::new(1, 1_200_000).gc_interval_ms(),
            Some(800_000)
        );
        assert_eq!(CacheLimits::new(1, 1000).gc_interval_ms(), Some(667));
        assert_eq!(CacheLimits::new(1, 7).gc_interval_ms(), Some(5));
        assert_eq!(CacheLimits::new(1, 0).gc_interval_ms(), None);
    }

    #[test]
    fn xache_generations() {
        let mut c = Xache::new(CacheLimits::new(3, 0));
        c.set(1, "a");
        c.set(2, "b");
        assert_eq!(c.len(), 2);
        c.set(3, "c"); // latest reaches 3: gc, all three move to oldest
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&1), Some(&"a")); // promoted
        c.set(4, "d");
        c.set(5, "e"); // latest = {1, 4, 5} -> gc drops 2 and 3
        assert_eq!(c.peek(&2), None);
        assert_eq!(c.peek(&3), None);
        assert_eq!(c.peek(&1), Some(&"a"));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn xache_retained_shadows_set() {
        let mut c = Xache::new(CacheLimits::new(10, 0));
        c.set(1, "a");
        c.retain(1, "local");
        c.set(1, "remote");
        assert_eq!(c.get(&1), Some(&"local"));
        assert!(c.is_retained(&1));
        assert_eq!(c.delete(&1), Some("local"));
        c.set(1, "remote");
        assert_eq!(c.get(&1), Some(&"remote"));
    }

    #[test]
    fn xache_timed_gc() {
        let mut c = Xache::new(CacheLimits::new(100, 3000));
        c.advance(0); // clock starts, tick every 2000
        c.set(1, ());
        c.advance(1999);
        assert!(c.contains(&1));
        c.advance(2000); // 1 -> oldest
        assert!(c.contains(&1));
        c.advance(4000); // dropped
        assert!(!c.contains(&1));
        c.set(2, ());
        c.advance(100_000); // many missed ticks
        assert!(c.is_empty());
        assert_eq!(c.next_gc_at(), Some(102_000));
    }

    #[test]
    fn size_gc_skips_next_tick() {
        let mut c = Xache::new(CacheLimits::new(2, 3000));
        c.advance(0);
        c.set(1, ());
        c.set(2, ()); // size gc: both in oldest, gced = true
        c.advance(2000); // tick skipped
        assert_eq!(c.len(), 2);
        c.advance(4000); // tick collects
        assert!(c.is_empty());
    }

    #[test]
    fn record_cache_keeps_fresh_value() {
        let mut c = RecordCache::new(CacheLimits::new(100, 0));
        let (n, k) = ([1; 32], [2; 32]);
        c.add(n, k, vec![1]);
        c.add(n, k, vec![2]);
        assert_eq!(c.all(&n).collect::<Vec<_>>(), [&[1][..]]);
        c.clear();
        assert!(c.is_empty());
        c.add(n, k, vec![1]);
        c.gc();
        c.add(n, k, vec![2]); // moved out of stale with the new value
        assert_eq!(c.all(&n).collect::<Vec<_>>(), [&[2][..]]);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn record_cache_size_gc_and_remove() {
        let mut c = RecordCache::new(CacheLimits::new(2, 0));
        let n = [0; 32];
        for i in 0..3u8 {
            c.add(n, [i; 32], vec![i]);
        }
        // The third add pushed fresh past 2: everything is stale now.
        assert_eq!(c.len(), 3);
        c.add(n, [3; 32], vec![3]);
        c.add(n, [4; 32], vec![4]);
        c.add(n, [5; 32], vec![5]); // fresh = 3 > 2: the first three are dropped
        let mut got: Vec<u8> = c.all(&n).map(|r| r[0]).collect();
        got.sort_unstable();
        assert_eq!(got, [3, 4, 5]);
        c.remove(&n, &[4; 32]);
        let mut got: Vec<u8> = c.all(&n).map(|r| r[0]).collect();
        got.sort_unstable();
        assert_eq!(got, [3, 5]);
    }

    #[test]
    fn sample_is_a_subset() {
        let mut c = RecordCache::new(CacheLimits::new(1000, 0));
        let n = [0; 32];
        for i in 0..30u8 {
            c.add(n, [i; 32], vec![i]);
        }
        let mut state = 7usize;
        let s = c.sample(&n, 20, |k| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 33) % k
        });
        assert_eq!(s.len(), 20);
        let mut ids: Vec<u8> = s.iter().map(|r| r[0]).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 20);
        assert_eq!(c.sample(&n, 0, |_| 0).len(), 30);
        assert!(c.sample(&[9; 32], 20, |_| 0).is_empty());
    }
}
