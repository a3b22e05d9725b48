//! Holepunching (`lib/holepuncher.js`): the strategy as pure functions, and [`Puncher`],
//! the small async driver that owns the holepunch sockets, samples their NAT
//! ([`crate::nat::Nat`]) and sends the probes.
//!
//! Both sides of a connection that cannot reach each other directly get a puncher with a
//! fresh pool socket. They exchange NAT verdicts and addresses in PEER_HOLEPUNCH rounds
//! (see [`crate::connect`] and [`crate::server`]) and then punch at the same time:
//!
//! | our NAT (OPEN = CONSISTENT) | remote NAT | what we do ([`choose_strategy`])                  |
//! |-----------------------------|------------|----------------------------------------------------|
//! | consistent                  | consistent | probe every remote address once a second, 10 times (unverified ones every 4th try) |
//! | consistent                  | random     | 1750 probes, 20 ms apart, to random ports of the verified host |
//! | random                      | consistent | open up to 256 sockets ("birthday"), each sends a low-TTL probe, then cycle through them |
//! | random                      | random     | give up (double randomized NATs)                   |
//!
//! A probe is one zero byte. The server echoes every probe it receives; the first probe
//! the client receives on any of its sockets is the connection: it connects its UDX
//! stream there ([`PunchOutcome::Connected`]). A puncher that finishes its probes without
//! a connection aborts.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use intercom_dht_rpc::{RequestOptions, RequestSpec, SocketKind};
use tokio::sync::{mpsc, watch, Mutex as AsyncMutex, Notify, OnceCell};
use tokio::time::Instant;

use crate::constants::firewall::{CONSISTENT, OPEN, RANDOM, UNKNOWN};
use crate::context::{lock, NodeCtx};
use crate::nat::Nat;
use crate::socket::{NodeSocket, PROBE_QUEUE};

/// Most sockets a puncher behind a random NAT opens (`BIRTHDAY_SOCKETS`).
pub const BIRTHDAY_SOCKETS: usize = 256;
/// Socket reopens to get a stable NAT mapping (`MAX_REOPENS`).
pub const MAX_REOPENS: usize = 3;
/// Rounds of the consistent probe.
pub const CONSISTENT_TRIES: u32 = 10;
/// Probes of the random strategies (~35 s at 20 ms).
pub const RANDOM_TRIES: u32 = 1750;

/// OPEN counts as CONSISTENT when choosing how to punch (`coerceFirewall`).
pub fn coerce_firewall(fw: u64) -> u64 {
    if fw == OPEN {
        CONSISTENT
    } else {
        fw
    }
}

/// A remote address from a holepunch payload; verified when the remote echoed the token
/// we made for that host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddress {
    /// The address.
    pub addr: SocketAddrV4,
    /// Whether the remote proved it sees this host.
    pub verified: bool,
}

/// How to punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Both consistent: probe the remote addresses.
    Consistent,
    /// We are consistent, the remote random: probe random ports of its verified host.
    RandomProbes(SocketAddrV4),
    /// We are random, the remote consistent: open many sockets towards its verified
    /// address.
    Birthday(SocketAddrV4),
    /// Cannot punch.
    None,
}

/// `_punch`'s choice for our and the remote's firewall and the remote's addresses.
pub fn choose_strategy(local: u64, remote: u64, addresses: &[RemoteAddress]) -> Strategy {
    if addresses.is_empty() {
        return Strategy::None;
    }
    let (local, remote) = (coerce_firewall(local), coerce_firewall(remote));
    if local == CONSISTENT && remote == CONSISTENT {
        return Strategy::Consistent;
    }
    let Some(verified) = addresses.iter().find(|a| a.verified) else {
        return Strategy::None;
    };
    if local == CONSISTENT && remote >= RANDOM {
        Strategy::RandomProbes(verified.addr)
    } else if local >= RANDOM && remote == CONSISTENT {
        Strategy::Birthday(verified.addr)
    } else {
        Strategy::None
    }
}

/// The addresses the consistent probe hits in try `tries` (1-based): verified ones
/// every time, the others every fourth try.
pub fn consistent_targets(tries: u32, addresses: &[RemoteAddress]) -> Vec<SocketAddrV4> {
    addresses
        .iter()
        .filter(|a| a.verified || tries & 3 == 0)
        .map(|a| a.addr)
        .collect()
}

/// Whether a NAT pair cannot be punched without reopening our socket (`_unstable`).
pub fn is_unstable(local: u64, remote: u64) -> bool {
    (remote >= RANDOM && local >= RANDOM) || local == UNKNOWN
}

/// `randomPort()`: 1000 ≤ port < 65536.
pub fn random_port(r: u32) -> u16 {
    (1000 + (r % 64536)) as u16
}

/// How a puncher ended.
#[derive(Debug, Clone)]
pub enum PunchOutcome {
    /// A probe from the remote arrived (client) on `socket` from `addr`.
    Connected(Arc<NodeSocket>, SocketAddrV4),
    /// Destroyed or done probing without a connection.
    Aborted,
}

struct State {
    nat: Nat,
    generation: u64,
    holders: Vec<Arc<NodeSocket>>,
    remote_firewall: u64,
    remote_addresses: Vec<RemoteAddress>,
    remote_holepunching: bool,
    punching: bool,
    connected: bool,
    destroyed: bool,
    randomized: bool,
}

struct Inner {
    ctx: Arc<NodeCtx>,
    is_initiator: bool,
    state: std::sync::Mutex<State>,
    changed: Notify,
    outcome: watch::Sender<Option<PunchOutcome>>,
    probes: mpsc::Sender<(SocketKind, SocketAddrV4)>,
    punched: OnceCell<bool>,
    reopen: AsyncMutex<()>,
}

/// A holepuncher: its sockets, NAT analysis and probes. Destroyed when dropped.
pub struct Puncher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Puncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puncher")
            .field("is_initiator", &self.inner.is_initiator)
            .finish_non_exhaustive()
    }
}

impl Drop for Puncher {
    fn drop(&mut self) {
        self.inner.destroy();
    }
}

impl Puncher {
    /// A puncher on a fresh pool socket; its NAT sampling starts at once.
    pub(crate) fn new(
        ctx: Arc<NodeCtx>,
        is_initiator: bool,
        remote_firewall: u64,
    ) -> Result<Puncher, intercom_udx::UdxError> {
        let socket = ctx.sockets.acquire()?;
        let (probes, probes_rx) = mpsc::channel(PROBE_QUEUE);
        socket.set_probe_listener(Some(probes.clone()));
        let firewalled = ctx.firewalled();
        let inner = Arc::new(Inner {
            ctx,
            is_initiator,
            state: std::sync::Mutex::new(State {
                nat: Nat::new(firewalled),
                generation: 0,
                holders: vec![socket.clone()],
                remote_firewall,
                remote_addresses: Vec::new(),
                remote_holepunching: false,
                punching: false,
                connected: false,
                destroyed: false,
                randomized: false,
            }),
            changed: Notify::new(),
            outcome: watch::channel(None).0,
            probes,
            punched: OnceCell::new(),
            reopen: AsyncMutex::new(()),
        });
        tokio::spawn(sample(inner.clone(), socket, 0));
        tokio::spawn(listen(inner.clone(), probes_rx));
        Ok(Puncher { inner })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// The current socket (the first holder).
    pub fn socket(&self) -> Option<Arc<NodeSocket>> {
        self.state().holders.first().cloned()
    }

    /// Our NAT verdict.
    pub fn nat_firewall(&self) -> u64 {
        self.state().nat.firewall
    }

    /// Our addresses as sampled.
    pub fn nat_addresses(&self) -> Option<Vec<SocketAddrV4>> {
        self.state().nat.addresses.clone()
    }

    /// A DHT node at `from` saw our socket at `to`.
    pub fn nat_add(&self, to: SocketAddrV4, from: SocketAddrV4) {
        self.state().nat.add(to, from);
        self.inner.changed.notify_waiters();
    }

    /// Stops updating our verdict (we are telling it to the remote).
    pub fn nat_freeze(&self) {
        self.state().nat.freeze();
    }

    /// The remote's NAT verdict.
    pub fn remote_firewall(&self) -> u64 {
        self.state().remote_firewall
    }

    /// The remote's addresses.
    pub fn remote_addresses(&self) -> Vec<RemoteAddress> {
        self.state().remote_addresses.clone()
    }

    /// Whether the remote said it is punching.
    pub fn remote_holepunching(&self) -> bool {
        self.state().remote_holepunching
    }

    /// Whether we are punching.
    pub fn punching(&self) -> bool {
        self.state().punching
    }

    /// Whether a probe connected us.
    pub fn is_connected(&self) -> bool {
        self.state().connected
    }

    /// Whether the puncher was destroyed.
    pub fn is_destroyed(&self) -> bool {
        self.state().destroyed
    }

    /// `updateRemote`: the remote's latest holepunch payload; `verified` is the host
    /// whose token it echoed.
    pub fn update_remote(
        &self,
        punching: bool,
        firewall: u64,
        addresses: Option<&[SocketAddrV4]>,
        verified: Option<Ipv4Addr>,
    ) {
        let mut st = self.state();
        let previous = std::mem::take(&mut st.remote_addresses);
        st.remote_addresses = addresses
            .unwrap_or_default()
            .iter()
            .map(|a| RemoteAddress {
                addr: *a,
                verified: verified == Some(*a.ip())
                    || previous.iter().any(|p| p.verified && p.addr.ip() == a.ip()),
            })
            .collect();
        st.remote_firewall = firewall;
        st.remote_holepunching = punching;
    }

    /// Sends a probe (`ping`).
    pub fn ping(&self, addr: SocketAddrV4) {
        if let Some(s) = self.socket() {
            s.send_probe(addr, false);
        }
    }

    /// Sends a low-TTL probe that opens our NAT towards `addr` (`openSession`).
    pub fn open_session(&self, addr: SocketAddrV4) {
        if let Some(s) = self.socket() {
            s.send_probe(addr, true);
        }
    }

    async fn nat_resolved(&self) {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let st = self.state();
                if st.nat.is_resolved() || st.destroyed {
                    return;
                }
            }
            changed.await;
        }
    }

    fn unstable(&self) -> bool {
        let st = self.state();
        is_unstable(st.nat.firewall, st.remote_firewall)
    }

    /// `analyze(allowReopen)`: waits for the NAT verdict; true when it can be punched.
    /// With `allow_reopen` an unstable socket is replaced up to [`MAX_REOPENS`] times.
    pub async fn analyze(&self, allow_reopen: bool) -> bool {
        self.nat_resolved().await;
        if !self.unstable() {
            return true;
        }
        if !allow_reopen {
            return false;
        }
        let _guard = self.inner.reopen.lock().await;
        for _ in 0..MAX_REOPENS {
            {
                let st = self.state();
                if !is_unstable(st.nat.firewall, st.remote_firewall)
                    || st.destroyed
                    || st.connected
                    || st.punching
                {
                    break;
                }
            }
            if self.reset().is_err() {
                break;
            }
            self.nat_resolved().await;
        }
        coerce_firewall(self.nat_firewall()) == CONSISTENT
    }

    /// `_reset`: a new socket and a new NAT analysis.
    fn reset(&self) -> Result<(), intercom_udx::UdxError> {
        let socket = self.inner.ctx.sockets.acquire()?;
        socket.set_probe_listener(Some(self.inner.probes.clone()));
        let firewalled = self.inner.ctx.firewalled();
        let generation = {
            let mut st = self.state();
            if let Some(old) = st.holders.pop() {
                old.set_probe_listener(None);
            }
            st.holders.push(socket.clone());
            st.nat = Nat::new(firewalled);
            st.generation += 1;
            st.generation
        };
        tokio::spawn(sample(self.inner.clone(), socket, generation));
        Ok(())
    }

    /// `punch()`: starts punching once (later calls return the first answer); true when
    /// a strategy applies and the probes are under way.
    pub async fn punch(&self) -> bool {
        *self.inner.punched.get_or_init(|| self.start_punch()).await
    }

    async fn start_punch(&self) -> bool {
        let strategy = {
            let mut st = self.state();
            if st.destroyed || st.connected || st.remote_addresses.is_empty() {
                return false;
            }
            st.punching = true;
            choose_strategy(st.nat.firewall, st.remote_firewall, &st.remote_addresses)
        };
        match strategy {
            Strategy::Consistent => {
                tokio::spawn(consistent_probe(self.inner.clone()));
                true
            }
            Strategy::RandomProbes(addr) => {
                self.inner.increment_randomized();
                tokio::spawn(random_probes(self.inner.clone(), addr));
                true
            }
            Strategy::Birthday(addr) => {
                self.inner.increment_randomized();
                self.open_birthday_sockets(addr);
                if self.punching() {
                    tokio::spawn(keep_alive_random_nat(self.inner.clone(), addr));
                }
                true
            }
            Strategy::None => false,
        }
    }

    fn open_birthday_sockets(&self, remote: SocketAddrV4) {
        loop {
            {
                let st = self.state();
                if !st.punching || st.holders.len() >= BIRTHDAY_SOCKETS {
                    return;
                }
            }
            let Ok(socket) = self.inner.ctx.sockets.acquire() else {
                return;
            };
            socket.set_probe_listener(Some(self.inner.probes.clone()));
            socket.send_probe(remote, true);
            self.state().holders.push(socket);
        }
    }

    /// Resolves when the puncher connected or aborted.
    pub async fn outcome(&self) -> PunchOutcome {
        self.outcome_future().await
    }

    /// [`Puncher::outcome`] as a future that does not borrow the puncher.
    pub fn outcome_future(
        &self,
    ) -> impl std::future::Future<Output = PunchOutcome> + Send + 'static {
        let mut rx = self.inner.outcome.subscribe();
        async move {
            let r = rx.wait_for(Option::is_some).await;
            match r.ok().and_then(|v| v.clone()) {
                Some(o) => o,
                None => PunchOutcome::Aborted,
            }
        }
    }

    /// Stops punching and releases the sockets (the connected one stays with its
    /// stream).
    pub fn destroy(&self) {
        self.inner.destroy();
    }
}

impl Inner {
    fn increment_randomized(&self) {
        let mut st = lock(&self.state);
        if !st.randomized {
            st.randomized = true;
            lock(&self.ctx.random).active += 1;
        }
    }

    fn decrement_randomized(&self, st: &mut State) {
        if st.randomized {
            st.randomized = false;
            let mut r = lock(&self.ctx.random);
            r.last = Some(Instant::now());
            r.active = r.active.saturating_sub(1);
        }
    }

    fn destroy(&self) {
        let mut st = lock(&self.state);
        if st.destroyed {
            return;
        }
        st.destroyed = true;
        st.punching = false;
        for h in st.holders.drain(..) {
            h.set_probe_listener(None);
        }
        st.nat.destroy();
        if !st.connected {
            self.decrement_randomized(&mut st);
            self.outcome.send_replace(Some(PunchOutcome::Aborted));
        }
        drop(st);
        self.changed.notify_waiters();
    }

    fn auto_destroy(&self) {
        if !lock(&self.state).connected {
            self.destroy();
        }
    }

    fn on_probe(&self, kind: SocketKind, from: SocketAddrV4) {
        let mut st = lock(&self.state);
        let Some(socket) = st.holders.iter().find(|h| h.kind() == kind).cloned() else {
            return;
        };
        if !self.is_initiator {
            socket.send_probe(from, false);
            return;
        }
        if st.connected || st.destroyed {
            return;
        }
        st.connected = true;
        st.punching = false;
        for h in st.holders.drain(..) {
            if h.kind() != kind {
                h.set_probe_listener(None);
            }
        }
        socket.set_probe_listener(None);
        self.decrement_randomized(&mut st);
        self.outcome
            .send_replace(Some(PunchOutcome::Connected(socket, from)));
        drop(st);
        self.changed.notify_waiters();
    }

    fn punching(&self) -> bool {
        lock(&self.state).punching
    }

    /// Sleeps `ms`, or less when the puncher ends; false when it ended.
    async fn pause(&self, ms: u64) -> bool {
        let mut rx = self.outcome.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => true,
            _ = rx.wait_for(Option::is_some) => false,
        }
    }
}

/// The probe listener of every socket of a puncher.
async fn listen(inner: Arc<Inner>, mut rx: mpsc::Receiver<(SocketKind, SocketAddrV4)>) {
    let mut done = inner.outcome.subscribe();
    loop {
        tokio::select! {
            p = rx.recv() => match p {
                Some((kind, from)) => inner.on_probe(kind, from),
                None => return,
            },
            _ = done.wait_for(Option::is_some) => {
                // Keep echoing on the server while a connected client may still probe.
                if inner.is_initiator || lock(&inner.state).destroyed {
                    return;
                }
            }
        }
    }
}

/// `autoSample`: pings up to [`crate::nat::MIN_SAMPLES`] DHT nodes from `socket`, twice
/// if too few answer, feeding the NAT of `generation`.
async fn sample(inner: Arc<Inner>, socket: Arc<NodeSocket>, generation: u64) {
    let kind = socket.kind();
    for _round in 0..2 {
        let Ok(nodes) = inner.ctx.dht.nodes(None).await else {
            break;
        };
        let picks = {
            let mut st = lock(&inner.state);
            if st.generation != generation || st.destroyed {
                return;
            }
            st.nat.pick_nodes(&nodes, 0)
        };
        let mut pings = tokio::task::JoinSet::new();
        for node in picks {
            let dht = inner.ctx.dht.clone();
            pings.spawn(async move {
                let spec = RequestSpec {
                    internal: true,
                    command: intercom_dht_rpc::commands::PING,
                    ..RequestSpec::default()
                };
                let opts = RequestOptions {
                    retries: 0,
                    socket: Some(kind),
                    timeout_ms: None,
                };
                dht.request(node, spec, opts).await
            });
        }
        while let Some(r) = pings.join_next().await {
            if let Ok(Ok(reply)) = r {
                let mut st = lock(&inner.state);
                if st.generation != generation {
                    return;
                }
                st.nat.add(reply.to, reply.from.addr);
                drop(st);
                inner.changed.notify_waiters();
            }
        }
        if !lock(&inner.state).nat.wants_more() {
            break;
        }
    }
    let mut st = lock(&inner.state);
    if st.generation == generation {
        st.nat.resolve();
    }
    drop(st);
    inner.changed.notify_waiters();
}

async fn consistent_probe(inner: Arc<Inner>) {
    // The server's "fast open" already fired a probe: give it a second first.
    if !inner.is_initiator && !inner.pause(1000).await {
        return inner.auto_destroy();
    }
    let mut tries = 0;
    while inner.punching() && tries < CONSISTENT_TRIES {
        tries += 1;
        let (socket, targets) = {
            let st = lock(&inner.state);
            (
                st.holders.first().cloned(),
                consistent_targets(tries, &st.remote_addresses),
            )
        };
        if let Some(s) = socket {
            for t in targets {
                s.send_probe(t, false);
            }
        }
        if inner.punching() && !inner.pause(1000).await {
            break;
        }
    }
    inner.auto_destroy();
}

async fn random_probes(inner: Arc<Inner>, remote: SocketAddrV4) {
    let mut tries = RANDOM_TRIES;
    while inner.punching() && tries > 0 {
        tries -= 1;
        let port = random_port(u32::from_le_bytes(intercom_crypto::random_array()));
        let socket = lock(&inner.state).holders.first().cloned();
        if let Some(s) = socket {
            s.send_probe(SocketAddrV4::new(*remote.ip(), port), false);
        }
        if inner.punching() && !inner.pause(20).await {
            break;
        }
    }
    inner.auto_destroy();
}

async fn keep_alive_random_nat(inner: Arc<Inner>, remote: SocketAddrV4) {
    if !inner.pause(100).await {
        return inner.auto_destroy();
    }
    let mut i = 0;
    let mut low_ttl_rounds = 1;
    let mut tries = RANDOM_TRIES;
    while inner.punching() && tries > 0 {
        tries -= 1;
        let socket = {
            let st = lock(&inner.state);
            if st.holders.is_empty() {
                break;
            }
            if i >= st.holders.len() {
                i = 0;
                if low_ttl_rounds > 0 {
                    low_ttl_rounds -= 1;
                }
            }
            let s = st.holders[i].clone();
            i += 1;
            s
        };
        socket.send_probe(remote, low_ttl_rounds > 0);
        if inner.punching() && !inner.pause(20).await {
            break;
        }
    }
    inner.auto_destroy();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ra(port: u16, verified: bool) -> RemoteAddress {
        RemoteAddress {
            addr: SocketAddrV4::new(Ipv4Addr::new(1, 1, 1, 1), port),
            verified,
        }
    }

    #[test]
    fn strategies_follow_js() {
        let v = [ra(1, false), ra(2, true)];
        assert_eq!(choose_strategy(OPEN, CONSISTENT, &v), Strategy::Consistent);
        assert_eq!(
            choose_strategy(CONSISTENT, OPEN, &[ra(1, false)]),
            Strategy::Consistent
        );
        assert_eq!(
            choose_strategy(CONSISTENT, RANDOM, &v),
            Strategy::RandomProbes(v[1].addr)
        );
        assert_eq!(
            choose_strategy(RANDOM, CONSISTENT, &v),
            Strategy::Birthday(v[1].addr)
        );
        assert_eq!(choose_strategy(RANDOM, RANDOM, &v), Strategy::None);
        assert_eq!(
            choose_strategy(CONSISTENT, RANDOM, &[ra(1, false)]),
            Strategy::None
        );
        assert_eq!(choose_strategy(CONSISTENT, CONSISTENT, &[]), Strategy::None);
        assert_eq!(choose_strategy(UNKNOWN, CONSISTENT, &v), Strategy::None);
    }

    #[test]
    fn unverified_addresses_every_fourth_try() {
        let v = [ra(1, false), ra(2, true)];
        let hits: Vec<usize> = (1..=10).map(|t| consistent_targets(t, &v).len()).collect();
        assert_eq!(hits, vec![1, 1, 1, 2, 1, 1, 1, 2, 1, 1]);
    }

    #[test]
    fn stability_and_ports() {
        assert!(is_unstable(UNKNOWN, CONSISTENT));
        assert!(is_unstable(RANDOM, RANDOM));
        assert!(!is_unstable(RANDOM, CONSISTENT));
        assert!(!is_unstable(CONSISTENT, RANDOM));
        assert_eq!(random_port(0), 1000);
        assert_eq!(random_port(64535), 65535);
        assert_eq!(random_port(64536), 1000);
    }
}
