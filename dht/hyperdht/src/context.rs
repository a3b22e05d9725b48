//! What the connection machinery of one node shares: the dht-rpc handle, the sockets,
//! the node-wide random-punch limiter and the relay address cache (the `HyperDHT`
//! instance state that `lib/connect.js`, `lib/server.js` and `lib/holepuncher.js` read).

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use intercom_dht_rpc::{Dht, SocketKind};
use tokio::time::Instant;

use crate::limits::{ConnectionLimits, Limiter};
use crate::socket::{NodeSocket, Sockets};

/// Most remote keys whose relay addresses are remembered (`relayAddresses` cache).
const RELAY_CACHE: usize = 512;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The node-wide limit on punches through random NATs (`_randomPunches`,
/// `_randomPunchLimit = 1`, `_lastRandomPunch`, `randomPunchInterval`).
#[derive(Debug)]
pub(crate) struct RandomPunches {
    pub active: usize,
    pub limit: usize,
    pub last: Option<Instant>,
    pub interval: Duration,
}

impl RandomPunches {
    /// Whether a random punch must wait (`tryLater`).
    pub fn must_wait(&self, now: Instant) -> bool {
        self.active >= self.limit || self.last.is_some_and(|l| now - l < self.interval)
    }
}

/// Relay addresses learned per remote key, with their insertion order for eviction.
type RelayCache = (HashMap<[u8; 32], Vec<SocketAddrV4>>, VecDeque<[u8; 32]>);

/// Shared state of one node's connection machinery.
pub(crate) struct NodeCtx {
    pub dht: Dht,
    pub sockets: Arc<Sockets>,
    pub random: Mutex<RandomPunches>,
    relay_cache: Mutex<RelayCache>,
    pub limiter: Arc<Limiter>,
}

impl NodeCtx {
    pub fn new(
        dht: Dht,
        sockets: Arc<Sockets>,
        random_punch_interval: Duration,
        limits: ConnectionLimits,
    ) -> NodeCtx {
        NodeCtx {
            dht,
            sockets,
            random: Mutex::new(RandomPunches {
                active: 0,
                limit: 1,
                last: None,
                interval: random_punch_interval,
            }),
            relay_cache: Mutex::new((HashMap::new(), VecDeque::new())),
            limiter: Limiter::new(limits),
        }
    }

    /// The secret-stream settings of this node's connections: keep-alives filtered, the
    /// frame cap and the node-wide frame memory budget.
    pub fn stream_config(&self) -> intercom_secret_stream::SecretStreamConfig {
        intercom_secret_stream::SecretStreamConfig {
            max_frame: self.limiter.limits().max_frame_bytes,
            budget: Some(self.limiter.frames()),
            ..crate::connection::stream_config()
        }
    }

    /// `dht.remoteAddress()`: our reachable address when we are not firewalled and the
    /// sampled port is our server port.
    pub fn remote_address(&self) -> Option<SocketAddrV4> {
        let s = self.dht.status();
        let host = s.host?;
        (s.port != 0 && !s.firewalled && s.port == self.dht.server_port())
            .then(|| SocketAddrV4::new(host, s.port))
    }

    /// Whether the DHT node is firewalled.
    pub fn firewalled(&self) -> bool {
        self.dht.status().firewalled
    }

    /// `dht.socket`: the socket requests leave from (client while firewalled).
    pub fn default_socket(&self) -> Arc<NodeSocket> {
        if self.firewalled() {
            self.sockets.client().clone()
        } else {
            self.sockets.server().clone()
        }
    }

    /// The kind of [`NodeCtx::default_socket`].
    pub fn default_kind(&self) -> SocketKind {
        if self.firewalled() {
            SocketKind::Client
        } else {
            SocketKind::Server
        }
    }

    /// `Holepuncher.localAddresses(serverSocket)`: the server socket's address when it
    /// is bound to one interface. Bound to all interfaces we share none (JS lists every
    /// IPv4 interface; we do not enumerate them).
    pub fn local_addresses(&self) -> Vec<SocketAddrV4> {
        let addr = self.sockets.server().local_addr();
        if addr.ip().is_unspecified() {
            Vec::new()
        } else {
            vec![addr]
        }
    }

    /// Remembers the relay addresses a remote key is reachable through.
    pub fn cache_relays(&self, key: [u8; 32], relays: Vec<SocketAddrV4>) {
        let mut c = lock(&self.relay_cache);
        let (map, order) = &mut *c;
        if map.insert(key, relays).is_none() {
            order.push_back(key);
            while order.len() > RELAY_CACHE {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    /// Cached relay addresses of a remote key.
    pub fn cached_relays(&self, key: &[u8; 32]) -> Option<Vec<SocketAddrV4>> {
        lock(&self.relay_cache).0.get(key).cloned()
    }
}

/// `isBogon` of the `bogon` module for IPv4: private, loopback, link-local, carrier-grade
/// NAT, multicast, reserved and documentation ranges.
pub fn is_bogon(ip: &Ipv4Addr) -> bool {
    is_private(ip) || is_reserved(ip)
}

/// `isPrivate`: 10/8, 172.16/12, 192.168/16.
pub fn is_private(ip: &Ipv4Addr) -> bool {
    ip.is_private()
}

/// `isReserved`: the non-private bogon ranges.
pub fn is_reserved(ip: &Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 0
        || o[0] == 127
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 192 && o[1] == 0 && o[2] == 2)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
        || o[0] >= 224
}

/// `Holepuncher.matchAddress`: the remote LAN address sharing the longest prefix (in
/// whole octets, at least one) with one of ours.
pub fn match_address(local: &[SocketAddrV4], remote: &[SocketAddrV4]) -> Option<SocketAddrV4> {
    let mut best: (u8, Option<SocketAddrV4>) = (1, None);
    for l in local {
        let a = l.ip().octets();
        for r in remote {
            let b = r.ip().octets();
            if a[0] == b[0] {
                if best.0 == 1 {
                    best = (2, Some(*r));
                }
                if a[1] == b[1] {
                    if best.0 == 2 {
                        best = (3, Some(*r));
                    }
                    if a[2] == b[2] {
                        return Some(*r);
                    }
                }
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn bogons() {
        for b in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.20.0.1",
            "100.64.0.1",
        ] {
            assert!(is_bogon(&b.parse().unwrap()), "{b}");
        }
        for p in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1"] {
            assert!(!is_bogon(&p.parse().unwrap()), "{p}");
        }
        assert!(is_reserved(&"127.0.0.1".parse().unwrap()));
        assert!(!is_reserved(&"10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn matches_longest_prefix() {
        let mine = [a("192.168.122.238:1")];
        let theirs = [a("192.168.0.23:2"), a("192.168.122.1:3")];
        assert_eq!(match_address(&mine, &theirs), Some(theirs[1]));
        assert_eq!(
            match_address(&mine, &[a("192.1.1.1:1"), a("192.168.9.9:1")]),
            Some(a("192.168.9.9:1"))
        );
        assert_eq!(match_address(&mine, &[a("10.0.0.1:1")]), None);
        assert_eq!(match_address(&mine, &[]), None);
    }
}
