//! The sans-io protomux state machine: frames in, frames and events out, no I/O and no clock.
//!
//! A driver feeds every frame the transport delivers to [`MuxCore::handle_frame`], writes
//! every frame [`MuxCore::poll_transmit`] yields, routes [`MuxCore::poll_event`] events to
//! the application, and calls [`MuxCore::handle_timeout`] at the time
//! [`MuxCore::poll_timeout`] asks for. The bookkeeping (local id free list, outgoing and
//! incoming open queues per protocol, pending buffers, corked batches) follows the JS module
//! field by field; see the crate docs for the places it deliberately differs.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use intercom_encoding::{uint_len, Reader, Writer};

use crate::frame::{
    encode_close, encode_message, encode_open, encode_reject, CONTROL_BATCH, CONTROL_CLOSE,
    CONTROL_OPEN, CONTROL_REJECT, MAX_BATCH, PENDING_OVERHEAD,
};
use crate::MuxError;

#[cfg(test)]
mod tests;

/// Default of [`CoreConfig::max_held_bytes`]: 4 MiB per connection (JS: unbounded; it
/// only pauses its stream above 32 KiB, which a single large frame can overshoot).
pub const DEFAULT_MAX_HELD_BYTES: usize = 4 * 1024 * 1024;

/// Limits and timing of a [`MuxCore`].
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How long (ms) a remote open that matches no local channel and no pairing is held
    /// before it is rejected. 0 rejects at once, as the JS module does.
    pub grace_ms: u64,
    /// Most remote opens that may wait for a local decision; one more is a protocol error.
    pub max_pending_opens: usize,
    /// Buffered bytes (512 + payload per message, as JS counts them) for channels the
    /// application has not accepted yet above which [`MuxCore::wants_pause`] turns true
    /// (JS `MAX_BUFFERED`).
    pub max_buffered: usize,
    /// Hard limit on everything held for unaccepted channels (buffered messages plus the
    /// handshakes of pending opens, each counted as 512 + length); above it the peer is
    /// treated as misbehaving and the mux fails.
    pub max_held_bytes: usize,
    /// Largest channel id the peer may use. JS peers reuse ids, so they never get near it.
    pub max_remote_id: u32,
    /// How deeply batch frames may nest (JS never nests them at all).
    pub max_batch_depth: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            grace_ms: 1000,
            max_pending_opens: 256,
            max_buffered: 32 * 1024,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            max_remote_id: 1 << 16,
            max_batch_depth: 4,
        }
    }
}

impl CoreConfig {
    /// The defaults with another grace period (ms).
    pub fn with_grace_ms(mut self, grace_ms: u64) -> Self {
        self.grace_ms = grace_ms;
        self
    }
}

/// A channel opened on this side: its local id plus a serial number, so a handle to a
/// closed channel can never address a later channel that reuses the id. Only meaningful
/// to the [`MuxCore`] that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    local: u32,
    serial: u64,
}

impl ChannelId {
    /// The local id the channel has on the wire (1-based, reused after close).
    pub fn local_id(&self) -> u32 {
        self.local
    }
}

/// What the core reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MuxEvent {
    /// The peer opened a protocol we have not opened but have [`MuxCore::pair`]ed: open the
    /// channel ([`MuxCore::open_channel`] pairs with it) or [`MuxCore::reject_remote`] it.
    RemoteOpenRequest {
        /// The protocol name.
        protocol: String,
        /// The channel id (`None` for an empty one).
        id: Option<Vec<u8>>,
    },
    /// Both sides have opened the channel (JS "fully opened").
    Opened {
        /// Our channel.
        channel: ChannelId,
        /// The handshake bytes the peer put in its open message.
        remote_handshake: Vec<u8>,
    },
    /// A message arrived on a channel.
    Message {
        /// Our channel.
        channel: ChannelId,
        /// The message type (index of the message in the JS channel definition).
        message_type: u32,
        /// The message bytes.
        payload: Vec<u8>,
    },
    /// The peer rejected our open; a `Closed { by_remote: true }` follows.
    Rejected {
        /// Our channel.
        channel: ChannelId,
    },
    /// The channel is closed; its handle is dead and its id may be reused.
    Closed {
        /// Our channel.
        channel: ChannelId,
        /// True when the peer closed or rejected it, or the transport went away.
        by_remote: bool,
    },
}

/// A message frame encoded ahead of time (for example by a channel handle on another task),
/// ready for [`MuxCore::send_encoded`]; it is transmitted without copying.
#[derive(Debug, Clone)]
pub struct EncodedMessage {
    channel: ChannelId,
    frame: Vec<u8>,
}

impl EncodedMessage {
    /// Encodes `uint localId, uint type, payload` for `channel`.
    pub fn new(channel: ChannelId, message_type: u32, payload: &[u8]) -> Self {
        EncodedMessage {
            channel,
            frame: encode_message(channel.local, message_type, payload),
        }
    }

    /// The channel the message is for.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Length of the whole frame.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// True if the frame is empty (never, for a frame built by [`EncodedMessage::new`]).
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }
}

/// A protocol name plus optional id: what pairs local and remote opens (JS `toKey`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    protocol: String,
    id: Option<Vec<u8>>,
}

impl Key {
    fn new(protocol: &str, id: Option<&[u8]>) -> Self {
        Key {
            protocol: protocol.to_owned(),
            // An empty id is written as "no id" (`c.optionalBuffer`), so they are one key.
            id: id.filter(|b| !b.is_empty()).map(<[u8]>::to_vec),
        }
    }
}

/// Per-key bookkeeping (JS `info`).
#[derive(Debug, Default)]
struct Info {
    /// Live local channels with this key.
    opened: usize,
    /// Local ids whose open the peer has neither answered nor rejected, oldest first.
    outgoing: VecDeque<u32>,
    /// Remote ids of held remote opens, oldest first.
    incoming: VecDeque<u32>,
}

impl Info {
    fn is_unused(&self) -> bool {
        self.opened == 0 && self.outgoing.is_empty() && self.incoming.is_empty()
    }
}

#[derive(Debug)]
struct LocalChannel {
    serial: u64,
    key: Key,
    /// The peer's id for this channel, 0 until the peer has opened it.
    remote_id: u32,
}

#[derive(Debug)]
enum LocalSlot {
    /// On the free list.
    Free,
    Live(LocalChannel),
    /// Closed before the peer answered the open; the id is freed when the answer (an open
    /// or a reject) arrives, as in JS.
    AwaitingAck(Key),
}

#[derive(Debug)]
enum RemoteSlot {
    /// Paired with this local id.
    Open(u32),
    /// The peer opened it, the application has not decided yet (JS `pending !== null`).
    Held(Box<Held>),
}

#[derive(Debug)]
struct Held {
    key: Key,
    handshake: Vec<u8>,
    /// Messages that arrived before the application accepted the channel.
    pending: Vec<(u32, Vec<u8>)>,
    /// Accounted size of `pending` (512 + length each).
    pending_cost: usize,
    /// When the open is rejected unless accepted; `None` while a pairing owns it.
    deadline: Option<u64>,
}

impl Held {
    fn handshake_cost(&self) -> usize {
        PENDING_OVERHEAD + self.handshake.len()
    }
}

/// Pairing registrations of one protocol (JS `_notify`).
#[derive(Debug, Default)]
struct Pairings {
    any_id: bool,
    ids: HashSet<Vec<u8>>,
}

#[derive(Debug)]
struct Batch {
    frame: Writer,
    last_channel: u32,
}

/// The protomux state machine: no I/O, no clock.
///
/// A driver feeds every frame the transport delivers to [`MuxCore::handle_frame`], writes
/// every frame [`MuxCore::poll_transmit`] yields in order, routes [`MuxCore::poll_event`]
/// events to the application, calls [`MuxCore::handle_timeout`] at the time
/// [`MuxCore::poll_timeout`] asks for, and stops reading while [`MuxCore::wants_pause`].
///
/// ```
/// use intercom_protomux::{CoreConfig, MuxCore, MuxEvent};
///
/// let mut core = MuxCore::new(CoreConfig::default());
/// let channel = core.open_channel("chat", None, b"hi")?;
/// assert_eq!(core.poll_transmit(), Some(b"\x00\x01\x01\x04chat\x00hi".to_vec()));
/// // The peer opens "chat" too (its id 1, handshake "yo"), then sends type 0 "hello".
/// core.handle_frame(b"\x00\x01\x01\x04chat\x00yo")?;
/// core.handle_frame(b"\x01\x00hello")?;
/// assert_eq!(
///     core.poll_event(),
///     Some(MuxEvent::Opened { channel, remote_handshake: b"yo".to_vec() })
/// );
/// assert!(matches!(core.poll_event(), Some(MuxEvent::Message { message_type: 0, .. })));
/// # Ok::<(), intercom_protomux::MuxError>(())
/// ```
#[derive(Debug)]
pub struct MuxCore {
    config: CoreConfig,
    /// Index = local id - 1.
    local: Vec<LocalSlot>,
    /// Free local indexes, reused last-in first-out like JS `_free.pop()`.
    free: Vec<u32>,
    /// Index = remote id - 1.
    remote: Vec<Option<RemoteSlot>>,
    infos: HashMap<Key, Info>,
    pairings: HashMap<String, Pairings>,
    /// (deadline, remote id) of held opens waiting out the grace period.
    timers: BTreeSet<(u64, u32)>,
    held_opens: usize,
    /// JS `_buffered`.
    buffered: usize,
    /// `buffered` plus the handshakes of held opens.
    held_bytes: usize,
    corked: u32,
    batch: Option<Batch>,
    transmit: VecDeque<Vec<u8>>,
    transmit_bytes: usize,
    events: VecDeque<MuxEvent>,
    now_ms: u64,
    next_serial: u64,
    destroyed: bool,
}

impl Default for MuxCore {
    fn default() -> Self {
        MuxCore::new(CoreConfig::default())
    }
}

impl MuxCore {
    /// A mux with no channels.
    pub fn new(config: CoreConfig) -> Self {
        MuxCore {
            config,
            local: Vec::new(),
            free: Vec::new(),
            remote: Vec::new(),
            infos: HashMap::new(),
            pairings: HashMap::new(),
            timers: BTreeSet::new(),
            held_opens: 0,
            buffered: 0,
            held_bytes: 0,
            corked: 0,
            batch: None,
            transmit: VecDeque::new(),
            transmit_bytes: 0,
            events: VecDeque::new(),
            now_ms: 0,
            next_serial: 1,
            destroyed: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    // ----------------------------------------------------------------- driver side

    /// Handles one frame from the transport. An error means the peer broke the protocol:
    /// the core is then destroyed (every channel gets `Closed { by_remote: true }`) and the
    /// driver should drop the transport, as JS destroys the stream.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Result<(), MuxError> {
        if self.destroyed {
            return Err(MuxError::Closed);
        }
        if frame.is_empty() {
            return Ok(()); // JS ignores empty frames
        }
        let result = self.decode_frame(frame);
        if result.is_err() {
            self.terminate(true);
        }
        result
    }

    /// [`MuxCore::handle_frame`] for an owned frame: a plain message for an open channel
    /// reuses the frame's allocation for the event payload.
    pub fn handle_frame_owned(&mut self, mut frame: Vec<u8>) -> Result<(), MuxError> {
        if self.destroyed {
            return Err(MuxError::Closed);
        }
        if let Some((channel, message_type, header)) = self.fast_path(&frame) {
            frame.drain(..header);
            self.events.push_back(MuxEvent::Message {
                channel,
                message_type,
                payload: frame,
            });
            return Ok(());
        }
        self.handle_frame(&frame)
    }

    /// Recognises `uint remoteId (open channel), uint type (fits u32)`.
    fn fast_path(&self, frame: &[u8]) -> Option<(ChannelId, u32, usize)> {
        let mut r = Reader::new(frame);
        let remote_id = r.uint().ok()?;
        let message_type = u32::try_from(r.uint().ok()?).ok()?;
        let Some(Some(RemoteSlot::Open(local))) = self.remote_slot(remote_id) else {
            return None;
        };
        let channel = self.live_id(*local)?;
        Some((channel, message_type, r.position()))
    }

    /// The next frame to write to the transport, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let frame = self.transmit.pop_front()?;
        self.transmit_bytes -= frame.len();
        Some(frame)
    }

    /// Bytes of frames waiting in [`MuxCore::poll_transmit`].
    pub fn transmit_backlog(&self) -> usize {
        self.transmit_bytes
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<MuxEvent> {
        self.events.pop_front()
    }

    /// The time (ms, same clock as [`MuxCore::handle_timeout`]) at which the core wants
    /// [`MuxCore::handle_timeout`] called.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.first().map(|&(deadline, _)| deadline)
    }

    /// Advances the core's clock to `now_ms` and rejects held remote opens whose grace
    /// period has run out. The clock also dates remote opens that arrive afterwards, so a
    /// driver should call this (cheaply) before [`MuxCore::handle_frame`] too. The clock
    /// never goes backwards.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        while let Some(&(deadline, remote_id)) = self.timers.first() {
            if deadline > self.now_ms {
                break;
            }
            self.timers.pop_first();
            tracing::debug!(remote_id, "rejecting remote open after the grace period");
            self.reject_held(remote_id);
        }
    }

    /// True when more than [`CoreConfig::max_buffered`] bytes are buffered for channels the
    /// application has not accepted: the driver should stop reading the transport until it
    /// turns false (JS pauses the stream).
    pub fn wants_pause(&self) -> bool {
        self.buffered > self.config.max_buffered
    }

    /// Bytes buffered for unaccepted channels, counted as JS does (512 + length each).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Remote opens waiting for a local decision.
    pub fn pending_remote_opens(&self) -> usize {
        self.held_opens
    }

    /// The transport is gone: every channel gets `Closed { by_remote: true }` and the core
    /// is destroyed (JS `_shutdown`).
    pub fn handle_transport_closed(&mut self) {
        if !self.destroyed {
            self.terminate(true);
        }
    }

    /// Destroys the mux locally: every channel gets `Closed { by_remote: false }`, queued
    /// frames are dropped and every later call fails with [`MuxError::Closed`].
    pub fn destroy(&mut self) {
        if !self.destroyed {
            self.terminate(false);
        }
    }

    /// True once the core is destroyed.
    pub fn is_destroyed(&self) -> bool {
        self.destroyed
    }

    // ------------------------------------------------------------ application side

    /// Opens a channel (JS `createChannel` + `open`). If the peer already opened this
    /// protocol and id and the open is held, the new channel pairs with it and `Opened`
    /// (then any buffered messages) is emitted at once; otherwise `Opened` follows when the
    /// peer opens it too. Several channels may share a protocol and id (JS `unique: false`);
    /// use [`MuxCore::is_opened`] to enforce uniqueness.
    pub fn open_channel(
        &mut self,
        protocol: &str,
        id: Option<&[u8]>,
        handshake: impl AsRef<[u8]>,
    ) -> Result<ChannelId, MuxError> {
        if self.destroyed {
            return Err(MuxError::Closed);
        }
        let index = match self.free.pop() {
            Some(index) => index as usize,
            None => {
                if self.local.len() >= u32::MAX as usize {
                    return Err(MuxError::TooManyChannels);
                }
                self.local.push(LocalSlot::Free);
                self.local.len() - 1
            }
        };
        let local = index as u32 + 1;
        let serial = self.next_serial;
        self.next_serial += 1;
        let channel = ChannelId { local, serial };

        let key = Key::new(protocol, id);
        let frame = encode_open(local, protocol, key.id.as_deref(), handshake.as_ref());
        let info = self.infos.entry(key.clone()).or_default();
        info.opened += 1;

        // Pair with the oldest held remote open of this key, as JS createChannel does.
        let mut accepted = None;
        while let Some(remote_id) = info.incoming.pop_front() {
            if let Some(held) = take_held(&mut self.remote, remote_id) {
                accepted = Some((remote_id, held));
                break;
            }
        }
        let Some((remote_id, held)) = accepted else {
            info.outgoing.push_back(local);
            set_slot(
                &mut self.local,
                index,
                LocalSlot::Live(LocalChannel {
                    serial,
                    key,
                    remote_id: 0,
                }),
            );
            self.write_control(frame);
            return Ok(channel);
        };

        self.forget_held(remote_id, &held);
        if let Some(slot) = self.remote.get_mut(slot_index(remote_id)) {
            *slot = Some(RemoteSlot::Open(local));
        }
        set_slot(
            &mut self.local,
            index,
            LocalSlot::Live(LocalChannel {
                serial,
                key,
                remote_id,
            }),
        );
        self.write_control(frame);
        let Held {
            handshake, pending, ..
        } = *held;
        self.events.push_back(MuxEvent::Opened {
            channel,
            remote_handshake: handshake,
        });
        for (message_type, payload) in pending {
            self.events.push_back(MuxEvent::Message {
                channel,
                message_type,
                payload,
            });
        }
        Ok(channel)
    }

    /// Sends a message on a channel (JS `message.send`); batched while corked.
    pub fn send(
        &mut self,
        channel: ChannelId,
        message_type: u32,
        payload: &[u8],
    ) -> Result<(), MuxError> {
        self.check_live(channel)?;
        if self.corked > 0 {
            let mut entry =
                Writer::with_capacity(uint_len(u64::from(message_type)) + payload.len());
            entry.uint(u64::from(message_type)).raw(payload);
            self.push_batch(channel.local, entry.as_slice());
        } else {
            self.push_transmit(encode_message(channel.local, message_type, payload));
        }
        Ok(())
    }

    /// Sends a message encoded with [`EncodedMessage::new`].
    pub fn send_encoded(&mut self, message: EncodedMessage) -> Result<(), MuxError> {
        self.check_live(message.channel)?;
        if self.corked > 0 {
            let header = uint_len(u64::from(message.channel.local));
            let entry = message.frame.get(header..).unwrap_or_default();
            self.push_batch(message.channel.local, entry);
        } else {
            self.push_transmit(message.frame);
        }
        Ok(())
    }

    /// Closes a channel (JS `channel.close`): sends the close message and emits
    /// `Closed { by_remote: false }`. Closing a closed channel does nothing.
    pub fn close(&mut self, channel: ChannelId) {
        if self.check_live(channel).is_ok() {
            self.write_control(encode_close(channel.local));
            self.close_local(channel.local, false);
        }
    }

    /// Closes every open channel, oldest id first.
    pub fn close_all(&mut self) {
        for channel in self.channels() {
            self.close(channel);
        }
    }

    /// The open channels, by local id.
    pub fn channels(&self) -> Vec<ChannelId> {
        self.local
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| match slot {
                LocalSlot::Live(ch) => Some(ChannelId {
                    local: index as u32 + 1,
                    serial: ch.serial,
                }),
                _ => None,
            })
            .collect()
    }

    /// True while `channel` is open (not closed, rejected or destroyed).
    pub fn is_channel_open(&self, channel: ChannelId) -> bool {
        self.check_live(channel).is_ok()
    }

    /// True once the peer has opened `channel` too.
    pub fn is_fully_opened(&self, channel: ChannelId) -> bool {
        match self.local.get(slot_index(channel.local)) {
            Some(LocalSlot::Live(ch)) => ch.serial == channel.serial && ch.remote_id != 0,
            _ => false,
        }
    }

    /// True if a channel with this protocol and id is open on our side (JS `opened`).
    pub fn is_opened(&self, protocol: &str, id: Option<&[u8]>) -> bool {
        self.infos
            .get(&Key::new(protocol, id))
            .is_some_and(|info| info.opened > 0)
    }

    /// True when no local id is in use or waiting for the peer (JS `isIdle`).
    pub fn is_idle(&self) -> bool {
        self.local.len() == self.free.len()
    }

    /// Registers interest in remote opens of `protocol` (with `id`, or any id if `None`),
    /// as JS `pair`: instead of being rejected after the grace period they are reported as
    /// [`MuxEvent::RemoteOpenRequest`] and held until the application opens or rejects
    /// them. Opens already held for the grace period are reported at once.
    pub fn pair(&mut self, protocol: &str, id: Option<&[u8]>) {
        let id = id.filter(|b| !b.is_empty());
        let entry = self.pairings.entry(protocol.to_owned()).or_default();
        match id {
            None => entry.any_id = true,
            Some(id) => {
                entry.ids.insert(id.to_vec());
            }
        }
        let mut claimed: Vec<(u32, Key)> = Vec::new();
        for (key, info) in &self.infos {
            if key.protocol != protocol || (id.is_some() && key.id.as_deref() != id) {
                continue;
            }
            for &remote_id in &info.incoming {
                claimed.push((remote_id, key.clone()));
            }
        }
        claimed.sort_by_key(|(remote_id, _)| *remote_id);
        for (remote_id, key) in claimed {
            let Some(Some(RemoteSlot::Held(held))) = self.remote.get_mut(slot_index(remote_id))
            else {
                continue;
            };
            if let Some(deadline) = held.deadline.take() {
                self.timers.remove(&(deadline, remote_id));
                self.events.push_back(MuxEvent::RemoteOpenRequest {
                    protocol: key.protocol,
                    id: key.id,
                });
            }
        }
    }

    /// Removes a pairing registration (JS `unpair`). Held opens it no longer covers start
    /// their grace period now.
    pub fn unpair(&mut self, protocol: &str, id: Option<&[u8]>) {
        let id = id.filter(|b| !b.is_empty());
        if let Some(entry) = self.pairings.get_mut(protocol) {
            match id {
                None => entry.any_id = false,
                Some(id) => {
                    entry.ids.remove(id);
                }
            }
            if !entry.any_id && entry.ids.is_empty() {
                self.pairings.remove(protocol);
            }
        }
        let mut orphaned = Vec::new();
        for (key, info) in &self.infos {
            if key.protocol == protocol && !self.is_paired(key) {
                orphaned.extend(info.incoming.iter().copied());
            }
        }
        orphaned.sort_unstable();
        let deadline = self.now_ms.saturating_add(self.config.grace_ms);
        for remote_id in orphaned {
            let Some(Some(RemoteSlot::Held(held))) = self.remote.get_mut(slot_index(remote_id))
            else {
                continue;
            };
            if held.deadline.is_none() {
                held.deadline = Some(deadline);
                self.timers.insert((deadline, remote_id));
            }
        }
        if self.config.grace_ms == 0 {
            self.handle_timeout(self.now_ms);
        }
    }

    /// Rejects every held remote open of this protocol and id (what JS does once the pair
    /// callback returns without opening). Returns how many were rejected.
    pub fn reject_remote(&mut self, protocol: &str, id: Option<&[u8]>) -> usize {
        let Some(info) = self.infos.get(&Key::new(protocol, id)) else {
            return 0;
        };
        let incoming: Vec<u32> = info.incoming.iter().copied().collect();
        for &remote_id in &incoming {
            self.reject_held(remote_id);
        }
        incoming.len()
    }

    /// Starts batching: until the matching [`MuxCore::uncork`], every frame goes into one
    /// batch frame (JS `cork`). Calls nest.
    pub fn cork(&mut self) {
        self.corked += 1;
    }

    /// Ends a [`MuxCore::cork`]; the outermost one queues the batch frame (JS `uncork`).
    /// An uncork without a cork does nothing.
    pub fn uncork(&mut self) {
        if self.corked == 0 {
            return;
        }
        self.corked -= 1;
        if self.corked == 0 {
            self.flush_batch();
        }
    }

    /// True while corked.
    pub fn is_corked(&self) -> bool {
        self.corked > 0
    }

    // -------------------------------------------------------------------- decoding

    fn decode_frame(&mut self, frame: &[u8]) -> Result<(), MuxError> {
        let mut r = Reader::new(frame);
        let remote_id = r.uint()?;
        self.dispatch(remote_id, r, 0)
    }

    /// JS `_decode`: `uint type`, then a control message or a channel message.
    fn dispatch(
        &mut self,
        remote_id: u64,
        mut r: Reader<'_>,
        depth: usize,
    ) -> Result<(), MuxError> {
        let kind = r.uint()?;
        if remote_id == 0 {
            return match kind {
                CONTROL_BATCH => self.on_batch(r, depth + 1),
                CONTROL_OPEN => self.on_open(r),
                CONTROL_REJECT => self.on_reject(r),
                CONTROL_CLOSE => self.on_close(r),
                _ => Ok(()), // unknown control messages are ignored
            };
        }
        self.on_message(remote_id, kind, r.rest())
    }

    fn on_message(&mut self, remote_id: u64, kind: u64, payload: &[u8]) -> Result<(), MuxError> {
        // Types beyond u32 cannot name a message any channel defines: ignore, as JS does
        // with types past `messages.length`.
        let Ok(message_type) = u32::try_from(kind) else {
            return Ok(());
        };
        let Some(index) = remote_index(&self.remote, remote_id) else {
            return Ok(()); // closed or never opened: could be a pipelined message
        };
        match self.remote.get_mut(index) {
            Some(Some(RemoteSlot::Open(local))) => {
                let local = *local;
                if let Some(channel) = self.live_id(local) {
                    self.events.push_back(MuxEvent::Message {
                        channel,
                        message_type,
                        payload: payload.to_vec(),
                    });
                }
                Ok(())
            }
            Some(Some(RemoteSlot::Held(held))) => {
                let cost = PENDING_OVERHEAD + payload.len();
                held.pending.push((message_type, payload.to_vec()));
                held.pending_cost += cost;
                self.buffered += cost;
                self.held_bytes += cost;
                if self.held_bytes > self.config.max_held_bytes {
                    crate::stats::held_bytes_exceeded(self.config.max_held_bytes);
                    return Err(MuxError::PendingOverflow(self.config.max_held_bytes));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// JS `_onbatch`: `uint channel`, then `uint len` + entry, where a zero length switches
    /// the channel to the uint that follows. Lengths past the end are clamped, as in JS.
    fn on_batch(&mut self, mut r: Reader<'_>, depth: usize) -> Result<(), MuxError> {
        if depth > self.config.max_batch_depth {
            return Err(MuxError::BatchTooDeep);
        }
        let mut remote_id = r.uint()?;
        let mut corked = false;
        while !r.is_empty() {
            let len = r.uint()?;
            if len == 0 {
                remote_id = r.uint()?;
                continue;
            }
            let remaining = r.remaining();
            let take = usize::try_from(len).map_or(remaining, |len| len.min(remaining));
            // Several entries: answer with one batch, as JS does.
            if !corked && take < remaining {
                corked = true;
                self.cork();
            }
            let entry = r.take(take)?;
            self.dispatch(remote_id, Reader::new(entry), depth)?;
        }
        if corked {
            self.uncork();
        }
        Ok(())
    }

    /// JS `_onopensession`.
    fn on_open(&mut self, mut r: Reader<'_>) -> Result<(), MuxError> {
        let remote_id = r.uint()?;
        // JS decodes strings with replacement characters rather than failing.
        let protocol = String::from_utf8_lossy(r.buffer()?).into_owned();
        let id = r.optional_buffer()?;
        let handshake = r.rest();

        // JS fails on id 0 too (its reply to it throws), destroying the stream.
        if remote_id == 0 {
            return Err(MuxError::InvalidOpen(0));
        }
        if remote_id > u64::from(self.config.max_remote_id) {
            return Err(MuxError::RemoteIdTooLarge(remote_id));
        }
        let remote_id = remote_id as u32;
        let index = slot_index(remote_id);
        // The peer may grow its ids by one at a time.
        if self.remote.len() == index {
            self.remote.push(None);
        }
        if !matches!(self.remote.get(index), Some(None)) {
            return Err(MuxError::InvalidOpen(u64::from(remote_id)));
        }

        let key = Key {
            protocol,
            id: id.map(<[u8]>::to_vec),
        };
        if let Some(local) = self
            .infos
            .get_mut(&key)
            .and_then(|info| info.outgoing.pop_front())
        {
            self.answer_outgoing(local, remote_id, &key, handshake);
            return Ok(());
        }
        self.hold(remote_id, key, handshake)
    }

    /// The peer opened what we opened first.
    fn answer_outgoing(&mut self, local: u32, remote_id: u32, key: &Key, handshake: &[u8]) {
        let index = slot_index(local);
        match self.local.get_mut(index) {
            Some(LocalSlot::Live(ch)) => {
                ch.remote_id = remote_id;
                let channel = ChannelId {
                    local,
                    serial: ch.serial,
                };
                if let Some(slot) = self.remote.get_mut(slot_index(remote_id)) {
                    *slot = Some(RemoteSlot::Open(local));
                }
                self.events.push_back(MuxEvent::Opened {
                    channel,
                    remote_handshake: handshake.to_vec(),
                });
            }
            Some(slot @ LocalSlot::AwaitingAck(_)) => {
                // We closed it already; now the id can be reused. JS stops here; we repeat
                // the close so that a peer that paired with our (closed) open, which JS does
                // when the close reached it while the open was still pending, closes too.
                // Harmless otherwise: the peer ignores a close for an id it has no channel for.
                *slot = LocalSlot::Free;
                self.free.push(index as u32);
                self.write_control(encode_close(local));
                self.gc(key);
            }
            _ => {}
        }
    }

    /// A remote open nothing local answers yet.
    fn hold(&mut self, remote_id: u32, key: Key, handshake: &[u8]) -> Result<(), MuxError> {
        if self.held_opens >= self.config.max_pending_opens {
            crate::stats::pending_opens_exceeded(self.config.max_pending_opens);
            return Err(MuxError::TooManyPendingOpens(self.config.max_pending_opens));
        }
        let cost = PENDING_OVERHEAD + handshake.len();
        if self.held_bytes + cost > self.config.max_held_bytes {
            crate::stats::held_bytes_exceeded(self.config.max_held_bytes);
            return Err(MuxError::PendingOverflow(self.config.max_held_bytes));
        }
        let paired = self.is_paired(&key);
        if !paired && self.config.grace_ms == 0 {
            self.write_control(encode_reject(u64::from(remote_id)));
            return Ok(());
        }
        let deadline = if paired {
            None
        } else {
            let deadline = self.now_ms.saturating_add(self.config.grace_ms);
            self.timers.insert((deadline, remote_id));
            Some(deadline)
        };
        self.infos
            .entry(key.clone())
            .or_default()
            .incoming
            .push_back(remote_id);
        self.held_opens += 1;
        self.held_bytes += cost;
        if paired {
            self.events.push_back(MuxEvent::RemoteOpenRequest {
                protocol: key.protocol.clone(),
                id: key.id.clone(),
            });
        }
        if let Some(slot) = self.remote.get_mut(slot_index(remote_id)) {
            *slot = Some(RemoteSlot::Held(Box::new(Held {
                key,
                handshake: handshake.to_vec(),
                pending: Vec::new(),
                pending_cost: 0,
                deadline,
            })));
        }
        Ok(())
    }

    /// JS `_onrejectsession`.
    fn on_reject(&mut self, mut r: Reader<'_>) -> Result<(), MuxError> {
        let local = r.uint()?;
        let invalid = MuxError::InvalidReject(local);
        let Some(index) = local
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.local.len())
        else {
            return Err(invalid);
        };
        let key = match self.local.get(index) {
            Some(LocalSlot::Live(ch)) if ch.remote_id == 0 => ch.key.clone(),
            Some(LocalSlot::AwaitingAck(key)) => key.clone(),
            _ => return Err(invalid),
        };
        let local = local as u32;
        let Some(info) = self.infos.get_mut(&key) else {
            return Err(invalid);
        };
        let Some(position) = info.outgoing.iter().position(|&l| l == local) else {
            return Err(invalid);
        };
        info.outgoing.remove(position);
        let slot = std::mem::replace(&mut self.local[index], LocalSlot::Free);
        self.free.push(index as u32);
        if let LocalSlot::Live(ch) = slot {
            info.opened -= 1;
            let channel = ChannelId {
                local,
                serial: ch.serial,
            };
            self.events.push_back(MuxEvent::Rejected { channel });
            self.events.push_back(MuxEvent::Closed {
                channel,
                by_remote: true,
            });
        }
        self.gc(&key);
        Ok(())
    }

    /// JS `_onclosesession`.
    fn on_close(&mut self, mut r: Reader<'_>) -> Result<(), MuxError> {
        let remote_id = r.uint()?;
        let Some(index) = remote_index(&self.remote, remote_id) else {
            return Ok(());
        };
        match self.remote.get(index) {
            Some(Some(RemoteSlot::Open(local))) => {
                let local = *local;
                self.close_local(local, true);
            }
            Some(Some(RemoteSlot::Held(_))) => {
                // JS ignores this and would later pair a local open with the dead remote
                // channel; rejecting it instead lets the peer free its id (its open is still
                // outstanding, so the reject is valid for it).
                self.reject_held(remote_id as u32);
            }
            _ => {}
        }
        Ok(())
    }

    // ------------------------------------------------------------------ bookkeeping

    fn terminate(&mut self, by_remote: bool) {
        self.destroyed = true;
        for channel in self.channels() {
            self.events
                .push_back(MuxEvent::Closed { channel, by_remote });
        }
        self.local.clear();
        self.free.clear();
        self.remote.clear();
        self.infos.clear();
        self.timers.clear();
        self.held_opens = 0;
        self.buffered = 0;
        self.held_bytes = 0;
        self.corked = 0;
        self.batch = None;
        self.transmit.clear();
        self.transmit_bytes = 0;
    }

    /// JS `_close`.
    fn close_local(&mut self, local: u32, by_remote: bool) {
        let index = slot_index(local);
        let Some(slot) = self.local.get_mut(index) else {
            return;
        };
        let LocalSlot::Live(ch) = std::mem::replace(slot, LocalSlot::Free) else {
            return;
        };
        if ch.remote_id != 0 {
            if let Some(remote) = self.remote.get_mut(slot_index(ch.remote_id)) {
                *remote = None;
            }
            self.free.push(index as u32);
        } else {
            // Still in `outgoing`: the id is freed when the peer answers the open.
            *slot = LocalSlot::AwaitingAck(ch.key.clone());
        }
        if let Some(info) = self.infos.get_mut(&ch.key) {
            info.opened -= 1;
        }
        self.gc(&ch.key);
        self.events.push_back(MuxEvent::Closed {
            channel: ChannelId {
                local,
                serial: ch.serial,
            },
            by_remote,
        });
    }

    /// Rejects a held remote open (JS `_rejectSession`).
    fn reject_held(&mut self, remote_id: u32) {
        let Some(held) = take_held(&mut self.remote, remote_id) else {
            return;
        };
        self.forget_held(remote_id, &held);
        if let Some(info) = self.infos.get_mut(&held.key) {
            info.incoming.retain(|&r| r != remote_id);
        }
        self.gc(&held.key);
        self.write_control(encode_reject(u64::from(remote_id)));
    }

    /// Removes a held open's timer and accounting (its slot is already taken).
    fn forget_held(&mut self, remote_id: u32, held: &Held) {
        if let Some(deadline) = held.deadline {
            self.timers.remove(&(deadline, remote_id));
        }
        self.held_opens -= 1;
        self.buffered -= held.pending_cost;
        self.held_bytes -= held.pending_cost + held.handshake_cost();
    }

    /// JS `_gc`.
    fn gc(&mut self, key: &Key) {
        if self.infos.get(key).is_some_and(Info::is_unused) {
            self.infos.remove(key);
        }
    }

    fn is_paired(&self, key: &Key) -> bool {
        self.pairings
            .get(&key.protocol)
            .is_some_and(|p| p.any_id || key.id.as_ref().is_some_and(|id| p.ids.contains(id)))
    }

    fn check_live(&self, channel: ChannelId) -> Result<(), MuxError> {
        if self.destroyed {
            return Err(MuxError::Closed);
        }
        match self.local.get(slot_index(channel.local)) {
            Some(LocalSlot::Live(ch)) if ch.serial == channel.serial => Ok(()),
            _ => Err(MuxError::ChannelClosed),
        }
    }

    fn live_id(&self, local: u32) -> Option<ChannelId> {
        match self.local.get(slot_index(local)) {
            Some(LocalSlot::Live(ch)) => Some(ChannelId {
                local,
                serial: ch.serial,
            }),
            _ => None,
        }
    }

    fn remote_slot(&self, remote_id: u64) -> Option<&Option<RemoteSlot>> {
        remote_index(&self.remote, remote_id).and_then(|i| self.remote.get(i))
    }

    // --------------------------------------------------------------------- output

    fn push_transmit(&mut self, frame: Vec<u8>) {
        self.transmit_bytes += frame.len();
        self.transmit.push_back(frame);
    }

    /// JS `_write0`: a control frame, or its bytes after the leading 0 into the batch.
    fn write_control(&mut self, frame: Vec<u8>) {
        if self.corked > 0 {
            self.push_batch(0, frame.get(1..).unwrap_or_default());
        } else {
            self.push_transmit(frame);
        }
    }

    /// JS `_pushBatch` and `_sendBatch`, writing the batch frame as entries arrive.
    fn push_batch(&mut self, channel: u32, entry: &[u8]) {
        if self
            .batch
            .as_ref()
            .is_some_and(|b| b.frame.len() >= MAX_BATCH)
        {
            self.flush_batch();
        }
        let batch = self.batch.get_or_insert_with(|| {
            let mut frame = Writer::new();
            frame
                .uint8(0)
                .uint8(CONTROL_BATCH as u8)
                .uint(u64::from(channel));
            Batch {
                frame,
                last_channel: channel,
            }
        });
        if batch.last_channel != channel {
            batch.frame.uint8(0).uint(u64::from(channel));
            batch.last_channel = channel;
        }
        batch.frame.buffer(entry);
    }

    fn flush_batch(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.push_transmit(batch.frame.into_vec());
        }
    }

    /// Checks the internal accounting; used by tests and the fuzz entry point.
    pub(crate) fn assert_invariants(&self) {
        let mut held = 0;
        let mut buffered = 0;
        let mut held_bytes = 0;
        for (index, slot) in self.remote.iter().enumerate() {
            match slot {
                Some(RemoteSlot::Held(h)) => {
                    held += 1;
                    buffered += h.pending_cost;
                    held_bytes += h.pending_cost + h.handshake_cost();
                    let info = self.infos.get(&h.key).expect("held open without info");
                    assert!(info.incoming.contains(&(index as u32 + 1)));
                    if let Some(d) = h.deadline {
                        assert!(self.timers.contains(&(d, index as u32 + 1)));
                    }
                }
                Some(RemoteSlot::Open(local)) => match self.local.get(slot_index(*local)) {
                    Some(LocalSlot::Live(ch)) => assert_eq!(ch.remote_id as usize, index + 1),
                    other => panic!("remote {} paired with {other:?}", index + 1),
                },
                None => {}
            }
        }
        assert_eq!(held, self.held_opens);
        assert_eq!(buffered, self.buffered);
        assert_eq!(held_bytes, self.held_bytes);
        assert_eq!(self.timers.len(), {
            self.remote
                .iter()
                .filter(|s| matches!(s, Some(RemoteSlot::Held(h)) if h.deadline.is_some()))
                .count()
        });
        let mut opened: HashMap<&Key, usize> = HashMap::new();
        for (index, slot) in self.local.iter().enumerate() {
            let local = index as u32 + 1;
            match slot {
                LocalSlot::Free => assert!(self.free.contains(&(index as u32))),
                LocalSlot::Live(ch) => {
                    *opened.entry(&ch.key).or_default() += 1;
                    let info = self.infos.get(&ch.key).expect("live channel without info");
                    assert_eq!(ch.remote_id == 0, info.outgoing.contains(&local));
                    if ch.remote_id != 0 {
                        assert!(matches!(
                            self.remote.get(slot_index(ch.remote_id)),
                            Some(Some(RemoteSlot::Open(l))) if *l == local
                        ));
                    }
                }
                LocalSlot::AwaitingAck(key) => {
                    let info = self.infos.get(key).expect("closed channel without info");
                    assert!(info.outgoing.contains(&local));
                }
            }
        }
        assert_eq!(
            self.free.len(),
            self.local
                .iter()
                .filter(|s| matches!(s, LocalSlot::Free))
                .count()
        );
        for (key, info) in &self.infos {
            assert_eq!(info.opened, opened.get(key).copied().unwrap_or(0));
            assert!(!info.is_unused(), "info {key:?} should have been collected");
        }
        assert_eq!(
            self.transmit_bytes,
            self.transmit.iter().map(Vec::len).sum::<usize>()
        );
    }
}

/// Index of a live-or-dead remote slot for `remote_id`, if one exists.
fn remote_index(remote: &[Option<RemoteSlot>], remote_id: u64) -> Option<usize> {
    let index = usize::try_from(remote_id.checked_sub(1)?).ok()?;
    (index < remote.len()).then_some(index)
}

/// Takes the held open out of its slot, leaving the slot empty.
fn take_held(remote: &mut [Option<RemoteSlot>], remote_id: u32) -> Option<Box<Held>> {
    let slot = remote.get_mut(slot_index(remote_id))?;
    match slot.take() {
        Some(RemoteSlot::Held(held)) => Some(held),
        other => {
            *slot = other;
            None
        }
    }
}

/// Vector index of a 1-based id (0 maps past any vector, so lookups find nothing).
fn slot_index(id: u32) -> usize {
    (id as usize).wrapping_sub(1)
}

fn set_slot(local: &mut [LocalSlot], index: usize, value: LocalSlot) {
    if let Some(slot) = local.get_mut(index) {
        *slot = value;
    }
}
