//! The dedupe cache: message ids accepted recently, bounded in count and age.
//!
//! Entries expire `ttl_ms` after they were last seen (a duplicate refreshes its entry, so
//! copies still circulating keep being suppressed); beyond `max` entries the least
//! recently seen one is evicted. Lookups and inserts are `O(log n)`.

use std::collections::{BTreeMap, HashMap};

/// Bounded LRU + TTL set of dedupe keys.
#[derive(Debug, Clone)]
pub struct SeenCache {
    max: usize,
    ttl_ms: u64,
    seq: u64,
    by_key: HashMap<String, (u64, u64)>,
    by_age: BTreeMap<(u64, u64), String>,
    evicted_live: u64,
}

impl SeenCache {
    /// A cache holding at most `max` keys for `ttl_ms` each.
    pub fn new(max: usize, ttl_ms: u64) -> Self {
        SeenCache {
            max: max.max(1),
            ttl_ms,
            seq: 0,
            by_key: HashMap::new(),
            by_age: BTreeMap::new(),
            evicted_live: 0,
        }
    }

    /// Whether `key` was seen within the TTL.
    pub fn contains(&self, key: &str, now_ms: u64) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|(at, _)| at.saturating_add(self.ttl_ms) >= now_ms)
    }

    /// Remembers (or refreshes) `key` at `now_ms`, then drops expired and excess entries.
    pub fn insert(&mut self, key: String, now_ms: u64) {
        self.seq += 1;
        let stamp = (now_ms, self.seq);
        if let Some(old) = self.by_key.insert(key.clone(), stamp) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(stamp, key);
        self.purge(now_ms);
        while self.by_key.len() > self.max {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_key.remove(&oldest);
            self.evicted_live += 1;
        }
    }

    /// Drops entries older than the TTL.
    pub fn purge(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.ttl_ms);
        while let Some(entry) = self.by_age.first_entry() {
            if entry.key().0 >= cutoff {
                break;
            }
            let key = entry.remove();
            self.by_key.remove(&key);
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Unexpired keys evicted because the cache was full (each one a message that could be
    /// accepted again if a copy arrived later within the TTL).
    pub fn evicted_live(&self) -> u64 {
        self.evicted_live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_refresh() {
        let mut c = SeenCache::new(10, 100);
        c.insert("a".into(), 0);
        assert!(c.contains("a", 100));
        assert!(!c.contains("a", 101));
        c.insert("a".into(), 90);
        assert!(c.contains("a", 190));
        c.insert("b".into(), 300);
        assert!(!c.contains("a", 300));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn bounded_lru() {
        let mut c = SeenCache::new(3, 1_000);
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            c.insert((*k).into(), i as u64);
        }
        c.insert("a".into(), 5); // refresh: b is now the oldest
        c.insert("d".into(), 6);
        assert!(!c.contains("b", 6));
        assert!(c.contains("a", 6) && c.contains("c", 6) && c.contains("d", 6));
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted_live(), 1);
    }
}
