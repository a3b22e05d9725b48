//! The state commitment: a compact sparse Merkle tree over the subnet state. Pure: the
//! tree's upper levels are a value in memory ([`TopTree`]); the keys below them are kept
//! by the caller in buckets it reads and writes as a whole.
//!
//! Every state key sits at the 256-bit path `BLAKE2b-256(key)`. A subtree holding no key
//! is empty (hash: 32 zero bytes); a subtree holding exactly one key is that key's *leaf*
//! (however high it sits); every other subtree is an *internal* node over its two halves
//! (bit `depth` of the path picks the half: 0 left, 1 right).
//!
//! ```text
//! leaf     = BLAKE2b-256(0x00 · path(32) · BLAKE2b-256(value JSON))
//! internal = BLAKE2b-256(0x01 · left(32) · right(32))
//! root     = the hash of the whole tree (zeros for an empty state)
//! ```
//!
//! The root is a function of the set of (key, value) pairs alone, whatever order they were
//! written in. Storage: the 2^18 subtrees at depth [`BUCKET_DEPTH`] are *buckets*, each
//! stored as one sorted list of its keys' (path, value hash); the 19 levels above them are
//! held in memory as a complete binary tree of subtree summaries (up to 17 MB, only the
//! parts above non-empty buckets resident), rebuilt on start from one stored summary per
//! bucket. Writing a key rewrites its bucket (about n / 262,144 keys) and re-hashes its
//! bucket's subtree and the 18 summaries above it, so an update costs about the same at a
//! thousand keys and at a million. A [`Proof`] is the sibling
//! hashes from the root down to where the key's path ends (its leaf, another key's leaf,
//! or an empty subtree): it proves a value, or the absence of any value, against a root.

use std::collections::BTreeMap;

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// The hash of an empty subtree.
pub const EMPTY: Hash = [0; 32];

/// Depth of the buckets: the subtrees stored as one record each (2^18 of them: about
/// 4 keys each at a million keys, 40 at ten million).
pub const BUCKET_DEPTH: u16 = 18;

/// How many buckets there are.
pub const BUCKETS: usize = 1 << BUCKET_DEPTH;

/// Deepest a path goes.
const MAX_DEPTH: u16 = 256;

fn blake2b(parts: &[&[u8]]) -> Hash {
    thread_local! {
        // Parameter setup done once; each hash starts from a copy.
        static BASE: blake2b_simd::State = blake2b_simd::Params::new().hash_length(32).to_state();
    }
    let mut state = BASE.with(Clone::clone);
    for p in parts {
        state.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(state.finalize().as_bytes());
    out
}

/// Where a key sits in the tree: `BLAKE2b-256(key)`.
pub fn key_path(key: &[u8]) -> Hash {
    blake2b(&[key])
}

/// The hash a value is committed as: `BLAKE2b-256` of its stored bytes.
pub fn value_hash(value: &[u8]) -> Hash {
    blake2b(&[value])
}

fn leaf_hash(path: &Hash, value: &Hash) -> Hash {
    blake2b(&[&[0u8], path, value])
}

fn internal_hash(left: &Hash, right: &Hash) -> Hash {
    blake2b(&[&[1u8], left, right])
}

/// Bit `i` (0 = most significant of byte 0) of a path.
fn bit(path: &Hash, i: u16) -> bool {
    path[usize::from(i / 8)] & (0x80 >> (i % 8)) != 0
}

/// The bucket a path falls in: its first [`BUCKET_DEPTH`] bits.
pub fn bucket_of(path: &Hash) -> u32 {
    u32::from_be_bytes([0, path[0], path[1], path[2]]) >> (24 - BUCKET_DEPTH)
}

/// One key in a bucket: its path and its value's hash.
pub type Leaf = (Hash, Hash);

/// A subtree as its parent sees it: its hash and whether it holds no key, one key (its
/// hash is then that key's leaf) or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The subtree's hash.
    pub hash: Hash,
    /// 0, 1, or 2 for two or more keys.
    pub count: u8,
}

impl Summary {
    /// An empty subtree.
    pub const EMPTY: Summary = Summary {
        hash: EMPTY,
        count: 0,
    };

    fn leaf(path: &Hash, value: &Hash) -> Summary {
        Summary {
            hash: leaf_hash(path, value),
            count: 1,
        }
    }

    /// The summary of a node over two halves (a lone leaf moves up).
    fn combine(left: &Summary, right: &Summary) -> Summary {
        match (left.count, right.count) {
            (0, 0) => Summary::EMPTY,
            (0, 1) => *right,
            (1, 0) => *left,
            _ => Summary {
                hash: internal_hash(&left.hash, &right.hash),
                count: 2,
            },
        }
    }

    /// Stored form: the count byte and the hash.
    pub fn encode(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[0] = self.count;
        out[1..].copy_from_slice(&self.hash);
        out
    }

    /// Parses [`Summary::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Option<Summary> {
        let (&count, hash) = bytes.split_first()?;
        (count <= 2).then_some(())?;
        Some(Summary {
            count,
            hash: hash.try_into().ok()?,
        })
    }
}

/// The summary of the subtree at `depth` holding `leaves` (sorted by path, distinct,
/// sharing their first `depth` bits).
pub fn subtree(depth: u16, leaves: &[Leaf]) -> Summary {
    match leaves {
        [] => Summary::EMPTY,
        [(path, value)] => Summary::leaf(path, value),
        _ if depth >= MAX_DEPTH => Summary::EMPTY, // unreachable: distinct paths
        _ => {
            let split = leaves.partition_point(|(p, _)| !bit(p, depth));
            Summary::combine(
                &subtree(depth + 1, &leaves[..split]),
                &subtree(depth + 1, &leaves[split..]),
            )
        }
    }
}

#[cfg(test)]
/// Applies `changes` (path → new value hash, `None` removes; sorted, distinct) to a
/// bucket's sorted leaves.
fn apply_changes(leaves: &[Leaf], changes: &[(Hash, Option<Hash>)]) -> Vec<Leaf> {
    let mut out = Vec::with_capacity(leaves.len() + changes.len());
    let (mut i, mut j) = (0, 0);
    while i < leaves.len() || j < changes.len() {
        match (leaves.get(i), changes.get(j)) {
            (Some(l), Some(c)) if l.0 < c.0 => {
                out.push(*l);
                i += 1;
            }
            (Some(l), Some(c)) if l.0 == c.0 => {
                if let Some(v) = c.1 {
                    out.push((c.0, v));
                }
                i += 1;
                j += 1;
            }
            (_, Some(c)) => {
                if let Some(v) = c.1 {
                    out.push((c.0, v));
                }
                j += 1;
            }
            (Some(l), None) => {
                out.push(*l);
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
/// A bucket's stored form: its leaves, 64 bytes each, in path order.
fn encode_bucket(leaves: &[Leaf]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * leaves.len());
    for (path, value) in leaves {
        out.extend_from_slice(path);
        out.extend_from_slice(value);
    }
    out
}

#[cfg(test)]
/// Parses [`encode_bucket`]'s output; `None` unless it is whole leaves of `bucket` in
/// strictly increasing path order.
fn decode_bucket(bucket: u32, bytes: &[u8]) -> Option<Vec<Leaf>> {
    if !bytes.len().is_multiple_of(64) {
        return None;
    }
    let mut out: Vec<Leaf> = Vec::with_capacity(bytes.len() / 64);
    for chunk in bytes.chunks_exact(64) {
        let (p, v) = chunk.split_at(32);
        let path: Hash = p.try_into().ok()?;
        if bucket_of(&path) != bucket || out.last().is_some_and(|(last, _)| *last >= path) {
            return None;
        }
        out.push((path, v.try_into().ok()?));
    }
    Some(out)
}

/// The levels above the buckets, in memory: a complete binary tree of summaries, the
/// buckets' at its bottom. Small trees keep only their non-empty nodes in a map; past
/// [`DENSE_AFTER`] non-empty nodes the tree moves to two flat arrays (at most 17 MB,
/// allocated zeroed so that pages above empty buckets are never touched).
#[derive(Clone)]
pub struct TopTree {
    nodes: Nodes,
}

#[derive(Clone)]
enum Nodes {
    /// Non-empty nodes by slot.
    Sparse(std::collections::HashMap<usize, Summary>),
    /// Every node by slot: `(hashes, counts)`.
    Dense(Vec<Hash>, Vec<u8>),
}

/// Non-empty nodes a sparse tree holds before it turns dense.
const DENSE_AFTER: usize = 1 << 16;

impl std::fmt::Debug for TopTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopTree({})", hex::encode(self.root()))
    }
}

impl Default for TopTree {
    fn default() -> Self {
        TopTree {
            nodes: Nodes::Sparse(std::collections::HashMap::new()),
        }
    }
}

/// Node `(depth, index)`'s slot: `(1 << depth) - 1 + index`.
fn slot(depth: u16, index: usize) -> usize {
    (1usize << depth) - 1 + index
}

impl TopTree {
    /// A tree over the given bucket summaries (the others empty).
    pub fn load(buckets: impl IntoIterator<Item = (u32, Summary)>) -> TopTree {
        let mut tree = TopTree::default();
        tree.set_buckets(&buckets.into_iter().collect());
        tree
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        self.node(0, 0).hash
    }

    /// The summary of node `index` at `depth` (at most [`BUCKET_DEPTH`]).
    pub fn node(&self, depth: u16, index: usize) -> Summary {
        let at = slot(depth, index);
        match &self.nodes {
            Nodes::Sparse(map) => map.get(&at).copied().unwrap_or(Summary::EMPTY),
            Nodes::Dense(hashes, counts) => Summary {
                hash: hashes[at],
                count: counts[at],
            },
        }
    }

    fn set(&mut self, depth: u16, index: usize, s: Summary) {
        let at = slot(depth, index);
        match &mut self.nodes {
            Nodes::Sparse(map) => {
                if s.count == 0 {
                    map.remove(&at);
                } else {
                    map.insert(at, s);
                }
                if map.len() > DENSE_AFTER {
                    let mut hashes = vec![EMPTY; (BUCKETS << 1) - 1];
                    let mut counts = vec![0u8; (BUCKETS << 1) - 1];
                    for (at, s) in map.drain() {
                        hashes[at] = s.hash;
                        counts[at] = s.count;
                    }
                    self.nodes = Nodes::Dense(hashes, counts);
                }
            }
            Nodes::Dense(hashes, counts) => {
                // Leave untouched (unallocated) pages alone when nothing changes.
                if counts[at] != s.count || hashes[at] != s.hash {
                    hashes[at] = s.hash;
                    counts[at] = s.count;
                }
            }
        }
    }

    /// A bucket's summary.
    pub fn bucket(&self, b: u32) -> Summary {
        self.node(BUCKET_DEPTH, b as usize)
    }

    /// Sets bucket summaries and re-hashes the nodes above them.
    pub fn set_buckets(&mut self, changes: &BTreeMap<u32, Summary>) {
        let mut dirty: Vec<usize> = Vec::with_capacity(changes.len());
        for (b, s) in changes {
            self.set(BUCKET_DEPTH, *b as usize, *s);
            dirty.push(*b as usize);
        }
        for depth in (0..BUCKET_DEPTH).rev() {
            for index in dirty.iter_mut() {
                *index /= 2;
            }
            dirty.dedup();
            for &index in &dirty {
                let s = Summary::combine(
                    &self.node(depth + 1, 2 * index),
                    &self.node(depth + 1, 2 * index + 1),
                );
                self.set(depth, index, s);
            }
        }
    }

    /// The root the tree would have with `changes` (nothing changes).
    pub fn root_with(&self, changes: &BTreeMap<u32, Summary>) -> Hash {
        let mut level: BTreeMap<usize, Summary> =
            changes.iter().map(|(b, s)| (*b as usize, *s)).collect();
        for depth in (0..BUCKET_DEPTH).rev() {
            let mut up = BTreeMap::new();
            for &index in level.keys() {
                let parent = index / 2;
                if up.contains_key(&parent) {
                    continue;
                }
                let child = |i: usize| {
                    level
                        .get(&i)
                        .copied()
                        .unwrap_or_else(|| self.node(depth + 1, i))
                };
                up.insert(
                    parent,
                    Summary::combine(&child(2 * parent), &child(2 * parent + 1)),
                );
            }
            level = up;
        }
        level.get(&0).map_or(self.root(), |s| s.hash)
    }
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

/// The proof for the key at `path`: the top levels from `top`, the rest from the bucket
/// `read_bucket` returns (its sorted leaves), read only if the path goes that deep.
pub fn prove<E>(
    top: &TopTree,
    path: &Hash,
    read_bucket: impl FnOnce(u32) -> Result<Vec<Leaf>, E>,
) -> Result<Proof, E> {
    let mut siblings = Vec::new();
    let mut depth = 0u16;
    let mut index = 0usize;
    loop {
        let here = top.node(depth, index);
        match here.count {
            0 => {
                return Ok(Proof {
                    siblings,
                    terminal: Terminal::Empty,
                })
            }
            1 => {
                // A lone key: follow the non-empty side down to its bucket.
                while depth < BUCKET_DEPTH {
                    depth += 1;
                    index *= 2;
                    if top.node(depth, index).count == 0 {
                        index += 1;
                    }
                }
                let leaves = read_bucket(index as u32)?;
                return Ok(Proof {
                    siblings,
                    terminal: match leaves.first() {
                        Some((path, value)) => Terminal::Leaf {
                            path: *path,
                            value: *value,
                        },
                        None => Terminal::Empty,
                    },
                });
            }
            _ if depth == BUCKET_DEPTH => break,
            _ => {
                let right = bit(path, depth);
                siblings.push(top.node(depth + 1, 2 * index + usize::from(!right)).hash);
                index = 2 * index + usize::from(right);
                depth += 1;
            }
        }
    }
    let leaves = read_bucket(index as u32)?;
    let mut part: &[Leaf] = &leaves;
    loop {
        match part {
            [] => {
                return Ok(Proof {
                    siblings,
                    terminal: Terminal::Empty,
                })
            }
            [(p, v)] => {
                return Ok(Proof {
                    siblings,
                    terminal: Terminal::Leaf {
                        path: *p,
                        value: *v,
                    },
                })
            }
            _ if depth >= MAX_DEPTH => {
                return Ok(Proof {
                    siblings,
                    terminal: Terminal::Empty,
                })
            }
            _ => {
                let split = part.partition_point(|(p, _)| !bit(p, depth));
                let (left, right) = part.split_at(split);
                let (ours, other) = if bit(path, depth) {
                    (right, left)
                } else {
                    (left, right)
                };
                siblings.push(subtree(depth + 1, other).hash);
                part = ours;
                depth += 1;
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

    /// A state kept as the store keeps it: buckets of leaves and the top tree.
    #[derive(Default)]
    struct Mem {
        buckets: BTreeMap<u32, Vec<Leaf>>,
        top: TopTree,
    }

    impl Mem {
        fn apply(&mut self, changes: &BTreeMap<Hash, Option<Hash>>) -> Hash {
            let mut by_bucket: BTreeMap<u32, Vec<(Hash, Option<Hash>)>> = BTreeMap::new();
            for (p, v) in changes {
                by_bucket.entry(bucket_of(p)).or_default().push((*p, *v));
            }
            let mut summaries = BTreeMap::new();
            for (b, ch) in by_bucket {
                let old = self.buckets.remove(&b).unwrap_or_default();
                let new = apply_changes(&old, &ch);
                summaries.insert(b, subtree(BUCKET_DEPTH, &new));
                if !new.is_empty() {
                    self.buckets.insert(b, new);
                }
            }
            let predicted = self.top.root_with(&summaries);
            self.top.set_buckets(&summaries);
            assert_eq!(predicted, self.top.root());
            self.top.root()
        }

        fn prove(&self, path: &Hash) -> Proof {
            prove::<()>(&self.top, path, |b| {
                Ok(self.buckets.get(&b).cloned().unwrap_or_default())
            })
            .unwrap()
        }
    }

    fn reference_root(leaves: &BTreeMap<Hash, Hash>) -> Hash {
        let v: Vec<Leaf> = leaves.iter().map(|(p, v)| (*p, *v)).collect();
        fn sub(depth: u16, leaves: &[Leaf]) -> Hash {
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

    /// A path in bucket 0x1234 · 0b01 with the given tail, to crowd one bucket.
    fn crowded(n: u8) -> Hash {
        let mut p = key_path(&[n]);
        p[0] = 0x12;
        p[1] = 0x34;
        p[2] = 0x40 | (p[2] & 0x3f);
        p
    }

    const CROWDED: u32 = (0x1234 << 2) | 1;

    #[test]
    fn incremental_updates_match_the_definition() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..30 {
            let mut tree = Mem::default();
            let mut model: BTreeMap<Hash, Hash> = BTreeMap::new();
            for _ in 0..30 {
                let mut changes = BTreeMap::new();
                for _ in 0..(rng.next() % 12) {
                    let path = if rng.next().is_multiple_of(3) {
                        crowded((rng.next() % 16) as u8)
                    } else {
                        key_path(&key(rng.next() % 64))
                    };
                    let value = (!rng.next().is_multiple_of(3))
                        .then(|| value_hash(&rng.next().to_le_bytes()));
                    changes.insert(path, value);
                }
                for (p, v) in &changes {
                    match v {
                        Some(v) => model.insert(*p, *v),
                        None => model.remove(p),
                    };
                }
                assert_eq!(
                    tree.apply(&changes),
                    reference_root(&model),
                    "round {round}"
                );
                let held: usize = tree.buckets.values().map(Vec::len).sum();
                assert_eq!(held, model.len());
            }
            // Reloading the top tree from the bucket summaries gives the same root, sparse
            // or dense.
            let reloaded = TopTree::load(
                tree.buckets
                    .iter()
                    .map(|(b, l)| (*b, subtree(BUCKET_DEPTH, l))),
            );
            assert_eq!(reloaded.root(), tree.top.root());
        }
    }

    #[test]
    fn a_tree_turning_dense_keeps_its_root() {
        let mut tree = Mem::default();
        let mut model = BTreeMap::new();
        // Enough buckets for more than DENSE_AFTER non-empty nodes.
        for n in 0..12_000u64 {
            let p = key_path(&key(n));
            model.insert(p, value_hash(&n.to_le_bytes()));
        }
        let changes = model.iter().map(|(p, v)| (*p, Some(*v))).collect();
        let root = tree.apply(&changes);
        assert!(matches!(tree.top.nodes, Nodes::Dense(..)));
        assert_eq!(root, reference_root(&model));
        let some: BTreeMap<Hash, Option<Hash>> =
            model.keys().take(5000).map(|p| (*p, None)).collect();
        for p in some.keys() {
            model.remove(p);
        }
        assert_eq!(tree.apply(&some), reference_root(&model));
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
        assert_eq!(b.apply(&all), a.top.root());
        let none: BTreeMap<Hash, Option<Hash>> = keys.iter().map(|k| (*k, None)).collect();
        assert_eq!(a.apply(&none), EMPTY);
        assert!(a.buckets.is_empty());
    }

    #[test]
    fn proofs_of_values_and_absences_verify_and_wrong_claims_do_not() {
        for crowd in [false, true] {
            let mut tree = Mem::default();
            let mut changes = BTreeMap::new();
            let mut keys = Vec::new();
            for n in 0..300u64 {
                let k = key(n);
                changes.insert(key_path(&k), Some(value_hash(&n.to_le_bytes())));
                keys.push(k);
            }
            if crowd {
                for n in 0..20u8 {
                    changes.insert(crowded(n), Some(value_hash(&[n])));
                }
            }
            let root = tree.apply(&changes);
            for (n, k) in keys.iter().enumerate() {
                let value = (n as u64).to_le_bytes();
                let proof = tree.prove(&key_path(k));
                verify(&root, k, Some(&value), &proof).unwrap();
                assert_eq!(
                    verify(&root, k, Some(b"other"), &proof),
                    Err(ProofError::WrongValue)
                );
                assert_eq!(verify(&root, k, None, &proof), Err(ProofError::Present));
                let mut bent = proof.clone();
                if let Some(s) = bent.siblings.first_mut() {
                    s[0] ^= 1;
                    assert_eq!(
                        verify(&root, k, Some(&value), &bent),
                        Err(ProofError::RootMismatch)
                    );
                }
            }
            let mut kinds = (0, 0);
            for n in 300..700u64 {
                let k = key(n);
                let proof = tree.prove(&key_path(&k));
                match proof.terminal {
                    Terminal::Empty => kinds.0 += 1,
                    Terminal::Leaf { .. } => kinds.1 += 1,
                }
                verify(&root, &k, None, &proof).unwrap();
                assert_eq!(
                    verify(&root, &k, Some(b"x"), &proof),
                    Err(ProofError::WrongValue)
                );
            }
            assert!(
                kinds.0 > 0 && kinds.1 > 0,
                "both kinds of absence: {kinds:?}"
            );
        }
        // A tiny tree: the lone key's leaf is the root; another key's proof ends there.
        let mut tiny = Mem::default();
        let root = tiny.apply(&BTreeMap::from([(
            key_path(b"only"),
            Some(value_hash(b"1")),
        )]));
        let proof = tiny.prove(&key_path(b"only"));
        assert!(proof.siblings.is_empty());
        verify(&root, b"only", Some(b"1"), &proof).unwrap();
        verify(&root, b"other", None, &tiny.prove(&key_path(b"other"))).unwrap();
        let empty = Mem::default();
        let proof = empty.prove(&key_path(b"x"));
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
    fn buckets_and_summaries_round_trip_and_bad_bytes_are_refused() {
        let mut leaves: Vec<Leaf> = (0..5u8).map(|n| (crowded(n), [n; 32])).collect();
        leaves.sort();
        let bytes = encode_bucket(&leaves);
        assert_eq!(decode_bucket(CROWDED, &bytes), Some(leaves.clone()));
        assert_eq!(
            decode_bucket(CROWDED + 1, &bytes),
            None,
            "another bucket's leaves"
        );
        assert_eq!(decode_bucket(CROWDED, &bytes[..63]), None);
        let mut unsorted = leaves.clone();
        unsorted.swap(0, 1);
        assert_eq!(decode_bucket(CROWDED, &encode_bucket(&unsorted)), None);
        assert!(leaves.iter().all(|(p, _)| bucket_of(p) == CROWDED));
        let s = subtree(BUCKET_DEPTH, &leaves);
        assert_eq!(Summary::decode(&s.encode()), Some(s));
        assert_eq!(Summary::decode(&[3; 33]), None);
        assert_eq!(Summary::decode(&[1; 32]), None);
    }

    #[test]
    fn blake2b_simd_hashes_as_libsodium_does() {
        let data = b"intercom state";
        assert_eq!(
            blake2b(&[data]),
            intercom_crypto::blake2b_256(&[data], None)
        );
        assert_eq!(
            leaf_hash(&[1; 32], &[2; 32]),
            intercom_crypto::blake2b_256(&[&[0], &[1; 32], &[2; 32]], None)
        );
    }
}
