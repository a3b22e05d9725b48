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
//!
//! Not here: the dht-rpc transport, routing table and queries (the `intercom-dht-rpc`
//! crate), the client operations built on queries (announce, lookup, mutable/immutable
//! get and put), the router that relays PEER_HANDSHAKE / PEER_HOLEPUNCH, and the
//! connect / server / holepunch state machines. They come later and use this crate.

#![forbid(unsafe_code)]

pub mod constants;
pub mod crypto;
pub mod messages;
pub mod store;

pub use constants::{Command, NS};
pub use messages::fuzz_decode_all;
pub use store::{Dispatch, DropReason, RecordStore, Request, Response, StoreConfig};
