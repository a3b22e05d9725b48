//! The records a HyperDHT node stores for other peers, ported from `lib/persistent.js`
//! (plus the forwarding table of `lib/router.js` that announcements of a peer's own key
//! write into). Pure state: requests and `now_ms` in, [`Response`]s out.
//!
//! # Dispatch (`HyperDHT.onrequest` in `index.js`)
//!
//! dht-rpc hands every non-internal request to hyperdht. Before that, dht-rpc itself
//! answers a request carrying a token that is not one of the two it currently hands
//! to that address with `INVALID_TOKEN`; so a token that reaches these handlers is
//! valid, and handlers only ask whether one is present. Then:
//!
//! 1. `PEER_HANDSHAKE` (0) and `PEER_HOLEPUNCH` (1) always go to the router (connection
//!    relaying, [`crate::router`], with the target's [`RecordStore::forward`]).
//!    [`Dispatch::Router`].
//! 2. Every other command is only served once the node is persistent (non-ephemeral)
//!    and has an id. Before that — and for any unknown command — `onrequest` returns
//!    false and dht-rpc replies with error `UNKNOWN_COMMAND`, with closer nodes iff
//!    the request had a target. [`Dispatch::Unhandled`].
//! 3. `FIND_PEER`, `LOOKUP`, `ANNOUNCE`, `UNANNOUNCE`, `MUTABLE_PUT`, `MUTABLE_GET`,
//!    `IMMUTABLE_PUT`, `IMMUTABLE_GET` go to the matching `on_*` method here;
//!    `PLUGIN` requests are decoded and handed to the plugin ([`Dispatch::Plugin`]).
//!
//! Each handler either replies or silently drops the request ([`Response::Drop`]: the
//! requester times out). Replies are `req.reply(value, opts)`, which sends a fresh
//! token and closer nodes unless `opts` says `false`, or `req.error(code)`, which sends
//! closer nodes but no token:
//!
//! | command | needs | reply |
//! |---|---|---|
//! | FIND_PEER | target | forward record of the target or null; token + closer nodes |
//! | LOOKUP | target | `lookupRawReply` of ≤ 20 random records (+ the forward record) or null if none; token + closer nodes |
//! | ANNOUNCE | target, token, valid `announce` with a peer signed for this node, or a refresh the node knows | null, no token, no closer nodes |
//! | UNANNOUNCE | target, token, `announce` with peer and valid unannounce signature | null, no token, no closer nodes |
//! | MUTABLE_PUT | target, token, `mutablePutRequest` with `hash(publicKey) = target` and valid signature | null (token + closer nodes), or error `SEQ_REUSED` / `SEQ_TOO_LOW` |
//! | MUTABLE_GET | target, value = `uint` minimum seq | stored `mutableGetResponse` if its seq ≥ the minimum, else null; token + closer nodes |
//! | IMMUTABLE_PUT | target, token, value with `hash(value) = target` | null; token + closer nodes |
//! | IMMUTABLE_GET | target | stored value or null; token + closer nodes |
//!
//! An ANNOUNCE whose peer's `hash(publicKey)` equals the target ("announce self", what a
//! listening server does) does not go into the topic records: it becomes the target's
//! *forward* (relay = the requester's address), which FIND_PEER returns, LOOKUP appends,
//! and the router uses to relay handshakes. An announce may carry a `refresh` value; the
//! node remembers it and a later announce with no peer and `refresh = r` where
//! `hash(r)` was remembered re-stores the same record without a new signature.
//!
//! # Differences from JS
//!
//! * Time is explicit: every call takes `now_ms`, which must be wall-clock milliseconds
//!   (`Date.now()`), because announce bumps are checked against it. The caches' GC
//!   timers (`setInterval` in JS) are run from the same clock; call [`RecordStore::gc`]
//!   at [`RecordStore::next_gc_at`] to expire records without traffic.
//! * Varints in non-shortest form are malformed here (JS accepts them).

mod cache;

use std::net::SocketAddrV4;

use intercom_encoding::{decode, encode, DecodeError};

pub use cache::{CacheLimits, RecordCache, Xache};

use crate::constants::{
    error_code, Command, DEFAULT_MAX_AGE_MS, DEFAULT_MAX_SIZE, DEFAULT_VALUE_MAX_AGE_MS,
    MAX_BUMP_DRIFT_MS, MAX_LOOKUP_RECORDS, MAX_RELAY_ADDRESSES,
};
use crate::crypto::{hash, verify_announce, verify_mutable, verify_unannounce};
use crate::messages::{
    decode_seq, Announce, LookupRawReply, MutableGetResponse, MutablePutRequest, PluginRequest,
};

/// Cache limits of a node's record store (`defaultCacheOpts` in `index.js`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Announcement records, counted per (topic, public key).
    pub records: CacheLimits,
    /// Remembered refresh tokens.
    pub refreshes: CacheLimits,
    /// Per-topic bump timestamps.
    pub bumps: CacheLimits,
    /// Mutable values.
    pub mutables: CacheLimits,
    /// Immutable values.
    pub immutables: CacheLimits,
    /// Forwards (peers announcing their own key); the router's `forwards` cache.
    pub forwards: CacheLimits,
    /// Seed for the lookup sampling; `None` seeds from the system RNG.
    pub rng_seed: Option<u64>,
}

impl StoreConfig {
    /// The limits a JS node derives from its `maxSize` / `maxAge` options (both optional,
    /// as `opts.maxSize || 65536`, `opts.maxAge || 20 min`).
    ///
    /// Mutables and immutables get half the size and, unless `max_age_ms` is given,
    /// 48 hours; a given `max_age_ms` applies to them too, as in JS.
    pub fn from_options(max_size: Option<usize>, max_age_ms: Option<u64>) -> Self {
        let size = max_size.filter(|&s| s > 0).unwrap_or(DEFAULT_MAX_SIZE);
        let given_age = max_age_ms.filter(|&a| a > 0);
        let age = given_age.unwrap_or(DEFAULT_MAX_AGE_MS);
        let values = CacheLimits::new(size / 2, given_age.unwrap_or(DEFAULT_VALUE_MAX_AGE_MS));
        StoreConfig {
            records: CacheLimits::new(size, age),
            refreshes: CacheLimits::new(size, age),
            bumps: CacheLimits::new(size, age),
            mutables: values,
            immutables: values,
            forwards: CacheLimits::new(size, age),
            rng_seed: None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::from_options(None, None)
    }
}

/// The fields of a dht-rpc request that the hyperdht handlers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// `req.target`.
    pub target: Option<&'a [u8; 32]>,
    /// `req.token`, present only if dht-rpc validated it.
    pub token: Option<&'a [u8; 32]>,
    /// `req.value`.
    pub value: Option<&'a [u8]>,
    /// `req.from`: the requester's address.
    pub from: SocketAddrV4,
}

/// What to send back for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Send nothing; the requester times out.
    Drop(DropReason),
    /// `req.reply(value, { token, closerNodes })`: a dht-rpc reply with error 0.
    Reply {
        /// The reply value.
        value: Option<Vec<u8>>,
        /// Include a fresh token for the requester.
        token: bool,
        /// Include the nodes closest to the target.
        closer_nodes: bool,
    },
    /// `req.error(code)`: a dht-rpc reply with a hyperdht error code.
    Error {
        /// The code ([`error_code::SEQ_REUSED`] or [`error_code::SEQ_TOO_LOW`]).
        code: u64,
        /// Include a fresh token (never, for the errors persistent.js sends).
        token: bool,
        /// Include the nodes closest to the target.
        closer_nodes: bool,
    },
}

impl Response {
    /// `req.reply(value)` with the default options: token and closer nodes.
    pub fn reply(value: Option<Vec<u8>>) -> Self {
        Response::Reply {
            value,
            token: true,
            closer_nodes: true,
        }
    }

    /// `req.reply(null, { token: false, closerNodes: false })`: a bare acknowledgement.
    pub fn ack() -> Self {
        Response::Reply {
            value: None,
            token: false,
            closer_nodes: false,
        }
    }

    /// `req.error(code)`: closer nodes, no token.
    pub fn error(code: u64) -> Self {
        Response::Error {
            code,
            token: false,
            closer_nodes: true,
        }
    }
}

/// Why a request was dropped without a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// The request had no target.
    #[error("request has no target")]
    MissingTarget,
    /// A write request had no (valid) token.
    #[error("request has no token")]
    MissingToken,
    /// The request had no value.
    #[error("request has no value")]
    MissingValue,
    /// The value did not decode.
    #[error("malformed value: {0}")]
    Malformed(#[from] DecodeError),
    /// An announce with neither a peer nor a refresh.
    #[error("announce has neither a peer nor a refresh")]
    NothingToAnnounce,
    /// A refresh-only announce whose refresh this node does not know.
    #[error("unknown refresh")]
    UnknownRefresh,
    /// An unannounce without a peer.
    #[error("unannounce has no peer")]
    MissingPeer,
    /// An announce or unannounce without a signature.
    #[error("missing signature")]
    MissingSignature,
    /// A signature that does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// A value whose hash (immutable) or key hash (mutable) is not the target.
    #[error("value does not hash to the target")]
    TargetMismatch,
}

/// How [`RecordStore::dispatch`] routed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Answered (or dropped) by the store.
    Handled(Response),
    /// PEER_HANDSHAKE or PEER_HOLEPUNCH: for the router.
    Router(Command),
    /// A decoded PLUGIN request: run the registered plugin with this name if its version
    /// matches, otherwise drop the request.
    Plugin(PluginRequest),
    /// Not served (unknown command, or the node is not persistent): dht-rpc replies
    /// `UNKNOWN_COMMAND`, with closer nodes iff the request had a target.
    Unhandled,
}

/// The entry a peer announcing its own key (or a local server) has in the forwarding
/// table (the router's `forwards`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The node the peer announced from, which relays handshakes to it (`None` for a
    /// server on this node).
    pub relay: Option<SocketAddrV4>,
    /// The peer's encoded `peer` record.
    pub record: Vec<u8>,
    /// A server listening on this node: retained until deleted, and not replaced by
    /// remote announcements (JS: the state has `onpeerhandshake`).
    pub local: bool,
}

/// What a remembered refresh re-stores.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refresh {
    target: [u8; 32],
    record: Vec<u8>,
    announce_self: bool,
}

/// The record store of a persistent HyperDHT node.
#[derive(Debug, Clone)]
pub struct RecordStore {
    records: RecordCache,
    bumps: Xache<[u8; 32], u64>,
    refreshes: Xache<[u8; 32], Refresh>,
    mutables: Xache<[u8; 32], MutableGetResponse>,
    immutables: Xache<[u8; 32], Vec<u8>>,
    forwards: Xache<[u8; 32], Forward>,
    rng: u64,
}

impl Default for RecordStore {
    fn default() -> Self {
        RecordStore::new(StoreConfig::default())
    }
}

impl RecordStore {
    /// An empty store. The GC clocks start at the first call that passes `now_ms`.
    pub fn new(config: StoreConfig) -> Self {
        let rng = config
            .rng_seed
            .unwrap_or_else(|| u64::from_le_bytes(intercom_crypto::random_array()));
        RecordStore {
            records: RecordCache::new(config.records),
            bumps: Xache::new(config.bumps),
            refreshes: Xache::new(config.refreshes),
            mutables: Xache::new(config.mutables),
            immutables: Xache::new(config.immutables),
            forwards: Xache::new(config.forwards),
            rng,
        }
    }

    /// Routes a request as `HyperDHT.onrequest` does. `node_id` is this node's id, `None`
    /// while the node is ephemeral or has no id (then only router commands are served).
    pub fn dispatch(
        &mut self,
        now_ms: u64,
        node_id: Option<&[u8; 32]>,
        command: u64,
        req: &Request<'_>,
    ) -> Dispatch {
        let Some(command) = Command::from_id(command) else {
            return Dispatch::Unhandled;
        };
        let response = match (command, node_id) {
            (Command::PeerHandshake | Command::PeerHolepunch, _) => {
                return Dispatch::Router(command)
            }
            (_, None) => return Dispatch::Unhandled,
            (Command::FindPeer, Some(_)) => self.on_find_peer(now_ms, req),
            (Command::Lookup, Some(_)) => self.on_lookup(now_ms, req),
            (Command::Announce, Some(id)) => self.on_announce(now_ms, id, req),
            (Command::Unannounce, Some(id)) => self.on_unannounce(now_ms, id, req),
            (Command::MutablePut, Some(_)) => self.on_mutable_put(now_ms, req),
            (Command::MutableGet, Some(_)) => self.on_mutable_get(now_ms, req),
            (Command::ImmutablePut, Some(_)) => self.on_immutable_put(now_ms, req),
            (Command::ImmutableGet, Some(_)) => self.on_immutable_get(now_ms, req),
            (Command::Plugin, Some(_)) => match on_plugin(req) {
                Ok(p) => return Dispatch::Plugin(p),
                Err(reason) => Response::Drop(reason),
            },
        };
        if let Response::Drop(reason) = &response {
            tracing::trace!(?command, %reason, "hyperdht request dropped");
        }
        Dispatch::Handled(response)
    }

    /// `onfindpeer`: the target's forward record, if any.
    pub fn on_find_peer(&mut self, now_ms: u64, req: &Request<'_>) -> Response {
        self.gc(now_ms);
        let Some(target) = req.target else {
            return Response::Drop(DropReason::MissingTarget);
        };
        Response::reply(self.forwards.get(target).map(|f| f.record.clone()))
    }

    /// `onlookup`: up to 20 random records of the topic, plus the forward record if there
    /// is room, with the topic's bump; null when there is nothing.
    pub fn on_lookup(&mut self, now_ms: u64, req: &Request<'_>) -> Response {
        self.gc(now_ms);
        let Some(target) = req.target else {
            return Response::Drop(DropReason::MissingTarget);
        };
        let mut rng = self.rng;
        let mut peers = self
            .records
            .sample(target, MAX_LOOKUP_RECORDS, |k| next_below(&mut rng, k));
        let bump = self.bumps.get(target).copied().unwrap_or(0);
        let forward = self.forwards.get(target);
        if let Some(f) = forward {
            if peers.len() < MAX_LOOKUP_RECORDS {
                peers.push(&f.record);
            }
        }
        let value = (!peers.is_empty()).then(|| encode(&LookupRawReply { peers, bump }));
        self.rng = rng;
        Response::reply(value)
    }

    /// `onannounce`: stores a signed record (or replays a known refresh).
    pub fn on_announce(&mut self, now_ms: u64, node_id: &[u8; 32], req: &Request<'_>) -> Response {
        self.gc(now_ms);
        let (target, token) = match (req.target, req.token) {
            (None, _) => return Response::Drop(DropReason::MissingTarget),
            (_, None) => return Response::Drop(DropReason::MissingToken),
            (Some(t), Some(k)) => (t, k),
        };
        let ann = match decode_value::<Announce>(req.value) {
            Ok(a) => a,
            Err(reason) => return Response::Drop(reason),
        };
        let Some(mut peer) = ann.peer else {
            return match ann.refresh {
                Some(refresh) => self.on_refresh(&refresh, req.from),
                None => Response::Drop(DropReason::NothingToAnnounce),
            };
        };
        let Some(signature) = ann.signature else {
            return Response::Drop(DropReason::MissingSignature);
        };
        let refresh = ann.refresh.as_ref();
        if !verify_announce(&signature, target, token, node_id, &peer, refresh) {
            return Response::Drop(DropReason::BadSignature);
        }

        peer.relay_addresses.truncate(MAX_RELAY_ADDRESSES);
        let announce_self = hash(&peer.public_key) == *target;
        let record = encode(&peer);

        if announce_self {
            self.set_forward(
                *target,
                Forward {
                    relay: Some(req.from),
                    record: record.clone(),
                    local: false,
                },
            );
            self.records.remove(target, &peer.public_key);
        } else {
            let current = self.bumps.get(target).copied().unwrap_or(0);
            if ann.bump > current && ann.bump <= now_ms.saturating_add(MAX_BUMP_DRIFT_MS) {
                self.bumps.set(*target, ann.bump);
            }
            self.records.add(*target, peer.public_key, record.clone());
        }

        if let Some(refresh) = refresh {
            self.refreshes.set(
                *refresh,
                Refresh {
                    target: *target,
                    record,
                    announce_self,
                },
            );
        }
        Response::ack()
    }

    /// `_onrefresh`: re-stores the record remembered under `hash(refresh)` and remembers
    /// it under `refresh` itself for the next link of the chain. The request's target is
    /// not consulted, as in JS.
    fn on_refresh(&mut self, refresh: &[u8; 32], from: SocketAddrV4) -> Response {
        let active = hash(refresh);
        let Some(r) = self.refreshes.get(&active).cloned() else {
            return Response::Drop(DropReason::UnknownRefresh);
        };
        // The record is a `peer` encoding this store made: it starts with the key.
        let Some(public_key) = r
            .record
            .get(..32)
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
        else {
            return Response::Drop(DropReason::UnknownRefresh);
        };
        if r.announce_self {
            self.set_forward(
                r.target,
                Forward {
                    relay: Some(from),
                    record: r.record.clone(),
                    local: false,
                },
            );
            self.records.remove(&r.target, &public_key);
        } else {
            self.records.add(r.target, public_key, r.record.clone());
        }
        self.refreshes.delete(&active);
        self.refreshes.set(*refresh, r);
        Response::ack()
    }

    /// `onunannounce`: removes the signer's record from the topic (and its forward).
    pub fn on_unannounce(
        &mut self,
        now_ms: u64,
        node_id: &[u8; 32],
        req: &Request<'_>,
    ) -> Response {
        self.gc(now_ms);
        let (target, token) = match (req.target, req.token) {
            (None, _) => return Response::Drop(DropReason::MissingTarget),
            (_, None) => return Response::Drop(DropReason::MissingToken),
            (Some(t), Some(k)) => (t, k),
        };
        let unann = match decode_value::<Announce>(req.value) {
            Ok(a) => a,
            Err(reason) => return Response::Drop(reason),
        };
        let Some(peer) = unann.peer else {
            return Response::Drop(DropReason::MissingPeer);
        };
        let Some(signature) = unann.signature else {
            return Response::Drop(DropReason::MissingSignature);
        };
        let refresh = unann.refresh.as_ref();
        if !verify_unannounce(&signature, target, token, node_id, &peer, refresh) {
            return Response::Drop(DropReason::BadSignature);
        }
        self.unannounce(target, &peer.public_key);
        Response::ack()
    }

    /// `Persistent.unannounce`: drops `public_key`'s record from `target`, and the
    /// target's forward (even a local one) when `target = hash(public_key)`. A node calls
    /// this for its own key pair when it unannounces.
    pub fn unannounce(&mut self, target: &[u8; 32], public_key: &[u8; 32]) {
        if hash(public_key) == *target {
            self.forwards.delete(target);
        }
        self.records.remove(target, public_key);
    }

    /// `onmutableget`: the stored value if its seq is at least the requested one.
    pub fn on_mutable_get(&mut self, now_ms: u64, req: &Request<'_>) -> Response {
        self.gc(now_ms);
        let Some(target) = req.target else {
            return Response::Drop(DropReason::MissingTarget);
        };
        let Some(value) = req.value else {
            return Response::Drop(DropReason::MissingValue);
        };
        let seq = match decode_seq(value) {
            Ok(s) => s,
            Err(e) => return Response::Drop(DropReason::Malformed(e)),
        };
        let reply = self
            .mutables
            .get(target)
            .filter(|stored| stored.seq >= seq)
            .map(encode);
        Response::reply(reply)
    }

    /// `onmutableput`: stores a signed value unless it would go back in seq or reuse
    /// the stored seq for a different value.
    pub fn on_mutable_put(&mut self, now_ms: u64, req: &Request<'_>) -> Response {
        self.gc(now_ms);
        let (target, _token) = match (req.target, req.token) {
            (None, _) => return Response::Drop(DropReason::MissingTarget),
            (_, None) => return Response::Drop(DropReason::MissingToken),
            (Some(t), Some(k)) => (t, k),
        };
        let put = match decode_value::<MutablePutRequest>(req.value) {
            Ok(p) => p,
            Err(reason) => return Response::Drop(reason),
        };
        if hash(&put.public_key) != *target {
            return Response::Drop(DropReason::TargetMismatch);
        }
        if !verify_mutable(&put.signature, put.seq, &put.value, &put.public_key) {
            return Response::Drop(DropReason::BadSignature);
        }
        if let Some(existing) = self.mutables.get(target) {
            if existing.seq == put.seq && existing.value != put.value {
                return Response::error(error_code::SEQ_REUSED);
            }
            if put.seq < existing.seq {
                return Response::error(error_code::SEQ_TOO_LOW);
            }
        }
        self.mutables.set(
            *target,
            MutableGetResponse {
                seq: put.seq,
                value: put.value,
                signature: put.signature,
            },
        );
        Response::reply(None)
    }

    /// `onimmutableget`: the stored value, if any.
    pub fn on_immutable_get(&mut self, now_ms: u64, req: &Request<'_>) -> Response {
        self.gc(now_ms);
        let Some(target) = req.target else {
            return Response::Drop(DropReason::MissingTarget);
        };
        Response::reply(self.immutables.get(target).cloned())
    }

    /// `onimmutableput`: stores a value under its own hash.
    pub fn on_immutable_put(&mut self, now_ms: u64, req: &Request<'_>) -> Response {
        self.gc(now_ms);
        let (target, value) = match (req.target, req.token, req.value) {
            (None, _, _) => return Response::Drop(DropReason::MissingTarget),
            (_, None, _) => return Response::Drop(DropReason::MissingToken),
            (_, _, None) => return Response::Drop(DropReason::MissingValue),
            (Some(t), Some(_), Some(v)) => (t, v),
        };
        if hash(value) != *target {
            return Response::Drop(DropReason::TargetMismatch);
        }
        self.immutables.set(*target, value.to_vec());
        Response::reply(None)
    }

    /// `Router.set`: a local forward is retained, a remote one cached (and ignored while
    /// a local one holds the target).
    pub fn set_forward(&mut self, target: [u8; 32], forward: Forward) {
        if forward.local {
            self.forwards.retain(target, forward);
        } else {
            self.forwards.set(target, forward);
        }
    }

    /// `Router.get`: the target's forward (refreshing its age).
    pub fn forward(&mut self, now_ms: u64, target: &[u8; 32]) -> Option<&Forward> {
        self.gc(now_ms);
        self.forwards.get(target)
    }

    /// `Router.delete`.
    pub fn delete_forward(&mut self, target: &[u8; 32]) -> Option<Forward> {
        self.forwards.delete(target)
    }

    /// Every record stored under `target`, in no particular order (not refreshed).
    pub fn records(&self, target: &[u8; 32]) -> Vec<&[u8]> {
        self.records.all(target).collect()
    }

    /// The stored mutable value of `target` (not refreshed).
    pub fn mutable(&self, target: &[u8; 32]) -> Option<&MutableGetResponse> {
        self.mutables.peek(target)
    }

    /// The stored immutable value of `target` (not refreshed).
    pub fn immutable(&self, target: &[u8; 32]) -> Option<&[u8]> {
        self.immutables.peek(target).map(Vec::as_slice)
    }

    /// The topic's bump (not refreshed), 0 if none.
    pub fn bump(&self, target: &[u8; 32]) -> u64 {
        self.bumps.peek(target).copied().unwrap_or(0)
    }

    /// Entry counts: (records, forwards, mutables, immutables, refreshes, bumps).
    pub fn sizes(&self) -> StoreSizes {
        StoreSizes {
            records: self.records.len(),
            forwards: self.forwards.len(),
            mutables: self.mutables.len(),
            immutables: self.immutables.len(),
            refreshes: self.refreshes.len(),
            bumps: self.bumps.len(),
        }
    }

    /// Runs the cache GC ticks due at `now_ms` (every `on_*` call does this first).
    pub fn gc(&mut self, now_ms: u64) {
        self.records.advance(now_ms);
        self.bumps.advance(now_ms);
        self.refreshes.advance(now_ms);
        self.mutables.advance(now_ms);
        self.immutables.advance(now_ms);
        self.forwards.advance(now_ms);
    }

    /// The earliest time a GC tick is due, once the clocks have started.
    pub fn next_gc_at(&self) -> Option<u64> {
        [
            self.records.next_gc_at(),
            self.bumps.next_gc_at(),
            self.refreshes.next_gc_at(),
            self.mutables.next_gc_at(),
            self.immutables.next_gc_at(),
            self.forwards.next_gc_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// `destroy`: drops everything (local forwards included).
    pub fn clear(&mut self) {
        self.records.clear();
        self.bumps.clear();
        self.refreshes.clear();
        self.mutables.clear();
        self.immutables.clear();
        self.forwards.clear();
    }
}

/// Entry counts of a [`RecordStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreSizes {
    /// Announcement records over all topics.
    pub records: usize,
    /// Forwards, local ones included.
    pub forwards: usize,
    /// Mutable values.
    pub mutables: usize,
    /// Immutable values.
    pub immutables: usize,
    /// Remembered refreshes.
    pub refreshes: usize,
    /// Topic bumps.
    pub bumps: usize,
}

/// `onplugin`: the decoded plugin request.
fn on_plugin(req: &Request<'_>) -> Result<PluginRequest, DropReason> {
    decode_value(req.value)
}

/// `decode(enc, req.value)`: a missing value is a drop like a malformed one.
fn decode_value<T: for<'a> intercom_encoding::Decode<'a>>(
    value: Option<&[u8]>,
) -> Result<T, DropReason> {
    let value = value.ok_or(DropReason::MissingValue)?;
    Ok(decode(value)?)
}

/// A uniform integer below `k` (k ≥ 1) from a SplitMix64 stream.
fn next_below(state: &mut u64, k: usize) -> usize {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // Multiply-shift keeps the bias below 2^-32 for any k that fits in memory.
    ((u128::from(z) * k as u128) >> 64) as usize
}

#[cfg(test)]
mod tests;
