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
//! Connections ([`HyperDht::listen`] / [`HyperDht::connect`]):
//!
//! * [`socket`]: the node's UDP sockets, shared by dht-rpc and UDX streams;
//! * [`noise_wrap`]: the Noise IK handshake with its payloads;
//! * [`nat`] and [`holepunch`]: NAT sampling (pure) and the punching strategies;
//! * [`server`] (with its announcer) and [`connect`]: the two sides of a connection;
//! * [`connection`]: the secret-stream over the UDX stream that both hand out.
//!
//! Not here: the dht-rpc transport, routing table and queries (the `intercom-dht-rpc`
//! crate) and the swarm (`intercom-swarm`).

#![forbid(unsafe_code)]

mod announcer;
pub mod connect;
pub mod connection;
pub mod constants;
mod context;
pub mod crypto;
pub mod fuzz;
pub mod holepunch;
pub mod limits;
pub mod messages;
pub mod nat;
pub mod node;
pub mod noise_wrap;
pub mod ops;
pub mod router;
pub mod server;
pub mod socket;
pub mod store;

pub use connect::{ConnectError, ConnectOptions};
pub use connection::{Connection, ConnectionHandle, ConnectionInfo, RawReader, RawWriter};
pub use context::{is_bogon, is_private, is_reserved, match_address};
pub use fuzz::{fuzz_handshake, fuzz_holepunch};
pub use limits::{ConnectionLimits, ConnectionStats};
pub use noise_wrap::NoiseWrap;
pub use server::{ListenOptions, Server, ServerFirewall};

pub use constants::{Command, NS};
pub use messages::fuzz_decode_all;
pub use node::{
    AnnounceOptions, AnnounceResult, HyperDht, HyperDhtConfig, HyperDhtError, ImmutablePutResult,
    MappedQuery, MutableGetOptions, MutablePutOptions, MutablePutResult, UnannounceResult,
};
pub use ops::{FindPeerResult, ImmutableResult, LookupResult, MutableResult};
pub use store::{Dispatch, DropReason, RecordStore, Request, Response, StoreConfig};
