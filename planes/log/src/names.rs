//! Logs by name, as corestore names them: a store-wide random primary key, and for each
//! name a key pair derived from it, so the same primary key and name give the same log
//! key (and discovery key) in JS corestore and here.

use intercom_crypto::{blake2b_256, random_array, KeyPair};
use intercom_stores::{Batch, KvStore};

use crate::{caps, LogError};

const PRIMARY_KEY: &[u8] = b"log/primary-key";

/// corestore's default namespace: 32 zero bytes.
pub const DEFAULT_NAMESPACE: [u8; 32] = [0; 32];

/// The store's primary key, created (and durably stored) on first use.
pub fn primary_key(kv: &dyn KvStore) -> Result<[u8; 32], LogError> {
    if let Some(stored) = kv.get(PRIMARY_KEY)? {
        return stored.try_into().map_err(|_| LogError::Corrupt {
            key: "primary key".into(),
            why: "stored primary key is not 32 bytes".into(),
        });
    }
    let key: [u8; 32] = random_array();
    let mut batch = Batch::default();
    batch.put(PRIMARY_KEY, &key);
    kv.write(batch, true)?;
    Ok(key)
}

/// The key pair of log `name` in `namespace` (corestore's `createKeyPair`).
pub fn keypair_for_name(primary_key: &[u8; 32], namespace: &[u8; 32], name: &str) -> KeyPair {
    let corestore_ns = caps::namespace(b"corestore")(0);
    let seed = blake2b_256(
        &[&corestore_ns, namespace, name.as_bytes()],
        Some(primary_key),
    );
    KeyPair::from_seed(&seed)
}
