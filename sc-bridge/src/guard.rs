//! Admission guards for unauthenticated clients, free of sockets, tasks and clocks.
//!
//! * [`PendingSet`]: the budget of connections that have not authenticated yet (from TCP accept, through the
//!   WebSocket upgrade, to `auth_ok`). When it is full, the oldest pending connection of the source holding the
//!   most pending connections is evicted to make room, so a flood of idle connections can delay nobody: a new
//!   connection always gets in, and the flood's own connections are the ones shed.
//! * [`AuthThrottle`]: token buckets of failed `auth` attempts, one per source (an IPv4 address, or an IPv6 /64)
//!   and one global. An attempt is only evaluated while both buckets hold a token; a wrong token takes one from
//!   each. A correct token costs nothing, so agents that know the token are never charged.
//! * [`LogGate`]: at most one warning per interval for a kind of event, counting what it suppressed.
//!
//! Time comes in as `now` arguments; the server owns the clock and the sleeping.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A token bucket that can be inspected without taking a token.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
    per_second: f64,
    burst: f64,
}

impl Bucket {
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst.max(1)),
            last: now,
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = self.last.max(now);
    }

    /// `Ok` when a token is available, else how long until one is.
    pub fn ready(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }

    /// Takes one token (the bucket may go negative: a debt paid back at the refill rate).
    pub fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Limits on failed `auth` attempts (see [`AuthThrottle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthThrottleConfig {
    /// Failed attempts per second and burst, per source (an IPv4 address or an IPv6 /64).
    pub per_source: crate::RateLimit,
    /// Failed attempts per second and burst, all sources together.
    pub global: crate::RateLimit,
}

impl Default for AuthThrottleConfig {
    fn default() -> Self {
        AuthThrottleConfig {
            per_source: crate::RateLimit {
                per_second: 50,
                burst: 50,
            },
            global: crate::RateLimit {
                per_second: 200,
                burst: 200,
            },
        }
    }
}

/// Sources whose failure buckets are remembered at once; beyond it, only idle (refilled) ones are forgotten and
/// new sources are charged to the global bucket alone.
const MAX_SOURCES: usize = 4096;

/// What a source is, for the throttle: an IPv4 address, or the /64 of an IPv6 address (one host usually holds a
/// whole /64).
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// Token buckets of failed `auth` attempts, per source and global.
#[derive(Debug)]
pub(crate) struct AuthThrottle {
    cfg: AuthThrottleConfig,
    global: Bucket,
    sources: HashMap<IpAddr, Bucket>,
}

impl AuthThrottle {
    pub fn new(cfg: AuthThrottleConfig, now: Instant) -> AuthThrottle {
        AuthThrottle {
            cfg,
            global: Bucket::new(cfg.global.per_second, cfg.global.burst, now),
            sources: HashMap::new(),
        }
    }

    /// Whether an attempt from `source` may be evaluated at `now`; else how long to wait first.
    #[cfg(test)]
    pub fn ready(&mut self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        match (self.ready_global(now), self.ready_source(source, now)) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(w), _) | (_, Err(w)) => Err(w),
        }
    }

    /// Whether `source`'s own bucket allows an attempt at `now`; else how long to wait.
    pub fn ready_source(&mut self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.sources.get_mut(&source) {
            Some(b) => b.ready(now),
            None => Ok(()),
        }
    }

    /// Whether the global bucket allows an attempt at `now`; else how long to wait.
    pub fn ready_global(&mut self, now: Instant) -> Result<(), Duration> {
        self.global.ready(now)
    }

    /// Charges one failed attempt to `source` and to the global bucket.
    pub fn fail(&mut self, source: IpAddr, now: Instant) {
        self.global.take(now);
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, b| !b.is_full(now));
        }
        if let Some(b) = self.sources.get_mut(&source) {
            b.take(now);
        } else if self.sources.len() < MAX_SOURCES {
            let p = self.cfg.per_source;
            let mut b = Bucket::new(p.per_second, p.burst, now);
            b.take(now);
            self.sources.insert(source, b);
        }
    }
}

/// The pending (not yet authenticated) connections: at most `max`, each with a handle whose drop tells its task
/// it was evicted.
#[derive(Debug)]
pub(crate) struct PendingSet<T> {
    max: usize,
    entries: BTreeMap<u64, (IpAddr, T)>,
}

impl<T> PendingSet<T> {
    pub fn new(max: usize) -> PendingSet<T> {
        PendingSet {
            max: max.max(1),
            entries: BTreeMap::new(),
        }
    }

    /// Admits connection `id` from `ip` (ids grow with time). When the set is full, first evicts the oldest
    /// connection of the source holding the most pending connections, and returns it.
    pub fn admit(&mut self, id: u64, ip: IpAddr, handle: T) -> Option<(u64, IpAddr, T)> {
        let evicted = if self.entries.len() >= self.max {
            self.evict()
        } else {
            None
        };
        self.entries.insert(id, (source_key(ip), handle));
        evicted
    }

    fn evict(&mut self) -> Option<(u64, IpAddr, T)> {
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for (ip, _) in self.entries.values() {
            *counts.entry(*ip).or_default() += 1;
        }
        // The busiest source; among equals, the one whose oldest connection is oldest.
        let (busiest, _) = self
            .entries
            .values()
            .map(|(ip, _)| (*ip, counts.get(ip).copied().unwrap_or(0)))
            .fold(None::<(IpAddr, usize)>, |best, (ip, n)| match best {
                Some((_, m)) if m >= n => best,
                _ => Some((ip, n)),
            })?;
        let id = self
            .entries
            .iter()
            .find(|(_, (ip, _))| *ip == busiest)
            .map(|(id, _)| *id)?;
        self.entries.remove(&id).map(|(ip, h)| (id, ip, h))
    }

    /// Forgets connection `id` (authenticated or gone).
    pub fn remove(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// At most one log line per `interval` for one kind of event.
#[derive(Debug)]
pub(crate) struct LogGate {
    interval: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl LogGate {
    pub fn new(interval: Duration) -> LogGate {
        LogGate {
            interval,
            next: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now (`n` events were suppressed since the last one), else `None`.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + self.interval);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn throttle_admits_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let cfg = AuthThrottleConfig {
            per_source: crate::RateLimit {
                per_second: 10,
                burst: 5,
            },
            global: crate::RateLimit {
                per_second: 100,
                burst: 100,
            },
        };
        let mut t = AuthThrottle::new(cfg, t0);
        for _ in 0..5 {
            assert_eq!(t.ready(ip(1), t0), Ok(()));
            t.fail(ip(1), t0);
        }
        let wait = t.ready(ip(1), t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // Another source is not held back by the first one's failures.
        assert_eq!(t.ready(ip(2), t0), Ok(()));
        // One token every 100 ms.
        assert_eq!(t.ready(ip(1), t0 + Duration::from_millis(100)), Ok(()));
        t.fail(ip(1), t0 + Duration::from_millis(100));
        assert!(t.ready(ip(1), t0 + Duration::from_millis(150)).is_err());
        // Simulated: evaluating whenever ready for 10 s gives burst + rate x time attempts.
        let mut t = AuthThrottle::new(cfg, t0);
        let (mut now, mut attempts) = (t0, 0);
        while now < t0 + Duration::from_secs(10) {
            match t.ready(ip(1), now) {
                Ok(()) => {
                    t.fail(ip(1), now);
                    attempts += 1;
                }
                Err(w) => now += w,
            }
        }
        assert!((100..=106).contains(&attempts), "{attempts}");
    }

    #[test]
    fn global_bucket_binds_many_sources() {
        let t0 = Instant::now();
        let mut t = AuthThrottle::new(AuthThrottleConfig::default(), t0);
        let (mut now, mut attempts) = (t0, 0u32);
        let mut k = 0u8;
        while now < t0 + Duration::from_secs(5) {
            k = k.wrapping_add(1);
            match t.ready(ip(k), now) {
                Ok(()) => {
                    t.fail(ip(k), now);
                    attempts += 1;
                }
                Err(w) => now += w.max(Duration::from_micros(100)),
            }
        }
        // 200 burst + 200/s for 5 s.
        assert!((1150..=1210).contains(&attempts), "{attempts}");
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), ip(1));
    }

    #[test]
    fn pending_set_evicts_the_oldest_of_the_busiest_source() {
        let mut p = PendingSet::new(4);
        assert!(p.admit(1, ip(9), "agent").is_none());
        for id in 2..=4 {
            assert!(p.admit(id, ip(1), "flood").is_none());
        }
        // Full: the flood's oldest goes, not the agent's older connection.
        assert_eq!(p.admit(5, ip(1), "flood"), Some((2, ip(1), "flood")));
        assert_eq!(p.admit(6, ip(1), "flood"), Some((3, ip(1), "flood")));
        assert_eq!(p.len(), 4);
        p.remove(1);
        assert_eq!(p.len(), 3);
        // One source only: plain oldest-first.
        let mut p = PendingSet::new(2);
        p.admit(1, ip(1), ());
        p.admit(2, ip(1), ());
        assert_eq!(p.admit(3, ip(1), ()).map(|e| e.0), Some(1));
        assert_eq!(p.admit(4, ip(1), ()).map(|e| e.0), Some(2));
    }

    #[test]
    fn log_gate_counts_what_it_suppressed() {
        let t0 = Instant::now();
        let mut g = LogGate::new(Duration::from_secs(10));
        assert_eq!(g.check(t0), Some(0));
        assert_eq!(g.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(g.check(t0 + Duration::from_secs(2)), None);
        assert_eq!(g.check(t0 + Duration::from_secs(10)), Some(2));
    }
}
