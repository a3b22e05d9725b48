//! Subnet writer logs: append-only, signed, Merkle-verified logs that a JS hypercore 11
//! accepts as its own.
//!
//! Each peer owns one manifest-v1 log (its "writer key" is the manifest hash) and keeps
//! the logs of the subnet's other members. The pieces, bottom up:
//! - [`flat`]: flat-tree index arithmetic (the in-order layout of the Merkle tree);
//! - [`caps`]: hashing domains (keys, discovery keys, capabilities, signables);
//! - [`tree`]: node hashing, roots, proof generation and verification;
//! - [`bitfield`]: which blocks a log (or a peer) holds;
//! - [`Log`]: one log in the peer store (appends, proofs, verified writes);
//! - [`wire`]: the `hypercore/alpha` protomux messages, manifests and multisig
//!   signatures, byte for byte as `hypercore/lib/messages.js` encodes them;
//! - [`replicate`]: the replication protocol with any number of peers, sans-io;
//! - [`SharedReplica`]: the same over protomux channels;
//! - [`names`]: corestore-compatible naming (primary key + name -> key pair).
pub mod bitfield;
pub mod caps;
pub mod flat;
mod log;
pub mod names;
mod net;
pub mod replicate;
pub mod tree;
pub mod wire;

pub use crate::log::{block_key, default_key, default_manifest, Applied, Log};
pub use crate::net::SharedReplica;
pub use crate::replicate::{Replica, ReplicaConfig};

/// The default cap on the size of one log block ([`Log::set_max_block_bytes`],
/// [`ReplicaConfig::max_block_bytes`]): 8 MiB. Subnet entries stay well under it (a few
/// MiB at most), it keeps a block and its proof inside one protomux frame (uint24
/// framing: 16 MiB), which a block must fit to be replicated at all, and it bounds what
/// one answer from a peer costs us to hold and hash.
pub const DEFAULT_MAX_BLOCK_BYTES: usize = 8 << 20;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A peer's request does not fit our log.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A peer's proof does not verify.
    #[error("invalid proof: {0}")]
    InvalidProof(String),
    /// A signature does not verify against the log's manifest.
    #[error("invalid signature for log length {length}")]
    InvalidSignature {
        /// The length the signature claimed.
        length: u64,
    },
    /// A tree node that must be stored is missing (corrupt storage).
    #[error("tree node {0} is missing from storage")]
    MissingNode(u64),
    /// A proof needs a tree node this copy of the log does not hold: a replica that has
    /// not downloaded every block holds only part of the tree. Not damage; a peer's
    /// request that needs it is answered "not available".
    #[error("tree node {0} is not held by this partial copy of the log")]
    NotHeld(u64),
    /// The manifest is valid but of a kind we cannot verify.
    #[error("unsupported manifest: {0}")]
    UnsupportedManifest(String),
    /// Stored data is damaged.
    #[error("log {key} is corrupt: {why}")]
    Corrupt {
        /// The log key (hex).
        key: String,
        /// What is wrong.
        why: String,
    },
    /// A block larger than the log's cap ([`Log::set_max_block_bytes`]): an append
    /// holding one is refused whole, and a peer's block (which did verify) is not stored.
    #[error("block {block} is {size} bytes, above the cap of {max} bytes")]
    BlockTooLarge {
        /// The block's index (the one it would have had, for an append).
        block: u64,
        /// Its size in bytes.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Appending to a log whose secret key we do not hold.
    #[error("this log is read-only here (not our writer log)")]
    ReadOnly,
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] intercom_stores::StoreError),
}
