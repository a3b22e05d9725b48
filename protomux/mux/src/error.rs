//! The one error type of the crate: protocol violations by the peer, misuse of a closed
//! channel or mux, and transport failures.

use std::sync::Arc;

use intercom_encoding::DecodeError;

/// Why a mux operation failed. Errors from [`crate::MuxCore::handle_frame`] are fatal for
/// the mux (the JS module destroys the stream on them); the others are local.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// A frame from the peer could not be decoded.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// The peer opened a channel id that is 0, still live, or skips ahead (JS "Invalid open message").
    #[error("invalid open message for remote channel {0}")]
    InvalidOpen(u64),
    /// The peer rejected a channel we have no outstanding open for (JS "Invalid reject message").
    #[error("invalid reject message for local channel {0}")]
    InvalidReject(u64),
    /// The peer used a channel id above the configured maximum.
    #[error("remote channel id {0} exceeds the configured maximum")]
    RemoteIdTooLarge(u64),
    /// More remote opens are waiting for a local decision than the configured maximum.
    #[error("too many pending remote opens (limit {0})")]
    TooManyPendingOpens(usize),
    /// Data held for channels not accepted yet exceeded the configured hard limit.
    #[error("pending data for unaccepted channels exceeded {0} bytes")]
    PendingOverflow(usize),
    /// Batch frames were nested deeper than the mux allows.
    #[error("batch frames nested too deeply")]
    BatchTooDeep,
    /// The channel is closed, or does not belong to this mux.
    #[error("channel is closed")]
    ChannelClosed,
    /// The mux is destroyed or closing (protocol error, transport end, close or destroy).
    #[error("mux is closed")]
    Closed,
    /// Every local channel id is in use.
    #[error("no local channel id left")]
    TooManyChannels,
    /// A frame is larger than the transport can carry.
    #[error("frame of {0} bytes is too large for the transport")]
    FrameTooLarge(usize),
    /// The transport failed.
    #[error("transport error: {0}")]
    Io(#[source] Arc<std::io::Error>),
}

impl From<std::io::Error> for MuxError {
    fn from(e: std::io::Error) -> Self {
        MuxError::Io(Arc::new(e))
    }
}

impl MuxError {
    /// True for errors caused by bytes the peer sent (the JS module destroys the stream).
    pub fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            MuxError::Decode(_)
                | MuxError::InvalidOpen(_)
                | MuxError::InvalidReject(_)
                | MuxError::RemoteIdTooLarge(_)
                | MuxError::TooManyPendingOpens(_)
                | MuxError::PendingOverflow(_)
                | MuxError::BatchTooDeep
        )
    }
}
