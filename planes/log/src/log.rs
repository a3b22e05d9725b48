//! One log on disk: its header, tree nodes, blocks and have-bitfield in the peer store's
//! key-value store, with appends (our own log) and verified writes (others' logs).
//!
//! ```text
//! log/<discovery key>/h                 header: key, manifest, fork, length, bytes,
//!                                       signature, contiguous length
//! log/<discovery key>/n<index u64 BE>   tree node: size, hash
//! log/<discovery key>/b<block u64 BE>   block value (a blob: large ones live in the
//!                                       store's blob file, see `Batch::put_blob`)
//! log/<discovery key>/f<page u64 BE>    have-bitfield page (sparse logs)
//! ```
//!
//! An append is acknowledged only after one synced write batch holding its blocks, nodes
//! and the new signed header, so a crash either keeps the whole append or none of it.
//! Opening rebuilds the roots from the stored nodes and checks the stored signature, so
//! a damaged store is reported instead of served.

use std::sync::Arc;

use intercom_crypto::KeyPair;
use intercom_encoding::{Decode, DecodeError, Encode, Reader, Writer};
use intercom_stores::{Batch, KvStore};

use crate::bitfield::{self, Bitfield};
use crate::tree::{generate_proof, verify_proof, Node, NodeSource, Proof, ProofRequest, TreeHead};
use crate::wire::{Manifest, MultiSignature, MultisigInput, Signer};
use crate::{caps, flat, LogError};

/// 2: blocks are blob records (`Batch::put_blob`). 1: blocks were plain values; such a
/// log is rewritten to version 2 when it is opened ([`Log::upgrade_blocks`]).
const HEADER_VERSION: u64 = 2;

/// The manifests we can verify: manifest-v1+ with one Ed25519 signer, quorum 1, no
/// patches, no prologue (what corestore and `new Hypercore()` create by default).
#[derive(Debug, Clone)]
struct Verifier {
    encoded: Vec<u8>,
    signer: [u8; 32],
}

impl Verifier {
    fn new(key: &[u8; 32], manifest: &Manifest) -> Result<Verifier, LogError> {
        let encoded = intercom_encoding::encode(manifest);
        if caps::manifest_hash(&encoded) != *key {
            return Err(LogError::InvalidProof(
                "manifest does not hash to the log key".into(),
            ));
        }
        if manifest.version == 0
            || manifest.quorum != 1
            || manifest.signers.len() != 1
            || manifest.allow_patch
            || manifest.prologue.is_some()
        {
            return Err(LogError::UnsupportedManifest(format!(
                "version {}, quorum {}, {} signers, patch {}, prologue {}",
                manifest.version,
                manifest.quorum,
                manifest.signers.len(),
                manifest.allow_patch,
                manifest.prologue.is_some()
            )));
        }
        Ok(Verifier {
            encoded,
            signer: manifest.signers[0].public_key,
        })
    }

    fn verify(&self, key: &[u8; 32], head: &TreeHead) -> bool {
        let Ok(sig) = intercom_encoding::decode_exact::<MultiSignature>(&head.signature) else {
            return false;
        };
        let Some(first) = sig.proofs.first() else {
            return false;
        };
        if first.signer != 0 || first.patch != 0 {
            return false;
        }
        let signable = caps::tree_signable(key, &head.hash(), head.length, head.fork);
        intercom_crypto::verify(&first.signature, &signable, &self.signer)
    }
}

/// The default manifest of a single-signer log, as `Hypercore.key(...)` / corestore
/// build it for a key pair.
pub fn default_manifest(public_key: &[u8; 32]) -> Manifest {
    Manifest {
        version: 1,
        quorum: 1,
        signers: vec![Signer {
            namespace: caps::default_signer_namespace(),
            public_key: *public_key,
            ..Signer::default()
        }],
        ..Manifest::default()
    }
}

/// The key (manifest hash) of the default log of `public_key`.
pub fn default_key(public_key: &[u8; 32]) -> [u8; 32] {
    caps::manifest_hash(&intercom_encoding::encode(&default_manifest(public_key)))
}

/// What applying a peer's data did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The log grew to a new signed length.
    pub upgraded: bool,
    /// A block that we did not have was stored.
    pub new_block: Option<u64>,
}

/// A log stored in a [`KvStore`].
pub struct Log {
    kv: Arc<dyn KvStore>,
    prefix: Vec<u8>,
    key: [u8; 32],
    discovery_key: [u8; 32],
    verifier: Option<Verifier>,
    keypair: Option<KeyPair>,
    head: TreeHead,
    have: Bitfield,
    contiguous: u64,
    /// The largest block appended or stored.
    max_block_bytes: usize,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("key", &hex::encode(self.key))
            .field("length", &self.head.length)
            .field("fork", &self.head.fork)
            .finish()
    }
}

impl Log {
    /// Opens (or creates) the writable log of `keypair`.
    pub fn open_writer(kv: Arc<dyn KvStore>, keypair: KeyPair) -> Result<Log, LogError> {
        let manifest = default_manifest(&keypair.public_key);
        let key = caps::manifest_hash(&intercom_encoding::encode(&manifest));
        let mut log = Log::open(kv, key)?;
        if log.verifier.is_none() {
            log.set_manifest(&manifest)?;
        }
        log.keypair = Some(keypair);
        Ok(log)
    }

    /// Opens the log with `key`, creating an empty one (to be replicated) if it is new.
    pub fn open(kv: Arc<dyn KvStore>, key: [u8; 32]) -> Result<Log, LogError> {
        let discovery_key = caps::discovery_key(&key);
        let prefix = store_prefix(&discovery_key);
        let mut log = Log {
            kv,
            prefix,
            key,
            discovery_key,
            verifier: None,
            keypair: None,
            head: TreeHead::default(),
            have: Bitfield::default(),
            contiguous: 0,
            max_block_bytes: crate::DEFAULT_MAX_BLOCK_BYTES,
        };
        log.load()?;
        Ok(log)
    }

    fn store_key(&self, kind: u8, n: Option<u64>) -> Vec<u8> {
        entry_key(&self.prefix, kind, n)
    }

    fn load(&mut self) -> Result<(), LogError> {
        let Some(bytes) = self.kv.get(&self.store_key(b'h', None))? else {
            return Ok(());
        };
        let header = intercom_encoding::decode_exact::<Header>(&bytes)
            .map_err(|e| self.corrupt(format!("header: {e}")))?;
        if header.key != self.key {
            return Err(self.corrupt("header holds another key".into()));
        }
        if let Some(m) = &header.manifest {
            let manifest = intercom_encoding::decode_exact::<Manifest>(m)
                .map_err(|e| self.corrupt(format!("manifest: {e}")))?;
            self.verifier = Some(Verifier::new(&self.key, &manifest)?);
        }
        let mut roots = Vec::new();
        for index in flat::full_roots(2 * header.length) {
            roots.push(self.required(index)?);
        }
        self.head = TreeHead {
            fork: header.fork,
            length: header.length,
            byte_length: roots.iter().map(|r| r.size).sum(),
            roots,
            signature: header.signature,
        };
        if self.head.length > 0 {
            let valid = self
                .verifier
                .as_ref()
                .is_some_and(|v| v.verify(&self.key, &self.head));
            if !valid {
                return Err(self.corrupt(format!(
                    "stored signature does not cover the stored tree at length {}",
                    self.head.length
                )));
            }
        }
        for (k, v) in self.kv.scan_prefix(&self.store_key(b'f', None))? {
            if let Some(page) = k.get(self.prefix.len() + 1..).and_then(be_u64) {
                self.have.load_page(page, &v);
            }
        }
        self.contiguous = header.contiguous.min(self.head.length);
        self.contiguous = self
            .have
            .find(self.contiguous, self.head.length, false)
            .unwrap_or(self.head.length);
        if header.version == 1 {
            self.upgrade_blocks()?;
        }
        Ok(())
    }

    /// Rewrites the blocks of a version-1 log as blob records, with the version-2 header,
    /// in one atomic write (so an interrupted upgrade is simply done again).
    fn upgrade_blocks(&self) -> Result<(), LogError> {
        let blocks = self.kv.scan_prefix(&self.store_key(b'b', None))?;
        let mut batch = Batch::default();
        for (key, value) in &blocks {
            batch.put_blob(key, value);
        }
        self.put_header(&mut batch, &self.head);
        self.kv.write(batch, true)?;
        tracing::info!(
            key = %hex::encode(self.key),
            blocks = blocks.len(),
            "log store format upgraded to version 2"
        );
        Ok(())
    }

    fn corrupt(&self, why: String) -> LogError {
        LogError::Corrupt {
            key: hex::encode(self.key),
            why,
        }
    }

    /// The log's key (its manifest hash; the "writer key" for a peer's own log).
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The discovery key peers find and open it by.
    pub fn discovery_key(&self) -> &[u8; 32] {
        &self.discovery_key
    }

    /// The signed head.
    pub fn head(&self) -> &TreeHead {
        &self.head
    }

    /// Number of blocks in the signed tree.
    pub fn length(&self) -> u64 {
        self.head.length
    }

    /// Fork id.
    pub fn fork(&self) -> u64 {
        self.head.fork
    }

    /// Blocks held locally from 0 without a gap.
    pub fn contiguous_length(&self) -> u64 {
        self.contiguous
    }

    /// The largest block this log appends or stores, in bytes.
    pub fn max_block_bytes(&self) -> usize {
        self.max_block_bytes
    }

    /// Sets the largest block this log appends or stores (by default
    /// [`DEFAULT_MAX_BLOCK_BYTES`](crate::DEFAULT_MAX_BLOCK_BYTES)); a
    /// [`Replica`](crate::Replica) sets it from its [`ReplicaConfig`](crate::ReplicaConfig).
    /// Blocks stored already stay, whatever their size.
    pub fn set_max_block_bytes(&mut self, max: usize) {
        self.max_block_bytes = max;
    }

    /// True when we hold the secret key and can append.
    pub fn is_writable(&self) -> bool {
        self.keypair.is_some()
    }

    /// True when the manifest is known (always for our own log).
    pub fn has_manifest(&self) -> bool {
        self.verifier.is_some()
    }

    /// The manifest, encoded, when known.
    pub fn manifest_bytes(&self) -> Option<&[u8]> {
        self.verifier.as_ref().map(|v| v.encoded.as_slice())
    }

    /// The manifest, when known.
    pub fn manifest(&self) -> Option<Manifest> {
        self.manifest_bytes()
            .and_then(|b| intercom_encoding::decode_exact::<Manifest>(b).ok())
    }

    /// True when block `block` is stored here.
    pub fn has(&self, block: u64) -> bool {
        block < self.contiguous || self.have.get(block)
    }

    /// The first block at or after `from` (below `end`) that we do not hold.
    pub fn first_missing(&self, from: u64, end: u64) -> Option<u64> {
        let from = from.max(self.contiguous);
        if from >= end {
            return None;
        }
        self.have.find(from, end, false)
    }

    /// Block `block`, if stored.
    pub fn get(&self, block: u64) -> Result<Option<Vec<u8>>, LogError> {
        if !self.has(block) {
            return Ok(None);
        }
        Ok(self.kv.get_blob(&self.store_key(b'b', Some(block)))?)
    }

    /// Learns the manifest of a log opened by key; it must hash to the key.
    pub fn set_manifest(&mut self, manifest: &Manifest) -> Result<(), LogError> {
        if self.verifier.is_some() {
            return Ok(());
        }
        let verifier = Verifier::new(&self.key, manifest)?;
        self.verifier = Some(verifier);
        let mut batch = Batch::default();
        self.put_header(&mut batch, &self.head.clone());
        self.kv.write(batch, true)?;
        Ok(())
    }

    fn put_header(&self, batch: &mut Batch<'_>, head: &TreeHead) {
        let header = Header {
            version: HEADER_VERSION,
            key: self.key,
            manifest: self.verifier.as_ref().map(|v| v.encoded.clone()),
            fork: head.fork,
            length: head.length,
            signature: head.signature.clone(),
            contiguous: self.contiguous,
        };
        batch.put(
            &self.store_key(b'h', None),
            &intercom_encoding::encode(&header),
        );
    }

    /// Appends `entries` and returns the new length. Durable when this returns. Refused
    /// whole, with nothing written, when one entry is above
    /// [`max_block_bytes`](Self::max_block_bytes) ([`LogError::BlockTooLarge`]).
    pub fn append<E: AsRef<[u8]> + Sync>(&mut self, entries: &[E]) -> Result<u64, LogError> {
        let keypair = self.keypair.as_ref().ok_or(LogError::ReadOnly)?;
        if entries.is_empty() {
            return Ok(self.head.length);
        }
        let oversized = entries
            .iter()
            .map(|e| e.as_ref().len())
            .enumerate()
            .find(|&(_, size)| size > self.max_block_bytes);
        if let Some((i, size)) = oversized {
            return Err(LogError::BlockTooLarge {
                block: self.head.length + i as u64,
                size,
                max: self.max_block_bytes,
            });
        }
        let mut head = self.head.clone();
        let mut batch = Batch::default();
        let start = head.length;
        for (leaf, entry) in hash_leaves(start, entries).into_iter().zip(entries) {
            let block = head.length;
            for node in head.append_leaf(leaf) {
                batch.put(&self.store_key(b'n', Some(node.index)), &encode_node(&node));
            }
            batch.put_blob(&self.store_key(b'b', Some(block)), entry.as_ref());
        }
        if head.length > flat::MAX_LENGTH {
            return Err(LogError::InvalidRequest("log is full".into()));
        }
        let signable = caps::tree_signable(&self.key, &head.hash(), head.length, head.fork);
        let signature = keypair.sign(&signable);
        head.signature = intercom_encoding::encode(&MultiSignature {
            proofs: vec![MultisigInput {
                signer: 0,
                signature,
                patch: 0,
            }],
            patch: Vec::new(),
        });
        let contiguous_before = self.contiguous;
        if self.contiguous == start {
            self.contiguous = head.length;
        } else {
            self.have.set_range(start, head.length - start, true);
            for page in bitfield::page_of(start)..=bitfield::page_of(head.length - 1) {
                if let Some(bytes) = self.have.page_bytes(page) {
                    batch.put(&self.store_key(b'f', Some(page)), &bytes);
                }
            }
        }
        self.put_header(&mut batch, &head);
        if let Err(e) = self.kv.write(batch, true) {
            self.contiguous = contiguous_before;
            return Err(e.into());
        }
        self.head = head;
        Ok(self.head.length)
    }

    /// Re-hashes every stored block and rebuilds the tree of a fully held log: the roots
    /// must equal the signed head's and every stored node must match. Returns the number
    /// of blocks checked.
    pub fn verify_all(&self) -> Result<u64, LogError> {
        if self.contiguous < self.head.length {
            return Err(LogError::InvalidRequest(format!(
                "only {} of {} blocks are held; cannot verify the whole log",
                self.contiguous, self.head.length
            )));
        }
        let mut rebuilt = TreeHead {
            fork: self.head.fork,
            ..TreeHead::default()
        };
        for block in 0..self.head.length {
            let value = self
                .kv
                .get_blob(&self.store_key(b'b', Some(block)))?
                .ok_or_else(|| self.corrupt(format!("block {block} is missing")))?;
            for node in rebuilt.append(&value) {
                let stored = self.required(node.index)?;
                if stored != node {
                    return Err(
                        self.corrupt(format!("node {} does not match block {block}", node.index))
                    );
                }
            }
        }
        if rebuilt.roots != self.head.roots {
            return Err(self.corrupt("rebuilt roots differ from the signed head".into()));
        }
        Ok(self.head.length)
    }

    /// Answers a peer's proof request from the stored tree.
    ///
    /// A log that holds every block holds every node of its tree, so a node missing
    /// there is damage ([`LogError::MissingNode`]). A replica holding only some blocks
    /// has the signed roots, the nodes of the blocks it downloaded and those of the
    /// upgrades it verified, and a valid request may need others (an upgrade from a
    /// length this replica skipped over, say): that is [`LogError::NotHeld`].
    pub fn proof(&self, req: &ProofRequest) -> Result<Proof, LogError> {
        match generate_proof(&self.head, self, req) {
            Err(LogError::MissingNode(node)) if self.contiguous < self.head.length => {
                Err(LogError::NotHeld(node))
            }
            other => other,
        }
    }

    /// True when this copy can prove an upgrade from `from` blocks to its length: it is
    /// longer and holds the nodes (always so when it holds every block). What a peer of
    /// that length is told in `sync` (`canUpgrade`), as JS hypercore does.
    pub fn can_prove_upgrade(&self, from: u64) -> bool {
        if from >= self.head.length {
            return false;
        }
        if self.contiguous == self.head.length {
            return true;
        }
        let req = ProofRequest {
            upgrade: Some((from, self.head.length - from)),
            ..ProofRequest::default()
        };
        generate_proof(&self.head, self, &req).is_ok()
    }

    /// Verifies a peer's data (proof plus block value) and stores what it proves. Fails
    /// without storing anything when the proof or signature is invalid, and when the
    /// block is above [`max_block_bytes`](Self::max_block_bytes): that is
    /// [`LogError::BlockTooLarge`], returned only once the block verified (so it tells
    /// that the log really holds such a block, not that a peer sent garbage).
    pub fn apply(&mut self, proof: &Proof, value: Option<&[u8]>) -> Result<Applied, LogError> {
        if proof.upgrade.is_some() && self.head.length > 0 && proof.fork != self.head.fork {
            return Err(LogError::InvalidProof(format!(
                "proof is for fork {}, we are on fork {} (reorgs are not supported)",
                proof.fork, self.head.fork
            )));
        }
        if proof.upgrade.is_none() && proof.fork != self.head.fork {
            return Ok(Applied {
                upgraded: false,
                new_block: None,
            });
        }
        let verified = verify_proof(&self.head, self, proof, value)?;
        let upgraded = verified.upgraded && verified.head.length > self.head.length;
        if verified.upgraded && !upgraded {
            // An upgrade to a length we already have proves nothing new about our tree.
            return Ok(Applied {
                upgraded: false,
                new_block: None,
            });
        }
        if upgraded {
            let verifier = self
                .verifier
                .as_ref()
                .ok_or_else(|| LogError::InvalidProof("upgrade before the manifest".into()))?;
            if !verifier.verify(&self.key, &verified.head) {
                return Err(LogError::InvalidSignature {
                    length: verified.head.length,
                });
            }
        }
        if let (Some(b), Some(v)) = (&proof.block, value) {
            if v.len() > self.max_block_bytes {
                return Err(LogError::BlockTooLarge {
                    block: b.index,
                    size: v.len(),
                    max: self.max_block_bytes,
                });
            }
        }
        let mut batch = Batch::default();
        for node in &verified.nodes {
            batch.put(&self.store_key(b'n', Some(node.index)), &encode_node(node));
        }
        let mut new_block = None;
        if let (Some(b), Some(v)) = (&proof.block, value) {
            if !self.has(b.index) {
                batch.put_blob(&self.store_key(b'b', Some(b.index)), v);
                new_block = Some(b.index);
            }
        }
        let mut have = self.have.clone();
        let mut contiguous = self.contiguous;
        let head = if upgraded {
            verified.head
        } else {
            self.head.clone()
        };
        if let Some(block) = new_block {
            if block == contiguous {
                contiguous = have
                    .find(block + 1, head.length, false)
                    .unwrap_or(head.length);
                // Pages wholly below the contiguous length are no longer needed.
            } else {
                have.set(block, true);
                let page = bitfield::page_of(block);
                if let Some(bytes) = have.page_bytes(page) {
                    batch.put(&self.store_key(b'f', Some(page)), &bytes);
                }
            }
        }
        let old_contiguous = std::mem::replace(&mut self.contiguous, contiguous);
        if upgraded || contiguous != old_contiguous {
            self.put_header(&mut batch, &head);
        }
        if let Err(e) = self.kv.write(batch, false) {
            self.contiguous = old_contiguous;
            return Err(e.into());
        }
        self.have = have;
        self.head = head;
        Ok(Applied {
            upgraded,
            new_block,
        })
    }

    /// Runs of held blocks below the signed length, as `(start, length)`, for `range`
    /// announcements; at most `limit` runs.
    pub fn held_ranges(&self, limit: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let end = self.head.length;
        if self.contiguous > 0 {
            out.push((0, self.contiguous));
        }
        let mut at = self.contiguous;
        while out.len() < limit && at < end {
            let Some(start) = self.have.find(at, end, true) else {
                break;
            };
            let stop = self.have.find(start, end, false).unwrap_or(end);
            out.push((start, stop - start));
            at = stop;
        }
        out
    }
}

impl NodeSource for Log {
    fn node(&self, index: u64) -> Result<Option<Node>, LogError> {
        let Some(bytes) = self.kv.get(&self.store_key(b'n', Some(index)))? else {
            return Ok(None);
        };
        decode_node(index, &bytes)
            .map(Some)
            .map_err(|e| self.corrupt(format!("node {index}: {e}")))
    }
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Where the log with `discovery_key` keeps its entries in the store (`log/<dk>/`).
fn store_prefix(discovery_key: &[u8; 32]) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(4 + 32 + 1 + 9);
    prefix.extend_from_slice(b"log/");
    prefix.extend_from_slice(discovery_key);
    prefix.push(b'/');
    prefix
}

/// The store key of block `block` of the log with `discovery_key`, for tools and tests
/// that look into a store (read it with `KvStore::get_blob`).
pub fn block_key(discovery_key: &[u8; 32], block: u64) -> Vec<u8> {
    entry_key(&store_prefix(discovery_key), b'b', Some(block))
}

/// The key of one kind of entry (`h`, `n`, `b`, `f`; numbered ones with their number
/// big-endian) under a log's `prefix`.
fn entry_key(prefix: &[u8], kind: u8, n: Option<u64>) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 9);
    key.extend_from_slice(prefix);
    key.push(kind);
    if let Some(n) = n {
        key.extend_from_slice(&n.to_be_bytes());
    }
    key
}

/// Batches of at least this many bytes have their leaves hashed on several threads.
const PARALLEL_HASH_MIN_BYTES: usize = 256 * 1024;
/// At most this many hashing threads per append.
const MAX_HASH_THREADS: usize = 4;

/// The leaf nodes of `entries` appended from block `start`. BLAKE2b is most of the time
/// of a large append, so a large batch is split across the machine's cores.
fn hash_leaves<E: AsRef<[u8]> + Sync>(start: u64, entries: &[E]) -> Vec<Node> {
    let bytes: usize = entries.iter().map(|e| e.as_ref().len()).sum();
    // Asked once: the standard library reads the cgroup files on every call.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = cores.min(MAX_HASH_THREADS).min(entries.len());
    if bytes < PARALLEL_HASH_MIN_BYTES || threads < 2 {
        return Node::leaves(start, entries);
    }
    let chunk = entries.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = entries
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| move || Node::leaves(start + (c * chunk) as u64, part));
        // The first part is hashed here, the others on their own threads.
        let here = parts.next();
        let spawned: Vec<_> = parts.map(|part| scope.spawn(part)).collect();
        let mut leaves = here.map_or_else(Vec::new, |part| part());
        for handle in spawned {
            match handle.join() {
                Ok(part) => leaves.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        leaves
    })
}

fn encode_node(node: &Node) -> Vec<u8> {
    let mut w = Writer::with_capacity(41);
    w.uint(node.size).fixed(&node.hash);
    w.into_vec()
}

fn decode_node(index: u64, bytes: &[u8]) -> Result<Node, DecodeError> {
    let mut r = Reader::new(bytes);
    let size = r.uint()?;
    let hash = r.fixed32()?;
    r.finish()?;
    Ok(Node { index, size, hash })
}

/// The stored header of a log.
struct Header {
    /// As read; always written as [`HEADER_VERSION`].
    version: u64,
    key: [u8; 32],
    manifest: Option<Vec<u8>>,
    fork: u64,
    length: u64,
    signature: Vec<u8>,
    contiguous: u64,
}

impl Encode for Header {
    fn encoded_len(&self) -> usize {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.len()
    }

    fn encode(&self, w: &mut Writer) {
        w.uint(HEADER_VERSION).fixed(&self.key);
        w.optional_buffer(self.manifest.as_deref());
        w.uint(self.fork)
            .uint(self.length)
            .buffer(&self.signature)
            .uint(self.contiguous);
    }
}

impl<'a> Decode<'a> for Header {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let version = r.uint()?;
        if version != 1 && version != HEADER_VERSION {
            return Err(DecodeError::Invalid {
                what: "log header",
                why: "unknown version",
            });
        }
        Ok(Header {
            version,
            key: r.fixed32()?,
            manifest: r.optional_buffer()?.map(|b| b.to_vec()),
            fork: r.uint()?,
            length: r.uint()?,
            signature: r.buffer()?.to_vec(),
            contiguous: r.uint()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_hashed_on_several_threads_match_one_by_one() {
        // Uneven sizes and a count that does not split evenly, well over the threshold.
        let entries: Vec<Vec<u8>> = (0..1001u32)
            .map(|i| vec![(i % 253) as u8; 100 + (i as usize * 37) % 900])
            .collect();
        assert!(entries.iter().map(Vec::len).sum::<usize>() >= PARALLEL_HASH_MIN_BYTES);
        let start = 77;
        let leaves = hash_leaves(start, &entries);
        assert_eq!(leaves.len(), entries.len());
        for (i, (leaf, entry)) in leaves.iter().zip(&entries).enumerate() {
            assert_eq!(*leaf, Node::leaf(start + i as u64, entry), "leaf {i}");
        }
        assert!(hash_leaves::<Vec<u8>>(start, &[]).is_empty());
    }
}
