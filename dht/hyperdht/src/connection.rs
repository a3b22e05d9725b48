//! [`Connection`]: an encrypted HyperDHT connection, the Rust face of the JS
//! `NoiseSecretStream` that `dht.connect()` and a server's `connection` event hand out.
//!
//! ```text
//! Connection = secret-stream (started from the IK handshake, no second handshake)
//!                over a UDX stream (on the socket the connection settled on)
//! ```
//!
//! The UDX stream is shared by a reading half, a writing half and any number of
//! [`ConnectionHandle`]s (destroy, byte counts, close notification), so
//! [`Connection::split`] gives protomux the two halves it runs on while a swarm keeps
//! a handle to watch and tear down the connection. Once both halves are dropped the
//! stream is destroyed (handles do not keep it open).

use std::future::Future;
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use intercom_secret_stream::{
    HandshakeResult, SecretReader, SecretStream, SecretStreamConfig, SecretStreamError,
    SecretWriter,
};
use intercom_udx::{StreamError, StreamStats, UdxStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::context::lock;
use crate::limits::OpenPermit;
use crate::socket::NodeSocket;

struct RawShared {
    stream: Mutex<UdxStream>,
    read: AtomicU64,
    written: AtomicU64,
    halves: AtomicUsize,
    remote: SocketAddrV4,
    /// Counts an inbound connection against the node's limits until both halves drop.
    permit: Mutex<Option<OpenPermit>>,
    // Keeps the socket (and its DHT traffic) alive as long as the connection.
    _socket: Arc<NodeSocket>,
}

/// The reading half of a connection's UDX stream.
pub struct RawReader(Arc<RawShared>);

/// The writing half of a connection's UDX stream.
pub struct RawWriter(Arc<RawShared>);

impl RawShared {
    fn half_dropped(&self) {
        if self.halves.fetch_sub(1, Ordering::AcqRel) == 1 {
            let s = lock(&self.stream);
            if !s.is_closed() {
                s.destroy();
            }
            drop(s);
            lock(&self.permit).take();
        }
    }
}

impl Drop for RawReader {
    fn drop(&mut self) {
        self.0.half_dropped();
    }
}

impl Drop for RawWriter {
    fn drop(&mut self) {
        self.0.half_dropped();
    }
}

impl AsyncRead for RawReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let mut s = lock(&self.0.stream);
        let r = Pin::new(&mut *s).poll_read(cx, buf);
        drop(s);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.0.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for RawWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.0.stream);
        let r = Pin::new(&mut *s).poll_write(cx, data);
        drop(s);
        if let Poll::Ready(Ok(n)) = r {
            self.0.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.0.stream);
        Pin::new(&mut *s).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.0.stream);
        Pin::new(&mut *s).poll_shutdown(cx)
    }
}

/// A cheap handle on a connection: tear it down, watch it close, count its bytes.
#[derive(Clone)]
pub struct ConnectionHandle(Arc<RawShared>);

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("remote", &self.0.remote)
            .finish_non_exhaustive()
    }
}

impl ConnectionHandle {
    /// Destroys the stream now (the peer sees a reset); both halves fail.
    pub fn destroy(&self) {
        lock(&self.0.stream).destroy();
    }

    /// Whether the UDX stream closed.
    pub fn is_closed(&self) -> bool {
        lock(&self.0.stream).is_closed()
    }

    /// Resolves when the UDX stream closed: `Ok` after a clean end of both sides or a
    /// local destroy, the error otherwise.
    pub async fn closed(&self) -> Result<(), StreamError> {
        std::future::poll_fn(|cx| {
            let s = lock(&self.0.stream);
            let fut = s.closed();
            tokio::pin!(fut);
            fut.poll(cx)
        })
        .await
    }

    /// Bytes received on the raw stream (JS `rawBytesRead`, headers included). JS reads
    /// its streams eagerly; here bytes count once the UDX stream delivered them in order,
    /// even if nobody has called `recv` yet (Hyperswarm's duplicate rule depends on it).
    pub fn bytes_read(&self) -> u64 {
        lock(&self.0.stream)
            .stats()
            .bytes_delivered
            .max(self.0.read.load(Ordering::Relaxed))
    }

    /// Bytes written to the raw stream (JS `rawBytesWritten`).
    pub fn bytes_written(&self) -> u64 {
        self.0.written.load(Ordering::Relaxed)
    }

    /// Where the stream's packets go.
    pub fn remote_addr(&self) -> SocketAddrV4 {
        self.0.remote
    }

    /// UDX counters and estimates.
    pub fn stats(&self) -> StreamStats {
        lock(&self.0.stream).stats()
    }
}

/// Facts about a connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The remote's authenticated public key.
    pub remote_public_key: [u8; 32],
    /// Our public key.
    pub public_key: [u8; 32],
    /// True when we connected (the client side).
    pub is_initiator: bool,
    /// The Noise handshake hash.
    pub handshake_hash: [u8; 64],
    /// The remote UDP address the stream settled on.
    pub remote_addr: SocketAddrV4,
    /// Our socket's address.
    pub local_addr: SocketAddrV4,
}

/// An encrypted connection: message-preserving sends and receives.
pub struct Connection {
    stream: SecretStream<RawReader, RawWriter>,
    handle: ConnectionHandle,
    info: ConnectionInfo,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The secret-stream settings of connections: empty messages are keep-alives (JS turns
/// `filterZeroByteMessages` on with its 5 s keep-alive).
pub fn stream_config() -> SecretStreamConfig {
    SecretStreamConfig {
        filter_empty_messages: true,
        ..SecretStreamConfig::default()
    }
}

impl Connection {
    /// Starts the secret-stream over a connected UDX stream (sends our header).
    pub(crate) async fn start(
        stream: UdxStream,
        socket: Arc<NodeSocket>,
        remote: SocketAddrV4,
        handshake: HandshakeResult,
        config: SecretStreamConfig,
    ) -> Result<Connection, SecretStreamError> {
        let local_addr = socket.local_addr();
        let shared = Arc::new(RawShared {
            stream: Mutex::new(stream),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            halves: AtomicUsize::new(2),
            remote,
            permit: Mutex::new(None),
            _socket: socket,
        });
        let info = ConnectionInfo {
            remote_public_key: handshake.remote_public_key,
            public_key: handshake.public_key,
            is_initiator: handshake.is_initiator,
            handshake_hash: handshake.hash,
            remote_addr: remote,
            local_addr,
        };
        let handle = ConnectionHandle(shared.clone());
        let stream = SecretStream::from_handshake(
            RawReader(shared.clone()),
            RawWriter(shared),
            handshake,
            config,
        )
        .await?;
        Ok(Connection {
            stream,
            handle,
            info,
        })
    }

    /// Counts this connection against the inbound limits until both halves drop.
    pub(crate) fn hold_permit(&self, permit: OpenPermit) {
        *lock(&self.handle.0.permit) = Some(permit);
    }

    /// Facts about the connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The remote's public key.
    pub fn remote_public_key(&self) -> [u8; 32] {
        self.info.remote_public_key
    }

    /// True on the side that connected.
    pub fn is_initiator(&self) -> bool {
        self.info.is_initiator
    }

    /// A handle to destroy or watch the connection.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle.clone()
    }

    /// Waits for the remote's secret-stream header (JS `open`); false when the remote
    /// ended before sending it.
    pub async fn opened(&mut self) -> Result<bool, SecretStreamError> {
        self.stream.wait_header().await
    }

    /// The next message; `None` once the remote ended its side.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, SecretStreamError> {
        self.stream.recv().await
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), SecretStreamError> {
        self.stream.send(message).await
    }

    /// Ends our side (the remote's `recv` returns `None` after our last message).
    pub async fn end(&mut self) -> Result<(), SecretStreamError> {
        self.stream.end().await
    }

    /// The two halves (for protomux or separate tasks) and a handle.
    pub fn split(
        self,
    ) -> (
        SecretReader<RawReader>,
        SecretWriter<RawWriter>,
        ConnectionHandle,
    ) {
        let (r, w) = self.stream.split();
        (r, w, self.handle)
    }
}
