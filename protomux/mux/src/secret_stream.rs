//! The secret-stream halves as protomux transports, so a [`crate::Mux`] runs over an
//! encrypted connection exactly as JS protomux runs over `@hyperswarm/secret-stream`.

use std::io;

use intercom_secret_stream::{SecretReader, SecretStreamError, SecretWriter};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::transport::{FrameReceiver, FrameSender};

fn to_io(e: SecretStreamError) -> io::Error {
    match e {
        SecretStreamError::Io(e) => e,
        SecretStreamError::TimedOut => io::Error::new(io::ErrorKind::TimedOut, e),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameReceiver for SecretReader<R> {
    async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        SecretReader::recv(self).await.map_err(to_io)
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameSender for SecretWriter<W> {
    async fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.feed(&frame).await.map_err(to_io)
    }

    async fn flush(&mut self) -> io::Result<()> {
        SecretWriter::flush(self).await.map_err(to_io)
    }

    async fn end(&mut self) -> io::Result<()> {
        SecretWriter::end(self).await.map_err(to_io)
    }
}
