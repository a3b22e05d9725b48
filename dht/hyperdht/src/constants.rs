//! Protocol constants of hyperdht (`lib/constants.js`): command numbers, firewall types,
//! error codes, handshake/holepunch routing modes, the signature namespaces and the
//! default cache limits a node uses for the records it stores (`index.js`).

use std::sync::LazyLock;

/// The hyperdht commands, carried as the dht-rpc request `command` (with `internal`
/// unset, so they never collide with dht-rpc's own PING/FIND_NODE/… commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// Noise handshake forwarded towards a server (`COMMANDS.PEER_HANDSHAKE`).
    PeerHandshake = 0,
    /// Holepunch round forwarded between client and server (`COMMANDS.PEER_HOLEPUNCH`).
    PeerHolepunch = 1,
    /// Ask a node for the record of a peer announcing itself under `hash(publicKey)`.
    FindPeer = 2,
    /// Ask a node for the peers announced under a topic.
    Lookup = 3,
    /// Store a signed peer record under a topic.
    Announce = 4,
    /// Remove a signed peer record from a topic.
    Unannounce = 5,
    /// Store a signed mutable value under `hash(publicKey)`.
    MutablePut = 6,
    /// Fetch a mutable value.
    MutableGet = 7,
    /// Store a value under its own hash.
    ImmutablePut = 8,
    /// Fetch an immutable value.
    ImmutableGet = 9,
    /// A request for a registered plugin (`lib/plugin.js`).
    Plugin = 10,
}

impl Command {
    /// Every command, in numeric order.
    pub const ALL: [Command; 11] = [
        Command::PeerHandshake,
        Command::PeerHolepunch,
        Command::FindPeer,
        Command::Lookup,
        Command::Announce,
        Command::Unannounce,
        Command::MutablePut,
        Command::MutableGet,
        Command::ImmutablePut,
        Command::ImmutableGet,
        Command::Plugin,
    ];

    /// The number on the wire.
    pub const fn id(self) -> u64 {
        self as u64
    }

    /// The command with this wire number, if it is one of hyperdht's.
    pub fn from_id(id: u64) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.id() == id)
    }
}

/// NAT / firewall classification sent in noise and holepunch payloads (`FIREWALL`).
pub mod firewall {
    /// Not known yet.
    pub const UNKNOWN: u64 = 0;
    /// Directly reachable.
    pub const OPEN: u64 = 1;
    /// Behind a NAT that keeps the same external port for every destination.
    pub const CONSISTENT: u64 = 2;
    /// Behind a NAT that picks a random external port per destination.
    pub const RANDOM: u64 = 3;
}

/// Error codes (`ERROR`): 0–3 travel in noise/holepunch payloads, 16 and 17 are
/// dht-rpc reply error codes of `MUTABLE_PUT`.
pub mod error_code {
    /// No error.
    pub const NONE: u64 = 0;
    /// The connection attempt was aborted.
    pub const ABORTED: u64 = 1;
    /// The remote speaks another payload version.
    pub const VERSION_MISMATCH: u64 = 2;
    /// The server is busy; retry later.
    pub const TRY_LATER: u64 = 3;
    /// A mutable put reused the stored seq with a different value.
    pub const SEQ_REUSED: u64 = 16;
    /// A mutable put had a lower seq than the stored value.
    pub const SEQ_TOO_LOW: u64 = 17;
}

/// The `mode` of [`crate::messages::Handshake`] and [`crate::messages::Holepunch`]
/// messages: which hop of the relay path a message is on (`lib/router.js`).
pub mod mode {
    /// Sent by the connecting client to a DHT node.
    pub const FROM_CLIENT: u64 = 0;
    /// Sent by the server back to the relaying node.
    pub const FROM_SERVER: u64 = 1;
    /// Relayed by the first DHT node to the server (or to a second relay).
    pub const FROM_RELAY: u64 = 2;
    /// Relayed by a second DHT node to the server.
    pub const FROM_SECOND_RELAY: u64 = 3;
    /// The final reply to the client.
    pub const REPLY: u64 = 4;
}

/// The public bootstrap nodes (`BOOTSTRAP_NODES`), as `ip@host:port`.
pub const BOOTSTRAP_NODES: [&str; 3] = [
    "88.99.3.86@node1.hyperdht.org:49737",
    "142.93.90.113@node2.hyperdht.org:49737",
    "138.68.147.8@node3.hyperdht.org:49737",
];

/// The UDP port a HyperDHT node binds by default.
pub const DEFAULT_PORT: u16 = 49737;

/// Default `maxSize` of the record caches (`defaultMaxSize` in `index.js`).
pub const DEFAULT_MAX_SIZE: usize = 65536;
/// Default `maxAge` of announcement records, refreshes, bumps and forwards (20 minutes).
pub const DEFAULT_MAX_AGE_MS: u64 = 20 * 60 * 1000;
/// Default `maxAge` of mutable and immutable values (48 hours).
pub const DEFAULT_VALUE_MAX_AGE_MS: u64 = 48 * 60 * 60 * 1000;
/// How far in the future (ms) an announce `bump` timestamp may be (`MAX_BUMP_DRIFT`).
pub const MAX_BUMP_DRIFT_MS: u64 = 60_000;
/// Most peer records returned by one lookup reply.
pub const MAX_LOOKUP_RECORDS: usize = 20;
/// Relay addresses kept from an announcement; the rest are cut off before storing.
pub const MAX_RELAY_ADDRESSES: usize = 3;

/// The name hyperdht derives its namespaces from.
pub const NAMESPACE_NAME: &[u8] = b"hyperswarm/dht";

/// `hypercore-crypto`'s `namespace(name, ids)`: `blake2b256(blake2b256(name) ‖ id)` for each id.
pub fn namespace(name: &[u8], ids: &[u8]) -> Vec<[u8; 32]> {
    let base = intercom_crypto::blake2b_256(&[name], None);
    ids.iter()
        .map(|&id| intercom_crypto::blake2b_256(&[&base, &[id]], None))
        .collect()
}

/// The signature / prologue namespaces (`NS` in `lib/constants.js`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    /// Prefix of announce signables.
    pub announce: [u8; 32],
    /// Prefix of unannounce signables.
    pub unannounce: [u8; 32],
    /// Prefix of mutable-put signables.
    pub mutable_put: [u8; 32],
    /// Noise prologue of the peer handshake.
    pub peer_handshake: [u8; 32],
    /// Input of the holepunch secret derivation.
    pub peer_holepunch: [u8; 32],
    /// Plugin namespace.
    pub plugin: [u8; 32],
}

/// The namespaces, computed once as `crypto.namespace('hyperswarm/dht', [4, 5, 6, 0, 1, 10])`.
pub static NS: LazyLock<Namespaces> = LazyLock::new(|| {
    let ids = [
        Command::Announce,
        Command::Unannounce,
        Command::MutablePut,
        Command::PeerHandshake,
        Command::PeerHolepunch,
        Command::Plugin,
    ]
    .map(|c| c as u8);
    let ns = namespace(NAMESPACE_NAME, &ids);
    Namespaces {
        announce: ns[0],
        unannounce: ns[1],
        mutable_put: ns[2],
        peer_handshake: ns[3],
        peer_holepunch: ns[4],
        plugin: ns[5],
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_round_trip() {
        for c in Command::ALL {
            assert_eq!(Command::from_id(c.id()), Some(c));
        }
        assert_eq!(Command::from_id(11), None);
        assert_eq!(Command::Plugin.id(), 10);
    }

    #[test]
    fn namespaces_are_distinct() {
        let ns = &*NS;
        let all = [
            ns.announce,
            ns.unannounce,
            ns.mutable_put,
            ns.peer_handshake,
            ns.peer_holepunch,
            ns.plugin,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
