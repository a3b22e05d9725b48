//! A listening server (`lib/server.js`): answers relayed PEER_HANDSHAKE and
//! PEER_HOLEPUNCH requests for its key and hands out [`Connection`]s.
//!
//! ```text
//! PEER_HANDSHAKE ─► Noise IK responder ─► firewall hook ─► reply (payload below)
//!                                                         │
//!         client OPEN or direct ──────────────────────────┼─► connect the stream now
//!         we are reachable ───────────────────────────────┼─► wait ≤ 10 s for the client
//!         otherwise: puncher (reply sent from its socket) ┘   to reach our stream id
//! PEER_HOLEPUNCH rounds ─► NAT analysis, punch when the client punches
//! first packet for our stream id on any socket ─► connect there ─► secret-stream
//! ```
//!
//! Our noise payload: error (ABORTED when the client offers no UDX, VERSION_MISMATCH
//! for another payload version), firewall OPEN when we have a reachable address (then
//! no holepunch info) else UNKNOWN with the holepunch id and our relays, our addresses
//! (reachable one, then the local one), `udx { id, seq: 0 }`, `secretStream`, and our
//! relay addresses. A handshake is deduplicated by its noise bytes (the client's
//! retries get the same reply) and forgotten 10 s after it settled.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_dht_rpc::SocketKind;
use tokio::sync::{mpsc, watch, OnceCell};
use tokio::time::Instant;

use crate::announcer::Announcer;
use crate::connection::Connection;
use crate::constants::error_code::{ABORTED, NONE, TRY_LATER, VERSION_MISMATCH};
use crate::constants::firewall::{CONSISTENT, OPEN, RANDOM, UNKNOWN};
use crate::context::{is_private, lock, match_address, NodeCtx};
use crate::crypto::SecurePayload;
use crate::holepunch::{PunchOutcome, Puncher};
use crate::limits::PendingPermit;
use crate::messages::{HolepunchInfo, HolepunchPayload, NoisePayload, SecretStreamInfo, UdxInfo};
use crate::noise_wrap::{NoiseResult, NoiseWrap};
use crate::socket::{FirstPacket, NodeSocket, PendingStream};

/// How long a handshake waits for the client to reach us before it is dropped
/// (`HANDSHAKE_INITIAL_TIMEOUT`).
pub const HANDSHAKE_INITIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a settled handshake is remembered (`HANDSHAKE_CLEAR_WAIT`).
pub const HANDSHAKE_CLEAR_WAIT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; more are dropped.
pub const MAX_HANDSHAKES: usize = 1024;

/// Decides whether a client may connect: its public key, its noise payload and its
/// address. `true` accepts; `false` drops the handshake before any data flows (the JS
/// `firewall` option returns the opposite).
pub type ServerFirewall = Arc<dyn Fn(&[u8; 32], &NoisePayload, SocketAddrV4) -> bool + Send + Sync>;

/// Options of [`crate::HyperDht::listen`].
#[derive(Clone)]
pub struct ListenOptions {
    /// Accept or reject a client before anything is sent back; accept all when `None`.
    pub firewall: Option<ServerFirewall>,
    /// Offer our local address to clients on the same network (`shareLocalAddress`).
    pub share_local_address: bool,
    /// Holepunch when needed (`holepunch: false` disables punching entirely).
    pub holepunch: bool,
    /// Connections waiting for [`Server::accept`].
    pub backlog: usize,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            firewall: None,
            share_local_address: true,
            holepunch: true,
            backlog: 64,
        }
    }
}

impl std::fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenOptions")
            .field("firewall", &self.firewall.is_some())
            .field("share_local_address", &self.share_local_address)
            .field("holepunch", &self.holepunch)
            .field("backlog", &self.backlog)
            .finish()
    }
}

/// A handshake reply: the noise bytes and the socket to send them from.
#[derive(Debug, Clone)]
pub(crate) struct HandshakeReply {
    pub noise: Vec<u8>,
    pub socket: Option<SocketKind>,
}

/// A holepunch reply: the encrypted payload and the socket to send it from.
#[derive(Debug, Clone)]
pub(crate) struct HolepunchReply {
    pub payload: Vec<u8>,
    pub socket: Option<SocketKind>,
}

/// The reply to one handshake, computed once and shared by its retransmissions.
type PendingReply = Arc<OnceCell<Option<HandshakeReply>>>;

/// One handshake in progress (the JS `hs` object).
struct Hs {
    round: Mutex<u64>,
    payload: Option<SecurePayload>,
    puncher: Option<Arc<Puncher>>,
    /// The deadline before the client must reach us; `None` once punching started.
    prepunch: watch::Sender<Option<Instant>>,
}

pub(crate) struct ServerInner {
    ctx: Arc<NodeCtx>,
    key_pair: KeyPair,
    target: [u8; 32],
    opts: ListenOptions,
    announcer: OnceCell<Announcer>,
    connects: Mutex<HashMap<Vec<u8>, PendingReply>>,
    holepunches: Mutex<Vec<Option<Arc<Hs>>>>,
    conns: mpsc::Sender<Connection>,
    closed: watch::Sender<bool>,
}

/// A listening server. Dropping it stops listening without unannouncing; prefer
/// [`Server::close`].
pub struct Server {
    inner: Arc<ServerInner>,
    conns: mpsc::Receiver<Connection>,
    on_close: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("public_key", &hex_short(&self.inner.key_pair.public_key))
            .finish_non_exhaustive()
    }
}

fn hex_short(k: &[u8; 32]) -> String {
    k[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl Server {
    pub(crate) fn new(
        ctx: Arc<NodeCtx>,
        key_pair: KeyPair,
        target: [u8; 32],
        opts: ListenOptions,
    ) -> (Server, Arc<ServerInner>) {
        let (tx, rx) = mpsc::channel(opts.backlog.max(1));
        let inner = Arc::new(ServerInner {
            ctx,
            key_pair,
            target,
            opts,
            announcer: OnceCell::new(),
            connects: Mutex::new(HashMap::new()),
            holepunches: Mutex::new(Vec::new()),
            conns: tx,
            closed: watch::channel(false).0,
        });
        (
            Server {
                inner: inner.clone(),
                conns: rx,
                on_close: None,
            },
            inner,
        )
    }

    pub(crate) fn set_on_close(&mut self, f: Box<dyn FnOnce() + Send>) {
        self.on_close = Some(f);
    }

    /// The key we listen on.
    pub fn public_key(&self) -> [u8; 32] {
        self.inner.key_pair.public_key
    }

    /// The next connection (server side, [`Connection::is_initiator`] false); `None`
    /// once the server closed.
    pub async fn accept(&mut self) -> Option<Connection> {
        self.conns.recv().await
    }

    /// The addresses we can be reached through (our relays).
    pub fn relay_addresses(&self) -> Vec<SocketAddrV4> {
        self.inner.relay_addresses()
    }

    /// Redoes the announcement now.
    pub fn refresh(&self) {
        if let Some(a) = self.inner.announcer.get() {
            a.refresh();
        }
    }

    /// Stops accepting, unannounces, and drops handshakes in progress.
    pub async fn close(mut self) {
        self.inner.closed.send_replace(true);
        if let Some(f) = self.on_close.take() {
            f();
        }
        self.inner.clear_all();
        if let Some(a) = self.inner.announcer.get() {
            a.stop().await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.inner.closed.send_replace(true);
        if let Some(f) = self.on_close.take() {
            f();
        }
        self.inner.clear_all();
    }
}

impl ServerInner {
    pub(crate) async fn start_announcing(&self) {
        let a = Announcer::start(self.ctx.clone(), self.key_pair.clone(), self.target).await;
        let _ = self.announcer.set(a);
    }

    fn relay_addresses(&self) -> Vec<SocketAddrV4> {
        self.announcer
            .get()
            .map(Announcer::relay_addresses)
            .unwrap_or_default()
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn clear_all(&self) {
        for h in lock(&self.holepunches).drain(..).flatten() {
            if let Some(p) = &h.puncher {
                p.destroy();
            }
        }
        lock(&self.connects).clear();
    }

    /// `_onpeerhandshake`: the reply to a handshake (the same for retransmissions).
    pub(crate) async fn on_handshake(
        self: &Arc<Self>,
        noise: Vec<u8>,
        peer_address: Option<SocketAddrV4>,
        from: SocketAddrV4,
        to: SocketAddrV4,
        socket: SocketKind,
    ) -> Option<HandshakeReply> {
        let direct = peer_address.is_none();
        let client = peer_address.unwrap_or(from);
        let mut permit = None;
        let cell = {
            let mut connects = lock(&self.connects);
            if let Some(c) = connects.get(&noise) {
                c.clone()
            } else {
                if connects.len() >= MAX_HANDSHAKES {
                    return None;
                }
                // The connection limits, checked before any Noise work.
                permit = Some(self.ctx.limiter.try_pending(*client.ip())?);
                let c = Arc::new(OnceCell::new());
                connects.insert(noise.clone(), c.clone());
                c
            }
        };
        let key = noise.clone();
        let reply = cell
            .get_or_init(|| async move {
                // (A retransmission only runs this if the first attempt was cancelled.)
                let permit = match permit {
                    Some(p) => p,
                    None => self.ctx.limiter.try_pending(*client.ip())?,
                };
                self.add_handshake(key, noise, client, to, socket, direct, permit)
                    .await
            })
            .await
            .clone();
        if self.is_closed() {
            return None;
        }
        reply
    }

    fn forget_later(self: &Arc<Self>, key: Vec<u8>, id: Option<usize>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(HANDSHAKE_CLEAR_WAIT).await;
            if let Some(s) = weak.upgrade() {
                s.forget(&key, id);
            }
        });
    }

    fn forget(&self, key: &[u8], id: Option<usize>) {
        lock(&self.connects).remove(key);
        if let Some(id) = id {
            let mut hp = lock(&self.holepunches);
            if let Some(slot) = hp.get_mut(id) {
                *slot = None;
            }
            while hp.last().is_some_and(Option::is_none) {
                hp.pop();
            }
        }
    }

    fn reserve_slot(&self) -> usize {
        let mut hp = lock(&self.holepunches);
        match hp.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                hp.push(None);
                hp.len() - 1
            }
        }
    }

    /// `_addHandshake`. `permit` counts the handshake against the connection limits
    /// until its connection opens or it is dropped.
    #[allow(clippy::too_many_arguments)]
    async fn add_handshake(
        self: &Arc<Self>,
        key: Vec<u8>,
        noise: Vec<u8>,
        client: SocketAddrV4,
        server_address: SocketAddrV4,
        req_socket: SocketKind,
        direct: bool,
        permit: PendingPermit,
    ) -> Option<HandshakeReply> {
        let ctx = &self.ctx;
        let mut hs = NoiseWrap::responder(self.key_pair.clone());
        let remote = match hs.recv(&noise) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "bad handshake");
                self.forget_later(key, None);
                return None;
            }
        };
        let remote_key = hs.remote_public_key()?;
        let allowed = self
            .opts
            .firewall
            .as_ref()
            .is_none_or(|f| f(&remote_key, &remote, client));
        if self.is_closed() || !allowed {
            self.forget_later(key, None);
            return None;
        }
        let error = if remote.version != 1 {
            VERSION_MISMATCH
        } else if remote.udx.is_none() {
            ABORTED
        } else {
            NONE
        };
        let our_remote = ctx.remote_address();
        let mut addresses = Vec::new();
        addresses.extend(our_remote);
        if self.opts.share_local_address {
            addresses.extend(ctx.local_addresses());
        }
        let id = self.reserve_slot();
        let pending = (error == NONE).then(|| ctx.sockets.register_stream());
        let relays = self
            .announcer
            .get()
            .map(Announcer::relays)
            .unwrap_or_default();
        let relay_addresses = self.relay_addresses();
        let reply = NoisePayload {
            error,
            firewall: if our_remote.is_some() { OPEN } else { UNKNOWN },
            holepunch: our_remote.is_none().then_some(HolepunchInfo {
                id: id as u64,
                relays,
            }),
            addresses4: addresses,
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: pending.as_ref().map_or(0, |p| u64::from(p.id())),
                seq: 0,
            }),
            secret_stream: Some(SecretStreamInfo::default()),
            relay_addresses: (!relay_addresses.is_empty()).then_some(relay_addresses),
            ..NoisePayload::default()
        };
        let Ok(noise_reply) = hs.send(&reply) else {
            self.forget_later(key, Some(id));
            return None;
        };
        let (Some(result), Some(pending), Some(udx)) = (hs.finish(), pending, remote.udx) else {
            // An error reply: nothing to connect.
            self.forget_later(key, Some(id));
            return Some(HandshakeReply {
                noise: noise_reply,
                socket: None,
            });
        };
        let remote_id = u32::try_from(udx.id).unwrap_or(0);

        if remote.firewall == OPEN || direct {
            // The client is reachable (or talked to us directly): connect now.
            let socket = if direct {
                ctx.sockets.socket(req_socket)
            } else {
                Some(ctx.default_socket())
            };
            if let Some(socket) = socket {
                self.spawn_connect(pending, socket, remote_id, client, None, result, permit);
            }
            self.forget_later(key, Some(id));
            return Some(HandshakeReply {
                noise: noise_reply,
                socket: None,
            });
        }

        let prepunch = watch::channel(Some(Instant::now() + HANDSHAKE_INITIAL_TIMEOUT)).0;
        let secure = SecurePayload::new(result.holepunch_secret);

        // A client on our LAN (same public host): it will try our local address.
        if !direct && client.ip() == server_address.ip() && self.opts.share_local_address {
            let lan: Vec<SocketAddrV4> = remote
                .addresses4
                .iter()
                .filter(|a| is_private(a.ip()))
                .copied()
                .collect();
            if !lan.is_empty() && match_address(&ctx.local_addresses(), &lan).is_some() {
                let puncher = Puncher::new(ctx.clone(), false, remote.firewall)
                    .ok()
                    .map(Arc::new);
                self.install(id, secure, puncher.clone(), prepunch.clone());
                self.spawn_wait(
                    key, id, pending, remote_id, result, puncher, prepunch, permit,
                );
                return Some(HandshakeReply {
                    noise: noise_reply,
                    socket: None,
                });
            }
        }

        if our_remote.is_some() || !self.opts.holepunch {
            // The client connects to us.
            self.install(id, secure, None, prepunch.clone());
            self.spawn_wait(key, id, pending, remote_id, result, None, prepunch, permit);
            return Some(HandshakeReply {
                noise: noise_reply,
                socket: None,
            });
        }

        let Ok(puncher) = Puncher::new(ctx.clone(), false, remote.firewall) else {
            self.forget_later(key, Some(id));
            return None;
        };
        let puncher = Arc::new(puncher);
        let socket = puncher.socket().map(|s| s.kind());
        self.install(id, secure, Some(puncher.clone()), prepunch.clone());
        self.spawn_wait(
            key,
            id,
            pending,
            remote_id,
            result,
            Some(puncher),
            prepunch,
            permit,
        );
        Some(HandshakeReply {
            noise: noise_reply,
            socket,
        })
    }

    fn install(
        &self,
        id: usize,
        payload: SecurePayload,
        puncher: Option<Arc<Puncher>>,
        prepunch: watch::Sender<Option<Instant>>,
    ) {
        let mut hp = lock(&self.holepunches);
        if id >= hp.len() {
            hp.resize(id + 1, None);
        }
        hp[id] = Some(Arc::new(Hs {
            round: Mutex::new(0),
            payload: Some(payload),
            puncher,
            prepunch,
        }));
    }

    /// Connects the stream where the client is and emits the connection.
    #[allow(clippy::too_many_arguments)]
    fn spawn_connect(
        self: &Arc<Self>,
        pending: PendingStream,
        socket: Arc<NodeSocket>,
        remote_id: u32,
        addr: SocketAddrV4,
        first: Option<Vec<u8>>,
        result: NoiseResult,
        permit: PendingPermit,
    ) {
        let inner = self.clone();
        tokio::spawn(async move {
            let local_id = pending.id();
            let stream = match socket.connect_stream(local_id, remote_id, addr, first) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "server stream not created");
                    return;
                }
            };
            drop(pending);
            let config = inner.ctx.stream_config();
            match Connection::start(stream, socket, addr, result.handshake, config).await {
                Ok(conn) => {
                    let Some(open) = permit.open() else {
                        conn.handle().destroy();
                        return;
                    };
                    conn.hold_permit(open);
                    if inner.is_closed() || inner.conns.try_send(conn).is_err() {
                        tracing::debug!("server connection dropped (closed or backlog full)");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "server secret-stream failed"),
            }
        });
    }

    /// Waits for the client's first packet (JS raw stream firewall), the puncher's
    /// abort or the prepunch deadline.
    #[allow(clippy::too_many_arguments)]
    fn spawn_wait(
        self: &Arc<Self>,
        key: Vec<u8>,
        id: usize,
        mut pending: PendingStream,
        remote_id: u32,
        result: NoiseResult,
        puncher: Option<Arc<Puncher>>,
        prepunch: watch::Sender<Option<Instant>>,
        permit: PendingPermit,
    ) {
        let inner = self.clone();
        tokio::spawn(async move {
            let mut deadline = prepunch.subscribe();
            let mut closed = inner.closed.subscribe();
            let first: Option<FirstPacket> = loop {
                let at = *deadline.borrow_and_update();
                let sleep = async {
                    match at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let aborted = async {
                    match &puncher {
                        Some(p) => matches!(p.outcome().await, PunchOutcome::Aborted),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    p = pending.first_packet() => break p,
                    _ = sleep => break None,
                    true = aborted => break None,
                    _ = deadline.changed() => continue,
                    _ = closed.wait_for(|c| *c) => break None,
                }
            };
            if let Some(p) = &puncher {
                p.destroy();
            }
            if let Some(fp) = first {
                inner.spawn_connect(
                    pending,
                    fp.socket,
                    remote_id,
                    fp.from,
                    Some(fp.bytes),
                    result,
                    permit,
                );
            }
            inner.forget_later(key, Some(id));
        });
    }

    /// `_onpeerholepunch`: one holepunch round from the client.
    pub(crate) async fn on_holepunch(
        &self,
        id: u64,
        peer_address: Option<SocketAddrV4>,
        payload: &[u8],
        from: SocketAddrV4,
        to: SocketAddrV4,
        req_socket: SocketKind,
    ) -> Option<HolepunchReply> {
        let h = usize::try_from(id)
            .ok()
            .and_then(|i| lock(&self.holepunches).get(i).cloned().flatten())?;
        let peer_address = peer_address?;
        if self.is_closed() {
            return None;
        }
        let Some(secure) = &h.payload else {
            return self.abort(&h, ABORTED);
        };
        let remote = secure.decrypt(payload).ok()?;
        let Some(p) = h.puncher.clone() else {
            return self.abort(&h, ABORTED);
        };
        let p_socket = p.socket()?;
        let is_server_relay = self.announcer.get().is_some_and(|a| a.is_relay(&from));
        if remote.error != NONE {
            let mut round = lock(&h.round);
            *round = (*round).max(remote.round);
            drop(round);
            return self.abort(&h, ABORTED);
        }
        let token = secure.token(peer_address.ip());
        let echoed = is_server_relay && remote.remote_token == Some(token);
        if req_socket == p_socket.kind() {
            p.nat_add(to, from);
        }
        {
            let mut round = lock(&h.round);
            if remote.round >= *round {
                *round = remote.round;
                p.update_remote(
                    remote.punching,
                    remote.firewall,
                    remote.addresses.as_deref(),
                    echoed.then(|| *peer_address.ip()),
                );
            }
        }
        let mut stable = p.analyze(false).await;
        if p.is_destroyed() {
            return None;
        }
        if !p.remote_holepunching() && !stable {
            stable = p.analyze(true).await;
            if p.is_destroyed() {
                return None;
            }
            if !stable {
                return self.abort(&h, ABORTED);
            }
        }
        // Fast mode: we are consistent and the client opened a session to us.
        let fw = p.nat_firewall();
        if (fw == OPEN || fw == CONSISTENT)
            && remote
                .remote_address
                .is_some_and(|ra| p.nat_addresses().is_some_and(|addrs| addrs.contains(&ra)))
        {
            p.ping(peer_address);
        }
        if p.remote_holepunching() {
            h.prepunch.send_replace(None);
            if p.remote_firewall() >= RANDOM || p.nat_firewall() >= RANDOM {
                let wait = lock(&self.ctx.random).must_wait(Instant::now());
                if wait {
                    // No blind relay to fall back on: tell the client to give up.
                    return self.abort(&h, TRY_LATER);
                }
            }
            let punching = p.punch().await;
            if p.is_destroyed() {
                return None;
            }
            if !punching {
                return self.abort(&h, ABORTED);
            }
        }
        if p.nat_firewall() != UNKNOWN {
            p.nat_freeze();
        }
        let round = *lock(&h.round);
        let payload = secure.encrypt(&HolepunchPayload {
            error: NONE,
            firewall: p.nat_firewall(),
            round,
            connected: p.is_connected(),
            punching: p.punching(),
            addresses: p.nat_addresses(),
            remote_address: None,
            token: is_server_relay.then_some(token),
            remote_token: remote.token,
        });
        Some(HolepunchReply {
            payload,
            socket: p.socket().map(|s| s.kind()),
        })
    }

    /// `_abort`: tells the client we give up (an error payload from the main socket).
    fn abort(&self, h: &Hs, error: u64) -> Option<HolepunchReply> {
        let secure = h.payload.as_ref()?;
        let round = *lock(&h.round);
        let payload = secure.encrypt(&HolepunchPayload {
            error,
            firewall: UNKNOWN,
            round,
            ..HolepunchPayload::default()
        });
        if let Some(p) = &h.puncher {
            p.destroy();
        }
        Some(HolepunchReply {
            payload,
            socket: Some(self.ctx.default_kind()),
        })
    }
}

/// The servers of a node by target, held weakly (a dropped [`Server`] stops routing).
pub(crate) type ServerTable = Mutex<HashMap<[u8; 32], Weak<ServerInner>>>;
