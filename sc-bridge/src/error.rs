//! Typed errors and the stable, machine-readable error codes of the bridge.
//!
//! Every `{"type":"error"}` frame the bridge sends carries the reference's human text in `error` and one of the
//! [`ErrorCode`] strings in `code`. The `code` field is an addition of this implementation (the JS bridge only sends
//! `error`); agents written for the JS bridge ignore it, new agents should match on it instead of on the text.

use serde::{Deserialize, Serialize};

/// Stable machine-readable error codes, serialized as `snake_case` strings in the `code` field of `error` frames.
///
/// Codes are never renamed; new ones may be added (unknown codes deserialize as [`ErrorCode::Other`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// A command was sent before a successful `auth`, or `auth` carried the wrong token.
    Unauthorized,
    /// `auth` was sent but the bridge runs without a token (`require_auth = false` and no token).
    AuthNotEnabled,
    /// The client did not authenticate within the configured auth timeout; the connection is closed.
    AuthTimeout,
    /// Too many failed `auth` attempts on one connection; the connection is closed.
    TooManyAuthFailures,
    /// The token was right but every authenticated client slot (`max_clients`) is taken; the connection is
    /// closed (1013, try again later).
    TooManyClients,
    /// The frame was not valid JSON (or a binary frame was not UTF-8).
    InvalidJson,
    /// The JSON value was not an object.
    InvalidMessage,
    /// The `type` field named no known command.
    UnknownType,
    /// A required field (`channel`, `command`, `message`) was missing or empty.
    MissingField,
    /// `invite` was neither a JSON object nor a base64/JSON string.
    InvalidInvite,
    /// `welcome` was neither a JSON object nor a base64/JSON string.
    InvalidWelcome,
    /// The frame exceeded `max_frame_bytes`; the connection is closed.
    FrameTooLarge,
    /// The sidechannel refused to send (invite required or invalid, policy).
    SendDenied,
    /// The sidechannel failed to send for another reason.
    SendFailed,
    /// The sidechannel refused to join (invite required or invalid).
    JoinDenied,
    /// Joining failed for another reason.
    JoinFailed,
    /// Leaving failed.
    LeaveFailed,
    /// The open request was refused (invalid input or missing invite/welcome).
    OpenDenied,
    /// The stats query failed.
    StatsFailed,
    /// The sidechannel runtime is not attached or not started yet.
    NotReady,
    /// `info` was requested but no info is configured.
    InfoUnavailable,
    /// `cli` was requested but CLI mirroring is disabled.
    CliDisabled,
    /// The client (or the sidechannel's own limiter) exceeded its rate limit.
    RateLimited,
    /// Used as the `warning` of a `sent` reply when no peer was connected to receive the message.
    NoPeers,
    /// `subscribe` would exceed the per-client subscription cap.
    TooManyChannels,
    /// The backend did not answer within the configured backend timeout.
    Timeout,
    /// The client's outbound queue overflowed (it does not read); the connection is closed.
    SlowConsumer,
    /// The bridge is shutting down.
    ShuttingDown,
    /// The peer runs no subnet plane.
    SubnetUnavailable,
    /// A subnet operation that does not fit the contract (unknown op or field, wrong type, too large).
    InvalidOperation,
    /// This peer may not write to the subnet (not admitted, or transactions not enabled).
    SubnetDenied,
    /// Any other subnet failure.
    SubnetFailed,
    /// A field of the command has the wrong type or is out of range (the message names it).
    InvalidField,
    /// The peer keeps no inbox (`--inbox 0`).
    InboxUnavailable,
    /// The inbox could not answer (a store failure, or too many agents).
    InboxFailed,
    /// A code this version does not know (forward compatibility when parsing).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The wire string of this code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::AuthNotEnabled => "auth_not_enabled",
            ErrorCode::AuthTimeout => "auth_timeout",
            ErrorCode::TooManyAuthFailures => "too_many_auth_failures",
            ErrorCode::TooManyClients => "too_many_clients",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidInvite => "invalid_invite",
            ErrorCode::InvalidWelcome => "invalid_welcome",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::SendDenied => "send_denied",
            ErrorCode::SendFailed => "send_failed",
            ErrorCode::JoinDenied => "join_denied",
            ErrorCode::JoinFailed => "join_failed",
            ErrorCode::LeaveFailed => "leave_failed",
            ErrorCode::OpenDenied => "open_denied",
            ErrorCode::StatsFailed => "stats_failed",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::InfoUnavailable => "info_unavailable",
            ErrorCode::CliDisabled => "cli_disabled",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NoPeers => "no_peers",
            ErrorCode::TooManyChannels => "too_many_channels",
            ErrorCode::Timeout => "timeout",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::SubnetUnavailable => "subnet_unavailable",
            ErrorCode::InvalidOperation => "invalid_operation",
            ErrorCode::SubnetDenied => "subnet_denied",
            ErrorCode::SubnetFailed => "subnet_failed",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InboxUnavailable => "inbox_unavailable",
            ErrorCode::InboxFailed => "inbox_failed",
            ErrorCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors from starting the bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// Auth is required but no (non-empty) token was configured; the JS bridge refuses to start the same way.
    #[error("SC-Bridge requires --sc-bridge-token when auth is required.")]
    MissingToken,
    /// A configuration value is out of range.
    #[error("invalid SC-Bridge config: {0}")]
    InvalidConfig(&'static str),
    /// The token is too easy to guess (see [`check_token`](crate::check_token) for the rule).
    #[error("SC-Bridge token refused: {0}. Use at least 16 random bytes: {suggestion}.", suggestion = crate::token::TOKEN_SUGGESTION)]
    WeakToken(#[from] crate::token::WeakToken),
    /// An `--sc-bridge-origin` entry is not an origin.
    #[error("invalid --sc-bridge-origin: {0}")]
    InvalidOrigin(#[from] crate::origin::InvalidOrigin),
    /// Binding the listening socket failed.
    #[error("SC-Bridge failed to bind {addr}: {source}")]
    Bind {
        /// The `host:port` we tried to bind.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl BridgeError {
    /// A stable string code for logs and the binary's exit message.
    pub fn code(&self) -> &'static str {
        match self {
            BridgeError::MissingToken => "missing_token",
            BridgeError::InvalidConfig(_) => "invalid_config",
            BridgeError::WeakToken(_) => "weak_token",
            BridgeError::InvalidOrigin(_) => "invalid_origin",
            BridgeError::Bind { .. } => "bind_failed",
        }
    }
}

/// Errors a [`Backend`](crate::Backend) returns; the bridge maps each to a reference error text and an [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The sidechannel refused the operation (invite/welcome required or invalid, policy). Maps to the reference's
    /// "... denied (...)" texts and `send_denied` / `join_denied` / `open_denied`.
    #[error("denied")]
    Denied,
    /// The sidechannel runtime is not started or attached. Maps to "Sidechannel not ready." / `not_ready`.
    #[error("sidechannel not ready")]
    NotReady,
    /// The sidechannel's own limiter refused the operation. Maps to "Rate limited." / `rate_limited`.
    #[error("rate limited")]
    RateLimited,
    /// Any other failure, with a message shown after the reference prefix (e.g. `Join failed: <msg>`).
    #[error("{0}")]
    Failed(String),
    /// A subnet command failed: the code to report and the message.
    #[error("{message}")]
    Subnet {
        /// One of the `subnet_*` / `invalid_operation` codes.
        code: ErrorCode,
        /// What went wrong, for the agent.
        message: String,
    },
    /// An inbox command failed: the code to report and the message.
    #[error("{message}")]
    Inbox {
        /// `inbox_unavailable`, `inbox_failed` or `invalid_field`.
        code: ErrorCode,
        /// What went wrong, for the agent.
        message: String,
    },
}
