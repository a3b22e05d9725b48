//! The peer runtime: the thin async driver of the sans-io sidechannel plane, matching what
//! the JS Intercom's `index.js` wires together (`Sidechannel` + the swarm's connections +
//! `ScBridge` + the terminal's sidechannel commands).
//!
//! ```text
//!            PeerHandle (bounded commands, oneshot replies)        ConnectionSink
//!  SC-Bridge ──> PeerBackend ──┐   TTY ──> cli::Dispatcher ──┐      (swarm adapter)
//!                              v                              v            │ Connection {key, Mux, MuxEvents}
//!                       ┌──────────────── runtime task ─────────────────┐ <┘
//!                       │ Sidechannel plane (owned, drained after every │
//!                       │ input) · ConnId → connection · retries        │──> Discovery::join/leave(topic)
//!                       └───────────────────────────────────────────────┘──> EventSinks (bridge, console)
//!                          ^ bounded internal queue          │ try_send (never blocks)
//!        per connection:   │ remote opens, mux closed        v
//!        per channel:      │ opened / message / closed    writer queue ──> Channel (type 0)
//!        PoW:              │ spawn_blocking(BroadcastJob::run) -> Prepared
//! ```
//!
//! One task owns the [`Sidechannel`](intercom_sidechannel::Sidechannel) plane. Everything
//! reaches it through bounded queues: commands from [`PeerHandle`], new connections from
//! the [`ConnectionSink`], and events from the per-connection and per-channel tasks. After
//! every input it drains the plane's outputs:
//!
//! * `OpenChannel`: a channel task registers the protocol with [`Mux::pair`](intercom_protomux::Mux::pair) (so remote
//!   opens are reported, as the reference's `mux.pair` does), opens `sidechannel/<name>`
//!   (no id, no handshake) and waits for the peer's open. A channel the peer rejects is
//!   retried up to five times, 100 ms × attempt apart (the reference's retry burst); a
//!   remote open for a joined channel is always accepted, one for a channel we have not
//!   joined is rejected.
//! * `Send`: the bytes go to the channel's bounded writer queue with `try_send`; a full
//!   queue drops the frame and reports it ([`PeerEvent::SendDropped`], counted in
//!   [`RuntimeStats::send_queue_full`]). The plane task never waits on a peer; instead,
//!   while a writer queue is more than three quarters full it takes no new command, so
//!   local sends are paced to the network (a peer that takes no frame for
//!   `send_stall_limit` loses frames rather than stalling everyone).
//! * `CloseChannel`: the channel task closes the channel; the protocol is unpaired.
//! * Events: `Joined`/`Left` become [`Discovery::join`]/[`Discovery::leave`]; every event
//!   goes to the [`EventSink`]s (the bridge's [`BridgeSink`], the [`cli::ConsoleSink`]).
//!
//! Sends that need a proof of work run it on a blocking thread: `begin_broadcast` in the
//! task, [`tokio::task::spawn_blocking`] for `BroadcastJob::run`, `finish_broadcast` back
//! in the task. Without proof of work the payload is signed in the task itself (one
//! Ed25519 signature costs less than the two hops, and a burst stays in order).
//! `/sc_open` requests and control payloads are built inline (one proof of work each
//! at the configured difficulty, about 4,096 hashes at the default 12 bits).
//!
//! # The network seam
//!
//! The runtime never touches the DHT or sockets. A network adapter (the Hyperswarm swarm
//! in `dht/swarm`, or [`testing::connect`] in memory) does two things:
//!
//! 1. implements [`Discovery`]: `join(topic)` / `leave(topic)` are called from the runtime
//!    task for every joined / left channel (`sha256("sidechannel:" + name)`, both server
//!    and client mode as the reference joins) and must not block;
//! 2. hands every established, authenticated connection to [`ConnectionSink::add`] as a
//!    [`Connection`]: the remote's Noise static public key and a started
//!    [`Mux`](intercom_protomux::Mux) with its [`MuxEvents`](intercom_protomux::MuxEvents) (the swarm's secret-stream split into `SecretReader`/`SecretWriter`
//!    and wrapped with `Mux::new`). The runtime owns the mux from then on; when the mux
//!    ends (either side), the connection is gone for the plane.
//!
//! # Deliberate differences from the reference runtime
//!
//! * A `send` (bridge or `/sc_send`) on a channel we have not joined joins it first, topic
//!   included; the reference's `broadcast` registers the channel for existing connections
//!   but does not join its topic.
//! * A send that reaches no peer succeeds with `peers: 0` ([`SendOutcome`]); the bridge
//!   turns that into `sent` with `warning: "no_peers"`.
//! * Frames that do not fit a channel's writer queue are dropped and reported, where JS
//!   buffers without bound.
//! * Drops the plane reports (except duplicates and our own echoes, which are normal in a
//!   relaying mesh) are published to the bridge as `sidechannel_drop`, and remote open
//!   requests as `sidechannel_open_request` (both additions; JS agents ignore them).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bridge;
pub mod cli;
mod congestion;
pub mod counters;
mod events;
pub mod inbox;
mod network;
mod runtime;
mod tasks;
pub mod testing;

pub use bridge::{publish_subnet_events, BridgeSink, PeerBackend};
pub use counters::{CountersSnapshot, PeerCounters};
pub use events::{EventSink, PeerEvent};
pub use network::{Connection, ConnectionSink, Discovery, NoNetwork, TopicCommand, TopicQueue};
pub use runtime::{PeerConfig, PeerError, PeerHandle, PeerRuntime, RuntimeStats, SendOutcome};
