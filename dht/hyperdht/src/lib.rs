//! HyperDHT, the DHT layer of Hyperswarm: a Rust port of the pure parts of the JS
//! [`hyperdht`](https://github.com/holepunchto/hyperdht) module, version 6.34.0, that
//! stays wire-compatible with it.
//!
//! HyperDHT runs on top of dht-rpc: every operation here is a dht-rpc request whose
//! `command` is one of [`Command`] and whose `value` is one of the [`messages`]. This
//! crate holds the parts that need no sockets and no clock of their own:
//!
//! * [`constants`]: command numbers, firewall types, error codes, handshake modes,
//!   the signature namespaces and the default cache limits.
//! * [`messages`]: every codec of `lib/messages.js`, byte for byte.
//! * [`crypto`]: record targets, announce / unannounce / mutable signables and
//!   signatures, the holepunch secret and the encrypted holepunch payload.
//! * [`store`]: the records a persistent node keeps for others (`lib/persistent.js`
//!   with the `record-cache` / `xache` semantics) and how requests are dispatched to it.
//! * [`router`]: how PEER_HANDSHAKE / PEER_HOLEPUNCH are relayed to announced peers
//!   (`lib/router.js`, the part a node without servers of its own runs).
//! * [`ops`]: the pure half of the client operations: request construction, reply
//!   mapping and validation, the mutable "latest" choice.
//!
//! On top of them, [`node`] is the async [`HyperDht`]: a dht-rpc [`intercom_dht_rpc::Dht`]
//! that serves the records and runs lookup / announce / unannounce / findPeer /
//! immutable and mutable get and put with the JS semantics.
//!
//! Not here: the dht-rpc transport, routing table and queries (the `intercom-dht-rpc`
//! crate) and the connect / server / holepunch state machines.

#![forbid(unsafe_code)]

pub mod constants;
pub mod crypto;
pub mod messages;
pub mod node;
pub mod ops;
pub mod router;
pub mod store;

pub use constants::{Command, NS};
pub use messages::fuzz_decode_all;
pub use node::{
    AnnounceOptions, AnnounceResult, HyperDht, HyperDhtConfig, HyperDhtError, ImmutablePutResult,
    MappedQuery, MutableGetOptions, MutablePutOptions, MutablePutResult, UnannounceResult,
};
pub use ops::{FindPeerResult, ImmutableResult, LookupResult, MutableResult};
pub use store::{Dispatch, DropReason, RecordStore, Request, Response, StoreConfig};
