//! SC-Bridge: the WebSocket JSON API through which agents drive an Intercom peer's sidechannels.
//!
//! This crate matches the JS Intercom's `features/sc-bridge/index.js` (configured by the `--sc-bridge*` flags in its
//! `index.js`, documented in its `SKILL.md`): an agent written for the JS bridge works against this one unchanged.
//! It is transport and policy only; the sidechannel plane stays behind the [`Backend`] trait, and the runtime
//! pushes incoming sidechannel traffic in through a [`Publisher`].
//!
//! ```text
//!  agent ──ws://127.0.0.1:49222──> Bridge ── Session (auth, filters, subscriptions) ──> Backend (sidechannel)
//!        <── hello / replies / sidechannel_message ───── Publisher <──────────────────── runtime events
//! ```
//!
//! * [`protocol`]: serde types for every message, the lenient decoder and the JS helpers (`parseJsonOrBase64`).
//! * [`filter`]: the `a+b|c` word filter and the per-channel scope.
//! * [`Backend`]: what the runtime implements; [`Unattached`] is a never-ready placeholder.
//! * [`Bridge`]: the tokio server; [`BridgeConfig`] carries the reference's options plus our bounds.
//!
//! # Usage
//!
//! ```no_run
//! # async fn demo(backend: impl intercom_sc_bridge::Backend) -> Result<(), Box<dyn std::error::Error>> {
//! use intercom_sc_bridge::{Bridge, BridgeConfig, SidechannelMessage};
//! let bridge = Bridge::bind(
//!     BridgeConfig { token: Some(std::fs::read_to_string("token.txt")?.trim().into()), ..BridgeConfig::default() },
//!     backend,
//! )
//! .await?;
//! let publisher = bridge.publisher(); // hand this to the sidechannel runtime
//! let payload = serde_json::json!({"id": "m1", "from": "ab", "message": "hello"});
//! publisher.publish(SidechannelMessage::from_payload("0000intercom", &payload, 0).into());
//! bridge.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Wire protocol
//!
//! One JSON object per text frame. Replies echo an integer request `id` as their first field.
//!
//! | client → bridge                                      | bridge → client                                   |
//! |------------------------------------------------------|---------------------------------------------------|
//! | (connect)                                            | `hello {peer, address, entryChannel, filter, requiresAuth}` |
//! | `auth {token}`                                       | `auth_ok` / `error`                               |
//! | `ping`                                               | `pong {ts}`                                       |
//! | `send {channel, message, invite?, welcome?}`         | `sent {channel, peers, warning?}`                 |
//! | `join {channel, invite?, welcome?}`                  | `joined {channel}`                                |
//! | `leave {channel}`                                    | `left {channel, ok}`                              |
//! | `open {channel, via?, invite?, welcome?}`            | `open_requested {channel, via}`                   |
//! | `stats`                                              | `stats {channels, connectionCount, sidechannelStarted}` |
//! | `info`                                               | `info {info}`                                     |
//! | `subscribe` / `unsubscribe {channel \| channels}`    | `subscribed {channels}`                           |
//! | `set_filter {filter}` / `clear_filter`               | `filter_set {filter}`                             |
//! | `cli {command}` (CLI enabled only)                   | `cli_result {command, ok, output, error, result}` |
//! | any failure                                          | `error {error, code}`                             |
//! | (events, after auth)                                 | `sidechannel_message {channel, id, from, origin, sig, relayedBy, ttl, ts, message}`, `sidechannel_drop {channel, reason, from, detail, ts}` |
//!
//! `invite` / `welcome` may be JSON objects, JSON strings or base64 of JSON (the reference's `parseJsonOrBase64`).
//! Error texts are the reference's (`Unauthorized.`, `Invalid JSON.`, `Unknown type: x`, `Missing channel.`,
//! `Sidechannel not ready.`, `Send denied (invite required or invalid).`, ...).
//!
//! # Differences from the JS bridge
//!
//! Additions (ignored by JS-era agents):
//! * Every `error` frame has a stable `code` (see [`ErrorCode`]) next to the reference's `error` text.
//! * `sent` carries `peers`, the number of connected peers the message was handed to. When it is `0` the reply is
//!   still `sent` (the JS bridge replies `sent` too, and agents treat it as success) but with
//!   `warning: "no_peers"`, so a new agent can tell that nobody received it. We chose a warning over an error so
//!   that the JS-compatible success path is preserved.
//! * `sidechannel_drop` events surface messages the sidechannel dropped (rate limit, policy) when the runtime
//!   publishes [`Event::Drop`]; the JS bridge drops silently. [`Event::Other`] lets the runtime publish other
//!   frames.
//!
//! Bounds the JS bridge does not have (each failure has a code and, where the connection is closed, a close code):
//! * `max_frame_bytes` (default 1 MiB + 64 KiB): a larger frame or message gets `frame_too_large`, then close 1009.
//! * `max_clients` (default 256) authenticated clients: a right token beyond it gets `too_many_clients`, then close
//!   1013. Unauthenticated connections never take these slots.
//! * `max_pending` (default 64) unauthenticated connections, counted from the TCP accept (upgraded or not): when
//!   full, the oldest pending connection of the source (IPv4 address or IPv6 /64) holding the most is closed to
//!   admit the new one, so idle connections cannot lock agents out. A pending connection has no writer task or
//!   queue and may send at most `pre_auth_bytes` (64 KiB, its upgrade request included) before it authenticates.
//! * `auth_throttle`: wrong tokens are charged to token buckets per source (50/s, burst 50) and global (200/s,
//!   burst 200); while a bucket is empty, `auth` requests wait (in arrival order, one queue per source, so a
//!   throttled source does not hold up others) before their token is compared. A right token is never charged.
//!   Failures, throttling, evictions and refused origins are logged as warnings, at most one per kind per 10 s.
//! * `Origin` allow-list ([`OriginPolicy`]): upgrades without `Origin` (local agents) are accepted, browser origins
//!   only when listed in `allowed_origins` (`--sc-bridge-origin`); others get HTTP 403.
//! * Tokens are checked at [`Bridge::bind`] by [`check_token`] (at least 16 bytes, 8 distinct characters and an
//!   estimated 128 bits): a weak token is refused with [`BridgeError::WeakToken`].
//! * Binding a non-loopback address logs a warning.
//! * `outbound_queue` (default 16,384 frames), `outbound_queue_bytes` (16 MiB) and `write_timeout` (10 s): a client
//!   that stops reading is disconnected once its queue is full instead of buffering without bound (what its socket
//!   still takes within 2 s is followed by an `error` with code `slow_consumer` and close 1013); other clients are
//!   never delayed by it.
//! * `auth_timeout` (5 s from the TCP accept; the upgrade itself must finish within `handshake_timeout`, 3 s):
//!   unauthenticated clients get `auth_timeout`, then close 1008.
//! * `max_auth_failures` (5): after that many wrong tokens the connection is closed (1008).
//! * `rate_limit` (50,000/s, burst 20,000, per client; a guard against runaway loops, high enough for bursts at full
//!   sidechannel speed): extra commands get `rate_limited` and are not executed.
//! * `max_subscriptions` (1024): a `subscribe` that would exceed it gets `too_many_channels`.
//! * `backend_timeout` (60 s, then a `timeout` error).
//!
//! [`Bridge::guard_stats`] counts what these guards did.
//!
//! Behaviour changes:
//! * On shutdown every client gets an `error` with code `shutting_down`, then close 1001.
//! * The token is compared in constant time (the reference uses `===`).
//! * `send` without a `message` field is rejected with `Missing message.` (`missing_field`); the reference would
//!   broadcast `undefined`.
//! * A JSON array frame is `Invalid message.` (the reference treats it as an object without `type`).
//! * Invites/welcomes must decode to JSON objects; the reference passes other truthy JSON on to the sidechannel.
//! * Replies to one client leave strictly in request order, so a `pong` after a slow `join` waits for it; the
//!   reference interleaves replies of its asynchronous commands (`join`, `leave`, `cli`). Use `id`s to correlate.
//!   Consecutive `send`s are pipelined (up to 64 in flight per client, broadcast in request order); any other
//!   request waits until the sends before it have completed.
//! * `set_filter` with a non-string `filter` echoes it as a string.
//! * There is no `debug` option: logging goes through `tracing` (target `intercom_sc_bridge`).
//! * `info` comes from [`BridgeConfig::info`], or else [`Backend::info`]; `hello`'s identity from
//!   [`Backend::identity`].
//! * Binary frames are decoded as UTF-8 JSON, as in the reference; invalid UTF-8 gets `Invalid JSON.`.
//!
//! Kept as in the reference: `auth` is answered even before auth; `Auth not enabled.` when no token is configured;
//! wrong tokens get `Unauthorized.`; unauthenticated clients get no events; unsubscribing from every channel means
//! "all channels" again; `leave` also unsubscribes the client from that channel; filters apply only to the
//! `filter_channels` when set; the default filter is shown in `hello` and applies to new clients.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod error;
pub mod filter;
mod guard;
pub mod origin;
pub mod protocol;
mod server;
mod session;
pub mod token;

pub use backend::{
    valid_agent_name, Backend, Identity, InboxRequest, JoinRequest, OpenRequest, SendReport,
    SendRequest, SubnetRequest, Unattached, DEFAULT_INBOX_LIMIT, MAX_INBOX_LIMIT,
    MAX_INBOX_WAIT_MS,
};
pub use error::{BackendError, BridgeError, ErrorCode};
pub use filter::{Filter, FilterScope};
pub use guard::AuthThrottleConfig;
pub use origin::{normalize_origin, own_origins, InvalidOrigin, OriginPolicy, OriginVerdict};
pub use protocol::{
    CliReply, CliResult, ClientMessage, DropNotice, ErrorReply, Event, Hello, Request,
    ServerMessage, SidechannelMessage, Stats,
};
pub use server::{
    Bridge, BridgeConfig, GuardStats, PublishReport, Publisher, RateLimit, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_PORT,
};
pub use session::constant_time_eq;
pub use token::{check_token, WeakToken, TOKEN_SUGGESTION};
