//! The UDP sockets of a HyperDHT node, shared by the DHT and the UDX streams of its
//! connections, the way JS runs dht-rpc on udx-native sockets.
//!
//! Every socket is a [`UdxSocket`] owning its UDP port. UDX packets of live streams are
//! handled inside the UDX driver; everything else comes out of its *unmatched* queue and
//! is sorted by a pump task ([`classify`]):
//!
//! ```text
//!   datagram ──► UDX driver ──► stream (id known)           UDX data path, no copy
//!                    │
//!                    └─unmatched─► pump ──► 0x03 / 0x13  ──► dht-rpc (inject_datagram)
//!                                       ├─► 1 byte       ──► holepunch probe listener
//!                                       └─► UDX, id      ──► pending raw stream
//!                                           announced in a handshake ("firewall")
//! ```
//!
//! A node has a server and a client socket (dht-rpc's two sockets) and a pool of
//! short-lived holepunch sockets ([`SocketKind::Other`], `lib/socket-pool.js`). A
//! connection's stream id is sent in the handshake before we know which socket the
//! connection will use, exactly like JS `createRawStream`: the id is registered in the
//! node-wide [`Sockets::register_stream`] table, and the first packet for it on *any*
//! socket reaches the connection (JS calls the raw stream's `firewall` hook), which then
//! creates the stream on that socket and hands the packet back to UDX
//! ([`NodeSocket::connect_stream`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use intercom_dht_rpc::{Dht, SendFn, SocketKind, Transmit};
use intercom_udx::{
    Datagram, DatagramIo, SocketConfig, StreamOptions, UdpIo, UdxError, UdxSocket, UdxStream,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};

/// Datagrams that match no stream waiting for the pump (DHT traffic comes in bursts).
const UNMATCHED_QUEUE: usize = 1024;
/// Holepunch probes queued for a puncher.
pub const PROBE_QUEUE: usize = 64;
/// First packets queued for a pending stream.
const FIRST_PACKET_QUEUE: usize = 8;
/// The TTL of a low-TTL holepunch probe (`HOLEPUNCH_TTL`): it opens our NAT mapping but
/// should die before it reaches the remote NAT.
pub const HOLEPUNCH_TTL: u32 = 5;
/// The normal TTL (`DEFAULT_TTL`).
pub const DEFAULT_TTL: u32 = 64;
/// The holepunch probe: one zero byte.
pub const HOLEPUNCH: [u8; 1] = [0];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

struct IoInner {
    udp: UdpIo,
    injected: Mutex<VecDeque<Datagram>>,
    wake: Notify,
}

/// The socket's [`DatagramIo`]: the UDP socket, plus datagrams handed back to UDX after
/// a pending stream was created for them (they are received before the socket's own).
#[derive(Clone)]
struct SharedIo(Arc<IoInner>);

impl DatagramIo for SharedIo {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.udp.local_addr()
    }

    fn try_send_to(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        self.0.udp.try_send_to(to, bytes)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        if let Some(d) = lock(&self.0.injected).pop_front() {
            let n = d.bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&d.bytes[..n]);
            return Ok((n, d.addr));
        }
        self.0.udp.try_recv_from(buf)
    }

    fn send_ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.0.udp.send_ready()
    }

    async fn recv_ready(&self) -> io::Result<()> {
        loop {
            let woken = self.0.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !lock(&self.0.injected).is_empty() {
                return Ok(());
            }
            tokio::select! {
                r = self.0.udp.recv_ready() => return r,
                _ = woken => {}
            }
        }
    }

    fn max_segments(&self) -> usize {
        self.0.udp.max_segments()
    }

    fn try_send_segments(&self, to: SocketAddr, bytes: &[u8], segment: usize) -> io::Result<()> {
        self.0.udp.try_send_segments(to, bytes, segment)
    }
}

/// What an unmatched datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// A dht-rpc request or response.
    Dht,
    /// A holepunch probe (exactly one byte).
    Probe,
    /// A UDX packet for a stream that is not on this socket (yet).
    Stream(u32),
    /// Anything else: dropped.
    Other,
}

/// Sorts a datagram that no live stream took.
pub fn classify(bytes: &[u8]) -> Unmatched {
    if bytes.len() == 1 {
        Unmatched::Probe
    } else if intercom_dht_rpc::messages::is_dht_message(bytes) {
        Unmatched::Dht
    } else if let Some(id) = intercom_udx::packet::peek_stream_id(bytes) {
        Unmatched::Stream(id)
    } else {
        Unmatched::Other
    }
}

/// The first packet of a registered stream, on some socket of the node (the JS raw
/// stream's `firewall(socket, port, host)` call).
#[derive(Debug)]
pub struct FirstPacket {
    /// The socket it arrived on; the stream must live there.
    pub socket: Arc<NodeSocket>,
    /// Its sender.
    pub from: SocketAddrV4,
    /// The packet, to hand back to UDX once the stream exists.
    pub bytes: Vec<u8>,
}

/// One UDP socket of a node: the UDX socket on it and its probe listener.
pub struct NodeSocket {
    kind: SocketKind,
    local: SocketAddrV4,
    io: SharedIo,
    udx: UdxSocket,
    probes: Mutex<Option<mpsc::Sender<(SocketKind, SocketAddrV4)>>>,
}

impl std::fmt::Debug for NodeSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSocket")
            .field("kind", &self.kind)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl NodeSocket {
    fn bind_std(addr: SocketAddrV4, cfg: &SocketConfig) -> io::Result<UdpSocket> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        // Best effort, as libudx: the kernel may cap them.
        let _ = sock.set_recv_buffer_size(cfg.recv_buffer);
        let _ = sock.set_send_buffer_size(cfg.send_buffer);
        sock.set_nonblocking(true)?;
        sock.bind(&SocketAddr::V4(addr).into())?;
        UdpSocket::from_std(sock.into())
    }

    fn new(kind: SocketKind, udp: UdpSocket, cfg: &SocketConfig) -> Result<NodeSocket, UdxError> {
        let local = udp
            .local_addr()
            .ok()
            .and_then(v4)
            .ok_or_else(|| io::Error::other("not an ipv4 socket"))?;
        let io = SharedIo(Arc::new(IoInner {
            udp: UdpIo::new(udp),
            injected: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        }));
        let mut cfg = cfg.clone();
        cfg.unmatched_capacity = UNMATCHED_QUEUE;
        let udx = UdxSocket::with_io(io.clone(), cfg)?;
        Ok(NodeSocket {
            kind,
            local,
            io,
            udx,
            probes: Mutex::new(None),
        })
    }

    /// Which dht-rpc socket this is.
    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The UDX socket (streams of connections that settled on this socket).
    pub fn udx(&self) -> &UdxSocket {
        &self.udx
    }

    /// Sends one datagram now, best effort (UDP semantics: dropped when the socket
    /// buffer is full).
    ///
    /// The kernel is asked directly: tokio's `try_send_to` answers `WouldBlock` from its
    /// own readiness record until the reactor has once seen the socket writable, which
    /// dropped the first DHT requests of every fresh node (a one-second retry on each
    /// `join`).
    pub fn send(&self, to: SocketAddrV4, bytes: &[u8]) {
        let socket = socket2::SockRef::from(self.io.0.udp.socket());
        if let Err(e) = socket.send_to(bytes, &SocketAddr::V4(to).into()) {
            tracing::trace!(%to, error = %e, "udp send failed");
        }
    }

    /// Sends a holepunch probe, with a low TTL when `low_ttl` (`holepunch()` of
    /// `lib/holepuncher.js`).
    pub fn send_probe(&self, to: SocketAddrV4, low_ttl: bool) {
        let sock = self.io.0.udp.socket();
        if low_ttl {
            let _ = sock.set_ttl(HOLEPUNCH_TTL);
        }
        self.send(to, &HOLEPUNCH);
        if low_ttl {
            let _ = sock.set_ttl(DEFAULT_TTL);
        }
    }

    /// Routes the holepunch probes this socket receives (with its kind, so one channel
    /// can serve several sockets) to `tx`, replacing any earlier listener; `None` stops
    /// listening.
    pub fn set_probe_listener(&self, tx: Option<mpsc::Sender<(SocketKind, SocketAddrV4)>>) {
        *lock(&self.probes) = tx;
    }

    /// Creates stream `local_id` on this socket, connects it to `remote_id` at `addr`
    /// and hands `first` (the packet that revealed the peer) back to UDX.
    pub fn connect_stream(
        &self,
        local_id: u32,
        remote_id: u32,
        addr: SocketAddrV4,
        first: Option<Vec<u8>>,
    ) -> Result<UdxStream, UdxError> {
        let stream = self.udx.create_stream(local_id, StreamOptions::default())?;
        stream.connect(remote_id, SocketAddr::V4(addr))?;
        if let Some(bytes) = first {
            lock(&self.io.0.injected).push_back(Datagram {
                addr: SocketAddr::V4(addr),
                bytes,
            });
            self.io.0.wake.notify_one();
        }
        Ok(stream)
    }

    fn on_probe(&self, from: SocketAddrV4) {
        if let Some(tx) = lock(&self.probes).as_ref() {
            let _ = tx.try_send((self.kind, from));
        }
    }
}

/// Settings of a node's sockets.
#[derive(Debug, Clone)]
pub struct SocketsConfig {
    /// Host every socket binds (pool sockets included).
    pub host: Ipv4Addr,
    /// Server socket port (0 = any).
    pub port: u16,
    /// When `port` is taken, try the next four, then any (`anyPort`).
    pub any_port: bool,
    /// UDX settings of every socket.
    pub udx: SocketConfig,
}

/// Every socket of one node and the table of streams waiting for their first packet.
pub struct Sockets {
    config: SocketsConfig,
    server: Arc<NodeSocket>,
    client: Arc<NodeSocket>,
    pool: Mutex<HashMap<u32, Weak<NodeSocket>>>,
    next_tag: AtomicU32,
    pending: Mutex<HashMap<u32, mpsc::Sender<FirstPacket>>>,
    dht: Mutex<Option<Dht>>,
}

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sockets")
            .field("server", &self.server.local)
            .field("client", &self.client.local)
            .finish_non_exhaustive()
    }
}

impl Sockets {
    /// Binds the server socket (with dht-rpc's port fallback) and the client socket.
    pub fn bind(config: SocketsConfig) -> Result<Arc<Sockets>, UdxError> {
        let server = Self::bind_server(&config)?;
        let client = NodeSocket::bind_std(SocketAddrV4::new(config.host, 0), &config.udx)?;
        let server = Arc::new(NodeSocket::new(SocketKind::Server, server, &config.udx)?);
        let client = Arc::new(NodeSocket::new(SocketKind::Client, client, &config.udx)?);
        Ok(Arc::new(Sockets {
            config,
            server,
            client,
            pool: Mutex::new(HashMap::new()),
            next_tag: AtomicU32::new(1),
            pending: Mutex::new(HashMap::new()),
            dht: Mutex::new(None),
        }))
    }

    fn bind_server(cfg: &SocketsConfig) -> io::Result<UdpSocket> {
        if cfg.port != 0 {
            let last = cfg.port.saturating_add(4);
            let mut err = None;
            for port in cfg.port..=last {
                match NodeSocket::bind_std(SocketAddrV4::new(cfg.host, port), &cfg.udx) {
                    Ok(s) => return Ok(s),
                    Err(e) if !cfg.any_port => return Err(e),
                    Err(e) => err = Some(e),
                }
            }
            if !cfg.any_port {
                return Err(err.unwrap_or_else(|| io::Error::other("no port")));
            }
        }
        NodeSocket::bind_std(SocketAddrV4::new(cfg.host, 0), &cfg.udx)
    }

    /// The [`SendFn`] dht-rpc sends through (holds the table weakly).
    pub fn send_fn(self: &Arc<Self>) -> SendFn {
        let weak = Arc::downgrade(self);
        Arc::new(move |t: &Transmit| {
            if let Some(s) = weak.upgrade().and_then(|s| s.socket(t.socket)) {
                s.send(t.to, &t.bytes);
            }
        })
    }

    /// Starts the pumps of the server and client sockets, feeding `dht`.
    pub fn start(self: &Arc<Self>, dht: Dht) {
        *lock(&self.dht) = Some(dht.clone());
        self.spawn_pump(&self.server, dht.clone());
        self.spawn_pump(&self.client, dht);
    }

    fn spawn_pump(self: &Arc<Self>, socket: &Arc<NodeSocket>, dht: Dht) {
        let Some(mut rx) = socket.udx.take_unmatched() else {
            return;
        };
        let weak_socket = Arc::downgrade(socket);
        let weak_table = Arc::downgrade(self);
        let kind = socket.kind;
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                let Some(from) = v4(d.addr) else { continue };
                match classify(&d.bytes) {
                    Unmatched::Dht => {
                        if dht.inject_datagram(kind, from, d.bytes).await.is_err() {
                            break;
                        }
                    }
                    Unmatched::Probe => {
                        if let Some(s) = weak_socket.upgrade() {
                            s.on_probe(from);
                        }
                    }
                    Unmatched::Stream(id) => {
                        let (Some(table), Some(socket)) =
                            (weak_table.upgrade(), weak_socket.upgrade())
                        else {
                            continue;
                        };
                        let tx = lock(&table.pending).get(&id).cloned();
                        if let Some(tx) = tx {
                            let _ = tx.try_send(FirstPacket {
                                socket,
                                from,
                                bytes: d.bytes,
                            });
                        }
                    }
                    Unmatched::Other => {}
                }
            }
        });
    }

    /// The server socket (the one a persistent node is known by).
    pub fn server(&self) -> &Arc<NodeSocket> {
        &self.server
    }

    /// The client socket.
    pub fn client(&self) -> &Arc<NodeSocket> {
        &self.client
    }

    /// The host every socket binds.
    pub fn host(&self) -> Ipv4Addr {
        self.config.host
    }

    /// The socket of a [`SocketKind`], if it is still open.
    pub fn socket(&self, kind: SocketKind) -> Option<Arc<NodeSocket>> {
        match kind {
            SocketKind::Server => Some(self.server.clone()),
            SocketKind::Client => Some(self.client.clone()),
            SocketKind::Other(tag) => lock(&self.pool).get(&tag).and_then(Weak::upgrade),
        }
    }

    /// A new pool socket on the node's host (`socketPool.acquire()`); it closes when the
    /// last handle is dropped and its streams ended.
    pub fn acquire(self: &Arc<Self>) -> Result<Arc<NodeSocket>, UdxError> {
        let dht = lock(&self.dht).clone().ok_or(UdxError::SocketClosed)?;
        let udp = NodeSocket::bind_std(SocketAddrV4::new(self.config.host, 0), &self.config.udx)?;
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let socket = Arc::new(NodeSocket::new(
            SocketKind::Other(tag),
            udp,
            &self.config.udx,
        )?);
        {
            let mut pool = lock(&self.pool);
            pool.retain(|_, w| w.strong_count() > 0);
            pool.insert(tag, Arc::downgrade(&socket));
        }
        self.spawn_pump(&socket, dht);
        Ok(socket)
    }

    /// Open pool sockets.
    pub fn pool_size(&self) -> usize {
        lock(&self.pool)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Allocates a random stream id no pending stream uses and routes its first
    /// packet on any socket to the returned receiver until the [`PendingStream`] drops.
    pub fn register_stream(self: &Arc<Self>) -> PendingStream {
        let (tx, rx) = mpsc::channel(FIRST_PACKET_QUEUE);
        let mut pending = lock(&self.pending);
        let id = loop {
            let id = u32::from_le_bytes(intercom_crypto::random_array());
            // Random 32-bit ids (as JS `RawStreamSet`): a clash with a live stream is
            // left to `create_stream`'s IdInUse.
            if id != 0 && !pending.contains_key(&id) {
                break id;
            }
        };
        pending.insert(id, tx);
        PendingStream {
            id,
            table: Arc::downgrade(self),
            first: rx,
        }
    }
}

/// A stream id handed out in a handshake, waiting for its first packet.
#[derive(Debug)]
pub struct PendingStream {
    id: u32,
    table: Weak<Sockets>,
    first: mpsc::Receiver<FirstPacket>,
}

impl PendingStream {
    /// The id (the `udx.id` of our noise payload).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next first packet; `None` if the node is gone.
    pub async fn first_packet(&mut self) -> Option<FirstPacket> {
        self.first.recv().await
    }

    /// A first packet that already arrived.
    pub fn try_first_packet(&mut self) -> Option<FirstPacket> {
        self.first.try_recv().ok()
    }
}

impl Drop for PendingStream {
    fn drop(&mut self) {
        if let Some(t) = self.table.upgrade() {
            lock(&t.pending).remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_datagrams() {
        assert_eq!(classify(&[0]), Unmatched::Probe);
        assert_eq!(classify(&[0x03, 0]), Unmatched::Dht);
        assert_eq!(classify(&[0x13, 0]), Unmatched::Dht);
        let mut udx = vec![0xff, 1, 0, 0, 7, 0, 0, 0];
        udx.resize(20, 0);
        assert_eq!(classify(&udx), Unmatched::Stream(7));
        assert_eq!(classify(&[0xff, 1, 0]), Unmatched::Other);
        assert_eq!(classify(&[]), Unmatched::Other);
    }

    #[tokio::test]
    async fn the_first_datagram_of_a_fresh_socket_is_sent() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let Ok(SocketAddr::V4(to)) = receiver.local_addr() else {
            panic!("receiver has no IPv4 address");
        };
        let sockets = Sockets::bind(SocketsConfig {
            host: Ipv4Addr::LOCALHOST,
            port: 0,
            any_port: false,
            udx: SocketConfig::default(),
        })
        .unwrap();
        // Straight after binding, before the runtime has polled the socket once.
        sockets.client().send(to, b"first");
        sockets.server().send(to, b"second");
        let mut buf = [0u8; 16];
        let (n, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
        let (n, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"second");
    }
}
