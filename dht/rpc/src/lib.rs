//! dht-rpc: the Kademlia RPC layer under HyperDHT, wire-compatible with the JS
//! [`dht-rpc`](https://github.com/holepunchto/dht-rpc) module 6.27.
//!
//! A node speaks UDP from two sockets (client and server), keeps a k = 20 routing table
//! keyed by `BLAKE2b-256(ip ‖ port)`, answers the internal commands PING, PING_NAT,
//! FIND_NODE, DOWN_HINT and DELAYED_PING, runs iterative queries for any command, and
//! works out from its peers' replies whether it is reachable (then it becomes
//! *persistent* and announces its id) or stays *ephemeral*.
//!
//! The crate is a sans-io core plus a thin tokio driver:
//!
//! * [`messages`]: the two datagrams as pure codecs;
//! * [`routing`], [`nat`], [`congestion`], [`health`]: the data structures of the JS
//!   `kademlia-routing-table`, `nat-sampler` and `lib/io.js` / `lib/health.js`;
//! * [`node`]: [`DhtNode`], the whole protocol as a state machine with an explicit clock;
//! * [`driver`]: [`Dht`], the tokio task owning the sockets and timers.
//!
//! # Wire format
//!
//! Every field is compact-encoding (`uint` = varint, integers little endian, `ipv4` = 4
//! address bytes then a uint16 port). Optional fields are present when their flag bit is
//! set.
//!
//! ```text
//! request (first byte 0x03 = type 0 << 4 | version 3)
//! +------+-------+-----------+-----------+---------+------------+---------+-----------+------------+
//! | 0x03 | flags | tid (u16) | to (ipv4) | [id 32] | [token 32] | command | [target 32]| [value]   |
//! +------+-------+-----------+-----------+---------+------------+---------+-----------+------------+
//!   flags (uint): 1 id, 2 token, 4 internal, 8 target, 16 value; command (uint);
//!   value = uint length + bytes
//!
//! response (first byte 0x13 = type 1 << 4 | version 3)
//! +------+-------+-----------+-----------+---------+------------+----------------+---------+---------+
//! | 0x13 | flags | tid (u16) | to (ipv4) | [id 32] | [token 32] | [closer nodes] | [error] | [value] |
//! +------+-------+-----------+-----------+---------+------------+----------------+---------+---------+
//!   flags (uint): 1 id, 2 token, 4 closer nodes, 8 error, 16 value
//!   closer nodes = uint count + count * ipv4; error = uint
//! ```
//!
//! `to` is the address the datagram was sent to, so every message tells its receiver
//! how it is seen from outside (the NAT sampler feeds on it). An `id` is only believed
//! when it equals the hash of the sender's address. Tokens are
//! `BLAKE2b-256(key = secret, "a.b.c.d")` over the requester's host with one of two
//! secrets rotated every 10 drains (7.5 s).

pub mod budget;
pub mod congestion;
pub mod driver;
pub mod health;
pub mod messages;
pub mod nat;
pub mod node;
mod query;
pub mod rng;
pub mod routing;

pub use budget::{BudgetConfig, BudgetStats, RequestBudget, Verdict};
pub use driver::{Dht, DhtError, ForeignDatagram, QueryStream, RequestHandle, SendFn};
pub use messages::{fuzz_decode, node_id, NodeId};
pub use node::{
    Config, DhtEvent, DhtNode, IncomingRequest, NodeFilter, Peer, QueryError, QueryId, QuerySpec,
    Reply, ReplyOptions, RequestError, RequestId, RequestOptions, RequestSpec, SocketKind, Stats,
    Transmit,
};

/// Internal command numbers (`lib/commands.js`).
pub mod commands {
    /// Keep-alive.
    pub const PING: u64 = 0;
    /// "Ping me back on this port": reachability test of the server socket.
    pub const PING_NAT: u64 = 1;
    /// Closest nodes to the target.
    pub const FIND_NODE: u64 = 2;
    /// "A node you told me about is down."
    pub const DOWN_HINT: u64 = 3;
    /// PING answered after a delay (uint32 ms in the value).
    pub const DELAYED_PING: u64 = 4;
}

/// Response error codes (`lib/errors.js`).
pub mod errors {
    /// Success.
    pub const OK: u64 = 0;
    /// The command is not handled here.
    pub const UNKNOWN_COMMAND: u64 = 1;
    /// The request's token was not issued by us (or expired).
    pub const INVALID_TOKEN: u64 = 2;
}
