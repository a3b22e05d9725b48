//! The deterministic linearizer: turns the causal DAG across writer logs into one total
//! order that every peer holding the same entries computes identically. Pure and
//! sans-io: entries go in with [`Linearizer::push`], orders come out.
//!
//! Every entry carries the lengths of other writers' logs its author had seen (its
//! *clock*, rebuilt from the per-entry deltas). An entry is *ready* once everything its
//! clock names is held and ready itself.
//!
//! The bootstrap writer's log is the sequencer. Its entry `b_k` closes *batch k*: every
//! ready entry in the causal history of `b_k` not in an earlier batch. Inside the batch,
//! each entry gets a *depth*: one more than the deepest entry of the same batch it depends
//! on (dependencies in earlier batches do not count), and the batch is sorted by
//! (depth, writer key, sequence) — a topological order with a fixed tie-break. Because
//! the bootstrap log is append-only and signed, batches never change once computed.
//! Batch k is *confirmed* once a majority of the indexers (the set in force after
//! batch k-1) have acknowledged `b_k`: the bootstrap itself, and each other indexer whose
//! newest ready entry has seen the bootstrap log up to `b_k`. Confirmation is in batch
//! order, so the confirmed order only ever grows at its end.
//!
//! Ready entries outside every batch form the *tail*, ordered the same way (depths
//! counted inside the tail); the tentative order is the unconfirmed batches followed by
//! the tail, and it may change as entries arrive. `docs/subnet.md` walks through the
//! algorithm.
//!
//! Memory is bounded by what is not confirmed yet: an entry's clock is dropped once its
//! batch is closed ([`Linearizer::compact`]), except each log's newest ready entry's, and
//! [`Linearizer::checkpoint`] / [`Linearizer::restore`] carry the confirmed frontier
//! across restarts, so a restarted peer reads only the entries past it.

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

/// Other writers' lengths an entry has seen, sorted by writer index.
type Clock = Vec<(u32, u64)>;

#[derive(Debug, Default)]
struct Writer {
    /// Clocks of entries `base..pushed`.
    clocks: VecDeque<Clock>,
    /// The sequence number of `clocks[0]`.
    base: u64,
    ready: u64,
    /// How much of this log is inside a batch.
    sequenced: u64,
    /// How much of this log is inside a confirmed batch.
    confirmed: u64,
}

impl Writer {
    fn pushed(&self) -> u64 {
        self.base + self.clocks.len() as u64
    }

    /// The clock of the entry before `length` (empty for 0). Only entries from the newest
    /// ready one on, and every unsequenced one, are kept.
    fn clock_before(&self, length: u64) -> &[(u32, u64)] {
        if length == 0 || length <= self.base {
            return &[];
        }
        self.clocks
            .get((length - 1 - self.base) as usize)
            .map_or(&[], Vec::as_slice)
    }
}

/// One log's confirmed frontier, as a checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterCheckpoint {
    /// The log.
    pub key: Key,
    /// Its entries inside confirmed batches.
    pub confirmed: u64,
    /// The clock of its last such entry (other logs' lengths it had seen).
    pub clock: Vec<(Key, u64)>,
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
    /// Writers whose confirmed frontier moved since [`Linearizer::take_changed`].
    changed: Vec<u32>,
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
            changed: Vec::new(),
        };
        l.register(&bootstrap)
            .expect("room for the bootstrap writer");
        l
    }

    /// A linearizer that continues from a checkpoint: `confirmed` positions, and each
    /// log's confirmed frontier. Entries past the frontiers are pushed again.
    pub fn restore(
        bootstrap: Key,
        max_writers: usize,
        confirmed: u64,
        frontiers: &[WriterCheckpoint],
    ) -> Result<Linearizer, LinearizerError> {
        let mut l = Linearizer::new(bootstrap, max_writers);
        let mut sorted: Vec<&WriterCheckpoint> = frontiers.iter().collect();
        sorted.sort_by_key(|f| f.key);
        for f in &sorted {
            l.register(&f.key)?;
        }
        for f in sorted {
            let w = l.index[&f.key];
            let mut clock: Clock = Vec::with_capacity(f.clock.len());
            for (key, length) in &f.clock {
                clock.push((l.register(key)?, *length));
            }
            clock.sort_unstable();
            let writer = &mut l.writers[w as usize];
            if f.confirmed > 0 {
                writer.base = f.confirmed - 1;
                writer.clocks.push_back(clock);
            }
            writer.ready = f.confirmed;
            writer.sequenced = f.confirmed;
            writer.confirmed = f.confirmed;
        }
        l.anchors = l.writers[BOOTSTRAP as usize].confirmed;
        l.confirmed = confirmed;
        Ok(l)
    }

    /// The confirmed frontier of every log that has one (for a checkpoint).
    pub fn checkpoint(&self) -> Vec<WriterCheckpoint> {
        (0..self.writers.len() as u32)
            .filter_map(|w| self.writer_checkpoint(w))
            .collect()
    }

    /// The confirmed frontier of writer `w`, if it has confirmed entries.
    pub fn writer_checkpoint(&self, w: u32) -> Option<WriterCheckpoint> {
        let writer = &self.writers[w as usize];
        (writer.confirmed > 0).then(|| WriterCheckpoint {
            key: self.keys[w as usize],
            confirmed: writer.confirmed,
            clock: writer
                .clock_before(writer.confirmed)
                .iter()
                .map(|(o, n)| (self.keys[*o as usize], *n))
                .collect(),
        })
    }

    /// Writers whose confirmed frontier moved since the last call.
    pub fn take_changed(&mut self) -> Vec<u32> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        changed
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

    /// How many entries of `key`'s log have been pushed (or were confirmed before a
    /// restore).
    pub fn pushed(&self, key: &Key) -> u64 {
        self.index_of(key)
            .map_or(0, |i| self.writers[i as usize].pushed())
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
        let expected = self.writers[w as usize].pushed();
        if seq != expected {
            return Err(LinearizerError::OutOfOrder {
                writer: hex::encode(writer),
                seq,
                expected,
            });
        }
        let mut clock = self.writers[w as usize]
            .clocks
            .back()
            .cloned()
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
        self.writers[w as usize].clocks.push_back(clock);
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
        if writer.ready >= writer.pushed() {
            return false;
        }
        let clock = writer.clock_before(writer.ready + 1);
        if clock
            .iter()
            .any(|&(other, length)| self.writers[other as usize].ready < length)
        {
            return false;
        }
        self.writers[w].ready += 1;
        true
    }

    /// Closes the batch of the next ready bootstrap entry.
    fn close_batch(&mut self) {
        let anchor = self.anchors;
        let start: Vec<u64> = self.writers.iter().map(|w| w.sequenced).collect();
        let mut target = start.clone();
        target[BOOTSTRAP as usize] = target[BOOTSTRAP as usize].max(anchor + 1);
        // Close the history under every included entry's clock (clocks only grow along
        // a log, so each log's last included entry speaks for the rest).
        let mut changed = true;
        while changed {
            changed = false;
            for w in 0..target.len() {
                if target[w] == start[w] {
                    continue;
                }
                for &(other, length) in self.writers[w].clock_before(target[w]) {
                    if target[other as usize] < length {
                        target[other as usize] = length;
                        changed = true;
                    }
                }
            }
        }
        let entries = self.ordered(&start, &target);
        for (writer, end) in self.writers.iter_mut().zip(&target) {
            writer.sequenced = *end;
        }
        self.pending.push_back(Batch { anchor, entries });
        self.anchors += 1;
    }

    /// The entries `start[w]..end[w]` of every log, sorted by (depth, writer key,
    /// sequence), where an entry's depth is one more than the deepest entry of the same
    /// set it depends on (its own log's predecessor included).
    fn ordered(&self, start: &[u64], end: &[u64]) -> Vec<EntryId> {
        let total: u64 = start.iter().zip(end).map(|(s, e)| e - s).sum();
        let mut depths: Vec<Vec<u64>> = start
            .iter()
            .zip(end)
            .map(|(s, e)| Vec::with_capacity((e - s) as usize))
            .collect();
        let mut done = 0u64;
        // Each pass takes every entry whose dependencies inside the set have depths; the
        // set is closed under dependencies and acyclic, so every pass makes progress.
        while done < total {
            let mut progress = false;
            for w in 0..start.len() {
                loop {
                    let seq = start[w] + depths[w].len() as u64;
                    if seq >= end[w] {
                        break;
                    }
                    let mut depth = depths[w].last().copied().unwrap_or(0);
                    let mut blocked = false;
                    for &(other, length) in self.writers[w].clock_before(seq + 1) {
                        let o = other as usize;
                        if length <= start[o] {
                            continue;
                        }
                        match depths[o].get((length - 1 - start[o]) as usize) {
                            Some(d) => depth = depth.max(*d),
                            None => {
                                blocked = true;
                                break;
                            }
                        }
                    }
                    if blocked {
                        break;
                    }
                    depths[w].push(depth + 1);
                    done += 1;
                    progress = true;
                }
            }
            if !progress {
                // Unreachable for a closed set; never loop forever on a bug.
                break;
            }
        }
        let mut entries: Vec<(u64, EntryId)> = Vec::with_capacity(total as usize);
        for (w, ds) in depths.iter().enumerate() {
            for (i, depth) in ds.iter().enumerate() {
                entries.push((
                    *depth,
                    EntryId {
                        writer: w as u32,
                        seq: start[w] + i as u64,
                    },
                ));
            }
        }
        entries.sort_by(|(da, a), (db, b)| {
            da.cmp(db)
                .then_with(|| self.keys[a.writer as usize].cmp(&self.keys[b.writer as usize]))
                .then_with(|| a.seq.cmp(&b.seq))
        });
        entries.into_iter().map(|(_, id)| id).collect()
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
        let writer = &self.writers[i as usize];
        let clock = writer.clock_before(writer.ready);
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
        for id in &batch.entries {
            let writer = &mut self.writers[id.writer as usize];
            writer.confirmed = writer.confirmed.max(id.seq + 1);
            self.changed.push(id.writer);
        }
        Some((first, batch))
    }

    /// Drops the clocks no longer needed: those of confirmed entries, except each log's
    /// newest confirmed one (its confirmed frontier, which a checkpoint names and which
    /// tells what its author acknowledged while nothing newer is ready).
    pub fn compact(&mut self) {
        for writer in &mut self.writers {
            let keep_from = writer.confirmed.saturating_sub(1);
            while writer.base < keep_from && !writer.clocks.is_empty() {
                writer.clocks.pop_front();
                writer.base += 1;
            }
        }
    }

    /// Clocks held in memory (what [`Linearizer::compact`] bounds).
    pub fn held_clocks(&self) -> usize {
        self.writers.iter().map(|w| w.clocks.len()).sum()
    }

    /// The position the next confirmed entry will get.
    pub fn confirmed_len(&self) -> u64 {
        self.confirmed
    }

    /// How many entries of writer `index` are in confirmed batches.
    pub fn confirmed_of(&self, index: u32) -> u64 {
        self.writers.get(index as usize).map_or(0, |w| w.confirmed)
    }

    /// The tentative order after the confirmed one: unconfirmed batches, then the tail.
    pub fn unconfirmed(&self) -> Vec<EntryId> {
        let mut out: Vec<EntryId> = self
            .pending
            .iter()
            .flat_map(|b| b.entries.iter().copied())
            .collect();
        let start: Vec<u64> = self.writers.iter().map(|w| w.sequenced).collect();
        let end: Vec<u64> = self.writers.iter().map(|w| w.ready).collect();
        out.extend(self.ordered(&start, &end));
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

    /// For every log, the longest prefix the entries pushed so far depend on (0 for logs
    /// nothing depends on): how far a log must be read for them to become ready.
    pub fn needed_lengths(&self) -> Vec<(Key, u64)> {
        let mut needed = vec![0u64; self.writers.len()];
        for writer in &self.writers {
            if let Some(clock) = writer.clocks.back() {
                for &(other, length) in clock {
                    let n = &mut needed[other as usize];
                    *n = (*n).max(length);
                }
            }
        }
        self.keys.iter().copied().zip(needed).collect()
    }

    /// The lengths of other logs the bootstrap's newest pushed entry has seen: the entries
    /// the batches it closes are made of.
    pub fn bootstrap_clock(&self) -> Vec<(Key, u64)> {
        self.writers[BOOTSTRAP as usize]
            .clocks
            .back()
            .map(|clock| {
                clock
                    .iter()
                    .map(|(w, n)| (self.keys[*w as usize], *n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Entries pushed but waiting for what they depend on.
    pub fn waiting(&self) -> u64 {
        self.writers.iter().map(|w| w.pushed() - w.ready).sum()
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
