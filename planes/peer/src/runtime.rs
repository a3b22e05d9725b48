//! The runtime task that owns the sidechannel plane, and [`PeerHandle`], its command surface.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use intercom_crypto::KeyPair;
use intercom_protomux::Mux;
use intercom_sidechannel::{
    payload, AcceptError, BroadcastReport, ConfigError, ConnId, CredentialError, DropReason,
    JoinError, Output, PreparedBroadcast, SendError, Sidechannel, SidechannelConfig,
    SidechannelEvent, Stats,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::congestion::Congestion;
use crate::counters::{role_of, PeerCounters};
use crate::events::{EventSink, PeerEvent};
use crate::network::{Connection, ConnectionSink, Discovery};
use crate::tasks::{self, ChannelTask, ConnCtl, Internal};

/// Settings of a [`PeerRuntime`]: the plane's configuration plus the runtime's bounds.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The sidechannel plane's options (the `--sidechannel-*` flags).
    pub sidechannel: SidechannelConfig,
    /// Commands from handles that may wait for the runtime task.
    pub command_queue: usize,
    /// Events from connection and channel tasks that may wait for the runtime task; a full
    /// queue makes those tasks wait, which stops reading from the peers (backpressure).
    pub internal_queue: usize,
    /// New connections that may wait for the runtime task.
    pub connection_queue: usize,
    /// Messages read, decoded and signature-checked ahead that may wait for the runtime
    /// task, over all channels; more wait unread (backpressure to the peers).
    pub decoded_queue: usize,
    /// Frames queued per channel for its writer; more are dropped and reported. While a
    /// queue is more than three quarters full the runtime takes no new command (local
    /// sends wait for the network instead of being dropped).
    pub channel_send_queue: usize,
    /// How long a nearly full writer queue may hold commands back without its peer taking
    /// a single frame before that peer is treated as stalled (frames to it are dropped).
    pub send_stall_limit: Duration,
    /// Mux operations (pair, unpair, reject) queued per connection.
    pub conn_ctl_queue: usize,
    /// Attempts to reopen a channel the peer rejected (the reference's five).
    pub open_retries: u32,
    /// Delay before retry `n` is `n ×` this (the reference's 100 ms).
    pub open_retry_step: Duration,
    /// A failure this long after the previous one starts a fresh retry burst (2 s in JS).
    pub retry_burst_reset: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            sidechannel: SidechannelConfig::default(),
            command_queue: 64,
            internal_queue: 1024,
            connection_queue: 16,
            decoded_queue: 256,
            channel_send_queue: 256,
            send_stall_limit: Duration::from_secs(1),
            conn_ctl_queue: 256,
            open_retries: 5,
            open_retry_step: Duration::from_millis(100),
            retry_burst_reset: Duration::from_secs(2),
        }
    }
}

/// Why a runtime operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The runtime task has stopped.
    #[error("the peer runtime has stopped")]
    Stopped,
    /// The plane's configuration is unusable.
    #[error("sidechannel config: {0}")]
    Config(#[from] ConfigError),
    /// Joining (or leaving) was refused.
    #[error("{0}")]
    Join(#[from] JoinError),
    /// Sending was refused.
    #[error("{0}")]
    Send(#[from] SendError),
    /// An invite or welcome given with the command is not valid.
    #[error("{0}")]
    Accept(#[from] AcceptError),
    /// Creating a credential failed.
    #[error("{0}")]
    Credential(#[from] CredentialError),
    /// Something inside the runtime failed (a panicked proof-of-work task).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a send did. A send that reached nobody still succeeds, with `peers == 0`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SendOutcome {
    /// The payload id, when a payload was built.
    pub id: Option<String>,
    /// Peers the message was queued for.
    pub peers: usize,
    /// Connected peers skipped as unauthorised for the channel.
    pub unauthorized: usize,
    /// Connected peers whose channel is not open yet.
    pub not_open: usize,
    /// Payload size in bytes (0 when nothing was built).
    pub bytes: usize,
}

impl From<BroadcastReport> for SendOutcome {
    fn from(r: BroadcastReport) -> Self {
        SendOutcome {
            id: Some(r.id),
            peers: r.peers,
            unauthorized: r.unauthorized,
            not_open: r.not_open,
            bytes: r.bytes,
        }
    }
}

/// Counters and sizes of the runtime and its plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    /// The plane's statistics.
    pub sidechannel: Stats,
    /// Live connections.
    pub connections: usize,
    /// The public keys (hex) of the connected peers, sorted, each once.
    pub peers: Vec<String>,
    /// Protomux channels open (over all connections).
    pub open_channels: usize,
    /// Whether the network adapter reaches other peers.
    pub networked: bool,
    /// Frames dropped because a channel's writer queue was full.
    pub send_queue_full: u64,
    /// Frames dropped because their channel was not open.
    pub send_not_open: u64,
    /// Connections refused (too many).
    pub refused_connections: u64,
    /// Channel opens retried after a rejection.
    pub open_retries: u64,
    /// Channels given up after the retries.
    pub open_gave_up: u64,
}

type Reply<T> = oneshot::Sender<Result<T, PeerError>>;

enum Command {
    Join {
        channel: String,
        invite: Option<Value>,
        welcome: Option<Value>,
        reply: Reply<bool>,
    },
    Leave {
        channel: String,
        reply: Reply<bool>,
    },
    Send {
        channel: String,
        message: Value,
        invite: Option<Value>,
        welcome: Option<Value>,
        reply: Reply<SendOutcome>,
    },
    Open {
        channel: String,
        via: Option<String>,
        invite: Option<Value>,
        welcome: Option<Value>,
        reply: Reply<SendOutcome>,
    },
    CreateInvite {
        channel: String,
        invitee: String,
        ttl_ms: Option<u64>,
        welcome: Option<Value>,
        reply: Reply<Value>,
    },
    CreateWelcome {
        channel: String,
        text: String,
        reply: Reply<Value>,
    },
    Welcome {
        channel: String,
        reply: Reply<Option<Value>>,
    },
    Stats {
        reply: Reply<RuntimeStats>,
    },
    AddSink(Box<dyn EventSink>),
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable handle to a running [`PeerRuntime`].
#[derive(Clone)]
pub struct PeerHandle {
    commands: mpsc::Sender<Command>,
    connections: mpsc::Sender<Connection>,
    public_key: [u8; 32],
    entry_channel: Arc<str>,
    networked: bool,
    counters: Arc<PeerCounters>,
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandle")
            .field("public_key", &hex::encode(self.public_key))
            .finish_non_exhaustive()
    }
}

impl PeerHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| PeerError::Stopped)?;
        rx.await.map_err(|_| PeerError::Stopped)?
    }

    /// Our public key (the swarm identity and message signer).
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// Our public key, lower-case hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key)
    }

    /// The entry channel (`0000intercom`).
    pub fn entry_channel(&self) -> &str {
        &self.entry_channel
    }

    /// Whether the network adapter reaches other peers.
    pub fn is_networked(&self) -> bool {
        self.networked
    }

    /// Where the network adapter hands in connections.
    pub fn connector(&self) -> ConnectionSink {
        ConnectionSink {
            tx: self.connections.clone(),
        }
    }

    /// Joins `channel` (`/sc_join`, bridge `join`) after accepting the invite and/or
    /// welcome, if given. `Ok(false)`: already joined.
    pub async fn join(
        &self,
        channel: &str,
        invite: Option<Value>,
        welcome: Option<Value>,
    ) -> Result<bool, PeerError> {
        let channel = channel.to_owned();
        self.call(|reply| Command::Join {
            channel,
            invite,
            welcome,
            reply,
        })
        .await
    }

    /// Leaves `channel`. `Ok(false)`: it was not joined.
    pub async fn leave(&self, channel: &str) -> Result<bool, PeerError> {
        let channel = channel.to_owned();
        self.call(|reply| Command::Leave { channel, reply }).await
    }

    /// Broadcasts `message` on `channel` (`/sc_send`, bridge `send`), joining it first when
    /// needed. A welcome without an invite is accepted for the channel first; an invite is
    /// accepted and attached to the payload.
    pub async fn send(
        &self,
        channel: &str,
        message: Value,
        invite: Option<Value>,
        welcome: Option<Value>,
    ) -> Result<SendOutcome, PeerError> {
        let channel = channel.to_owned();
        self.call(|reply| Command::Send {
            channel,
            message,
            invite,
            welcome,
            reply,
        })
        .await
    }

    /// Asks peers on `via` (default: the entry channel) to open `channel` (`/sc_open`,
    /// bridge `open`).
    pub async fn request_open(
        &self,
        channel: &str,
        via: Option<&str>,
        invite: Option<Value>,
        welcome: Option<Value>,
    ) -> Result<SendOutcome, PeerError> {
        let channel = channel.to_owned();
        let via = via.map(str::to_owned);
        self.call(|reply| Command::Open {
            channel,
            via,
            invite,
            welcome,
            reply,
        })
        .await
    }

    /// Signs an invite for `invitee` (`/sc_invite`); `ttl_ms` defaults to the configured
    /// invite TTL, `welcome` to the welcome we know for the channel.
    pub async fn create_invite(
        &self,
        channel: &str,
        invitee: &str,
        ttl_ms: Option<u64>,
        welcome: Option<Value>,
    ) -> Result<Value, PeerError> {
        let (channel, invitee) = (channel.to_owned(), invitee.to_owned());
        self.call(|reply| Command::CreateInvite {
            channel,
            invitee,
            ttl_ms,
            welcome,
            reply,
        })
        .await
    }

    /// Signs a welcome for `channel` (`/sc_welcome`); kept and auto-sent when we own it.
    pub async fn create_welcome(&self, channel: &str, text: &str) -> Result<Value, PeerError> {
        let (channel, text) = (channel.to_owned(), text.to_owned());
        self.call(|reply| Command::CreateWelcome {
            channel,
            text,
            reply,
        })
        .await
    }

    /// The welcome known for `channel`, if any.
    pub async fn welcome(&self, channel: &str) -> Result<Option<Value>, PeerError> {
        let channel = channel.to_owned();
        self.call(|reply| Command::Welcome { channel, reply }).await
    }

    /// Per-channel, per-reason and per-role counters, readable without a round trip to
    /// the runtime task (the metrics endpoint reads them at scrape time).
    pub fn counters(&self) -> &Arc<PeerCounters> {
        &self.counters
    }

    /// Counters and sizes.
    pub async fn stats(&self) -> Result<RuntimeStats, PeerError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Adds an event consumer; it sees every event from then on.
    pub async fn add_sink(&self, sink: impl EventSink) -> Result<(), PeerError> {
        self.commands
            .send(Command::AddSink(Box::new(sink)))
            .await
            .map_err(|_| PeerError::Stopped)
    }

    /// Closes every connection and stops the runtime task.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

/// Starts runtime tasks.
#[derive(Debug)]
pub struct PeerRuntime;

impl PeerRuntime {
    /// Creates the plane for `keypair` and spawns the runtime task (inside a tokio
    /// runtime). The task ends after [`PeerHandle::shutdown`] or once every handle is gone.
    pub fn spawn(
        config: PeerConfig,
        keypair: KeyPair,
        discovery: impl Discovery,
    ) -> Result<(PeerHandle, JoinHandle<()>), PeerError> {
        let public_key = keypair.public_key;
        let plane = Sidechannel::new(config.sidechannel.clone(), keypair)?;
        let entry_channel: Arc<str> = plane.policy().entry_channel().into();
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue.max(1));
        let (conn_tx, conn_rx) = mpsc::channel(config.connection_queue.max(1));
        let (internal_tx, internal_rx) = mpsc::channel(config.internal_queue.max(1));
        let networked = discovery.is_networked();
        let congestion = Congestion::new(
            config.channel_send_queue.max(1),
            PROOF_JOBS,
            config.send_stall_limit,
        );
        let counters = Arc::new(PeerCounters::default());
        let rt = Runtime {
            counters: counters.clone(),
            relaying: false,
            congestion,
            decoded: Arc::new(Semaphore::new(config.decoded_queue.max(1))),
            proof_jobs: 0,
            cfg: config,
            plane,
            discovery: Box::new(discovery),
            conns: HashMap::new(),
            next_conn: 1,
            next_gen: 1,
            internal: internal_tx,
            sinks: Vec::new(),
            stats: RuntimeStats {
                networked,
                ..RuntimeStats::default()
            },
        };
        let task = tokio::spawn(rt.run(cmd_rx, conn_rx, internal_rx));
        Ok((
            PeerHandle {
                commands: cmd_tx,
                connections: conn_tx,
                public_key,
                entry_channel,
                networked,
                counters,
            },
            task,
        ))
    }
}

/// Milliseconds since the Unix epoch: the plane's clock (payload timestamps are JS
/// `Date.now()` values).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct ChanHandle {
    outgoing: mpsc::Sender<Arc<[u8]>>,
    // Dropping it tells the channel task to close the channel.
    _close: oneshot::Sender<()>,
}

/// The runtime's view of one sidechannel protocol channel on one connection.
struct Slot {
    /// Identifies the current channel task (or pending retry); stale events are ignored.
    gen: u64,
    /// `None` while waiting for a retry.
    handle: Option<ChanHandle>,
    opened: bool,
    attempts: u32,
    last_fail: Option<Instant>,
    /// The peer opened the protocol while our channel was still busy: reopen as soon as
    /// the current one is gone.
    remote_open_pending: bool,
}

struct ConnState {
    peer: String,
    mux: Mux,
    ctl: mpsc::Sender<ConnCtl>,
    paired: HashSet<Arc<str>>,
    channels: HashMap<Arc<str>, Slot>,
    /// Shared with the channel tasks: check signatures as messages are read. Cleared while
    /// the plane drops this peer's messages for rate, set again once one is delivered.
    verify_ahead: Arc<AtomicBool>,
    /// `client`, `server` or `other` (for the connection counters).
    role: &'static str,
}

impl ConnState {
    fn control(&self, cmd: ConnCtl) {
        if let Err(e) = self.ctl.try_send(cmd) {
            tracing::warn!(peer = %self.peer, error = %e, "mux control queue full; operation dropped");
        }
    }
}

struct Runtime {
    cfg: PeerConfig,
    plane: Sidechannel,
    discovery: Box<dyn Discovery>,
    conns: HashMap<ConnId, ConnState>,
    next_conn: u64,
    next_gen: u64,
    internal: mpsc::Sender<Internal>,
    sinks: Vec<Box<dyn EventSink>>,
    stats: RuntimeStats,
    congestion: Congestion,
    /// Permits for messages decoded ahead of the runtime task ([`PeerConfig::decoded_queue`]).
    decoded: Arc<Semaphore>,
    /// Proof-of-work jobs running; at [`PROOF_JOBS`] no command is taken.
    proof_jobs: usize,
    counters: Arc<PeerCounters>,
    /// Set while the plane handles a received message: frames it queues then are relays.
    relaying: bool,
}

/// Proof-of-work jobs that may run at once. Each one's frame reaches the writer queues
/// after the command that started it, so the congestion headroom is at least this.
const PROOF_JOBS: usize = 8;

impl Runtime {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut connections: mpsc::Receiver<Connection>,
        mut internal: mpsc::Receiver<Internal>,
    ) {
        self.drain();
        let mut done: Option<oneshot::Sender<()>> = None;
        loop {
            let room = self.congestion.pending();
            let congested = room.is_some() || self.proof_jobs >= PROOF_JOBS;
            tokio::select! {
                Some(ev) = internal.recv() => self.on_internal(ev),
                () = async { if let Some(room) = room { room.wait().await } }, if congested => {}
                cmd = commands.recv(), if !congested => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        done = Some(reply);
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(conn) = connections.recv() => self.on_connection(conn),
            }
            self.drain();
        }
        self.close_all();
        tracing::debug!("peer runtime stopped");
        if let Some(reply) = done {
            let _ = reply.send(());
        }
    }

    fn close_all(&mut self) {
        for (_, conn) in self.conns.drain() {
            let mux = conn.mux.clone();
            tokio::spawn(async move { mux.close().await });
        }
    }

    fn publish(&mut self, event: PeerEvent) {
        for sink in &mut self.sinks {
            sink.deliver(&event);
        }
    }

    fn set_verify_ahead(&self, conn: ConnId, on: bool) {
        if let Some(c) = self.conns.get(&conn) {
            c.verify_ahead.store(on, Ordering::Relaxed);
        }
    }

    fn peer_of(&self, conn: ConnId) -> Option<String> {
        self.conns.get(&conn).map(|c| c.peer.clone())
    }

    /// Runs the plane's outputs.
    fn drain(&mut self) {
        while let Some(out) = self.plane.poll_output() {
            match out {
                Output::OpenChannel { conn, channel, .. } => self.open_channel(conn, &channel),
                Output::CloseChannel { conn, channel } => self.close_channel(conn, &channel),
                Output::Send {
                    conn,
                    channel,
                    bytes,
                } => {
                    if self.relaying {
                        self.counters.relayed(&channel);
                    }
                    self.send_bytes(conn, &channel, bytes)
                }
                Output::Event(event) => self.on_plane_event(event),
            }
        }
    }

    fn on_plane_event(&mut self, event: SidechannelEvent) {
        let conn = match &event {
            SidechannelEvent::Joined { channel, topic } => {
                tracing::info!(channel, "sidechannel joined");
                self.discovery.join(*topic, channel);
                None
            }
            SidechannelEvent::Left { channel, topic } => {
                tracing::info!(channel, "sidechannel left");
                self.discovery.leave(*topic, channel);
                None
            }
            SidechannelEvent::Message { conn, channel, .. } => {
                tracing::debug!(%conn, channel, "sidechannel message");
                self.counters.received(channel);
                self.set_verify_ahead(*conn, true);
                Some(*conn)
            }
            SidechannelEvent::Dropped {
                conn,
                channel,
                reason,
            } => {
                tracing::debug!(%conn, channel, reason = reason.code(), "sidechannel drop");
                self.counters.dropped(channel, reason.code());
                if matches!(reason, DropReason::RateLimited | DropReason::Blocked) {
                    self.set_verify_ahead(*conn, false);
                }
                Some(*conn)
            }
            SidechannelEvent::OpenRequested { conn, channel, .. } => {
                tracing::info!(%conn, channel, "sidechannel open requested");
                Some(*conn)
            }
            SidechannelEvent::PeerAuthorized { conn, .. } => Some(*conn),
            _ => None,
        };
        let peer = conn.and_then(|c| self.peer_of(c));
        self.publish(PeerEvent::Sidechannel { event, peer });
    }

    // ----- connections -----

    fn on_connection(&mut self, c: Connection) {
        let peer = hex::encode(c.remote_public_key);
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        if let Err(e) = self.plane.on_connection(id, c.remote_public_key) {
            tracing::warn!(%peer, error = %e, "connection refused");
            self.stats.refused_connections += 1;
            c.mux.destroy();
            self.publish(PeerEvent::Refused { peer });
            return;
        }
        tracing::info!(conn = %id, %peer, label = %c.label, "peer connected");
        let role = role_of(&c.label);
        self.counters.connection_opened(role);
        let (ctl_tx, ctl_rx) = mpsc::channel(self.cfg.conn_ctl_queue.max(1));
        tokio::spawn(tasks::connection_task(
            id,
            c.mux.clone(),
            c.events,
            ctl_rx,
            self.internal.clone(),
            c.remote_opens,
        ));
        self.conns.insert(
            id,
            ConnState {
                peer: peer.clone(),
                mux: c.mux,
                ctl: ctl_tx,
                paired: HashSet::new(),
                channels: HashMap::new(),
                verify_ahead: Arc::new(AtomicBool::new(true)),
                role,
            },
        );
        self.publish(PeerEvent::Connected {
            conn: id,
            peer,
            label: c.label,
        });
    }

    fn on_internal(&mut self, ev: Internal) {
        let now = now_ms();
        match ev {
            Internal::ChannelOpened { conn, channel, gen } => {
                let Some(slot) = self.slot(conn, &channel, gen) else {
                    return;
                };
                slot.opened = true;
                slot.attempts = 0;
                slot.last_fail = None;
                tracing::debug!(%conn, %channel, "sidechannel protocol open");
                self.plane.on_channel_open(now, conn, &channel);
            }
            Internal::ChannelFailed { conn, channel, gen } => {
                self.on_channel_failed(conn, channel, gen)
            }
            Internal::ChannelClosed { conn, channel, gen } => {
                let Some(slot) = self.slot(conn, &channel, gen) else {
                    return;
                };
                let reopen = slot.remote_open_pending;
                tracing::debug!(%conn, %channel, "sidechannel protocol closed by peer");
                self.plane.on_channel_closed(conn, &channel);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.channels.remove(&channel);
                }
                if reopen && self.plane.is_joined(&channel) {
                    self.start_channel(conn, channel, 0);
                }
            }
            Internal::Messages {
                conn,
                channel,
                gen,
                inbound,
                ..
            } => {
                for message in inbound {
                    // Checked per message: one of them may close the channel.
                    if !self.slot(conn, &channel, gen).is_some_and(|s| s.opened) {
                        break;
                    }
                    self.plane.on_inbound(now, conn, &channel, message);
                    self.relaying = true;
                    self.drain();
                    self.relaying = false;
                }
            }
            Internal::RemoteOpen { conn, protocol } => self.on_remote_open(conn, &protocol),
            Internal::MuxClosed { conn, error } => {
                if let Some(c) = self.conns.remove(&conn) {
                    match &error {
                        Some(e) => {
                            tracing::info!(%conn, peer = %c.peer, error = %e, "peer connection failed")
                        }
                        None => tracing::info!(%conn, peer = %c.peer, "peer disconnected"),
                    }
                    self.plane.on_disconnect(conn);
                    self.counters.connection_closed(c.role);
                    self.publish(PeerEvent::Disconnected { conn, peer: c.peer });
                }
            }
            Internal::RetryOpen { conn, channel, gen } => {
                let due = self
                    .slot(conn, &channel, gen)
                    .is_some_and(|s| s.handle.is_none());
                if due && self.plane.is_joined(&channel) {
                    let attempts = self.slot(conn, &channel, gen).map_or(0, |s| s.attempts);
                    self.stats.open_retries += 1;
                    self.start_channel(conn, channel, attempts);
                }
            }
            Internal::Prepared { prepared, reply } => {
                self.proof_jobs -= 1;
                let result = prepared.and_then(|p| self.finish_prepared(now, p));
                let _ = reply.send(result);
            }
        }
    }

    /// Sends a built payload to the channel's peers.
    fn finish_prepared(
        &mut self,
        now: u64,
        prepared: PreparedBroadcast,
    ) -> Result<SendOutcome, PeerError> {
        let channel = prepared.channel.clone();
        match self.plane.finish_broadcast(now, prepared) {
            Ok(report) => {
                self.counters.sent(&channel, report.peers);
                Ok(report.into())
            }
            Err(e) => send_result(e),
        }
    }

    /// The slot of `channel` on `conn` if `gen` is current.
    fn slot(&mut self, conn: ConnId, channel: &str, gen: u64) -> Option<&mut Slot> {
        self.conns
            .get_mut(&conn)?
            .channels
            .get_mut(channel)
            .filter(|s| s.gen == gen)
    }

    fn on_channel_failed(&mut self, conn: ConnId, channel: Arc<str>, gen: u64) {
        enum Next {
            Forget,
            StartNow(u32),
            Retry { attempt: u32, gen: u64 },
            GiveUp,
        }
        let joined = self.plane.is_joined(&channel);
        let (max, step, reset) = (
            self.cfg.open_retries,
            self.cfg.open_retry_step,
            self.cfg.retry_burst_reset,
        );
        let next_gen = self.next_gen;
        let next = {
            let Some(slot) = self.slot(conn, &channel, gen) else {
                return;
            };
            slot.handle = None;
            slot.opened = false;
            if !joined {
                Next::Forget
            } else if std::mem::take(&mut slot.remote_open_pending) {
                Next::StartNow(slot.attempts)
            } else {
                let now = Instant::now();
                if slot
                    .last_fail
                    .is_some_and(|t| now.duration_since(t) > reset)
                {
                    slot.attempts = 0;
                }
                slot.attempts += 1;
                slot.last_fail = Some(now);
                if slot.attempts <= max {
                    slot.gen = next_gen;
                    Next::Retry {
                        attempt: slot.attempts,
                        gen: next_gen,
                    }
                } else {
                    Next::GiveUp
                }
            }
        };
        match next {
            Next::Forget => self.forget_slot(conn, &channel),
            Next::StartNow(attempts) => self.start_channel(conn, channel, attempts),
            Next::Retry { attempt, gen } => {
                self.next_gen += 1;
                tracing::debug!(%conn, %channel, attempt, "sidechannel open rejected; retrying");
                tasks::schedule_retry(self.internal.clone(), step * attempt, conn, channel, gen);
            }
            Next::GiveUp => {
                tracing::debug!(%conn, %channel, "sidechannel open retries exceeded; waiting for the peer to open");
                self.stats.open_gave_up += 1;
                // The plane forgets the channel on this connection; a later open by the
                // peer (reported through the pairing) starts it again.
                self.plane.on_channel_closed(conn, &channel);
                self.forget_slot(conn, &channel);
            }
        }
    }

    fn forget_slot(&mut self, conn: ConnId, channel: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.channels.remove(channel);
        }
    }

    fn on_remote_open(&mut self, conn: ConnId, protocol: &str) {
        let Some(name) = self.plane.accepts_protocol(protocol).map(Arc::<str>::from) else {
            if let Some(c) = self.conns.get(&conn) {
                c.control(ConnCtl::Reject(protocol.to_owned()));
            }
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let attempts = match c.channels.get_mut(&name) {
            Some(slot) if slot.handle.is_some() => {
                slot.remote_open_pending = true;
                return;
            }
            Some(slot) => slot.attempts,
            None => 0,
        };
        self.start_channel(conn, name, attempts);
    }

    /// The plane wants `channel` open on `conn`.
    fn open_channel(&mut self, conn: ConnId, channel: &str) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.channels.get(channel).is_some_and(|s| s.handle.is_some()) {
            return;
        }
        self.start_channel(conn, channel.into(), 0);
    }

    /// Spawns a channel task for `channel` on `conn` (replacing any slot).
    fn start_channel(&mut self, conn: ConnId, channel: Arc<str>, attempts: u32) {
        let gen = self.next_gen;
        self.next_gen += 1;
        let queue = self.cfg.channel_send_queue.max(1);
        let internal = self.internal.clone();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let protocol = payload::protocol(&channel);
        if c.paired.insert(channel.clone()) {
            c.control(ConnCtl::Pair(protocol.clone()));
        }
        let (out_tx, out_rx) = mpsc::channel(queue);
        let (close_tx, close_rx) = oneshot::channel();
        tokio::spawn(tasks::channel_task(ChannelTask {
            mux: c.mux.clone(),
            conn,
            channel: channel.clone(),
            protocol,
            gen,
            outgoing: out_rx,
            close: close_rx,
            internal,
            max_message_bytes: self.plane.policy().config().max_message_bytes,
            verify_ahead: c.verify_ahead.clone(),
            decoded: self.decoded.clone(),
        }));
        c.channels.insert(
            channel,
            Slot {
                gen,
                handle: Some(ChanHandle {
                    outgoing: out_tx,
                    _close: close_tx,
                }),
                opened: false,
                attempts,
                last_fail: None,
                remote_open_pending: false,
            },
        );
    }

    fn close_channel(&mut self, conn: ConnId, channel: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // Dropping the slot's handle closes the channel.
        c.channels.remove(channel);
        if c.paired.remove(channel) {
            c.control(ConnCtl::Unpair(payload::protocol(channel)));
        }
    }

    fn send_bytes(&mut self, conn: ConnId, channel: &str, bytes: Arc<[u8]>) {
        let outcome = match self
            .conns
            .get(&conn)
            .and_then(|c| c.channels.get(channel))
            .filter(|s| s.opened)
            .and_then(|s| s.handle.as_ref())
        {
            Some(h) => match h.outgoing.try_send(bytes) {
                Ok(()) => {
                    self.congestion.after_send(&h.outgoing);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(_)) => "queue_full",
                Err(mpsc::error::TrySendError::Closed(_)) => "channel_not_open",
            },
            None => "channel_not_open",
        };
        if outcome == "queue_full" {
            self.stats.send_queue_full += 1;
            tracing::warn!(%conn, channel, "sidechannel writer queue full; frame dropped");
        } else {
            self.stats.send_not_open += 1;
        }
        self.publish(PeerEvent::SendDropped {
            conn,
            channel: channel.to_owned(),
            reason: outcome,
        });
    }

    // ----- commands -----

    fn on_command(&mut self, cmd: Command) {
        let now = now_ms();
        match cmd {
            Command::Join {
                channel,
                invite,
                welcome,
                reply,
            } => {
                let r = self.join(now, &channel, invite.as_ref(), welcome.as_ref());
                let _ = reply.send(r);
            }
            Command::Leave { channel, reply } => {
                let _ = reply.send(self.plane.leave(&channel).map_err(PeerError::from));
            }
            Command::Send {
                channel,
                message,
                invite,
                welcome,
                reply,
            } => {
                if let Err(e) = self.prepare_send(now, &channel, invite.as_ref(), welcome.as_ref())
                {
                    let _ = reply.send(Err(e));
                    return;
                }
                match self.plane.begin_broadcast(now, &channel, message, invite) {
                    // A signature alone costs less than the two task hops of a blocking
                    // thread, and signing here keeps a pipelined burst in order.
                    Ok(job) if !job.needs_proof_of_work() => {
                        let result = self.finish_prepared(now, job.run());
                        let _ = reply.send(result);
                    }
                    Ok(job) => {
                        self.proof_jobs += 1;
                        tasks::prepare_broadcast(self.internal.clone(), job, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(send_result(e));
                    }
                }
            }
            Command::Open {
                channel,
                via,
                invite,
                welcome,
                reply,
            } => {
                let via = via
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| self.plane.policy().entry_channel().to_owned());
                if !self.plane.is_joined(&via) {
                    if let Err(e) = self.plane.join(now, &via) {
                        let _ = reply.send(Err(e.into()));
                        return;
                    }
                }
                let r = match self
                    .plane
                    .request_open(now, &channel, Some(&via), invite, welcome)
                {
                    Ok(report) => Ok(report.into()),
                    Err(e) => send_result(e),
                };
                let _ = reply.send(r);
            }
            Command::CreateInvite {
                channel,
                invitee,
                ttl_ms,
                welcome,
                reply,
            } => {
                let r = self
                    .plane
                    .create_invite(now, &channel, &invitee, ttl_ms, welcome)
                    .map_err(PeerError::from);
                let _ = reply.send(r);
            }
            Command::CreateWelcome {
                channel,
                text,
                reply,
            } => {
                let _ = reply.send(Ok(self.plane.create_welcome(now, &channel, &text)));
            }
            Command::Welcome { channel, reply } => {
                let _ = reply.send(Ok(self.plane.welcome(&channel).cloned()));
            }
            Command::Stats { reply } => {
                let stats = RuntimeStats {
                    sidechannel: self.plane.stats(),
                    connections: self.conns.len(),
                    peers: {
                        let mut peers: Vec<String> =
                            self.conns.values().map(|c| c.peer.clone()).collect();
                        peers.sort();
                        peers.dedup();
                        peers
                    },
                    open_channels: self
                        .conns
                        .values()
                        .map(|c| c.channels.values().filter(|s| s.opened).count())
                        .sum(),
                    ..self.stats.clone()
                };
                let _ = reply.send(Ok(stats));
            }
            Command::AddSink(sink) => self.sinks.push(sink),
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    fn join(
        &mut self,
        now: u64,
        channel: &str,
        invite: Option<&Value>,
        welcome: Option<&Value>,
    ) -> Result<bool, PeerError> {
        if invite.is_some() || welcome.is_some() {
            self.plane.accept_invite(now, channel, invite, welcome)?;
        }
        Ok(self.plane.join(now, channel)?)
    }

    /// Before a send: accept the invite (so an invite-only channel can be joined) or the
    /// lone welcome, then join the channel if needed.
    fn prepare_send(
        &mut self,
        now: u64,
        channel: &str,
        invite: Option<&Value>,
        welcome: Option<&Value>,
    ) -> Result<(), PeerError> {
        match (invite, welcome) {
            (Some(inv), _) => {
                self.plane.accept_invite(now, channel, Some(inv), None)?;
            }
            (None, Some(w)) => {
                self.plane.accept_invite(now, channel, None, Some(w))?;
            }
            (None, None) => {}
        }
        if !self.plane.is_joined(channel) {
            self.plane.join(now, channel)?;
        }
        Ok(())
    }
}

/// A send that found no peer succeeds with `peers: 0`.
fn send_result(e: SendError) -> Result<SendOutcome, PeerError> {
    match e {
        SendError::NoPeers {
            unauthorized,
            not_open,
        } => Ok(SendOutcome {
            unauthorized,
            not_open,
            ..SendOutcome::default()
        }),
        e => Err(e.into()),
    }
}
