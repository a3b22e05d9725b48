//! The WebSocket server: accepts clients, drives one [`Session`] per connection and fans published events out.
//!
//! ```text
//!                      +-------------------- Bridge ---------------------+
//!   TcpListener ---->  | accept loop -> pending set (max_pending, evicts) |
//!                      |   upgrade (Origin check) -> hello -> auth       |
//!                      |     (throttled per source and globally)         |
//!                      |   auth_ok -> slot (semaphore: max_clients)      |
//!                      |   per client: reader task ── Session ── Backend |
//!                      |                  │ replies                      |
//!                      |                  v                              |
//!   Publisher ─try_send──> bounded queue (outbound_queue) ─> writer task ─> socket
//!                      +--------------------------------------------------+
//! ```
//!
//! Publishing never waits: each event is serialized once and `try_send`-ed to every matching client's bounded
//! queue. A client whose queue is full (it stopped reading) is disconnected instead of slowing anyone else down; a
//! writer that cannot flush its frames (up to 64 queued ones go out with one flush) within `write_timeout` is
//! disconnected too. Requests from one client are
//! handled in order, one at a time, so sends from one client reach the sidechannel in the order they were written.
//!
//! Until it authenticates, a connection is *pending* and costs little: no writer task, no queue, no slot among the
//! `max_clients` authenticated ones, at most `pre_auth_bytes` read. Pending connections (from TCP accept on,
//! upgraded or not) have their own budget, `max_pending`; when it is full the oldest pending connection of the
//! busiest source is closed to admit the new one, and each must authenticate within `auth_timeout` of its accept.
//! Wrong tokens are throttled across connections by [`AuthThrottle`]: while its buckets are empty, `auth`
//! requests wait (in arrival order, one queue per source) before their token is compared.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::tokio::{accept_hdr_async_with_config, TokioAdapter};
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::StatusCode;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Message, Utf8Bytes};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Number, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::backend::{Backend, DynBackend, InboxRequest, SubnetRequest};
use crate::error::{BridgeError, ErrorCode};
use crate::filter::{Filter, FilterScope};
use crate::guard::{source_key, AuthThrottle, AuthThrottleConfig, LogGate, PendingSet};
use crate::origin::{OriginPolicy, OriginVerdict};
use crate::protocol::{
    encode_reply, parse_frame, ClientMessage, DecodeError, ErrorReply, Event, Hello,
    Request as BridgeRequest, ServerMessage,
};
use crate::session::{
    error, Call, CloseReason, Outcome, RateLimiter, Session, SessionConfig, Step,
};

/// The reference's default port.
pub const DEFAULT_PORT: u16 = 49222;
/// Default cap on one incoming frame/message: 1 MiB of payload plus 64 KiB for the JSON envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024 + 64 * 1024;

/// Per-client command rate limit (token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained commands per second.
    pub per_second: u32,
    /// Commands allowed in a burst.
    pub burst: u32,
}

/// Bridge settings. `Default` gives the reference's defaults plus our bounds; a token must still be set.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Bind host (`--sc-bridge-host`, default `127.0.0.1`).
    pub host: String,
    /// Bind port (`--sc-bridge-port`, default 49222; 0 picks a free port).
    pub port: u16,
    /// Shared secret (`--sc-bridge-token-file`, `SC_BRIDGE_TOKEN`). Required unless `require_auth` is false; empty
    /// counts as unset; a token failing [`check_token`](crate::check_token) is refused by [`Bridge::bind`].
    pub token: Option<String>,
    /// Whether clients must `auth` before anything else (default true; the reference binary always sets true).
    pub require_auth: bool,
    /// Whether the `cli` command is served (`--sc-bridge-cli`, default false).
    pub cli_enabled: bool,
    /// Default word filter for new clients (`--sc-bridge-filter`).
    pub filter: String,
    /// Channels the filters apply to (`--sc-bridge-filter-channel`); `None` = all channels.
    pub filter_channels: Option<Vec<String>>,
    /// Startup info returned by `info`; when `None`, [`Backend::info`] is asked.
    pub info: Option<Value>,
    /// Largest accepted incoming frame or message, in bytes. Larger ones get `frame_too_large` and a close (1009).
    pub max_frame_bytes: usize,
    /// Concurrent authenticated clients. A client whose token is right while every slot is taken gets
    /// `too_many_clients` and close 1013. Unauthenticated connections never take one of these slots.
    pub max_clients: usize,
    /// Concurrent pending connections: accepted and not authenticated yet (still upgrading, or upgraded and
    /// waiting to `auth`). When full, the oldest pending connection of the source with the most pending ones is
    /// closed to admit the new one.
    pub max_pending: usize,
    /// Bytes a pending connection may send (its HTTP upgrade request included) before it authenticates; more
    /// closes it.
    pub pre_auth_bytes: usize,
    /// Throttle of wrong tokens across connections (per source and global); `None` disables.
    pub auth_throttle: Option<AuthThrottleConfig>,
    /// Browser origins allowed to connect (`--sc-bridge-origin`), as `scheme://host[:port]`. Upgrades without an
    /// `Origin` header (local agents) are always allowed; any other origin is refused with HTTP 403.
    pub allowed_origins: Vec<String>,
    /// Also allow the bridge's own origins (`http://<bound address>`, `http://localhost:<port>`): for a page
    /// served by the bridge itself. Default false.
    pub allow_own_origin: bool,
    /// Outbound frames queued per client before it is disconnected as a slow consumer.
    pub outbound_queue: usize,
    /// Outbound bytes queued per client before it is disconnected as a slow consumer.
    pub outbound_queue_bytes: usize,
    /// A connection must authenticate within this time of its TCP accept, or it gets `auth_timeout` and close
    /// 1008; `None` disables.
    pub auth_timeout: Option<Duration>,
    /// The HTTP upgrade must complete within this time of the TCP accept.
    pub handshake_timeout: Duration,
    /// One write (a frame, or up to 64 queued frames flushed together) must finish within this time or the
    /// client is disconnected.
    pub write_timeout: Duration,
    /// A backend call taking longer is answered with a `timeout` error.
    pub backend_timeout: Duration,
    /// Per-client command rate limit; `None` disables.
    pub rate_limit: Option<RateLimit>,
    /// Subscribed channels per client.
    pub max_subscriptions: usize,
    /// Wrong tokens tolerated per connection before it is closed; 0 disables the cap.
    pub max_auth_failures: u32,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            host: "127.0.0.1".to_owned(),
            port: DEFAULT_PORT,
            token: None,
            require_auth: true,
            cli_enabled: false,
            filter: String::new(),
            filter_channels: None,
            info: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_clients: 256,
            max_pending: 64,
            pre_auth_bytes: 64 * 1024,
            auth_throttle: Some(AuthThrottleConfig::default()),
            allowed_origins: Vec::new(),
            allow_own_origin: false,
            // Room for a burst of 10,000 events to an agent that reads a little slower than
            // the sidechannel delivers; the byte bound keeps large messages in check.
            outbound_queue: 16_384,
            outbound_queue_bytes: 16 << 20,
            auth_timeout: Some(Duration::from_secs(5)),
            handshake_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            backend_timeout: Duration::from_secs(60),
            // A guard against runaway agent loops, not a traffic shaper: one bridge client
            // must be able to push a 10,000-message burst at full sidechannel speed.
            rate_limit: Some(RateLimit {
                per_second: 50_000,
                burst: 20_000,
            }),
            max_subscriptions: 1024,
            max_auth_failures: 5,
        }
    }
}

/// What one [`Publisher::publish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Clients the event was queued for.
    pub delivered: usize,
    /// Ready clients skipped by their subscription or filter.
    pub filtered: usize,
    /// Clients disconnected because their queue was full.
    pub disconnected: usize,
}

/// Frames queued for a client's writer task.
#[derive(Debug)]
enum Outbound {
    Text(Utf8Bytes),
    Close(CloseCode, &'static str),
}

/// One connected client as seen by the publish path.
struct ClientHandle {
    session: Mutex<Session>,
    tx: mpsc::Sender<Outbound>,
    /// Bytes of the text frames in `tx` not yet taken by the writer.
    queued_bytes: AtomicUsize,
    kicked: AtomicBool,
    /// Kicked because its queue overflowed: the writer says so before closing.
    too_slow: AtomicBool,
    kick_notify: Notify,
}

impl ClientHandle {
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a text frame without waiting: `Full` when the frame or byte bound is hit.
    fn try_queue(
        &self,
        text: &Utf8Bytes,
        max_bytes: usize,
    ) -> Result<(), mpsc::error::TrySendError<()>> {
        let queued = self.queued_bytes.fetch_add(text.len(), Ordering::Relaxed);
        let result = if queued + text.len() > max_bytes {
            Err(mpsc::error::TrySendError::Full(()))
        } else {
            self.tx
                .try_send(Outbound::Text(text.clone()))
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => mpsc::error::TrySendError::Full(()),
                    mpsc::error::TrySendError::Closed(_) => mpsc::error::TrySendError::Closed(()),
                })
        };
        if result.is_err() {
            self.queued_bytes.fetch_sub(text.len(), Ordering::Relaxed);
        }
        result
    }

    /// Disconnects a client whose queue overflowed, telling it why (`slow_consumer`).
    fn kick_too_slow(&self) {
        self.too_slow.store(true, Ordering::SeqCst);
        self.kick();
    }

    fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        self.kick_notify.notify_waiters();
    }

    async fn kicked(&self) {
        loop {
            let notified = self.kick_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.kicked.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// State shared by the accept loop, the connections and every [`Publisher`].
struct Shared {
    scope: FilterScope,
    clients: Mutex<HashMap<u64, Arc<ClientHandle>>>,
    outbound_queue_bytes: usize,
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, HashMap<u64, Arc<ClientHandle>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cheap, cloneable handle for the runtime to push events to clients. Never blocks.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Delivers an event to every authenticated client whose subscription (and, for messages, filter) matches.
    pub fn publish(&self, event: Event) -> PublishReport {
        let subnet_only = matches!(event, Event::Subnet(_));
        let (channel, haystack, body) = match event {
            Event::Subnet(body) => (None, None, body.to_string()),
            Event::Message(m) => {
                let channel = m.channel.clone();
                let haystack = m.filter_text().to_lowercase();
                (
                    Some(channel),
                    Some(haystack),
                    encode_reply(None, &ServerMessage::SidechannelMessage(m)),
                )
            }
            Event::Drop(d) => (
                Some(d.channel.clone()),
                None,
                encode_reply(None, &ServerMessage::SidechannelDrop(d)),
            ),
            Event::Other { channel, body } => (channel, None, body.to_string()),
        };
        let text = Utf8Bytes::from(body);
        let mut report = PublishReport::default();
        let clients = self.shared.clients();
        for client in clients.values() {
            if client.kicked.load(Ordering::Relaxed) {
                continue;
            }
            {
                let session = client.session();
                if !session.is_ready() {
                    continue;
                }
                if subnet_only {
                    if !session.wants_subnet_events() {
                        report.filtered += 1;
                        continue;
                    }
                } else if !session.should_emit(
                    &self.shared.scope,
                    channel.as_deref(),
                    haystack.as_deref(),
                ) {
                    report.filtered += 1;
                    continue;
                }
            }
            match client.try_queue(&text, self.shared.outbound_queue_bytes) {
                Ok(()) => report.delivered += 1,
                Err(mpsc::error::TrySendError::Full(())) => {
                    tracing::warn!(
                        "sc-bridge: client outbound queue full; disconnecting slow consumer"
                    );
                    client.kick_too_slow();
                    report.disconnected += 1;
                }
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
        }
        report
    }

    /// Number of authenticated clients (every connected one when auth is not required).
    pub fn client_count(&self) -> usize {
        self.shared.clients().len()
    }
}

/// What the admission guards have done so far (see [`Bridge::guard_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardStats {
    /// Connections accepted and not authenticated yet.
    pub pending: usize,
    /// Authenticated clients.
    pub clients: usize,
    /// Pending connections closed to admit newer ones (the pending budget was full).
    pub pending_evicted: u64,
    /// Wrong tokens compared.
    pub auth_failures: u64,
    /// `auth` requests that had to wait for the throttle.
    pub auth_delayed: u64,
    /// Upgrades refused for their `Origin`.
    pub origin_refused: u64,
    /// Right tokens refused because every authenticated slot was taken.
    pub clients_refused: u64,
    /// Pending connections closed for sending more than `pre_auth_bytes`.
    pub pre_auth_overflows: u64,
}

#[derive(Default)]
struct Counters {
    pending_evicted: AtomicU64,
    auth_failures: AtomicU64,
    auth_delayed: AtomicU64,
    origin_refused: AtomicU64,
    clients_refused: AtomicU64,
    pre_auth_overflows: AtomicU64,
}

/// One warning per this interval and kind; the rest are counted into the next one.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Rate-limited warnings.
struct Warnings {
    evicted: LogGate,
    auth: LogGate,
    origin: LogGate,
}

/// The admission guards shared by the accept loop and the connections.
struct Guards {
    pending: Mutex<PendingSet<oneshot::Sender<()>>>,
    throttle: Option<Mutex<AuthThrottle>>,
    /// One FIFO queue of `auth` attempts per source; the head of each then queues on `turn`.
    queues: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
    turn: tokio::sync::Mutex<()>,
    slots: Arc<Semaphore>,
    origins: OriginPolicy,
    counters: Counters,
    warnings: Mutex<Warnings>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Guards {
    fn warnings(&self) -> MutexGuard<'_, Warnings> {
        lock(&self.warnings)
    }

    fn stats(&self, clients: usize) -> GuardStats {
        let c = &self.counters;
        GuardStats {
            pending: lock(&self.pending).len(),
            clients,
            pending_evicted: c.pending_evicted.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            auth_delayed: c.auth_delayed.load(Ordering::Relaxed),
            origin_refused: c.origin_refused.load(Ordering::Relaxed),
            clients_refused: c.clients_refused.load(Ordering::Relaxed),
            pre_auth_overflows: c.pre_auth_overflows.load(Ordering::Relaxed),
        }
    }

    /// Registers a new pending connection, evicting one if the budget is full; the receiver fires on eviction.
    fn admit(&self, id: u64, peer: SocketAddr) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let evicted = lock(&self.pending).admit(id, peer.ip(), tx);
        if let Some((victim, source, tx)) = evicted {
            drop(tx);
            self.counters
                .pending_evicted
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(id = victim, %source, "sc-bridge: pending budget full; evicted");
            if let Some(more) = self.warnings().evicted.check(Instant::now()) {
                tracing::warn!(
                    %source,
                    suppressed = more,
                    "sc-bridge: too many unauthenticated connections; closing the oldest ones"
                );
            }
        }
        rx
    }

    /// Evaluates an `auth` request once the throttle allows it: waits in this source's queue until the source's
    /// bucket holds a token, then in the global queue until the global bucket does (so a throttled source never
    /// holds up the others). A wrong token is charged to both; a right one is free.
    async fn attempt(
        &self,
        ip: IpAddr,
        session: &mut Session,
        cfg: &SessionConfig,
        req: BridgeRequest,
    ) -> Step {
        let Some(throttle) = &self.throttle else {
            return session.handle(cfg, req, true, now_ms());
        };
        let source = source_key(ip);
        let queue = {
            let mut queues = lock(&self.queues);
            if queues.len() >= 1024 && !queues.contains_key(&source) {
                queues.retain(|_, q| Arc::strong_count(q) > 1);
            }
            queues.entry(source).or_default().clone()
        };
        let mut delayed = false;
        let mut wait_for = |ready: &dyn Fn(&mut AuthThrottle, Instant) -> Result<(), Duration>| {
            let wait = ready(&mut lock(throttle), Instant::now());
            if wait.is_err() && !delayed {
                delayed = true;
                self.counters.auth_delayed.fetch_add(1, Ordering::Relaxed);
            }
            wait
        };
        // Only this source's queue head consumes its bucket, so once ready it stays ready.
        let _mine = queue.clone().lock_owned().await;
        while let Err(wait) = wait_for(&|t, now| t.ready_source(source, now)) {
            tokio::time::sleep(wait).await;
        }
        let _turn = self.turn.lock().await;
        while let Err(wait) = wait_for(&|t, now| t.ready_global(now)) {
            tokio::time::sleep(wait).await;
        }
        let step = session.handle(cfg, req, true, now_ms());
        if !session.is_authed() {
            let now = Instant::now();
            lock(throttle).fail(source, now);
            self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(more) = self.warnings().auth.check(now) {
                tracing::warn!(
                    %ip,
                    suppressed = more,
                    "sc-bridge: wrong auth token; failed attempts are throttled per source and globally"
                );
            }
        }
        drop(_turn);
        drop(_mine);
        drop(queue);
        let mut queues = lock(&self.queues);
        if queues
            .get(&source)
            .is_some_and(|q| Arc::strong_count(q) == 1)
        {
            queues.remove(&source);
        }
        step
    }

    /// The `Origin` check of an upgrade request: whether it may go on.
    fn check_origin(&self, req: &Request, peer: SocketAddr) -> bool {
        let origin = req
            .headers()
            .get("origin")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match self.origins.check(origin.as_deref()) {
            OriginVerdict::NoOrigin | OriginVerdict::Allowed => true,
            OriginVerdict::Refused => {
                self.counters.origin_refused.fetch_add(1, Ordering::Relaxed);
                let shown: String = origin.unwrap_or_default().chars().take(200).collect();
                if let Some(more) = self.warnings().origin.check(Instant::now()) {
                    tracing::warn!(
                        %peer,
                        origin = %shown,
                        suppressed = more,
                        "sc-bridge: refused a WebSocket upgrade from an origin not on the allow-list (--sc-bridge-origin)"
                    );
                }
                false
            }
        }
    }
}

/// A pending connection's place in the pending set; leaving it (auth or end) frees the place.
struct PendingTicket {
    guards: Arc<Guards>,
    id: u64,
    evicted: oneshot::Receiver<()>,
}

impl Drop for PendingTicket {
    fn drop(&mut self) {
        lock(&self.guards.pending).remove(self.id);
    }
}

/// [`Metered::budget`] once the connection authenticated.
const UNLIMITED: usize = usize::MAX;
/// [`Metered::budget`] once the connection read more than it was allowed.
const OVERFLOWED: usize = usize::MAX - 1;

/// A TCP stream that fails reads beyond a byte budget until the budget is lifted (at auth).
struct Metered {
    inner: TcpStream,
    /// Bytes still allowed; `usize::MAX` = unlimited.
    budget: Arc<AtomicUsize>,
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let overflow = || std::io::Error::other("pre-auth byte budget exceeded");
        if this.budget.load(Ordering::Relaxed) == OVERFLOWED {
            return Poll::Ready(Err(overflow()));
        }
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len() - before;
            match this.budget.load(Ordering::Relaxed) {
                UNLIMITED => {}
                left if read > left => {
                    this.budget.store(OVERFLOWED, Ordering::Relaxed);
                    return Poll::Ready(Err(overflow()));
                }
                left => this.budget.store(left - read, Ordering::Relaxed),
            }
        }
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Everything a connection task needs.
struct ConnCtx {
    session_cfg: SessionConfig,
    cfg: BridgeConfig,
    ws_cfg: WebSocketConfig,
    shared: Arc<Shared>,
    guards: Arc<Guards>,
    backend: Arc<dyn DynBackend>,
    cli_lock: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

/// A running SC-Bridge server.
pub struct Bridge {
    local_addr: SocketAddr,
    publisher: Publisher,
    guards: Arc<Guards>,
    shutdown_tx: watch::Sender<bool>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Validates the config, binds the listener and starts accepting clients. Must be called inside a tokio runtime.
    pub async fn bind(config: BridgeConfig, backend: impl Backend) -> Result<Bridge, BridgeError> {
        let mut config = config;
        config.token = config.token.filter(|t| !t.is_empty());
        if config.require_auth && config.token.is_none() {
            return Err(BridgeError::MissingToken);
        }
        if let Some(token) = &config.token {
            crate::token::check_token(token)?;
        }
        if config.max_clients == 0 {
            return Err(BridgeError::InvalidConfig("max_clients must be at least 1"));
        }
        if config.max_pending == 0 {
            return Err(BridgeError::InvalidConfig("max_pending must be at least 1"));
        }
        if config.pre_auth_bytes < 4096 {
            return Err(BridgeError::InvalidConfig(
                "pre_auth_bytes must be at least 4096",
            ));
        }
        if config.auth_throttle.is_some_and(|t| {
            [t.per_source, t.global]
                .iter()
                .any(|r| r.per_second == 0 || r.burst == 0)
        }) {
            return Err(BridgeError::InvalidConfig(
                "auth_throttle values must be at least 1",
            ));
        }
        // Validated before binding, so a bad entry never leaves a listener behind.
        OriginPolicy::new(&config.allowed_origins, None)?;
        if config.outbound_queue == 0 {
            return Err(BridgeError::InvalidConfig(
                "outbound_queue must be at least 1",
            ));
        }
        if config.outbound_queue_bytes < config.max_frame_bytes {
            return Err(BridgeError::InvalidConfig(
                "outbound_queue_bytes must be at least max_frame_bytes",
            ));
        }
        if config.max_frame_bytes < 1024 {
            return Err(BridgeError::InvalidConfig(
                "max_frame_bytes must be at least 1024",
            ));
        }
        if config
            .rate_limit
            .is_some_and(|r| r.per_second == 0 || r.burst == 0)
        {
            return Err(BridgeError::InvalidConfig(
                "rate_limit values must be at least 1",
            ));
        }
        let addr = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .await
            .map_err(|source| BridgeError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BridgeError::Bind { addr, source })?;
        if !local_addr.ip().is_loopback() {
            tracing::warn!(
                %local_addr,
                "sc-bridge: listening on a non-loopback address: other machines can reach the bridge and try \
                 tokens; bind 127.0.0.1 unless you mean it, and firewall the port"
            );
        }
        let origins = OriginPolicy::new(
            &config.allowed_origins,
            config.allow_own_origin.then_some(local_addr),
        )?;
        let now = Instant::now();
        let guards = Arc::new(Guards {
            pending: Mutex::new(PendingSet::new(config.max_pending)),
            throttle: config
                .auth_throttle
                .map(|t| Mutex::new(AuthThrottle::new(t, now))),
            queues: Mutex::new(HashMap::new()),
            turn: tokio::sync::Mutex::new(()),
            slots: Arc::new(Semaphore::new(config.max_clients)),
            origins,
            counters: Counters::default(),
            warnings: Mutex::new(Warnings {
                evicted: LogGate::new(WARN_INTERVAL),
                auth: LogGate::new(WARN_INTERVAL),
                origin: LogGate::new(WARN_INTERVAL),
            }),
        });

        let shared = Arc::new(Shared {
            scope: FilterScope::from_channels(config.filter_channels.as_deref()),
            clients: Mutex::new(HashMap::new()),
            outbound_queue_bytes: config.outbound_queue_bytes,
        });
        let session_cfg = SessionConfig {
            token: config.token.clone(),
            require_auth: config.require_auth,
            cli_enabled: config.cli_enabled,
            default_filter_raw: config.filter.clone(),
            default_filter: Filter::parse(&config.filter),
            max_subscriptions: config.max_subscriptions,
            max_auth_failures: config.max_auth_failures,
        };
        let ws_cfg = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(16 * 1024)
            .max_message_size(Some(config.max_frame_bytes))
            .max_frame_size(Some(config.max_frame_bytes));
        let ctx = Arc::new(ConnCtx {
            session_cfg,
            ws_cfg,
            shared: shared.clone(),
            guards: guards.clone(),
            backend: Arc::new(backend),
            cli_lock: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            cfg: config,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, ctx, shutdown_rx));
        tracing::info!(%local_addr, "sc-bridge listening");
        Ok(Bridge {
            local_addr,
            publisher: Publisher { shared },
            guards,
            shutdown_tx,
            accept_task: Some(accept_task),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle the runtime keeps to publish events.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Publishes an event (see [`Publisher::publish`]).
    pub fn publish(&self, event: Event) -> PublishReport {
        self.publisher.publish(event)
    }

    /// Number of authenticated clients (or connected ones, when auth is not required).
    pub fn client_count(&self) -> usize {
        self.publisher.client_count()
    }

    /// Number of connections accepted and not authenticated yet.
    pub fn pending_count(&self) -> usize {
        lock(&self.guards.pending).len()
    }

    /// What the admission guards (pending budget, auth throttle, origin check, client slots) have done.
    pub fn guard_stats(&self) -> GuardStats {
        self.guards.stats(self.client_count())
    }

    /// Stops accepting, sends every client a close frame (1001) and waits briefly for connections to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

/// How long connections get to say goodbye on shutdown before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a closing connection's writer may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// How long a client disconnected as too slow has to take what its socket still holds
/// and the reason.
const TOO_SLOW_GRACE: Duration = Duration::from_secs(2);

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ConnCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
                    let evicted = ctx.guards.admit(id, peer);
                    let ticket = PendingTicket { guards: ctx.guards.clone(), id, evicted };
                    conns.spawn(serve_conn(tcp, peer, ctx.clone(), shutdown.clone(), ticket));
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "sc-bridge: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    tracing::info!("sc-bridge stopped");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

type Ws = WebSocketStream<TokioAdapter<Metered>>;
type Sender = WebSocketSender<TokioAdapter<Metered>>;
type Receiver = WebSocketReceiver<TokioAdapter<Metered>>;

/// Frames a client's writer sends with one flush, at most.
const WRITE_BATCH: usize = 64;

async fn writer(
    mut sink: Sender,
    mut rx: mpsc::Receiver<Outbound>,
    client: Arc<ClientHandle>,
    write_timeout: Duration,
) {
    let mut next = None;
    loop {
        let out = match next.take() {
            Some(out) => out,
            None => tokio::select! {
                biased;
                () = client.kicked() => {
                    if client.too_slow.load(Ordering::SeqCst) {
                        say_too_slow(&mut sink).await;
                    }
                    break;
                }
                out = rx.recv() => match out {
                    Some(out) => out,
                    None => break,
                },
            },
        };
        match out {
            Outbound::Text(text) => {
                // This frame and the ones queued behind it go out with one flush; a close
                // waits for the next turn.
                let batch = async {
                    let mut text = text;
                    for fed in 1..=WRITE_BATCH {
                        client.queued_bytes.fetch_sub(text.len(), Ordering::Relaxed);
                        sink.feed(Message::Text(text)).await?;
                        if fed == WRITE_BATCH {
                            break;
                        }
                        text = match rx.try_recv() {
                            Ok(Outbound::Text(more)) => more,
                            Ok(close) => {
                                next = Some(close);
                                break;
                            }
                            Err(_) => break,
                        };
                    }
                    sink.flush().await
                };
                match tokio::time::timeout(write_timeout, batch).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "sc-bridge: write failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!("sc-bridge: write timed out; disconnecting slow consumer");
                        break;
                    }
                }
            }
            Outbound::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                };
                let _ = tokio::time::timeout(write_timeout, sink.close(Some(frame))).await;
                break;
            }
        }
    }
    client.kick();
}

/// Tells a client disconnected for not reading fast enough why (an `error` with code
/// `slow_consumer`, then close 1013), dropping what was still queued for it. The socket
/// may not take it; the connection ends either way.
async fn say_too_slow(sink: &mut Sender) {
    let error = ServerMessage::Error(ErrorReply::new(
        ErrorCode::SlowConsumer,
        "Disconnected: events were not read fast enough.",
    ));
    let frame = CloseFrame {
        code: CloseCode::Again,
        reason: Utf8Bytes::from_static("slow consumer"),
    };
    let farewell = async {
        sink.feed(Message::Text(encode_reply(None, &error).into()))
            .await?;
        sink.close(Some(frame)).await
    };
    let _ = tokio::time::timeout(TOO_SLOW_GRACE, farewell).await;
}

/// Why the read loop ended.
enum End {
    Done,
    Close(CloseCode, &'static str),
}

async fn serve_conn(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ConnCtx>,
    mut shutdown: watch::Receiver<bool>,
    mut ticket: PendingTicket,
) {
    let _ = tcp.set_nodelay(true);
    let accepted = tokio::time::Instant::now();
    let require_auth = ctx.session_cfg.require_auth;
    let budget = Arc::new(AtomicUsize::new(if require_auth {
        ctx.cfg.pre_auth_bytes
    } else {
        UNLIMITED
    }));
    let stream = Metered {
        inner: tcp,
        budget: budget.clone(),
    };
    let auth_deadline = ctx
        .cfg
        .auth_timeout
        .filter(|_| require_auth)
        .map(|t| accepted + t);
    let handshake_deadline = {
        let d = accepted + ctx.cfg.handshake_timeout;
        auth_deadline.map_or(d, |a| a.min(d))
    };
    let guards = ctx.guards.clone();
    // The callback's types are tungstenite's.
    #[allow(clippy::result_large_err)]
    let check_origin = move |req: &Request, resp: Response| {
        if guards.check_origin(req, peer) {
            return Ok(resp);
        }
        let mut refusal = ErrorResponse::new(Some("Origin not allowed.".to_owned()));
        *refusal.status_mut() = StatusCode::FORBIDDEN;
        Err(refusal)
    };
    let handshake = tokio::time::timeout_at(
        handshake_deadline,
        accept_hdr_async_with_config(stream, check_origin, Some(ctx.ws_cfg)),
    );
    let mut ws = tokio::select! {
        biased;
        _ = &mut ticket.evicted => return,
        _ = shutdown_signal(&mut shutdown) => return,
        done = handshake => match done {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                overflowed(&ctx, &budget);
                tracing::debug!(%peer, error = %e, "sc-bridge: handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "sc-bridge: handshake timed out");
                return;
            }
        },
    };
    let pre_auth_write = ctx.cfg.write_timeout.min(PRE_AUTH_WRITE_TIMEOUT);
    let hello = ServerMessage::Hello(hello(&ctx));
    if !say(&mut ws, encode_reply(None, &hello), pre_auth_write).await {
        return;
    }
    let mut session = Session::new(&ctx.session_cfg);
    let mut limiter = ctx
        .cfg
        .rate_limit
        .map(|r| RateLimiter::new(r.per_second, r.burst, Instant::now()));
    // The `auth_ok` (and its request id) waits until a client slot is ours.
    let mut auth_ok = None;
    if require_auth {
        let authed = pre_auth(
            &ctx,
            &mut ws,
            &mut session,
            &mut limiter,
            peer,
            auth_deadline,
            &mut shutdown,
            &mut ticket.evicted,
        )
        .await;
        match authed {
            Some(id) => auth_ok = Some(id),
            None => {
                overflowed(&ctx, &budget);
                return;
            }
        }
    }
    drop(ticket);
    budget.store(UNLIMITED, Ordering::Relaxed);
    let reply_id = auth_ok.clone().flatten();
    let Ok(permit) = ctx.guards.slots.clone().try_acquire_owned() else {
        ctx.guards
            .counters
            .clients_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, max_clients = ctx.cfg.max_clients, "sc-bridge: every client slot is taken; refusing an authenticated client");
        let msg = error(
            ErrorCode::TooManyClients,
            format!(
                "Too many clients (max {}); try again later.",
                ctx.cfg.max_clients
            ),
        );
        say_and_close(
            &mut ws,
            Some(encode_reply(reply_id.as_ref(), &msg)),
            CloseCode::Again,
            "too many clients",
            pre_auth_write,
        )
        .await;
        return;
    };
    if auth_ok.is_some()
        && !say(
            &mut ws,
            encode_reply(reply_id.as_ref(), &ServerMessage::AuthOk),
            pre_auth_write,
        )
        .await
    {
        return;
    }

    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(ctx.cfg.outbound_queue);
    let client = Arc::new(ClientHandle {
        session: Mutex::new(session),
        tx,
        queued_bytes: AtomicUsize::new(0),
        kicked: AtomicBool::new(false),
        too_slow: AtomicBool::new(false),
        kick_notify: Notify::new(),
    });
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let mut writer_task = tokio::spawn(writer(sink, rx, client.clone(), ctx.cfg.write_timeout));
    ctx.shared.clients().insert(id, client.clone());
    tracing::debug!(%peer, id, "sc-bridge: client connected");

    let end = read_loop(&ctx, &client, stream, limiter, &mut shutdown).await;

    ctx.shared.clients().remove(&id);
    drop(permit);
    if let End::Close(code, reason) = end {
        if !client.kicked.load(Ordering::SeqCst) {
            if code == CloseCode::Away {
                let error = ServerMessage::Error(ErrorReply::new(
                    ErrorCode::ShuttingDown,
                    "The bridge is shutting down.",
                ));
                let _ = client.try_queue(&encode_reply(None, &error).into(), usize::MAX);
            }
            let _ = client.tx.try_send(Outbound::Close(code, reason));
        }
    }
    // The writer ends once the queue is drained (or on its first failure); a kicked client gets no grace, except
    // to be told it was too slow.
    let grace = if client.too_slow.load(Ordering::SeqCst) {
        TOO_SLOW_GRACE
    } else if client.kicked.load(Ordering::SeqCst) {
        Duration::ZERO
    } else {
        CLOSE_GRACE
    };
    drop(client);
    if tokio::time::timeout(grace, &mut writer_task).await.is_err() {
        writer_task.abort();
    }
    tracing::debug!(%peer, id, "sc-bridge: client disconnected");
}

/// How long one write to a pending (unauthenticated) connection may take.
const PRE_AUTH_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts a pending connection that was closed for sending more than `pre_auth_bytes`.
fn overflowed(ctx: &ConnCtx, budget: &AtomicUsize) {
    if budget.load(Ordering::Relaxed) == OVERFLOWED {
        ctx.guards
            .counters
            .pre_auth_overflows
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends one text frame to a pending connection; false if it failed or took longer than `limit`.
async fn say(ws: &mut Ws, text: String, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, ws.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// Sends an optional last text frame and a close frame to a pending connection, within `limit`.
async fn say_and_close(
    ws: &mut Ws,
    text: Option<String>,
    code: CloseCode,
    reason: &'static str,
    limit: Duration,
) {
    let farewell = async {
        if let Some(text) = text {
            ws.feed(Message::Text(text.into())).await?;
        }
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        ws.close(Some(frame)).await
    };
    let _ = tokio::time::timeout(limit, farewell).await;
}

/// Resolves once the peer has closed its side (nothing left to read); stays pending while it has unread data.
async fn hung_up(ws: &Ws) {
    let tcp = &ws.get_ref().get_ref().inner;
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// What interrupted a pending connection's wait.
enum Interrupt {
    Evicted,
    Shutdown,
    Deadline,
}

/// Tells a pending connection why it is closed (nothing for an evicted one: it gets no more of our time).
async fn interrupted(ws: &mut Ws, why: Interrupt, limit: Duration) {
    let (msg, code, reason) = match why {
        Interrupt::Evicted => return,
        Interrupt::Shutdown => (
            error(ErrorCode::ShuttingDown, "The bridge is shutting down."),
            CloseCode::Away,
            "shutting down",
        ),
        Interrupt::Deadline => (
            error(ErrorCode::AuthTimeout, "Auth timeout."),
            CloseCode::Policy,
            "auth timeout",
        ),
    };
    say_and_close(ws, Some(encode_reply(None, &msg)), code, reason, limit).await;
}

/// The pending phase: answers requests (all `Unauthorized.` but `auth`) directly on the socket until the client
/// authenticates (`Some`, with the id of the `auth` request, whose `auth_ok` the caller sends once it holds a
/// client slot) or the connection ends (`None`): evicted, shut down, past its deadline, too many wrong tokens, over
/// its byte budget, or gone.
#[allow(clippy::too_many_arguments)]
async fn pre_auth(
    ctx: &ConnCtx,
    ws: &mut Ws,
    session: &mut Session,
    limiter: &mut Option<RateLimiter>,
    peer: SocketAddr,
    deadline: Option<tokio::time::Instant>,
    shutdown: &mut watch::Receiver<bool>,
    evicted: &mut oneshot::Receiver<()>,
) -> Option<Option<Number>> {
    let write = ctx.cfg.write_timeout.min(PRE_AUTH_WRITE_TIMEOUT);
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut *evicted => Err(Interrupt::Evicted),
            _ = shutdown_signal(shutdown) => Err(Interrupt::Shutdown),
            _ = sleep_until_opt(deadline) => Err(Interrupt::Deadline),
            frame = ws.next() => Ok(frame),
        };
        let text = match frame {
            Err(why) => {
                interrupted(ws, why, write).await;
                return None;
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })))) => {
                let msg = error(
                    ErrorCode::FrameTooLarge,
                    format!("Frame too large ({size} bytes; max {max_size})."),
                );
                let text = Some(encode_reply(None, &msg));
                say_and_close(ws, text, CloseCode::Size, "frame too large", write).await;
                return None;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(%peer, error = %e, "sc-bridge: read failed before auth");
                return None;
            }
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Binary(b)))) => match Utf8Bytes::try_from(b) {
                Ok(t) => t,
                Err(_) => {
                    let msg = error(ErrorCode::InvalidJson, DecodeError::InvalidJson.to_string());
                    if !say(ws, encode_reply(None, &msg), write).await {
                        return None;
                    }
                    continue;
                }
            },
            Ok(Some(Ok(_))) => continue,
        };
        let limited = limiter.as_mut().is_some_and(|l| !l.allow(Instant::now()));
        let (reply_id, step) = match parse_frame(text.as_str()) {
            Err(e) => (None, Step::Reply(error(e.code(), e.to_string()))),
            Ok(req) if limited => (
                req.id,
                Step::Reply(error(ErrorCode::RateLimited, "Rate limited.")),
            ),
            Ok(req) if matches!(req.message, ClientMessage::Auth { .. }) => {
                let id = req.id.clone();
                let attempt = ctx
                    .guards
                    .attempt(peer.ip(), session, &ctx.session_cfg, req);
                let step = tokio::select! {
                    biased;
                    _ = &mut *evicted => Err(Interrupt::Evicted),
                    _ = shutdown_signal(shutdown) => Err(Interrupt::Shutdown),
                    _ = sleep_until_opt(deadline) => Err(Interrupt::Deadline),
                    // A guesser that fired and left gives up its place in the queue.
                    _ = hung_up(ws) => Err(Interrupt::Evicted),
                    step = attempt => Ok(step),
                };
                match step {
                    Ok(step) => (id, step),
                    Err(why) => {
                        interrupted(ws, why, write).await;
                        return None;
                    }
                }
            }
            Ok(req) => {
                let id = req.id.clone();
                let ready = ctx.backend.is_ready();
                (id, session.handle(&ctx.session_cfg, req, ready, now_ms()))
            }
        };
        if session.is_authed() {
            return Some(reply_id);
        }
        let (reply, close) = match step {
            Step::Reply(m) => (m, false),
            Step::ReplyAndClose(m, _) => (m, true),
            // Unreachable before auth (every command is refused), and never run unauthenticated.
            Step::Call(_) => (error(ErrorCode::Unauthorized, "Unauthorized."), false),
        };
        let text = encode_reply(reply_id.as_ref(), &reply);
        if close {
            let reason = "too many auth failures";
            say_and_close(ws, Some(text), CloseCode::Policy, reason, write).await;
            return None;
        }
        if !say(ws, text, write).await {
            return None;
        }
    }
}

/// Queues a frame for the writer, giving up if the client is kicked meanwhile.
async fn enqueue(client: &ClientHandle, out: Outbound) -> bool {
    let len = match &out {
        Outbound::Text(text) => text.len(),
        Outbound::Close(..) => 0,
    };
    client.queued_bytes.fetch_add(len, Ordering::Relaxed);
    let queued = tokio::select! {
        res = client.tx.send(out) => res.is_ok(),
        _ = client.kicked() => false,
    };
    if !queued {
        client.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }
    queued
}

async fn read_loop(
    ctx: &ConnCtx,
    client: &ClientHandle,
    mut stream: Receiver,
    mut limiter: Option<RateLimiter>,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    // Consecutive `send`s run concurrently (replies still leave in request order); any
    // other request first waits for the sends in flight, so it sees their effects.
    let mut sends: FuturesOrdered<PendingSend<'_>> = FuturesOrdered::new();
    loop {
        let frame = tokio::select! {
            biased;
            _ = shutdown_signal(shutdown) => return End::Close(CloseCode::Away, "shutting down"),
            _ = client.kicked() => return End::Done,
            Some(done) = sends.next(), if !sends.is_empty() => {
                if !reply_to_send(client, done).await {
                    return End::Done;
                }
                continue;
            }
            frame = stream.next(), if sends.len() < SEND_PIPELINE => frame,
        };
        let text = match frame {
            None => return End::Done,
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                tracing::debug!(size, max_size, "sc-bridge: frame too large");
                if let Some(end) = finish_sends(client, &mut sends, shutdown).await {
                    return end;
                }
                let msg = error(
                    ErrorCode::FrameTooLarge,
                    format!("Frame too large ({size} bytes; max {max_size})."),
                );
                enqueue(client, Outbound::Text(encode_reply(None, &msg).into())).await;
                return End::Close(CloseCode::Size, "frame too large");
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "sc-bridge: read failed");
                return End::Done;
            }
            Some(Ok(Message::Text(t))) => t,
            // The reference decodes binary frames as UTF-8 text, so we accept JSON in binary frames as well.
            Some(Ok(Message::Binary(b))) => match Utf8Bytes::try_from(b) {
                Ok(t) => t,
                Err(_) => {
                    if let Some(end) = finish_sends(client, &mut sends, shutdown).await {
                        return end;
                    }
                    let msg = error(ErrorCode::InvalidJson, DecodeError::InvalidJson.to_string());
                    if !enqueue(client, Outbound::Text(encode_reply(None, &msg).into())).await {
                        return End::Done;
                    }
                    continue;
                }
            },
            Some(Ok(Message::Close(_))) => return End::Done,
            Some(Ok(_)) => continue, // ping/pong are answered by tungstenite
        };

        let parsed = parse_frame(text.as_str());
        let limited = limiter.as_mut().is_some_and(|l| !l.allow(Instant::now()));
        let (reply_id, step) = match parsed {
            Err(e) => (None, Step::Reply(error(e.code(), e.to_string()))),
            Ok(req) if limited => (
                req.id,
                Step::Reply(error(ErrorCode::RateLimited, "Rate limited.")),
            ),
            Ok(req) => {
                let id = req.id.clone();
                let ready = ctx.backend.is_ready();
                let step = client
                    .session()
                    .handle(&ctx.session_cfg, req, ready, now_ms());
                (id, step)
            }
        };
        // Sends and transactions are pipelined (replies keep their ids, not their order).
        if let Step::Call(call @ (Call::Send(_) | Call::Subnet(SubnetRequest::Tx { .. }))) = step {
            sends.push_back(Box::pin(async move {
                let outcome = run_call(ctx, call.clone()).await;
                (reply_id, call, outcome)
            }));
            continue;
        }
        if let Some(end) = finish_sends(client, &mut sends, shutdown).await {
            return end;
        }
        let (reply, close) = match step {
            Step::Reply(m) => (m, None),
            Step::ReplyAndClose(m, reason) => (m, Some(reason)),
            Step::Call(call) => {
                let outcome = tokio::select! {
                    biased;
                    _ = shutdown_signal(shutdown) => return End::Close(CloseCode::Away, "shutting down"),
                    _ = client.kicked() => return End::Done,
                    outcome = run_call(ctx, call.clone()) => outcome,
                };
                (client.session().finish(call, outcome), None)
            }
        };
        if !enqueue(
            client,
            Outbound::Text(encode_reply(reply_id.as_ref(), &reply).into()),
        )
        .await
        {
            return End::Done;
        }
        if let Some(CloseReason::TooManyAuthFailures) = close {
            return End::Close(CloseCode::Policy, "too many auth failures");
        }
    }
}

/// A `send` in flight: the request id, the call and its outcome.
type PendingSend<'a> = BoxFuture<'a, (Option<Number>, Call, Outcome)>;

/// Sends one client may have in flight at once.
const SEND_PIPELINE: usize = 64;

/// Records a finished send in the session and queues its reply; false once the client
/// is gone.
async fn reply_to_send(
    client: &ClientHandle,
    (id, call, outcome): (Option<Number>, Call, Outcome),
) -> bool {
    let reply = client.session().finish(call, outcome);
    enqueue(
        client,
        Outbound::Text(encode_reply(id.as_ref(), &reply).into()),
    )
    .await
}

/// Waits for the sends in flight and queues their replies in order; `Some` when the
/// connection must end meanwhile.
async fn finish_sends(
    client: &ClientHandle,
    sends: &mut FuturesOrdered<PendingSend<'_>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<End> {
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown_signal(shutdown) => return Some(End::Close(CloseCode::Away, "shutting down")),
            _ = client.kicked() => return Some(End::Done),
            next = sends.next() => next,
        };
        if !reply_to_send(client, next?).await {
            return Some(End::Done);
        }
    }
}

async fn shutdown_signal(rx: &mut watch::Receiver<bool>) {
    // Resolves when shutdown was requested or the Bridge was dropped.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn hello(ctx: &ConnCtx) -> Hello {
    let id = ctx.backend.identity();
    Hello {
        peer: id.peer,
        address: id.address,
        entry_channel: id.entry_channel,
        filter: ctx.session_cfg.default_filter_raw.clone(),
        requires_auth: ctx.session_cfg.require_auth,
    }
}

async fn run_call(ctx: &ConnCtx, call: Call) -> Outcome {
    let backend = &ctx.backend;
    // A waiting `inbox_recv` may take its wait on top of the usual time.
    let wait = match &call {
        Call::Inbox(InboxRequest::Recv { wait_ms, .. }) => Duration::from_millis(*wait_ms),
        _ => Duration::ZERO,
    };
    let fut = async {
        match call {
            Call::Send(req) => match backend.send(req).await {
                Ok(report) => Outcome::Sent(report),
                Err(e) => Outcome::Failed(e),
            },
            Call::Join(req) => match backend.join(req).await {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed(e),
            },
            Call::Leave(channel) => match backend.leave(channel).await {
                Ok(ok) => Outcome::Left(ok),
                Err(e) => Outcome::Failed(e),
            },
            Call::Open(req) => match backend.open(req).await {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed(e),
            },
            Call::Stats => match backend.stats().await {
                Ok(stats) => Outcome::Stats(stats),
                Err(e) => Outcome::Failed(e),
            },
            Call::Info => Outcome::Info(ctx.cfg.info.clone().or_else(|| backend.info())),
            Call::Cli(command) => {
                // The reference runs CLI commands one at a time (its `cliQueue`).
                let _guard = ctx.cli_lock.lock().await;
                Outcome::Cli(backend.cli(command).await)
            }
            Call::Subnet(req) => match backend.subnet(req).await {
                Ok(body) => Outcome::Subnet(body),
                Err(e) => Outcome::Failed(e),
            },
            Call::Inbox(req) => match backend.inbox(req).await {
                Ok(body) => Outcome::Inbox(body),
                Err(e) => Outcome::Failed(e),
            },
        }
    };
    tokio::time::timeout(ctx.cfg.backend_timeout + wait, fut)
        .await
        .unwrap_or(Outcome::TimedOut)
}
