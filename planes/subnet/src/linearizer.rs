//! The deterministic linearizer: turns the causal DAG across writer logs into one total
//! order that every peer holding the same entries computes identically. Pure and
//! sans-io: entries go in with [`Linearizer::push`], orders come out.
//!
//! Every entry carries the lengths of other writers' logs its author had seen (its
//! *clock*, rebuilt from the per-entry deltas). An entry is *ready* once everything its
//! clock names is held and ready itself. Ready entries get a *depth*: one more than the
//! deepest entry they depend on.
//!
//! The bootstrap writer's log is the sequencer. Its entry `b_k` closes *batch k*: every
//! ready entry in the causal history of `b_k` not in an earlier batch, sorted by
//! (depth, writer key, sequence) — a topological order with a fixed tie-break. Because
//! the bootstrap log is append-only and signed, batches never change once computed.
//! Batch k is *confirmed* once a majority of the indexers (the set in force after
//! batch k-1) have acknowledged `b_k`: the bootstrap itself, and each other indexer whose
//! newest ready entry has seen the bootstrap log up to `b_k`. Confirmation is in batch
//! order, so the confirmed order only ever grows at its end.
//!
//! Ready entries outside every batch form the *tail*, ordered by the same sort key; the
//! tentative order is the unconfirmed batches followed by the tail, and it may change as
//! entries arrive. `docs/subnet.md` walks through the algorithm.

use std::collections::{HashMap, VecDeque};

use crate::entry::Key;

/// One entry of one writer log, by the writer's index in this linearizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    /// The writer's index (see [`Linearizer::key`]).
    pub writer: u32,
    /// The entry's position in its writer log.
    pub seq: u64,
}

/// A sequenced batch: the entries one bootstrap entry closes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The bootstrap log position of the entry that closed it.
    pub anchor: u64,
    /// Its entries in their final order.
    pub entries: Vec<EntryId>,
}

/// Why an entry could not be taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinearizerError {
    /// Entries of one log must arrive in order, without gaps.
    #[error("writer {writer}: entry {seq} pushed, expected {expected}")]
    OutOfOrder {
        /// The writer's key, hex.
        writer: String,
        /// What was pushed.
        seq: u64,
        /// What was expected.
        expected: u64,
    },
    /// More distinct writer keys than the configured cap.
    #[error("more than {0} writer logs referenced")]
    TooManyWriters(usize),
}

#[derive(Debug, Default)]
struct Node {
    /// Other writers' lengths this entry has seen, sorted by writer index.
    clock: Vec<(u32, u64)>,
    /// Longest dependency chain below it (set once ready).
    depth: u64,
}

#[derive(Debug, Default)]
struct Writer {
    nodes: Vec<Node>,
    ready: u64,
    /// How much of this log is inside a batch.
    sequenced: u64,
}

/// The linearizer over all writer logs of one subnet.
#[derive(Debug)]
pub struct Linearizer {
    keys: Vec<Key>,
    index: HashMap<Key, u32>,
    writers: Vec<Writer>,
    max_writers: usize,
    /// Sequenced, unconfirmed batches in order.
    pending: VecDeque<Batch>,
    /// How many bootstrap entries have closed a batch.
    anchors: u64,
    /// Entries in confirmed batches (the next confirmed position).
    confirmed: u64,
}

/// Index of the bootstrap (sequencer) writer.
const BOOTSTRAP: u32 = 0;

impl Linearizer {
    /// A linearizer sequenced by the `bootstrap` writer log, taking at most `max_writers`
    /// distinct logs.
    pub fn new(bootstrap: Key, max_writers: usize) -> Linearizer {
        let mut l = Linearizer {
            keys: Vec::new(),
            index: HashMap::new(),
            writers: Vec::new(),
            max_writers: max_writers.max(1),
            pending: VecDeque::new(),
            anchors: 0,
            confirmed: 0,
        };
        l.register(&bootstrap)
            .expect("room for the bootstrap writer");
        l
    }

    /// The index of `key`, registering it if new.
    pub fn register(&mut self, key: &Key) -> Result<u32, LinearizerError> {
        if let Some(&i) = self.index.get(key) {
            return Ok(i);
        }
        if self.keys.len() >= self.max_writers {
            return Err(LinearizerError::TooManyWriters(self.max_writers));
        }
        let i = self.keys.len() as u32;
        self.keys.push(*key);
        self.index.insert(*key, i);
        self.writers.push(Writer::default());
        Ok(i)
    }

    /// The key of writer `index`.
    pub fn key(&self, index: u32) -> &Key {
        &self.keys[index as usize]
    }

    /// Every writer key known, in registration order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The index of a known key.
    pub fn index_of(&self, key: &Key) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// How many entries of `key`'s log have been pushed.
    pub fn pushed(&self, key: &Key) -> u64 {
        self.index_of(key)
            .map_or(0, |i| self.writers[i as usize].nodes.len() as u64)
    }

    /// Takes in entry `seq` of `writer`'s log, whose author had newly seen `heads`.
    /// Call [`Linearizer::advance`] after a round of pushes.
    pub fn push(
        &mut self,
        writer: &Key,
        seq: u64,
        heads: &[(Key, u64)],
    ) -> Result<(), LinearizerError> {
        let w = self.register(writer)?;
        let expected = self.writers[w as usize].nodes.len() as u64;
        if seq != expected {
            return Err(LinearizerError::OutOfOrder {
                writer: hex::encode(writer),
                seq,
                expected,
            });
        }
        let mut clock = self.writers[w as usize]
            .nodes
            .last()
            .map(|n| n.clock.clone())
            .unwrap_or_default();
        for (key, length) in heads {
            if *length == 0 {
                continue;
            }
            let other = self.register(key)?;
            if other == w {
                continue; // an entry depends on its own log's predecessors implicitly
            }
            match clock.binary_search_by_key(&other, |(i, _)| *i) {
                Ok(at) => clock[at].1 = clock[at].1.max(*length),
                Err(at) => clock.insert(at, (other, *length)),
            }
        }
        self.writers[w as usize]
            .nodes
            .push(Node { clock, depth: 0 });
        Ok(())
    }

    /// Marks newly ready entries and closes the batches the bootstrap log allows.
    pub fn advance(&mut self) {
        loop {
            let mut progress = false;
            for w in 0..self.writers.len() {
                while self.try_ready(w) {
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        while self.anchors < self.writers[BOOTSTRAP as usize].ready {
            self.close_batch();
        }
    }

    fn try_ready(&mut self, w: usize) -> bool {
        let writer = &self.writers[w];
        let r = writer.ready as usize;
        let Some(node) = writer.nodes.get(r) else {
            return false;
        };
        let mut depth = if r > 0 { writer.nodes[r - 1].depth } else { 0 };
        for &(other, length) in &node.clock {
            let o = &self.writers[other as usize];
            if o.ready < length {
                return false;
            }
            depth = depth.max(o.nodes[length as usize - 1].depth);
        }
        let writer = &mut self.writers[w];
        writer.nodes[r].depth = depth + 1;
        writer.ready += 1;
        true
    }

    fn clock_of(&self, w: u32, length: u64) -> &[(u32, u64)] {
        if length == 0 {
            return &[];
        }
        &self.writers[w as usize].nodes[length as usize - 1].clock
    }

    /// Closes the batch of the next ready bootstrap entry.
    fn close_batch(&mut self) {
        let anchor = self.anchors;
        let mut target: Vec<u64> = self.writers.iter().map(|w| w.sequenced).collect();
        target[BOOTSTRAP as usize] = target[BOOTSTRAP as usize].max(anchor + 1);
        // Close the history under every included entry's clock (clocks only grow along
        // a log, so each log's last included entry speaks for the rest).
        let mut changed = true;
        while changed {
            changed = false;
            for w in 0..target.len() {
                if target[w] == self.writers[w].sequenced {
                    continue;
                }
                for &(other, length) in self.clock_of(w as u32, target[w]) {
                    if target[other as usize] < length {
                        target[other as usize] = length;
                        changed = true;
                    }
                }
            }
        }
        let mut entries = Vec::new();
        for (w, &end) in target.iter().enumerate() {
            let writer = &mut self.writers[w];
            for seq in writer.sequenced..end {
                entries.push(EntryId {
                    writer: w as u32,
                    seq,
                });
            }
            writer.sequenced = end;
        }
        self.sort(&mut entries);
        self.pending.push_back(Batch { anchor, entries });
        self.anchors += 1;
    }

    fn sort(&self, entries: &mut [EntryId]) {
        entries.sort_by(|a, b| {
            let depth = |e: &EntryId| self.writers[e.writer as usize].nodes[e.seq as usize].depth;
            depth(a)
                .cmp(&depth(b))
                .then_with(|| self.keys[a.writer as usize].cmp(&self.keys[b.writer as usize]))
                .then_with(|| a.seq.cmp(&b.seq))
        });
    }

    /// How far the bootstrap log is acknowledged by `indexer`: its length as the
    /// indexer's newest ready entry saw it.
    fn acknowledged(&self, indexer: &Key) -> u64 {
        let Some(i) = self.index_of(indexer) else {
            return 0;
        };
        if i == BOOTSTRAP {
            return self.writers[0].ready;
        }
        let ready = self.writers[i as usize].ready;
        let clock = self.clock_of(i, ready);
        clock
            .binary_search_by_key(&BOOTSTRAP, |(w, _)| *w)
            .map_or(0, |at| clock[at].1)
    }

    /// The next batch, if a majority of `indexers` (which must include the bootstrap key
    /// to count it) has acknowledged its anchor.
    pub fn confirmable(&self, indexers: &[Key]) -> Option<&Batch> {
        let batch = self.pending.front()?;
        let quorum = indexers.len() / 2 + 1;
        let acks = indexers
            .iter()
            .filter(|k| self.acknowledged(k) > batch.anchor)
            .count();
        (acks >= quorum).then_some(batch)
    }

    /// Confirms the next batch (after [`Linearizer::confirmable`] returned it) and returns
    /// it with the position of its first entry.
    pub fn confirm(&mut self) -> Option<(u64, Batch)> {
        let batch = self.pending.pop_front()?;
        let first = self.confirmed;
        self.confirmed += batch.entries.len() as u64;
        Some((first, batch))
    }

    /// The position the next confirmed entry will get.
    pub fn confirmed_len(&self) -> u64 {
        self.confirmed
    }

    /// The tentative order after the confirmed one: unconfirmed batches, then the tail.
    pub fn unconfirmed(&self) -> Vec<EntryId> {
        let mut out: Vec<EntryId> = self
            .pending
            .iter()
            .flat_map(|b| b.entries.iter().copied())
            .collect();
        let mut tail = Vec::new();
        for (w, writer) in self.writers.iter().enumerate() {
            for seq in writer.sequenced..writer.ready {
                tail.push(EntryId {
                    writer: w as u32,
                    seq,
                });
            }
        }
        self.sort(&mut tail);
        out.extend(tail);
        out
    }

    /// Length of `key`'s ready prefix.
    pub fn ready_length(&self, key: &Key) -> u64 {
        self.index_of(key)
            .map_or(0, |i| self.writers[i as usize].ready)
    }

    /// How many entries [`Linearizer::unconfirmed`] would list (without ordering them).
    pub fn unconfirmed_len(&self) -> u64 {
        let pending: u64 = self.pending.iter().map(|b| b.entries.len() as u64).sum();
        let tail: u64 = self.writers.iter().map(|w| w.ready - w.sequenced).sum();
        pending + tail
    }

    /// Lengths of every log's ready prefix (what a new entry's author has seen).
    pub fn ready_lengths(&self) -> Vec<(Key, u64)> {
        self.keys
            .iter()
            .zip(&self.writers)
            .map(|(k, w)| (*k, w.ready))
            .collect()
    }

    /// Entries pushed but waiting for what they depend on.
    pub fn waiting(&self) -> u64 {
        self.writers
            .iter()
            .map(|w| w.nodes.len() as u64 - w.ready)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Key = [0; 32];
    const X: Key = [1; 32];
    const Y: Key = [2; 32];

    fn ids(l: &Linearizer, v: &[EntryId]) -> Vec<(u8, u64)> {
        v.iter().map(|e| (l.key(e.writer)[0], e.seq)).collect()
    }

    #[test]
    fn bootstrap_entries_close_batches_of_their_history() {
        let mut l = Linearizer::new(B, 16);
        l.push(&X, 0, &[]).unwrap();
        l.push(&Y, 0, &[]).unwrap();
        l.push(&Y, 1, &[(X, 1)]).unwrap();
        l.advance();
        assert!(l.confirmable(&[B]).is_none());
        assert_eq!(ids(&l, &l.unconfirmed()), [(1, 0), (2, 0), (2, 1)]);
        assert_eq!(l.unconfirmed_len(), 3);
        l.push(&B, 0, &[(Y, 2)]).unwrap();
        l.advance();
        let batch = l.confirmable(&[B]).unwrap().clone();
        assert_eq!(ids(&l, &batch.entries), [(1, 0), (2, 0), (2, 1), (0, 0)]);
        assert_eq!(l.confirm().unwrap().0, 0);
        assert_eq!(l.confirmed_len(), 4);
        assert!(l.unconfirmed().is_empty());
    }

    #[test]
    fn entries_wait_for_their_dependencies() {
        let mut l = Linearizer::new(B, 16);
        l.push(&X, 0, &[(Y, 1)]).unwrap();
        l.advance();
        assert!(l.unconfirmed().is_empty());
        assert_eq!(l.waiting(), 1);
        l.push(&Y, 0, &[]).unwrap();
        l.advance();
        assert_eq!(ids(&l, &l.unconfirmed()), [(2, 0), (1, 0)]);
    }

    #[test]
    fn a_second_indexer_must_acknowledge_before_confirmation() {
        let mut l = Linearizer::new(B, 16);
        l.push(&B, 0, &[]).unwrap();
        l.advance();
        assert!(l.confirmable(&[B, X]).is_none(), "1 of 2 is no majority");
        l.push(&X, 0, &[(B, 1)]).unwrap();
        l.advance();
        assert!(l.confirmable(&[B, X]).is_some());
        assert!(l.confirmable(&[B, X, Y]).is_some(), "2 of 3");
    }

    #[test]
    fn out_of_order_pushes_and_too_many_writers_are_errors() {
        let mut l = Linearizer::new(B, 2);
        assert!(matches!(
            l.push(&X, 1, &[]),
            Err(LinearizerError::OutOfOrder { .. })
        ));
        l.push(&X, 0, &[]).unwrap();
        assert!(matches!(
            l.push(&X, 1, &[(Y, 3)]),
            Err(LinearizerError::TooManyWriters(2))
        ));
    }
}
