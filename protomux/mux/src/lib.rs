//! protomux: named channels multiplexed over one message-preserving stream, wire-compatible
//! with the JS [`protomux`](https://github.com/holepunchto/protomux) module, version 3.12.1.
//!
//! Every transport frame carries one protomux message:
//!
//! ```text
//! uint channel (the sender's local id, 0 = control), uint type, payload
//! control 0 batch:  uint firstChannel, then { uint len, entry } where a len of 0 means
//!                   "the next uint is a new channel"; an entry is uint type + payload
//! control 1 open:   uint localId, string protocol, optionalBuffer id, handshake bytes
//! control 2 reject: uint remoteId (the id the rejected open used)
//! control 3 close:  uint localId
//! ```
//!
//! The crate has three layers:
//!
//! * [`MuxCore`]: a sans-io state machine (frames in, frames and events out, time passed in
//!   as milliseconds). All wire handling lives here.
//! * [`Mux`] / [`Channel`]: a tokio driver that owns a core and a transport in one task and
//!   gives out cheap handles with bounded queues in both directions.
//! * [`FrameReceiver`] / [`FrameSender`]: the transport traits, with an in-memory pair
//!   ([`memory_pair`]) and a uint24-length-prefixed framing over any byte stream
//!   ([`Uint24Framed`]).
//!
//! # Differences from the JS module
//!
//! * **Grace period for unmatched remote opens.** JS rejects a remote open at once when no
//!   local channel is waiting for it and no `pair` callback is registered, because JS code
//!   creates its channels synchronously in the same tick. Rust applications attach channels
//!   asynchronously, so the core holds such an open for [`CoreConfig::grace_ms`] (default
//!   1000 ms) and rejects it only if no local channel has been opened for it by then. Set it
//!   to 0 for the JS behaviour. With a pairing registered ([`MuxCore::pair`]) the open is
//!   reported as [`MuxEvent::RemoteOpenRequest`] and held until the application opens or
//!   rejects it, like the JS `notify` callback.
//! * **Bounds.** JS has no limit on held remote opens and only pauses the stream when too
//!   much is buffered for them; the core also fails the mux beyond
//!   [`CoreConfig::max_pending_opens`] held opens, [`CoreConfig::max_held_bytes`] held data
//!   (4 MiB by default; both counted in [`stats::limit_stats`]),
//!   [`CoreConfig::max_remote_id`] and [`CoreConfig::max_batch_depth`].
//! * **A close for a held remote open** is answered with a reject (JS ignores it and could
//!   later pair a local channel with the dead remote one); the reject lets the peer free its
//!   id. When the peer opens a channel we already closed, we repeat our close after freeing
//!   the id, so a JS peer that paired with our dead open does not keep a half-open channel.
//! * **Message types are not declared** per channel: every message is delivered with its
//!   type and the application ignores types it does not know (JS drops types past the
//!   channel's `messages` list). Handshakes and payloads are raw bytes; callers encode them.
//! * **No aliases, no `unique` flag**: several channels may share a protocol and id;
//!   [`MuxCore::is_opened`] tells whether one is open.
//! * Strings with invalid UTF-8 are decoded with replacement characters, as JS does; varints
//!   in non-shortest form are rejected (the compact-encoding crate is strict).
//! * Local closes also produce a `Closed { by_remote: false }` event, and a local
//!   [`MuxCore::destroy`] reports `by_remote: false` (JS reports every shutdown as remote).
//!   A rejected open produces [`MuxEvent::Rejected`] before its `Closed`.
//! * When a batch arrives the core corks only while it processes the batch, so its own
//!   replies (rejects) go out as one batch; JS also keeps the cork until its message
//!   handlers settle, which an asynchronous application cannot mirror.

mod core;
mod driver;
mod error;
pub mod frame;
mod secret_stream;
pub mod stats;
mod transport;

pub use crate::core::{
    ChannelId, CoreConfig, EncodedMessage, MuxCore, MuxEvent, DEFAULT_MAX_HELD_BYTES,
};
pub use crate::driver::{
    Channel, ChannelEvent, ChannelOptions, ChannelSender, DriverEvent, Mux, MuxConfig, MuxEvents,
};
pub use crate::error::MuxError;
pub use crate::transport::{
    memory_pair, FrameReceiver, FrameSender, MemReceiver, MemSender, Uint24FrameReader,
    Uint24FrameWriter, Uint24Framed, MAX_UINT24_FRAME,
};

/// Fuzzing entry point: runs `data` through a fresh [`MuxCore`] and checks its internal
/// accounting after every step. It must never panic.
///
/// The first byte picks the grace period; after it, each length byte `n < 0xf0` is followed
/// by a frame of `n` bytes (fewer at the end), and bytes from `0xf0` are local operations
/// (open, close, send, cork, uncork, advance time, reject, pair, unpair) taking one
/// argument byte.
pub fn fuzz_frames(data: &[u8]) {
    let Some((&setup, mut rest)) = data.split_first() else {
        return;
    };
    let config = CoreConfig {
        grace_ms: u64::from(setup & 3) * 10,
        max_pending_opens: 8,
        max_buffered: 2048,
        max_held_bytes: 64 * 1024,
        max_remote_id: 64,
        max_batch_depth: 3,
    };
    const PROTOCOLS: [&str; 3] = ["a", "b", "c"];
    let mut core = MuxCore::new(config);
    let mut channels: Vec<ChannelId> = Vec::new();
    let mut now = 0u64;
    let mut owned = setup & 4 != 0;
    if setup & 8 != 0 {
        core.pair("a", None);
    }
    let open = |core: &mut MuxCore, channels: &mut Vec<ChannelId>, arg: u8| {
        let protocol = PROTOCOLS[usize::from(arg) % PROTOCOLS.len()];
        let id = [arg >> 4];
        let id = (arg & 8 != 0).then_some(&id[..]);
        if let Ok(channel) = core.open_channel(protocol, id, [arg]) {
            channels.push(channel);
        }
    };
    open(&mut core, &mut channels, 0);
    open(&mut core, &mut channels, 1);
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        if op < 0xf0 {
            let n = usize::from(op).min(rest.len());
            let (frame, tail) = rest.split_at(n);
            rest = tail;
            owned = !owned;
            let result = if owned {
                core.handle_frame_owned(frame.to_vec())
            } else {
                core.handle_frame(frame)
            };
            assert!(result.is_ok() || core.is_destroyed());
        } else {
            let Some((&arg, tail)) = rest.split_first() else {
                break;
            };
            rest = tail;
            let pick = |channels: &[ChannelId]| {
                (!channels.is_empty()).then(|| channels[usize::from(arg) % channels.len()])
            };
            match op {
                0xf0 => open(&mut core, &mut channels, arg),
                0xf1 => {
                    if let Some(channel) = pick(&channels) {
                        core.close(channel);
                    }
                }
                0xf2 => {
                    if let Some(channel) = pick(&channels) {
                        let _ = core.send(channel, u32::from(arg & 3), &[arg; 3]);
                    }
                }
                0xf3 => core.cork(),
                0xf4 => core.uncork(),
                0xf5 => {
                    now += u64::from(arg);
                    core.handle_timeout(now);
                }
                0xf6 => {
                    core.reject_remote(PROTOCOLS[usize::from(arg) % PROTOCOLS.len()], None);
                }
                0xf7 => core.pair(PROTOCOLS[usize::from(arg) % PROTOCOLS.len()], None),
                0xf8 => core.unpair(PROTOCOLS[usize::from(arg) % PROTOCOLS.len()], None),
                _ => {
                    if let Some(channel) = pick(&channels) {
                        let message = EncodedMessage::new(channel, u32::from(arg), &[arg]);
                        let _ = core.send_encoded(message);
                    }
                }
            }
        }
        while let Some(event) = core.poll_event() {
            match event {
                MuxEvent::Closed { channel, .. } => channels.retain(|c| *c != channel),
                MuxEvent::RemoteOpenRequest { protocol, id } => {
                    if id.is_some() {
                        core.reject_remote(&protocol, id.as_deref());
                    } else if let Ok(channel) = core.open_channel(&protocol, id.as_deref(), []) {
                        channels.push(channel);
                    }
                }
                _ => {}
            }
        }
        while let Some(frame) = core.poll_transmit() {
            // Everything we write must at least parse as a protomux frame header.
            let mut r = intercom_encoding::Reader::new(&frame);
            assert!(r.uint().is_ok() && r.uint().is_ok());
        }
        core.assert_invariants();
        if core.is_destroyed() {
            break;
        }
    }
}
