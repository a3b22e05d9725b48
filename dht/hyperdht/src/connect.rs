//! Connecting to a server by its public key (`lib/connect.js`).
//!
//! ```text
//! FIND_PEER walk ──► nodes holding the server's forward (plus known relay addresses)
//!   └─► PEER_HANDSHAKE through them (2-3 at once): Noise IK msg 1 with our payload
//!         └─► first REPLY wins: Noise IK msg 2 with the server's payload
//!               ├─ the server's stream already reached ours ─► connect there
//!               ├─ not relayed (we hit the server itself)   ─► connect to it
//!               ├─ server OPEN (or not holepunchable)       ─► connect to its address
//!               ├─ we are OPEN                              ─► wait ≤ 10 s for it
//!               └─ holepunch: probe round (NAT verdicts), punch round, probes
//!                     └─ first probe from the server ─► connect on that socket
//! then: secret-stream from the IK result, wait for the server's header ("open")
//! ```
//!
//! Our noise payload: firewall OPEN with our reachable address when we have one (else
//! UNKNOWN), our addresses, `udx { id, seq: 0 }` (the id registered with
//! [`crate::socket::Sockets::register_stream`]) and `secretStream`.
//!
//! Differences from JS: no blind-relay (`relayThrough`) fallback, so a random-NAT punch
//! that would have to wait for the node-wide random-punch slot aborts instead of
//! retrying later; the whole attempt is bounded by [`ConnectOptions::timeout`].

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_dht_rpc::{DhtError, QuerySpec, Reply, RequestOptions, RequestSpec, SocketKind};
use intercom_encoding::{decode, encode};
use intercom_secret_stream::SecretStreamError;
use intercom_udx::UdxError;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::connection::Connection;
use crate::constants::error_code::{ABORTED, NONE};
use crate::constants::firewall::{OPEN, RANDOM, UNKNOWN};
use crate::constants::mode::{FROM_CLIENT, REPLY};
use crate::constants::Command;
use crate::context::{is_bogon, is_reserved, lock, match_address, NodeCtx};
use crate::crypto::{hash, SecurePayload};
use crate::holepunch::{PunchOutcome, Puncher};
use crate::messages::{
    Handshake, Holepunch, HolepunchPayload, NoisePayload, RelayInfo, SecretStreamInfo, UdxInfo,
};
use crate::noise_wrap::{NoiseResult, NoiseWrap, NoiseWrapError};
use crate::ops::map_find_peer;
use crate::socket::{NodeSocket, PendingStream};

/// How long we wait for a reachable-us server to connect (`passiveConnectTimeout`).
const PASSIVE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No DHT node knows the key (`PEER_NOT_FOUND`).
    #[error("peer not found")]
    PeerNotFound,
    /// The key is announced but no handshake was answered: the server rejected us
    /// (firewall), is gone, or its relays are (`PEER_CONNECTION_FAILED`).
    #[error("peer found but the handshake was not answered (rejected or unreachable)")]
    ConnectionFailed,
    /// The attempt took longer than [`ConnectOptions::timeout`].
    #[error("connect timed out")]
    Timeout,
    /// A malformed handshake reply, or one that failed Noise (`HANDSHAKE_INVALID`).
    #[error("invalid handshake reply: {0}")]
    HandshakeInvalid(#[from] NoiseWrapError),
    /// The server speaks another payload version (`SERVER_INCOMPATIBLE`).
    #[error("server payload version {0} is not supported")]
    ServerIncompatible(u64),
    /// The server answered with an error code or without UDX details (`SERVER_ERROR`).
    #[error("server error {0}")]
    ServerError(u64),
    /// The server cannot be holepunched (no relays to punch through).
    #[error("cannot holepunch: the server offers no holepunch relays")]
    CannotHolepunch,
    /// The NAT analysis did not reach a verdict (`HOLEPUNCH_PROBE_TIMEOUT`).
    #[error("holepunch probe timed out")]
    HolepunchProbeTimeout,
    /// Both sides are behind random NATs (`HOLEPUNCH_DOUBLE_RANDOMIZED_NATS`).
    #[error("both peers are behind randomizing NATs")]
    DoubleRandomizedNats,
    /// The server aborted the holepunch (`REMOTE_ABORTED`).
    #[error("remote aborted the holepunch (error {0})")]
    RemoteAborted(u64),
    /// The server did not start punching (`REMOTE_NOT_HOLEPUNCHING`).
    #[error("remote is not holepunching")]
    RemoteNotHolepunching,
    /// No punching strategy fits the NAT pair (`REMOTE_NOT_HOLEPUNCHABLE`).
    #[error("remote is not holepunchable")]
    RemoteNotHolepunchable,
    /// The holepunch ended without a connection (`HOLEPUNCH_ABORTED`).
    #[error("holepunch aborted")]
    HolepunchAborted,
    /// A holepunch reply did not decrypt or decode (`HOLEPUNCH_INVALID`).
    #[error("invalid holepunch reply")]
    HolepunchInvalid,
    /// The DHT failed (node destroyed, request error).
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// The UDX stream could not be set up.
    #[error(transparent)]
    Stream(#[from] UdxError),
    /// The secret-stream failed before it opened.
    #[error(transparent)]
    SecretStream(#[from] SecretStreamError),
}

/// Options of [`crate::HyperDht::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Our key pair.
    pub key_pair: KeyPair,
    /// Nodes known to relay for the server (a lookup's `relayAddresses`); tried before
    /// and alongside the FIND_PEER walk.
    pub relay_addresses: Vec<SocketAddrV4>,
    /// Try the server's LAN address when it shares our public host (`localConnection`).
    pub local_connection: bool,
    /// Bound on the whole attempt, until the server's secret-stream header arrived.
    pub timeout: Duration,
}

impl ConnectOptions {
    /// Defaults for `key_pair`: no known relays, LAN shortcut on, 30 s.
    pub fn new(key_pair: KeyPair) -> Self {
        ConnectOptions {
            key_pair,
            relay_addresses: Vec::new(),
            local_connection: true,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The accepted handshake reply (`c.connect`).
struct Accepted {
    relayed: bool,
    relay_address: SocketAddrV4,
    client_address: SocketAddrV4,
    server_address: SocketAddrV4,
    payload: NoisePayload,
    result: NoiseResult,
}

/// Where the stream goes.
struct Target {
    socket: Arc<NodeSocket>,
    addr: SocketAddrV4,
    first: Option<Vec<u8>>,
}

pub(crate) async fn connect(
    ctx: Arc<NodeCtx>,
    remote_public_key: [u8; 32],
    opts: ConnectOptions,
) -> Result<Connection, ConnectError> {
    let deadline = opts.timeout;
    match tokio::time::timeout(deadline, connect_inner(ctx, remote_public_key, opts)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout),
    }
}

async fn connect_inner(
    ctx: Arc<NodeCtx>,
    remote_public_key: [u8; 32],
    opts: ConnectOptions,
) -> Result<Connection, ConnectError> {
    let target = hash(&remote_public_key);
    let mut pending = ctx.sockets.register_stream();
    let mut noise = NoiseWrap::initiator(opts.key_pair.clone(), remote_public_key);
    let our_addr = ctx.remote_address();
    let mut addresses4: Vec<SocketAddrV4> = our_addr.into_iter().collect();
    if opts.local_connection {
        addresses4.extend(ctx.local_addresses());
    }
    let firewall = if our_addr.is_some() { OPEN } else { UNKNOWN };
    let request = noise.send(&NoisePayload {
        firewall,
        addresses4,
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: u64::from(pending.id()),
            seq: 0,
        }),
        secret_stream: Some(SecretStreamInfo::default()),
        ..NoisePayload::default()
    })?;
    let accepted = find_and_connect(
        &ctx,
        &target,
        &remote_public_key,
        request,
        &mut noise,
        &opts,
    )
    .await?;
    let udx = accepted
        .payload
        .udx
        .ok_or(ConnectError::ServerError(accepted.payload.error))?;
    let remote_id = u32::try_from(udx.id).map_err(|_| ConnectError::ServerError(ABORTED))?;
    let Accepted {
        relayed,
        relay_address,
        client_address,
        server_address,
        payload,
        result,
    } = accepted;

    let target_at = if let Some(fp) = pending.try_first_packet() {
        // The server reached our stream before its reply reached us.
        Target {
            socket: fp.socket,
            addr: fp.from,
            first: Some(fp.bytes),
        }
    } else if !relayed {
        Target {
            socket: ctx.default_socket(),
            addr: relay_address,
            first: None,
        }
    } else {
        holepunch(
            &ctx,
            &target,
            &mut pending,
            firewall,
            &opts,
            relay_address,
            client_address,
            server_address,
            &payload,
            &result,
        )
        .await?
    };
    let stream = target_at.socket.connect_stream(
        pending.id(),
        remote_id,
        target_at.addr,
        target_at.first,
    )?;
    drop(pending);
    let mut conn = Connection::start(
        stream,
        target_at.socket,
        target_at.addr,
        result.handshake,
        ctx.stream_config(),
    )
    .await?;
    if !conn.opened().await? {
        return Err(ConnectError::SecretStream(
            SecretStreamError::EndedDuringHandshake,
        ));
    }
    Ok(conn)
}

/// The PEER_HANDSHAKE request to `to`; its validated reply.
async fn peer_handshake(
    ctx: Arc<NodeCtx>,
    target: [u8; 32],
    value: Vec<u8>,
    to: SocketAddrV4,
) -> Option<(SocketAddrV4, Reply, Handshake)> {
    let spec = RequestSpec {
        command: Command::PeerHandshake.id(),
        target: Some(target),
        value: Some(value),
        ..RequestSpec::default()
    };
    let res = ctx
        .dht
        .request(to, spec, RequestOptions::default())
        .await
        .ok()?;
    let hs: Handshake = decode(res.value.as_deref()?).ok()?;
    (hs.mode == REPLY && res.from.addr == to && !hs.noise.is_empty()).then_some((to, res, hs))
}

/// `findAndConnect`: handshakes through known relays and every node of a FIND_PEER
/// walk that holds the server's forward, until one is answered.
async fn find_and_connect(
    ctx: &Arc<NodeCtx>,
    target: &[u8; 32],
    remote_public_key: &[u8; 32],
    request: Vec<u8>,
    noise: &mut NoiseWrap,
    opts: &ConnectOptions,
) -> Result<Accepted, ConnectError> {
    let value = encode(&Handshake {
        mode: FROM_CLIENT,
        noise: request,
        peer_address: None,
        relay_address: None,
    });
    let mut relays = opts.relay_addresses.clone();
    if relays.is_empty() {
        relays = ctx.cached_relays(remote_public_key).unwrap_or_default();
    }
    let pre_connect = !relays.is_empty();
    let limit = if pre_connect { 3 } else { 2 };
    let tries = if pre_connect { 2 } else { 1 };
    let mut queue: VecDeque<SocketAddrV4> = relays.iter().copied().collect();
    let mut tried: HashSet<SocketAddrV4> = HashSet::new();
    let mut remote_relays = Vec::new();
    let mut inflight = JoinSet::new();
    let mut attempts = 0usize;
    for i in 0..tries {
        let mut query = Some(
            ctx.dht
                .query(QuerySpec {
                    target: *target,
                    command: Command::FindPeer.id(),
                    nodes: if i == 0 { relays.clone() } else { Vec::new() },
                    retries: Some(3),
                    ..QuerySpec::default()
                })
                .await?,
        );
        loop {
            while inflight.len() < limit {
                let Some(a) = queue.pop_front() else { break };
                if !tried.insert(a) {
                    continue;
                }
                attempts += 1;
                remote_relays.push(a);
                inflight.spawn(peer_handshake(ctx.clone(), *target, value.clone(), a));
            }
            if query.is_none() && inflight.is_empty() && queue.is_empty() {
                break;
            }
            tokio::select! {
                r = async { query.as_mut()?.next().await }, if query.is_some() => match r {
                    Some(reply) => {
                        if map_find_peer(&reply).is_some() && !tried.contains(&reply.from.addr) {
                            queue.push_back(reply.from.addr);
                        }
                    }
                    None => query = None,
                },
                Some(done) = inflight.join_next() => {
                    let Ok(Some((relay_address, res, hs))) = done else { continue };
                    let payload = noise.recv(&hs.noise)?;
                    if payload.version != 1 {
                        return Err(ConnectError::ServerIncompatible(payload.version));
                    }
                    if payload.error != NONE {
                        return Err(ConnectError::ServerError(payload.error));
                    }
                    if payload.udx.is_none() {
                        return Err(ConnectError::ServerError(ABORTED));
                    }
                    let result = noise.finish().ok_or(ConnectError::ServerError(ABORTED))?;
                    let cache = match &payload.relay_addresses {
                        Some(r) if !r.is_empty() => r.clone(),
                        _ => remote_relays.clone(),
                    };
                    ctx.cache_relays(*remote_public_key, cache);
                    return Ok(Accepted {
                        relayed: hs.peer_address.is_some(),
                        relay_address,
                        client_address: res.to,
                        server_address: hs.peer_address.unwrap_or(relay_address),
                        payload,
                        result,
                    });
                }
            }
        }
    }
    Err(if attempts > 0 {
        ConnectError::ConnectionFailed
    } else {
        ConnectError::PeerNotFound
    })
}

/// The holepunch session state of the client.
struct Session<'a> {
    ctx: &'a Arc<NodeCtx>,
    target: [u8; 32],
    id: u64,
    secure: SecurePayload,
    puncher: Puncher,
    round: u64,
}

/// A validated holepunch reply.
struct HpReply {
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: HolepunchPayload,
    peer_address: SocketAddrV4,
}

impl Session<'_> {
    fn socket_kind(&self) -> Option<SocketKind> {
        self.puncher.socket().map(|s| s.kind())
    }

    /// `updateHolepunch`: one PEER_HOLEPUNCH round trip through `relay`.
    async fn update(
        &mut self,
        peer_address: SocketAddrV4,
        relay: SocketAddrV4,
        payload: HolepunchPayload,
    ) -> Result<HpReply, ConnectError> {
        let value = encode(&Holepunch {
            mode: FROM_CLIENT,
            id: self.id,
            payload: self.secure.encrypt(&payload),
            peer_address: Some(peer_address),
        });
        let spec = RequestSpec {
            command: Command::PeerHolepunch.id(),
            target: Some(self.target),
            value: Some(value),
            ..RequestSpec::default()
        };
        let opts = RequestOptions {
            socket: self.socket_kind(),
            ..RequestOptions::default()
        };
        let res = self.ctx.dht.request(relay, spec, opts).await?;
        let hp: Holepunch = res
            .value
            .as_deref()
            .and_then(|v| decode(v).ok())
            .ok_or(ConnectError::HolepunchInvalid)?;
        if hp.mode != REPLY || res.from.addr != relay {
            return Err(ConnectError::HolepunchInvalid);
        }
        let remote = self
            .secure
            .decrypt(&hp.payload)
            .map_err(|_| ConnectError::HolepunchInvalid)?;
        if remote.error != NONE {
            return Err(ConnectError::RemoteAborted(remote.error));
        }
        let echoed = remote.remote_token.is_some() && remote.remote_token == payload.token;
        self.puncher.update_remote(
            remote.punching,
            remote.firewall,
            remote.addresses.as_deref(),
            echoed.then(|| *peer_address.ip()),
        );
        Ok(HpReply {
            from: res.from.addr,
            to: res.to,
            payload: remote,
            peer_address: hp.peer_address.unwrap_or(relay),
        })
    }

    fn next_round(&mut self) -> u64 {
        let r = self.round;
        self.round += 1;
        r
    }

    /// `abort`: tells the server we give up, then fails with `err`.
    async fn abort(&mut self, relay: &RelayInfo, err: ConnectError) -> ConnectError {
        let round = self.next_round();
        let _ = self
            .update(
                relay.peer_address,
                relay.relay_address,
                HolepunchPayload {
                    error: ABORTED,
                    firewall: UNKNOWN,
                    round,
                    ..HolepunchPayload::default()
                },
            )
            .await;
        self.puncher.destroy();
        err
    }

    /// `probeRound`: learn both NAT verdicts; the server's token and address.
    async fn probe_round(
        &mut self,
        server_address: Option<SocketAddrV4>,
        relay: &RelayInfo,
    ) -> Result<(Option<[u8; 32]>, SocketAddrV4), ConnectError> {
        let mut retry = true;
        loop {
            if let Some(a) = server_address {
                self.puncher.open_session(a);
            }
            let round = self.next_round();
            let reply = self
                .update(
                    relay.peer_address,
                    relay.relay_address,
                    HolepunchPayload {
                        error: NONE,
                        firewall: self.puncher.nat_firewall(),
                        round,
                        addresses: self.puncher.nat_addresses(),
                        remote_address: server_address,
                        ..HolepunchPayload::default()
                    },
                )
                .await?;
            self.puncher.nat_add(reply.to, reply.from);
            if self.puncher.remote_firewall() == UNKNOWN {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut stable = self.puncher.analyze(false).await;
            if !stable {
                stable = self.puncher.analyze(true).await;
                if stable && retry {
                    retry = false;
                    continue;
                }
            }
            let token = reply.payload.token;
            if (self.puncher.remote_firewall() == UNKNOWN || token.is_none()) && retry {
                retry = false;
                continue;
            }
            if self.puncher.remote_firewall() == UNKNOWN || self.puncher.nat_firewall() == UNKNOWN {
                return Err(self.abort(relay, ConnectError::HolepunchProbeTimeout).await);
            }
            if self.puncher.remote_firewall() >= RANDOM && self.puncher.nat_firewall() >= RANDOM {
                return Err(self.abort(relay, ConnectError::DoubleRandomizedNats).await);
            }
            return Ok((token, reply.peer_address));
        }
    }

    /// `roundPunch`: tell the server we punch, then punch.
    async fn round_punch(
        &mut self,
        server_address: SocketAddrV4,
        remote_token: Option<[u8; 32]>,
        client_relay: SocketAddrV4,
    ) -> Result<(), ConnectError> {
        self.puncher.nat_freeze();
        let is_random =
            self.puncher.remote_firewall() >= RANDOM || self.puncher.nat_firewall() >= RANDOM;
        if is_random {
            let mut r = lock(&self.ctx.random);
            if r.must_wait(Instant::now()) {
                // JS waits for a blind relay here; without one it aborts.
                return Err(ConnectError::HolepunchAborted);
            }
            r.active += 1;
        }
        let round = self.next_round();
        let payload = HolepunchPayload {
            error: NONE,
            firewall: self.puncher.nat_firewall(),
            round,
            punching: true,
            addresses: self.puncher.nat_addresses(),
            token: Some(self.secure.token(server_address.ip())),
            remote_token,
            ..HolepunchPayload::default()
        };
        let reply = self.update(server_address, client_relay, payload).await;
        if is_random {
            let mut r = lock(&self.ctx.random);
            r.active = r.active.saturating_sub(1);
        }
        reply?;
        if !self.puncher.remote_holepunching() {
            return Err(ConnectError::RemoteNotHolepunching);
        }
        if !self.puncher.punch().await {
            return Err(ConnectError::RemoteNotHolepunchable);
        }
        Ok(())
    }
}

fn pick_server_relay(relays: &[RelayInfo], client_relay: SocketAddrV4) -> Option<RelayInfo> {
    relays
        .iter()
        .find(|r| r.relay_address == client_relay)
        .or_else(|| relays.first())
        .copied()
}

/// `holepunch`: where to connect when the server answered through a relay.
#[allow(clippy::too_many_arguments)]
async fn holepunch(
    ctx: &Arc<NodeCtx>,
    target: &[u8; 32],
    pending: &mut PendingStream,
    our_firewall: u64,
    opts: &ConnectOptions,
    relay_address: SocketAddrV4,
    client_address: SocketAddrV4,
    server_address: SocketAddrV4,
    payload: &NoisePayload,
    result: &NoiseResult,
) -> Result<Target, ConnectError> {
    let relays = payload
        .holepunch
        .as_ref()
        .map(|h| h.relays.clone())
        .unwrap_or_default();
    let remote_holepunchable = !relays.is_empty();
    let relayed = server_address != relay_address;
    if payload.firewall == OPEN || (relayed && !remote_holepunchable) {
        let addr = payload
            .addresses4
            .iter()
            .find(|a| !is_bogon(a.ip()))
            .copied()
            .unwrap_or(server_address);
        return Ok(Target {
            socket: ctx.default_socket(),
            addr,
            first: None,
        });
    }
    if our_firewall == OPEN {
        // The server connects to us.
        return match tokio::time::timeout(PASSIVE_CONNECT_TIMEOUT, pending.first_packet()).await {
            Ok(Some(fp)) => Ok(Target {
                socket: fp.socket,
                addr: fp.from,
                first: Some(fp.bytes),
            }),
            _ => Err(ConnectError::HolepunchAborted),
        };
    }

    // Same public host: race a LAN ping with the holepunch.
    let lan = if opts.local_connection && relayed && client_address.ip() == server_address.ip() {
        let theirs: Vec<SocketAddrV4> = payload
            .addresses4
            .iter()
            .filter(|a| !is_reserved(a.ip()))
            .copied()
            .collect();
        (!theirs.is_empty())
            .then(|| match_address(&ctx.local_addresses(), &theirs).unwrap_or(theirs[0]))
    } else {
        None
    };
    let lan_ping = async {
        match lan {
            Some(addr) => match ctx.dht.ping(addr).await {
                Ok(_) => Some(addr),
                Err(_) => None,
            },
            None => None,
        }
    };
    if !remote_holepunchable {
        return match lan_ping.await {
            Some(addr) => Ok(Target {
                socket: ctx.sockets.server().clone(),
                addr,
                first: None,
            }),
            None if lan.is_some() => Err(ConnectError::HolepunchAborted),
            None => Err(ConnectError::CannotHolepunch),
        };
    }
    let id = payload.holepunch.as_ref().map_or(0, |h| h.id);
    let punch = punch(
        ctx,
        target,
        id,
        result,
        payload.firewall,
        &relays,
        relay_address,
        server_address,
    );
    tokio::pin!(punch);
    tokio::select! {
        r = &mut punch => r,
        Some(addr) = lan_ping => Ok(Target {
            socket: ctx.sockets.server().clone(),
            addr,
            first: None,
        }),
    }
}

/// The probe and punch rounds; the socket and address the first probe came from.
#[allow(clippy::too_many_arguments)]
async fn punch(
    ctx: &Arc<NodeCtx>,
    target: &[u8; 32],
    id: u64,
    result: &NoiseResult,
    remote_firewall: u64,
    relays: &[RelayInfo],
    relay_address: SocketAddrV4,
    mut server_address: SocketAddrV4,
) -> Result<Target, ConnectError> {
    let puncher = Puncher::new(ctx.clone(), true, remote_firewall)?;
    let server_relay =
        pick_server_relay(relays, relay_address).ok_or(ConnectError::CannotHolepunch)?;
    let mut s = Session {
        ctx,
        target: *target,
        id,
        secure: SecurePayload::new(result.holepunch_secret),
        puncher,
        round: 0,
    };
    let outcome = s.puncher.outcome_future();
    let run = async {
        let (token, peer_address) = s.probe_round(Some(server_address), &server_relay).await?;
        if server_relay.relay_address == relay_address && server_address != peer_address {
            server_address = peer_address;
            s.puncher.open_session(server_address);
        }
        s.round_punch(server_address, token, relay_address).await
    };
    let outcome = async move {
        match outcome.await {
            PunchOutcome::Connected(socket, addr) => Ok(Target {
                socket,
                addr,
                first: None,
            }),
            PunchOutcome::Aborted => Err(ConnectError::HolepunchAborted),
        }
    };
    // A probe may connect us while the rounds are still running.
    tokio::pin!(run);
    tokio::pin!(outcome);
    tokio::select! {
        r = &mut outcome => r,
        r = &mut run => {
            r?;
            outcome.await
        }
    }
}
