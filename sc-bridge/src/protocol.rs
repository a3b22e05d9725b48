//! The SC-Bridge JSON wire protocol: every client→bridge command and every bridge→client reply or event, with the
//! reference's exact `type` strings and field names.
//!
//! Every WebSocket text frame carries one JSON object with a `type`:
//!
//! ```text
//!  client                                   bridge
//!    |  <-------------------------------  {"type":"hello","peer":…,"address":…,"entryChannel":…,
//!    |                                       "filter":"","requiresAuth":true}
//!    |  {"id":1,"type":"auth","token":"…"} -->
//!    |  <-------------------------------  {"id":1,"type":"auth_ok"}
//!    |  {"id":2,"type":"send","channel":"c","message":"hi"} -->
//!    |  <-------------------------------  {"id":2,"type":"sent","channel":"c","peers":3}
//!    |  <-------------------------------  {"type":"sidechannel_message","channel":"c","id":…,"from":…, …}
//! ```
//!
//! Replies echo the request's `id` as the first field when the request carried an integer `id` (the reference's
//! `{ id, ...payload }`); events (`hello`, `sidechannel_message`, `sidechannel_drop`) never carry a reply id.
//!
//! Client messages are decoded leniently, the way the JavaScript reference coerces them (`String(x)`, truthiness),
//! so that agents written against it keep working: see [`decode_request`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::backend::{
    valid_agent_name, InboxRequest, DEFAULT_INBOX_LIMIT, MAX_INBOX_LIMIT, MAX_INBOX_WAIT_MS,
};
use crate::error::ErrorCode;

// ---------------------------------------------------------------------------------------------------------------
// Client -> bridge
// ---------------------------------------------------------------------------------------------------------------

/// A decoded client request: the optional integer `id` to echo and the command.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The request's integer `id` (JS `Number.isInteger`), echoed on the reply.
    pub id: Option<Number>,
    /// The command.
    pub message: ClientMessage,
}

/// Every client→bridge command. `Serialize` gives the canonical JSON a client sends; the bridge itself decodes with
/// the lenient [`decode_request`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// `{type:"auth", token}`. A non-string token never matches.
    Auth {
        /// The shared secret.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// `{type:"ping"}` → `pong`.
    Ping,
    /// `{type:"send", channel, message, invite?, welcome?}` → `sent`.
    Send {
        /// Target channel (trimmed; empty means missing).
        channel: String,
        /// Any JSON payload; `None` when the field was absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<Value>,
        /// Invite as a JSON object or a base64/JSON string (raw, validated later).
        #[serde(skip_serializing_if = "Option::is_none")]
        invite: Option<Value>,
        /// Welcome as a JSON object or a base64/JSON string (raw, validated later).
        #[serde(skip_serializing_if = "Option::is_none")]
        welcome: Option<Value>,
    },
    /// `{type:"join", channel, invite?, welcome?}` → `joined`.
    Join {
        /// Channel to join locally.
        channel: String,
        /// Optional invite (object or base64/JSON string).
        #[serde(skip_serializing_if = "Option::is_none")]
        invite: Option<Value>,
        /// Optional welcome (object or base64/JSON string).
        #[serde(skip_serializing_if = "Option::is_none")]
        welcome: Option<Value>,
    },
    /// `{type:"leave", channel}` → `left`.
    Leave {
        /// Channel to drop locally.
        channel: String,
    },
    /// `{type:"open", channel, via?, invite?, welcome?}` → `open_requested`.
    Open {
        /// Channel to request.
        channel: String,
        /// Channel to send the request through (the entry channel when absent).
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<String>,
        /// Optional invite (object or base64/JSON string).
        #[serde(skip_serializing_if = "Option::is_none")]
        invite: Option<Value>,
        /// Optional welcome (object or base64/JSON string).
        #[serde(skip_serializing_if = "Option::is_none")]
        welcome: Option<Value>,
    },
    /// `{type:"stats"}` → `stats`.
    Stats,
    /// `{type:"info"}` → `info`.
    Info,
    /// `{type:"subscribe", channel | channels}` → `subscribed`.
    Subscribe {
        /// Channels to add to this client's subscription set.
        channels: Vec<String>,
        /// `subnet: true` also subscribes to `subnet_applied` events (an addition).
        subnet: bool,
    },
    /// `{type:"unsubscribe", channel | channels}` → `subscribed`.
    Unsubscribe {
        /// Channels to remove from this client's subscription set.
        channels: Vec<String>,
        /// `subnet: true` also ends `subnet_applied` events.
        subnet: bool,
    },
    /// `{type:"set_filter", filter}` → `filter_set`.
    SetFilter {
        /// Raw filter expression (see [`crate::filter`]).
        filter: String,
    },
    /// `{type:"clear_filter"}` → `filter_set` with `filter:""`.
    ClearFilter,
    /// `{type:"cli", command}` → `cli_result` (only with CLI mirroring enabled).
    Cli {
        /// The TTY command line (trimmed).
        command: String,
    },
    /// `{type:"tx", command, sim?}` → `tx_result` (an addition).
    Tx {
        /// The command: a string, or a JSON command object (serialized).
        command: String,
        /// Dry run.
        sim: bool,
    },
    /// `{type:"get", key, confirmed?, proof?}` → `get_result` (an addition).
    Get {
        /// The contract key.
        key: String,
        /// Confirmed (default) or tentative state.
        confirmed: bool,
        /// Add a Merkle proof against the confirmed root.
        proof: bool,
    },
    /// `{type:"subnet"}` → `subnet` (an addition).
    Subnet,
    /// `{type:"subnet_op", op, ...fields}` → `subnet_op_result` (an addition).
    SubnetOp {
        /// The command name (`add_writer`, `post`, ...).
        op: String,
        /// The other fields, as strings.
        args: Vec<(String, String)>,
    },
    /// `{type:"inbox_recv" | "inbox_ack" | "inbox_status", ...}` → `inbox` /
    /// `inbox_acked` / `inbox_status` (an addition), or the `invalid_field` message naming
    /// the field that is wrong. Never serialized.
    #[serde(skip)]
    Inbox(Result<InboxRequest, String>),
    /// Any other `type`; answered with `Unknown type: <type>`. Never serialized.
    #[serde(skip)]
    Unknown {
        /// The `type` value as the reference would print it (`undefined` when absent).
        type_name: String,
    },
}

/// Why a frame could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON (or not UTF-8). Reference text: `Invalid JSON.`
    #[error("Invalid JSON.")]
    InvalidJson,
    /// JSON, but not an object. Reference text: `Invalid message.`
    #[error("Invalid message.")]
    InvalidMessage,
}

impl DecodeError {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::InvalidJson => ErrorCode::InvalidJson,
            DecodeError::InvalidMessage => ErrorCode::InvalidMessage,
        }
    }
}

/// Parses one text frame into a request (`Invalid JSON.` / `Invalid message.` otherwise).
pub fn parse_frame(text: &str) -> Result<Request, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|_| DecodeError::InvalidJson)?;
    decode_request(&value)
}

/// Decodes a JSON value with the reference's coercions: `channel` is `String(channel || '').trim()`, `via` is
/// `String(via)` when truthy, `command` must be a string (then trimmed), `filter` is `String(filter || '')`,
/// `subscribe` takes `channels` (array, each `String(x)`) or else a truthy `channel`, and `invite`/`welcome` are
/// kept only when truthy. Arrays are rejected with `Invalid message.` (the reference lets them through as objects
/// with no `type`).
pub fn decode_request(value: &Value) -> Result<Request, DecodeError> {
    let obj = value.as_object().ok_or(DecodeError::InvalidMessage)?;
    let id = request_id(obj);
    let field = |k: &str| obj.get(k);
    let truthy_field = |k: &str| obj.get(k).filter(|v| js_truthy(v)).cloned();
    let channel = || {
        truthy_field("channel")
            .map(|v| js_string(&v).trim().to_owned())
            .unwrap_or_default()
    };
    let channels = || match field("channels") {
        Some(Value::Array(list)) => list.iter().map(js_string).collect(),
        _ => match truthy_field("channel") {
            Some(v) => vec![js_string(&v)],
            None => Vec::new(),
        },
    };
    let type_name = match field("type") {
        Some(Value::String(s)) => s.as_str(),
        other => {
            return Ok(Request {
                id,
                message: ClientMessage::Unknown {
                    type_name: other.map_or_else(|| "undefined".to_owned(), js_string),
                },
            })
        }
    };
    let message = match type_name {
        "auth" => ClientMessage::Auth {
            token: field("token").and_then(Value::as_str).map(str::to_owned),
        },
        "ping" => ClientMessage::Ping,
        "send" => ClientMessage::Send {
            channel: channel(),
            message: field("message").cloned(),
            invite: truthy_field("invite"),
            welcome: truthy_field("welcome"),
        },
        "join" => ClientMessage::Join {
            channel: channel(),
            invite: truthy_field("invite"),
            welcome: truthy_field("welcome"),
        },
        "leave" => ClientMessage::Leave { channel: channel() },
        "open" => ClientMessage::Open {
            channel: channel(),
            via: truthy_field("via").map(|v| js_string(&v)),
            invite: truthy_field("invite"),
            welcome: truthy_field("welcome"),
        },
        "stats" => ClientMessage::Stats,
        "info" => ClientMessage::Info,
        "subscribe" => ClientMessage::Subscribe {
            channels: channels(),
            subnet: field("subnet").is_some_and(js_truthy),
        },
        "unsubscribe" => ClientMessage::Unsubscribe {
            channels: channels(),
            subnet: field("subnet").is_some_and(js_truthy),
        },
        "set_filter" => ClientMessage::SetFilter {
            filter: truthy_field("filter")
                .map(|v| js_string(&v))
                .unwrap_or_default(),
        },
        "clear_filter" => ClientMessage::ClearFilter,
        "tx" => ClientMessage::Tx {
            command: match field("command") {
                Some(Value::String(s)) => s.trim().to_owned(),
                Some(v @ Value::Object(_)) => v.to_string(),
                _ => String::new(),
            },
            sim: field("sim").is_some_and(|v| js_truthy(v) && v != "0" && v != "false"),
        },
        "get" => ClientMessage::Get {
            key: field("key").map(js_string).unwrap_or_default(),
            confirmed: !field("confirmed").is_some_and(|v| {
                matches!(v, Value::Bool(false)) || v == "false" || v == 0 || v == "0"
            }),
            proof: field("proof").is_some_and(|v| js_truthy(v) && v != "0" && v != "false"),
        },
        "subnet" => ClientMessage::Subnet,
        "subnet_op" => ClientMessage::SubnetOp {
            op: field("op").map(js_string).unwrap_or_default(),
            args: obj
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "type" | "op" | "id"))
                .map(|(k, v)| (k.clone(), js_string(v)))
                .collect(),
        },
        "cli" => ClientMessage::Cli {
            command: field("command")
                .and_then(Value::as_str)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        },
        kind @ ("inbox_recv" | "inbox_ack" | "inbox_status") => {
            ClientMessage::Inbox(decode_inbox(kind, obj))
        }
        other => ClientMessage::Unknown {
            type_name: other.to_owned(),
        },
    };
    Ok(Request { id, message })
}

/// Validates an inbox command's fields; the error names the field and what it takes.
fn decode_inbox(kind: &str, obj: &Map<String, Value>) -> Result<InboxRequest, String> {
    let agent = |required: bool| -> Result<Option<String>, String> {
        match obj.get("agent") {
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(a)) if valid_agent_name(a) => Ok(Some(a.clone())),
            _ => Err(format!(
                "{kind}: agent must be a name of 1 to 64 characters of A-Z a-z 0-9 . _ -"
            )),
        }
    };
    let number = |field: &str, max: u64| -> Result<Option<u64>, String> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| format!("{kind}: {field} must be an integer from 0 to {max}")),
        }
    };
    let text = |field: &str| -> Result<Option<String>, String> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            _ => Err(format!("{kind}: {field} must be a non-empty string")),
        }
    };
    let agent_name = || agent(true).map(Option::unwrap_or_default);
    Ok(match kind {
        "inbox_recv" => InboxRequest::Recv {
            agent: agent_name()?,
            wait_ms: number("wait_ms", MAX_INBOX_WAIT_MS)?.unwrap_or(0),
            limit: match number("limit", MAX_INBOX_LIMIT as u64)? {
                None => DEFAULT_INBOX_LIMIT,
                Some(0) => {
                    return Err(format!(
                        "{kind}: limit must be an integer from 1 to {MAX_INBOX_LIMIT}"
                    ))
                }
                Some(n) => n as usize,
            },
            channel: text("channel")?,
            from: text("from")?.map(|f| f.to_ascii_lowercase()),
            ack: number("ack", u64::MAX)?,
        },
        "inbox_ack" => InboxRequest::Ack {
            agent: agent_name()?,
            seq: number("seq", u64::MAX)?
                .ok_or_else(|| format!("{kind}: seq must be an integer from 0 to {}", u64::MAX))?,
        },
        _ => InboxRequest::Status {
            agent: agent(false)?,
        },
    })
}

/// The request id to echo: present when `id` is an integer-valued JSON number (JS `Number.isInteger`), so `1` and
/// `1.0` both count while `1.5` and `"1"` do not.
pub fn request_id(obj: &Map<String, Value>) -> Option<Number> {
    match obj.get("id") {
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.clone()),
        Some(Value::Number(n)) => {
            let f = n.as_f64()?;
            if f.is_finite() && f.fract() == 0.0 {
                if f.abs() < 9.0e15 {
                    Some(Number::from(f as i64))
                } else {
                    Some(n.clone())
                }
            } else {
                None
            }
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Bridge -> client
// ---------------------------------------------------------------------------------------------------------------

/// Every bridge→client reply and event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// Sent once on connect, before auth.
    Hello(Hello),
    /// `{type:"auth_ok"}`.
    AuthOk,
    /// `{type:"error", error, code}`.
    Error(ErrorReply),
    /// `{type:"pong", ts}` with `ts` in Unix milliseconds.
    Pong {
        /// Bridge clock, Unix milliseconds.
        ts: u64,
    },
    /// `{type:"filter_set", filter}`.
    FilterSet {
        /// The raw filter now in force (`""` when cleared).
        filter: String,
    },
    /// `{type:"subscribed", channels}`: the client's whole subscription set after the change, in insertion order.
    Subscribed {
        /// Subscribed channels; empty means "all channels".
        channels: Vec<String>,
        /// True when the client receives `subnet_applied` events (an addition; absent when false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        subnet: bool,
    },
    /// `{type:"sent", channel, peers, warning?}`. `peers` and `warning` are additions (see the crate docs).
    Sent {
        /// The channel the message went to.
        channel: String,
        /// How many connected peers the message was handed to.
        peers: usize,
        /// `"no_peers"` when `peers == 0`: accepted but nobody was connected to receive it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<ErrorCode>,
    },
    /// `{type:"joined", channel}`.
    Joined {
        /// The joined channel.
        channel: String,
    },
    /// `{type:"left", channel, ok}`; `ok` is false when the channel was not joined (a no-op).
    Left {
        /// The channel.
        channel: String,
        /// Whether a joined channel was actually removed.
        ok: bool,
    },
    /// `{type:"open_requested", channel, via}`.
    OpenRequested {
        /// The requested channel.
        channel: String,
        /// The channel the request went through, or null.
        via: Option<String>,
    },
    /// `{type:"stats", channels, connectionCount, sidechannelStarted, ...}`.
    Stats(Stats),
    /// `{type:"info", info}`.
    Info {
        /// The peer's startup info object.
        info: Value,
    },
    /// `{type:"cli_result", command, ok, output, error, result}`.
    CliResult(CliReply),
    /// `{type:"sidechannel_message", channel, id, from, origin, sig, relayedBy, ttl, ts, message}`.
    SidechannelMessage(Box<SidechannelMessage>),
    /// `{type:"tx_result", ...}`: the outcome of `tx` (an addition).
    TxResult(Map<String, Value>),
    /// `{type:"get_result", key, value, confirmed, stateRoot}`; with `proof`, also
    /// `stateKey`, `valueJson` and `proof` (an addition).
    GetResult(Map<String, Value>),
    /// `{type:"subnet", ...}`: membership, lengths and the state root (an addition).
    Subnet(Map<String, Value>),
    /// `{type:"subnet_op_result", ...}`: the outcome of `subnet_op` (an addition).
    SubnetOpResult(Map<String, Value>),
    /// `{type:"sidechannel_drop", channel, reason, from, detail, ts}`: an addition, see [`DropNotice`].
    SidechannelDrop(DropNotice),
    /// `{type:"inbox", agent, messages, missed, acked, scannedTo, pending}`: the answer to
    /// `inbox_recv` (an addition).
    Inbox(Map<String, Value>),
    /// `{type:"inbox_acked", agent, acked}`: the answer to `inbox_ack` (an addition).
    InboxAcked(Map<String, Value>),
    /// `{type:"inbox_status", ...}`: the answer to `inbox_status` (an addition).
    InboxStatus(Map<String, Value>),
}

/// The `hello` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// The peer's public key (hex), or null.
    pub peer: Option<String>,
    /// The peer's Trac address, or null.
    pub address: Option<String>,
    /// The sidechannel entry channel, or null.
    pub entry_channel: Option<String>,
    /// The default filter expression (`""` when none).
    pub filter: String,
    /// Whether `auth` must come first.
    pub requires_auth: bool,
}

/// The body of an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The reference's human-readable text, e.g. `Unauthorized.`.
    pub error: String,
    /// Stable machine-readable code (an addition: the JS bridge has no `code`).
    pub code: ErrorCode,
}

impl ErrorReply {
    /// Builds an error body.
    pub fn new(code: ErrorCode, error: impl Into<String>) -> ErrorReply {
        ErrorReply {
            error: error.into(),
            code,
        }
    }
}

/// Sidechannel statistics, the body of the `stats` reply (also what a [`crate::Backend`] returns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Joined channels.
    pub channels: Vec<String>,
    /// Open peer connections.
    pub connection_count: usize,
    /// Whether the sidechannel runtime has started.
    pub sidechannel_started: bool,
    /// Extra fields the runtime wants to expose (flattened into the reply; must not reuse the names above).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What a CLI command produced (returned by [`crate::Backend::cli`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CliResult {
    /// Whether the command ran without throwing.
    pub ok: bool,
    /// Captured console lines.
    pub output: Vec<String>,
    /// The error message when `ok` is false.
    pub error: Option<String>,
    /// The handler's return value (null when none).
    pub result: Value,
}

/// The body of a `cli_result` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CliReply {
    /// The trimmed command line.
    pub command: String,
    /// See [`CliResult::ok`].
    pub ok: bool,
    /// See [`CliResult::output`].
    pub output: Vec<String>,
    /// See [`CliResult::error`].
    pub error: Option<String>,
    /// See [`CliResult::result`].
    pub result: Value,
}

/// A sidechannel message as delivered to clients. Fields the payload lacks are `null` (the reference's `?? null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidechannelMessage {
    /// The channel it arrived on.
    pub channel: String,
    /// Message id.
    pub id: Value,
    /// Author key (hex) as claimed by the payload.
    pub from: Value,
    /// Original sender key (hex).
    pub origin: Value,
    /// Message signature (hex); the reference also reads `signature`.
    pub sig: Value,
    /// Key of the relaying peer, when relayed.
    pub relayed_by: Value,
    /// Remaining relay hops.
    pub ttl: Value,
    /// Sender timestamp (Unix ms), or the bridge's clock when absent.
    pub ts: Value,
    /// The application payload.
    pub message: Value,
}

impl SidechannelMessage {
    /// Builds the event from a raw sidechannel payload exactly like the reference's `handleSidechannelMessage`:
    /// `id/from/origin/relayedBy/ttl ?? null`, `sig ?? signature ?? null`, `ts ?? now_ms`, `message ?? payload`.
    pub fn from_payload(
        channel: impl Into<String>,
        payload: &Value,
        now_ms: u64,
    ) -> SidechannelMessage {
        let get = |k: &str| -> Option<Value> {
            payload
                .as_object()
                .and_then(|o| o.get(k))
                .filter(|v| !v.is_null())
                .cloned()
        };
        SidechannelMessage {
            channel: channel.into(),
            id: get("id").unwrap_or(Value::Null),
            from: get("from").unwrap_or(Value::Null),
            origin: get("origin").unwrap_or(Value::Null),
            sig: get("sig")
                .or_else(|| get("signature"))
                .unwrap_or(Value::Null),
            relayed_by: get("relayedBy").unwrap_or(Value::Null),
            ttl: get("ttl").unwrap_or(Value::Null),
            ts: get("ts").unwrap_or_else(|| Value::from(now_ms)),
            message: get("message").unwrap_or_else(|| payload.clone()),
        }
    }

    /// The text filters are matched against (the reference's `normalizeText(message)`).
    pub fn filter_text(&self) -> String {
        normalize_text(&self.message)
    }
}

/// A message the sidechannel dropped instead of delivering (rate limit, policy, oversize). An addition: the JS bridge
/// drops these silently. Delivered to authenticated clients subscribed to the channel, never word-filtered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropNotice {
    /// The channel the message was for.
    pub channel: String,
    /// A stable reason string chosen by the runtime, e.g. `rate_limited`, `owner_only`, `too_large`.
    pub reason: String,
    /// The remote peer or author key, when known.
    pub from: Option<String>,
    /// Free-form detail for humans.
    pub detail: Option<String>,
    /// When it was dropped, Unix milliseconds.
    pub ts: u64,
}

/// Something the runtime publishes to connected clients through [`crate::Publisher::publish`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A sidechannel message: subscription and word filters apply.
    Message(Box<SidechannelMessage>),
    /// A dropped message: the subscription applies, word filters do not.
    Drop(DropNotice),
    /// A subnet event (`subnet_applied`): only clients that subscribed with `{type:"subscribe", subnet:true}`.
    Subnet(Value),
    /// Any other JSON object (it should carry its own `type`); the subscription applies when `channel` is set.
    Other {
        /// The channel it concerns, if any.
        channel: Option<String>,
        /// The frame to send as-is.
        body: Value,
    },
}

impl From<SidechannelMessage> for Event {
    fn from(m: SidechannelMessage) -> Event {
        Event::Message(Box::new(m))
    }
}

impl From<DropNotice> for Event {
    fn from(d: DropNotice) -> Event {
        Event::Drop(d)
    }
}

/// Serializes a reply, putting `id` first when the request had one (the reference's `{ id, ...payload }`).
pub fn encode_reply(id: Option<&Number>, msg: &ServerMessage) -> String {
    let value = serde_json::to_value(msg).unwrap_or(Value::Null);
    match (id, value) {
        (Some(id), Value::Object(body)) => {
            let mut out = Map::with_capacity(body.len() + 1);
            out.insert("id".to_owned(), Value::Number(id.clone()));
            out.extend(body);
            Value::Object(out).to_string()
        }
        (_, value) => value.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// JavaScript-compatible helpers
// ---------------------------------------------------------------------------------------------------------------

/// JS truthiness of a JSON value (`null`, `false`, `0`, `""` are falsy; objects and arrays are truthy).
pub fn js_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// JS `String(v)` for a JSON value.
pub fn js_string(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                if i.is_null() {
                    String::new()
                } else {
                    js_string(i)
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// The reference's `normalizeText`: strings as-is, `null` as `""`, anything else as compact JSON.
pub fn normalize_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The reference's `parseJsonOrBase64` for `invite` / `welcome`: a JSON object is taken as-is; a string is parsed
/// as JSON when it starts with `{`, otherwise base64-decoded (standard or URL-safe alphabet, padding and whitespace
/// optional, like Node's `Buffer.from(s, 'base64')`) and then parsed as JSON. Returns `None` when that fails or the
/// result is not a JSON object (the reference would pass arrays and other truthy scalars on to the sidechannel,
/// which then rejects them).
pub fn parse_json_or_base64(v: &Value) -> Option<Value> {
    let parsed = match v {
        Value::Object(_) => return Some(v.clone()),
        Value::String(s) => {
            let trimmed = s.trim();
            if trimmed.is_empty() {
                return None;
            }
            if trimmed.starts_with('{') {
                serde_json::from_str::<Value>(trimmed).ok()?
            } else {
                let bytes = intercom_encoding::base64::decode_lenient(trimmed);
                serde_json::from_str::<Value>(&String::from_utf8_lossy(&bytes)).ok()?
            }
        }
        _ => return None,
    };
    parsed.is_object().then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: Value) -> Request {
        decode_request(&v).unwrap()
    }

    #[test]
    fn ids_follow_number_is_integer() {
        let id = |v: Value| request_id(v.as_object().unwrap());
        assert_eq!(id(json!({"id": 7})), Some(Number::from(7)));
        assert_eq!(id(json!({"id": -3})), Some(Number::from(-3)));
        assert_eq!(id(json!({"id": 2.0})), Some(Number::from(2)));
        assert_eq!(id(json!({"id": 2.5})), None);
        assert_eq!(id(json!({"id": "2"})), None);
        assert_eq!(id(json!({"id": null})), None);
        assert_eq!(id(json!({})), None);
    }

    #[test]
    fn lenient_coercions() {
        let r = decode(
            json!({"type":"send","channel":"  chan ","message":{"a":1},"invite":"","welcome":0}),
        );
        assert_eq!(
            r.message,
            ClientMessage::Send {
                channel: "chan".into(),
                message: Some(json!({"a":1})),
                invite: None,
                welcome: None
            }
        );
        let r = decode(json!({"type":"join","channel":42}));
        assert_eq!(
            r.message,
            ClientMessage::Join {
                channel: "42".into(),
                invite: None,
                welcome: None
            }
        );
        let r = decode(json!({"type":"leave","channel":false}));
        assert_eq!(r.message, ClientMessage::Leave { channel: "".into() });
        let r = decode(json!({"type":"open","channel":"c","via":7}));
        assert!(matches!(r.message, ClientMessage::Open { via: Some(ref v), .. } if v == "7"));
        let r = decode(json!({"type":"subscribe","channels":["a",1,null],"channel":"ignored"}));
        assert_eq!(
            r.message,
            ClientMessage::Subscribe {
                channels: vec!["a".into(), "1".into(), "null".into()],
                subnet: false
            }
        );
        let r = decode(json!({"type":"unsubscribe","channel":"x"}));
        assert_eq!(
            r.message,
            ClientMessage::Unsubscribe {
                channels: vec!["x".into()],
                subnet: false
            }
        );
        let r = decode(json!({"type":"subscribe"}));
        assert_eq!(
            r.message,
            ClientMessage::Subscribe {
                channels: vec![],
                subnet: false
            }
        );
        let r = decode(json!({"type":"cli","command":5}));
        assert_eq!(r.message, ClientMessage::Cli { command: "".into() });
        let r = decode(json!({"type":"auth","token":123}));
        assert_eq!(r.message, ClientMessage::Auth { token: None });
        let r = decode(json!({"type":"set_filter","filter":null}));
        assert_eq!(r.message, ClientMessage::SetFilter { filter: "".into() });
    }

    #[test]
    fn unknown_types_print_like_js() {
        let name = |v: Value| match decode(v).message {
            ClientMessage::Unknown { type_name } => type_name,
            other => panic!("{other:?}"),
        };
        assert_eq!(name(json!({"type":"nope"})), "nope");
        assert_eq!(name(json!({})), "undefined");
        assert_eq!(name(json!({"type":null})), "null");
        assert_eq!(name(json!({"type":5})), "5");
        assert_eq!(name(json!({"type":{"a":1}})), "[object Object]");
        assert_eq!(name(json!({"type":["a","b"]})), "a,b");
    }

    #[test]
    fn decode_errors() {
        assert_eq!(parse_frame("{nope"), Err(DecodeError::InvalidJson));
        assert_eq!(parse_frame(""), Err(DecodeError::InvalidJson));
        assert_eq!(parse_frame("1"), Err(DecodeError::InvalidMessage));
        assert_eq!(parse_frame("null"), Err(DecodeError::InvalidMessage));
        assert_eq!(parse_frame("[1]"), Err(DecodeError::InvalidMessage));
        assert_eq!(parse_frame("\"x\""), Err(DecodeError::InvalidMessage));
    }

    #[test]
    fn client_messages_serialize_canonically() {
        let m = ClientMessage::Send {
            channel: "c".into(),
            message: Some(json!("hi")),
            invite: None,
            welcome: None,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type":"send","channel":"c","message":"hi"})
        );
        assert_eq!(
            serde_json::to_value(ClientMessage::Ping).unwrap(),
            json!({"type":"ping"})
        );
        assert_eq!(
            serde_json::to_value(ClientMessage::ClearFilter).unwrap(),
            json!({"type":"clear_filter"})
        );
        // Round trip through the lenient decoder.
        for m in [
            m,
            ClientMessage::Auth {
                token: Some("t".into()),
            },
            ClientMessage::Open {
                channel: "c".into(),
                via: Some("v".into()),
                invite: Some(json!({"a":1})),
                welcome: None,
            },
            ClientMessage::Subscribe {
                channels: vec!["a".into()],
                subnet: false,
            },
            ClientMessage::Cli {
                command: "/help".into(),
            },
        ] {
            let v = serde_json::to_value(&m).unwrap();
            assert_eq!(decode_request(&v).unwrap().message, m);
        }
    }

    #[test]
    fn reply_id_goes_first() {
        let s = encode_reply(Some(&Number::from(9)), &ServerMessage::AuthOk);
        assert_eq!(s, r#"{"id":9,"type":"auth_ok"}"#);
        let s = encode_reply(None, &ServerMessage::Pong { ts: 5 });
        assert_eq!(s, r#"{"type":"pong","ts":5}"#);
        let s = encode_reply(
            None,
            &ServerMessage::Error(ErrorReply::new(ErrorCode::Unauthorized, "Unauthorized.")),
        );
        assert_eq!(
            s,
            r#"{"type":"error","error":"Unauthorized.","code":"unauthorized"}"#
        );
    }

    #[test]
    fn server_messages_round_trip() {
        let msgs = vec![
            ServerMessage::Hello(Hello {
                peer: Some("ab".into()),
                address: None,
                entry_channel: Some("0000intercom".into()),
                filter: "".into(),
                requires_auth: true,
            }),
            ServerMessage::Sent {
                channel: "c".into(),
                peers: 0,
                warning: Some(ErrorCode::NoPeers),
            },
            ServerMessage::Stats(Stats {
                channels: vec!["a".into()],
                connection_count: 2,
                sidechannel_started: true,
                extra: Map::new(),
            }),
            ServerMessage::OpenRequested {
                channel: "c".into(),
                via: None,
            },
        ];
        for m in msgs {
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ServerMessage>(&s).unwrap(), m, "{s}");
        }
        assert_eq!(
            serde_json::to_value(ServerMessage::Stats(Stats::default())).unwrap(),
            json!({"type":"stats","channels":[],"connectionCount":0,"sidechannelStarted":false})
        );
        let unknown: ServerMessage =
            serde_json::from_str(r#"{"type":"error","error":"x","code":"brand_new"}"#).unwrap();
        assert_eq!(
            unknown,
            ServerMessage::Error(ErrorReply::new(ErrorCode::Other, "x"))
        );
    }

    #[test]
    fn sidechannel_message_from_payload() {
        let p = json!({"id":"m1","from":"aa","origin":"bb","signature":"cc","relayedBy":null,"ttl":2,"ts":10,"message":{"x":"Hello"}});
        let m = SidechannelMessage::from_payload("chan", &p, 99);
        assert_eq!(
            serde_json::to_value(ServerMessage::SidechannelMessage(Box::new(m.clone()))).unwrap(),
            json!({"type":"sidechannel_message","channel":"chan","id":"m1","from":"aa","origin":"bb","sig":"cc",
                   "relayedBy":null,"ttl":2,"ts":10,"message":{"x":"Hello"}})
        );
        assert_eq!(m.filter_text(), r#"{"x":"Hello"}"#);
        let bare = SidechannelMessage::from_payload("c", &json!("just text"), 99);
        assert_eq!(bare.ts, json!(99));
        assert_eq!(bare.message, json!("just text"));
        assert_eq!(bare.id, Value::Null);
        assert_eq!(bare.filter_text(), "just text");
    }

    #[test]
    fn invites_json_or_base64() {
        let obj = json!({"channel":"p","sig":"00"});
        assert_eq!(parse_json_or_base64(&obj), Some(obj.clone()));
        let text = obj.to_string();
        assert_eq!(
            parse_json_or_base64(&json!(format!("  {text} "))),
            Some(obj.clone())
        );
        let b64 = b64(text.as_bytes());
        assert_eq!(parse_json_or_base64(&json!(b64)), Some(obj.clone()));
        let unpadded = b64.trim_end_matches('=').to_string();
        assert_eq!(parse_json_or_base64(&json!(unpadded)), Some(obj.clone()));
        let urlsafe = b64.replace('+', "-").replace('/', "_");
        assert_eq!(parse_json_or_base64(&json!(urlsafe)), Some(obj));
        assert_eq!(parse_json_or_base64(&json!("{broken")), None);
        assert_eq!(parse_json_or_base64(&json!("!!!")), None);
        assert_eq!(parse_json_or_base64(&json!("   ")), None);
        assert_eq!(parse_json_or_base64(&json!(5)), None);
        assert_eq!(parse_json_or_base64(&json!(b64_str("[1,2]"))), None);
    }

    fn b64_str(s: &str) -> String {
        b64(s.as_bytes())
    }

    fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn js_helpers() {
        assert!(!js_truthy(&json!(0)));
        assert!(!js_truthy(&json!(0.0)));
        assert!(js_truthy(&json!([])));
        assert!(js_truthy(&json!("0")));
        assert_eq!(js_string(&json!([1, null, "a"])), "1,,a");
        assert_eq!(normalize_text(&json!(null)), "");
        assert_eq!(normalize_text(&json!({"a":"B"})), r#"{"a":"B"}"#);
    }
}
