//! Peer stores: everything a peer keeps on disk, under `stores/<peer-store-name>/`.
//!
//! ```text
//! stores/<name>/            0700
//!   db/                     0700
//!     keypair.json          0600  the peer's Ed25519 identity (created on first run)
//!     state/                      RocksDB: decisions and whatever the planes persist
//!       intercom-blobs            log blocks of 1 KiB and more, referenced from RocksDB
//! ```
//!
//! The layout follows the JS Intercom (`stores/<peer>/db/keypair.json`), but the key file
//! is our own plain format (`{"publicKey": hex, "secretKey": hex}`), not trac-wallet's
//! encrypted mnemonic wallet; it is protected by file permissions instead.
//!
//! Opening takes RocksDB's lock first, so a second process on the same store fails fast
//! with [`StoreError::Locked`] before it can touch the key file. Writes that must survive a
//! crash go through [`KvStore::write`] with `sync = true`.
//!
//! Planes see storage through the [`KvStore`] trait; [`MemoryStore`] implements it for
//! tests and [`RocksStore`] for the binary.

#[cfg(feature = "rocksdb")]
mod blobs;
mod kv;
#[cfg(feature = "rocksdb")]
mod peer_store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(feature = "rocksdb")]
pub use kv::RocksStore;
pub use kv::{Batch, Durability, Entries, KvStore, MemoryStore, WAL_SYNC_INTERVAL};
#[cfg(feature = "rocksdb")]
pub use peer_store::{validate_name, PeerStore};

/// Names that would collide with the `stores` crate's own files.
#[cfg(feature = "rocksdb")]
const RESERVED_NAMES: [&str; 4] = ["src", "tests", "target", "Cargo.toml"];
/// Key under which the first-run decisions are kept.
#[cfg(feature = "rocksdb")]
const DECISIONS_KEY: &[u8] = b"peer/decisions";

/// Why a store could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store name is empty, has path characters or is reserved.
    #[error("invalid peer store name {0:?}: use letters, digits, '.', '_' or '-' (not src, tests or target)")]
    InvalidName(String),
    /// Another process has the store open.
    #[error("peer store {path} is in use by another process (its RocksDB lock is held); stop that peer or pick another --peer-store-name")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// The key file exists but cannot be used.
    #[error("identity file {path} is invalid: {why}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Db(String),
    /// A stored value did not decode.
    #[error("stored value under {key} is corrupt: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decode error.
        why: String,
    },
}

/// The first-run decisions SKILL.md asks an operator to make once and keep. `None` means
/// "not decided": the flag default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decisions {
    /// Run the subnet/contract stack, or sidechannels only.
    pub contracts: Option<bool>,
    /// Built-in chat enabled.
    pub chat: Option<bool>,
    /// Writers are admitted automatically.
    pub auto_add_writers: Option<bool>,
    /// Sidechannel relaying on.
    pub relay: Option<bool>,
    /// Relay hop budget.
    pub relay_ttl: Option<u32>,
    /// Remote open requests accepted.
    pub allow_remote_open: Option<bool>,
    /// Requested channels joined automatically.
    pub auto_join: Option<bool>,
    /// Inbound rate budget, bytes per second.
    pub rate_bytes: Option<u64>,
    /// Inbound burst allowance, bytes.
    pub rate_burst: Option<u64>,
    /// Strikes before a sender is blocked.
    pub max_strikes: Option<u32>,
    /// Largest payload, bytes.
    pub max_bytes: Option<u64>,
    /// Value transfer (settlement) used.
    pub value_transfer: Option<bool>,
    /// Sample timer feature enabled.
    pub timer: Option<bool>,
}

impl Decisions {
    /// `self` with every undecided field taken from `earlier` (flags given now win).
    pub fn or(self, earlier: &Decisions) -> Decisions {
        Decisions {
            contracts: self.contracts.or(earlier.contracts),
            chat: self.chat.or(earlier.chat),
            auto_add_writers: self.auto_add_writers.or(earlier.auto_add_writers),
            relay: self.relay.or(earlier.relay),
            relay_ttl: self.relay_ttl.or(earlier.relay_ttl),
            allow_remote_open: self.allow_remote_open.or(earlier.allow_remote_open),
            auto_join: self.auto_join.or(earlier.auto_join),
            rate_bytes: self.rate_bytes.or(earlier.rate_bytes),
            rate_burst: self.rate_burst.or(earlier.rate_burst),
            max_strikes: self.max_strikes.or(earlier.max_strikes),
            max_bytes: self.max_bytes.or(earlier.max_bytes),
            value_transfer: self.value_transfer.or(earlier.value_transfer),
            timer: self.timer.or(earlier.timer),
        }
    }
}

#[cfg(all(test, feature = "rocksdb"))]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn identity_is_created_once_and_reused() {
        let root = tempfile::tempdir().unwrap();
        let first = PeerStore::open(root.path(), "alice", Durability::Process).unwrap();
        assert!(first.is_new());
        let key = first.keypair().public_key;
        drop(first);
        let again = PeerStore::open(root.path(), "alice", Durability::Process).unwrap();
        assert!(!again.is_new());
        assert_eq!(again.keypair().public_key, key);
    }

    #[test]
    fn a_second_open_of_the_same_store_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let _held = PeerStore::open(root.path(), "bob", Durability::Process).unwrap();
        let err = PeerStore::open(root.path(), "bob", Durability::Process).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another process"));
    }

    #[cfg(unix)]
    #[test]
    fn key_material_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let store = PeerStore::open(root.path(), "carol", Durability::Process).unwrap();
        let key = store.dir().join("db/keypair.json");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(store);
        // Loosened permissions are tightened again on the next open.
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let _store = PeerStore::open(root.path(), "carol", Durability::Process).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn bad_names_and_bad_key_files_are_clear_errors() {
        let root = tempfile::tempdir().unwrap();
        for name in ["", "../x", "a/b", "src", ".hidden", "tests"] {
            assert!(
                matches!(
                    PeerStore::open(root.path(), name, Durability::Process),
                    Err(StoreError::InvalidName(_))
                ),
                "{name}"
            );
        }
        let store = PeerStore::open(root.path(), "dave", Durability::Process).unwrap();
        let key = store.dir().join("db/keypair.json");
        drop(store);
        fs::write(&key, b"{\"publicKey\":\"00\",\"secretKey\":\"zz\"}").unwrap();
        let err = PeerStore::open(root.path(), "dave", Durability::Process).unwrap_err();
        assert!(matches!(err, StoreError::BadKeyFile { .. }), "{err}");
    }

    #[test]
    fn decisions_persist_and_flags_override() {
        let root = tempfile::tempdir().unwrap();
        let store = PeerStore::open(root.path(), "erin", Durability::Process).unwrap();
        assert_eq!(store.decisions().unwrap(), Decisions::default());
        let first = Decisions {
            relay: Some(false),
            max_bytes: Some(5000),
            ..Decisions::default()
        };
        store.settle_decisions(first).unwrap();
        drop(store);
        let store = PeerStore::open(root.path(), "erin", Durability::Process).unwrap();
        let merged = store
            .settle_decisions(Decisions {
                max_bytes: Some(9000),
                ..Decisions::default()
            })
            .unwrap();
        assert_eq!(merged.relay, Some(false));
        assert_eq!(merged.max_bytes, Some(9000));
    }
}
