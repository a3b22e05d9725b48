//! Flat-tree arithmetic: the in-order numbering hypercore gives its Merkle tree nodes.
//!
//! Leaves (blocks) sit at even indexes (`2 * block`), parents at odd ones; a node at depth
//! `d` and offset `o` has index `(2o + 1) * 2^d - 1`. A log of `n` blocks is summarised by
//! its "full roots": the roots of the largest complete subtrees covering `0..2n`, left to
//! right. The [`Iterator`] walks the tree the way the JS `flat-tree` iterator does, which
//! keeps proof generation and verification node-for-node identical to JS hypercore.
//!
//! Every index here must stay below [`MAX_INDEX`]; callers bound lengths that come from the
//! network before doing tree arithmetic on them, so nothing here can overflow.

/// Largest log length any operation accepts (JS numbers are exact up to 2^53).
pub const MAX_LENGTH: u64 = 1 << 52;
/// Largest node index reachable from a log of at most [`MAX_LENGTH`] blocks, with room for
/// a parent above the last root.
pub const MAX_INDEX: u64 = 1 << 55;

/// Depth of a node: 0 for leaves, the number of trailing one bits otherwise.
pub fn depth(index: u64) -> u32 {
    (!index).trailing_zeros()
}

/// Position of a node among the nodes of its depth.
pub fn offset(index: u64) -> u64 {
    index >> (depth(index) + 1)
}

/// The node at `depth` and `offset`.
pub fn index(depth: u32, offset: u64) -> u64 {
    ((2 * offset + 1) << depth) - 1
}

/// The parent of a node.
pub fn parent(index_: u64) -> u64 {
    let d = depth(index_);
    index(d + 1, offset(index_) >> 1)
}

/// The other child of this node's parent.
pub fn sibling(index_: u64) -> u64 {
    let d = depth(index_);
    index(d, offset(index_) ^ 1)
}

/// The leftmost leaf under a node (the node itself for a leaf).
pub fn left_span(index: u64) -> u64 {
    let d = depth(index);
    index + 1 - (1 << d)
}

/// The rightmost leaf under a node (the node itself for a leaf).
pub fn right_span(index: u64) -> u64 {
    let d = depth(index);
    index + (1 << d) - 1
}

/// Number of leaves (blocks) under a node.
pub fn count_leaves(index: u64) -> u64 {
    1 << depth(index)
}

/// The full roots of a tree whose leaves end before the leaf index `head` (= 2 * length),
/// left to right.
pub fn full_roots(head: u64) -> Vec<u64> {
    debug_assert!(
        head & 1 == 0,
        "full roots are defined for leaf positions only"
    );
    let mut roots = Vec::new();
    let mut remaining = head / 2;
    let mut offset = 0u64;
    while remaining > 0 {
        let factor = 1u64 << (63 - remaining.leading_zeros());
        roots.push(offset + factor - 1);
        offset += 2 * factor;
        remaining -= factor;
    }
    roots
}

/// A cursor over tree nodes, mirroring the JS `flat-tree` iterator step for step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iterator {
    /// The node the cursor is on.
    pub index: u64,
    /// Its offset among nodes of the same depth.
    pub offset: u64,
    /// Twice the number of leaves under it (2 for a leaf).
    pub factor: u64,
}

impl Iterator {
    /// A cursor on `index`.
    pub fn new(index: u64) -> Iterator {
        let mut ite = Iterator {
            index: 0,
            offset: 0,
            factor: 2,
        };
        ite.seek(index);
        ite
    }

    /// Moves to `index`.
    pub fn seek(&mut self, index: u64) {
        self.index = index;
        self.offset = offset(index);
        self.factor = 2u64 << depth(index);
    }

    /// True when this node is a left child.
    pub fn is_left(&self) -> bool {
        self.offset & 1 == 0
    }

    /// True when `index` lies inside the span of this node.
    pub fn contains(&self, index: u64) -> bool {
        let half = self.factor / 2;
        if index > self.index {
            index < self.index + half
        } else if index < self.index {
            index + half > self.index
        } else {
            true
        }
    }

    /// Number of leaves under this node.
    pub fn count_leaves(&self) -> u64 {
        self.factor / 2
    }

    /// Moves to the sibling and returns its index.
    pub fn sibling(&mut self) -> u64 {
        if self.is_left() {
            self.offset += 1;
            self.index += self.factor;
        } else {
            self.offset -= 1;
            self.index -= self.factor;
        }
        self.index
    }

    /// Moves to the parent and returns its index.
    pub fn parent(&mut self) -> u64 {
        if self.offset & 1 == 1 {
            self.index -= self.factor / 2;
            self.offset = (self.offset - 1) / 2;
        } else {
            self.index += self.factor / 2;
            self.offset /= 2;
        }
        self.factor *= 2;
        self.index
    }

    /// Moves to the left child (stays on a leaf) and returns the index.
    pub fn left_child(&mut self) -> u64 {
        if self.factor == 2 {
            return self.index;
        }
        self.factor /= 2;
        self.index -= self.factor / 2;
        self.offset *= 2;
        self.index
    }

    /// Moves to the leaf right after this node's span.
    pub fn next_tree(&mut self) -> u64 {
        self.index = self.index + self.factor / 2 + 1;
        self.offset = self.index / 2;
        self.factor = 2;
        self.index
    }

    /// From a leaf, grows to the largest complete subtree starting here whose span ends
    /// before the leaf index `head`. False when there is none (the walk over the roots of
    /// `0..head` is done).
    pub fn full_root(&mut self, head: u64) -> bool {
        if head <= self.index || self.index & 1 == 1 {
            return false;
        }
        while head > self.index + self.factor + self.factor / 2 {
            self.index += self.factor / 2;
            self.factor *= 2;
            self.offset /= 2;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_relations() {
        assert_eq!(depth(0), 0);
        assert_eq!(depth(1), 1);
        assert_eq!(depth(3), 2);
        assert_eq!(depth(7), 3);
        assert_eq!(index(0, 3), 6);
        assert_eq!(index(2, 1), 11);
        assert_eq!(offset(11), 1);
        assert_eq!(parent(0), 1);
        assert_eq!(parent(2), 1);
        assert_eq!(parent(1), 3);
        assert_eq!(parent(5), 3);
        assert_eq!(sibling(0), 2);
        assert_eq!(sibling(5), 1);
        assert_eq!(left_span(3), 0);
        assert_eq!(right_span(3), 6);
        assert_eq!(right_span(4), 4);
        assert_eq!(count_leaves(7), 8);
    }

    #[test]
    fn full_roots_match_flat_tree() {
        assert_eq!(full_roots(0), Vec::<u64>::new());
        assert_eq!(full_roots(2), vec![0]);
        assert_eq!(full_roots(8), vec![3]);
        assert_eq!(full_roots(10), vec![3, 8]);
        assert_eq!(full_roots(14), vec![3, 9, 12]);
        assert_eq!(full_roots(32), vec![15]);
    }

    #[test]
    fn full_root_walk_visits_the_roots() {
        for length in 1..200u64 {
            let mut seen = Vec::new();
            let mut ite = Iterator::new(0);
            while ite.full_root(2 * length) {
                seen.push(ite.index);
                ite.next_tree();
            }
            assert_eq!(seen, full_roots(2 * length), "length {length}");
        }
    }

    #[test]
    fn iterator_moves_like_the_free_functions() {
        for i in 0..500u64 {
            let mut ite = Iterator::new(i);
            assert_eq!(ite.parent(), parent(i));
            let mut ite = Iterator::new(i);
            assert_eq!(ite.sibling(), sibling(i));
            let ite = Iterator::new(i);
            assert_eq!(ite.count_leaves(), count_leaves(i));
            assert!(ite.contains(left_span(i)) && ite.contains(right_span(i)));
            assert!(!ite.contains(right_span(i) + 1));
        }
    }
}
