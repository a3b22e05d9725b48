//! Keeps a listening server announced (`lib/announcer.js`).
//!
//! The server's key is announced under `hash(publicKey)` on the 3 closest nodes of a
//! FIND_PEER walk; those nodes keep a *forward* and relay handshakes to us. Every 3 s
//! the relays are pinged; when fewer than `min(relays, 3)` answer, or after 100 rounds
//! (about 5 minutes), the walk and the announcements are redone. Relays dropped between
//! two updates are unannounced, and [`Announcer::stop`] unannounces the current ones.
//!
//! The relays ([`RelayInfo`]: node address and our address as that node saw it) go into
//! handshake replies so a client can holepunch through them; up to three relay
//! addresses (ours first when we are reachable) are the `relayAddresses` of the
//! server's noise payload.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_dht_rpc::{Peer as NodeRef, QuerySpec, RequestOptions, RequestSpec};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::constants::Command;
use crate::context::{lock, NodeCtx};
use crate::messages::RelayInfo;
use crate::ops::{announce_request, unannounce_request};

/// Relays pinged per round that must answer (`MIN_ACTIVE`).
const MIN_ACTIVE: usize = 3;
/// Ping rounds between two updates.
const ROUNDS: usize = 100;
/// Pause between ping rounds.
const ROUND_PAUSE: Duration = Duration::from_secs(3);
/// Nodes announced to (`pickBest`).
const ANNOUNCE_TO: usize = 3;

#[derive(Default)]
struct State {
    relays: Vec<RelayInfo>,
    relay_addresses: Vec<SocketAddrV4>,
    /// `_serverRelays`: the nodes announced to in the last three updates, newest last.
    server_relays: [HashMap<SocketAddrV4, NodeRef>; 3],
    closest_nodes: Vec<SocketAddrV4>,
}

struct Inner {
    ctx: Arc<NodeCtx>,
    key_pair: KeyPair,
    target: [u8; 32],
    state: Mutex<State>,
    refresh: Notify,
    stopped: watch::Sender<bool>,
}

/// The announcer of one server.
pub(crate) struct Announcer {
    inner: Arc<Inner>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Announcer {
    /// Announces once, then keeps the announcement fresh in the background.
    pub async fn start(ctx: Arc<NodeCtx>, key_pair: KeyPair, target: [u8; 32]) -> Announcer {
        let inner = Arc::new(Inner {
            ctx,
            key_pair,
            target,
            state: Mutex::new(State::default()),
            refresh: Notify::new(),
            stopped: watch::channel(false).0,
        });
        inner.update().await;
        let task = tokio::spawn(background(inner.clone()));
        Announcer {
            inner,
            task: Mutex::new(Some(task)),
        }
    }

    /// The relays a client can holepunch through.
    pub fn relays(&self) -> Vec<RelayInfo> {
        lock(&self.inner.state).relays.clone()
    }

    /// Up to three addresses we can be reached through.
    pub fn relay_addresses(&self) -> Vec<SocketAddrV4> {
        lock(&self.inner.state).relay_addresses.clone()
    }

    /// Whether `addr` is one of the nodes we announced to (`isRelay`).
    pub fn is_relay(&self, addr: &SocketAddrV4) -> bool {
        lock(&self.inner.state)
            .server_relays
            .iter()
            .any(|m| m.contains_key(addr))
    }

    /// Redoes the announcement soon (`refresh`).
    pub fn refresh(&self) {
        self.inner.refresh.notify_one();
    }

    /// Stops refreshing and unannounces from the current relays.
    pub async fn stop(&self) {
        self.inner.stopped.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        let current: Vec<NodeRef> = lock(&self.inner.state).server_relays[2]
            .values()
            .copied()
            .collect();
        self.inner.unannounce_all(current).await;
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.inner.stopped.send_replace(true);
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

impl Inner {
    fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// `_update`: walk towards the target, announce to the 3 closest, unannounce the
    /// relays that dropped out.
    async fn update(&self) {
        let nodes = {
            let mut st = lock(&self.state);
            st.server_relays.rotate_left(1);
            st.server_relays[2].clear();
            st.closest_nodes.clone()
        };
        let dht = &self.ctx.dht;
        let closest = match dht
            .query(QuerySpec {
                target: self.target,
                command: Command::FindPeer.id(),
                nodes,
                ..QuerySpec::default()
            })
            .await
        {
            Ok(q) => q.finish().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if self.is_stopped() {
            return;
        }
        let mut relay_addresses = Vec::new();
        if let Some(addr) = self.ctx.remote_address() {
            relay_addresses.push(addr);
        }
        let mut commits = JoinSet::new();
        for r in closest.iter().take(ANNOUNCE_TO) {
            let (Some(token), Some(id)) = (r.token, r.from.id) else {
                continue;
            };
            let spec = announce_request(&self.target, &token, &id, &self.key_pair, &[], 0);
            let (dht, from, to) = (dht.clone(), r.from, r.to);
            commits.spawn(async move {
                let ok = dht
                    .request(from.addr, spec, RequestOptions::default())
                    .await
                    .is_ok_and(|res| res.error == 0);
                (ok, from, to)
            });
        }
        let mut relays = Vec::new();
        let mut announced = HashMap::new();
        while let Some(r) = commits.join_next().await {
            let Ok((true, from, to)) = r else { continue };
            if relay_addresses.len() < 3 {
                relay_addresses.push(from.addr);
            }
            relays.push(RelayInfo {
                relay_address: from.addr,
                peer_address: to,
            });
            announced.insert(from.addr, from);
        }
        if self.is_stopped() {
            return;
        }
        let removed: Vec<NodeRef> = {
            let mut st = lock(&self.state);
            st.closest_nodes = closest.iter().map(|r| r.from.addr).collect();
            st.relays = relays;
            st.relay_addresses = relay_addresses;
            st.server_relays[2] = announced;
            let [_, prev, cur] = &st.server_relays;
            prev.iter()
                .filter(|(k, _)| !cur.contains_key(*k))
                .map(|(_, v)| *v)
                .collect()
        };
        self.unannounce_all(removed).await;
    }

    async fn unannounce_all(&self, nodes: Vec<NodeRef>) {
        let mut set = JoinSet::new();
        for n in nodes {
            let (dht, kp, target) = (self.ctx.dht.clone(), self.key_pair.clone(), self.target);
            set.spawn(async move {
                // A fresh token first (`_unannounce`).
                let spec = RequestSpec {
                    command: Command::FindPeer.id(),
                    target: Some(target),
                    ..RequestSpec::default()
                };
                let Ok(res) = dht.request(n.addr, spec, RequestOptions::default()).await else {
                    return;
                };
                let (Some(token), Some(id), Some(_)) = (res.token, res.from.id, res.value) else {
                    return;
                };
                let spec = unannounce_request(&target, &token, &id, &kp);
                let _ = dht.request(n.addr, spec, RequestOptions::default()).await;
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// Pings the current relays; how many answered.
    async fn ping_relays(&self) -> (usize, usize) {
        let nodes: Vec<SocketAddrV4> = lock(&self.state).server_relays[2].keys().copied().collect();
        let mut set = JoinSet::new();
        for n in &nodes {
            let (dht, n) = (self.ctx.dht.clone(), *n);
            set.spawn(async move { dht.ping(n).await.is_ok() });
        }
        let mut active = 0;
        while let Some(r) = set.join_next().await {
            active += usize::from(r.unwrap_or(false));
        }
        (active, nodes.len())
    }
}

/// `_background`: ping rounds, then an update.
async fn background(inner: Arc<Inner>) {
    let mut stopped = inner.stopped.subscribe();
    loop {
        let mut refreshing = false;
        for _ in 0..ROUNDS {
            if inner.is_stopped() {
                return;
            }
            let (active, pinged) = inner.ping_relays().await;
            if active < pinged.min(MIN_ACTIVE) {
                refreshing = true;
            }
            if inner.is_stopped() {
                return;
            }
            if refreshing {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(ROUND_PAUSE) => {}
                _ = inner.refresh.notified() => break,
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
        if inner.is_stopped() {
            return;
        }
        inner.update().await;
    }
}
