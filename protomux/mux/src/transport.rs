//! Transports the driver runs over: the frame traits, an in-memory pair for tests, and a
//! uint24-length-prefixed framing over any tokio byte stream.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;

/// Receives whole frames from a message-preserving transport (e.g. a secret-stream).
pub trait FrameReceiver: Send + 'static {
    /// Next frame; Ok(None) when the remote ended cleanly.
    fn recv(&mut self) -> impl Future<Output = io::Result<Option<Vec<u8>>>> + Send;
}

/// Sends whole frames.
pub trait FrameSender: Send + 'static {
    /// Sends one frame (it may sit in a buffer until [`FrameSender::flush`]).
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;
    /// Flush anything buffered (after a burst of sends).
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// End our direction (half-close).
    fn end(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// Receiving half of a [`memory_pair`] end.
#[derive(Debug)]
pub struct MemReceiver {
    rx: mpsc::Receiver<Vec<u8>>,
}

/// Sending half of a [`memory_pair`] end.
#[derive(Debug)]
pub struct MemSender {
    tx: Option<mpsc::Sender<Vec<u8>>>,
}

/// Two connected in-memory transport ends; each direction holds at most `capacity` frames
/// (at least 1), so a peer that stops reading stops the writer.
pub fn memory_pair(capacity: usize) -> ((MemReceiver, MemSender), (MemReceiver, MemSender)) {
    let (a_tx, a_rx) = mpsc::channel(capacity.max(1));
    let (b_tx, b_rx) = mpsc::channel(capacity.max(1));
    (
        (MemReceiver { rx: b_rx }, MemSender { tx: Some(a_tx) }),
        (MemReceiver { rx: a_rx }, MemSender { tx: Some(b_tx) }),
    )
}

impl FrameReceiver for MemReceiver {
    async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.rx.recv().await)
    }
}

impl FrameSender for MemSender {
    async fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "transport ended"))?;
        tx.send(frame)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "peer is gone"))
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn end(&mut self) -> io::Result<()> {
        self.tx = None;
        Ok(())
    }
}

/// Largest frame a uint24 length prefix can carry (16 MiB - 1).
pub const MAX_UINT24_FRAME: usize = (1 << 24) - 1;

const READ_BUFFER: usize = 64 * 1024;
const WRITE_BUFFER: usize = 64 * 1024;

/// Frames as `uint24 little-endian length, bytes` over a tokio byte stream's read and
/// write halves, buffered both ways. Use [`Uint24Framed::split`] to hand the halves to
/// [`crate::Mux::new`].
#[derive(Debug)]
pub struct Uint24Framed<R, W> {
    reader: Uint24FrameReader<R>,
    writer: Uint24FrameWriter<W>,
}

impl<R, W> Uint24Framed<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Frames over these halves.
    pub fn new(read: R, write: W) -> Self {
        Uint24Framed {
            reader: Uint24FrameReader::new(read),
            writer: Uint24FrameWriter::new(write),
        }
    }

    /// The receiving and sending halves.
    pub fn split(self) -> (Uint24FrameReader<R>, Uint24FrameWriter<W>) {
        (self.reader, self.writer)
    }
}

impl<R, W> FrameReceiver for Uint24Framed<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    fn recv(&mut self) -> impl Future<Output = io::Result<Option<Vec<u8>>>> + Send {
        self.reader.recv()
    }
}

impl<R, W> FrameSender for Uint24Framed<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send {
        self.writer.send(frame)
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        FrameSender::flush(&mut self.writer)
    }

    fn end(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        self.writer.end()
    }
}

/// Receiving half of a [`Uint24Framed`].
#[derive(Debug)]
pub struct Uint24FrameReader<R> {
    inner: BufReader<R>,
}

impl<R: AsyncRead + Unpin + Send + 'static> Uint24FrameReader<R> {
    /// Reads frames from `read`.
    pub fn new(read: R) -> Self {
        Uint24FrameReader {
            inner: BufReader::with_capacity(READ_BUFFER, read),
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameReceiver for Uint24FrameReader<R> {
    async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut header = [0u8; 3];
        let mut filled = 0;
        while filled < header.len() {
            let n = self.inner.read(&mut header[filled..]).await?;
            if n == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a frame header",
                ));
            }
            filled += n;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        let mut frame = vec![0u8; len];
        self.inner.read_exact(&mut frame).await?;
        Ok(Some(frame))
    }
}

/// Sending half of a [`Uint24Framed`].
#[derive(Debug)]
pub struct Uint24FrameWriter<W> {
    inner: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin + Send + 'static> Uint24FrameWriter<W> {
    /// Writes frames to `write`.
    pub fn new(write: W) -> Self {
        Uint24FrameWriter {
            inner: BufWriter::with_capacity(WRITE_BUFFER, write),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameSender for Uint24FrameWriter<W> {
    async fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        if frame.len() > MAX_UINT24_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {} bytes exceeds the uint24 limit", frame.len()),
            ));
        }
        let len = (frame.len() as u32).to_le_bytes();
        self.inner.write_all(&len[..3]).await?;
        self.inner.write_all(&frame).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }

    async fn end(&mut self) -> io::Result<()> {
        self.inner.flush().await?;
        self.inner.shutdown().await
    }
}
