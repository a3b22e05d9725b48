//! `@hyperswarm/secret-stream` in Rust: a Noise handshake over Ed25519 keys, then every
//! message encrypted with libsodium's `crypto_secretstream_xchacha20poly1305`.
//!
//! ```text
//! frame      = uint24 LE length ‖ body
//! handshake  = Noise XX messages, one per frame (or a completed IK handed in by HyperDHT)
//! header     = frame of 56 bytes: stream id (32) ‖ secretstream header (24)
//!              stream id = BLAKE2b-256(key = handshake hash, NS_INITIATOR | NS_RESPONDER)
//! message    = frame of (tag ‖ ciphertext ‖ MAC): plaintext length + 17 bytes
//! ```
//!
//! The codecs ([`noise`], [`cipher`], [`framing`]) are pure; [`stream`] drives them over
//! any tokio `AsyncRead` / `AsyncWrite` pair. The stream is message-preserving, like the JS
//! one: each `send` arrives as one `recv` on the other side.

pub mod cipher;
pub mod framing;
pub mod noise;
mod stream;

pub use cipher::{stream_id, Decryptor, Encryptor};
pub use intercom_crypto::KeyPair;
pub use noise::{Handshake, HandshakeResult, NoiseError, Pattern};
pub use stream::{
    FrameBudget, FrameBudgetStats, SecretReader, SecretStream, SecretStreamConfig, SecretWriter,
};

/// Why a secret-stream failed. Each variant ends the stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretStreamError {
    /// The underlying transport failed.
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
    /// The Noise handshake failed (bad message, wrong key, tampering).
    #[error("noise handshake failed: {0}")]
    Noise(#[from] NoiseError),
    /// The remote's 56-byte header frame was malformed or carried the wrong stream id.
    #[error("invalid secret-stream header: {0}")]
    InvalidHeader(&'static str),
    /// A message failed authentication or was shorter than its tag.
    #[error("message failed to decrypt")]
    Decrypt,
    /// A message is larger than one uint24 frame can carry.
    #[error("message of {0} bytes is too large for an atomic write (max 16777198)")]
    MessageTooLarge(usize),
    /// The remote closed before the handshake finished.
    #[error("stream ended during the handshake")]
    EndedDuringHandshake,
    /// A frame larger than the read buffer did not fit in the shared frame budget
    /// ([`FrameBudget`]).
    #[error("frame memory budget exhausted")]
    FrameBudget,
    /// Nothing arrived within the configured timeout.
    #[error("stream timed out")]
    TimedOut,
}
