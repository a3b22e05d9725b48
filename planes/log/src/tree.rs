//! The Merkle tree of a log: node hashing, roots, the signed tree hash, and proofs.
//!
//! Pure functions over a [`NodeSource`] (whatever holds the stored nodes): proof
//! generation answers a peer's request with exactly the nodes JS hypercore would send,
//! and verification checks a peer's proof against our trusted roots the way
//! `hypercore/lib/merkle-tree.js` does, so both sides agree node for node. Seek requests
//! (byte offsets) are not supported; they are answered "not available".

use intercom_crypto::blake2b_256;

use crate::flat::{self, Iterator};
use crate::LogError;

const LEAF_TYPE: [u8; 1] = [0];
const PARENT_TYPE: [u8; 1] = [1];
const ROOT_TYPE: [u8; 1] = [2];
/// Longest path from a node to a root in a log of at most [`flat::MAX_LENGTH`] blocks.
const MAX_PROOF_DEPTH: usize = 56;

/// One tree node: a block's hash (even index) or a parent's (odd index), with the byte
/// size of the blocks under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Node {
    /// Flat-tree index.
    pub index: u64,
    /// Total bytes of the blocks it covers.
    pub size: u64,
    /// BLAKE2b-256 hash.
    pub hash: [u8; 32],
}

impl Node {
    /// The leaf node of block `block` holding `value`.
    pub fn leaf(block: u64, value: &[u8]) -> Node {
        let size = value.len() as u64;
        Node {
            index: 2 * block,
            size,
            hash: blake2b_256(&[&LEAF_TYPE, &size.to_le_bytes(), value], None),
        }
    }

    /// The leaf nodes of consecutive blocks from `first`, the same as [`Node::leaf`] on
    /// each, but hashing four values at once in the SIMD lanes (blake2b_simd's
    /// `update_many`: about twice libsodium's throughput on 4 KB blocks).
    pub fn leaves<V: AsRef<[u8]>>(first: u64, values: &[V]) -> Vec<Node> {
        let mut params = blake2b_simd::Params::new();
        params.hash_length(32);
        let mut states: Vec<blake2b_simd::State> = values
            .iter()
            .map(|v| {
                let mut state = params.to_state();
                state.update(&LEAF_TYPE);
                state.update(&(v.as_ref().len() as u64).to_le_bytes());
                state
            })
            .collect();
        blake2b_simd::many::update_many(states.iter_mut().zip(values.iter().map(AsRef::as_ref)));
        states
            .iter_mut()
            .zip(values)
            .enumerate()
            .map(|(i, (state, v))| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(state.finalize().as_bytes());
                Node {
                    index: 2 * (first + i as u64),
                    size: v.as_ref().len() as u64,
                    hash,
                }
            })
            .collect()
    }

    /// The parent node at `index` of two sibling nodes (in either order).
    pub fn parent(index: u64, a: &Node, b: &Node) -> Node {
        let (left, right) = if a.index < b.index { (a, b) } else { (b, a) };
        let size = left.size + right.size;
        Node {
            index,
            size,
            hash: blake2b_256(
                &[&PARENT_TYPE, &size.to_le_bytes(), &left.hash, &right.hash],
                None,
            ),
        }
    }
}

/// The hash over a tree's full roots that signatures cover.
pub fn tree_hash(roots: &[Node]) -> [u8; 32] {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(roots.len());
    for r in roots {
        let mut p = Vec::with_capacity(48);
        p.extend_from_slice(&r.hash);
        p.extend_from_slice(&r.index.to_le_bytes());
        p.extend_from_slice(&r.size.to_le_bytes());
        parts.push(p);
    }
    let mut slices: Vec<&[u8]> = Vec::with_capacity(roots.len() + 1);
    slices.push(&ROOT_TYPE);
    slices.extend(parts.iter().map(|p| p.as_slice()));
    blake2b_256(&slices, None)
}

/// Read access to the stored nodes of a tree.
pub trait NodeSource {
    /// The node at `index`, if stored.
    fn node(&self, index: u64) -> Result<Option<Node>, LogError>;

    /// The node at `index`, which a well-formed request guarantees is stored.
    fn required(&self, index: u64) -> Result<Node, LogError> {
        self.node(index)?.ok_or(LogError::MissingNode(index))
    }
}

/// The trusted summary of a tree: everything a signature covers, plus the signature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeHead {
    /// Fork id (bumped by truncations).
    pub fork: u64,
    /// Number of blocks.
    pub length: u64,
    /// Total bytes of all blocks.
    pub byte_length: u64,
    /// The full roots, left to right.
    pub roots: Vec<Node>,
    /// The signature over this head, as the manifest's verifier encodes it.
    pub signature: Vec<u8>,
}

impl TreeHead {
    /// The tree hash of the current roots.
    pub fn hash(&self) -> [u8; 32] {
        tree_hash(&self.roots)
    }

    /// Appends one block, returning every node that became known (the leaf and the
    /// parents completed by it), and updating the roots.
    pub fn append(&mut self, value: &[u8]) -> Vec<Node> {
        self.append_leaf(Node::leaf(self.length, value))
    }

    /// Appends the block whose leaf (hashed already) is `leaf`; as [`append`](Self::append).
    pub fn append_leaf(&mut self, leaf: Node) -> Vec<Node> {
        debug_assert_eq!(leaf.index, 2 * self.length, "leaf of the next block");
        let mut ite = Iterator::new(leaf.index);
        let mut added = Vec::with_capacity(8);
        self.append_root(leaf, &mut ite, &mut added);
        added
    }

    /// Adds a complete subtree `node` (the cursor `ite` is on it) to the right of the
    /// roots and merges equal-sized neighbours, as `appendRoot` does in JS.
    fn append_root(&mut self, node: Node, ite: &mut Iterator, added: &mut Vec<Node>) {
        self.length += ite.factor / 2;
        self.byte_length += node.size;
        self.roots.push(node);
        added.push(node);
        while self.roots.len() > 1 {
            let a = self.roots[self.roots.len() - 1];
            let b = self.roots[self.roots.len() - 2];
            if ite.sibling() != b.index {
                ite.sibling();
                break;
            }
            let parent = Node::parent(ite.parent(), &a, &b);
            added.push(parent);
            self.roots.pop();
            self.roots.pop();
            self.roots.push(parent);
        }
    }
}

/// What a peer asked to be proven (the proof part of a `request` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProofRequest {
    /// A block and how many tree levels above it the requester lacks.
    pub block: Option<(u64, u64)>,
    /// A tree node (by flat index) and the levels above it the requester lacks.
    pub hash: Option<(u64, u64)>,
    /// Grow the requester's tree from `start` by `length` blocks.
    pub upgrade: Option<(u64, u64)>,
}

/// The nodes proving a block or node up to a point the requester trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedProof {
    /// Block number (for a block) or flat index (for a hash request).
    pub index: u64,
    /// Sibling nodes from the bottom up.
    pub nodes: Vec<Node>,
}

/// The nodes and signature that grow a requester's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeProof {
    /// First block of the upgrade.
    pub start: u64,
    /// Number of blocks it proves.
    pub length: u64,
    /// Nodes connecting the requester's roots to the new roots.
    pub nodes: Vec<Node>,
    /// Roots beyond `start + length`, up to the prover's length.
    pub additional_nodes: Vec<Node>,
    /// The prover's signature over its current head.
    pub signature: Vec<u8>,
}

/// A proof as carried by a `data` message (without the block value).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proof {
    /// The prover's fork.
    pub fork: u64,
    /// Proof for a requested block.
    pub block: Option<IndexedProof>,
    /// Proof for a requested tree node.
    pub hash: Option<IndexedProof>,
    /// Upgrade to a longer tree.
    pub upgrade: Option<UpgradeProof>,
}

/// The requested node normalised: its flat index, whether its value is sent, and the
/// last block it covers.
struct Indexed {
    index: u64,
    nodes: u64,
    has_value: bool,
    last_block: u64,
}

/// Builds the proof for `req` from a tree with head `head` whose nodes `src` holds.
/// Fails with [`LogError::InvalidRequest`] when the request does not fit the tree.
pub fn generate_proof(
    head: &TreeHead,
    src: &dyn NodeSource,
    req: &ProofRequest,
) -> Result<Proof, LogError> {
    let tree_end = 2 * head.length;
    let mut proof = Proof {
        fork: head.fork,
        ..Proof::default()
    };
    if tree_end == 0 {
        return Ok(proof);
    }
    let (from, to) = match req.upgrade {
        Some((start, length)) => {
            if start >= head.length || length == 0 || length > head.length - start {
                return Err(LogError::InvalidRequest(format!(
                    "upgrade {start}+{length} does not fit length {}",
                    head.length
                )));
            }
            (2 * start, 2 * (start + length))
        }
        None => (0, tree_end),
    };
    let indexed = match (req.block, req.hash) {
        (Some((block, nodes)), _) => {
            if block >= head.length {
                return Err(LogError::InvalidRequest(format!(
                    "block {block} beyond length {}",
                    head.length
                )));
            }
            Some(Indexed {
                index: 2 * block,
                nodes,
                has_value: true,
                last_block: block,
            })
        }
        (None, Some((index, nodes))) => {
            if index >= tree_end || flat::right_span(index) >= tree_end {
                return Err(LogError::InvalidRequest(format!(
                    "node {index} beyond length {}",
                    head.length
                )));
            }
            Some(Indexed {
                index,
                nodes,
                has_value: false,
                last_block: flat::right_span(index) / 2,
            })
        }
        (None, None) => None,
    };

    let mut node_proof: Option<Vec<Node>> = None;
    let mut sub_tree = tree_end;
    if let Some(ix) = &indexed {
        let before_upgrade = match req.upgrade {
            None => true,
            Some((start, _)) => ix.last_block < start,
        };
        if before_upgrade {
            sub_tree = nodes_to_root(ix.index, ix.nodes, to)?;
            node_proof = Some(indexed_proof(src, ix, sub_tree)?);
        } else {
            sub_tree = ix.index;
        }
    }

    if let Some((start, length)) = req.upgrade {
        let mut upgrade_nodes = Vec::new();
        roots_between(from, to, |ite| {
            if node_proof.is_none() {
                if let Some(ix) = &indexed {
                    if ite.contains(sub_tree) {
                        node_proof = Some(indexed_proof(src, ix, ite.index)?);
                        return Ok(());
                    }
                }
            }
            upgrade_nodes.push(src.required(ite.index)?);
            Ok(())
        })?;
        let mut additional_nodes = Vec::new();
        if tree_end > to {
            roots_between(to, tree_end, |ite| {
                additional_nodes.push(src.required(ite.index)?);
                Ok(())
            })?;
        }
        proof.upgrade = Some(UpgradeProof {
            start,
            length,
            nodes: upgrade_nodes,
            additional_nodes,
            signature: head.signature.clone(),
        });
    }

    if let Some(ix) = &indexed {
        let nodes = node_proof.ok_or_else(|| {
            LogError::InvalidRequest("requested node is outside the upgrade".into())
        })?;
        let p = IndexedProof {
            index: if ix.has_value {
                ix.last_block
            } else {
                ix.index
            },
            nodes,
        };
        if ix.has_value {
            proof.block = Some(p);
        } else {
            proof.hash = Some(p);
        }
    }
    Ok(proof)
}

/// Calls `visit` for every node a requester holding the tree up to leaf `from` needs to
/// reach the roots of `0..to`: the siblings that connect its last root, then each
/// further root. Mirrors the walk of `upgradeProof` in JS.
fn roots_between(
    from: u64,
    to: u64,
    mut visit: impl FnMut(&Iterator) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut started = from == 0;
    let mut ite = Iterator::new(0);
    while ite.full_root(to) {
        if ite.index + ite.factor / 2 < from {
            ite.next_tree();
            continue;
        }
        if !started && ite.contains(from - 2) {
            started = true;
            let root = ite.index;
            let target = from - 2;
            ite.seek(target);
            while ite.index != root {
                ite.sibling();
                if ite.index > target {
                    visit(&ite)?;
                }
                ite.parent();
            }
            ite.next_tree();
            continue;
        }
        started = true;
        visit(&ite)?;
        ite.next_tree();
    }
    Ok(())
}

/// Climbs `nodes` levels from `index`; the result must stay inside the tree ending at
/// leaf index `tree_end`.
fn nodes_to_root(index: u64, nodes: u64, tree_end: u64) -> Result<u64, LogError> {
    let mut ite = Iterator::new(index);
    for _ in 0..nodes {
        ite.parent();
        if ite.contains(tree_end) {
            return Err(LogError::InvalidRequest("nodes is out of bounds".into()));
        }
    }
    Ok(ite.index)
}

/// The nodes proving `ix` up to the subtree root `root`: the node itself when its value
/// is not sent, then each sibling on the way up.
fn indexed_proof(src: &dyn NodeSource, ix: &Indexed, root: u64) -> Result<Vec<Node>, LogError> {
    let mut nodes = Vec::new();
    let mut ite = Iterator::new(ix.index);
    if !ix.has_value {
        nodes.push(src.required(ite.index)?);
    }
    let mut steps = 0;
    while ite.index != root {
        steps += 1;
        if steps > MAX_PROOF_DEPTH {
            return Err(LogError::InvalidRequest(
                "proof does not reach its root".into(),
            ));
        }
        ite.sibling();
        nodes.push(src.required(ite.index)?);
        ite.parent();
    }
    Ok(nodes)
}

/// A proof checked against our trusted head: the head it leads to (the same head when
/// there was no upgrade) and the nodes it proved, to be stored.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The head after applying the proof's upgrade.
    pub head: TreeHead,
    /// True when the proof grew the tree.
    pub upgraded: bool,
    /// Every node the proof established (leaves, siblings, parents, roots).
    pub nodes: Vec<Node>,
}

/// Proof nodes consumed in the order a walk expects them, with one optional extra node
/// (a root computed from a block proof) that may stand in for any of them.
struct NodeQueue<'a> {
    nodes: &'a [Node],
    next: usize,
    extra: Option<Node>,
}

impl<'a> NodeQueue<'a> {
    fn new(nodes: &'a [Node], extra: Option<Node>) -> Self {
        NodeQueue {
            nodes,
            next: 0,
            extra,
        }
    }

    fn remaining(&self) -> usize {
        self.nodes.len() - self.next + usize::from(self.extra.is_some())
    }

    fn shift(&mut self, index: u64) -> Result<Node, LogError> {
        if let Some(extra) = self.extra {
            if extra.index == index {
                self.extra = None;
                return Ok(extra);
            }
        }
        let node = self.nodes.get(self.next).ok_or_else(|| {
            LogError::InvalidProof(format!("expected node {index}, the proof has no more"))
        })?;
        if node.index != index {
            return Err(LogError::InvalidProof(format!(
                "expected node {index}, got node {}",
                node.index
            )));
        }
        self.next += 1;
        Ok(*node)
    }
}

/// Hashes a block (or node) proof up to the subtree root it claims, collecting the nodes.
fn verify_indexed(
    index: u64,
    value: Option<&[u8]>,
    nodes: &[Node],
    out: &mut Vec<Node>,
) -> Result<Node, LogError> {
    if nodes.len() > MAX_PROOF_DEPTH {
        return Err(LogError::InvalidProof(format!(
            "{} proof nodes for one path (at most {MAX_PROOF_DEPTH})",
            nodes.len()
        )));
    }
    let mut ite = Iterator::new(index);
    let mut queue = NodeQueue::new(nodes, None);
    let mut root = match value {
        Some(v) => Node::leaf(index / 2, v),
        None => queue.shift(ite.index)?,
    };
    out.push(root);
    while queue.remaining() > 0 {
        let sibling = queue.shift(ite.sibling())?;
        root = Node::parent(ite.parent(), &root, &sibling);
        out.push(sibling);
        out.push(root);
    }
    Ok(root)
}

/// Checks `proof` (with the block `value` when one was sent) against `trusted`. The
/// signature of an upgrade is not checked here; the caller verifies it over the returned
/// head with the log's manifest.
pub fn verify_proof(
    trusted: &TreeHead,
    src: &dyn NodeSource,
    proof: &Proof,
    value: Option<&[u8]>,
) -> Result<Verified, LogError> {
    let mut nodes = Vec::new();
    let mut head = trusted.clone();
    let mut unverified = match (&proof.block, &proof.hash) {
        (Some(b), _) => {
            let value =
                value.ok_or_else(|| LogError::InvalidProof("block without value".into()))?;
            if b.index >= flat::MAX_LENGTH {
                return Err(LogError::InvalidProof("block index out of range".into()));
            }
            Some(verify_indexed(
                2 * b.index,
                Some(value),
                &b.nodes,
                &mut nodes,
            )?)
        }
        (None, Some(h)) => {
            if h.index >= flat::MAX_INDEX {
                return Err(LogError::InvalidProof("node index out of range".into()));
            }
            Some(verify_indexed(h.index, None, &h.nodes, &mut nodes)?)
        }
        (None, None) => None,
    };

    let mut upgraded = false;
    if let Some(up) = &proof.upgrade {
        if up.length == 0 || up.start > flat::MAX_LENGTH || up.length > flat::MAX_LENGTH - up.start
        {
            return Err(LogError::InvalidProof("upgrade range out of bounds".into()));
        }
        let consumed_block_root = verify_upgrade(&mut head, up, unverified, &mut nodes)?;
        if consumed_block_root {
            unverified = None;
        }
        head.fork = proof.fork;
        head.signature = up.signature.clone();
        upgraded = true;
    }

    if let Some(root) = unverified {
        let stored = src.node(root.index)?.ok_or_else(|| {
            LogError::InvalidProof(format!(
                "proof ends at node {} which we do not hold",
                root.index
            ))
        })?;
        if stored.hash != root.hash || stored.size != root.size {
            return Err(LogError::InvalidProof(format!(
                "checksum mismatch at node {}",
                root.index
            )));
        }
    }
    Ok(Verified {
        head,
        upgraded,
        nodes,
    })
}

/// Applies an upgrade to `head` (the requester's roots grow to `start + length` and then
/// by the additional roots). Returns true when the block proof's root was one of the
/// nodes the upgrade used, i.e. the block is proven by the upgrade's signature.
fn verify_upgrade(
    head: &mut TreeHead,
    up: &UpgradeProof,
    block_root: Option<Node>,
    out: &mut Vec<Node>,
) -> Result<bool, LogError> {
    let mut queue = NodeQueue::new(&up.nodes, block_root);
    let mut grow = !head.roots.is_empty();
    let mut matched = 0usize;
    let to = 2 * (up.start + up.length);
    let mut ite = Iterator::new(0);
    while ite.full_root(to) {
        if matched < head.roots.len() && head.roots[matched].index == ite.index {
            matched += 1;
            ite.next_tree();
            continue;
        }
        if grow {
            grow = false;
            let root = ite.index;
            if matched < head.roots.len() {
                let last = head.roots[head.roots.len() - 1].index;
                ite.seek(last);
                while ite.index != root {
                    let sibling_index = ite.sibling();
                    let node = queue.shift(sibling_index)?;
                    head.append_root(node, &mut ite, out);
                }
                ite.next_tree();
                continue;
            }
        }
        let node = queue.shift(ite.index)?;
        head.append_root(node, &mut ite, out);
        ite.next_tree();
    }
    if head.roots.is_empty() {
        return Err(LogError::InvalidProof("upgrade proves no roots".into()));
    }

    let extra = &up.additional_nodes;
    let mut ite = Iterator::new(head.roots[head.roots.len() - 1].index);
    let mut i = 0;
    while i < extra.len() && extra[i].index == ite.sibling() {
        head.append_root(extra[i], &mut ite, out);
        i += 1;
    }
    while i < extra.len() {
        let node = extra[i];
        i += 1;
        while node.index != ite.index {
            if ite.factor == 2 {
                return Err(LogError::InvalidProof(format!(
                    "unexpected node {}",
                    node.index
                )));
            }
            ite.left_child();
        }
        head.append_root(node, &mut ite, out);
        ite.sibling();
    }
    if head.length > flat::MAX_LENGTH {
        return Err(LogError::InvalidProof(
            "upgrade grows the log beyond its limit".into(),
        ));
    }
    Ok(queue.extra.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_in_simd_lanes_match_libsodium_leaves() {
        // Around BLAKE2b's 128-byte block edges (the 9-byte prefix shifts them), empty,
        // and uneven counts that leave lanes unused.
        let sizes = [
            0usize, 1, 118, 119, 120, 127, 128, 129, 247, 248, 1000, 4096, 4097,
        ];
        for count in [1usize, 3, 4, 5, sizes.len()] {
            let values: Vec<Vec<u8>> = sizes
                .iter()
                .take(count)
                .enumerate()
                .map(|(i, &n)| (0..n).map(|b| (b * 7 + i) as u8).collect())
                .collect();
            let leaves = Node::leaves(9, &values);
            assert_eq!(leaves.len(), values.len());
            for (i, (leaf, value)) in leaves.iter().zip(&values).enumerate() {
                assert_eq!(
                    *leaf,
                    Node::leaf(9 + i as u64, value),
                    "count {count}, value {i}"
                );
            }
        }
        assert!(Node::leaves::<Vec<u8>>(0, &[]).is_empty());
    }
}
