//! The seam between the bridge and the peer runtime: the [`Backend`] trait the sidechannel plane implements.
//!
//! The bridge never reaches into the sidechannel itself (it lives in another crate); it asks its backend. Methods
//! return `impl Future + Send`, so an implementation can be plain `async fn` bodies, or forward each call over a
//! bounded command channel to the task that owns the sidechannel and await a oneshot reply. Events flow the other
//! way through [`crate::Publisher`].
//!
//! Mapping to the reference (`features/sc-bridge/index.js` calling `features/sidechannel/index.js`):
//!
//! | bridge command | reference call                                    | backend method        |
//! |----------------|---------------------------------------------------|-----------------------|
//! | `send`         | `acceptInvite` (welcome only) + `broadcast`       | [`Backend::send`]     |
//! | `join`         | `acceptInvite` (if invite/welcome) + `addChannel` | [`Backend::join`]     |
//! | `leave`        | `removeChannel`                                   | [`Backend::leave`]    |
//! | `open`         | `requestOpen`                                     | [`Backend::open`]     |
//! | `stats`        | `channels`, `connections.size`, `started`         | [`Backend::stats`]    |
//! | `info`         | the `info` object given at construction           | [`Backend::info`]     |
//! | `cli`          | `TerminalHandlers` + console capture              | [`Backend::cli`]      |
//! | `tx`, `get`, `subnet` | `/tx`, `/get` (an addition: JS has no such bridge messages) | [`Backend::subnet`] |
//! | `inbox_recv`, `inbox_ack`, `inbox_status` | (an addition: JS has no inbox) | [`Backend::inbox`] |
//! | (not ready)    | `this.sidechannel == null`                        | [`Backend::is_ready`] |

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use crate::error::BackendError;
use crate::protocol::{CliResult, Stats};

/// The peer's identity shown in `hello`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Public key (hex).
    pub peer: Option<String>,
    /// Trac address.
    pub address: Option<String>,
    /// The sidechannel entry channel.
    pub entry_channel: Option<String>,
}

/// A `send` command, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    /// Target channel (non-empty, trimmed).
    pub channel: String,
    /// The JSON payload to broadcast.
    pub message: Value,
    /// The invite to attach to the broadcast (a JSON object). As in the reference, when both an invite and a welcome
    /// were given and the invite has no `welcome` field, the welcome has been copied into `invite.welcome`.
    pub invite: Option<Value>,
    /// The welcome given with the command (a JSON object). When `invite` is `None` the backend should accept this
    /// welcome for the channel before broadcasting (the reference calls `acceptInvite(channel, null, welcome)`).
    pub welcome: Option<Value>,
}

/// What happened to a sent message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// How many connected peers the message was handed to. `0` makes the bridge add `warning: "no_peers"`.
    pub peers: usize,
}

/// A `join` command, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinRequest {
    /// Channel to join (non-empty, trimmed).
    pub channel: String,
    /// Invite to accept first, if any (JSON object).
    pub invite: Option<Value>,
    /// Welcome to accept first, if any (JSON object).
    pub welcome: Option<Value>,
}

/// A subnet command (`tx`, `get`, `subnet`), validated.
#[derive(Debug, Clone, PartialEq)]
pub enum SubnetRequest {
    /// `{type:"tx", command, sim}`: a contract transaction, or with `sim` a dry run.
    Tx {
        /// The `/tx --command` text (a string, or a JSON command serialized).
        command: String,
        /// Dry run: report what it would do, append nothing.
        sim: bool,
    },
    /// `{type:"get", key, confirmed, proof}`: a contract key's value.
    Get {
        /// The contract key.
        key: String,
        /// Read the confirmed state (default) or the tentative one.
        confirmed: bool,
        /// Add a Merkle proof of the value (or its absence) against the confirmed root.
        proof: bool,
    },
    /// `{type:"subnet"}`: membership, lengths, the state root.
    Info,
    /// `{type:"subnet_op", op, ...fields}`: a membership or chat command with the same
    /// fields as its slash command (`{op:"add_writer", key}` is `/add_writer --key`).
    Op {
        /// The command name without its slash.
        op: String,
        /// The other fields as flag/value pairs.
        args: Vec<(String, String)>,
    },
}

/// Longest `inbox_recv` wait, ms.
pub const MAX_INBOX_WAIT_MS: u64 = 300_000;
/// Most messages one `inbox_recv` returns.
pub const MAX_INBOX_LIMIT: usize = 1000;
/// Messages an `inbox_recv` returns when it names no `limit`.
pub const DEFAULT_INBOX_LIMIT: usize = 100;

/// Whether `name` is a valid inbox agent name: `[A-Za-z0-9._-]{1,64}`.
pub fn valid_agent_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An inbox command (`inbox_recv`, `inbox_ack`, `inbox_status`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxRequest {
    /// `{type:"inbox_recv", agent, wait_ms?, limit?, channel?, from?, ack?}`: the agent's
    /// pending messages, waiting up to `wait_ms` for one when none is pending.
    Recv {
        /// The agent (`[A-Za-z0-9._-]{1,64}`).
        agent: String,
        /// How long to wait for a message when none is pending (0..=[`MAX_INBOX_WAIT_MS`]).
        wait_ms: u64,
        /// Most messages to return (1..=[`MAX_INBOX_LIMIT`]).
        limit: usize,
        /// Only this channel's messages.
        channel: Option<String>,
        /// Only messages from this author key (hex).
        from: Option<String>,
        /// Acknowledge everything up to this sequence number first.
        ack: Option<u64>,
    },
    /// `{type:"inbox_ack", agent, seq}`: acknowledge everything up to `seq`.
    Ack {
        /// The agent.
        agent: String,
        /// The sequence number.
        seq: u64,
    },
    /// `{type:"inbox_status", agent?}`: counts, limits and the agents' positions.
    Status {
        /// Only this agent (registered if new).
        agent: Option<String>,
    },
}

/// An `open` command, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenRequest {
    /// Channel to request (non-empty, trimmed).
    pub channel: String,
    /// Channel to send the request through; `None` means the entry channel.
    pub via: Option<String>,
    /// Invite to include, if any (JSON object).
    pub invite: Option<Value>,
    /// Welcome to include, if any (JSON object).
    pub welcome: Option<Value>,
}

/// What the bridge needs from the peer runtime. Implementations must be cheap to call concurrently: the bridge
/// calls from one task per client (bounded by `max_clients`) and serializes `cli` calls itself.
pub trait Backend: Send + Sync + 'static {
    /// Identity for the `hello` event; called on every connection.
    fn identity(&self) -> Identity;

    /// Whether the sidechannel is attached; when false, `send`/`join`/`leave`/`open`/`stats` are answered with
    /// `Sidechannel not ready.` (`not_ready`) without calling the backend.
    fn is_ready(&self) -> bool {
        true
    }

    /// Broadcasts a message. `Err(Denied)` becomes `Send denied (invite required or invalid).`.
    fn send(
        &self,
        req: SendRequest,
    ) -> impl Future<Output = Result<SendReport, BackendError>> + Send;

    /// Joins a channel locally, after accepting the invite/welcome if given. `Err(Denied)` becomes
    /// `Join denied (invite required or invalid).`, `Err(Failed(m))` becomes `Join failed: m`.
    fn join(&self, req: JoinRequest) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Leaves a channel locally. `Ok(false)` means it was not joined (still answered with `left`, `ok: false`).
    fn leave(&self, channel: String) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Asks peers to open a channel. `Err(Denied)` becomes
    /// `Open request denied (invalid input or missing invite/welcome).`.
    fn open(&self, req: OpenRequest) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Current sidechannel statistics.
    fn stats(&self) -> impl Future<Output = Result<Stats, BackendError>> + Send;

    /// Startup info for the `info` command when [`crate::BridgeConfig::info`] is not set.
    fn info(&self) -> Option<Value> {
        None
    }

    /// Runs a TTY command line. Only called when CLI mirroring is enabled; the bridge runs one at a time.
    fn cli(&self, command: String) -> impl Future<Output = CliResult> + Send {
        let _ = command;
        async {
            CliResult {
                ok: false,
                output: Vec::new(),
                error: Some("CLI is not supported by this peer.".to_owned()),
                result: Value::Null,
            }
        }
    }

    /// Runs an inbox command; the reply body (its `type` is added by the bridge).
    fn inbox(
        &self,
        req: InboxRequest,
    ) -> impl Future<Output = Result<serde_json::Map<String, Value>, BackendError>> + Send {
        let _ = req;
        async {
            Err(BackendError::Inbox {
                code: crate::ErrorCode::InboxUnavailable,
                message: "This peer keeps no inbox.".to_owned(),
            })
        }
    }

    /// Runs a subnet command; the reply body (its `type` is added by the bridge).
    fn subnet(
        &self,
        req: SubnetRequest,
    ) -> impl Future<Output = Result<serde_json::Map<String, Value>, BackendError>> + Send {
        let _ = req;
        async {
            Err(BackendError::Subnet {
                code: crate::ErrorCode::SubnetUnavailable,
                message: "This peer runs no subnet plane.".to_owned(),
            })
        }
    }
}

/// A backend for a bridge started before the sidechannel exists: never ready, no identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unattached;

impl Backend for Unattached {
    fn identity(&self) -> Identity {
        Identity::default()
    }
    fn is_ready(&self) -> bool {
        false
    }
    async fn send(&self, _req: SendRequest) -> Result<SendReport, BackendError> {
        Err(BackendError::NotReady)
    }
    async fn join(&self, _req: JoinRequest) -> Result<(), BackendError> {
        Err(BackendError::NotReady)
    }
    async fn leave(&self, _channel: String) -> Result<bool, BackendError> {
        Err(BackendError::NotReady)
    }
    async fn open(&self, _req: OpenRequest) -> Result<(), BackendError> {
        Err(BackendError::NotReady)
    }
    async fn stats(&self) -> Result<Stats, BackendError> {
        Err(BackendError::NotReady)
    }
}

/// Boxed future used to erase the backend type inside the server.
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe mirror of [`Backend`] so that [`crate::Bridge`] is not generic.
pub(crate) trait DynBackend: Send + Sync + 'static {
    fn identity(&self) -> Identity;
    fn is_ready(&self) -> bool;
    fn send(&self, req: SendRequest) -> BoxFut<'_, Result<SendReport, BackendError>>;
    fn join(&self, req: JoinRequest) -> BoxFut<'_, Result<(), BackendError>>;
    fn leave(&self, channel: String) -> BoxFut<'_, Result<bool, BackendError>>;
    fn open(&self, req: OpenRequest) -> BoxFut<'_, Result<(), BackendError>>;
    fn stats(&self) -> BoxFut<'_, Result<Stats, BackendError>>;
    fn info(&self) -> Option<Value>;
    fn cli(&self, command: String) -> BoxFut<'_, CliResult>;
    fn subnet(
        &self,
        req: SubnetRequest,
    ) -> BoxFut<'_, Result<serde_json::Map<String, Value>, BackendError>>;
    fn inbox(
        &self,
        req: InboxRequest,
    ) -> BoxFut<'_, Result<serde_json::Map<String, Value>, BackendError>>;
}

impl<B: Backend> DynBackend for B {
    fn identity(&self) -> Identity {
        Backend::identity(self)
    }
    fn is_ready(&self) -> bool {
        Backend::is_ready(self)
    }
    fn send(&self, req: SendRequest) -> BoxFut<'_, Result<SendReport, BackendError>> {
        Box::pin(Backend::send(self, req))
    }
    fn join(&self, req: JoinRequest) -> BoxFut<'_, Result<(), BackendError>> {
        Box::pin(Backend::join(self, req))
    }
    fn leave(&self, channel: String) -> BoxFut<'_, Result<bool, BackendError>> {
        Box::pin(Backend::leave(self, channel))
    }
    fn open(&self, req: OpenRequest) -> BoxFut<'_, Result<(), BackendError>> {
        Box::pin(Backend::open(self, req))
    }
    fn stats(&self) -> BoxFut<'_, Result<Stats, BackendError>> {
        Box::pin(Backend::stats(self))
    }
    fn info(&self) -> Option<Value> {
        Backend::info(self)
    }
    fn cli(&self, command: String) -> BoxFut<'_, CliResult> {
        Box::pin(Backend::cli(self, command))
    }
    fn subnet(
        &self,
        req: SubnetRequest,
    ) -> BoxFut<'_, Result<serde_json::Map<String, Value>, BackendError>> {
        Box::pin(Backend::subnet(self, req))
    }
    fn inbox(
        &self,
        req: InboxRequest,
    ) -> BoxFut<'_, Result<serde_json::Map<String, Value>, BackendError>> {
        Box::pin(Backend::inbox(self, req))
    }
}
