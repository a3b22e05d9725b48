//! Reconnect backoff (`lib/retry-timer.js`): a dropped or failed peer is requeued after
//! ~1 s, ~5 s or ~15 s depending on how often it failed and whether it ever connected;
//! explicit peers that failed more than three times retry every ~10 minutes.

use std::time::Duration;

use tokio::time::Instant;

use crate::peer::PeerInfo;

/// The four backoffs (short, medium, long, extra long) before jitter.
pub const BACKOFFS: [Duration; 4] = [
    Duration::from_millis(1000),
    Duration::from_millis(5000),
    Duration::from_millis(15000),
    Duration::from_secs(600),
];
/// Jitter added to each backoff (`BACKOFF_JITTER`).
pub const JITTER: Duration = Duration::from_millis(500);

/// Which backoff applies to a peer, if it should be retried at all.
pub fn select(peer: &PeerInfo) -> Option<usize> {
    if peer.banned || !peer.reconnecting {
        return None;
    }
    if peer.attempts > 3 {
        return peer.explicit.then_some(3);
    }
    match (peer.attempts, peer.proven) {
        (0, _) | (1, true) => Some(0),
        (2, true) | (1, false) => Some(1),
        _ => Some(2),
    }
}

/// Peers waiting to be requeued.
#[derive(Debug, Clone)]
pub struct RetryTimer {
    delays: [Duration; 4],
    waiting: Vec<(Instant, [u8; 32])>,
}

impl RetryTimer {
    /// Timers with `backoffs`, each plus up to `jitter` chosen once (from `rand`).
    pub fn new(backoffs: [Duration; 4], jitter: Duration, mut rand: impl FnMut() -> u64) -> Self {
        let jitter_ms = jitter.as_millis() as u64;
        let delays = backoffs.map(|b| {
            let j = if jitter_ms == 0 {
                0
            } else {
                rand() % (jitter_ms + 1)
            };
            b + Duration::from_millis(j)
        });
        RetryTimer {
            delays,
            waiting: Vec::new(),
        }
    }

    /// Schedules `peer`; false when it is not to be retried.
    pub fn add(&mut self, peer: &PeerInfo, now: Instant) -> bool {
        let Some(i) = select(peer) else { return false };
        self.waiting.push((now + self.delays[i], peer.public_key));
        true
    }

    /// The peers whose time came.
    pub fn expired(&mut self, now: Instant) -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        self.waiting.retain(|(at, k)| {
            if *at <= now {
                out.push(*k);
                false
            } else {
                true
            }
        });
        out
    }

    /// When the next peer is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.waiting.iter().map(|(at, _)| *at).min()
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_selection_matches_js() {
        let mut p = PeerInfo::new([1; 32], vec![]);
        assert_eq!(select(&p), Some(0));
        p.attempts = 1;
        assert_eq!(select(&p), Some(1));
        p.proven = true;
        assert_eq!(select(&p), Some(0));
        p.attempts = 2;
        assert_eq!(select(&p), Some(1));
        p.attempts = 3;
        assert_eq!(select(&p), Some(2));
        p.attempts = 4;
        assert_eq!(select(&p), None);
        p.explicit = true;
        assert_eq!(select(&p), Some(3));
        p.banned = true;
        assert_eq!(select(&p), None);
    }

    #[test]
    fn expires_in_order() {
        let now = Instant::now();
        let mut t = RetryTimer::new(BACKOFFS, Duration::ZERO, || 0);
        let mut p = PeerInfo::new([1; 32], vec![]);
        assert!(t.add(&p, now));
        p.public_key = [2; 32];
        p.attempts = 1;
        assert!(t.add(&p, now));
        assert_eq!(t.next_timeout(), Some(now + BACKOFFS[0]));
        assert_eq!(t.expired(now + BACKOFFS[0]), vec![[1; 32]]);
        assert_eq!(t.expired(now + BACKOFFS[1]), vec![[2; 32]]);
        assert!(t.next_timeout().is_none());
    }
}
