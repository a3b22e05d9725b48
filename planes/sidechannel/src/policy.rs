//! The sidechannel policy: every option of the reference and a pure receive check.
//!
//! [`Policy::check`] runs the reference's receive checks in its order and returns a
//! [`Verdict`]: what to do with the message ([`Action`]), whether to relay it and with
//! which TTL, and the state changes the plane must apply ([`Effects`]). It reads plane
//! state only through [`PlaneView`] and the connection's [`RateLimiter`], never mutates
//! anything, and takes the time as an argument, so every rule is unit-testable on its own.
//!
//! ```text
//! blocked -> oversize -> malformed -> fresh -> invite -> pow -> rate -> channel
//!   -> owner-only -> signature -> own message -> duplicate / dedupe full
//!   -> welcome (embedded / awaiting)
//!   -> open_channel | auth | deliver                      -> relay (ttl > 0, not auth/welcome)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::credentials::{self, CredentialError};
use crate::js;
use crate::payload::{self, Payload, PayloadError, ENTRY_CHANNEL, MAX_POW_DIFFICULTY};

/// Every option of the reference's sidechannel feature, with the Intercom CLI defaults,
/// plus the bounds this implementation adds.
#[derive(Debug, Clone)]
pub struct SidechannelConfig {
    /// The rendezvous channel: never needs an owner, welcome or invite; cannot be left.
    pub entry_channel: String,
    /// Channels joined at start (the entry channel is always joined).
    pub channels: Vec<String>,
    /// Largest payload (`JSON.stringify` bytes) sent or accepted (`--sidechannel-max-bytes`).
    pub max_message_bytes: usize,
    /// Accept `open_channel` requests from peers (`--sidechannel-allow-remote-open`).
    pub allow_remote_open: bool,
    /// Join requested channels automatically (`--sidechannel-auto-join`).
    pub auto_join_on_open: bool,
    /// Forward accepted messages to other peers.
    pub relay_enabled: bool,
    /// TTL of messages we originate; relayed TTLs are capped to it.
    pub relay_ttl: u32,
    /// Most message ids remembered for deduplication at once: a hard memory cap (19-39
    /// bytes per id). When it is reached new messages are dropped
    /// ([`DropReason::DedupeFull`]) rather than forgetting ids still inside the freshness
    /// window.
    ///
    /// Sizing: an id is held at most window + clock-skew allowance + one bucket (120 + 30 +
    /// 15 = 165 s by default) and every accepted message was charged to its connection's
    /// token bucket. A signed message is at least 245 bytes (`from`, `sig`, `ts`, a
    /// one-letter channel), so one connection at the default 64,000 B/s (256,000 B burst)
    /// gets at most 261 messages/s, ~44,100 ids held at once. Times the 4,096 connections
    /// `max_connections` allows that is ~180 million ids (~7 GB), too much to promise, so
    /// the default cap (1,048,576 ids, at most ~40 MiB) holds ~23 connections sending
    /// minimum-size messages at the full rate for the whole window (~43 at a typical 450
    /// bytes); beyond that, new messages are dropped until ids leave the window, rather
    /// than replays getting in.
    /// With rate limiting off only the cap bounds it.
    pub max_seen: usize,
    /// Freshness window, ms (`--sidechannel-max-age` × 1000): a message whose `ts` is older
    /// than this is dropped ([`DropReason::Stale`]), and an accepted id is remembered
    /// until its `ts` is this old, so within the window no copy is delivered twice. Not in
    /// the JS peer (which checks no timestamp and remembers ids 120 s after arrival).
    pub max_message_age_ms: u64,
    /// How far a message's `ts` may be ahead of our clock, ms, before it is dropped
    /// ([`DropReason::FromFuture`]): the clock-skew allowance between peers.
    pub max_clock_skew_ms: u64,
    /// Inbound budget per connection, bytes per second; 0 disables rate limiting.
    pub rate_bytes_per_second: u64,
    /// Token-bucket burst, bytes.
    pub rate_burst_bytes: u64,
    /// Over-limit strikes within the window that block the sender.
    pub max_strikes: u32,
    /// Strike window, ms.
    pub strike_window_ms: u64,
    /// How long a blocked sender stays blocked, ms.
    pub block_ms: u64,
    /// Require proof of work (`--sidechannel-pow`).
    pub pow_enabled: bool,
    /// Required leading zero bits (`--sidechannel-pow-difficulty`, at most 32 here).
    pub pow_difficulty: u32,
    /// Require proof of work on the entry channel only (`--sidechannel-pow-entry`).
    pub pow_require_entry: bool,
    /// Require proof of work on these channels only (`--sidechannel-pow-channels`).
    pub pow_required_channels: Option<BTreeSet<String>>,
    /// Require invites (`--sidechannel-invite-required`).
    pub invite_required: bool,
    /// Require invites on these exact channels only (`--sidechannel-invite-channels`).
    pub invite_required_channels: Option<BTreeSet<String>>,
    /// Require invites on channels with these prefixes only (`--sidechannel-invite-prefixes`).
    pub invite_required_prefixes: Option<Vec<String>>,
    /// Trusted inviter keys (hex); defaults to our own key when invites are required.
    pub inviter_keys: Vec<String>,
    /// Default lifetime of invites we create, ms (`--sidechannel-invite-ttl` × 1000).
    pub invite_ttl_ms: u64,
    /// Only channel owners may write, on every channel but the entry.
    pub owner_write_only: bool,
    /// Only channel owners may write on these channels.
    pub owner_write_channels: Option<BTreeSet<String>>,
    /// Require an owner-signed welcome before accepting messages (not on the entry).
    pub welcome_required: bool,
    /// Owner key per channel (`--sidechannel-owner`).
    pub owner_keys: BTreeMap<String, String>,
    /// Owner of channels without an entry in `owner_keys`.
    pub default_owner_key: Option<String>,
    /// Pre-signed welcome per channel (`--sidechannel-welcome`), as JSON objects.
    pub welcome_by_channel: BTreeMap<String, Value>,
    /// Verify every message's signature against its `from` key (the reference only does
    /// so on owner-only channels).
    pub verify_signatures: bool,
    /// Most channels joined at once.
    pub max_channels: usize,
    /// Most connections tracked at once.
    pub max_connections: usize,
    /// Most authorised remote peers remembered per channel.
    pub max_invites_per_channel: usize,
    /// Most blocked peer keys remembered across reconnects.
    pub max_blocked_keys: usize,
    /// Most outputs queued before new ones are discarded (counted in the stats).
    pub max_queued_outputs: usize,
}

/// Seven days, the CLI's default invite lifetime.
pub const DEFAULT_INVITE_TTL_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Default freshness window: 120 s, the JS peer's dedupe lifetime.
pub const DEFAULT_MAX_MESSAGE_AGE_MS: u64 = 120_000;
/// Default clock-skew allowance for timestamps ahead of ours: 30 s.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 30_000;
/// Default cap on remembered message ids (see [`SidechannelConfig::max_seen`]).
pub const DEFAULT_MAX_SEEN: usize = 1 << 20;

impl Default for SidechannelConfig {
    fn default() -> Self {
        SidechannelConfig {
            entry_channel: ENTRY_CHANNEL.to_owned(),
            channels: Vec::new(),
            max_message_bytes: 1_000_000,
            allow_remote_open: true,
            auto_join_on_open: false,
            relay_enabled: true,
            relay_ttl: 3,
            max_seen: DEFAULT_MAX_SEEN,
            max_message_age_ms: DEFAULT_MAX_MESSAGE_AGE_MS,
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
            rate_bytes_per_second: 64_000,
            rate_burst_bytes: 256_000,
            max_strikes: 3,
            strike_window_ms: 5_000,
            block_ms: 30_000,
            pow_enabled: true,
            pow_difficulty: 12,
            pow_require_entry: false,
            pow_required_channels: None,
            invite_required: false,
            invite_required_channels: None,
            invite_required_prefixes: None,
            inviter_keys: Vec::new(),
            invite_ttl_ms: DEFAULT_INVITE_TTL_MS,
            owner_write_only: false,
            owner_write_channels: None,
            welcome_required: true,
            owner_keys: BTreeMap::new(),
            default_owner_key: None,
            welcome_by_channel: BTreeMap::new(),
            verify_signatures: true,
            max_channels: 1_024,
            max_connections: 4_096,
            max_invites_per_channel: 4_096,
            max_blocked_keys: 4_096,
            max_queued_outputs: 65_536,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The entry channel name is empty.
    #[error("entry channel name is empty")]
    EmptyEntryChannel,
    /// Proof of work above [`MAX_POW_DIFFICULTY`] bits would never finish.
    #[error("proof-of-work difficulty {0} is above {MAX_POW_DIFFICULTY}")]
    PowDifficulty(u32),
    /// A limit that must be positive is zero.
    #[error("{0} must be positive")]
    ZeroLimit(&'static str),
}

/// The configuration compiled for one peer: normalised keys and names, our own key.
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: SidechannelConfig,
    entry: String,
    self_key: String,
    inviter_keys: Option<BTreeSet<String>>,
    owner_keys: BTreeMap<String, String>,
    default_owner: Option<String>,
    owner_write_channels: Option<BTreeSet<String>>,
}

impl Policy {
    /// Compiles `cfg` for the peer whose public key is `self_key` (hex).
    pub fn new(cfg: SidechannelConfig, self_key: &str) -> Result<Policy, ConfigError> {
        let entry = js::trim(&cfg.entry_channel).to_owned();
        if entry.is_empty() {
            return Err(ConfigError::EmptyEntryChannel);
        }
        if cfg.pow_difficulty > MAX_POW_DIFFICULTY {
            return Err(ConfigError::PowDifficulty(cfg.pow_difficulty));
        }
        for (name, v) in [
            ("max_seen", cfg.max_seen),
            ("max_channels", cfg.max_channels),
            ("max_connections", cfg.max_connections),
            ("max_invites_per_channel", cfg.max_invites_per_channel),
            ("max_blocked_keys", cfg.max_blocked_keys),
            ("max_queued_outputs", cfg.max_queued_outputs),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        if cfg.max_message_age_ms == 0 {
            return Err(ConfigError::ZeroLimit("max_message_age_ms"));
        }
        let self_key = js::trim(self_key).to_lowercase();
        let mut inviters: BTreeSet<String> = cfg
            .inviter_keys
            .iter()
            .map(|k| js::trim(k).to_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        if cfg.invite_required && inviters.is_empty() && !self_key.is_empty() {
            inviters.insert(self_key.clone());
        }
        let owner_keys = cfg
            .owner_keys
            .iter()
            .map(|(c, k)| (js::trim(c).to_owned(), js::trim(k).to_lowercase()))
            .filter(|(c, k)| !c.is_empty() && !k.is_empty())
            .collect();
        let default_owner = cfg
            .default_owner_key
            .as_deref()
            .map(|k| js::trim(k).to_lowercase())
            .filter(|k| !k.is_empty());
        let owner_write_channels = cfg
            .owner_write_channels
            .as_ref()
            .map(|s| s.iter().map(|c| js::trim(c).to_owned()).collect());
        Ok(Policy {
            entry,
            self_key,
            inviter_keys: (!inviters.is_empty()).then_some(inviters),
            owner_keys,
            default_owner,
            owner_write_channels,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SidechannelConfig {
        &self.cfg
    }

    /// Our key, lower-case hex.
    pub fn self_key(&self) -> &str {
        &self.self_key
    }

    /// The trimmed entry channel name.
    pub fn entry_channel(&self) -> &str {
        &self.entry
    }

    /// Whether `channel` is the entry channel.
    pub fn is_entry(&self, channel: &str) -> bool {
        let c = js::trim(channel);
        !c.is_empty() && c == self.entry
    }

    /// The trusted inviter keys, when any are configured.
    pub fn inviter_keys(&self) -> Option<&BTreeSet<String>> {
        self.inviter_keys.as_ref()
    }

    /// Whether `key` is a trusted inviter.
    pub fn is_inviter(&self, key: &str) -> bool {
        self.inviter_keys.as_ref().is_some_and(|s| s.contains(key))
    }

    /// Whether we are a trusted inviter.
    pub fn self_is_inviter(&self) -> bool {
        self.is_inviter(&self.self_key)
    }

    /// Whether messages on `channel` must carry proof of work.
    pub fn pow_required(&self, channel: &str) -> bool {
        if !self.cfg.pow_enabled || self.cfg.pow_difficulty == 0 {
            return false;
        }
        if let Some(set) = &self.cfg.pow_required_channels {
            return set.contains(channel);
        }
        if self.cfg.pow_require_entry {
            return channel == self.entry;
        }
        true
    }

    /// Whether `channel` is invite-only.
    pub fn invite_required(&self, channel: &str) -> bool {
        if self.is_entry(channel) || !self.cfg.invite_required {
            return false;
        }
        let list = &self.cfg.invite_required_channels;
        let prefixes = &self.cfg.invite_required_prefixes;
        if list.as_ref().is_some_and(|s| s.contains(channel)) {
            return true;
        }
        if let Some(prefixes) = prefixes {
            if prefixes
                .iter()
                .any(|p| !p.is_empty() && channel.starts_with(p.as_str()))
            {
                return true;
            }
        }
        list.is_none() && prefixes.is_none()
    }

    /// Whether only the owner may write on `channel`.
    pub fn owner_write_only(&self, channel: &str) -> bool {
        if self.is_entry(channel) {
            return false;
        }
        if self.cfg.owner_write_only {
            return true;
        }
        self.owner_write_channels
            .as_ref()
            .is_some_and(|s| s.contains(js::trim(channel)))
    }

    /// Whether messages on `channel` wait for a welcome.
    pub fn welcome_required(&self, channel: &str) -> bool {
        !self.is_entry(channel) && self.cfg.welcome_required
    }

    /// The owner key of `channel`.
    pub fn owner_key(&self, channel: &str) -> Option<&str> {
        self.owner_keys
            .get(js::trim(channel))
            .or(self.default_owner.as_ref())
            .map(String::as_str)
    }

    /// Whether we own `channel`.
    pub fn self_owns(&self, channel: &str) -> bool {
        !self.self_key.is_empty() && self.owner_key(channel) == Some(self.self_key.as_str())
    }

    /// Checks a welcome for `channel` against its owner.
    pub fn verify_welcome(&self, welcome: &Value, channel: &str) -> Result<(), CredentialError> {
        credentials::verify_welcome(welcome, channel, self.owner_key(channel)).map(|_| ())
    }

    /// Checks an invite for `channel` held by `invitee`; returns its expiry (ms).
    pub fn verify_invite(
        &self,
        invite: &Value,
        channel: &str,
        invitee: &str,
        now_ms: u64,
    ) -> Result<f64, CredentialError> {
        credentials::verify_invite(invite, channel, invitee, self.inviter_keys.as_ref(), now_ms)
            .map(|p| p.expires_at)
    }
}

/// The token bucket and strike counter of one connection (the reference's `_checkRate`).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimiter {
    /// Bytes that may still be received now.
    pub tokens: f64,
    /// Last refill, ms.
    pub last_refill: u64,
    /// Over-limit strikes in the current window.
    pub strikes: u32,
    /// End of the current strike window, ms.
    pub strike_reset_at: u64,
    /// Messages are dropped until this time, ms.
    pub blocked_until: u64,
}

impl RateLimiter {
    /// A full bucket at `now_ms`.
    pub fn new(now_ms: u64, cfg: &SidechannelConfig) -> Self {
        RateLimiter {
            tokens: cfg.rate_burst_bytes as f64,
            last_refill: now_ms,
            strikes: 0,
            strike_reset_at: now_ms.saturating_add(cfg.strike_window_ms),
            blocked_until: 0,
        }
    }

    /// Whether the connection is blocked at `now_ms`.
    pub fn is_blocked(&self, now_ms: u64) -> bool {
        now_ms < self.blocked_until
    }

    /// Charges `bytes`; `false` when over the limit (a strike, possibly a block).
    pub fn charge(&mut self, now_ms: u64, bytes: usize, cfg: &SidechannelConfig) -> bool {
        if cfg.rate_bytes_per_second == 0 {
            return true;
        }
        if self.is_blocked(now_ms) {
            return false;
        }
        if now_ms > self.strike_reset_at {
            self.strikes = 0;
            self.strike_reset_at = now_ms.saturating_add(cfg.strike_window_ms);
        }
        let elapsed = now_ms.saturating_sub(self.last_refill);
        if elapsed > 0 {
            let refill = elapsed as f64 / 1000.0 * cfg.rate_bytes_per_second as f64;
            self.tokens = (self.tokens + refill).min(cfg.rate_burst_bytes as f64);
            self.last_refill = now_ms;
        }
        if bytes as f64 > self.tokens {
            self.strikes += 1;
            if self.strikes >= cfg.max_strikes {
                self.blocked_until = now_ms.saturating_add(cfg.block_ms);
            }
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

/// Why a message was not accepted. Stable snake_case codes via [`DropReason::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The connection is blocked after repeated rate-limit strikes.
    Blocked,
    /// The payload is larger than the configured maximum.
    Oversize {
        /// Its size in bytes.
        bytes: usize,
        /// The maximum.
        max: usize,
    },
    /// Not a `c.json` JSON object.
    Malformed,
    /// `ts` is not a number (JS senders always stamp `Date.now()`).
    NoTimestamp,
    /// `ts` is older than the freshness window (a replay, or a message held back).
    Stale {
        /// How old, ms.
        age_ms: u64,
        /// The window, ms.
        max_ms: u64,
    },
    /// `ts` is further ahead of our clock than the skew allowance.
    FromFuture {
        /// How far ahead, ms.
        ahead_ms: u64,
        /// The allowance, ms.
        max_ms: u64,
    },
    /// Invite-only channel and neither we nor the sender are authorised.
    Invite,
    /// Missing or insufficient proof of work.
    Pow,
    /// Over the connection's byte budget.
    RateLimited,
    /// `payload.channel` names another channel than the one it arrived on.
    ChannelMismatch,
    /// Owner-only channel and the message is not signed by the owner.
    OwnerOnly,
    /// The signature does not verify against `from`.
    BadSignature,
    /// A copy of a message we sent.
    OwnMessage,
    /// A message id already accepted.
    Duplicate,
    /// The dedupe cache is at its cap with ids still inside the window: the message is
    /// dropped rather than delivered without a way to recognise its copies.
    DedupeFull,
    /// A welcome control message whose welcome does not verify.
    InvalidWelcome,
    /// A welcome control message without a welcome.
    MissingWelcome,
    /// The channel has not been welcomed yet.
    AwaitingWelcome,
    /// An `open_channel` request whose welcome does not verify.
    OpenInvalidWelcome,
    /// An `open_channel` request without the welcome its channel needs.
    OpenMissingWelcome,
    /// An `open_channel` request for an invite-only channel without a valid invite.
    OpenInvite,
    /// The message arrived on a channel we have not joined.
    NotJoined,
    /// The message arrived on a connection we do not know.
    UnknownConnection,
}

impl DropReason {
    /// Stable code for logs and the bridge.
    pub fn code(&self) -> &'static str {
        match self {
            DropReason::Blocked => "blocked",
            DropReason::Oversize { .. } => "oversize",
            DropReason::Malformed => "malformed",
            DropReason::NoTimestamp => "no_timestamp",
            DropReason::Stale { .. } => "stale",
            DropReason::FromFuture { .. } => "from_future",
            DropReason::Invite => "invite",
            DropReason::Pow => "pow",
            DropReason::RateLimited => "rate_limited",
            DropReason::ChannelMismatch => "channel_mismatch",
            DropReason::OwnerOnly => "owner_only",
            DropReason::BadSignature => "bad_signature",
            DropReason::OwnMessage => "own_message",
            DropReason::Duplicate => "duplicate",
            DropReason::DedupeFull => "dedupe_full",
            DropReason::InvalidWelcome => "invalid_welcome",
            DropReason::MissingWelcome => "missing_welcome",
            DropReason::AwaitingWelcome => "awaiting_welcome",
            DropReason::OpenInvalidWelcome => "open_invalid_welcome",
            DropReason::OpenMissingWelcome => "open_missing_welcome",
            DropReason::OpenInvite => "open_invite",
            DropReason::NotJoined => "not_joined",
            DropReason::UnknownConnection => "unknown_connection",
        }
    }
}

/// Serialised as its stable code.
impl serde::Serialize for DropReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// An inbound message before the policy runs: its wire size and the decoded payload.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Bytes on the wire (the `c.json` body).
    pub wire_len: usize,
    /// The payload, or why it does not decode (not attempted when oversize).
    pub payload: Result<Payload, PayloadError>,
    /// `JSON.stringify(payload)` length, the size the reference measures.
    pub js_len: usize,
    /// Whether the signature verifies against `from`, when that was checked ahead of the
    /// policy ([`Inbound::verify_ahead`]); `None`: the policy checks it when it must.
    pub signed_by_from: Option<bool>,
}

impl Inbound {
    /// Decodes `bytes`, skipping the JSON parse when the wire size alone is over `max_bytes`.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Inbound {
        if bytes.len() > max_bytes.saturating_add(9) {
            return Inbound {
                wire_len: bytes.len(),
                payload: Err(PayloadError::TooLarge(bytes.len())),
                js_len: bytes.len(),
                signed_by_from: None,
            };
        }
        let payload = Payload::decode(bytes);
        let js_len = payload.as_ref().map_or(bytes.len(), Payload::js_len);
        Inbound {
            wire_len: bytes.len(),
            payload,
            js_len,
            signed_by_from: None,
        }
    }

    /// Checks the signatures of decoded messages ahead of the policy, so that a reader
    /// task can do this work before the plane sees them: each with libsodium's equation
    /// on a cached key ([`payload::verify_from_batch`], ~34 us per signature in release).
    pub fn verify_ahead(batch: &mut [Inbound]) {
        let payloads: Vec<&Payload> = batch
            .iter()
            .filter_map(|m| m.payload.as_ref().ok())
            .collect();
        let mut verdicts = payload::verify_from_batch(&payloads).into_iter();
        for m in batch.iter_mut().filter(|m| m.payload.is_ok()) {
            m.signed_by_from = verdicts.next();
        }
    }

    /// Whether the signature verifies against `author`, which must be the payload's
    /// `from` key: the checked-ahead answer when there is one.
    fn signed_by(&self, payload: &Payload, author: &str) -> bool {
        self.signed_by_from
            .unwrap_or_else(|| payload::verify(payload, author))
    }
}

/// Read-only view of the plane state the policy consults.
pub trait PlaneView {
    /// Whether a message with this dedupe key was accepted within the freshness window.
    fn is_seen(&self, key: &str, now_ms: u64) -> bool;
    /// Whether the dedupe cache can remember one more id at `now_ms`.
    fn seen_has_room(&self, now_ms: u64) -> bool;
    /// Whether a valid welcome for `channel` has been verified.
    fn is_welcomed(&self, channel: &str) -> bool;
    /// Whether `key` holds an unexpired invite for `channel`.
    fn is_invited(&self, channel: &str, key: &str, now_ms: u64) -> bool;
    /// Whether we hold an unexpired invite for `channel`.
    fn is_locally_invited(&self, channel: &str, now_ms: u64) -> bool;
}

/// Everything [`Policy::check`] needs besides the message.
pub struct CheckCtx<'a> {
    /// Current time, ms.
    pub now_ms: u64,
    /// The channel the message arrived on (trimmed name).
    pub channel: &'a str,
    /// The connection's remote public key, lower-case hex.
    pub remote_key: &'a str,
    /// The connection's limiter (`None`: a fresh one).
    pub limiter: Option<&'a RateLimiter>,
    /// Plane state.
    pub view: &'a dyn PlaneView,
}

/// An invite verified for a remote peer.
#[derive(Debug, Clone, PartialEq)]
pub struct InviteGrant {
    /// Channel the invite opens.
    pub channel: String,
    /// The invited peer (hex).
    pub key: String,
    /// Expiry, ms.
    pub expires_at: f64,
}

/// State changes a verdict asks the plane to make.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// The connection's limiter after this message (`None`: untouched).
    pub limiter: Option<RateLimiter>,
    /// Invites verified for the remote peer.
    pub invites: Vec<InviteGrant>,
    /// Welcomes verified (channel, welcome object).
    pub welcomes: Vec<(String, Value)>,
    /// Dedupe key to remember, with the message's `ts` (ms) that decides how long.
    pub seen: Option<(String, u64)>,
}

/// What to do with an inbound message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Hand the payload to the application.
    Deliver,
    /// A remote `open_channel` request for `target` passed its checks.
    Open {
        /// The requested channel (trimmed).
        target: String,
    },
    /// An `auth` handshake was accepted; nothing to deliver.
    Auth,
    /// Accepted but nothing to deliver (an `open_channel` without a target name).
    Ignore,
    /// Dropped.
    Drop(DropReason),
}

/// The outcome of [`Policy::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What to do with the message.
    pub action: Action,
    /// `Some(ttl)`: forward a copy carrying this TTL to the other authorised peers.
    pub relay_ttl: Option<f64>,
    /// State changes to apply, whatever the action.
    pub effects: Effects,
}

impl Verdict {
    fn drop(reason: DropReason, effects: Effects) -> Verdict {
        Verdict {
            action: Action::Drop(reason),
            relay_ttl: None,
            effects,
        }
    }

    /// The drop reason, if dropped.
    pub fn drop_reason(&self) -> Option<&DropReason> {
        match &self.action {
            Action::Drop(r) => Some(r),
            _ => None,
        }
    }
}

/// Drops `reason` after charging the message to the limiter (without changing the reason).
fn charged_drop(
    reason: DropReason,
    mut limiter: RateLimiter,
    msg: &Inbound,
    now: u64,
    cfg: &SidechannelConfig,
    mut fx: Effects,
) -> Verdict {
    limiter.charge(now, msg.js_len, cfg);
    fx.limiter = Some(limiter);
    Verdict::drop(reason, fx)
}

impl Policy {
    /// The freshness check: `ts` must be a number no older than `max_message_age_ms` and
    /// no more than `max_clock_skew_ms` ahead of `now` (JS senders stamp `Date.now()`, the
    /// same clock as ours: milliseconds since the Unix epoch).
    pub fn check_fresh(&self, payload: &Payload, now: u64) -> Result<(), DropReason> {
        let Some(ts) = payload.ts().filter(|t| t.is_finite()) else {
            return Err(DropReason::NoTimestamp);
        };
        let now = now as f64;
        let (max_age, max_skew) = (self.cfg.max_message_age_ms, self.cfg.max_clock_skew_ms);
        if ts < now - max_age as f64 {
            return Err(DropReason::Stale {
                age_ms: (now - ts) as u64,
                max_ms: max_age,
            });
        }
        if ts > now + max_skew as f64 {
            return Err(DropReason::FromFuture {
                ahead_ms: (ts - now) as u64,
                max_ms: max_skew,
            });
        }
        Ok(())
    }

    /// Runs the receive checks on one inbound message. Pure: the plane applies
    /// `verdict.effects`.
    pub fn check(&self, msg: &Inbound, ctx: &CheckCtx<'_>) -> Verdict {
        let cfg = &self.cfg;
        let now = ctx.now_ms;
        let channel = ctx.channel;
        let mut fx = Effects::default();
        let mut limiter = ctx
            .limiter
            .cloned()
            .unwrap_or_else(|| RateLimiter::new(now, cfg));

        if limiter.is_blocked(now) {
            return Verdict::drop(DropReason::Blocked, fx);
        }
        // Everything dropped before the rate step (oversize, malformed, invite, proof of
        // work) is charged to the bucket too, so floods of invalid input get blocked like
        // any other flood; the reported reason is still the first failing check.
        if msg.wire_len > cfg.max_message_bytes.saturating_add(9)
            || msg.js_len > cfg.max_message_bytes
        {
            limiter.charge(now, msg.js_len.max(msg.wire_len), cfg);
            fx.limiter = Some(limiter);
            let bytes = msg.js_len.max(msg.wire_len);
            return Verdict::drop(
                DropReason::Oversize {
                    bytes,
                    max: cfg.max_message_bytes,
                },
                fx,
            );
        }
        let payload = match &msg.payload {
            Ok(p) => p,
            Err(_) => {
                limiter.charge(now, msg.wire_len, cfg);
                fx.limiter = Some(limiter);
                return Verdict::drop(DropReason::Malformed, fx);
            }
        };

        // Freshness (not in the reference): a replayed message older than the window is
        // refused before any signature or proof-of-work work, and charged like the other
        // invalid input.
        if let Err(reason) = self.check_fresh(payload, now) {
            return charged_drop(reason, limiter, msg, now, cfg, fx);
        }

        // Invite.
        if self.invite_required(channel) {
            if !self.self_is_inviter() && !ctx.view.is_locally_invited(channel, now) {
                return charged_drop(DropReason::Invite, limiter, msg, now, cfg, fx);
            }
            let authorised = self.is_inviter(ctx.remote_key)
                || ctx.view.is_invited(channel, ctx.remote_key, now);
            if !authorised {
                let invite = js::first_truthy(&[
                    payload.get("invite"),
                    payload.message().and_then(|m| js::get(m, "invite")),
                ]);
                match invite.map(|i| self.verify_invite(i, channel, ctx.remote_key, now)) {
                    Some(Ok(expires_at)) => fx.invites.push(InviteGrant {
                        channel: channel.to_owned(),
                        key: ctx.remote_key.to_owned(),
                        expires_at,
                    }),
                    _ => return charged_drop(DropReason::Invite, limiter, msg, now, cfg, fx),
                }
            }
        }

        // Proof of work.
        if self.pow_required(channel) && !payload::check_pow(payload, cfg.pow_difficulty) {
            return charged_drop(DropReason::Pow, limiter, msg, now, cfg, fx);
        }

        // Rate.
        let within = limiter.charge(now, msg.js_len, cfg);
        fx.limiter = Some(limiter);
        if !within {
            return Verdict::drop(DropReason::RateLimited, fx);
        }

        // The payload must name the channel it arrived on: signatures and proofs bind
        // `payload.channel`, so this stops cross-channel replays.
        if payload.channel().map(js::trim) != Some(channel) {
            return Verdict::drop(DropReason::ChannelMismatch, fx);
        }

        let control = payload.control();
        let is_auth = control == Some("auth");
        let is_welcome = control == Some("welcome");
        let from = payload.from_key();

        // Owner-only write: the owner's signature, whoever relayed it.
        let owner_checked = self.owner_write_only(channel) && !is_auth && !is_welcome;
        if owner_checked {
            let owner = self.owner_key(channel);
            let ok = match (owner, from.as_deref()) {
                (Some(owner), Some(author)) => author == owner && msg.signed_by(payload, author),
                _ => false,
            };
            if !ok {
                return Verdict::drop(DropReason::OwnerOnly, fx);
            }
        } else if cfg.verify_signatures {
            let ok = from
                .as_deref()
                .is_some_and(|author| msg.signed_by(payload, author));
            if !ok {
                return Verdict::drop(DropReason::BadSignature, fx);
            }
        }

        // Our own message coming back through relays.
        let origin = payload.origin_key();
        if !self.self_key.is_empty()
            && (from.as_deref() == Some(self.self_key.as_str())
                || origin.as_deref() == Some(self.self_key.as_str()))
        {
            return Verdict::drop(DropReason::OwnMessage, fx);
        }

        // Duplicate. Ids are kept until their `ts` leaves the window, so no refresh is
        // needed; a full cache refuses the message rather than forget a live id.
        let key = payload.dedupe_key(channel);
        if ctx.view.is_seen(&key, now) {
            return Verdict::drop(DropReason::Duplicate, fx);
        }
        if !ctx.view.seen_has_room(now) {
            return Verdict::drop(DropReason::DedupeFull, fx);
        }

        // Welcome: an embedded one is verified; a welcome control must carry a valid one.
        let message = payload.message();
        let msg_get = |k: &str| message.and_then(|m| js::get(m, k));
        let embedded = js::first_truthy(&[
            msg_get("welcome"),
            payload.get("welcome"),
            payload.get("invite").and_then(|i| js::get(i, "welcome")),
            msg_get("invite").and_then(|i| js::get(i, "welcome")),
        ]);
        let mut welcome_ok = false;
        if let Some(w) = embedded {
            welcome_ok = self.verify_welcome(w, channel).is_ok();
            if welcome_ok {
                fx.welcomes.push((channel.to_owned(), w.clone()));
            } else if is_welcome {
                return Verdict::drop(DropReason::InvalidWelcome, fx);
            }
        } else if is_welcome {
            return Verdict::drop(DropReason::MissingWelcome, fx);
        }
        if self.welcome_required(channel)
            && !welcome_ok
            && !ctx.view.is_welcomed(channel)
            && !self.self_owns(channel)
        {
            return Verdict::drop(DropReason::AwaitingWelcome, fx);
        }

        // Remote channel-open requests.
        let requested = msg_get("channel").and_then(Value::as_str);
        let action = match (control, requested) {
            (Some("open_channel"), Some(requested)) if cfg.allow_remote_open => {
                let target = js::trim(requested);
                if target.is_empty() {
                    Action::Ignore
                } else {
                    let welcome = js::first_truthy(&[
                        msg_get("welcome"),
                        msg_get("invite").and_then(|i| js::get(i, "welcome")),
                    ]);
                    match welcome {
                        Some(w) => {
                            if self.verify_welcome(w, target).is_err() {
                                return Verdict::drop(DropReason::OpenInvalidWelcome, fx);
                            }
                            fx.welcomes.push((target.to_owned(), w.clone()));
                        }
                        None if self.welcome_required(target) => {
                            return Verdict::drop(DropReason::OpenMissingWelcome, fx);
                        }
                        None => {}
                    }
                    if self.invite_required(target) {
                        let invite = msg_get("invite").filter(|i| js::truthy(i));
                        match invite.map(|i| self.verify_invite(i, target, ctx.remote_key, now)) {
                            Some(Ok(expires_at)) => fx.invites.push(InviteGrant {
                                channel: target.to_owned(),
                                key: ctx.remote_key.to_owned(),
                                expires_at,
                            }),
                            _ => return Verdict::drop(DropReason::OpenInvite, fx),
                        }
                    }
                    Action::Open {
                        target: target.to_owned(),
                    }
                }
            }
            _ if is_auth => Action::Auth,
            _ => Action::Deliver,
        };
        // `check_fresh` passed, so `ts` is a number inside the window.
        let ts = payload.ts().map_or(now, |t| t.max(0.0) as u64);
        fx.seen = Some((key, ts));

        // Relay: never handshakes, only while TTL remains; TTLs are capped to ours.
        let ttl = payload.ttl();
        let capped = ttl.min(f64::from(cfg.relay_ttl));
        let relay_ttl =
            (cfg.relay_enabled && !is_auth && !is_welcome && capped > 0.0).then_some(capped - 1.0);
        Verdict {
            action,
            relay_ttl,
            effects: fx,
        }
    }
}

#[cfg(test)]
mod tests;
