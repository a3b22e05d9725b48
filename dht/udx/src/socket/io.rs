//! Where a [`UdxSocket`](super::UdxSocket)'s datagrams come from and go to.
//!
//! [`DatagramIo`] is the small non-blocking interface the socket driver needs: try to
//! send, try to receive, and wait for either to become possible. Two implementations:
//!
//! * [`UdpIo`] (or a bare `tokio::net::UdpSocket`): standalone mode, the socket owns its
//!   UDP port. `UdpIo` sends runs of equal-sized datagrams to one peer with a single
//!   `sendmsg` using UDP generic segmentation offload (`UDP_SEGMENT`) on Linux, and falls
//!   back to one `sendto` per datagram when the kernel refuses it;
//! * [`ChannelIo`]: shared mode, datagrams arrive on a bounded channel and leave either on
//!   another channel or straight through the owner's socket, so UDX can sit on a socket
//!   someone else owns. The HyperDHT glue feeds it from `Dht::set_foreign_handler` (UDX
//!   packets start with 0xff, never a dht-rpc byte) and forwards what it sends to
//!   `Dht::send_raw`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// One datagram and its peer address (source when received, destination when sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The peer.
    pub addr: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A non-blocking datagram transport.
pub trait DatagramIo: Send + Sync + 'static {
    /// The local address (what peers send to).
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Sends one datagram now or fails with `WouldBlock`.
    fn try_send_to(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()>;
    /// Receives one datagram now (truncated to `buf`) or fails with `WouldBlock`.
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// Resolves when a send may succeed. An error means the transport is gone.
    fn send_ready(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Resolves when a receive may succeed. An error means the transport is gone.
    fn recv_ready(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// How many equal-sized datagrams [`try_send_segments`](Self::try_send_segments)
    /// takes at once; 1 (the default) when the transport has no segmentation offload.
    fn max_segments(&self) -> usize {
        1
    }
    /// Sends `bytes` as datagrams of `segment` bytes each (the last may be shorter) to
    /// one peer; `WouldBlock` when not even the first can go now. The default sends them
    /// one by one and leaves the rest to loss recovery if the transport fills up midway.
    fn try_send_segments(&self, to: SocketAddr, bytes: &[u8], segment: usize) -> io::Result<()> {
        send_singly(bytes, segment, |chunk| self.try_send_to(to, chunk))
    }
}

impl DatagramIo for UdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }

    fn try_send_to(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        UdpSocket::try_send_to(self, bytes, to).map(|_| ())
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::try_recv_from(self, buf)
    }

    fn send_ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.writable()
    }

    fn recv_ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }
}

/// Sets SO_RCVBUF / SO_SNDBUF on a UDP socket, as libudx does on every socket it binds
/// (1 MiB receive, 208 KiB send). A socket shared with UDX streams needs a receive buffer
/// of this order, or a window's worth of packets arriving in one pacing slot overflows
/// it and throughput collapses into retransmissions.
pub fn set_buffer_sizes(socket: &UdpSocket, recv: usize, send: usize) -> io::Result<()> {
    let s = socket2::SockRef::from(socket);
    s.set_recv_buffer_size(recv)?;
    s.set_send_buffer_size(send)
}

/// Whether UDP segmentation offload still works on a socket, and the send path using it;
/// shared by [`UdpIo`] and a [`ChannelIo`] sending through the owner's socket.
#[derive(Debug)]
struct GsoSender {
    gso: AtomicBool,
}

/// Datagrams per `UDP_SEGMENT` send (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
#[cfg(target_os = "linux")]
const GSO_SEGMENTS: usize = 64;

impl GsoSender {
    fn new() -> GsoSender {
        GsoSender {
            gso: AtomicBool::new(cfg!(target_os = "linux")),
        }
    }

    fn max_segments(&self) -> usize {
        #[cfg(target_os = "linux")]
        if self.gso.load(Ordering::Relaxed) {
            return GSO_SEGMENTS;
        }
        1
    }

    #[cfg(target_os = "linux")]
    fn sendmsg_gso(
        socket: &UdpSocket,
        to: SocketAddr,
        bytes: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        // One `cmsghdr { size_t len; int level; int type; }` + a u16, padded to 8 bytes:
        // level SOL_UDP (17), type UDP_SEGMENT (103), data = segment size.
        #[repr(C, align(8))]
        struct Cmsg([u8; 24]);
        const SOL_UDP: i32 = 17;
        const UDP_SEGMENT: i32 = 103;
        let o = std::mem::size_of::<usize>();
        let hdr = o + 8;
        let mut c = Cmsg([0u8; 24]);
        c.0[..o].copy_from_slice(&(hdr + 2).to_ne_bytes());
        c.0[o..o + 4].copy_from_slice(&SOL_UDP.to_ne_bytes());
        c.0[o + 4..o + 8].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
        c.0[hdr..hdr + 2].copy_from_slice(&(segment as u16).to_ne_bytes());
        let space = hdr + 8;
        let addr = socket2::SockAddr::from(to);
        let iov = [io::IoSlice::new(bytes)];
        let msg = socket2::MsgHdr::new()
            .with_addr(&addr)
            .with_buffers(&iov)
            .with_control(&c.0[..space]);
        let sock = socket2::SockRef::from(socket);
        socket
            .try_io(tokio::io::Interest::WRITABLE, || sock.sendmsg(&msg, 0))
            .map(|_| ())
    }

    fn send_segments(
        &self,
        socket: &UdpSocket,
        to: SocketAddr,
        bytes: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if bytes.len() > segment && self.gso.load(Ordering::Relaxed) {
            match Self::sendmsg_gso(socket, to, bytes, segment) {
                Err(e)
                    if e.kind() != io::ErrorKind::WouldBlock
                        && e.kind() != io::ErrorKind::Interrupted =>
                {
                    // EINVAL / EIO / ENOPROTOOPT: no offload here; one datagram at a
                    // time from now on.
                    tracing::debug!("udx: UDP_SEGMENT unavailable ({e}), sending datagrams singly");
                    self.gso.store(false, Ordering::Relaxed);
                }
                r => return r,
            }
        }
        // Without offload (or after it failed) the group goes out one datagram at a time.
        send_singly(bytes, segment, |chunk| {
            socket.try_send_to(chunk, to).map(|_| ())
        })
    }
}

/// Sends `bytes` in `segment`-sized datagrams; once the first went, a full transport
/// drops the rest (loss recovery resends them) instead of blocking the driver.
fn send_singly(
    bytes: &[u8],
    segment: usize,
    mut send: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    for (i, chunk) in bytes.chunks(segment.max(1)).enumerate() {
        match send(chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && i > 0 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Standalone mode: a UDP socket of our own, with segmentation offload where available.
#[derive(Debug)]
pub struct UdpIo {
    socket: UdpSocket,
    gso: GsoSender,
}

impl UdpIo {
    /// Wraps a bound socket.
    pub fn new(socket: UdpSocket) -> UdpIo {
        UdpIo {
            socket,
            gso: GsoSender::new(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Turns segmentation offload on (where the platform has it) or off.
    pub fn set_offload(&self, on: bool) {
        self.gso
            .gso
            .store(on && cfg!(target_os = "linux"), Ordering::Relaxed);
    }
}

impl DatagramIo for UdpIo {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn try_send_to(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        self.socket.try_send_to(bytes, to).map(|_| ())
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.try_recv_from(buf)
    }

    fn send_ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.socket.writable()
    }

    fn recv_ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.socket.readable()
    }

    fn max_segments(&self) -> usize {
        self.gso.max_segments()
    }

    fn try_send_segments(&self, to: SocketAddr, bytes: &[u8], segment: usize) -> io::Result<()> {
        self.gso.send_segments(&self.socket, to, bytes, segment)
    }
}

/// Shared mode: datagrams of someone else's socket arrive on a bounded channel; ours
/// leave on another channel or straight through a handle on that socket.
#[derive(Debug)]
pub struct ChannelIo {
    local: SocketAddr,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Datagram>>,
    peeked: Mutex<Option<Datagram>>,
    outgoing: Outgoing,
}

#[derive(Debug)]
enum Outgoing {
    Channel(mpsc::Sender<Datagram>),
    Socket(Arc<UdpSocket>, GsoSender),
}

impl ChannelIo {
    /// `incoming` delivers datagrams received on the shared socket (the UDX ones, at
    /// least), `outgoing` takes what UDX wants sent from it; `local` is the socket's
    /// address.
    pub fn new(
        local: SocketAddr,
        incoming: mpsc::Receiver<Datagram>,
        outgoing: mpsc::Sender<Datagram>,
    ) -> ChannelIo {
        ChannelIo {
            local,
            incoming: tokio::sync::Mutex::new(incoming),
            peeked: Mutex::new(None),
            outgoing: Outgoing::Channel(outgoing),
        }
    }

    /// Receives from `incoming` but sends directly through the owner's `socket` (UDP
    /// sends need no coordination with its receive loop): no copy, no channel hop, and
    /// segmentation offload as in [`UdpIo`]. Give that socket a receive buffer of a
    /// MiB or more ([`set_buffer_sizes`]), as libudx does.
    pub fn with_socket(
        incoming: mpsc::Receiver<Datagram>,
        socket: Arc<UdpSocket>,
    ) -> io::Result<ChannelIo> {
        Ok(ChannelIo {
            local: socket.local_addr()?,
            incoming: tokio::sync::Mutex::new(incoming),
            peeked: Mutex::new(None),
            outgoing: Outgoing::Socket(socket, GsoSender::new()),
        })
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "datagram channel closed")
}

impl DatagramIo for ChannelIo {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn try_send_to(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let tx = match &self.outgoing {
            Outgoing::Socket(s, _) => return s.try_send_to(bytes, to).map(|_| ()),
            Outgoing::Channel(tx) => tx,
        };
        match tx.try_reserve() {
            Ok(permit) => {
                permit.send(Datagram {
                    addr: to,
                    bytes: bytes.to_vec(),
                });
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => Err(io::ErrorKind::WouldBlock.into()),
            Err(mpsc::error::TrySendError::Closed(())) => Err(gone()),
        }
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let d = {
            let mut peeked = self.peeked.lock().unwrap_or_else(|e| e.into_inner());
            match peeked.take() {
                Some(d) => d,
                None => {
                    let Ok(mut rx) = self.incoming.try_lock() else {
                        return Err(io::ErrorKind::WouldBlock.into());
                    };
                    match rx.try_recv() {
                        Ok(d) => d,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            return Err(io::ErrorKind::WouldBlock.into())
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => return Err(gone()),
                    }
                }
            }
        };
        let n = d.bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&d.bytes[..n]);
        Ok((n, d.addr))
    }

    fn max_segments(&self) -> usize {
        match &self.outgoing {
            Outgoing::Socket(_, gso) => gso.max_segments(),
            Outgoing::Channel(_) => 1,
        }
    }

    fn try_send_segments(&self, to: SocketAddr, bytes: &[u8], segment: usize) -> io::Result<()> {
        match &self.outgoing {
            Outgoing::Socket(s, gso) => gso.send_segments(s, to, bytes, segment),
            Outgoing::Channel(_) => send_singly(bytes, segment, |c| self.try_send_to(to, c)),
        }
    }

    async fn send_ready(&self) -> io::Result<()> {
        match &self.outgoing {
            Outgoing::Socket(s, _) => s.writable().await,
            // Wait for room, then give the slot back for `try_send_to` (we are the only
            // sender, so it stays free).
            Outgoing::Channel(tx) => tx.reserve().await.map(drop).map_err(|_| gone()),
        }
    }

    async fn recv_ready(&self) -> io::Result<()> {
        if self
            .peeked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let mut rx = self.incoming.lock().await;
        match rx.recv().await {
            Some(d) => {
                *self.peeked.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
                Ok(())
            }
            None => Err(gone()),
        }
    }
}
