//! The sans-io UDX stream: one reliable, ordered, congestion-controlled byte stream with
//! a peer, as `udx_stream_t` in libudx, but without sockets, timers or callbacks.
//!
//! Inputs are [`StreamCore::handle_packet`], [`StreamCore::handle_timeout`],
//! [`StreamCore::write`], [`StreamCore::end`], [`StreamCore::destroy`] and
//! [`StreamCore::send_message`]; outputs are datagrams from
//! [`StreamCore::poll_transmit_into`], the next deadline from
//! [`StreamCore::poll_timeout`], bytes from [`StreamCore::read`] and
//! [`StreamEvent`]s from [`StreamCore::poll_event`]. Time only enters as the `now`
//! argument; internally it is counted in whole milliseconds since the stream was created,
//! as libudx counts `uv_now()`.
//!
//! The send side follows `udx.c` closely: packets carry up to `mtu - 48` payload bytes
//! (IPv4) with the MTU probed upwards from 1200 to 1500 in steps of 32 by padding DATA
//! packets; cumulative acks and SACK blocks mark packets delivered; loss is detected with
//! RACK (RFC 8985) and tail-loss probes, with an RTO of `max(srtt + 4 * rttvar, 1 s)`
//! (RFC 6298, capped at 30 s) as a backstop; after 6 timeouts of one packet the stream
//! fails with [`StreamError::TimedOut`]. BBR sets the congestion window and a token
//! bucket paces transmissions per millisecond. The receive side buffers out-of-order
//! packets, acks every data packet (acks for one burst of input are coalesced into one)
//! and advertises `recv_window - buffered bytes` as its window.
//!
//! Transmissions are decided when libudx would decide them (so timers and the
//! congestion state evolve the same way), but their bytes are only produced by
//! `poll_transmit_into`, straight from the send buffer into the caller's buffer.

mod bbr;
mod recovery;
mod recv;
mod send;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thiserror::Error;

pub use bbr::BbrState;
use bbr::{sent_after, Bbr, RateSample};

use crate::filter::WinFilter;
use crate::packet::{
    self, DecodeError, Header, FLAG_DATA, FLAG_DESTROY, FLAG_END, FLAG_HEARTBEAT, FLAG_MESSAGE,
    FLAG_SACK, HEADER_SIZE, MAX_SACKS,
};

/// Smallest MTU, used until probing confirms more (`UDX_MTU_BASE`).
pub const MTU_BASE: u16 = 1200;
/// Largest MTU probed (`UDX_MTU_MAX`).
pub const MTU_MAX: u16 = 1500;
/// MTU probe step (`UDX_MTU_STEP`).
pub const MTU_STEP: u16 = 32;
/// Failed probes before the search stops (`UDX_MTU_MAX_PROBES`).
const MTU_MAX_PROBES: u32 = 3;
/// IPv4 + UDP + UDX header bytes (`UDX_IPV4_HEADER_SIZE`).
const IPV4_OVERHEAD: u16 = 20 + 8 + HEADER_SIZE as u16;
/// IPv6 + UDP + UDX header bytes (`UDX_IPV6_HEADER_SIZE`).
const IPV6_OVERHEAD: u16 = 40 + 8 + HEADER_SIZE as u16;
/// Default receive window (`UDX_DEFAULT_RWND_MAX`).
pub const DEFAULT_RECV_WINDOW: u32 = 4 * 1024 * 1024;
/// Queued write bytes above the send window at which writes stop (`UDX_HIGH_WATERMARK`).
pub const HIGH_WATERMARK: usize = 262_144;
/// Largest MESSAGE payload: libudx reads datagrams into a 2048-byte buffer.
pub const MAX_MESSAGE: usize = 2048 - HEADER_SIZE;

const MAX_RTO_TIMEOUTS: u8 = 6;
const RTO_MAX_MS: u32 = 30_000;
const RTT_MAX_MS: u32 = 30_000;
const RTT_MIN_WINDOW_MS: u32 = 300_000;
const TLP_MAX_ACK_DELAY: u32 = 2;
const INIT_PACING_RATE: u32 = 25_000;
/// Out-of-order packets further than this ahead of the cumulative ack are dropped.
const MAX_OOO_DISTANCE: usize = 16_384;
/// Added to every millisecond count so that 0 keeps libudx's "unset" meaning.
const MS_OFFSET: u64 = 1 << 20;

/// Settings of one stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Receive window advertised when the read buffer is empty (`recv_rwnd_max`).
    pub recv_window: u32,
    /// Hard cap on received bytes held (unread in-order plus out-of-order); data beyond
    /// it is dropped unacked. Must be at least `recv_window`.
    pub recv_buffer_limit: usize,
    /// Hard cap on written-but-unacked bytes; `write` accepts less beyond it.
    pub send_buffer_limit: usize,
    /// Largest MTU to probe for (1500 in libudx).
    pub mtu_max: u16,
    /// Received MESSAGE datagrams kept until polled; more are dropped.
    pub max_queued_messages: usize,
    /// Outgoing MESSAGE datagrams waiting for `poll_transmit`; more are refused.
    pub max_pending_messages: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            recv_window: DEFAULT_RECV_WINDOW,
            recv_buffer_limit: 2 * DEFAULT_RECV_WINDOW as usize,
            send_buffer_limit: 16 * 1024 * 1024,
            mtu_max: MTU_MAX,
            max_queued_messages: 256,
            max_pending_messages: 256,
        }
    }
}

/// Why a stream closed with an error, or why an operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer destroyed the stream (a DESTROY packet; `ECONNRESET` in libudx).
    #[error("stream reset by peer")]
    Reset,
    /// A packet went unacknowledged through 6 retransmission timeouts (`ETIMEDOUT`).
    #[error("stream timed out")]
    TimedOut,
    /// The stream is not connected yet.
    #[error("stream not connected")]
    NotConnected,
    /// `connect` on a connected stream.
    #[error("stream already connected")]
    AlreadyConnected,
    /// The write side was ended.
    #[error("write after end")]
    WriteAfterEnd,
    /// The stream is closed (or being destroyed).
    #[error("stream closed")]
    Closed,
    /// A message larger than [`MAX_MESSAGE`].
    #[error("message too large")]
    MessageTooLarge,
    /// Too many messages waiting to be sent.
    #[error("message queue full")]
    MessageQueueFull,
    /// A remote change is already in progress.
    #[error("remote already changing")]
    RemoteChanging,
    /// Port 0 is not a valid remote.
    #[error("invalid remote address")]
    InvalidAddress,
}

/// Why `handle_packet` ignored a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Not a well-formed UDX packet.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Addressed to another stream id.
    #[error("packet for stream {0}")]
    WrongStream(u32),
    /// The stream is closed.
    #[error("stream closed")]
    Closed,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// New in-order bytes can be read.
    Readable,
    /// The peer ended its write side and all its bytes have been received.
    End,
    /// An unordered MESSAGE datagram.
    Message(Vec<u8>),
    /// Written bytes were acknowledged; `write_capacity` grew.
    Drain,
    /// A deferred `change_remote` completed.
    RemoteChanged,
    /// The stream closed: `Ok` after both sides ended or a local destroy, otherwise why.
    Closed(Result<(), StreamError>),
}

/// Counters and estimates, as udx-native exposes them on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Smoothed RTT in ms.
    pub srtt_ms: u32,
    /// RTT variance in ms.
    pub rttvar_ms: u32,
    /// Retransmission timeout in ms.
    pub rto_ms: u32,
    /// Congestion window in packets.
    pub cwnd: u32,
    /// Current MTU.
    pub mtu: u16,
    /// Packets in flight.
    pub inflight_packets: u32,
    /// The peer's advertised window in bytes.
    pub send_window: u32,
    /// Packets retransmitted.
    pub retransmits: u32,
    /// RTO expiries.
    pub rto_count: u32,
    /// Fast recoveries entered.
    pub fast_recoveries: u32,
    /// Datagrams sent.
    pub packets_tx: u64,
    /// Bytes sent (headers included, probe padding excluded).
    pub bytes_tx: u64,
    /// Datagrams received.
    pub packets_rx: u64,
    /// Bytes received.
    pub bytes_rx: u64,
    /// Stream payload bytes delivered in order to the read buffer, whether or not the
    /// application has read them yet (JS streams read eagerly, so this is what JS's
    /// `rawBytesRead` counts).
    pub bytes_delivered: u64,
    /// Pacing rate in bytes per ms.
    pub pacing_bytes_per_ms: u32,
    /// Zero-window probes sent.
    pub zwp_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CaState {
    Open = 1,
    Recovery = 2,
    Loss = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    None,
    Rto,
    RackReo,
    Tlp,
    Zwp,
    Keepalive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PktState {
    Inflight,
    Lost,
    Acked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MtuState {
    Base,
    Search,
    SearchComplete,
}

/// A sent data packet: where its payload lives in the send buffer and its history.
#[derive(Debug, Clone)]
pub(crate) struct SentPacket {
    offset: u64,
    len: u16,
    flags: u8,
    state: PktState,
    transmits: u8,
    rto_timeouts: u8,
    retransmitted: bool,
    /// Probe padding in bytes (`header[3]`), meaningful when `is_mtu_probe`.
    probe_pad: u8,
    is_mtu_probe: bool,
    /// Sent before a pending `change_remote`: goes to the old remote.
    old_remote: bool,
    time_sent: u64,
    first_sent_ts: u64,
    delivered_ts: u64,
    delivered: u32,
    is_app_limited: bool,
}

impl SentPacket {
    fn size(&self) -> u32 {
        HEADER_SIZE as u32 + self.len as u32
    }
}

#[derive(Debug)]
struct OooPacket {
    flags: u8,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tx {
    Data(u32),
    Heartbeat,
    Message,
    Destroy(u32),
}

/// Wrapping sequence difference (`seq_diff`).
fn sd(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// One UDX stream's protocol state.
#[derive(Debug)]
pub struct StreamCore {
    cfg: StreamConfig,
    epoch: Instant,
    now_ms: u64,

    local_id: u32,
    remote_id: u32,
    remote: Option<SocketAddr>,
    connected: bool,
    ending: bool,
    ended: bool,
    ending_remote: bool,
    ended_remote: bool,
    destroying: bool,
    closed: Option<Result<(), StreamError>>,

    // remote change
    remote_changing: bool,
    seq_on_remote_changed: u32,
    old_remote: Option<(u32, SocketAddr)>,

    // send side
    seq: u32,
    remote_acked: u32,
    sbuf: VecDeque<u8>,
    sbuf_base: u64,
    unsent_off: u64,
    queued_bytes: usize,
    end_sent: bool,
    partial_pending: bool,
    send_needed: bool,
    packets: VecDeque<SentPacket>,
    inflight_pkts: u32,
    inflight_bytes: u64,
    lost_pkts: u32,
    rtx_queue: VecDeque<u32>,
    hit_high_watermark: bool,

    ca_state: CaState,
    high_seq: u32,
    cwnd: u32,
    ssthresh: u32,
    send_rwnd: u32,
    send_wl1: u32,
    send_wl2: u32,
    sacks: u32,
    reordering_seen: bool,

    srtt: u32,
    rttvar: u32,
    rto: u32,
    rtt_min: WinFilter<u32>,
    keepalive_ms: u32,

    rack_rtt: u32,
    rack_time_sent: u64,
    rack_next_seq: u32,
    rack_fack: u32,

    tlp_is_retrans: bool,
    tlp_in_flight: bool,
    tlp_permitted: bool,
    tlp_end_seq: u32,

    timer: Timer,
    timer_at: u64,
    next_rto_ts: u64,
    pacing_timer_at: Option<u64>,

    // rate sampling
    delivered: u32,
    lost: u32,
    app_limited: u32,
    first_sent_ts: u64,
    delivered_ts: u64,
    rate_delivered: u32,
    rate_interval_ms: u32,

    bbr: Bbr,
    pacing_bytes_per_ms: u32,
    tb_available: u32,
    tb_last_refill_ms: u64,

    // mtu
    mtu: u16,
    mtu_state: MtuState,
    mtu_probe_wanted: bool,
    mtu_probe_count: u32,
    mtu_probe_size: u16,
    mtu_max: u16,

    // receive side
    ack: u32,
    remote_ended: u32,
    rbuf: VecDeque<u8>,
    ooo: VecDeque<Option<OooPacket>>,
    ooo_count: u32,
    ooo_bytes: usize,
    ack_pending: bool,
    last_adv_rwnd: u32,

    // output
    tx: VecDeque<Tx>,
    out_messages: VecDeque<Vec<u8>>,
    events: VecDeque<StreamEvent>,
    ev_readable: bool,
    ev_drain: bool,
    in_messages: usize,

    stats: StreamStats,
}

impl StreamCore {
    /// A new, unconnected stream with local id `local_id`.
    pub fn new(local_id: u32, cfg: StreamConfig, now: Instant) -> StreamCore {
        let now_ms = MS_OFFSET;
        let mut cfg = cfg;
        cfg.mtu_max = cfg.mtu_max.clamp(MTU_BASE, 2048 + 28);
        cfg.recv_buffer_limit = cfg.recv_buffer_limit.max(cfg.recv_window as usize);
        let mut s = StreamCore {
            epoch: now,
            now_ms,
            local_id,
            remote_id: 0,
            remote: None,
            connected: false,
            ending: false,
            ended: false,
            ending_remote: false,
            ended_remote: false,
            destroying: false,
            closed: None,
            remote_changing: false,
            seq_on_remote_changed: 0,
            old_remote: None,
            seq: 0,
            remote_acked: 0,
            sbuf: VecDeque::new(),
            sbuf_base: 0,
            unsent_off: 0,
            queued_bytes: 0,
            end_sent: false,
            partial_pending: false,
            send_needed: false,
            packets: VecDeque::new(),
            inflight_pkts: 0,
            inflight_bytes: 0,
            lost_pkts: 0,
            rtx_queue: VecDeque::new(),
            hit_high_watermark: false,
            ca_state: CaState::Open,
            high_seq: 0,
            cwnd: 10,
            ssthresh: 0xffff,
            send_rwnd: DEFAULT_RECV_WINDOW,
            send_wl1: 0,
            send_wl2: 0,
            sacks: 0,
            reordering_seen: false,
            srtt: 0,
            rttvar: 0,
            rto: 1000,
            rtt_min: WinFilter::new(now_ms, u32::MAX),
            keepalive_ms: 0,
            rack_rtt: 0,
            rack_time_sent: 0,
            rack_next_seq: 0,
            rack_fack: 0,
            tlp_is_retrans: false,
            tlp_in_flight: false,
            tlp_permitted: false,
            tlp_end_seq: 0,
            timer: Timer::None,
            timer_at: 0,
            next_rto_ts: 0,
            pacing_timer_at: None,
            delivered: 0,
            lost: 0,
            app_limited: u32::MAX,
            first_sent_ts: 0,
            delivered_ts: 0,
            rate_delivered: 0,
            rate_interval_ms: 0,
            bbr: Bbr::new(now_ms, u32::MAX),
            pacing_bytes_per_ms: 0,
            tb_available: INIT_PACING_RATE,
            tb_last_refill_ms: now_ms,
            mtu: MTU_BASE,
            mtu_state: MtuState::Base,
            mtu_probe_wanted: false,
            mtu_probe_count: 0,
            mtu_probe_size: MTU_BASE,
            mtu_max: cfg.mtu_max,
            ack: 0,
            remote_ended: 0,
            rbuf: VecDeque::new(),
            ooo: VecDeque::new(),
            ooo_count: 0,
            ooo_bytes: 0,
            ack_pending: false,
            last_adv_rwnd: cfg.recv_window,
            tx: VecDeque::new(),
            out_messages: VecDeque::new(),
            events: VecDeque::new(),
            ev_readable: false,
            ev_drain: false,
            in_messages: 0,
            stats: StreamStats::default(),
            cfg,
        };
        s.bbr_init_pacing_rate_from_rtt();
        s
    }

    // ------------------------------------------------------------------ clock

    fn set_now(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64 + MS_OFFSET;
        if ms > self.now_ms {
            self.now_ms = ms;
        }
    }

    fn instant_of(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(MS_OFFSET))
    }

    // ------------------------------------------------------------------ accessors

    /// Our stream id (the `stream_id` field of packets sent to us).
    pub fn local_id(&self) -> u32 {
        self.local_id
    }

    /// The peer's stream id.
    pub fn remote_id(&self) -> u32 {
        self.remote_id
    }

    /// Where packets go.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// `connect` was called and the stream is not closed.
    pub fn is_connected(&self) -> bool {
        self.connected && self.closed.is_none()
    }

    /// The stream closed; `Some(Ok)` after a clean end or local destroy.
    pub fn close_result(&self) -> Option<Result<(), StreamError>> {
        self.closed
    }

    /// The stream closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Our END was acknowledged.
    pub fn is_local_ended(&self) -> bool {
        self.ended
    }

    /// `end()` was called.
    pub fn is_ending(&self) -> bool {
        self.ending
    }

    /// The peer's END arrived and every byte before it was received.
    pub fn is_remote_ended(&self) -> bool {
        self.ended_remote
    }

    /// All received bytes were read and the peer ended: reads return EOF.
    pub fn is_read_eof(&self) -> bool {
        self.ended_remote && self.rbuf.is_empty()
    }

    /// Current MTU.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The congestion controller's phase.
    pub fn bbr_state(&self) -> BbrState {
        self.bbr.state
    }

    /// Counters and estimates.
    pub fn stats(&self) -> StreamStats {
        let mut s = self.stats;
        s.srtt_ms = self.srtt;
        s.rttvar_ms = self.rttvar;
        s.rto_ms = self.rto;
        s.cwnd = self.cwnd;
        s.mtu = self.mtu;
        s.inflight_packets = self.inflight_pkts;
        s.send_window = self.send_rwnd;
        s.pacing_bytes_per_ms = self.pacing_bytes_per_ms;
        s
    }

    /// Payload bytes per packet at the current MTU (`udx__max_payload`).
    pub fn max_payload(&self) -> u16 {
        let overhead = match self.remote {
            Some(SocketAddr::V6(a)) if a.ip().to_ipv4_mapped().is_none() => IPV6_OVERHEAD,
            _ => IPV4_OVERHEAD,
        };
        self.mtu - overhead
    }

    fn cwnd_in_bytes(&self) -> usize {
        self.cwnd as usize * self.max_payload() as usize
    }

    fn send_window_in_bytes(&self) -> usize {
        self.cwnd_in_bytes().min(self.send_rwnd as usize)
    }

    fn send_window_in_packets(&self) -> u32 {
        let rwnd = if self.send_rwnd == 0 {
            0
        } else {
            (self.send_rwnd / self.max_payload() as u32).max(1)
        };
        self.cwnd.min(rwnd)
    }

    fn recv_rwnd(&self) -> u32 {
        (self.cfg.recv_window as usize).saturating_sub(self.rbuf.len()) as u32
    }

    fn pkt_index(&self, seq: u32) -> Option<usize> {
        let i = seq.wrapping_sub(self.remote_acked) as usize;
        (i < self.packets.len()).then_some(i)
    }

    // ------------------------------------------------------------------ setup

    /// Sets the first sequence number we send (udx-native's `opts.seq`); before data flows.
    pub fn set_seq(&mut self, seq: u32) {
        self.seq = seq;
        self.remote_acked = seq;
        self.send_wl2 = seq;
    }

    /// Sets the next sequence number we expect (udx-native's `connect(..., { ack })`).
    pub fn set_ack(&mut self, ack: u32) {
        self.ack = ack;
        self.send_wl1 = ack;
    }

    /// Connects to `remote_id` at `addr` (`udx_stream_connect`).
    pub fn connect(
        &mut self,
        now: Instant,
        remote_id: u32,
        addr: SocketAddr,
    ) -> Result<(), StreamError> {
        self.set_now(now);
        if self.closed.is_some() || self.destroying {
            return Err(StreamError::Closed);
        }
        if self.connected {
            return Err(StreamError::AlreadyConnected);
        }
        if addr.port() == 0 {
            return Err(StreamError::InvalidAddress);
        }
        self.connected = true;
        self.remote_id = remote_id;
        self.remote = Some(addr);
        self.bbr_init_pacing_rate_from_rtt();
        if self.keepalive_ms > 0 {
            self.timer_start(Timer::Keepalive, self.keepalive_ms as u64);
        }
        Ok(())
    }

    /// Moves the stream to a new peer address and id (`udx_stream_change_remote`).
    /// Packets already in flight keep going to the old remote; returns true when the
    /// change is complete at once, otherwise [`StreamEvent::RemoteChanged`] follows
    /// once the old remote acknowledged them.
    pub fn change_remote(
        &mut self,
        now: Instant,
        remote_id: u32,
        addr: SocketAddr,
    ) -> Result<bool, StreamError> {
        self.set_now(now);
        if self.closed.is_some() || self.destroying {
            return Err(StreamError::Closed);
        }
        if !self.connected {
            return Err(StreamError::NotConnected);
        }
        if self.remote_changing {
            return Err(StreamError::RemoteChanging);
        }
        if addr.port() == 0 {
            return Err(StreamError::InvalidAddress);
        }
        let old = (self.remote_id, self.remote.unwrap_or(addr));
        self.remote = Some(addr);
        self.remote_id = remote_id;
        let immediate = self.seq == self.remote_acked;
        if !immediate {
            self.remote_changing = true;
            self.seq_on_remote_changed = self.seq;
            self.old_remote = Some(old);
            for p in self.packets.iter_mut() {
                p.old_remote = true;
            }
        }
        self.mtu = MTU_BASE;
        self.mtu_state = MtuState::Base;
        self.mtu_probe_count = 0;
        self.mtu_probe_size = MTU_BASE;
        self.mtu_probe_wanted = false;
        self.mtu_max = self.cfg.mtu_max;
        Ok(immediate)
    }

    /// Sends a heartbeat after `ms` idle milliseconds (0 disables), as
    /// `udx_stream_set_keepalive`.
    pub fn set_keepalive(&mut self, now: Instant, ms: u32) {
        self.set_now(now);
        self.keepalive_ms = ms;
        if self.remote_acked == self.seq && ms > 0 && self.is_connected() {
            self.timer_start(Timer::Keepalive, ms as u64);
        }
    }

    // ------------------------------------------------------------------ app input

    /// How many more bytes `write` accepts now.
    pub fn write_capacity(&self) -> usize {
        if self.ending || self.closed.is_some() || self.destroying {
            return 0;
        }
        let limit = (HIGH_WATERMARK + self.send_window_in_bytes()).min(self.cfg.send_buffer_limit);
        limit.saturating_sub(self.queued_bytes)
    }

    /// Queues bytes for sending; returns how many were taken (up to
    /// [`write_capacity`](Self::write_capacity), which may be 0).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        if self.closed.is_some() || self.destroying {
            return Err(StreamError::Closed);
        }
        if self.ending {
            return Err(StreamError::WriteAfterEnd);
        }
        let n = data.len().min(self.write_capacity());
        if n == 0 {
            if !data.is_empty() {
                self.hit_high_watermark = true;
            }
            return Ok(0);
        }
        let was_idle = self.queued_bytes == 0;
        self.sbuf.extend(&data[..n]);
        self.queued_bytes += n;
        self.on_write_queued(was_idle);
        if n < data.len() {
            self.hit_high_watermark = true;
        }
        Ok(n)
    }

    fn on_write_queued(&mut self, was_idle: bool) {
        self.send_needed = true;
        if was_idle && self.send_rwnd == 0 && self.is_connected() {
            self.tx.push_back(Tx::Heartbeat);
            self.timer_start(Timer::Zwp, self.rto as u64);
        }
    }

    /// Ends our write side: an END packet follows the queued bytes (`udx_stream_write_end`).
    pub fn end(&mut self) -> Result<(), StreamError> {
        if self.closed.is_some() || self.destroying {
            return Err(StreamError::Closed);
        }
        if self.ending {
            return Ok(());
        }
        self.ending = true;
        let was_idle = self.queued_bytes == 0;
        self.on_write_queued(was_idle);
        Ok(())
    }

    /// Destroys the stream: a DESTROY packet goes out (if connected) and the stream
    /// closes with `Ok` once it was polled (`udx_stream_destroy`).
    pub fn destroy(&mut self) {
        if self.closed.is_some() || self.destroying {
            return;
        }
        if !self.connected {
            self.close(Ok(()));
            return;
        }
        self.destroying = true;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.tx.clear();
        self.tx.push_back(Tx::Destroy(seq));
    }

    /// Queues an unordered MESSAGE datagram (udx-native `stream.send`/`trySend`).
    pub fn send_message(&mut self, data: &[u8]) -> Result<(), StreamError> {
        if self.closed.is_some() || self.destroying {
            return Err(StreamError::Closed);
        }
        if !self.connected {
            return Err(StreamError::NotConnected);
        }
        if data.len() > MAX_MESSAGE {
            return Err(StreamError::MessageTooLarge);
        }
        if self.out_messages.len() >= self.cfg.max_pending_messages {
            return Err(StreamError::MessageQueueFull);
        }
        self.out_messages.push_back(data.to_vec());
        self.tx.push_back(Tx::Message);
        Ok(())
    }

    /// Bytes ready to read.
    pub fn readable(&self) -> usize {
        self.rbuf.len()
    }

    /// Copies received in-order bytes into `buf`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.rbuf.len());
        if n == 0 {
            return 0;
        }
        let (a, b) = self.rbuf.as_slices();
        if n <= a.len() {
            buf[..n].copy_from_slice(&a[..n]);
        } else {
            buf[..a.len()].copy_from_slice(a);
            buf[a.len()..n].copy_from_slice(&b[..n - a.len()]);
        }
        self.rbuf.drain(..n);
        // Window update: tell a sender stalled on our window that it opened again.
        let rwnd = self.recv_rwnd();
        if self.is_connected()
            && !self.ended_remote
            && rwnd >= self.last_adv_rwnd.saturating_add(self.cfg.recv_window / 4)
        {
            self.ack_pending = true;
        }
        n
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        let ev = self.events.pop_front()?;
        match &ev {
            StreamEvent::Readable => self.ev_readable = false,
            StreamEvent::Drain => self.ev_drain = false,
            StreamEvent::Message(_) => self.in_messages -= 1,
            _ => {}
        }
        Some(ev)
    }

    /// True when `poll_transmit_into` would produce a datagram (ignoring pacing).
    pub fn wants_transmit(&self) -> bool {
        (self.ack_pending
            || !self.tx.is_empty()
            || self.send_needed
            || self.partial_pending
            || self.lost_pkts > 0)
            && (self.connected || self.destroying)
            && self.closed.is_none()
    }

    fn close(&mut self, result: Result<(), StreamError>) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(result);
        self.timer = Timer::None;
        self.pacing_timer_at = None;
        self.tx.clear();
        self.out_messages.clear();
        self.packets.clear();
        self.sbuf.clear();
        self.ooo.clear();
        self.ooo_count = 0;
        self.ooo_bytes = 0;
        self.ack_pending = false;
        if result.is_err() {
            self.rbuf.clear();
        }
        self.events.push_back(StreamEvent::Closed(result));
    }
}

#[cfg(test)]
mod tests;
