//! The Kademlia routing table of the JS `kademlia-routing-table` module: 256 rows indexed
//! by the length of the id prefix a node shares with ours, each row at most `k` nodes
//! sorted by id, and `closest()` walking the rows in the same order as the JS code.
//!
//! The table is pure data; what to do when a row is full (ping the oldest node and maybe
//! swap) is the caller's decision, reported through [`AddOutcome::RowFull`].

use crate::messages::NodeId;

/// Default bucket size.
pub const K: usize = 20;

/// Number of rows (one per bit of the id).
pub const ROWS: usize = 256;

/// What [`RoutingTable::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// A new node was inserted.
    Inserted,
    /// A node with the same id was there; its value was replaced.
    Replaced,
    /// The row is full; nothing changed. Carries the row index.
    RowFull(usize),
}

impl AddOutcome {
    /// True unless the row was full (the JS `add()` return value).
    pub fn added(self) -> bool {
        !matches!(self, AddOutcome::RowFull(_))
    }
}

/// A routing table keyed by node id holding a `T` per node.
#[derive(Debug, Clone)]
pub struct RoutingTable<T> {
    id: NodeId,
    k: usize,
    size: usize,
    rows: Vec<Vec<(NodeId, T)>>,
}

impl<T> RoutingTable<T> {
    /// An empty table for our id with k = 20.
    pub fn new(id: NodeId) -> Self {
        Self::with_k(id, K)
    }

    /// An empty table with a custom bucket size.
    pub fn with_k(id: NodeId, k: usize) -> Self {
        RoutingTable {
            id,
            k: k.max(1),
            size: 0,
            rows: (0..ROWS).map(|_| Vec::new()).collect(),
        }
    }

    /// Our id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Bucket size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.size
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The row an id belongs in: the number of leading bits it shares with our id
    /// (255 for our own id).
    pub fn row_index(&self, id: &NodeId) -> usize {
        for (i, (a, b)) in id.iter().zip(self.id.iter()).enumerate() {
            if a != b {
                return i * 8 + (a ^ b).leading_zeros() as usize;
            }
        }
        ROWS - 1
    }

    /// Inserts or replaces a node.
    pub fn add(&mut self, id: NodeId, value: T) -> AddOutcome {
        let i = self.row_index(&id);
        let k = self.k;
        let row = &mut self.rows[i];
        match row.binary_search_by(|(n, _)| n.cmp(&id)) {
            Ok(j) => {
                row[j].1 = value;
                AddOutcome::Replaced
            }
            Err(_) if row.len() >= k => AddOutcome::RowFull(i),
            Err(j) => {
                row.insert(j, (id, value));
                self.size += 1;
                AddOutcome::Inserted
            }
        }
    }

    /// Removes a node, returning its value.
    pub fn remove(&mut self, id: &NodeId) -> Option<T> {
        let i = self.row_index(id);
        let row = &mut self.rows[i];
        let j = row.binary_search_by(|(n, _)| n.cmp(id)).ok()?;
        self.size -= 1;
        Some(row.remove(j).1)
    }

    /// The value stored for an id.
    pub fn get(&self, id: &NodeId) -> Option<&T> {
        let row = &self.rows[self.row_index(id)];
        let j = row.binary_search_by(|(n, _)| n.cmp(id)).ok()?;
        Some(&row[j].1)
    }

    /// The value stored for an id, mutably.
    pub fn get_mut(&mut self, id: &NodeId) -> Option<&mut T> {
        let i = self.row_index(id);
        let row = &mut self.rows[i];
        let j = row.binary_search_by(|(n, _)| n.cmp(id)).ok()?;
        Some(&mut row[j].1)
    }

    /// True when the id is in the table.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// The nodes of one row, sorted by id.
    pub fn row(&self, index: usize) -> &[(NodeId, T)] {
        self.rows.get(index).map_or(&[], Vec::as_slice)
    }

    /// The `n`th node counting row by row (the JS `random()` given its random index).
    pub fn nth(&self, mut n: usize) -> Option<(&NodeId, &T)> {
        for row in &self.rows {
            if n < row.len() {
                let (id, v) = &row[n];
                return Some((id, v));
            }
            n -= row.len();
        }
        None
    }

    /// Up to `k` nodes close to `target`, in the JS order: the target's own row and the
    /// rows sharing fewer bits with us (nearest first), then the rows sharing more.
    /// Within a row nodes come in id order.
    pub fn closest(&self, target: &NodeId, k: usize) -> Vec<(&NodeId, &T)> {
        let mut out = Vec::with_capacity(k.min(self.size));
        let d = self.row_index(target);
        let rows = (0..=d).rev().chain(d + 1..ROWS);
        for i in rows {
            if out.len() >= k {
                break;
            }
            let missing = (k - out.len()).min(self.rows[i].len());
            out.extend(self.rows[i][..missing].iter().map(|(id, v)| (id, v)));
        }
        out
    }

    /// Every node, in `closest(our id)` order (the JS `toArray()`).
    pub fn to_vec(&self) -> Vec<(&NodeId, &T)> {
        self.closest(&self.id, usize::MAX)
    }

    /// Consumes the table into its nodes in [`RoutingTable::to_vec`] order.
    pub fn into_vec(self) -> Vec<(NodeId, T)> {
        let mut rows = self.rows;
        let mut out = Vec::with_capacity(self.size);
        for i in (0..ROWS).rev() {
            out.append(&mut rows[i]);
        }
        out
    }
}

/// Orders two ids by XOR distance to `target` (the query's `_compare`).
pub fn cmp_distance(target: &NodeId, a: &NodeId, b: &NodeId) -> std::cmp::Ordering {
    for i in 0..32 {
        if a[i] != b[i] {
            return (target[i] ^ a[i]).cmp(&(target[i] ^ b[i]));
        }
    }
    std::cmp::Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_with(prefix: &[u8], last: u8) -> NodeId {
        let mut id = [0u8; 32];
        id[..prefix.len()].copy_from_slice(prefix);
        id[31] = last;
        id
    }

    #[test]
    fn row_index_counts_shared_bits() {
        let t: RoutingTable<()> = RoutingTable::new([0; 32]);
        assert_eq!(t.row_index(&id_with(&[0x80], 0)), 0);
        assert_eq!(t.row_index(&id_with(&[0x01], 0)), 7);
        assert_eq!(t.row_index(&id_with(&[0, 0x40], 0)), 9);
        assert_eq!(t.row_index(&id_with(&[], 1)), 255);
        assert_eq!(t.row_index(&[0; 32]), 255);
    }

    #[test]
    fn add_get_remove_and_full_rows() {
        let mut t = RoutingTable::with_k([0; 32], 3);
        for last in [5u8, 1, 3] {
            assert_eq!(t.add(id_with(&[0x80], last), last), AddOutcome::Inserted);
        }
        assert_eq!(t.add(id_with(&[0x80], 3), 33), AddOutcome::Replaced);
        assert_eq!(t.add(id_with(&[0x80], 9), 9), AddOutcome::RowFull(0));
        assert_eq!(t.len(), 3);
        let row: Vec<u8> = t.row(0).iter().map(|(_, v)| *v).collect();
        assert_eq!(row, vec![1, 33, 5], "rows are sorted by id");
        assert_eq!(t.get(&id_with(&[0x80], 3)), Some(&33));
        assert_eq!(t.remove(&id_with(&[0x80], 3)), Some(33));
        assert_eq!(t.remove(&id_with(&[0x80], 3)), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.add(id_with(&[0x80], 9), 9), AddOutcome::Inserted);
    }

    #[test]
    fn closest_walks_rows_like_js() {
        // Our id is zero. Row 0 = ids starting with bit 1, row 1 = 01..., row 2 = 001...
        let mut t = RoutingTable::new([0; 32]);
        let a = id_with(&[0x80], 2); // row 0
        let b = id_with(&[0x80], 1); // row 0
        let c = id_with(&[0x40], 0); // row 1
        let d = id_with(&[0x20], 0); // row 2
        for (i, id) in [a, b, c, d].into_iter().enumerate() {
            t.add(id, i);
        }
        // Target in row 1: row 1, then row 0 (fewer shared bits), then rows > 1.
        let target = id_with(&[0x41], 0);
        let got: Vec<usize> = t
            .closest(&target, 20)
            .into_iter()
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(got, vec![2, 1, 0, 3]);
        let got: Vec<usize> = t.closest(&target, 2).into_iter().map(|(_, v)| *v).collect();
        assert_eq!(got, vec![2, 1]);
        // toArray = closest(our id): row 255 down to 0.
        let all: Vec<usize> = t.to_vec().into_iter().map(|(_, v)| *v).collect();
        assert_eq!(all, vec![3, 2, 1, 0]);
        let consumed: Vec<usize> = t.clone().into_vec().into_iter().map(|(_, v)| v).collect();
        assert_eq!(consumed, all);
        assert_eq!(t.nth(0).map(|(_, v)| *v), Some(1));
        assert_eq!(t.nth(3).map(|(_, v)| *v), Some(3));
        assert!(t.nth(4).is_none());
    }

    #[test]
    fn distance_order() {
        let target = [0u8; 32];
        let near = id_with(&[0x01], 0);
        let far = id_with(&[0x80], 0);
        assert_eq!(cmp_distance(&target, &near, &far), std::cmp::Ordering::Less);
        assert_eq!(cmp_distance(&far, &near, &far), std::cmp::Ordering::Greater);
        assert_eq!(
            cmp_distance(&target, &near, &near),
            std::cmp::Ordering::Equal
        );
    }
}
