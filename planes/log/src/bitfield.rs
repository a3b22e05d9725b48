//! Which blocks a log holds (ours) or a peer holds (theirs), as sparse pages of bits.
//!
//! A page covers [`PAGE_BITS`] blocks; absent pages are all zero. The same layout serves
//! the wire: a `bitfield` message carries 32-bit words whose bit `j` of word `k` is block
//! `start + 32k + j`, as JS hypercore's bitfields are laid out.

use std::collections::BTreeMap;

/// Blocks per page.
pub const PAGE_BITS: u64 = 32_768;
const WORDS: usize = (PAGE_BITS / 64) as usize;

/// A sparse set of block numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bitfield {
    pages: BTreeMap<u64, Box<[u64; WORDS]>>,
}

impl Bitfield {
    /// True when `block` is set.
    pub fn get(&self, block: u64) -> bool {
        let (page, word, bit) = locate(block);
        self.pages
            .get(&page)
            .is_some_and(|p| p[word] & (1 << bit) != 0)
    }

    /// Sets or clears `block`.
    pub fn set(&mut self, block: u64, value: bool) {
        let (page, word, bit) = locate(block);
        if value {
            self.pages
                .entry(page)
                .or_insert_with(|| Box::new([0; WORDS]))[word] |= 1 << bit;
        } else if let Some(p) = self.pages.get_mut(&page) {
            p[word] &= !(1 << bit);
        }
    }

    /// Sets `length` blocks from `start`.
    pub fn set_range(&mut self, start: u64, length: u64, value: bool) {
        // Word-at-a-time would be faster; ranges here are short or rare (range messages).
        for block in start..start.saturating_add(length) {
            self.set(block, value);
        }
    }

    /// The first block at or after `from` whose bit equals `value`, if any below `end`.
    pub fn find(&self, from: u64, end: u64, value: bool) -> Option<u64> {
        let mut block = from;
        while block < end {
            let (page, word, bit) = locate(block);
            let Some(p) = self.pages.get(&page) else {
                if !value {
                    return Some(block);
                }
                // Jump to the next stored page.
                block = match self.pages.range(page + 1..).next() {
                    Some((next, _)) => next * PAGE_BITS,
                    None => return None,
                };
                continue;
            };
            let word_bits = if value { p[word] } else { !p[word] };
            let bits = word_bits >> bit;
            if bits != 0 {
                let found = block + u64::from(bits.trailing_zeros());
                return (found < end).then_some(found);
            }
            block += 64 - bit as u64;
        }
        None
    }

    /// Number of stored (non-empty at some point) pages.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// The serialized page `page` (little-endian words), or `None` when it is empty.
    pub fn page_bytes(&self, page: u64) -> Option<Vec<u8>> {
        let p = self.pages.get(&page)?;
        Some(p.iter().flat_map(|w| w.to_le_bytes()).collect())
    }

    /// Loads a page serialized by [`Bitfield::page_bytes`]; wrong sizes are ignored.
    pub fn load_page(&mut self, page: u64, bytes: &[u8]) {
        if bytes.len() != WORDS * 8 {
            return;
        }
        let mut words = Box::new([0u64; WORDS]);
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        self.pages.insert(page, words);
    }

    /// Merges 32-bit words from a `bitfield` message that start at block `start`.
    pub fn insert_words(&mut self, start: u64, words: &[u32]) {
        for (k, word) in words.iter().enumerate() {
            let mut w = *word;
            while w != 0 {
                let j = w.trailing_zeros();
                self.set(start + 32 * k as u64 + u64::from(j), true);
                w &= w - 1;
            }
        }
    }
}

/// The page of a block.
pub fn page_of(block: u64) -> u64 {
    block / PAGE_BITS
}

fn locate(block: u64) -> (u64, usize, u32) {
    let page = block / PAGE_BITS;
    let within = block % PAGE_BITS;
    (page, (within / 64) as usize, (within % 64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_find() {
        let mut b = Bitfield::default();
        assert_eq!(b.find(0, 100, true), None);
        assert_eq!(b.find(5, 100, false), Some(5));
        b.set_range(0, 70, true);
        b.set(100_000, true);
        assert!(b.get(69) && !b.get(70));
        assert_eq!(b.find(0, 200_000, false), Some(70));
        assert_eq!(b.find(70, 200_000, true), Some(100_000));
        assert_eq!(b.find(70, 100_000, true), None);
        b.set(3, false);
        assert_eq!(b.find(0, 10, false), Some(3));
        let bytes = b.page_bytes(0).unwrap();
        let mut c = Bitfield::default();
        c.load_page(0, &bytes);
        assert!(c.get(69) && !c.get(3));
    }

    #[test]
    fn words_from_the_wire() {
        let mut b = Bitfield::default();
        b.insert_words(64, &[0b101, 0, 1 << 31]);
        assert!(b.get(64) && !b.get(65) && b.get(66) && b.get(64 + 64 + 31));
        assert_eq!(b.find(0, 1000, true), Some(64));
    }
}
