//! [`UdxStream`]: the application's handle on one stream of a [`UdxSocket`](super::UdxSocket).
//!
//! Reads and writes lock the socket state briefly, move bytes between the caller and the
//! stream's buffers and wake the driver when something must be sent. Writes stop when the
//! stream's send buffer is full (backpressure) and resume when acks free room.
//! `poll_shutdown` sends END and completes when the peer acknowledged it. Dropping the
//! handle of a stream that was shut down lets it finish in the background (at most 30 s);
//! dropping any other live stream destroys it (the peer sees a reset).

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Shared, Slot, UdxError, LINGER};
use crate::stream::{StreamError, StreamStats};

/// One UDX stream: `AsyncRead + AsyncWrite` for the ordered bytes, plus unordered
/// messages. Use `tokio::io::split` to read and write from different tasks.
pub struct UdxStream {
    shared: Arc<Shared>,
    id: u32,
}

impl std::fmt::Debug for UdxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdxStream").field("id", &self.id).finish()
    }
}

fn io_error(e: StreamError) -> io::Error {
    let kind = match e {
        StreamError::Reset => io::ErrorKind::ConnectionReset,
        StreamError::TimedOut => io::ErrorKind::TimedOut,
        StreamError::NotConnected => io::ErrorKind::NotConnected,
        _ => io::ErrorKind::BrokenPipe,
    };
    io::Error::new(kind, e)
}

impl UdxStream {
    pub(super) fn new(shared: Arc<Shared>, id: u32) -> UdxStream {
        UdxStream { shared, id }
    }

    /// Runs `f` on the stream's slot; `Err(Closed)` when the socket stopped.
    fn with<R>(&self, f: impl FnOnce(&mut Slot) -> R) -> Result<R, StreamError> {
        let mut st = self.shared.lock();
        if st.stopped {
            return Err(StreamError::Closed);
        }
        let slot = st.streams.get_mut(&self.id).ok_or(StreamError::Closed)?;
        let r = f(slot);
        Ok(r)
    }

    /// Like `with`, then marks the stream for the driver and wakes it.
    fn with_dirty<R>(&self, f: impl FnOnce(&mut Slot) -> R) -> Result<R, StreamError> {
        let mut st = self.shared.lock();
        if st.stopped {
            return Err(StreamError::Closed);
        }
        let slot = st.streams.get_mut(&self.id).ok_or(StreamError::Closed)?;
        let r = f(slot);
        st.mark_dirty(self.id);
        drop(st);
        self.shared.notify.notify_one();
        Ok(r)
    }

    /// Our stream id.
    pub fn local_id(&self) -> u32 {
        self.id
    }

    /// The peer's stream id (0 before `connect`).
    pub fn remote_id(&self) -> u32 {
        self.with(|s| s.core.remote_id()).unwrap_or(0)
    }

    /// Where our packets go.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.with(|s| s.core.remote_addr()).ok().flatten()
    }

    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Connects an unconnected stream to `remote_id` at `addr`.
    pub fn connect(&self, remote_id: u32, addr: SocketAddr) -> Result<(), UdxError> {
        self.with_dirty(|s| s.core.connect(Instant::now(), remote_id, addr))??;
        Ok(())
    }

    /// The source of the first packet an unconnected stream accepted (through its
    /// firewall).
    pub fn first_packet_from(&self) -> Option<SocketAddr> {
        self.with(|s| s.first_from).ok().flatten()
    }

    /// Waits for the first packet accepted by the firewall of an unconnected stream.
    pub async fn first_packet(&self) -> Result<SocketAddr, UdxError> {
        poll_fn(|cx| {
            let r = self.with(|s| {
                if let Some(a) = s.first_from {
                    return Poll::Ready(Ok(a));
                }
                if let Some(Err(e)) = s.core.close_result() {
                    return Poll::Ready(Err(e.into()));
                }
                s.wakers.add_other(cx);
                Poll::Pending
            });
            r.unwrap_or_else(|e| Poll::Ready(Err(e.into())))
        })
        .await
    }

    /// Moves the stream to a new peer (`changeRemote`); resolves once packets in flight
    /// to the old peer were acknowledged.
    pub async fn change_remote(&self, remote_id: u32, addr: SocketAddr) -> Result<(), UdxError> {
        let (immediate, seen) = self.with_dirty(|s| {
            let seen = s.remote_changed;
            s.core
                .change_remote(Instant::now(), remote_id, addr)
                .map(|i| (i, seen))
        })??;
        if immediate {
            return Ok(());
        }
        poll_fn(|cx| {
            let r = self.with(|s| {
                if s.remote_changed != seen {
                    return Poll::Ready(Ok(()));
                }
                if s.core.is_closed() {
                    return Poll::Ready(Err(UdxError::Stream(StreamError::Closed)));
                }
                s.wakers.add_other(cx);
                Poll::Pending
            });
            r.unwrap_or_else(|e| Poll::Ready(Err(e.into())))
        })
        .await
    }

    /// Sends a heartbeat after `ms` idle milliseconds (0 = off).
    pub fn set_keepalive(&self, ms: u32) {
        let _ = self.with_dirty(|s| s.core.set_keepalive(Instant::now(), ms));
    }

    /// Sends an unordered, unreliable message (udx-native `trySend`); fails when the
    /// stream is closed, unconnected, the message is over 2028 bytes or too many are
    /// queued.
    pub fn send_message(&self, data: &[u8]) -> Result<(), UdxError> {
        self.with_dirty(|s| s.core.send_message(data))??;
        Ok(())
    }

    /// The next message; `None` once the stream closed and none are left.
    pub async fn recv_message(&self) -> Option<Vec<u8>> {
        poll_fn(|cx| self.poll_recv_message(cx)).await
    }

    /// Poll form of [`recv_message`](Self::recv_message).
    pub fn poll_recv_message(&self, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        let r = self.with(|s| {
            if let Some(m) = s.messages.pop_front() {
                return Poll::Ready(Some(m));
            }
            if s.core.is_closed() {
                return Poll::Ready(None);
            }
            s.wakers.message = Some(cx.waker().clone());
            Poll::Pending
        });
        r.unwrap_or(Poll::Ready(None))
    }

    /// Destroys the stream now: a DESTROY goes to the peer, queued data is dropped.
    pub fn destroy(&self) {
        let _ = self.with_dirty(|s| s.core.destroy());
    }

    /// Resolves when the stream closed: `Ok` after both sides ended (or a local
    /// destroy), the error otherwise.
    pub async fn closed(&self) -> Result<(), StreamError> {
        poll_fn(|cx| {
            let r = self.with(|s| match s.core.close_result() {
                Some(r) => Poll::Ready(r),
                None => {
                    s.wakers.add_other(cx);
                    Poll::Pending
                }
            });
            r.unwrap_or(Poll::Ready(Err(StreamError::Closed)))
        })
        .await
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.with(|s| s.core.is_closed()).unwrap_or(true)
    }

    /// Counters and estimates.
    pub fn stats(&self) -> StreamStats {
        self.with(|s| s.core.stats()).unwrap_or_default()
    }
}

impl Drop for UdxStream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let Some(slot) = st.streams.get_mut(&self.id) else {
            return;
        };
        slot.handle_alive = false;
        slot.wakers = Default::default();
        if !slot.core.is_closed() {
            if slot.core.is_ending() {
                slot.linger_until = Some(Instant::now() + LINGER);
            } else {
                slot.core.destroy();
            }
        }
        // The driver forgets the slot once the stream closed.
        st.mark_dirty(self.id);
        drop(st);
        self.shared.notify.notify_one();
    }
}

impl AsyncRead for UdxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let stopped = st.stopped;
        let Some(slot) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(io_error(StreamError::Closed)));
        };
        let n = slot.core.read(buf.initialize_unfilled());
        if n > 0 {
            buf.advance(n);
            if slot.core.wants_transmit() {
                st.mark_dirty(self.id);
                drop(st);
                self.shared.notify.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if slot.core.is_read_eof() {
            return Poll::Ready(Ok(()));
        }
        match slot.core.close_result() {
            Some(Ok(())) => return Poll::Ready(Ok(())),
            Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            None => {}
        }
        if stopped {
            return Poll::Ready(Err(io_error(StreamError::Closed)));
        }
        slot.wakers.read = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for UdxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut st = self.shared.lock();
        let stopped = st.stopped;
        let Some(slot) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(io_error(StreamError::Closed)));
        };
        if let Some(r) = slot.core.close_result() {
            return Poll::Ready(Err(io_error(r.err().unwrap_or(StreamError::Closed))));
        }
        if stopped {
            return Poll::Ready(Err(io_error(StreamError::Closed)));
        }
        match slot.core.write(data) {
            Ok(0) => {
                slot.wakers.write = Some(cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                st.mark_dirty(self.id);
                drop(st);
                self.shared.notify.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let stopped = st.stopped;
        let Some(slot) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(io_error(StreamError::Closed)));
        };
        match slot.core.close_result() {
            Some(Ok(())) => return Poll::Ready(Ok(())),
            Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            None => {}
        }
        if slot.core.is_local_ended() {
            return Poll::Ready(Ok(()));
        }
        if stopped {
            return Poll::Ready(Err(io_error(StreamError::Closed)));
        }
        slot.wakers.write = Some(cx.waker().clone());
        if !slot.core.is_ending() {
            if let Err(e) = slot.core.end() {
                return Poll::Ready(Err(io_error(e)));
            }
            st.mark_dirty(self.id);
            drop(st);
            self.shared.notify.notify_one();
        }
        Poll::Pending
    }
}
