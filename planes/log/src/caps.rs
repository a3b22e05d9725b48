//! Hypercore's hashing domains: namespaces, manifest hashes (log keys), discovery keys,
//! replication capabilities and the bytes a log signature covers.

use std::sync::OnceLock;

use intercom_crypto::blake2b_256;

/// The six `hypercore` namespaces, in the order JS `crypto.namespace('hypercore', 6)`
/// derives them.
struct Namespaces {
    tree: [u8; 32],
    replicate_initiator: [u8; 32],
    replicate_responder: [u8; 32],
    manifest: [u8; 32],
    default_signer: [u8; 32],
}

fn namespaces() -> &'static Namespaces {
    static NS: OnceLock<Namespaces> = OnceLock::new();
    NS.get_or_init(|| {
        let derive = namespace(b"hypercore");
        Namespaces {
            tree: derive(0),
            replicate_initiator: derive(1),
            replicate_responder: derive(2),
            manifest: derive(3),
            default_signer: derive(4),
        }
    })
}

/// The namespace family `name` (as `hypercore-crypto`'s `namespace(name, n)`): entry `i`
/// is BLAKE2b(BLAKE2b(name) || i).
pub fn namespace(name: &[u8]) -> impl Fn(u8) -> [u8; 32] {
    let base = blake2b_256(&[name], None);
    move |i| blake2b_256(&[&base, &[i]], None)
}

/// The namespace a default signer signs under (corestore's and hypercore's default).
pub fn default_signer_namespace() -> [u8; 32] {
    namespaces().default_signer
}

/// A log's key: the hash of its encoded manifest.
pub fn manifest_hash(encoded_manifest: &[u8]) -> [u8; 32] {
    blake2b_256(&[&namespaces().manifest, encoded_manifest], None)
}

/// The discovery key of a log: what peers announce and open channels under, without
/// revealing the key itself.
pub fn discovery_key(key: &[u8; 32]) -> [u8; 32] {
    blake2b_256(&[b"hypercore"], Some(key))
}

/// The capability proving, on one encrypted connection, that the sender knows `key`.
pub fn replication_capability(
    is_initiator: bool,
    key: &[u8; 32],
    handshake_hash: &[u8],
) -> [u8; 32] {
    let ns = if is_initiator {
        &namespaces().replicate_initiator
    } else {
        &namespaces().replicate_responder
    };
    blake2b_256(&[ns, key], Some(handshake_hash))
}

/// The 112 bytes a manifest-v1 signer signs: tree namespace, manifest hash, tree hash,
/// length and fork.
pub fn tree_signable(
    manifest_hash: &[u8; 32],
    tree_hash: &[u8; 32],
    length: u64,
    fork: u64,
) -> [u8; 112] {
    let mut out = [0u8; 112];
    out[..32].copy_from_slice(&namespaces().tree);
    out[32..64].copy_from_slice(manifest_hash);
    out[64..96].copy_from_slice(tree_hash);
    out[96..104].copy_from_slice(&length.to_le_bytes());
    out[104..].copy_from_slice(&fork.to_le_bytes());
    out
}
