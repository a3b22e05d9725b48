//! The swarm's decisions as a state machine with an explicit clock (the connection
//! logic of hyperswarm's `index.js`): which peer to dial next, which of two
//! connections to the same key survives, when to retry, when a flush is done.
//!
//! Inputs are what happened (a peer was found, an attempt finished, a server
//! connection arrived, a connection closed, time passed); outputs are [`Action`]s the
//! driver carries out (dial, abort, destroy, resolve a flush). It owns no sockets and
//! no tasks.
//!
//! One connection per remote key: `conns` holds every connection, dialling ones
//! included (JS `_allConnections`). A server connection for a key we already have is
//! kept when the existing one already exchanged bytes both ways (the remote must have
//! lost it and reconnected) or when the remote is the side expected to dial: the peer
//! with the larger public key (byte-wise) is the expected initiator, as in
//! `_handleServerConnection`. Both sides apply the same rule, so a simultaneous dial
//! leaves one connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use intercom_hyperdht::ConnectionHandle;
use tokio::time::Instant;

use crate::peer::PeerInfo;
use crate::queue::ShuffledQueue;
use crate::retry::RetryTimer;

type Key = [u8; 32];

/// Decides whether a remote key may connect (true) or is firewalled (false).
pub type SwarmFirewall = Arc<dyn Fn(&[u8; 32]) -> bool + Send + Sync>;

/// Limits and timers of the core.
#[derive(Clone)]
pub struct CoreConfig {
    /// Our public key.
    pub public_key: Key,
    /// Most connections (`maxPeers`).
    pub max_peers: usize,
    /// Most dials at once (`maxParallel`).
    pub max_parallel: usize,
    /// Most client connections.
    pub max_client_connections: usize,
    /// Most server connections.
    pub max_server_connections: usize,
    /// Retry backoffs.
    pub backoffs: [Duration; 4],
    /// Retry jitter.
    pub jitter: Duration,
    /// The user's firewall.
    pub firewall: Option<SwarmFirewall>,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial `key` (attempt `attempt`).
    Connect {
        /// Attempt id.
        attempt: u64,
        /// Remote key.
        key: Key,
        /// Its relay addresses from discovery.
        relay_addresses: Vec<SocketAddrV4>,
    },
    /// Give up a dial in progress.
    Abort {
        /// Attempt id.
        attempt: u64,
    },
    /// Destroy an open connection.
    Destroy {
        /// Connection id.
        id: u64,
    },
    /// A flush completed (`true`) or was cancelled (`false`).
    Flushed(u64, bool),
    /// A peer was banned by the firewall.
    Banned(Key),
    /// A peer found under these joined topics failed every retry: look the topics up
    /// again soon (it may be back, or announced with new relays) instead of in 10 minutes.
    Rediscover(Vec<Key>),
}

enum Entry {
    Connecting {
        attempt: u64,
        queued: bool,
    },
    Open {
        id: u64,
        client: bool,
        handle: Option<ConnectionHandle>,
    },
}

/// What to do with a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerDecision {
    /// Keep it.
    Accept,
    /// Destroy it (duplicate, destroyed swarm or over the limit).
    Reject,
}

/// What to do with a finished dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientDecision {
    /// Hand it to the user.
    Accept,
    /// It was superseded: destroy it.
    Discard,
}

struct PendingFlush {
    id: u64,
    missing: usize,
    tick: u64,
}

/// The swarm core.
pub struct Core {
    cfg: CoreConfig,
    peers: HashMap<Key, PeerInfo>,
    queue: ShuffledQueue,
    conns: HashMap<Key, Entry>,
    opened: usize,
    connecting: usize,
    client_connections: usize,
    server_connections: usize,
    server_refused: u64,
    timer: RetryTimer,
    topics: HashSet<Key>,
    explicit: Vec<Key>,
    flushes: Vec<PendingFlush>,
    flush_tick: u64,
    next_attempt: u64,
    actions: VecDeque<Action>,
    destroyed: bool,
    draining: bool,
}

impl Core {
    /// A core with `seed` for its shuffling and jitter.
    pub fn new(cfg: CoreConfig, seed: u64) -> Core {
        let mut rng = seed | 1;
        let mut rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let timer = RetryTimer::new(cfg.backoffs, cfg.jitter, &mut rand);
        let qseed = rand();
        Core {
            cfg,
            peers: HashMap::new(),
            queue: ShuffledQueue::new(qseed),
            conns: HashMap::new(),
            opened: 0,
            connecting: 0,
            client_connections: 0,
            server_connections: 0,
            server_refused: 0,
            timer,
            topics: HashSet::new(),
            explicit: Vec::new(),
            flushes: Vec::new(),
            flush_tick: 0,
            next_attempt: 1,
            actions: VecDeque::new(),
            destroyed: false,
            draining: false,
        }
    }

    /// Open connections dialled by others.
    pub fn server_connection_count(&self) -> usize {
        self.server_connections
    }

    /// Server connections refused because `max_server_connections` were open.
    pub fn server_refused_over_limit(&self) -> u64 {
        self.server_refused
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Core::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer.next_timeout()
    }

    /// Connections, dialling ones included.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Open connections.
    pub fn open_count(&self) -> usize {
        self.opened
    }

    /// Dials in progress.
    pub fn connecting(&self) -> usize {
        self.connecting
    }

    /// Keys with an open connection.
    pub fn open_keys(&self) -> Vec<Key> {
        self.conns
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Open { .. }))
            .map(|(k, _)| *k)
            .collect()
    }

    /// A known peer.
    pub fn peer(&self, key: &Key) -> Option<&PeerInfo> {
        self.peers.get(key)
    }

    /// Known peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// We joined a topic (peers found under it are requeued after failures).
    pub fn add_topic(&mut self, topic: Key) {
        self.topics.insert(topic);
    }

    /// We left a topic.
    pub fn remove_topic(&mut self, topic: &Key) {
        self.topics.remove(topic);
    }

    /// `_handleFirewall`: false when `key` must not connect (our own key, banned, or
    /// refused by the user's firewall, which bans it).
    pub fn firewall_allows(&mut self, key: &Key) -> bool {
        if *key == self.cfg.public_key {
            return false;
        }
        if self.peers.get(key).is_some_and(|p| p.banned) {
            return false;
        }
        let allowed = self.cfg.firewall.as_ref().is_none_or(|f| f(key));
        if !allowed {
            if let Some(p) = self.upsert(*key, None) {
                p.banned = true;
            }
            self.actions.push_back(Action::Banned(*key));
        }
        allowed
    }

    fn upsert(&mut self, key: Key, relays: Option<Vec<SocketAddrV4>>) -> Option<&mut PeerInfo> {
        if key == self.cfg.public_key {
            return None;
        }
        let p = self
            .peers
            .entry(key)
            .or_insert_with(|| PeerInfo::new(key, Vec::new()));
        if let Some(r) = relays {
            p.relay_addresses = r;
        }
        Some(p)
    }

    fn within_max_peers(&self) -> bool {
        let e = self.explicit.len();
        let factor = match e {
            0 => 1,
            1 => 2,
            2 | 3 => 3,
            _ => 4,
        };
        factor * self.conns.len() < self.cfg.max_peers
    }

    fn should_connect(&self) -> bool {
        !self.destroyed
            && self.connecting < self.cfg.max_parallel
            && self.within_max_peers()
            && self.client_connections < self.cfg.max_client_connections
    }

    fn should_requeue(&self, p: &PeerInfo) -> bool {
        !self.destroyed && (p.explicit || p.topics.iter().any(|t| self.topics.contains(t)))
    }

    /// `_handlePeer`: `key` was found under `topic`.
    pub fn on_peer(&mut self, key: Key, relay_addresses: Vec<SocketAddrV4>, topic: Key) {
        if self.destroyed {
            return;
        }
        let connected = self.conns.contains_key(&key);
        let Some(p) = self.upsert(key, Some(relay_addresses)) else {
            return;
        };
        p.add_topic(topic);
        if connected {
            return;
        }
        if !p.prioritized() || p.server() {
            p.reset();
        }
        if p.update_priority() {
            self.enqueue(key);
        }
    }

    /// `joinPeer`: keep a connection to `key` regardless of topics.
    pub fn join_peer(&mut self, key: Key) {
        let connected = self.conns.contains_key(&key);
        let Some(p) = self.upsert(key, None) else {
            return;
        };
        p.explicit = true;
        if !self.explicit.contains(&key) {
            self.explicit.push(key);
        }
        if !connected
            && self
                .peers
                .get_mut(&key)
                .is_some_and(PeerInfo::update_priority)
        {
            self.enqueue(key);
        }
    }

    /// `leavePeer`.
    pub fn leave_peer(&mut self, key: &Key) {
        if let Some(p) = self.peers.get_mut(key) {
            p.explicit = false;
        }
        self.explicit.retain(|k| k != key);
        self.maybe_delete_peer(key);
    }

    fn enqueue(&mut self, key: Key) {
        let tick = self.flush_tick;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.queued {
            return;
        }
        p.queued = true;
        p.flush_tick = tick;
        let prio = p.priority;
        self.queue.add(key, prio);
        self.attempt_client_connections();
    }

    /// `_attemptClientConnections`.
    fn attempt_client_connections(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        while !self.queue.is_empty() && self.should_connect() {
            let Some(key) = self.queue.shift() else { break };
            if let Some(p) = self.peers.get_mut(&key) {
                p.queued = false;
            }
            self.connect(key, true);
        }
        self.draining = false;
        if self.connecting == 0 {
            self.flush_all_maybe();
        }
    }

    fn connect(&mut self, key: Key, queued: bool) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if p.banned || self.conns.contains_key(&key) || !self.firewall_allows(&key) {
            if queued {
                self.flush_maybe(&key);
            }
            return;
        }
        let relay_addresses = self
            .peers
            .get(&key)
            .map(|p| p.relay_addresses.clone())
            .unwrap_or_default();
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.conns
            .insert(key, Entry::Connecting { attempt, queued });
        self.connecting += 1;
        self.client_connections += 1;
        self.actions.push_back(Action::Connect {
            attempt,
            key,
            relay_addresses,
        });
    }

    fn connect_done(&mut self) {
        self.connecting -= 1;
        if self.connecting < self.cfg.max_parallel {
            self.attempt_client_connections();
        }
        if self.connecting == 0 {
            self.flush_all_maybe();
        }
    }

    /// A dial finished: `handle` when it opened.
    pub fn on_client_done(
        &mut self,
        key: Key,
        attempt: u64,
        opened: Option<(u64, ConnectionHandle)>,
        now: Instant,
    ) -> ClientDecision {
        let queued = match self.conns.get(&key) {
            Some(Entry::Connecting { attempt: a, queued }) if *a == attempt => *queued,
            _ => return ClientDecision::Discard,
        };
        match opened {
            Some((id, handle)) if !self.destroyed => {
                self.conns.insert(
                    key,
                    Entry::Open {
                        id,
                        client: true,
                        handle: Some(handle),
                    },
                );
                self.opened += 1;
                self.connect_done();
                if let Some(p) = self.peers.get_mut(&key) {
                    p.connected(now);
                    p.client = true;
                }
                if queued {
                    self.flush_maybe(&key);
                }
                ClientDecision::Accept
            }
            _ => {
                self.conns.remove(&key);
                self.connect_done();
                self.client_closed(&key, now);
                if queued {
                    self.flush_maybe(&key);
                }
                self.attempt_client_connections();
                ClientDecision::Discard
            }
        }
    }

    /// The close handler of a client connection (after it was removed from `conns`).
    fn client_closed(&mut self, key: &Key, now: Instant) {
        self.client_connections -= 1;
        if let Some(p) = self.peers.get_mut(key) {
            p.disconnected(now);
        }
        let requeue = self.peers.get(key).is_some_and(|p| self.should_requeue(p));
        let waiting = requeue && {
            let p = &self.peers[key];
            self.timer.add(p, now)
        };
        if let Some(p) = self.peers.get_mut(key) {
            p.waiting = waiting;
        }
        // Out of retries (JS Hyperswarm now waits for the next 10-minute refresh).
        if let Some(p) = self
            .peers
            .get(key)
            .filter(|p| requeue && !waiting && !p.banned)
        {
            let topics: Vec<Key> = p
                .topics
                .iter()
                .filter(|t| self.topics.contains(*t))
                .copied()
                .collect();
            if !topics.is_empty() {
                self.actions.push_back(Action::Rediscover(topics));
            }
        }
        self.maybe_delete_peer(key);
    }

    /// `_handleServerConnection`: a client connected to us.
    pub fn on_server_connection(
        &mut self,
        key: Key,
        id: u64,
        handle: Option<ConnectionHandle>,
        now: Instant,
    ) -> ServerDecision {
        if self.destroyed {
            return ServerDecision::Reject;
        }
        if self.server_connections >= self.cfg.max_server_connections {
            self.server_refused += 1;
            return ServerDecision::Reject;
        }
        if let Some(existing) = self.conns.get(&key) {
            let outdated = match existing {
                Entry::Open {
                    handle: Some(h), ..
                } => h.bytes_read() > 0 && h.bytes_written() > 0,
                _ => false,
            };
            // The larger key is expected to dial; this connection was dialled by the
            // remote (we are not its initiator).
            let expected_initiator = self.cfg.public_key > key;
            let keep_new = outdated || !expected_initiator;
            if !keep_new {
                return ServerDecision::Reject;
            }
            self.close_existing(&key, now);
        }
        self.server_connections += 1;
        self.opened += 1;
        if let Some(p) = self.upsert(key, None) {
            p.client = false;
        }
        self.conns.insert(
            key,
            Entry::Open {
                id,
                client: false,
                handle,
            },
        );
        ServerDecision::Accept
    }

    /// Destroys the connection we hold for `key` and runs its close handler.
    fn close_existing(&mut self, key: &Key, now: Instant) {
        match self.conns.remove(key) {
            Some(Entry::Connecting { attempt, queued }) => {
                self.actions.push_back(Action::Abort { attempt });
                self.connect_done();
                self.client_closed(key, now);
                if queued {
                    self.flush_maybe(key);
                }
            }
            Some(Entry::Open { id, client, .. }) => {
                self.actions.push_back(Action::Destroy { id });
                self.opened -= 1;
                if client {
                    self.client_closed(key, now);
                } else {
                    self.server_connections -= 1;
                    self.maybe_delete_peer(key);
                }
            }
            None => {}
        }
    }

    /// An open connection closed (remote end, error or destroy).
    pub fn on_closed(&mut self, key: &Key, id: u64, now: Instant) {
        let client = match self.conns.get(key) {
            Some(Entry::Open { id: i, client, .. }) if *i == id => *client,
            _ => return,
        };
        self.conns.remove(key);
        self.opened -= 1;
        if client {
            self.client_closed(key, now);
        } else {
            self.server_connections -= 1;
            self.maybe_delete_peer(key);
        }
        self.attempt_client_connections();
    }

    fn maybe_delete_peer(&mut self, key: &Key) {
        let gc = self.peers.get(key).is_some_and(PeerInfo::should_gc);
        if gc && !self.conns.contains_key(key) {
            self.peers.remove(key);
        }
    }

    /// Retry timers that are due requeue their peers (`_requeue`).
    pub fn handle_timeout(&mut self, now: Instant) {
        let batch = self.timer.expired(now);
        if batch.is_empty() || self.destroyed {
            return;
        }
        for key in batch {
            let connected = self.conns.contains_key(&key);
            let tick = self.flush_tick;
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            p.waiting = false;
            if !p.update_priority() || connected || p.queued {
                continue;
            }
            p.queued = true;
            p.flush_tick = tick;
            let prio = p.priority;
            self.queue.add(key, prio);
        }
        self.attempt_client_connections();
    }

    fn flush_maybe(&mut self, key: &Key) {
        let Some(tick) = self.peers.get(key).map(|p| p.flush_tick) else {
            return;
        };
        let mut done = Vec::new();
        for f in &mut self.flushes {
            if tick > f.tick {
                continue;
            }
            f.missing = f.missing.saturating_sub(1);
            if f.missing == 0 {
                done.push(f.id);
            }
        }
        self.flushes.retain(|f| !done.contains(&f.id));
        for id in done {
            self.actions.push_back(Action::Flushed(id, true));
        }
    }

    /// `_flushAllMaybe`: at capacity with no dial running, every flush is done.
    fn flush_all_maybe(&mut self) -> bool {
        if self.connecting > 0
            || (self.within_max_peers()
                && self.client_connections < self.cfg.max_client_connections)
        {
            return false;
        }
        for f in self.flushes.drain(..) {
            self.actions.push_back(Action::Flushed(f.id, true));
        }
        true
    }

    /// `flush()` after discovery settled: true when done now, else [`Action::Flushed`]
    /// with `id` comes later.
    pub fn flush(&mut self, id: u64) -> bool {
        if self.flush_all_maybe() {
            return true;
        }
        let pending = self.conns.len() - self.opened;
        if self.queue.is_empty() && pending == 0 {
            return true;
        }
        self.flushes.push(PendingFlush {
            id,
            missing: self.queue.len() + pending,
            tick: self.flush_tick,
        });
        self.flush_tick += 1;
        false
    }

    /// Stops dialling; pending flushes are cancelled; every connection is to be
    /// destroyed.
    pub fn destroy(&mut self) {
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        self.timer.clear();
        for f in self.flushes.drain(..) {
            self.actions.push_back(Action::Flushed(f.id, false));
        }
        let mut keys: Vec<Key> = self.conns.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            match self.conns.remove(&k) {
                Some(Entry::Connecting { attempt, .. }) => {
                    self.actions.push_back(Action::Abort { attempt });
                }
                Some(Entry::Open { id, .. }) => self.actions.push_back(Action::Destroy { id }),
                None => {}
            }
        }
        self.opened = 0;
        self.connecting = 0;
        self.client_connections = 0;
        self.server_connections = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::BACKOFFS;

    fn core(pk: u8) -> Core {
        Core::new(
            CoreConfig {
                public_key: [pk; 32],
                max_peers: 64,
                max_parallel: 3,
                max_client_connections: usize::MAX,
                max_server_connections: usize::MAX,
                backoffs: BACKOFFS,
                jitter: Duration::ZERO,
                firewall: None,
            },
            42,
        )
    }

    fn drain(c: &mut Core) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    #[test]
    fn dials_found_peers_in_parallel_up_to_the_limit() {
        let mut c = core(9);
        let t = [7; 32];
        c.add_topic(t);
        for k in 1..=5u8 {
            c.on_peer([k; 32], vec![], t);
        }
        c.on_peer([9; 32], vec![], t); // our own key
        let acts = drain(&mut c);
        assert_eq!(acts.len(), 3, "{acts:?}");
        assert_eq!(c.connecting(), 3);
        let now = Instant::now();
        let Action::Connect { attempt, key, .. } = acts[0].clone() else {
            panic!()
        };
        assert_eq!(
            c.on_client_done(key, attempt, None, now),
            ClientDecision::Discard
        );
        // A failure frees a slot: the next queued peer is dialled.
        let acts = drain(&mut c);
        assert_eq!(acts.len(), 1, "{acts:?}");
        assert_eq!(c.connecting(), 3);
        // The failed peer comes back after its backoff.
        let due = c.poll_timeout().unwrap();
        assert_eq!(due, now + BACKOFFS[1]);
        c.handle_timeout(due);
        assert!(c.peer(&key).unwrap().queued);
    }

    #[test]
    fn a_peer_out_of_retries_asks_for_its_topics_to_be_looked_up_again() {
        let mut c = core(9);
        let (joined, left) = ([7; 32], [8; 32]);
        c.add_topic(joined);
        c.add_topic(left);
        c.on_peer([1; 32], vec![], joined);
        c.on_peer([1; 32], vec![], left);
        c.remove_topic(&left);
        let mut now = Instant::now();
        let mut rediscover = Vec::new();
        for failure in 1..=4 {
            let acts = drain(&mut c);
            rediscover.extend(
                acts.iter()
                    .filter(|a| matches!(a, Action::Rediscover(_)))
                    .cloned(),
            );
            let Some(Action::Connect { attempt, key, .. }) = acts
                .into_iter()
                .find(|a| matches!(a, Action::Connect { .. }))
            else {
                panic!("dial {failure} expected")
            };
            c.on_client_done(key, attempt, None, now);
            if let Some(due) = c.poll_timeout() {
                now = due;
                c.handle_timeout(due);
            }
        }
        rediscover.extend(drain(&mut c));
        assert_eq!(rediscover, vec![Action::Rediscover(vec![joined])]);
        assert!(c.poll_timeout().is_none(), "no more retries of its own");
        // Found again by that lookup: dialled afresh.
        c.on_peer([1; 32], vec![], joined);
        assert!(matches!(c.poll_action(), Some(Action::Connect { .. })));
    }

    #[test]
    fn tie_break_keeps_the_connection_the_larger_key_dialled() {
        let now = Instant::now();
        // We are the larger key: the remote's dial to us loses to ours.
        let mut big = core(9);
        big.add_topic([7; 32]);
        big.on_peer([1; 32], vec![], [7; 32]);
        let Some(Action::Connect { attempt, .. }) = big.poll_action() else {
            panic!()
        };
        assert_eq!(
            big.on_server_connection([1; 32], 100, None, now),
            ServerDecision::Reject
        );
        assert_eq!(big.connection_count(), 1);
        let _ = attempt;
        // We are the smaller key: the remote's dial wins, ours is aborted.
        let mut small = core(1);
        small.add_topic([7; 32]);
        small.on_peer([9; 32], vec![], [7; 32]);
        let Some(Action::Connect { attempt, .. }) = small.poll_action() else {
            panic!()
        };
        assert_eq!(
            small.on_server_connection([9; 32], 200, None, now),
            ServerDecision::Accept
        );
        assert_eq!(small.poll_action(), Some(Action::Abort { attempt }));
        assert_eq!(small.open_keys(), vec![[9; 32]]);
        // Our aborted attempt reporting back is discarded.
        assert_eq!(
            small.on_client_done([9; 32], attempt, None, now),
            ClientDecision::Discard
        );
        assert_eq!(small.open_count(), 1);
        // The remote reconnects after losing that connection: no existing bytes, so the
        // tie-break applies again and the new one replaces it.
        assert_eq!(
            small.on_server_connection([9; 32], 201, None, now),
            ServerDecision::Accept
        );
        assert_eq!(small.poll_action(), Some(Action::Destroy { id: 200 }));
        assert_eq!(small.open_count(), 1);
        small.on_closed(&[9; 32], 200, now);
        assert_eq!(small.open_count(), 1, "the stale close is ignored");
        small.on_closed(&[9; 32], 201, now);
        assert_eq!(small.open_count(), 0);
    }

    #[test]
    fn flush_waits_for_queued_dials() {
        let now = Instant::now();
        let mut c = core(9);
        c.add_topic([7; 32]);
        assert!(c.flush(1), "nothing queued");
        c.on_peer([1; 32], vec![], [7; 32]);
        let Some(Action::Connect { attempt, .. }) = c.poll_action() else {
            panic!()
        };
        assert!(!c.flush(2));
        let (h_id, _) = (5u64, ());
        let _ = h_id;
        assert_eq!(
            c.on_client_done([1; 32], attempt, None, now),
            ClientDecision::Discard
        );
        assert!(drain(&mut c).contains(&Action::Flushed(2, true)));
    }

    #[test]
    fn firewall_bans() {
        let mut c = Core::new(
            CoreConfig {
                firewall: Some(Arc::new(|k: &[u8; 32]| k[0] != 1)),
                ..core(9).cfg
            },
            1,
        );
        c.add_topic([7; 32]);
        c.on_peer([1; 32], vec![], [7; 32]);
        assert_eq!(drain(&mut c), vec![Action::Banned([1; 32])]);
        assert!(c.peer(&[1; 32]).unwrap().banned);
        assert!(!c.firewall_allows(&[1; 32]));
        assert!(!c.firewall_allows(&[9; 32]), "own key");
        assert!(c.firewall_allows(&[2; 32]));
    }
}
