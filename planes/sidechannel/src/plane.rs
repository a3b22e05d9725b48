//! [`Sidechannel`]: the plane's state machine (channels, connections, dedupe, welcomes,
//! invites, rate limits) driven by explicit inputs and drained through [`Sidechannel::poll_output`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use intercom_crypto::KeyPair;
use serde_json::{Map, Value};

use crate::credentials::{self, CredentialError};
use crate::js;
use crate::payload::{self, Payload, PrepareParams};
use crate::policy::{
    Action, CheckCtx, ConfigError, DropReason, Inbound, PlaneView, Policy, RateLimiter,
    SidechannelConfig, Verdict,
};
use crate::seen::SeenCache;

/// An opaque connection handle chosen by the runtime (one per swarm connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Something the runtime must do, or an event for the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open (and pair) the protomux channel `protocol` on `conn`; call
    /// [`Sidechannel::on_channel_open`] once it is open.
    OpenChannel {
        /// The connection.
        conn: ConnId,
        /// Channel name.
        channel: String,
        /// Protomux protocol, `sidechannel/<name>`.
        protocol: String,
    },
    /// Close the protomux channel of `channel` on `conn`.
    CloseChannel {
        /// The connection.
        conn: ConnId,
        /// Channel name.
        channel: String,
    },
    /// Send `bytes` as message type 0 on the channel's protomux channel of `conn`.
    Send {
        /// The connection.
        conn: ConnId,
        /// Channel name.
        channel: String,
        /// The `c.json` encoded payload (shared between the peers of one fan-out).
        bytes: Arc<[u8]>,
    },
    /// An event for the application.
    Event(SidechannelEvent),
}

/// What happened, for the application (SC-Bridge, logs).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SidechannelEvent {
    /// A channel was joined: join the swarm topic.
    Joined {
        /// Channel name.
        channel: String,
        /// Swarm topic, `sha256("sidechannel:" + name)`.
        topic: [u8; 32],
    },
    /// A channel was left: leave the swarm topic.
    Left {
        /// Channel name.
        channel: String,
        /// Swarm topic.
        topic: [u8; 32],
    },
    /// A message passed every check.
    Message {
        /// Channel it arrived on.
        channel: String,
        /// The payload as received.
        payload: Payload,
        /// Its author (`normalizeKeyHex(payload.from)`).
        from: Option<String>,
        /// The connection it arrived on (the author or a relay).
        conn: ConnId,
    },
    /// A message was dropped (the reference drops silently; we always report).
    Dropped {
        /// Channel it arrived on.
        channel: String,
        /// The connection it arrived on.
        conn: ConnId,
        /// Why.
        reason: DropReason,
    },
    /// A peer asked us to open `channel`, and the request passed its checks.
    OpenRequested {
        /// The requested channel.
        channel: String,
        /// The channel the request arrived on.
        via: String,
        /// Who asked.
        from: Option<String>,
        /// The connection it arrived on.
        conn: ConnId,
    },
    /// We joined a requested channel because auto-join is on.
    AutoJoin {
        /// The channel.
        channel: String,
    },
    /// A remote peer proved an invite for an invite-only channel.
    PeerAuthorized {
        /// The channel.
        channel: String,
        /// The connection.
        conn: ConnId,
        /// The peer's key (hex).
        peer: String,
    },
    /// A valid owner welcome for `channel` was verified for the first time.
    Welcomed {
        /// The channel.
        channel: String,
    },
}

/// Why a send was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The channel name is empty.
    #[error("empty channel name")]
    EmptyChannel,
    /// The channel is not joined.
    #[error("channel {0:?} is not joined")]
    NotJoined(String),
    /// Owner-only channel and we are not its owner.
    #[error("only the channel owner may write")]
    OwnerOnly,
    /// The payload would exceed the size limit.
    #[error("payload of {bytes} bytes exceeds {max}")]
    Oversize {
        /// Payload size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// No peer could be sent the message.
    #[error("no peer to send to ({unauthorized} unauthorized, {not_open} channels not open yet)")]
    NoPeers {
        /// Connected peers skipped because they are not authorised on the channel.
        unauthorized: usize,
        /// Connected peers whose protomux channel is not open yet.
        not_open: usize,
    },
    /// The supplied invite is not valid for us.
    #[error("invalid invite: {0}")]
    Invite(CredentialError),
    /// The supplied welcome is not valid for the channel.
    #[error("invalid welcome: {0}")]
    Welcome(CredentialError),
    /// The requested channel needs a welcome and none is known or supplied.
    #[error("channel needs an owner welcome")]
    MissingWelcome,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The channel name is empty.
    #[error("empty channel name")]
    EmptyChannel,
    /// Invite-only channel and we hold no valid invite.
    #[error("channel {0:?} requires an invite")]
    InviteRequired(String),
    /// Already at `max_channels`.
    #[error("too many channels")]
    TooManyChannels,
    /// The entry channel cannot be left.
    #[error("the entry channel cannot be left")]
    EntryChannel,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The id is already in use.
    #[error("connection {0} already registered")]
    Duplicate(ConnId),
    /// Already at `max_connections`; close the connection.
    #[error("too many connections")]
    TooMany,
}

/// Why [`Sidechannel::accept_invite`] refused a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The channel name is empty.
    #[error("empty channel name")]
    EmptyChannel,
    /// The invite is not valid for us on this channel.
    #[error("invalid invite: {0}")]
    Invite(CredentialError),
    /// The welcome is not valid for this channel.
    #[error("invalid welcome: {0}")]
    Welcome(CredentialError),
}

/// What a successful broadcast did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BroadcastReport {
    /// The payload id.
    pub id: String,
    /// Peers the message was queued for (at least one).
    pub peers: usize,
    /// Connected peers skipped as unauthorised.
    pub unauthorized: usize,
    /// Connected peers whose channel is not open yet (not queued; the reference waits).
    pub not_open: usize,
    /// Payload size in bytes.
    pub bytes: usize,
}

/// What [`Sidechannel::accept_invite`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct AcceptReport {
    /// An invite for us was stored.
    pub invited: bool,
    /// The channel is now welcomed.
    pub welcomed: bool,
}

/// Counters and sizes for `/sc_stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Stats {
    /// Joined channels.
    pub channels: Vec<String>,
    /// Tracked connections.
    pub connections: usize,
    /// Dedupe keys held.
    pub seen: usize,
    /// Heap bytes of the dedupe keys.
    pub seen_bytes: usize,
    /// Ids the full dedupe cache refused (messages dropped as `dedupe_full`, or our own
    /// sends not remembered); ids inside the window are never evicted.
    pub seen_refused: u64,
    /// Peer keys remembered as blocked (expired blocks are pruned lazily).
    pub blocked_peers: usize,
    /// Messages delivered to the application.
    pub delivered: u64,
    /// Messages dropped.
    pub dropped: u64,
    /// Messages dropped, by [`DropReason::code`].
    pub dropped_by_reason: BTreeMap<&'static str, u64>,
    /// Relayed copies queued.
    pub relayed: u64,
    /// Payloads we originated, counted per peer.
    pub sent: u64,
    /// Outputs discarded because the queue was full.
    pub outputs_discarded: u64,
}

/// A broadcast whose payload is still to be built: [`BroadcastJob::run`] does the proof of
/// work and signature without touching the plane, then [`Sidechannel::finish_broadcast`].
#[derive(Debug, Clone)]
pub struct BroadcastJob {
    keypair: KeyPair,
    /// The payload built (and size-checked) by `begin_broadcast`, not yet stamped or signed.
    payload: Payload,
    pow_difficulty: Option<u32>,
    channel: String,
}

impl BroadcastJob {
    /// Whether [`run`](Self::run) stamps a proof of work (thousands of hashes, worth a
    /// blocking thread) rather than only signing (one Ed25519 signature, ~15 µs).
    pub fn needs_proof_of_work(&self) -> bool {
        self.pow_difficulty.is_some_and(|d| d > 0)
    }

    /// Builds, stamps and signs the payload (CPU-bound; fine on a blocking thread).
    pub fn run(self) -> PreparedBroadcast {
        PreparedBroadcast {
            payload: payload::stamp_and_sign(&self.keypair, self.payload, self.pow_difficulty),
            channel: self.channel,
        }
    }
}

/// A built payload waiting for [`Sidechannel::finish_broadcast`].
#[derive(Debug, Clone)]
pub struct PreparedBroadcast {
    /// The payload.
    pub payload: Payload,
    /// The channel.
    pub channel: String,
}

#[derive(Debug, Clone, Default)]
struct ChanRecord {
    open: bool,
    auth_sent: bool,
    welcome_sent: bool,
}

#[derive(Debug, Clone)]
struct Conn {
    remote_key: String,
    channels: BTreeMap<String, ChanRecord>,
    limiter: Option<RateLimiter>,
}

#[derive(Debug, Clone)]
struct LocalInvite {
    expires_at: f64,
    invite: Value,
}

/// Read-only view of the plane for the policy.
struct View<'a> {
    seen: &'a SeenCache,
    welcomed: &'a BTreeSet<String>,
    invited: &'a BTreeMap<String, BTreeMap<String, f64>>,
    local_invites: &'a BTreeMap<String, LocalInvite>,
}

impl PlaneView for View<'_> {
    fn is_seen(&self, key: &str, now_ms: u64) -> bool {
        self.seen.contains(key, now_ms)
    }
    fn seen_has_room(&self, now_ms: u64) -> bool {
        self.seen.has_room(now_ms)
    }
    fn is_welcomed(&self, channel: &str) -> bool {
        self.welcomed.contains(channel)
    }
    fn is_invited(&self, channel: &str, key: &str, now_ms: u64) -> bool {
        self.invited
            .get(channel)
            .and_then(|m| m.get(key))
            .is_some_and(|exp| *exp > now_ms as f64)
    }
    fn is_locally_invited(&self, channel: &str, now_ms: u64) -> bool {
        self.local_invites
            .get(channel)
            .is_some_and(|l| l.expires_at > now_ms as f64)
    }
}

/// The sidechannel plane of one peer. See the crate documentation for how to drive it.
pub struct Sidechannel {
    policy: Policy,
    keypair: KeyPair,
    channels: BTreeSet<String>,
    conns: BTreeMap<ConnId, Conn>,
    seen: SeenCache,
    welcomed: BTreeSet<String>,
    welcomes: BTreeMap<String, Value>,
    config_welcomes: BTreeMap<String, Value>,
    invited: BTreeMap<String, BTreeMap<String, f64>>,
    local_invites: BTreeMap<String, LocalInvite>,
    blocked_keys: BTreeMap<String, u64>,
    out: VecDeque<Output>,
    rng: u64,
    stats: Stats,
}

impl std::fmt::Debug for Sidechannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidechannel")
            .field("self_key", &self.policy.self_key())
            .field("channels", &self.channels)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Sidechannel {
    /// A plane for the peer with `keypair` (its swarm identity and message signer). Joins
    /// the entry channel and `config.channels` (invite-only ones we cannot join are
    /// skipped) and verifies the configured welcomes; drain [`Sidechannel::poll_output`]
    /// for the resulting `Joined` events.
    pub fn new(config: SidechannelConfig, keypair: KeyPair) -> Result<Self, ConfigError> {
        let self_key = hex::encode(keypair.public_key);
        let policy = Policy::new(config, &self_key)?;
        let cfg = policy.config().clone();
        let mut seed = [0u8; 8];
        intercom_crypto::random_bytes(&mut seed);
        let mut plane = Sidechannel {
            seen: SeenCache::new(cfg.max_seen, cfg.max_message_age_ms),
            policy,
            keypair,
            channels: BTreeSet::new(),
            conns: BTreeMap::new(),
            welcomed: BTreeSet::new(),
            welcomes: BTreeMap::new(),
            config_welcomes: BTreeMap::new(),
            invited: BTreeMap::new(),
            local_invites: BTreeMap::new(),
            blocked_keys: BTreeMap::new(),
            out: VecDeque::new(),
            rng: u64::from_le_bytes(seed),
            stats: Stats::default(),
        };
        for (channel, welcome) in &cfg.welcome_by_channel {
            let channel = js::trim(channel);
            match plane.policy.verify_welcome(welcome, channel) {
                Ok(()) => {
                    plane
                        .config_welcomes
                        .insert(channel.to_owned(), welcome.clone());
                    plane.welcomes.insert(channel.to_owned(), welcome.clone());
                    plane.welcomed.insert(channel.to_owned());
                }
                Err(e) => tracing::warn!(channel, error = %e, "configured welcome ignored"),
            }
        }
        let entry = plane.policy.entry_channel().to_owned();
        for name in std::iter::once(&entry).chain(cfg.channels.iter()) {
            if let Err(e) = plane.join(0, name) {
                tracing::warn!(channel = %name, error = %e, "initial channel not joined");
            }
        }
        Ok(plane)
    }

    /// Seeds the generator of message-id suffixes (for reproducible simulations).
    pub fn seed_ids(&mut self, seed: u64) {
        self.rng = seed;
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Our key, lower-case hex (`from` of our payloads).
    pub fn self_key(&self) -> &str {
        self.policy.self_key()
    }

    /// Whether `channel` is joined.
    pub fn is_joined(&self, channel: &str) -> bool {
        self.channels.contains(js::trim(channel))
    }

    /// Whether the runtime should accept a remote-initiated protomux channel with this
    /// protocol name (the reference pairs only joined channels).
    pub fn accepts_protocol(&self, protocol: &str) -> Option<&str> {
        let name = protocol.strip_prefix("sidechannel/")?;
        self.channels.get(name).map(String::as_str)
    }

    /// The welcome known for `channel` (configured, created or received).
    pub fn welcome(&self, channel: &str) -> Option<&Value> {
        self.welcomes.get(js::trim(channel))
    }

    /// Whether `channel` is welcomed (or needs no welcome).
    pub fn is_welcomed(&self, channel: &str) -> bool {
        let c = js::trim(channel);
        !self.policy.welcome_required(c) || self.welcomed.contains(c) || self.policy.self_owns(c)
    }

    /// Next output, if any. Drain after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        Stats {
            channels: self.channels.iter().cloned().collect(),
            connections: self.conns.len(),
            seen: self.seen.len(),
            seen_bytes: self.seen.heap_bytes(),
            seen_refused: self.seen.refused(),
            blocked_peers: self.blocked_keys.len(),
            ..self.stats.clone()
        }
    }

    // ----- channels -----

    /// Joins `name` (`addChannel`): `Ok(true)` when newly joined. Emits `Joined` and an
    /// `OpenChannel` per connection.
    pub fn join(&mut self, now_ms: u64, name: &str) -> Result<bool, JoinError> {
        let channel = js::trim(name).to_owned();
        if channel.is_empty() {
            return Err(JoinError::EmptyChannel);
        }
        if self.channels.contains(&channel) {
            return Ok(false);
        }
        if self.policy.invite_required(&channel)
            && !self.policy.self_is_inviter()
            && !self.view().is_locally_invited(&channel, now_ms)
        {
            return Err(JoinError::InviteRequired(channel));
        }
        if self.channels.len() >= self.policy.config().max_channels {
            return Err(JoinError::TooManyChannels);
        }
        self.channels.insert(channel.clone());
        self.push(Output::Event(SidechannelEvent::Joined {
            topic: payload::topic(&channel),
            channel: channel.clone(),
        }));
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.open_for(id, &channel);
        }
        Ok(true)
    }

    /// Leaves `name` (`removeChannel`): closes its protomux channels and forgets its
    /// invites and learned welcome. `Ok(false)` when it was not joined.
    pub fn leave(&mut self, name: &str) -> Result<bool, JoinError> {
        let channel = js::trim(name).to_owned();
        if channel.is_empty() {
            return Err(JoinError::EmptyChannel);
        }
        if self.policy.is_entry(&channel) {
            return Err(JoinError::EntryChannel);
        }
        if !self.channels.remove(&channel) {
            return Ok(false);
        }
        let mut closes = Vec::new();
        for (id, conn) in &mut self.conns {
            if conn.channels.remove(&channel).is_some() {
                closes.push(*id);
            }
        }
        for conn in closes {
            self.push(Output::CloseChannel {
                conn,
                channel: channel.clone(),
            });
        }
        self.invited.remove(&channel);
        self.local_invites.remove(&channel);
        self.welcomes.remove(&channel);
        self.welcomed.remove(&channel);
        if let Some(w) = self.config_welcomes.get(&channel).cloned() {
            self.welcomes.insert(channel.clone(), w);
            self.welcomed.insert(channel.clone());
        }
        self.push(Output::Event(SidechannelEvent::Left {
            topic: payload::topic(&channel),
            channel,
        }));
        Ok(true)
    }

    // ----- connections -----

    /// A swarm connection to the peer `remote_key` (its Noise static key) is up. Emits an
    /// `OpenChannel` per joined channel.
    pub fn on_connection(&mut self, conn: ConnId, remote_key: [u8; 32]) -> Result<(), ConnError> {
        if self.conns.contains_key(&conn) {
            return Err(ConnError::Duplicate(conn));
        }
        if self.conns.len() >= self.policy.config().max_connections {
            return Err(ConnError::TooMany);
        }
        self.conns.insert(
            conn,
            Conn {
                remote_key: hex::encode(remote_key),
                channels: BTreeMap::new(),
                limiter: None,
            },
        );
        let channels: Vec<String> = self.channels.iter().cloned().collect();
        for channel in channels {
            self.open_for(conn, &channel);
        }
        Ok(())
    }

    /// The protomux channel of `channel` on `conn` is open (either side initiated). The
    /// owner sends its welcome, an invitee its `auth`.
    pub fn on_channel_open(&mut self, now_ms: u64, conn: ConnId, channel: &str) {
        let channel = js::trim(channel).to_owned();
        if !self.channels.contains(&channel) {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.channels.entry(channel.clone()).or_default().open = true;
        self.send_welcome(now_ms, conn, &channel);
        self.send_auth(now_ms, conn, &channel);
    }

    /// The protomux channel of `channel` on `conn` closed. The runtime may reopen it (the
    /// reference retries up to five times with a growing delay).
    pub fn on_channel_closed(&mut self, conn: ConnId, channel: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.channels.remove(js::trim(channel));
        }
    }

    /// The connection closed. A block in force outlives it (keyed by the peer's key).
    pub fn on_disconnect(&mut self, conn: ConnId) {
        // A block was recorded by peer key when it happened (`remember_block`).
        self.conns.remove(&conn);
    }

    fn open_for(&mut self, conn: ConnId, channel: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.channels.contains_key(channel) {
            return;
        }
        c.channels.insert(channel.to_owned(), ChanRecord::default());
        self.push(Output::OpenChannel {
            conn,
            channel: channel.to_owned(),
            protocol: payload::protocol(channel),
        });
    }

    fn remember_block(&mut self, now_ms: u64, key: &str, until: u64) {
        let cap = self.policy.config().max_blocked_keys;
        self.blocked_keys.retain(|_, u| *u > now_ms);
        self.blocked_keys.insert(key.to_owned(), until);
        while self.blocked_keys.len() > cap {
            // Evict the block that ends first.
            let Some(k) = self
                .blocked_keys
                .iter()
                .min_by_key(|(_, u)| **u)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.blocked_keys.remove(&k);
        }
    }

    // ----- receiving -----

    /// A message (type 0 body) arrived on `channel` from `conn`.
    pub fn on_message(&mut self, now_ms: u64, conn: ConnId, channel: &str, bytes: &[u8]) {
        let inbound = Inbound::decode(bytes, self.policy.config().max_message_bytes);
        self.on_inbound(now_ms, conn, channel, inbound);
    }

    /// A message already decoded with [`Inbound::decode`] (its signature possibly checked
    /// with [`Inbound::verify_ahead`]) arrived on `channel` from `conn`. The plane applies
    /// its own size limit again, so a reader may decode with a stale limit.
    pub fn on_inbound(&mut self, now_ms: u64, conn: ConnId, channel: &str, inbound: Inbound) {
        let channel = js::trim(channel).to_owned();
        let Some((remote_key, limiter)) = self
            .conns
            .get(&conn)
            .map(|c| (c.remote_key.clone(), c.limiter.clone()))
        else {
            self.report_drop(&channel, conn, DropReason::UnknownConnection);
            return;
        };
        if !self.channels.contains(&channel) {
            self.report_drop(&channel, conn, DropReason::NotJoined);
            return;
        }
        let limiter = limiter.or_else(|| {
            let until = *self.blocked_keys.get(&remote_key)?;
            let mut l = RateLimiter::new(now_ms, self.policy.config());
            l.blocked_until = until;
            Some(l)
        });
        let verdict = {
            let view = self.view();
            let ctx = CheckCtx {
                now_ms,
                channel: &channel,
                remote_key: &remote_key,
                limiter: limiter.as_ref(),
                view: &view,
            };
            self.policy.check(&inbound, &ctx)
        };
        let Ok(payload) = inbound.payload else {
            self.apply(now_ms, conn, &channel, &remote_key, &verdict);
            if let Some(reason) = verdict.drop_reason() {
                self.report_drop(&channel, conn, reason.clone());
            }
            return;
        };
        if !self.apply(now_ms, conn, &channel, &remote_key, &verdict) {
            // The policy saw room in the dedupe cache; should it be full after all, the
            // message is not delivered without its id remembered.
            self.report_drop(&channel, conn, DropReason::DedupeFull);
            return;
        }
        let from = payload.from_key();
        match &verdict.action {
            Action::Drop(reason) => {
                if *reason == DropReason::DedupeFull {
                    self.seen.note_refused();
                }
                tracing::debug!(%conn, channel, reason = reason.code(), "sidechannel drop");
                self.report_drop(&channel, conn, reason.clone());
                return;
            }
            Action::Deliver => {
                self.stats.delivered += 1;
                self.push(Output::Event(SidechannelEvent::Message {
                    channel: channel.clone(),
                    payload: payload.clone(),
                    from: from.clone(),
                    conn,
                }));
            }
            Action::Open { target } => {
                self.push(Output::Event(SidechannelEvent::OpenRequested {
                    channel: target.clone(),
                    via: channel.clone(),
                    from: from.clone(),
                    conn,
                }));
                if self.policy.config().auto_join_on_open && !self.is_joined(target) {
                    match self.join(now_ms, target) {
                        Ok(true) => self.push(Output::Event(SidechannelEvent::AutoJoin {
                            channel: target.clone(),
                        })),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::debug!(channel = %target, error = %e, "auto-join refused")
                        }
                    }
                }
            }
            Action::Auth | Action::Ignore => {}
        }
        if let Some(ttl) = verdict.relay_ttl {
            self.relay(now_ms, conn, &channel, &payload, ttl);
        }
    }

    fn view(&self) -> View<'_> {
        View {
            seen: &self.seen,
            welcomed: &self.welcomed,
            invited: &self.invited,
            local_invites: &self.local_invites,
        }
    }

    /// Applies the verdict's effects; `false` when its id could not be remembered.
    fn apply(
        &mut self,
        now_ms: u64,
        conn: ConnId,
        channel: &str,
        remote_key: &str,
        verdict: &Verdict,
    ) -> bool {
        let fx = &verdict.effects;
        if let Some(l) = &fx.limiter {
            let newly_blocked = l.blocked_until > now_ms
                && self
                    .conns
                    .get(&conn)
                    .and_then(|c| c.limiter.as_ref())
                    .is_none_or(|old| old.blocked_until != l.blocked_until);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.limiter = Some(l.clone());
            }
            if newly_blocked {
                tracing::info!(%conn, peer = remote_key, until = l.blocked_until, "sidechannel rate-limit block");
                self.remember_block(now_ms, remote_key, l.blocked_until);
            }
        }
        for (ch, welcome) in &fx.welcomes {
            self.remember_welcome(ch, welcome);
        }
        let mut authorized_here = false;
        for grant in &fx.invites {
            let newly = !self.view().is_invited(&grant.channel, &grant.key, now_ms);
            self.remember_invite(now_ms, &grant.channel, &grant.key, grant.expires_at);
            if newly && grant.channel == channel && grant.key == remote_key {
                authorized_here = true;
            }
        }
        let remembered = match &fx.seen {
            Some((key, ts)) => self.seen.insert(key, *ts, now_ms),
            None => true,
        };
        if authorized_here {
            self.push(Output::Event(SidechannelEvent::PeerAuthorized {
                channel: channel.to_owned(),
                conn,
                peer: remote_key.to_owned(),
            }));
            // The reference sends the owner's welcome only when the channel opens; a peer
            // authorised afterwards would never get it, so send it now.
            self.send_welcome(now_ms, conn, channel);
        }
        remembered
    }

    fn remember_welcome(&mut self, channel: &str, welcome: &Value) {
        let bound = self.policy.config().max_channels.saturating_mul(2);
        if !self.channels.contains(channel) && self.welcomes.len() >= bound {
            return;
        }
        self.welcomes.insert(channel.to_owned(), welcome.clone());
        if self.welcomed.insert(channel.to_owned()) {
            self.push(Output::Event(SidechannelEvent::Welcomed {
                channel: channel.to_owned(),
            }));
        }
    }

    fn remember_invite(&mut self, now_ms: u64, channel: &str, key: &str, expires_at: f64) {
        let cfg = self.policy.config();
        let (cap, channel_cap) = (
            cfg.max_invites_per_channel,
            cfg.max_channels.saturating_mul(2),
        );
        if !self.invited.contains_key(channel) && self.invited.len() >= channel_cap {
            return;
        }
        let map = self.invited.entry(channel.to_owned()).or_default();
        map.retain(|_, exp| *exp > now_ms as f64);
        map.insert(key.to_owned(), expires_at);
        while map.len() > cap {
            let Some(k) = map
                .iter()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&k);
        }
    }

    fn relay(&mut self, now_ms: u64, origin: ConnId, channel: &str, payload: &Payload, ttl: f64) {
        let relayed = payload.relayed(ttl, self.policy.self_key());
        let author = payload.from_key();
        let first = payload.origin_key();
        let targets: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| {
                **id != origin
                    && c.channels.get(channel).is_some_and(|r| r.open)
                    && Some(&c.remote_key) != author.as_ref()
                    && Some(&c.remote_key) != first.as_ref()
                    && self.remote_authorized(channel, &c.remote_key, now_ms)
            })
            .map(|(id, _)| *id)
            .collect();
        if targets.is_empty() {
            return;
        }
        let bytes: Arc<[u8]> = relayed.encode().into();
        for conn in targets {
            self.stats.relayed += 1;
            self.push(Output::Send {
                conn,
                channel: channel.to_owned(),
                bytes: bytes.clone(),
            });
        }
    }

    fn remote_authorized(&self, channel: &str, remote_key: &str, now_ms: u64) -> bool {
        !self.policy.invite_required(channel)
            || self.policy.is_inviter(remote_key)
            || self.view().is_invited(channel, remote_key, now_ms)
    }

    fn report_drop(&mut self, channel: &str, conn: ConnId, reason: DropReason) {
        self.stats.dropped += 1;
        *self
            .stats
            .dropped_by_reason
            .entry(reason.code())
            .or_default() += 1;
        self.push(Output::Event(SidechannelEvent::Dropped {
            channel: channel.to_owned(),
            conn,
            reason,
        }));
    }

    fn push(&mut self, o: Output) {
        if self.out.len() >= self.policy.config().max_queued_outputs {
            self.stats.outputs_discarded += 1;
            return;
        }
        self.out.push_back(o);
    }

    // ----- sending -----

    fn next_suffix(&mut self) -> String {
        // splitmix64: ids only need to be unique, like the reference's Math.random.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        payload::id_suffix(z ^ (z >> 31))
    }

    fn params(
        &mut self,
        now_ms: u64,
        channel: &str,
        message: Value,
        invite: Option<Value>,
    ) -> PrepareParams {
        let id_suffix = self.next_suffix();
        let cfg = self.policy.config();
        PrepareParams {
            channel: channel.to_owned(),
            message,
            ts: now_ms,
            ttl: cfg.relay_ttl,
            invite,
            pow_difficulty: self
                .policy
                .pow_required(channel)
                .then_some(cfg.pow_difficulty),
            id_suffix,
        }
    }

    fn control_payload(&mut self, now_ms: u64, channel: &str, message: Value) -> Payload {
        let params = self.params(now_ms, channel, message, None);
        payload::prepare(&self.keypair, params)
    }

    fn send_welcome(&mut self, now_ms: u64, conn: ConnId, channel: &str) {
        if !self.policy.self_owns(channel) {
            return;
        }
        let Some(welcome) = self.welcomes.get(channel).cloned() else {
            return;
        };
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if !c
            .channels
            .get(channel)
            .is_some_and(|r| r.open && !r.welcome_sent)
        {
            return;
        }
        // Invite-only: no control payloads to unauthorised peers.
        if !self.remote_authorized(channel, &c.remote_key, now_ms) {
            return;
        }
        let mut msg = Map::new();
        msg.insert("control".into(), Value::String("welcome".into()));
        msg.insert("welcome".into(), welcome);
        let p = self.control_payload(now_ms, channel, Value::Object(msg));
        self.send_control(now_ms, conn, channel, &p);
        if let Some(r) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.channels.get_mut(channel))
        {
            r.welcome_sent = true;
        }
    }

    fn send_auth(&mut self, now_ms: u64, conn: ConnId, channel: &str) {
        if !self.policy.invite_required(channel) || self.policy.self_is_inviter() {
            return;
        }
        let Some(mut local) = self
            .local_invites
            .get(channel)
            .filter(|l| l.expires_at > now_ms as f64)
            .map(|l| l.invite.clone())
        else {
            return;
        };
        // The auth goes to every peer on the channel, authorised or not; the welcome the
        // invite may embed is not needed to prove it and stays private.
        if let Value::Object(m) = &mut local {
            m.remove("welcome");
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if !c
            .channels
            .get(channel)
            .is_some_and(|r| r.open && !r.auth_sent)
        {
            return;
        }
        let mut msg = Map::new();
        msg.insert("control".into(), Value::String("auth".into()));
        msg.insert("invite".into(), local);
        let p = self.control_payload(now_ms, channel, Value::Object(msg));
        self.send_control(now_ms, conn, channel, &p);
        if let Some(r) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.channels.get_mut(channel))
        {
            r.auth_sent = true;
        }
    }

    fn send_control(&mut self, now_ms: u64, conn: ConnId, channel: &str, p: &Payload) {
        // Our own ids only guard against our copies coming back, which `OwnMessage`
        // catches anyway: a full cache may refuse them.
        self.seen.insert(&p.dedupe_key(channel), now_ms, now_ms);
        self.stats.sent += 1;
        self.push(Output::Send {
            conn,
            channel: channel.to_owned(),
            bytes: p.encode().into(),
        });
    }

    fn accept_local_invite(
        &mut self,
        now_ms: u64,
        invite: &Value,
        channel: &str,
    ) -> Result<(), CredentialError> {
        let expires_at =
            self.policy
                .verify_invite(invite, channel, self.policy.self_key(), now_ms)?;
        if !self.local_invites.contains_key(channel)
            && self.local_invites.len() >= self.policy.config().max_channels.saturating_mul(2)
        {
            // Keep the newest: drop the invite expiring first.
            if let Some(k) = self
                .local_invites
                .iter()
                .min_by(|a, b| a.1.expires_at.total_cmp(&b.1.expires_at))
                .map(|(k, _)| k.clone())
            {
                self.local_invites.remove(&k);
            }
        }
        self.local_invites.insert(
            channel.to_owned(),
            LocalInvite {
                expires_at,
                invite: invite.clone(),
            },
        );
        if let Some(w) = credentials::embedded_welcome(invite) {
            if self.policy.verify_welcome(w, channel).is_ok() {
                let w = w.clone();
                self.remember_welcome(channel, &w);
            }
        }
        Ok(())
    }

    /// Stores an invite and/or welcome for `channel` (`acceptInvite`, `/sc_join --invite`).
    /// Unlike the reference, invalid credentials are reported instead of ignored.
    pub fn accept_invite(
        &mut self,
        now_ms: u64,
        channel: &str,
        invite: Option<&Value>,
        welcome: Option<&Value>,
    ) -> Result<AcceptReport, AcceptError> {
        let channel = js::trim(channel).to_owned();
        if channel.is_empty() {
            return Err(AcceptError::EmptyChannel);
        }
        let mut report = AcceptReport::default();
        if let Some(invite) = invite {
            self.accept_local_invite(now_ms, invite, &channel)
                .map_err(AcceptError::Invite)?;
            report.invited = true;
        }
        if let Some(welcome) = welcome {
            self.policy
                .verify_welcome(welcome, &channel)
                .map_err(AcceptError::Welcome)?;
            self.remember_welcome(&channel, welcome);
        }
        report.welcomed = self.is_welcomed(&channel);
        Ok(report)
    }

    /// Creates a welcome for `channel` signed by us (`/sc_welcome`). When we are the
    /// configured owner it is stored and auto-sent to peers that open the channel.
    pub fn create_welcome(&mut self, now_ms: u64, channel: &str, text: &str) -> Value {
        let welcome = credentials::create_welcome(&self.keypair, channel, text, now_ms);
        let channel = js::trim(channel);
        if self.policy.verify_welcome(&welcome, channel).is_ok() {
            self.remember_welcome(channel, &welcome);
        }
        welcome
    }

    /// Creates an invite for `invitee` (`/sc_invite`): `ttl_ms` defaults to the configured
    /// invite TTL, `welcome` to the stored welcome of the channel.
    pub fn create_invite(
        &mut self,
        now_ms: u64,
        channel: &str,
        invitee: &str,
        ttl_ms: Option<u64>,
        welcome: Option<Value>,
    ) -> Result<Value, CredentialError> {
        let channel = js::trim(channel);
        let welcome = welcome.or_else(|| self.welcomes.get(channel).cloned());
        let ttl = ttl_ms.unwrap_or(self.policy.config().invite_ttl_ms);
        credentials::create_invite(&self.keypair, channel, invitee, ttl, welcome, now_ms)
    }

    /// Sends `message` on `channel` (`broadcast`) to every authorised peer whose channel is
    /// open. Runs the proof of work inline; use [`Sidechannel::begin_broadcast`] to move it
    /// off the event loop.
    pub fn broadcast(
        &mut self,
        now_ms: u64,
        channel: &str,
        message: Value,
        invite: Option<Value>,
    ) -> Result<BroadcastReport, SendError> {
        let job = self.begin_broadcast(now_ms, channel, message, invite)?;
        let prepared = job.run();
        self.finish_broadcast(now_ms, prepared)
    }

    /// The state-checking first half of a broadcast: send-time policy (joined, owner-only,
    /// size, at least one peer) and invite acceptance. The returned job is pure.
    pub fn begin_broadcast(
        &mut self,
        now_ms: u64,
        channel: &str,
        message: Value,
        invite: Option<Value>,
    ) -> Result<BroadcastJob, SendError> {
        let channel = js::trim(channel).to_owned();
        if channel.is_empty() {
            return Err(SendError::EmptyChannel);
        }
        if !self.channels.contains(&channel) {
            return Err(SendError::NotJoined(channel));
        }
        let is_auth = is_auth_control(&message);
        if self.policy.owner_write_only(&channel) && !is_auth && !self.policy.self_owns(&channel) {
            return Err(SendError::OwnerOnly);
        }
        if let Some(inv) = invite.as_ref().filter(|i| js::truthy(i)) {
            self.accept_local_invite(now_ms, inv, &channel)
                .map_err(SendError::Invite)?;
        }
        let params = self.params(now_ms, &channel, message, invite);
        let pow_difficulty = params.pow_difficulty;
        let unsigned = payload::unsigned(&self.keypair.public_key, params);
        let max = self.policy.config().max_message_bytes;
        // Reject before the proof of work: the signature alone adds a fixed length.
        let floor = unsigned.js_len() + payload::SIGNATURE_FIELD_LEN;
        if floor > max {
            return Err(SendError::Oversize { bytes: floor, max });
        }
        let (peers, unauthorized, not_open) = self.targets(now_ms, &channel, is_auth);
        if peers.is_empty() {
            return Err(SendError::NoPeers {
                unauthorized,
                not_open,
            });
        }
        Ok(BroadcastJob {
            keypair: self.keypair.clone(),
            payload: unsigned,
            pow_difficulty,
            channel,
        })
    }

    /// The second half of a broadcast: size check, dedupe registration, fan-out.
    pub fn finish_broadcast(
        &mut self,
        now_ms: u64,
        prepared: PreparedBroadcast,
    ) -> Result<BroadcastReport, SendError> {
        let channel = prepared.channel;
        if !self.channels.contains(&channel) {
            return Err(SendError::NotJoined(channel));
        }
        let p = prepared.payload;
        let text = p.to_json();
        let bytes_len = text.len();
        let max = self.policy.config().max_message_bytes;
        if bytes_len > max {
            return Err(SendError::Oversize {
                bytes: bytes_len,
                max,
            });
        }
        let is_auth = p.control() == Some("auth");
        let (peers, unauthorized, not_open) = self.targets(now_ms, &channel, is_auth);
        self.seen.insert(&p.dedupe_key(&channel), now_ms, now_ms);
        if peers.is_empty() {
            return Err(SendError::NoPeers {
                unauthorized,
                not_open,
            });
        }
        let bytes: Arc<[u8]> = Payload::encode_text(&text).into();
        for conn in &peers {
            self.stats.sent += 1;
            self.push(Output::Send {
                conn: *conn,
                channel: channel.clone(),
                bytes: bytes.clone(),
            });
        }
        Ok(BroadcastReport {
            id: p.id().map(js::to_string).unwrap_or_default(),
            peers: peers.len(),
            unauthorized,
            not_open,
            bytes: bytes_len,
        })
    }

    /// (open authorised peers, unauthorised count, not-yet-open count).
    fn targets(&self, now_ms: u64, channel: &str, is_auth: bool) -> (Vec<ConnId>, usize, usize) {
        let mut peers = Vec::new();
        let (mut unauthorized, mut not_open) = (0, 0);
        for (id, c) in &self.conns {
            if !is_auth && !self.remote_authorized(channel, &c.remote_key, now_ms) {
                unauthorized += 1;
            } else if c.channels.get(channel).is_some_and(|r| r.open) {
                peers.push(*id);
            } else {
                not_open += 1;
            }
        }
        (peers, unauthorized, not_open)
    }

    /// Asks peers on `via` (default: the entry channel) to open `channel` (`requestOpen`,
    /// `/sc_open`). The request carries a welcome (supplied, embedded in the invite, or the
    /// one we know) and the invite, if any.
    pub fn request_open(
        &mut self,
        now_ms: u64,
        channel: &str,
        via: Option<&str>,
        invite: Option<Value>,
        welcome: Option<Value>,
    ) -> Result<BroadcastReport, SendError> {
        let target = js::trim(channel).to_owned();
        if target.is_empty() {
            return Err(SendError::EmptyChannel);
        }
        let via = via
            .map(js::trim)
            .filter(|v| !v.is_empty())
            .unwrap_or(self.policy.entry_channel())
            .to_owned();
        let invite = invite.filter(js::truthy);
        if let Some(inv) = &invite {
            self.accept_local_invite(now_ms, inv, &target)
                .map_err(SendError::Invite)?;
        }
        let welcome = welcome
            .filter(js::truthy)
            .or_else(|| {
                invite
                    .as_ref()
                    .and_then(credentials::embedded_welcome)
                    .cloned()
            })
            .or_else(|| self.welcomes.get(&target).cloned());
        match &welcome {
            Some(w) => {
                self.policy
                    .verify_welcome(w, &target)
                    .map_err(SendError::Welcome)?;
                self.remember_welcome(&target, w);
            }
            None if self.policy.welcome_required(&target) => return Err(SendError::MissingWelcome),
            None => {}
        }
        let mut msg = Map::new();
        msg.insert("control".into(), Value::String("open_channel".into()));
        msg.insert("channel".into(), Value::String(target));
        if let Some(inv) = invite {
            msg.insert("invite".into(), inv);
        }
        if let Some(w) = welcome {
            msg.insert("welcome".into(), w);
        }
        self.broadcast(now_ms, &via, Value::Object(msg), None)
    }
}

/// `String(message.control || '') === 'auth'`.
fn is_auth_control(message: &Value) -> bool {
    js::get(message, "control")
        .filter(|c| js::truthy(c))
        .is_some_and(|c| js::to_string(c) == "auth")
}

#[cfg(test)]
mod tests;
