//! What the swarm knows about one remote peer (`lib/peer-info.js`): how often we tried
//! it, whether it ever connected, its topics, and the connect priority that follows.

use std::net::SocketAddrV4;
use std::time::Duration;

use tokio::time::Instant;

/// A connection that lasted this long resets the attempt counter (`MIN_CONNECTION_TIME`).
pub const MIN_CONNECTION_TIME: Duration = Duration::from_secs(15);

/// Connect priorities, highest first out of the queue.
pub mod priority {
    /// Stale or failed more than three times.
    pub const VERY_LOW: u8 = 0;
    /// Failed three times.
    pub const LOW: u8 = 1;
    /// Never tried.
    pub const NORMAL: u8 = 2;
    /// Failed twice.
    pub const HIGH: u8 = 3;
    /// Failed once: retry first.
    pub const VERY_HIGH: u8 = 4;
}

/// One remote peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its public key.
    pub public_key: [u8; 32],
    /// Where it said it can be reached through (from the lookup).
    pub relay_addresses: Vec<SocketAddrV4>,
    /// Reconnect when a connection drops.
    pub reconnecting: bool,
    /// It connected at least once.
    pub proven: bool,
    /// When the current connection opened.
    pub connected_at: Option<Instant>,
    /// Banned (firewalled): never connected to again.
    pub banned: bool,
    /// Added with `join_peer`.
    pub explicit: bool,
    /// Waiting in a retry timer.
    pub waiting: bool,
    /// In the connect queue.
    pub queued: bool,
    /// Our last connection to it was ours (client side).
    pub client: bool,
    /// Topics it was found under.
    pub topics: Vec<[u8; 32]>,
    /// Failed attempts since the last good connection.
    pub attempts: u32,
    /// Queue priority ([`priority`]).
    pub priority: u8,
    /// The flush generation it was queued in.
    pub flush_tick: u64,
}

impl PeerInfo {
    /// A newly seen peer.
    pub fn new(public_key: [u8; 32], relay_addresses: Vec<SocketAddrV4>) -> PeerInfo {
        PeerInfo {
            public_key,
            relay_addresses,
            reconnecting: true,
            proven: false,
            connected_at: None,
            banned: false,
            explicit: false,
            waiting: false,
            queued: false,
            client: false,
            topics: Vec::new(),
            attempts: 0,
            priority: priority::NORMAL,
            flush_tick: 0,
        }
    }

    /// The last connection was the remote's (`server` getter).
    pub fn server(&self) -> bool {
        !self.client
    }

    /// At normal priority or above.
    pub fn prioritized(&self) -> bool {
        self.priority >= priority::NORMAL
    }

    fn compute_priority(&self) -> u8 {
        match self.attempts {
            0 => priority::NORMAL,
            1 => priority::VERY_HIGH,
            2 => priority::HIGH,
            3 => priority::LOW,
            _ => priority::VERY_LOW,
        }
    }

    /// A connection opened.
    pub fn connected(&mut self, now: Instant) {
        self.proven = true;
        self.connected_at = Some(now);
    }

    /// A connection (or attempt) ended.
    pub fn disconnected(&mut self, now: Instant) {
        if let Some(at) = self.connected_at.take() {
            if now - at >= MIN_CONNECTION_TIME {
                self.attempts = 0;
            }
        }
        self.attempts += 1;
    }

    /// Rediscovered: start over.
    pub fn reset(&mut self) {
        self.client = false;
        self.proven = false;
        self.attempts = 0;
    }

    /// `_updatePriority`: false when it must not be queued.
    pub fn update_priority(&mut self) -> bool {
        if self.explicit && self.attempts > 3 {
            self.attempts = 3;
        }
        if self.banned || self.queued || self.attempts > 3 {
            return false;
        }
        self.priority = self.compute_priority();
        true
    }

    /// Records a topic it was found under.
    pub fn add_topic(&mut self, topic: [u8; 32]) {
        if !self.topics.contains(&topic) {
            self.topics.push(topic);
        }
    }

    /// Whether it can be forgotten (`shouldGC`).
    pub fn should_gc(&self) -> bool {
        !(self.banned || self.queued || self.explicit || self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_attempts() {
        let now = Instant::now();
        let mut p = PeerInfo::new([1; 32], vec![]);
        assert!(p.update_priority());
        assert_eq!(p.priority, priority::NORMAL);
        p.disconnected(now);
        assert!(p.update_priority());
        assert_eq!(p.priority, priority::VERY_HIGH);
        p.disconnected(now);
        p.update_priority();
        assert_eq!(p.priority, priority::HIGH);
        p.disconnected(now);
        p.update_priority();
        assert_eq!(p.priority, priority::LOW);
        p.disconnected(now);
        assert!(!p.update_priority(), "gives up after 4 failures");
        p.explicit = true;
        assert!(
            p.update_priority(),
            "explicit peers are deprioritised instead"
        );
        // A long connection resets the counter.
        p.connected(now);
        p.disconnected(now + MIN_CONNECTION_TIME);
        assert_eq!(p.attempts, 1);
    }
}
