//! The connect queue (`shuffled-priority-queue`): peers by priority, a random one of
//! the highest priority first.

use crate::peer::priority;

/// A shuffled priority queue of keys.
#[derive(Debug, Clone)]
pub struct ShuffledQueue {
    buckets: Vec<Vec<[u8; 32]>>,
    rng: u64,
}

impl ShuffledQueue {
    /// An empty queue with a random seed.
    pub fn new(seed: u64) -> ShuffledQueue {
        ShuffledQueue {
            buckets: vec![Vec::new(); priority::VERY_HIGH as usize + 1],
            rng: seed | 1,
        }
    }

    /// Queued entries.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(Vec::is_empty)
    }

    /// Adds `key` at `prio`.
    pub fn add(&mut self, key: [u8; 32], prio: u8) {
        let i = usize::from(prio).min(self.buckets.len() - 1);
        self.buckets[i].push(key);
    }

    /// Removes `key` wherever it is.
    pub fn remove(&mut self, key: &[u8; 32]) {
        for b in &mut self.buckets {
            b.retain(|k| k != key);
        }
    }

    /// A random entry of the highest non-empty priority.
    pub fn shift(&mut self) -> Option<[u8; 32]> {
        let b = self.buckets.iter_mut().rev().find(|b| !b.is_empty())?;
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let i = (self.rng % b.len() as u64) as usize;
        Some(b.swap_remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_priority_first() {
        let mut q = ShuffledQueue::new(7);
        q.add([1; 32], priority::NORMAL);
        q.add([2; 32], priority::VERY_HIGH);
        q.add([3; 32], priority::LOW);
        q.add([4; 32], priority::NORMAL);
        assert_eq!(q.len(), 4);
        assert_eq!(q.shift(), Some([2; 32]));
        let mut mid = [q.shift().unwrap(), q.shift().unwrap()];
        mid.sort();
        assert_eq!(mid, [[1; 32], [4; 32]]);
        q.remove(&[3; 32]);
        assert_eq!(q.shift(), None);
        assert!(q.is_empty());
    }
}
