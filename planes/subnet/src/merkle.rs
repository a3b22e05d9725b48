//! The state commitment: a compact sparse Merkle tree over the subnet state, pure and
//! sans-io (nodes are read through [`NodeSource`]; an update returns the node writes).
//!
//! Every state key sits at the 256-bit path `BLAKE2b-256(key)`. A subtree holding no key
//! is empty (hash: 32 zero bytes); a subtree holding exactly one key is that key's *leaf*,
//! stored at the top of the subtree; every other subtree is an *internal* node over its
//! two halves (bit `depth` of the path picks the half: 0 left, 1 right).
//!
//! ```text
//! leaf     = BLAKE2b-256(0x00 · path(32) · BLAKE2b-256(value JSON))
//! internal = BLAKE2b-256(0x01 · left(32) · right(32))
//! root     = the hash of the node at depth 0 (zeros for an empty state)
//! ```
//!
//! The tree is a function of the set of (key, value) pairs alone, whatever order they
//! were written in, and an update touching k keys of n reads and rewrites about
//! k·log2(n) nodes. A [`Proof`] is the sibling hashes from the root down to where the
//! key's path ends (its leaf, another key's leaf, or an empty subtree): it proves a
//! value, or the absence of any value, against a root.

use std::collections::BTreeMap;

use intercom_crypto::blake2b_256;

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// The hash of an empty subtree.
pub const EMPTY: Hash = [0; 32];

/// Deepest a node can sit: two different paths differ within 256 bits.
const MAX_DEPTH: u16 = 256;

/// Where a key sits in the tree: `BLAKE2b-256(key)`.
pub fn key_path(key: &[u8]) -> Hash {
    blake2b_256(&[key], None)
}

/// The hash a value is committed as: `BLAKE2b-256` of its stored bytes.
pub fn value_hash(value: &[u8]) -> Hash {
    blake2b_256(&[value], None)
}

fn leaf_hash(path: &Hash, value: &Hash) -> Hash {
    blake2b_256(&[&[0u8], path, value], None)
}

fn internal_hash(left: &Hash, right: &Hash) -> Hash {
    blake2b_256(&[&[1u8], left, right], None)
}

/// Bit `i` (0 = most significant of byte 0) of a path.
fn bit(path: &Hash, i: u16) -> bool {
    path[usize::from(i / 8)] & (0x80 >> (i % 8)) != 0
}

/// A node's place: its depth and the first `depth` bits of the paths below it (the other
/// bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Distance from the root.
    pub depth: u16,
    /// The path prefix, zero past `depth` bits.
    pub prefix: Hash,
}

impl Location {
    /// The root's place.
    pub const ROOT: Location = Location {
        depth: 0,
        prefix: EMPTY,
    };

    /// The left (`false`) or right (`true`) child's place.
    pub fn child(&self, right: bool) -> Location {
        let mut prefix = self.prefix;
        if right {
            prefix[usize::from(self.depth / 8)] |= 0x80 >> (self.depth % 8);
        }
        Location {
            depth: self.depth + 1,
            prefix,
        }
    }

    /// Stored form: depth (u16 big-endian) and the prefix's significant bytes.
    pub fn encode(&self) -> Vec<u8> {
        let bytes = usize::from(self.depth).div_ceil(8);
        let mut out = Vec::with_capacity(2 + bytes);
        out.extend_from_slice(&self.depth.to_be_bytes());
        out.extend_from_slice(&self.prefix[..bytes]);
        out
    }
}

/// A stored node (empty subtrees are not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The only key of its subtree.
    Leaf {
        /// The key's path.
        path: Hash,
        /// Its value's hash.
        value: Hash,
    },
    /// A subtree of two or more keys.
    Internal {
        /// The left half's hash.
        left: Hash,
        /// The right half's hash.
        right: Hash,
    },
}

/// Why a stored node could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// A node's bytes are not a node.
    #[error("state tree node at depth {depth} is corrupt: {why}")]
    Corrupt {
        /// Where.
        depth: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// An internal node names a child that is not stored.
    #[error("state tree node at depth {0} is missing")]
    Missing(u16),
    /// Reading the store failed.
    #[error("reading the state tree failed: {0}")]
    Store(String),
}

impl Node {
    /// The node's hash.
    pub fn hash(&self) -> Hash {
        match self {
            Node::Leaf { path, value } => leaf_hash(path, value),
            Node::Internal { left, right } => internal_hash(left, right),
        }
    }

    /// Stored form: a tag byte (0 leaf, 1 internal) and two hashes.
    pub fn encode(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        let (tag, a, b) = match self {
            Node::Leaf { path, value } => (0, path, value),
            Node::Internal { left, right } => (1, left, right),
        };
        out[0] = tag;
        out[1..33].copy_from_slice(a);
        out[33..].copy_from_slice(b);
        out
    }

    /// Parses [`Node::encode`]'s output.
    pub fn decode(bytes: &[u8], depth: u16) -> Result<Node, MerkleError> {
        let corrupt = |why| MerkleError::Corrupt { depth, why };
        if bytes.len() != 65 {
            return Err(corrupt("wrong length"));
        }
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a.copy_from_slice(&bytes[1..33]);
        b.copy_from_slice(&bytes[33..]);
        match bytes[0] {
            0 => Ok(Node::Leaf { path: a, value: b }),
            1 => Ok(Node::Internal { left: a, right: b }),
            _ => Err(corrupt("unknown tag")),
        }
    }
}

/// Where nodes are read from.
pub trait NodeSource {
    /// The node stored at `at`, if any.
    fn node(&self, at: &Location) -> Result<Option<Node>, MerkleError>;
}

/// One half of an internal node during an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    /// Untouched: its hash.
    Kept(Hash),
    /// Updated: its new node.
    New(Option<Node>),
}

impl Half {
    fn is_empty(&self) -> bool {
        match self {
            Half::Kept(h) => *h == EMPTY,
            Half::New(n) => n.is_none(),
        }
    }

    fn hash(&self) -> Hash {
        match self {
            Half::Kept(h) => *h,
            Half::New(n) => n.map_or(EMPTY, |n| n.hash()),
        }
    }
}

/// Node writes an update makes: `None` removes the node stored there.
pub type NodeWrites = BTreeMap<Location, Option<Node>>;

/// A source seen through pending writes (the writes win).
struct Overlay<'a, S: ?Sized> {
    base: &'a S,
    writes: NodeWrites,
}

impl<S: NodeSource + ?Sized> Overlay<'_, S> {
    fn node(&self, at: &Location) -> Result<Option<Node>, MerkleError> {
        match self.writes.get(at) {
            Some(n) => Ok(*n),
            None => self.base.node(at),
        }
    }

    /// The child at `at` whose hash its parent records as `hash`.
    fn child(&self, at: &Location, hash: &Hash) -> Result<Option<Node>, MerkleError> {
        if *hash == EMPTY {
            return Ok(None);
        }
        match self.node(at)? {
            Some(n) => Ok(Some(n)),
            None => Err(MerkleError::Missing(at.depth)),
        }
    }

    /// Applies `changes` (sorted by path, distinct, all under `at`) to the subtree at
    /// `at`, whose current node is `current`; returns its new node and records the
    /// writes of everything below and at `at`.
    fn update(
        &mut self,
        at: Location,
        current: Option<Node>,
        changes: &[(Hash, Option<Hash>)],
    ) -> Result<Option<Node>, MerkleError> {
        if changes.is_empty() {
            return Ok(current);
        }
        let result = match current {
            None => {
                let leaves: Vec<(Hash, Hash)> = changes
                    .iter()
                    .filter_map(|(p, v)| v.map(|v| (*p, v)))
                    .collect();
                self.build(at, &leaves)?
            }
            Some(Node::Leaf { path, value }) => {
                let mut leaves: Vec<(Hash, Hash)> = Vec::with_capacity(changes.len() + 1);
                let mut placed = false;
                for (p, v) in changes {
                    if !placed && path < *p {
                        leaves.push((path, value));
                        placed = true;
                    }
                    if *p == path {
                        placed = true;
                    }
                    if let Some(v) = v {
                        leaves.push((*p, *v));
                    }
                }
                if !placed {
                    leaves.push((path, value));
                }
                self.build(at, &leaves)?
            }
            Some(Node::Internal { left, right }) => {
                if at.depth >= MAX_DEPTH {
                    return Err(MerkleError::Corrupt {
                        depth: at.depth,
                        why: "internal node below the deepest level",
                    });
                }
                let split = changes.partition_point(|(p, _)| !bit(p, at.depth));
                let (to_left, to_right) = changes.split_at(split);
                // A half without changes keeps its hash; its node is read only if the
                // other half empties (a lone leaf then moves up here).
                let mut halves = [Half::Kept(left), Half::Kept(right)];
                for (side, part) in [(false, to_left), (true, to_right)] {
                    if !part.is_empty() {
                        let child_at = at.child(side);
                        let old = self.child(&child_at, &[left, right][usize::from(side)])?;
                        halves[usize::from(side)] = Half::New(self.update(child_at, old, part)?);
                    }
                }
                let empty = halves.map(|h| h.is_empty());
                match empty {
                    [true, true] => None,
                    [false, false] => Some(Node::Internal {
                        left: halves[0].hash(),
                        right: halves[1].hash(),
                    }),
                    _ => {
                        // One half is empty: a lone leaf in the other moves up here.
                        let side = empty[0];
                        let other_at = at.child(side);
                        let other = match halves[usize::from(side)] {
                            Half::New(node) => node,
                            Half::Kept(hash) => self.child(&other_at, &hash)?,
                        };
                        match other {
                            Some(leaf @ Node::Leaf { .. }) => {
                                self.writes.insert(other_at, None);
                                Some(leaf)
                            }
                            _ => Some(Node::Internal {
                                left: halves[0].hash(),
                                right: halves[1].hash(),
                            }),
                        }
                    }
                }
            }
        };
        if result != current {
            self.writes.insert(at, result);
        }
        Ok(result)
    }

    /// A fresh subtree at `at` over `leaves` (sorted, distinct): records the nodes below
    /// `at` and returns the one for `at`.
    fn build(
        &mut self,
        at: Location,
        leaves: &[(Hash, Hash)],
    ) -> Result<Option<Node>, MerkleError> {
        match leaves {
            [] => Ok(None),
            [(path, value)] => Ok(Some(Node::Leaf {
                path: *path,
                value: *value,
            })),
            _ => {
                if at.depth >= MAX_DEPTH {
                    return Err(MerkleError::Corrupt {
                        depth: at.depth,
                        why: "two keys share a path",
                    });
                }
                let split = leaves.partition_point(|(p, _)| !bit(p, at.depth));
                let mut hashes = [EMPTY; 2];
                for (side, part) in [(false, &leaves[..split]), (true, &leaves[split..])] {
                    let child_at = at.child(side);
                    if let Some(node) = self.build(child_at, part)? {
                        self.writes.insert(child_at, Some(node));
                        hashes[usize::from(side)] = node.hash();
                    }
                }
                Ok(Some(Node::Internal {
                    left: hashes[0],
                    right: hashes[1],
                }))
            }
        }
    }
}

/// Applies `changes` (path → new value hash, `None` removes the key) to the tree stored
/// in `source`; returns the new root and the node writes that make it.
pub fn update<S: NodeSource + ?Sized>(
    source: &S,
    changes: &BTreeMap<Hash, Option<Hash>>,
) -> Result<(Hash, NodeWrites), MerkleError> {
    let mut overlay = Overlay {
        base: source,
        writes: NodeWrites::new(),
    };
    let changes: Vec<(Hash, Option<Hash>)> = changes.iter().map(|(p, v)| (*p, *v)).collect();
    let current = overlay.node(&Location::ROOT)?;
    let root = overlay.update(Location::ROOT, current, &changes)?;
    Ok((root.map_or(EMPTY, |n| n.hash()), overlay.writes))
}

/// The root hash of the tree stored in `source`.
pub fn root<S: NodeSource + ?Sized>(source: &S) -> Result<Hash, MerkleError> {
    Ok(source.node(&Location::ROOT)?.map_or(EMPTY, |n| n.hash()))
}

/// Where a key's path ends in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    /// An empty subtree: no key below.
    Empty,
    /// A leaf: the key's own (its value's hash), or another key's that shares the prefix.
    Leaf {
        /// The leaf's path.
        path: Hash,
        /// Its value's hash.
        value: Hash,
    },
}

/// A proof that a key has some value, or none, under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Sibling hashes from the root's children down to where the path ends.
    pub siblings: Vec<Hash>,
    /// What the path ends at.
    pub terminal: Terminal,
}

/// Why a proof does not prove a claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The proof ends at a leaf that is not the key's although the key has a value, or
    /// at the key's leaf with another value.
    #[error("the proof shows a different value for the key")]
    WrongValue,
    /// The proof ends at the key's own leaf, so it is not absent.
    #[error("the proof shows the key present")]
    Present,
    /// The proof ends at a leaf whose path leaves the key's path above its depth.
    #[error("the proof's leaf does not lie on the key's path")]
    OffPath,
    /// More siblings than a path has bits.
    #[error("the proof is deeper than 256 levels")]
    TooDeep,
    /// The rebuilt root is not the claimed one.
    #[error("the proof does not lead to the root")]
    RootMismatch,
}

impl Proof {
    /// JSON form: `{"siblings": [hex...], "leaf": {"path": hex, "valueHash": hex} | null}`.
    pub fn to_json(&self) -> serde_json::Value {
        let leaf = match &self.terminal {
            Terminal::Empty => serde_json::Value::Null,
            Terminal::Leaf { path, value } => serde_json::json!({
                "path": hex::encode(path),
                "valueHash": hex::encode(value),
            }),
        };
        serde_json::json!({
            "siblings": self.siblings.iter().map(hex::encode).collect::<Vec<_>>(),
            "leaf": leaf,
        })
    }

    /// Parses [`Proof::to_json`]'s output; `None` if it is not one.
    pub fn from_json(v: &serde_json::Value) -> Option<Proof> {
        let hash = |v: &serde_json::Value| -> Option<Hash> {
            hex::decode(v.as_str()?).ok()?.try_into().ok()
        };
        let siblings = v
            .get("siblings")?
            .as_array()?
            .iter()
            .map(hash)
            .collect::<Option<Vec<Hash>>>()?;
        if siblings.len() > usize::from(MAX_DEPTH) {
            return None;
        }
        let terminal = match v.get("leaf")? {
            serde_json::Value::Null => Terminal::Empty,
            leaf => Terminal::Leaf {
                path: hash(leaf.get("path")?)?,
                value: hash(leaf.get("valueHash")?)?,
            },
        };
        Some(Proof { siblings, terminal })
    }
}

/// The proof for the key at `path` in the tree stored in `source`.
pub fn prove<S: NodeSource + ?Sized>(source: &S, path: &Hash) -> Result<Proof, MerkleError> {
    let mut siblings = Vec::new();
    let mut at = Location::ROOT;
    let mut node = source.node(&at)?;
    loop {
        match node {
            None => {
                return Ok(Proof {
                    siblings,
                    terminal: Terminal::Empty,
                })
            }
            Some(Node::Leaf { path, value }) => {
                return Ok(Proof {
                    siblings,
                    terminal: Terminal::Leaf { path, value },
                })
            }
            Some(Node::Internal { left, right }) => {
                if at.depth >= MAX_DEPTH {
                    return Err(MerkleError::Corrupt {
                        depth: at.depth,
                        why: "internal node below the deepest level",
                    });
                }
                let go_right = bit(path, at.depth);
                let (next, sibling) = if go_right {
                    (right, left)
                } else {
                    (left, right)
                };
                siblings.push(sibling);
                at = at.child(go_right);
                node = if next == EMPTY {
                    None
                } else {
                    Some(source.node(&at)?.ok_or(MerkleError::Missing(at.depth))?)
                };
            }
        }
    }
}

/// Checks that `proof` shows `key` holding the value whose stored bytes are `value` (or
/// no value, for `None`) under `root`.
pub fn verify(
    root: &Hash,
    key: &[u8],
    value: Option<&[u8]>,
    proof: &Proof,
) -> Result<(), ProofError> {
    let path = key_path(key);
    if proof.siblings.len() > usize::from(MAX_DEPTH) {
        return Err(ProofError::TooDeep);
    }
    let depth = proof.siblings.len() as u16;
    let bottom = match (&proof.terminal, value) {
        (Terminal::Leaf { path: p, value: v }, Some(bytes)) => {
            if *p != path || *v != value_hash(bytes) {
                return Err(ProofError::WrongValue);
            }
            leaf_hash(p, v)
        }
        (Terminal::Empty, Some(_)) => return Err(ProofError::WrongValue),
        (Terminal::Leaf { path: p, value: v }, None) => {
            if *p == path {
                return Err(ProofError::Present);
            }
            if (0..depth).any(|i| bit(p, i) != bit(&path, i)) {
                return Err(ProofError::OffPath);
            }
            leaf_hash(p, v)
        }
        (Terminal::Empty, None) => EMPTY,
    };
    let mut hash = bottom;
    for (i, sibling) in proof.siblings.iter().enumerate().rev() {
        hash = if bit(&path, i as u16) {
            internal_hash(sibling, &hash)
        } else {
            internal_hash(&hash, sibling)
        };
    }
    if hash != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem(HashMap<Location, Node>);

    impl NodeSource for Mem {
        fn node(&self, at: &Location) -> Result<Option<Node>, MerkleError> {
            Ok(self.0.get(at).copied())
        }
    }

    impl Mem {
        fn apply(&mut self, changes: &BTreeMap<Hash, Option<Hash>>) -> Hash {
            let (root, writes) = update(self, changes).unwrap();
            for (at, node) in writes {
                match node {
                    Some(n) => self.0.insert(at, n),
                    None => self.0.remove(&at),
                };
            }
            assert_eq!(super::root(self).unwrap(), root);
            root
        }
    }

    /// The root computed from scratch, by the definition.
    fn reference_root(leaves: &BTreeMap<Hash, Hash>) -> Hash {
        fn sub(depth: u16, leaves: &[(Hash, Hash)]) -> Hash {
            match leaves {
                [] => EMPTY,
                [(p, v)] => leaf_hash(p, v),
                _ => {
                    let split = leaves.partition_point(|(p, _)| !bit(p, depth));
                    internal_hash(
                        &sub(depth + 1, &leaves[..split]),
                        &sub(depth + 1, &leaves[split..]),
                    )
                }
            }
        }
        let v: Vec<(Hash, Hash)> = leaves.iter().map(|(p, v)| (*p, *v)).collect();
        sub(0, &v)
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn key(n: u64) -> Vec<u8> {
        format!("app/k{n}").into_bytes()
    }

    #[test]
    fn incremental_updates_match_the_definition_and_leave_no_stale_nodes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..40 {
            let mut tree = Mem::default();
            let mut model: BTreeMap<Hash, Hash> = BTreeMap::new();
            for _ in 0..30 {
                let mut changes = BTreeMap::new();
                for _ in 0..(rng.next() % 12) {
                    let path = key_path(&key(rng.next() % 64));
                    let value =
                        (rng.next() % 3 != 0).then(|| value_hash(&rng.next().to_le_bytes()));
                    changes.insert(path, value);
                }
                for (p, v) in &changes {
                    match v {
                        Some(v) => model.insert(*p, *v),
                        None => model.remove(p),
                    };
                }
                let root = tree.apply(&changes);
                assert_eq!(root, reference_root(&model), "round {round}");
                // Exactly one stored leaf per key, and internal nodes only above two keys.
                let leaves = tree
                    .0
                    .values()
                    .filter(|n| matches!(n, Node::Leaf { .. }))
                    .count();
                assert_eq!(leaves, model.len());
                assert!(model.len() < 2 || tree.0.len() >= 2 * model.len() - 1);
            }
        }
    }

    #[test]
    fn the_root_does_not_depend_on_write_order() {
        let mut a = Mem::default();
        let mut b = Mem::default();
        let keys: Vec<Hash> = (0..200).map(|n| key_path(&key(n))).collect();
        for k in &keys {
            a.apply(&BTreeMap::from([(*k, Some(value_hash(k)))]));
        }
        let all: BTreeMap<Hash, Option<Hash>> = keys
            .iter()
            .rev()
            .map(|k| (*k, Some(value_hash(k))))
            .collect();
        let root_b = b.apply(&all);
        assert_eq!(root(&a).unwrap(), root_b);
        assert_eq!(a.0, b.0);
        // Removing everything again gives the empty tree.
        let none: BTreeMap<Hash, Option<Hash>> = keys.iter().map(|k| (*k, None)).collect();
        assert_eq!(a.apply(&none), EMPTY);
        assert!(a.0.is_empty());
    }

    #[test]
    fn proofs_of_values_and_absences_verify_and_wrong_claims_do_not() {
        let mut tree = Mem::default();
        let mut changes = BTreeMap::new();
        for n in 0..300u64 {
            changes.insert(key_path(&key(n)), Some(value_hash(&n.to_le_bytes())));
        }
        let root = tree.apply(&changes);
        for n in 0..300u64 {
            let k = key(n);
            let proof = prove(&tree, &key_path(&k)).unwrap();
            verify(&root, &k, Some(&n.to_le_bytes()), &proof).unwrap();
            assert_eq!(
                verify(&root, &k, Some(b"other"), &proof),
                Err(ProofError::WrongValue)
            );
            assert_eq!(verify(&root, &k, None, &proof), Err(ProofError::Present));
            let mut bent = proof.clone();
            if let Some(s) = bent.siblings.first_mut() {
                s[0] ^= 1;
                assert_eq!(
                    verify(&root, &k, Some(&n.to_le_bytes()), &bent),
                    Err(ProofError::RootMismatch)
                );
            }
        }
        let mut kinds = (0, 0);
        for n in 300..600u64 {
            let k = key(n);
            let proof = prove(&tree, &key_path(&k)).unwrap();
            match proof.terminal {
                Terminal::Empty => kinds.0 += 1,
                Terminal::Leaf { .. } => kinds.1 += 1,
            }
            verify(&root, &k, None, &proof).unwrap();
            assert_eq!(
                verify(&root, &k, Some(b"x"), &proof),
                Err(ProofError::WrongValue)
            );
            // Another key's absence proof does not prove this one absent.
            let other = prove(&tree, &key_path(&key(n + 1000))).unwrap();
            if other != proof {
                assert!(verify(&root, &k, None, &other).is_err());
            }
        }
        assert!(
            kinds.0 > 0 && kinds.1 > 0,
            "both kinds of absence: {kinds:?}"
        );
        // The empty tree: every key is absent with an empty proof.
        let empty = Mem::default();
        let proof = prove(&empty, &key_path(b"x")).unwrap();
        assert_eq!(
            proof,
            Proof {
                siblings: vec![],
                terminal: Terminal::Empty
            }
        );
        verify(&EMPTY, b"x", None, &proof).unwrap();
    }

    #[test]
    fn locations_encode_their_significant_bits() {
        let root = Location::ROOT;
        assert_eq!(root.encode(), vec![0, 0]);
        let right = root.child(true);
        assert_eq!(right.encode(), vec![0, 1, 0x80]);
        let right_left = right.child(false);
        assert_eq!(right_left.encode(), vec![0, 2, 0x80]);
        let deep = (0..9).fold(root, |l, _| l.child(true));
        assert_eq!(deep.encode(), vec![0, 9, 0xff, 0x80]);
        assert_eq!(
            Node::decode(
                &Node::Internal {
                    left: [1; 32],
                    right: [2; 32]
                }
                .encode(),
                3
            )
            .unwrap(),
            Node::Internal {
                left: [1; 32],
                right: [2; 32]
            }
        );
        assert!(Node::decode(&[7; 65], 3).is_err());
        assert!(Node::decode(&[0; 64], 3).is_err());
    }
}
