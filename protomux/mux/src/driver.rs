//! The tokio driver: one task owns a [`MuxCore`] and the transport; cheap [`Mux`] and
//! [`Channel`] handles talk to it through bounded queues.
//!
//! Outgoing: a channel handle encodes its message frame itself and puts it on the bounded
//! command queue; the task hands it to the core and writes whatever is queued in one burst
//! (then one flush) while it keeps reading. Incoming: frames go through the core into a
//! bounded per-channel queue; while any queue is over its limit (or the core holds too
//! much for unaccepted channels) the task stops reading the transport.
//!
//! Every queue is bounded, unlike JS where `write` always buffers. So a task that only
//! sends on a channel while the peer's task also only sends can stall once both
//! directions are full; receive and send from separate tasks ([`Channel::sender`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::core::{ChannelId, CoreConfig, EncodedMessage, MuxCore, MuxEvent};
use crate::{FrameReceiver, FrameSender, MuxError};

/// Commands taken from the queue per wake-up.
const COMMAND_BATCH: usize = 64;
/// Bytes a queued channel event is counted as on top of its payload.
const EVENT_OVERHEAD: usize = 64;

/// Settings of a [`Mux`].
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Settings of the protocol core (grace period, limits).
    pub core: CoreConfig,
    /// Commands (sends, opens, closes...) that may wait for the driver task.
    pub command_queue: usize,
    /// Bytes (payload + 64 per event) a channel's receive queue holds before the driver
    /// stops reading the transport.
    pub channel_queue_bytes: usize,
    /// Events a channel's receive queue holds before the driver stops reading.
    pub channel_queue_messages: usize,
    /// Bytes queued for the transport above which the driver takes no more commands.
    pub write_high_water: usize,
    /// Mux-level events that may wait in [`MuxEvents`]; remote opens that find it full
    /// are rejected.
    pub event_queue: usize,
    /// How long a graceful [`Mux::close`] waits for the peer to end its side.
    pub close_timeout: Duration,
    /// Send an empty frame when nothing was written for this long (secret-stream's
    /// keep-alive: both JS secret-stream and protomux ignore empty messages). `None` = off.
    pub keepalive: Option<Duration>,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            core: CoreConfig::default(),
            command_queue: 64,
            channel_queue_bytes: 2 * 1024 * 1024,
            channel_queue_messages: 1024,
            write_high_water: 1024 * 1024,
            event_queue: 64,
            close_timeout: Duration::from_secs(5),
            keepalive: None,
        }
    }
}

/// What to open: protocol name, optional id, and the raw handshake bytes put in the open
/// message (the JS channel's `handshake` encoding output).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Protocol name.
    pub protocol: String,
    /// Channel id (JS `id`); `None` and an empty id are the same on the wire.
    pub id: Option<Vec<u8>>,
    /// Handshake bytes.
    pub handshake: Vec<u8>,
}

impl ChannelOptions {
    /// Options for `protocol`, without id or handshake.
    pub fn new(protocol: impl Into<String>) -> Self {
        ChannelOptions {
            protocol: protocol.into(),
            ..ChannelOptions::default()
        }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<Vec<u8>>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the handshake bytes.
    pub fn with_handshake(mut self, handshake: impl Into<Vec<u8>>) -> Self {
        self.handshake = handshake.into();
        self
    }
}

/// What a [`Channel`] receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The peer opened the channel too; its handshake bytes.
    Opened {
        /// The handshake bytes of the peer's open message.
        remote_handshake: Vec<u8>,
    },
    /// A message.
    Message {
        /// The message type.
        message_type: u32,
        /// The message bytes.
        payload: Vec<u8>,
    },
    /// The channel is closed; nothing follows.
    Closed {
        /// True when the peer closed or rejected it, or the transport went away.
        by_remote: bool,
    },
}

impl ChannelEvent {
    fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                ChannelEvent::Opened { remote_handshake } => remote_handshake.len(),
                ChannelEvent::Message { payload, .. } => payload.len(),
                ChannelEvent::Closed { .. } => 0,
            }
    }
}

/// What [`MuxEvents`] yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DriverEvent {
    /// The peer opened a protocol registered with [`Mux::pair`]; open a channel with the
    /// same protocol and id to accept it, or [`Mux::reject`] it.
    RemoteOpenRequest {
        /// Protocol name.
        protocol: String,
        /// Channel id.
        id: Option<Vec<u8>>,
    },
    /// The mux is gone; the last event. `error` is `None` after a clean end (either side
    /// ended, or [`Mux::close`] / [`Mux::destroy`]).
    Closed {
        /// Why, if it failed.
        error: Option<MuxError>,
    },
}

/// Mux-level events of a [`Mux`].
#[derive(Debug)]
pub struct MuxEvents {
    rx: mpsc::Receiver<DriverEvent>,
}

impl MuxEvents {
    /// The next event; `None` once the driver has exited and every event was taken.
    pub async fn recv(&mut self) -> Option<DriverEvent> {
        self.rx.recv().await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenState {
    Pending,
    Opened,
    ClosedUnopened,
}

enum Command {
    Open {
        options: ChannelOptions,
        inbox: Arc<Inbox>,
        open_state: watch::Sender<OpenState>,
        reply: oneshot::Sender<Result<ChannelId, MuxError>>,
    },
    Send(EncodedMessage),
    Close(ChannelId),
    Cork,
    Uncork,
    Pair(String, Option<Vec<u8>>),
    Unpair(String, Option<Vec<u8>>),
    Reject(String, Option<Vec<u8>>),
    IsOpened(String, Option<Vec<u8>>, oneshot::Sender<bool>),
    CloseMux(oneshot::Sender<()>),
}

/// State shared by the handles and the driver task.
#[derive(Debug)]
struct Shared {
    /// Wakes the driver: a queue drained below its low-water mark, a channel handle was
    /// dropped, or destroy was requested.
    wake: Notify,
    destroy: AtomicBool,
    queue_bytes: usize,
    queue_messages: usize,
}

/// A channel's receive queue.
#[derive(Debug)]
struct Inbox {
    state: Mutex<InboxState>,
    readable: Notify,
    /// Set once the channel is closed (or being closed): sends fail fast.
    closed: AtomicBool,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct InboxState {
    queue: VecDeque<ChannelEvent>,
    bytes: usize,
    /// `Closed` was queued; nothing follows.
    finished: bool,
    /// Over the limit: the driver waits for the reader to drain it.
    blocked: bool,
    /// The `Channel` handle is gone.
    dropped: bool,
}

enum Pop {
    Event(ChannelEvent),
    Finished,
    Empty,
}

impl Inbox {
    fn new(shared: Arc<Shared>) -> Self {
        Inbox {
            state: Mutex::new(InboxState::default()),
            readable: Notify::new(),
            closed: AtomicBool::new(false),
            shared,
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Driver side: queues an event; true when the queue is now over its limit.
    fn push(&self, event: ChannelEvent) -> bool {
        let full = {
            let mut state = self.lock();
            if state.dropped || state.finished {
                return false;
            }
            state.bytes += event.cost();
            state.queue.push_back(event);
            let full = state.bytes >= self.shared.queue_bytes
                || state.queue.len() >= self.shared.queue_messages;
            state.blocked |= full;
            full
        };
        self.readable.notify_one();
        full
    }

    /// Driver side: queues the final `Closed`.
    fn finish(&self, by_remote: bool) {
        self.closed.store(true, Ordering::Release);
        {
            let mut state = self.lock();
            if state.finished {
                return;
            }
            state.finished = true;
            state.blocked = false;
            if !state.dropped {
                let event = ChannelEvent::Closed { by_remote };
                state.bytes += event.cost();
                state.queue.push_back(event);
            }
        }
        self.readable.notify_one();
    }

    fn is_blocked(&self) -> bool {
        let state = self.lock();
        state.blocked && !state.dropped
    }

    fn is_dropped(&self) -> bool {
        self.lock().dropped
    }

    fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Handle side: takes the next event, waking the driver once the queue is half empty.
    fn try_pop(&self) -> Pop {
        let (pop, wake) = {
            let mut state = self.lock();
            match state.queue.pop_front() {
                Some(event) => {
                    state.bytes -= event.cost();
                    let wake = state.blocked
                        && state.bytes <= self.shared.queue_bytes / 2
                        && state.queue.len() <= self.shared.queue_messages / 2;
                    if wake {
                        state.blocked = false;
                    }
                    (Pop::Event(event), wake)
                }
                None if state.finished => (Pop::Finished, false),
                None => (Pop::Empty, false),
            }
        };
        if wake {
            self.shared.wake.notify_one();
        }
        pop
    }

    /// Handle side: the `Channel` is gone; drop what is queued and let the driver close it.
    fn mark_dropped(&self) {
        {
            let mut state = self.lock();
            state.dropped = true;
            state.blocked = false;
            state.queue.clear();
            state.bytes = 0;
        }
        self.shared.wake.notify_one();
    }
}

/// Handle to a running mux. Cloning is cheap; the mux closes gracefully once every `Mux`,
/// [`Channel`] and [`ChannelSender`] is dropped.
#[derive(Debug, Clone)]
pub struct Mux {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl Mux {
    /// Starts a mux over a transport: spawns the driver task (so it must be called inside
    /// a tokio runtime) and returns the handle and the mux-level event stream.
    pub fn new<R: FrameReceiver, S: FrameSender>(
        receiver: R,
        sender: S,
        config: MuxConfig,
    ) -> (Mux, MuxEvents) {
        let (commands_tx, commands_rx) = mpsc::channel(config.command_queue.max(1));
        let (events_tx, events_rx) = mpsc::channel(config.event_queue.max(2));
        let shared = Arc::new(Shared {
            wake: Notify::new(),
            destroy: AtomicBool::new(false),
            queue_bytes: config.channel_queue_bytes.max(1),
            queue_messages: config.channel_queue_messages.max(1),
        });
        let driver = Driver {
            core: MuxCore::new(config.core.clone()),
            config,
            commands: commands_rx,
            commands_open: true,
            events: events_tx,
            shared: shared.clone(),
            routes: HashMap::new(),
            paused_by: Vec::new(),
            outgoing: Vec::new(),
            spare: Vec::new(),
            receiver: Some(receiver),
            sender: Some(sender),
            reading: None,
            writing: None,
            ending: false,
            ended: false,
            remote_ended: false,
            closing: None,
            close_waiters: Vec::new(),
            start: Instant::now(),
            last_write: Instant::now(),
        };
        tokio::spawn(driver.run());
        (
            Mux {
                commands: commands_tx,
                shared,
            },
            MuxEvents { rx: events_rx },
        )
    }

    async fn command(&self, command: Command) -> Result<(), MuxError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| MuxError::Closed)
    }

    /// Opens a channel; returns once the open message is queued. If the peer's open for
    /// the same protocol and id is already held, the channel is fully open at once.
    pub async fn open_channel(&self, options: ChannelOptions) -> Result<Channel, MuxError> {
        let inbox = Arc::new(Inbox::new(self.shared.clone()));
        let (open_state, open_rx) = watch::channel(OpenState::Pending);
        let (reply, reply_rx) = oneshot::channel();
        let protocol = options.protocol.clone();
        let id = options.id.clone().filter(|id| !id.is_empty());
        self.command(Command::Open {
            options,
            inbox: inbox.clone(),
            open_state,
            reply,
        })
        .await?;
        let channel = reply_rx.await.map_err(|_| MuxError::Closed)??;
        Ok(Channel {
            sender: ChannelSender {
                channel,
                commands: self.commands.clone(),
                inbox,
            },
            open_state: open_rx,
            protocol,
            id,
        })
    }

    /// Reports remote opens of `protocol` (and `id`, or any id if `None`) as
    /// [`DriverEvent::RemoteOpenRequest`] and holds them until accepted or rejected (JS
    /// `pair`).
    pub async fn pair(&self, protocol: &str, id: Option<&[u8]>) -> Result<(), MuxError> {
        self.command(Command::Pair(protocol.to_owned(), id.map(<[u8]>::to_vec)))
            .await
    }

    /// Undoes [`Mux::pair`].
    pub async fn unpair(&self, protocol: &str, id: Option<&[u8]>) -> Result<(), MuxError> {
        self.command(Command::Unpair(protocol.to_owned(), id.map(<[u8]>::to_vec)))
            .await
    }

    /// Rejects the held remote opens of this protocol and id.
    pub async fn reject(&self, protocol: &str, id: Option<&[u8]>) -> Result<(), MuxError> {
        self.command(Command::Reject(protocol.to_owned(), id.map(<[u8]>::to_vec)))
            .await
    }

    /// True if a channel with this protocol and id is open on our side.
    pub async fn is_opened(&self, protocol: &str, id: Option<&[u8]>) -> bool {
        let (reply, reply_rx) = oneshot::channel();
        let command = Command::IsOpened(protocol.to_owned(), id.map(<[u8]>::to_vec), reply);
        if self.command(command).await.is_err() {
            return false;
        }
        reply_rx.await.unwrap_or(false)
    }

    /// Batches everything sent until the matching [`Mux::uncork`] into one frame.
    pub async fn cork(&self) -> Result<(), MuxError> {
        self.command(Command::Cork).await
    }

    /// Ends a [`Mux::cork`].
    pub async fn uncork(&self) -> Result<(), MuxError> {
        self.command(Command::Uncork).await
    }

    /// Closes every channel, flushes and ends our side of the transport; resolves once that
    /// is done. The driver then waits (up to [`MuxConfig::close_timeout`]) for the peer to
    /// end its side.
    pub async fn close(&self) {
        let (reply, reply_rx) = oneshot::channel();
        if self.command(Command::CloseMux(reply)).await.is_ok() {
            let _ = reply_rx.await;
        }
    }

    /// Drops the transport at once; every channel gets `Closed { by_remote: false }`.
    pub fn destroy(&self) {
        self.shared.destroy.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// True once the driver task has exited.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

/// The sending side of a channel; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    channel: ChannelId,
    commands: mpsc::Sender<Command>,
    inbox: Arc<Inbox>,
}

impl ChannelSender {
    /// The channel.
    pub fn channel_id(&self) -> ChannelId {
        self.channel
    }

    /// Sends a message. Waits while the mux's command queue is full (backpressure);
    /// fails once the channel is closed.
    pub async fn send(&self, message_type: u32, payload: &[u8]) -> Result<(), MuxError> {
        if self.is_closed() {
            return Err(MuxError::ChannelClosed);
        }
        let message = EncodedMessage::new(self.channel, message_type, payload);
        self.commands
            .send(Command::Send(message))
            .await
            .map_err(|_| MuxError::ChannelClosed)
    }

    /// Closes the channel (the receiver gets `Closed { by_remote: false }`).
    pub async fn close(&self) -> Result<(), MuxError> {
        if self.inbox.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.commands
            .send(Command::Close(self.channel))
            .await
            .map_err(|_| MuxError::Closed)
    }

    /// Corks the whole mux (JS `channel.cork`).
    pub async fn cork(&self) -> Result<(), MuxError> {
        self.commands
            .send(Command::Cork)
            .await
            .map_err(|_| MuxError::Closed)
    }

    /// Uncorks the whole mux.
    pub async fn uncork(&self) -> Result<(), MuxError> {
        self.commands
            .send(Command::Uncork)
            .await
            .map_err(|_| MuxError::Closed)
    }

    /// True once the channel is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.inbox.closed.load(Ordering::Acquire)
    }
}

/// An open channel: send with [`Channel::send`], receive with [`Channel::recv`]. Dropping
/// it closes the channel.
#[derive(Debug)]
pub struct Channel {
    sender: ChannelSender,
    open_state: watch::Receiver<OpenState>,
    protocol: String,
    id: Option<Vec<u8>>,
}

impl Channel {
    /// Our id of the channel.
    pub fn channel_id(&self) -> ChannelId {
        self.sender.channel
    }

    /// The protocol name.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The channel id bytes (JS `channel.id`).
    pub fn id(&self) -> Option<&[u8]> {
        self.id.as_deref()
    }

    /// A clonable sending handle (it stops working once this `Channel` is dropped).
    pub fn sender(&self) -> ChannelSender {
        self.sender.clone()
    }

    /// Sends a message; see [`ChannelSender::send`].
    pub async fn send(&self, message_type: u32, payload: &[u8]) -> Result<(), MuxError> {
        self.sender.send(message_type, payload).await
    }

    /// The next event; `None` after `Closed` has been returned.
    pub async fn recv(&mut self) -> Option<ChannelEvent> {
        loop {
            match self.sender.inbox.try_pop() {
                Pop::Event(event) => return Some(event),
                Pop::Finished => return None,
                Pop::Empty => self.sender.inbox.readable.notified().await,
            }
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<ChannelEvent> {
        match self.sender.inbox.try_pop() {
            Pop::Event(event) => Some(event),
            _ => None,
        }
    }

    /// Resolves true once the peer has opened the channel too, false if it closes first
    /// (JS `fullyOpened`).
    pub async fn fully_opened(&self) -> bool {
        let mut state = self.open_state.clone();
        let settled = state
            .wait_for(|s| *s != OpenState::Pending)
            .await
            .map(|s| *s == OpenState::Opened);
        settled.unwrap_or_else(|_| *state.borrow() == OpenState::Opened)
    }

    /// Closes the channel.
    pub async fn close(&self) -> Result<(), MuxError> {
        self.sender.close().await
    }

    /// Corks the whole mux.
    pub async fn cork(&self) -> Result<(), MuxError> {
        self.sender.cork().await
    }

    /// Uncorks the whole mux.
    pub async fn uncork(&self) -> Result<(), MuxError> {
        self.sender.uncork().await
    }

    /// True once the channel is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Bytes waiting in the receive queue (payloads plus 64 per event).
    pub fn queued_bytes(&self) -> usize {
        self.sender.inbox.queued_bytes()
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.sender.inbox.closed.store(true, Ordering::Release);
        self.sender.inbox.mark_dropped();
    }
}

// ---------------------------------------------------------------------------- driver

type ReadFuture<R> = Pin<Box<dyn Future<Output = (R, io::Result<Option<Vec<u8>>>)> + Send>>;
type WriteFuture<S> = Pin<Box<dyn Future<Output = (S, Vec<Vec<u8>>, io::Result<()>)> + Send>>;

struct Route {
    inbox: Arc<Inbox>,
    open_state: watch::Sender<OpenState>,
}

impl Route {
    fn finish(&self, by_remote: bool) {
        self.open_state.send_if_modified(|s| {
            let pending = *s == OpenState::Pending;
            if pending {
                *s = OpenState::ClosedUnopened;
            }
            pending
        });
        self.inbox.finish(by_remote);
    }
}

struct Driver<R, S> {
    core: MuxCore,
    config: MuxConfig,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    events: mpsc::Sender<DriverEvent>,
    shared: Arc<Shared>,
    routes: HashMap<ChannelId, Route>,
    /// Channels whose receive queue is over its limit.
    paused_by: Vec<ChannelId>,
    /// Frames taken out of the core before it was shut down, still to be written.
    outgoing: Vec<Vec<u8>>,
    /// An empty vector kept for the next write burst.
    spare: Vec<Vec<u8>>,
    /// `None` while `reading` owns it.
    receiver: Option<R>,
    /// `None` while `writing` owns it.
    sender: Option<S>,
    reading: Option<ReadFuture<R>>,
    writing: Option<WriteFuture<S>>,
    /// `writing` is the end of our direction.
    ending: bool,
    ended: bool,
    remote_ended: bool,
    /// When a graceful close gives up waiting for the peer.
    closing: Option<Instant>,
    close_waiters: Vec<oneshot::Sender<()>>,
    start: Instant,
    /// When the last write burst started (for keep-alives).
    last_write: Instant,
}

async fn read_frame<R: FrameReceiver>(mut receiver: R) -> (R, io::Result<Option<Vec<u8>>>) {
    let result = receiver.recv().await;
    (receiver, result)
}

async fn write_frames<S: FrameSender>(
    mut sender: S,
    mut frames: Vec<Vec<u8>>,
) -> (S, Vec<Vec<u8>>, io::Result<()>) {
    let mut result = Ok(());
    for frame in frames.drain(..) {
        if let Err(e) = sender.send(frame).await {
            result = Err(e);
            break;
        }
    }
    if result.is_err() {
        return (sender, frames, result);
    }
    let result = sender.flush().await;
    (sender, frames, result)
}

async fn end_stream<S: FrameSender>(mut sender: S) -> (S, Vec<Vec<u8>>, io::Result<()>) {
    let result = sender.end().await;
    (sender, Vec::new(), result)
}

/// Polls `fut` if there is one, otherwise never resolves.
async fn maybe<F: Future + Unpin>(fut: Option<&mut F>) -> F::Output {
    match fut {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

impl<R: FrameReceiver, S: FrameSender> Driver<R, S> {
    async fn run(mut self) {
        let error = self.run_loop().await;
        if let Some(error) = &error {
            tracing::debug!(%error, "protomux driver stopped");
        }
        self.core.handle_transport_closed();
        self.route_events();
        for (_, route) in self.routes.drain() {
            route.finish(true);
        }
        let _ = self.events.try_send(DriverEvent::Closed { error });
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn can_read(&self) -> bool {
        // While closing, frames are discarded until the peer ends: nothing to hold back.
        self.closing.is_some() || (self.paused_by.is_empty() && !self.core.wants_pause())
    }

    async fn run_loop(&mut self) -> Option<MuxError> {
        let mut batch = Vec::with_capacity(COMMAND_BATCH);
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<u64> = None;
        let keepalive = self.config.keepalive;
        loop {
            if self.shared.destroy.load(Ordering::Acquire) {
                self.core.destroy();
                return None;
            }
            self.start_io();
            if self.closing.is_some() && self.ended && (self.remote_ended || self.receiver_gone()) {
                return None;
            }
            let can_read = self.can_read();
            let take_commands =
                self.commands_open && self.core.transmit_backlog() < self.config.write_high_water;
            let deadline = self.core.poll_timeout();
            if deadline != armed {
                if let Some(ms) = deadline {
                    timer.as_mut().reset(self.start + Duration::from_millis(ms));
                }
                armed = deadline;
            }
            let close_deadline = self.closing;
            let keepalive_due = keepalive
                .filter(|_| self.writing.is_none() && self.closing.is_none())
                .map(|every| self.last_write + every);

            tokio::select! {
                (sender, frames, result) = maybe(self.writing.as_mut()) => {
                    self.writing = None;
                    self.sender = Some(sender);
                    self.spare = frames;
                    if let Err(e) = result {
                        // Once the peer has ended, failing to write our leftovers is no error.
                        return (!self.remote_ended).then(|| e.into());
                    }
                    if std::mem::take(&mut self.ending) {
                        self.ended = true;
                        for waiter in self.close_waiters.drain(..) {
                            let _ = waiter.send(());
                        }
                    }
                }
                (receiver, result) = maybe(self.reading.as_mut()), if can_read => {
                    self.reading = None;
                    self.receiver = Some(receiver);
                    match result {
                        Ok(Some(frame)) => {
                            if self.closing.is_none() {
                                let now = self.now_ms();
                                self.core.handle_timeout(now);
                                if let Err(e) = self.core.handle_frame_owned(frame) {
                                    return Some(e);
                                }
                            }
                        }
                        Ok(None) => {
                            self.remote_ended = true;
                            // JS ends its side when the peer ends (no half-open mode).
                            self.outgoing.extend(std::iter::from_fn(|| self.core.poll_transmit()));
                            self.core.handle_transport_closed();
                            self.begin_closing();
                        }
                        Err(e) => return Some(e.into()),
                    }
                }
                n = self.commands.recv_many(&mut batch, COMMAND_BATCH), if take_commands => {
                    if n == 0 {
                        // Every handle is gone.
                        self.commands_open = false;
                        self.begin_closing();
                    }
                    for command in batch.drain(..) {
                        self.handle_command(command);
                    }
                }
                () = self.shared.wake.notified() => self.on_wake(),
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    let now = self.now_ms();
                    self.core.handle_timeout(now);
                }
                () = sleep_until_opt(keepalive_due), if keepalive_due.is_some() => {
                    self.outgoing.push(Vec::new());
                }
                () = sleep_until_opt(close_deadline), if close_deadline.is_some() => {
                    tracing::debug!("protomux close timed out waiting for the peer");
                    return None;
                }
            }
            self.route_events();
        }
    }

    fn receiver_gone(&self) -> bool {
        self.receiver.is_none() && self.reading.is_none()
    }

    /// Starts a write burst of everything queued, or the end of our side once closing and
    /// drained; starts the next read if reading is allowed.
    fn start_io(&mut self) {
        if self.writing.is_none() && !self.ended {
            if let Some(sender) = self.sender.take() {
                let mut frames = std::mem::take(&mut self.spare);
                frames.append(&mut self.outgoing);
                frames.extend(std::iter::from_fn(|| self.core.poll_transmit()));
                if !frames.is_empty() {
                    self.last_write = Instant::now();
                    self.writing = Some(Box::pin(write_frames(sender, frames)));
                } else if self.closing.is_some() {
                    self.ending = true;
                    self.writing = Some(Box::pin(end_stream(sender)));
                    self.spare = frames;
                } else {
                    self.sender = Some(sender);
                    self.spare = frames;
                }
            }
        }
        if self.reading.is_none() && !self.remote_ended && self.can_read() {
            if let Some(receiver) = self.receiver.take() {
                self.reading = Some(Box::pin(read_frame(receiver)));
            }
        }
    }

    /// Local close (or the peer ended): close every channel, then flush and end our side.
    fn begin_closing(&mut self) {
        if self.closing.is_some() {
            return;
        }
        self.core.close_all();
        self.closing = Some(Instant::now() + self.config.close_timeout);
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Open {
                options,
                inbox,
                open_state,
                reply,
            } => {
                if self.closing.is_some() {
                    let _ = reply.send(Err(MuxError::Closed));
                    return;
                }
                let opened = self.core.open_channel(
                    &options.protocol,
                    options.id.as_deref(),
                    &options.handshake,
                );
                match opened {
                    Ok(channel) => {
                        self.routes.insert(channel, Route { inbox, open_state });
                        if reply.send(Ok(channel)).is_err() {
                            // The caller gave up waiting: nobody will use the channel.
                            self.core.close(channel);
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Send(message) => {
                // A send racing a close finds the channel closed: dropped, as JS does.
                let _ = self.core.send_encoded(message);
            }
            Command::Close(channel) => self.core.close(channel),
            Command::Cork => self.core.cork(),
            Command::Uncork => self.core.uncork(),
            Command::Pair(protocol, id) => self.core.pair(&protocol, id.as_deref()),
            Command::Unpair(protocol, id) => self.core.unpair(&protocol, id.as_deref()),
            Command::Reject(protocol, id) => {
                self.core.reject_remote(&protocol, id.as_deref());
            }
            Command::IsOpened(protocol, id, reply) => {
                let _ = reply.send(self.core.is_opened(&protocol, id.as_deref()));
            }
            Command::CloseMux(reply) => {
                if self.ended {
                    let _ = reply.send(());
                } else {
                    self.close_waiters.push(reply);
                }
                self.begin_closing();
            }
        }
    }

    /// A handle woke us: close channels whose handle is gone, resume reading if the
    /// queues that stopped it have drained.
    fn on_wake(&mut self) {
        let dropped: Vec<ChannelId> = self
            .routes
            .iter()
            .filter(|(_, route)| route.inbox.is_dropped())
            .map(|(channel, _)| *channel)
            .collect();
        for channel in dropped {
            self.core.close(channel);
        }
        let routes = &self.routes;
        self.paused_by
            .retain(|channel| routes.get(channel).is_some_and(|r| r.inbox.is_blocked()));
    }

    fn route_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                MuxEvent::RemoteOpenRequest { protocol, id } => {
                    let accepted = self.closing.is_none()
                        && self.events.capacity() > 1
                        && self
                            .events
                            .try_send(DriverEvent::RemoteOpenRequest {
                                protocol: protocol.clone(),
                                id: id.clone(),
                            })
                            .is_ok();
                    if !accepted {
                        self.core.reject_remote(&protocol, id.as_deref());
                    }
                }
                MuxEvent::Opened {
                    channel,
                    remote_handshake,
                } => {
                    if let Some(route) = self.routes.get(&channel) {
                        route.open_state.send_replace(OpenState::Opened);
                    }
                    self.deliver(channel, ChannelEvent::Opened { remote_handshake });
                }
                MuxEvent::Message {
                    channel,
                    message_type,
                    payload,
                } => self.deliver(
                    channel,
                    ChannelEvent::Message {
                        message_type,
                        payload,
                    },
                ),
                MuxEvent::Closed { channel, by_remote } => {
                    if let Some(route) = self.routes.remove(&channel) {
                        route.finish(by_remote);
                    }
                    self.paused_by.retain(|c| *c != channel);
                }
                _ => {}
            }
        }
    }

    fn deliver(&mut self, channel: ChannelId, event: ChannelEvent) {
        let Some(route) = self.routes.get(&channel) else {
            return;
        };
        if route.inbox.push(event) && !self.paused_by.contains(&channel) {
            self.paused_by.push(channel);
        }
    }
}

impl<R, S> Drop for Driver<R, S> {
    fn drop(&mut self) {
        // Normally empty already; this covers a task dropped mid-flight (runtime shutdown).
        for (_, route) in self.routes.drain() {
            route.finish(true);
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
