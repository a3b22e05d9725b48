//! The tokio driver: runs the handshake over a reader/writer pair, then sends and
//! receives whole messages. It owns no tasks and no timers beyond the optional read
//! timeout, so a caller (protomux, the swarm) decides how it is scheduled.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cipher::{Decryptor, Encryptor};
use crate::framing::{parse_prefix, prefix, MAX_FRAME, PREFIX};
use crate::noise::{Handshake, HandshakeResult, Pattern};
use crate::{KeyPair, SecretStreamError};

/// Writes are gathered up to this many bytes before they go to the transport.
const WRITE_CHUNK: usize = 1024 * 1024;
/// Largest read buffer; it grows to this under sustained traffic (large reads and writes
/// halve the per-byte syscall and wake-up cost on a busy stream).
const READ_CHUNK: usize = 1024 * 1024;
/// Size both buffers start at and shrink back to when traffic is light, so an idle
/// connection holds little memory.
const IDLE_BUFFER: usize = 64 * 1024;
/// Consecutive small reads or write bursts after which a grown buffer shrinks back.
const SHRINK_AFTER: u32 = 64;
/// A frame larger than the read buffer is read into memory this much at a time.
const LARGE_STEP: usize = 64 * 1024;
/// A read or write burst below this size counts as light traffic.
const SMALL_IO: usize = 4 * 1024;

/// Options shared by both halves.
#[derive(Debug, Clone)]
pub struct SecretStreamConfig {
    /// End the stream with [`SecretStreamError::TimedOut`] when nothing arrives for this long.
    pub timeout: Option<Duration>,
    /// Drop zero-byte messages instead of returning them (JS `filterZeroByteMessages`;
    /// JS turns it on whenever keep-alive is on, since keep-alives are empty messages).
    pub filter_empty_messages: bool,
    /// Largest frame body accepted from the remote (at most 16 MiB - 1); a longer length
    /// prefix ends the stream with [`SecretStreamError::MessageTooLarge`].
    pub max_frame: usize,
    /// Memory shared by the streams of a node for frames larger than the read buffer, and
    /// the counters of what was refused; `None` = no shared cap (each stream still only
    /// holds what has arrived of a frame, never its announced length up front).
    pub budget: Option<Arc<FrameBudget>>,
}

impl Default for SecretStreamConfig {
    fn default() -> Self {
        SecretStreamConfig {
            timeout: None,
            filter_empty_messages: false,
            max_frame: MAX_FRAME,
            budget: None,
        }
    }
}

/// Bytes that streams sharing it may hold for frames in progress larger than their read
/// buffer (64 KiB, growing to 1 MiB under traffic), plus counters for metrics. A frame that would take the total over the
/// cap ends its stream with [`SecretStreamError::FrameBudget`].
#[derive(Debug)]
pub struct FrameBudget {
    cap: usize,
    used: AtomicUsize,
    refused_oversize: AtomicU64,
    refused_budget: AtomicU64,
}

/// A snapshot of a [`FrameBudget`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameBudgetStats {
    /// Bytes held now for large frames in progress.
    pub bytes_in_use: u64,
    /// The cap on `bytes_in_use`.
    pub bytes_cap: u64,
    /// Frames refused because their length prefix was above the stream's `max_frame`.
    pub frames_refused_oversize: u64,
    /// Frames refused because the shared budget was spent.
    pub frames_refused_budget: u64,
}

impl FrameBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Self {
        FrameBudget {
            cap,
            used: AtomicUsize::new(0),
            refused_oversize: AtomicU64::new(0),
            refused_budget: AtomicU64::new(0),
        }
    }

    /// The counters.
    pub fn stats(&self) -> FrameBudgetStats {
        FrameBudgetStats {
            bytes_in_use: self.used.load(Ordering::Relaxed) as u64,
            bytes_cap: self.cap as u64,
            frames_refused_oversize: self.refused_oversize.load(Ordering::Relaxed),
            frames_refused_budget: self.refused_budget.load(Ordering::Relaxed),
        }
    }

    fn try_take(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|&v| v <= self.cap) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Bytes a stream holds from a [`FrameBudget`]; given back on drop.
struct Held<'a> {
    budget: Option<&'a FrameBudget>,
    bytes: usize,
}

impl Held<'_> {
    /// Takes `n` more bytes; false when the budget is spent.
    fn grow(&mut self, n: usize) -> bool {
        match self.budget {
            Some(b) if !b.try_take(n) => {
                b.refused_budget.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => {
                self.bytes += n;
                true
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.budget {
            b.give_back(self.bytes);
        }
    }
}

/// Reads uint24 frames from a transport with its own buffer.
struct FrameReader<R> {
    io: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: usize,
    small_reads: u32,
    budget: Option<Arc<FrameBudget>>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(io: R, config: &SecretStreamConfig) -> Self {
        let max_frame = config.max_frame;
        FrameReader {
            io,
            // Small at first: the allocator may hand out (and zero) reused memory, so a
            // large buffer would be resident for every idle connection. It grows to
            // READ_CHUNK as soon as a read fills it.
            buf: vec![0u8; IDLE_BUFFER],
            start: 0,
            end: 0,
            small_reads: 0,
            max_frame: max_frame.min(MAX_FRAME),
            budget: config.budget.clone(),
        }
    }

    /// Ensures `n` buffered bytes; false on a clean end before any of them arrived.
    async fn fill(&mut self, n: usize) -> std::io::Result<bool> {
        while self.end - self.start < n {
            if self.start > 0 && self.buf.len() - self.start < n {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() < n {
                self.buf.resize(n, 0);
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            let room = self.buf.len() - self.end;
            let read = self.io.read(&mut self.buf[self.end..]).await?;
            if read == 0 {
                if self.end == self.start {
                    return Ok(false);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.end += read;
            self.adapt(read, room);
        }
        Ok(true)
    }

    /// Grows the buffer to its maximum when a read fills it; shrinks it back once traffic
    /// is light.
    fn adapt(&mut self, read: usize, room: usize) {
        let len = self.buf.len();
        if read == room && len < READ_CHUNK {
            self.buf.resize(READ_CHUNK, 0);
        }
        self.small_reads = if read < SMALL_IO {
            self.small_reads + 1
        } else {
            0
        };
        if self.small_reads >= SHRINK_AFTER
            && len > IDLE_BUFFER
            && self.end - self.start <= IDLE_BUFFER / 2
        {
            self.small_reads = 0;
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf.truncate(IDLE_BUFFER);
            self.buf.shrink_to_fit();
        }
    }

    /// Hands the next frame body to `f`, or returns `None` when the transport ended
    /// cleanly between frames. Bodies are borrowed from the read buffer when they fit.
    async fn next_with<T>(
        &mut self,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, SecretStreamError> {
        if !self.fill(PREFIX).await? {
            return Ok(None);
        }
        let p = [
            self.buf[self.start],
            self.buf[self.start + 1],
            self.buf[self.start + 2],
        ];
        let len = parse_prefix(p);
        if len > self.max_frame {
            if let Some(b) = &self.budget {
                b.refused_oversize.fetch_add(1, Ordering::Relaxed);
            }
            return Err(SecretStreamError::MessageTooLarge(len));
        }
        self.start += PREFIX;
        // A frame larger than the buffer as it is now is read as its bytes arrive (the
        // buffer grows under traffic, never because a length prefix announced a frame).
        if len > self.buf.len().max(IDLE_BUFFER) {
            let body = self.read_large(len).await?;
            return Ok(Some(f(&body)));
        }
        if !self.fill(len).await? && len > 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        let out = f(&self.buf[self.start..self.start + len]);
        self.start += len;
        Ok(Some(out))
    }

    /// Reads a body larger than the read buffer. Memory is touched (and charged to the
    /// shared budget) only as bytes arrive, [`LARGE_STEP`] at a time, never for the
    /// announced length up front: a peer that sends only a length prefix costs one step.
    async fn read_large(&mut self, len: usize) -> Result<Vec<u8>, SecretStreamError> {
        let mut held = Held {
            budget: self.budget.as_deref(),
            bytes: 0,
        };
        let mut body: Vec<u8> = Vec::new();
        let take = (self.end - self.start).min(len);
        if !held.grow(take) {
            return Err(SecretStreamError::FrameBudget);
        }
        body.reserve_exact(take);
        body.extend_from_slice(&self.buf[self.start..self.start + take]);
        self.start += take;
        while body.len() < len {
            let old = body.len();
            let room_end = (old + LARGE_STEP).min(len);
            if room_end > held.bytes && !held.grow(room_end - held.bytes) {
                return Err(SecretStreamError::FrameBudget);
            }
            if body.capacity() < room_end {
                // Capacity doubles (address space only) so the copies stay linear.
                let target = (body.capacity() * 2).max(room_end).min(len);
                body.reserve_exact(target - old);
            }
            body.resize(room_end, 0);
            let n = self.io.read(&mut body[old..]).await?;
            body.truncate(old + n);
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        Ok(body)
    }

    /// The next frame body as an owned buffer (handshake messages).
    async fn next(&mut self) -> Result<Option<Vec<u8>>, SecretStreamError> {
        self.next_with(<[u8]>::to_vec).await
    }
}

/// The receiving half of an established secret-stream.
pub struct SecretReader<R> {
    frames: FrameReader<R>,
    decryptor: Decryptor,
    config: SecretStreamConfig,
}

impl<R: AsyncRead + Unpin> SecretReader<R> {
    /// True once the remote's header frame was accepted (JS emits `open` then).
    pub fn is_open(&self) -> bool {
        self.decryptor.is_ready()
    }

    /// Reads the remote's header frame if it has not arrived yet: `Ok(true)` once it was
    /// accepted, `Ok(false)` when the remote ended the stream before sending it.
    pub async fn wait_header(&mut self) -> Result<bool, SecretStreamError> {
        while !self.decryptor.is_ready() {
            let decryptor = &mut self.decryptor;
            let Some(frame) = self
                .frames
                .next_with(|body| decryptor.handle_frame(body))
                .await?
            else {
                return Ok(false);
            };
            if frame?.is_some() {
                return Err(SecretStreamError::InvalidHeader("message before header"));
            }
        }
        Ok(true)
    }

    /// The next message, or `Ok(None)` once the remote has ended its side cleanly.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, SecretStreamError> {
        loop {
            let decryptor = &mut self.decryptor;
            let read = self.frames.next_with(|body| decryptor.handle_frame(body));
            let next = match self.config.timeout {
                Some(t) => tokio::time::timeout(t, read)
                    .await
                    .map_err(|_| SecretStreamError::TimedOut)??,
                None => read.await?,
            };
            let Some(frame) = next else { return Ok(None) };
            match frame? {
                None => continue, // the remote header
                Some(m) if m.is_empty() && self.config.filter_empty_messages => continue,
                Some(m) => return Ok(Some(m)),
            }
        }
    }
}

/// The sending half of an established secret-stream.
pub struct SecretWriter<W> {
    io: W,
    encryptor: Encryptor,
    /// Gathered frames: `out[..used]` is pending; the rest is reusable initialised space.
    out: Vec<u8>,
    used: usize,
    small_bursts: u32,
}

impl<W: AsyncWrite + Unpin> SecretWriter<W> {
    /// Queues one message, writing to the transport once enough has gathered. Call
    /// [`SecretWriter::flush`] after a burst.
    pub async fn feed(&mut self, message: &[u8]) -> Result<(), SecretStreamError> {
        let len = Encryptor::frame_len(message.len())?;
        let end = self.used + len;
        if self.out.len() < end {
            self.out.resize(end, 0);
        }
        self.encryptor
            .encrypt_at(message, &mut self.out[self.used..end])?;
        self.used = end;
        if self.used >= WRITE_CHUNK {
            self.write_out().await?;
        }
        Ok(())
    }

    /// Sends one message and flushes it to the transport.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), SecretStreamError> {
        self.feed(message).await?;
        self.flush().await
    }

    /// The transport underneath. Bytes written to it bypass the encryption and the
    /// framing (tests and tools that play a misbehaving peer).
    pub fn transport_mut(&mut self) -> &mut W {
        &mut self.io
    }

    /// Sends an empty message, which a JS peer with keep-alive on ignores.
    pub async fn send_keepalive(&mut self) -> Result<(), SecretStreamError> {
        self.send(&[]).await
    }

    /// Writes everything queued and flushes the transport.
    pub async fn flush(&mut self) -> Result<(), SecretStreamError> {
        self.write_out().await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Flushes, then ends our direction (the remote's `recv` returns `None`).
    pub async fn end(&mut self) -> Result<(), SecretStreamError> {
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }

    async fn write_out(&mut self) -> Result<(), SecretStreamError> {
        if self.used > 0 {
            self.io.write_all(&self.out[..self.used]).await?;
            // Many light bursts after a heavy one: give the memory back.
            self.small_bursts = if self.used < SMALL_IO {
                self.small_bursts + 1
            } else {
                0
            };
            if self.small_bursts >= SHRINK_AFTER && self.out.len() > IDLE_BUFFER {
                self.small_bursts = 0;
                self.out.truncate(IDLE_BUFFER);
                self.out.shrink_to_fit();
            }
            self.used = 0;
        }
        Ok(())
    }
}

/// An established secret-stream over a reader and a writer.
pub struct SecretStream<R, W> {
    reader: SecretReader<R>,
    writer: SecretWriter<W>,
    handshake: HandshakeResult,
}

impl<R, W> SecretStream<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Runs the XX handshake as initiator, then sends our header.
    pub async fn initiator(
        reader: R,
        writer: W,
        keypair: KeyPair,
        config: SecretStreamConfig,
    ) -> Result<Self, SecretStreamError> {
        Self::handshake(reader, writer, true, keypair, config).await
    }

    /// Runs the XX handshake as responder, then sends our header.
    pub async fn responder(
        reader: R,
        writer: W,
        keypair: KeyPair,
        config: SecretStreamConfig,
    ) -> Result<Self, SecretStreamError> {
        Self::handshake(reader, writer, false, keypair, config).await
    }

    async fn handshake(
        reader: R,
        mut writer: W,
        is_initiator: bool,
        keypair: KeyPair,
        config: SecretStreamConfig,
    ) -> Result<Self, SecretStreamError> {
        let mut frames = FrameReader::new(reader, &config);
        let mut hs = Handshake::new(Pattern::XX, is_initiator, keypair, &[], None)?;
        let run = async {
            while !hs.is_complete() {
                if hs.is_our_turn() {
                    let msg = hs.send(&[])?;
                    writer.write_all(&prefix(msg.len())).await?;
                    writer.write_all(&msg).await?;
                    writer.flush().await?;
                } else {
                    let body = frames
                        .next()
                        .await?
                        .ok_or(SecretStreamError::EndedDuringHandshake)?;
                    hs.recv(&body)?;
                }
            }
            Ok::<_, SecretStreamError>(())
        };
        match config.timeout {
            Some(t) => tokio::time::timeout(t, run)
                .await
                .map_err(|_| SecretStreamError::TimedOut)??,
            None => run.await?,
        }
        let result = hs
            .result()
            .cloned()
            .ok_or(SecretStreamError::EndedDuringHandshake)?;
        Self::start(frames, writer, result, config).await
    }

    /// Starts from a handshake completed elsewhere (HyperDHT's relayed IK handshake):
    /// sends our header and expects the remote's as its first frame.
    pub async fn from_handshake(
        reader: R,
        writer: W,
        handshake: HandshakeResult,
        config: SecretStreamConfig,
    ) -> Result<Self, SecretStreamError> {
        let frames = FrameReader::new(reader, &config);
        Self::start(frames, writer, handshake, config).await
    }

    async fn start(
        frames: FrameReader<R>,
        mut io: W,
        handshake: HandshakeResult,
        config: SecretStreamConfig,
    ) -> Result<Self, SecretStreamError> {
        let (encryptor, header) = Encryptor::new(&handshake);
        io.write_all(&header).await?;
        io.flush().await?;
        Ok(SecretStream {
            reader: SecretReader {
                frames,
                decryptor: Decryptor::new(&handshake),
                config,
            },
            writer: SecretWriter {
                io,
                encryptor,
                out: Vec::new(),
                used: 0,
                small_bursts: 0,
            },
            handshake,
        })
    }

    /// The handshake outcome: keys, handshake hash, both public keys.
    pub fn handshake_result(&self) -> &HandshakeResult {
        &self.handshake
    }

    /// The authenticated remote static public key.
    pub fn remote_public_key(&self) -> [u8; 32] {
        self.handshake.remote_public_key
    }

    /// Our static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.handshake.public_key
    }

    /// The Noise handshake hash.
    pub fn handshake_hash(&self) -> [u8; 64] {
        self.handshake.hash
    }

    /// True for the side that started the handshake.
    pub fn is_initiator(&self) -> bool {
        self.handshake.is_initiator
    }

    /// Waits for the remote's header (see [`SecretReader::wait_header`]).
    pub async fn wait_header(&mut self) -> Result<bool, SecretStreamError> {
        self.reader.wait_header().await
    }

    /// Next message (see [`SecretReader::recv`]).
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, SecretStreamError> {
        self.reader.recv().await
    }

    /// Sends and flushes one message.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), SecretStreamError> {
        self.writer.send(message).await
    }

    /// Ends our direction.
    pub async fn end(&mut self) -> Result<(), SecretStreamError> {
        self.writer.end().await
    }

    /// Splits into independently usable halves.
    pub fn split(self) -> (SecretReader<R>, SecretWriter<W>) {
        (self.reader, self.writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connected() -> (
        SecretStream<
            tokio::io::ReadHalf<tokio::io::DuplexStream>,
            tokio::io::WriteHalf<tokio::io::DuplexStream>,
        >,
        SecretStream<
            tokio::io::ReadHalf<tokio::io::DuplexStream>,
            tokio::io::WriteHalf<tokio::io::DuplexStream>,
        >,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let ka = KeyPair::from_seed(&[1; 32]);
        let kb = KeyPair::from_seed(&[2; 32]);
        let (x, y) = tokio::join!(
            SecretStream::initiator(ar, aw, ka, SecretStreamConfig::default()),
            SecretStream::responder(br, bw, kb, SecretStreamConfig::default())
        );
        (x.unwrap(), y.unwrap())
    }

    #[tokio::test]
    async fn messages_keep_their_boundaries_and_end_is_clean() {
        let (mut a, mut b) = connected().await;
        assert_eq!(a.remote_public_key(), b.public_key());
        assert_eq!(a.handshake_hash(), b.handshake_hash());
        let big = vec![3u8; 1_000_000];
        let sender = async {
            a.send(b"one").await.unwrap();
            a.send(b"").await.unwrap();
            a.send(&big).await.unwrap();
            a.end().await.unwrap();
            a
        };
        let receiver = async {
            let mut got = Vec::new();
            while let Some(m) = b.recv().await.unwrap() {
                got.push(m);
            }
            got
        };
        let (_, got) = tokio::join!(sender, receiver);
        assert_eq!(got, vec![b"one".to_vec(), vec![], big]);
    }

    #[tokio::test]
    async fn a_length_prefix_alone_costs_one_step_of_the_budget() {
        let budget = Arc::new(FrameBudget::new(4 * LARGE_STEP));
        let config = SecretStreamConfig {
            budget: Some(budget.clone()),
            max_frame: 8 << 20,
            ..SecretStreamConfig::default()
        };
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, &config);
        tx.write_all(&prefix(8 << 20)).await.unwrap();
        tx.write_all(&[1, 2, 3]).await.unwrap();
        let read = tokio::spawn(async move { reader.next().await.map(|f| f.map(|b| b.len())) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The 3 bytes that arrived plus one step to read into.
        assert_eq!(budget.stats().bytes_in_use, 3 + LARGE_STEP as u64);
        // A whole frame needs more than the budget: the stream fails, the bytes come back.
        let _ = tx.write_all(&vec![0u8; 5 * LARGE_STEP]).await;
        assert!(matches!(
            read.await.unwrap(),
            Err(SecretStreamError::FrameBudget)
        ));
        let s = budget.stats();
        assert_eq!((s.bytes_in_use, s.frames_refused_budget), (0, 1));
    }

    #[tokio::test]
    async fn a_fresh_stream_does_not_grow_its_buffer_for_a_prefix() {
        let budget = Arc::new(FrameBudget::new(1 << 20));
        let config = SecretStreamConfig {
            budget: Some(budget.clone()),
            ..SecretStreamConfig::default()
        };
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, &config);
        tx.write_all(&prefix(READ_CHUNK)).await.unwrap();
        let read = tokio::spawn(async move {
            let n = reader.next().await.map(|f| f.map(|b| b.len()));
            (n, reader.buf.len())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(budget.stats().bytes_in_use, LARGE_STEP as u64);
        tx.write_all(&vec![7u8; READ_CHUNK]).await.unwrap();
        let (n, buffer) = read.await.unwrap();
        assert_eq!(n.unwrap(), Some(READ_CHUNK));
        assert_eq!(buffer, IDLE_BUFFER);
        assert_eq!(budget.stats().bytes_in_use, 0);
    }

    #[tokio::test]
    async fn large_frames_arrive_whole_and_oversize_ones_are_counted() {
        let budget = Arc::new(FrameBudget::new(64 << 20));
        let config = SecretStreamConfig {
            budget: Some(budget.clone()),
            max_frame: 3 << 20,
            ..SecretStreamConfig::default()
        };
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(rx, &config);
        let body: Vec<u8> = (0..(3usize << 20)).map(|i| i as u8).collect();
        let writer = tokio::spawn(async move {
            tx.write_all(&prefix(body.len())).await.unwrap();
            tx.write_all(&body).await.unwrap();
            tx.write_all(&prefix((3 << 20) + 1)).await.unwrap();
            (tx, body)
        });
        let got = reader.next().await.unwrap().unwrap();
        let (_tx, body) = writer.await.unwrap();
        assert_eq!(got, body);
        assert!(matches!(
            reader.next().await,
            Err(SecretStreamError::MessageTooLarge(_))
        ));
        let s = budget.stats();
        assert_eq!((s.bytes_in_use, s.frames_refused_oversize), (0, 1));
    }

    #[tokio::test]
    async fn read_timeout_fires() {
        let (_a, b) = connected().await;
        let (mut r, _w) = b.split();
        r.config.timeout = Some(Duration::from_millis(50));
        assert!(matches!(r.recv().await, Err(SecretStreamError::TimedOut)));
    }

    #[tokio::test]
    async fn garbage_during_handshake_is_an_error() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (ar, aw) = tokio::io::split(a);
        let writer = async move {
            b.write_all(&[5, 0, 0, 1, 2, 3, 4, 5]).await.unwrap();
            b
        };
        let (res, _b) = tokio::join!(
            SecretStream::responder(
                ar,
                aw,
                KeyPair::from_seed(&[2; 32]),
                SecretStreamConfig::default()
            ),
            writer
        );
        assert!(matches!(res, Err(SecretStreamError::Noise(_))));
    }
}
