//! The tokio layer: [`UdxSocket`] runs one driver task per socket that owns the
//! [`DatagramIo`], demultiplexes datagrams to [`StreamCore`]s by stream id, fires their
//! timers and sends what they produce; [`UdxStream`] is the application's handle on one
//! stream (`AsyncRead + AsyncWrite`, messages, destroy).
//!
//! The driver is a loop of: wait for input, a wake-up from a handle or the earliest
//! stream deadline; receive a batch of datagrams without holding any lock; feed them,
//! expired timers and the handles' requests to the streams under the socket lock; collect
//! every stream's datagrams into one buffer; wake the handles; send the batch without the
//! lock. Feeding a whole batch before polling transmissions is what coalesces acks.
//!
//! Everything is bounded: streams per socket, the receive batch, the send batch per round,
//! queued raw datagrams and unmatched datagrams, and each stream's buffers
//! ([`StreamConfig`]).

mod handle;
mod io;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};

pub use handle::UdxStream;
pub use io::{set_buffer_sizes, ChannelIo, Datagram, DatagramIo, UdpIo};

use crate::packet::peek_stream_id;
use crate::stream::{StreamConfig, StreamCore, StreamError, StreamEvent};

/// Datagrams received per driver round before the streams are polled.
const RECV_BATCH: usize = 64;
/// Receive slot size: UDX packets are at most ~2100 bytes; longer datagrams are cut.
const RECV_SLOT: usize = 4096;
/// Datagrams sent per driver round (further ones wait for the next round).
const SEND_BATCH: usize = 256;
/// How long a dropped handle's stream may take to finish a graceful end.
const LINGER: Duration = Duration::from_secs(30);

/// Socket settings.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Most streams (live or lingering) at once.
    pub max_streams: usize,
    /// Settings for streams created without their own.
    pub stream: StreamConfig,
    /// Capacity of the channel for datagrams that match no stream (see
    /// [`UdxSocket::take_unmatched`]); 0 drops them.
    pub unmatched_capacity: usize,
    /// Raw datagrams ([`UdxSocket::send_to`]) queued at most.
    pub max_raw_queue: usize,
    /// SO_RCVBUF / SO_SNDBUF for a bound UDP socket (libudx asks for 1 MiB / 208 KiB).
    pub recv_buffer: usize,
    /// See `recv_buffer`.
    pub send_buffer: usize,
    /// Send runs of datagrams with UDP segmentation offload where the kernel has it
    /// ([`UdxSocket::bind`] only; a [`DatagramIo`] decides for itself).
    pub segmentation_offload: bool,
    /// Testing aid: drop this share of UDX datagrams in each direction, chosen by a
    /// deterministic generator.
    pub drop_probability: f64,
    /// Seed of that generator.
    pub drop_seed: u64,
    /// After the socket received or sent, keep polling it this long before sleeping in
    /// the kernel; zero never polls. Default [`DEFAULT_BUSY_POLL`], or
    /// `INTERCOM_UDX_BUSY_POLL_US` (microseconds) when set.
    pub busy_poll: std::time::Duration,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            max_streams: 1024,
            stream: StreamConfig::default(),
            unmatched_capacity: 64,
            max_raw_queue: 256,
            recv_buffer: 4 << 20,
            send_buffer: 1 << 20,
            segmentation_offload: true,
            drop_probability: 0.0,
            drop_seed: 0x5eed,
            busy_poll: busy_poll_from_env(),
        }
    }
}

/// How long a socket keeps polling after it received or sent: 50 µs.
///
/// A reply from a peer on the same machine or LAN arrives within it, and is then taken
/// without a wake-up: a thread asleep in `epoll_wait` on another core takes 30-35 µs to
/// wake on a typical VM, which was most of a loopback round trip (bench: Rust ⇄ Rust p50
/// 0.073 ms without polling, 0.011 ms with). The cost is at most this much CPU per burst
/// of traffic; an idle socket never polls.
pub const DEFAULT_BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(50);

/// [`DEFAULT_BUSY_POLL`], or `INTERCOM_UDX_BUSY_POLL_US` when it holds a number (0 turns
/// polling off).
fn busy_poll_from_env() -> std::time::Duration {
    match std::env::var("INTERCOM_UDX_BUSY_POLL_US") {
        Ok(v) => match v.trim().parse() {
            Ok(us) => std::time::Duration::from_micros(us),
            Err(_) => {
                tracing::warn!("INTERCOM_UDX_BUSY_POLL_US={v:?} is not a number of microseconds; using the default");
                DEFAULT_BUSY_POLL
            }
        },
        Err(_) => DEFAULT_BUSY_POLL,
    }
}

/// Errors of the socket layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UdxError {
    /// Binding or configuring the UDP socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A stream with this local id exists on the socket.
    #[error("stream id {0} in use")]
    IdInUse(u32),
    /// The socket holds `max_streams` streams.
    #[error("too many streams")]
    TooManyStreams,
    /// The socket was closed.
    #[error("socket closed")]
    SocketClosed,
    /// The raw send queue is full.
    #[error("send queue full")]
    QueueFull,
    /// The stream refused the operation.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Decides whether an unconnected stream accepts a packet from this address (true =
/// accept; udx-native's firewall callback returns the opposite).
pub type Firewall = Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>;

/// How to create a stream.
#[derive(Clone, Default)]
pub struct StreamOptions {
    /// Stream settings; the socket's when `None`.
    pub config: Option<StreamConfig>,
    /// For a stream that learns its peer from the first packet (HyperDHT servers): which
    /// sources may reach it before `connect`. Without one, packets to an unconnected
    /// stream are dropped, like udx-native's default firewall.
    pub firewall: Option<Firewall>,
    /// First sequence number we send (`opts.seq`).
    pub seq: Option<u32>,
    /// First sequence number we expect (`connect(..., { ack })`).
    pub ack: Option<u32>,
}

impl std::fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOptions")
            .field("config", &self.config)
            .field("firewall", &self.firewall.is_some())
            .field("seq", &self.seq)
            .field("ack", &self.ack)
            .finish()
    }
}

#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
    message: Option<Waker>,
    /// Waiters for close, remote change and first packet (a few tasks at most).
    other: Vec<Waker>,
}

impl Wakers {
    /// Registers a waiter of `other`, once per task; bounded.
    fn add_other(&mut self, cx: &std::task::Context<'_>) {
        if self.other.iter().any(|w| w.will_wake(cx.waker())) {
            return;
        }
        if self.other.len() >= 32 {
            // Spurious wake-ups are allowed: make room by waking the oldest.
            self.other.remove(0).wake();
        }
        self.other.push(cx.waker().clone());
    }
}

struct Slot {
    core: StreamCore,
    wakers: Wakers,
    messages: VecDeque<Vec<u8>>,
    dirty: bool,
    timer_at: Option<Instant>,
    handle_alive: bool,
    firewall: Option<Firewall>,
    first_from: Option<SocketAddr>,
    remote_changed: u64,
    linger_until: Option<Instant>,
}

impl Slot {
    fn wake_all(&mut self) {
        let w = std::mem::take(&mut self.wakers);
        w.read.into_iter().for_each(Waker::wake);
        w.write.into_iter().for_each(Waker::wake);
        w.message.into_iter().for_each(Waker::wake);
        w.other.into_iter().for_each(Waker::wake);
    }
}

struct State {
    cfg: SocketConfig,
    streams: HashMap<u32, Slot>,
    dirty: Vec<u32>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    raw_out: VecDeque<Datagram>,
    unmatched: Option<mpsc::Sender<Datagram>>,
    unmatched_rx: Option<mpsc::Receiver<Datagram>>,
    closing: bool,
    stopped: bool,
    rng: u64,
    next_id: u32,
}

impl State {
    fn mark_dirty(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn drop_roll(&mut self) -> bool {
        drop_roll(&mut self.rng, self.cfg.drop_probability)
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(id) = peek_stream_id(bytes) else {
            self.unmatched(from, bytes);
            return;
        };
        if self.drop_roll() {
            return;
        }
        let Some(slot) = self.streams.get_mut(&id) else {
            self.unmatched(from, bytes);
            return;
        };
        if slot.core.is_closed() {
            self.unmatched(from, bytes);
            return;
        }
        if !slot.core.is_connected() {
            let allowed = slot.firewall.as_ref().is_some_and(|f| f(from));
            if !allowed {
                return;
            }
            slot.first_from.get_or_insert(from);
            slot.wakers.other.drain(..).for_each(Waker::wake);
        }
        if slot.core.handle_packet(now, from, bytes).is_ok() && !slot.dirty {
            slot.dirty = true;
            self.dirty.push(id);
        }
    }

    fn unmatched(&mut self, from: SocketAddr, bytes: &[u8]) {
        if let Some(tx) = &self.unmatched {
            let _ = tx.try_send(Datagram {
                addr: from,
                bytes: bytes.to_vec(),
            });
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.streams.get_mut(&id) else {
                continue;
            };
            if slot.timer_at != Some(at) {
                continue;
            }
            slot.timer_at = None;
            if slot.linger_until.is_some_and(|t| t <= now) {
                slot.core.destroy();
            }
            slot.core.handle_timeout(now);
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Hands what the dirty streams received to their handles (wakers into `wake`)
    /// without polling transmissions; true when a reader was woken.
    fn wake_readers(&mut self, wake: &mut Vec<Waker>) -> bool {
        let before = wake.len();
        for id in &self.dirty {
            if let Some(slot) = self.streams.get_mut(id) {
                Self::events(slot, wake, self.cfg.stream.max_queued_messages);
            }
        }
        wake.len() > before
    }

    /// Polls dirty streams: transmissions into `batch`, events to the handles.
    fn poll_streams(&mut self, now: Instant, batch: &mut SendBatch, wake: &mut Vec<Waker>) {
        // Raw datagrams first, they are few.
        while batch.len() < SEND_BATCH {
            let Some(d) = self.raw_out.pop_front() else {
                break;
            };
            batch.push(d.addr, &d.bytes);
        }
        let mut i = 0;
        let mut full = false;
        let mut reap = Vec::new();
        while i < self.dirty.len() {
            let id = self.dirty[i];
            i += 1;
            let Some(slot) = self.streams.get_mut(&id) else {
                continue;
            };
            let mut more = false;
            loop {
                if batch.len() >= SEND_BATCH {
                    more = true;
                    break;
                }
                let start = batch.buf.len();
                match slot.core.poll_transmit_into(now, &mut batch.buf) {
                    Some(to) => {
                        if drop_roll(&mut self.rng, self.cfg.drop_probability) {
                            batch.buf.truncate(start);
                        } else {
                            batch.items.push((to, start, batch.buf.len()));
                        }
                    }
                    None => break,
                }
            }
            Self::events(slot, wake, self.cfg.stream.max_queued_messages);
            let at = slot.core.poll_timeout();
            let at = match (at, slot.linger_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if at != slot.timer_at {
                slot.timer_at = at;
                if let Some(at) = at {
                    self.timers.push(Reverse((at, id)));
                }
            }
            if more {
                full = true;
            } else {
                slot.dirty = false;
                // Forget streams whose handle is gone and that finished.
                if !slot.handle_alive && slot.core.is_closed() {
                    reap.push(id);
                }
            }
        }
        for id in &reap {
            self.streams.remove(id);
        }
        self.dirty
            .retain(|id| self.streams.get(id).is_some_and(|s| s.dirty));
        if full && self.dirty.len() > 1 {
            // The head of the list filled the batch: let the others go first next round.
            self.dirty.rotate_left(1);
        }
        if !reap.is_empty() || self.timers.len() > 4 * self.streams.len() + 64 {
            self.timers = self
                .streams
                .iter()
                .filter_map(|(id, s)| s.timer_at.map(|t| Reverse((t, *id))))
                .collect();
        }
    }

    fn events(slot: &mut Slot, wake: &mut Vec<Waker>, max_messages: usize) {
        let mut read = false;
        let mut write = false;
        let mut message = false;
        let mut other = false;
        while let Some(ev) = slot.core.poll_event() {
            match ev {
                StreamEvent::Readable | StreamEvent::End => read = true,
                StreamEvent::Drain => write = true,
                StreamEvent::Message(m) => {
                    if slot.messages.len() < max_messages {
                        slot.messages.push_back(m);
                    }
                    message = true;
                }
                StreamEvent::RemoteChanged => {
                    slot.remote_changed += 1;
                    other = true;
                }
                StreamEvent::Closed(_) => {
                    read = true;
                    write = true;
                    message = true;
                    other = true;
                }
            }
        }
        // A shutdown waits for our END to be acked, which raises no event of its own.
        if slot.core.is_local_ended() || slot.core.write_capacity() > 0 {
            write = true;
        }
        if read {
            wake.extend(slot.wakers.read.take());
        }
        if write {
            wake.extend(slot.wakers.write.take());
        }
        if message {
            wake.extend(slot.wakers.message.take());
        }
        if other {
            wake.append(&mut slot.wakers.other);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }
}

struct SendBatch {
    buf: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize)>,
}

impl SendBatch {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn push(&mut self, to: SocketAddr, bytes: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.items.push((to, start, self.buf.len()));
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    notify: Notify,
    stopped: Notify,
    local_addr: SocketAddr,
    handles: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A UDX socket: the streams on one UDP port (standalone) or on a shared transport.
/// Cloning gives another handle on the same socket; the driver task stops once every
/// handle is dropped (or [`close`](Self::close) was called) and every stream finished.
pub struct UdxSocket {
    shared: Arc<Shared>,
}

impl Clone for UdxSocket {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        UdxSocket {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for UdxSocket {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.lock().closing = true;
            self.shared.notify.notify_one();
        }
    }
}

impl std::fmt::Debug for UdxSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdxSocket")
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}

impl UdxSocket {
    /// Binds a UDP socket on `addr` (use port 0 for any) and starts its driver on the
    /// current tokio runtime.
    pub async fn bind(addr: SocketAddr, cfg: SocketConfig) -> Result<UdxSocket, UdxError> {
        let domain = if addr.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
        // Best effort, as libudx: the kernel may cap them.
        let _ = sock.set_recv_buffer_size(cfg.recv_buffer);
        let _ = sock.set_send_buffer_size(cfg.send_buffer);
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        let udp = UdpSocket::from_std(sock.into())?;
        let io = UdpIo::new(udp);
        io.set_offload(cfg.segmentation_offload);
        Self::with_io(io, cfg)
    }

    /// Runs over any [`DatagramIo`], e.g. a [`ChannelIo`] onto the DHT's socket.
    pub fn with_io<I: DatagramIo>(io: I, cfg: SocketConfig) -> Result<UdxSocket, UdxError> {
        let local_addr = io.local_addr()?;
        let (utx, urx) = if cfg.unmatched_capacity > 0 {
            let (t, r) = mpsc::channel(cfg.unmatched_capacity);
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let rng = cfg.drop_seed | 1;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                cfg,
                streams: HashMap::new(),
                dirty: Vec::new(),
                timers: BinaryHeap::new(),
                raw_out: VecDeque::new(),
                unmatched: utx,
                unmatched_rx: urx,
                closing: false,
                stopped: false,
                rng,
                next_id: 1,
            }),
            notify: Notify::new(),
            stopped: Notify::new(),
            local_addr,
            handles: AtomicUsize::new(1),
        });
        tokio::spawn(drive(shared.clone(), io));
        Ok(UdxSocket { shared })
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A local stream id not in use on this socket.
    pub fn alloc_id(&self) -> u32 {
        let mut st = self.shared.lock();
        loop {
            let id = st.next_id;
            st.next_id = st.next_id.wrapping_add(1).max(1);
            if !st.streams.contains_key(&id) {
                return id;
            }
        }
    }

    /// Creates a stream with local id `local_id`, unconnected.
    pub fn create_stream(&self, local_id: u32, opts: StreamOptions) -> Result<UdxStream, UdxError> {
        let mut st = self.shared.lock();
        if st.closing || st.stopped {
            return Err(UdxError::SocketClosed);
        }
        if st.streams.contains_key(&local_id) {
            return Err(UdxError::IdInUse(local_id));
        }
        if st.streams.len() >= st.cfg.max_streams {
            return Err(UdxError::TooManyStreams);
        }
        let cfg = opts.config.unwrap_or_else(|| st.cfg.stream.clone());
        let mut core = StreamCore::new(local_id, cfg, Instant::now());
        if let Some(seq) = opts.seq {
            core.set_seq(seq);
        }
        if let Some(ack) = opts.ack {
            core.set_ack(ack);
        }
        st.streams.insert(
            local_id,
            Slot {
                core,
                wakers: Wakers::default(),
                messages: VecDeque::new(),
                dirty: false,
                timer_at: None,
                handle_alive: true,
                firewall: opts.firewall,
                first_from: None,
                remote_changed: 0,
                linger_until: None,
            },
        );
        Ok(UdxStream::new(self.shared.clone(), local_id))
    }

    /// Creates a stream and connects it to `remote_id` at `addr`.
    pub fn connect(
        &self,
        local_id: u32,
        remote_id: u32,
        addr: SocketAddr,
    ) -> Result<UdxStream, UdxError> {
        let s = self.create_stream(local_id, StreamOptions::default())?;
        s.connect(remote_id, addr)?;
        Ok(s)
    }

    /// Sends a raw datagram from this socket (holepunch probes and the like).
    pub fn send_to(&self, to: SocketAddr, bytes: &[u8]) -> Result<(), UdxError> {
        let mut st = self.shared.lock();
        if st.stopped {
            return Err(UdxError::SocketClosed);
        }
        if st.raw_out.len() >= st.cfg.max_raw_queue {
            return Err(UdxError::QueueFull);
        }
        st.raw_out.push_back(Datagram {
            addr: to,
            bytes: bytes.to_vec(),
        });
        drop(st);
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Takes the receiver of datagrams that match no stream (non-UDX bytes, unknown or
    /// closed ids). Only the first call gets it.
    pub fn take_unmatched(&self) -> Option<mpsc::Receiver<Datagram>> {
        self.shared.lock().unmatched_rx.take()
    }

    /// Number of streams held (including ones finishing after their handle dropped).
    pub fn stream_count(&self) -> usize {
        self.shared.lock().streams.len()
    }

    /// Stops accepting streams, destroys none, and waits until every stream finished and
    /// the driver stopped.
    pub async fn close(self) {
        self.shared.lock().closing = true;
        self.shared.notify.notify_one();
        let stopped = self.shared.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if !self.shared.lock().stopped {
            stopped.await;
        }
    }
}

/// Receive batches of at most this many datagrams give the woken readers one runtime turn
/// before acks are written (see `drive`).
const ACK_WAIT_BATCH: usize = 2;

/// The socket's one task: receives, feeds the streams, runs their timers and sends what
/// they produce. Until `busy_poll` has passed since it last received or sent, it does not
/// wait for readiness in the kernel but takes [`poll_turn`]s, so a prompt reply is read
/// without the cost of waking a sleeping thread.
async fn drive<I: DatagramIo>(shared: Arc<Shared>, io: I) {
    let mut slots = vec![0u8; RECV_BATCH * RECV_SLOT];
    let mut got: Vec<(usize, SocketAddr)> = Vec::with_capacity(RECV_BATCH);
    let mut batch = SendBatch {
        buf: Vec::with_capacity(SEND_BATCH * 1600),
        items: Vec::with_capacity(SEND_BATCH),
    };
    let mut wake: Vec<Waker> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut io_ok = true;
    let busy_poll = shared.lock().cfg.busy_poll;
    let mut poll_until: Option<Instant> = None;
    loop {
        let polling = io_ok && poll_until.is_some_and(|until| Instant::now() < until);
        let mut polled = false;
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = io.recv_ready(), if io_ok => {
                if let Err(e) = r {
                    tracing::debug!("udx: transport closed: {e}");
                    io_ok = false;
                }
            }
            _ = shared.notify.notified() => {}
            _ = sleep => {}
            _ = poll_turn(), if polling => polled = true,
        }

        // Receive a batch without the lock.
        got.clear();
        if io_ok {
            for chunk in slots.chunks_mut(RECV_SLOT) {
                match io.try_recv_from(chunk) {
                    Ok((n, from)) => got.push((n, from)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => {
                        tracing::debug!("udx: receive failed: {e}");
                        io_ok = false;
                        break;
                    }
                }
            }
        }

        if polled && got.is_empty() {
            continue;
        }
        let mut now = Instant::now();
        let wait_for_readers = {
            let mut st = shared.lock();
            for (k, (n, from)) in got.iter().enumerate() {
                let bytes = &slots[k * RECV_SLOT..k * RECV_SLOT + n];
                st.on_datagram(now, *from, bytes);
            }
            // A few datagrams (request/response traffic, not a bulk stream): let the woken
            // readers run before the acks are written, so a reply carries the ack instead
            // of a bare ack going out first and waking the peer for nothing.
            (1..=ACK_WAIT_BATCH).contains(&got.len()) && st.wake_readers(&mut wake)
        };
        if wait_for_readers {
            wake.drain(..).for_each(Waker::wake);
            tokio::task::yield_now().await;
            now = Instant::now();
        }
        let finished = {
            let mut st = shared.lock();
            st.run_timers(now);
            batch.clear();
            st.poll_streams(now, &mut batch, &mut wake);
            if !st.dirty.is_empty() {
                // More to send than one batch: come back right away.
                shared.notify.notify_one();
            }
            deadline = st.next_deadline();
            let finished =
                (st.closing && st.streams.is_empty()) || (!io_ok && st.streams.is_empty());
            if finished {
                st.stopped = true;
            }
            finished
        };
        wake.drain(..).for_each(Waker::wake);

        // Send without the lock, runs of equal-sized datagrams to one peer at once.
        let max_seg = io.max_segments();
        let mut k = 0;
        while k < batch.items.len() {
            let (to, s, e) = batch.items[k];
            let seg = e - s;
            let mut end = e;
            let mut n = 1;
            while n < max_seg && k + n < batch.items.len() {
                let (to2, s2, e2) = batch.items[k + n];
                if to2 != to || s2 != end || e2 - s2 > seg || end - s + (e2 - s2) > 65_000 {
                    break;
                }
                end = e2;
                n += 1;
                if e2 - s2 < seg {
                    break;
                }
            }
            k += n;
            loop {
                let r = if n > 1 {
                    io.try_send_segments(to, &batch.buf[s..end], seg)
                } else {
                    io.try_send_to(to, &batch.buf[s..e])
                };
                match r {
                    Ok(()) => break,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        if io.send_ready().await.is_err() {
                            io_ok = false;
                            break;
                        }
                    }
                    Err(err) => {
                        if !is_transient(&err) {
                            tracing::debug!("udx: send to {to} failed: {err}");
                        }
                        break;
                    }
                }
            }
            if !io_ok {
                break;
            }
        }
        if finished {
            break;
        }
        if !busy_poll.is_zero() && (!got.is_empty() || !batch.items.is_empty()) {
            poll_until = Some(Instant::now() + busy_poll);
        }
    }
    let mut st = shared.lock();
    st.stopped = true;
    for slot in st.streams.values_mut() {
        slot.wake_all();
    }
    drop(st);
    shared.stopped.notify_waiters();
}

/// One turn of busy polling: the thread offers its core to whatever else is runnable
/// (the peer process on a shared core), then the task lets the runtime poll for I/O
/// without blocking before `drive` looks at the socket again.
async fn poll_turn() {
    std::thread::yield_now();
    tokio::task::yield_now().await;
}

/// The loss-injection generator (xorshift64).
fn drop_roll(rng: &mut u64, p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng % 1_000_000) as f64 / 1_000_000.0 < p
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable | Interrupted
    )
}
