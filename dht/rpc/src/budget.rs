//! Per-source request budgets: how many requests a node serves per source IP and in
//! total, so it cannot be used to amplify or reflect traffic (JS dht-rpc has no such
//! limit; hyperdht's router notes the gap).
//!
//! ```text
//! request datagram ─► bucket of its source IP ─► global bucket ─► served (may be answered)
//!                        │ empty                    │ empty
//!                        └─► dropped, counted       └─► dropped, counted
//! ```
//!
//! Each source IP has a token bucket (`per_source_rate` tokens per second, up to
//! `per_source_burst`); admitted requests then draw from one global bucket. A flood from
//! one source empties only its own bucket, so others keep being served, and the replies
//! it gets are capped at its rate. The buckets are keyed by IP, not IP and port: a
//! sender picks its ports freely, so a per-port budget would multiply by 65,535.
//! Sources live in a bounded map; when it is full the least recently seen source is
//! forgotten (an idle source's bucket is full anyway, so forgetting it changes nothing).
//!
//! Only requests are budgeted: responses cause no reply, and a response that matches none
//! of our requests is discarded after a decode. Pure: time is passed in (ms).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// Default sustained requests per second from one source IP.
pub const DEFAULT_PER_SOURCE_RATE: u32 = 1000;
/// Default burst from one source IP.
pub const DEFAULT_PER_SOURCE_BURST: u32 = 2000;
/// Default sustained requests per second from all sources.
pub const DEFAULT_GLOBAL_RATE: u32 = 20_000;
/// Default global burst.
pub const DEFAULT_GLOBAL_BURST: u32 = 20_000;
/// Default number of sources remembered.
pub const DEFAULT_MAX_SOURCES: usize = 16_384;

/// Limits of a [`RequestBudget`]. A rate of 0 turns that limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Requests per second one source IP may sustain (0 = no per-source limit).
    pub per_source_rate: u32,
    /// Requests one source IP may send in a burst.
    pub per_source_burst: u32,
    /// Requests per second all sources together may sustain (0 = no global limit).
    pub global_rate: u32,
    /// Global burst.
    pub global_burst: u32,
    /// Sources remembered at most (least recently seen forgotten first).
    pub max_sources: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            per_source_rate: DEFAULT_PER_SOURCE_RATE,
            per_source_burst: DEFAULT_PER_SOURCE_BURST,
            global_rate: DEFAULT_GLOBAL_RATE,
            global_burst: DEFAULT_GLOBAL_BURST,
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

impl BudgetConfig {
    /// No limit at all (JS behaviour).
    pub fn unlimited() -> Self {
        BudgetConfig {
            per_source_rate: 0,
            per_source_burst: 0,
            global_rate: 0,
            global_burst: 0,
            max_sources: 0,
        }
    }

    /// The defaults with another per-source rate; the burst becomes twice the rate.
    pub fn with_per_source_rate(mut self, rate: u32) -> Self {
        self.per_source_rate = rate;
        self.per_source_burst = rate.saturating_mul(2);
        self
    }
}

/// What the budget decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Admit,
    /// Its source is over its own budget.
    SourceOverBudget,
    /// Every source together is over the global budget.
    GlobalOverBudget,
}

/// Counters of a [`RequestBudget`] (monotonic except `sources`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// Requests admitted.
    pub requests_admitted: u64,
    /// Requests dropped because their source IP was over its budget.
    pub requests_dropped_per_source: u64,
    /// Requests dropped because the global budget was spent.
    pub requests_dropped_global: u64,
    /// Sources currently remembered.
    pub sources: u64,
    /// Sources forgotten because the map was full.
    pub sources_evicted: u64,
}

/// A token bucket in milli-tokens, refilled lazily.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            milli: u64::from(burst) * 1000,
            at_ms: now_ms,
        }
    }

    /// Refills for the time elapsed, then takes one token if there is one.
    fn take(&mut self, rate: u32, burst: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.at_ms = self.at_ms.max(now_ms);
        // rate tokens/s = rate milli-tokens/ms.
        let cap = u64::from(burst.max(1)) * 1000;
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(u64::from(rate)))
            .min(cap);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

struct Source {
    bucket: Bucket,
    seen: u64,
}

/// Per-source and global token buckets over requests.
pub struct RequestBudget {
    cfg: BudgetConfig,
    global: Bucket,
    sources: HashMap<Ipv4Addr, Source>,
    /// Sources by last-seen serial: the first is the least recently seen.
    order: BTreeMap<u64, Ipv4Addr>,
    serial: u64,
    stats: BudgetStats,
}

impl std::fmt::Debug for RequestBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBudget")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl RequestBudget {
    /// A budget with full buckets at time `now_ms`.
    pub fn new(cfg: BudgetConfig, now_ms: u64) -> RequestBudget {
        RequestBudget {
            cfg,
            global: Bucket::full(cfg.global_burst, now_ms),
            sources: HashMap::new(),
            order: BTreeMap::new(),
            serial: 0,
            stats: BudgetStats::default(),
        }
    }

    /// The limits.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> BudgetStats {
        let mut s = self.stats;
        s.sources = self.sources.len() as u64;
        s
    }

    /// Charges one request from `ip` at `now_ms`.
    pub fn check(&mut self, now_ms: u64, ip: Ipv4Addr) -> Verdict {
        if self.cfg.per_source_rate > 0 && self.cfg.max_sources > 0 && !self.take_source(now_ms, ip)
        {
            self.stats.requests_dropped_per_source += 1;
            return Verdict::SourceOverBudget;
        }
        if self.cfg.global_rate > 0
            && !self
                .global
                .take(self.cfg.global_rate, self.cfg.global_burst, now_ms)
        {
            self.stats.requests_dropped_global += 1;
            return Verdict::GlobalOverBudget;
        }
        self.stats.requests_admitted += 1;
        Verdict::Admit
    }

    fn take_source(&mut self, now_ms: u64, ip: Ipv4Addr) -> bool {
        self.serial += 1;
        let serial = self.serial;
        let (rate, burst) = (self.cfg.per_source_rate, self.cfg.per_source_burst);
        if let Some(s) = self.sources.get_mut(&ip) {
            self.order.remove(&s.seen);
            s.seen = serial;
            self.order.insert(serial, ip);
            return s.bucket.take(rate, burst, now_ms);
        }
        while self.sources.len() >= self.cfg.max_sources {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            self.sources.remove(&old);
            self.stats.sources_evicted += 1;
        }
        let mut bucket = Bucket::full(burst, now_ms);
        let ok = bucket.take(rate, burst, now_ms);
        self.sources.insert(
            ip,
            Source {
                bucket,
                seen: serial,
            },
        );
        self.order.insert(serial, ip);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, last)
    }

    fn cfg(rate: u32, burst: u32, global: u32) -> BudgetConfig {
        BudgetConfig {
            per_source_rate: rate,
            per_source_burst: burst,
            global_rate: global,
            global_burst: global,
            max_sources: 4,
        }
    }

    #[test]
    fn a_flooder_spends_its_own_bucket_only() {
        let mut b = RequestBudget::new(cfg(10, 20, 1000), 0);
        let admitted = (0..1000)
            .filter(|_| b.check(0, ip(2)) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 20);
        assert_eq!(b.check(0, ip(1)), Verdict::Admit);
        // One second later the flooder got `rate` more.
        let admitted = (0..1000)
            .filter(|_| b.check(1000, ip(2)) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 10);
        let s = b.stats();
        assert_eq!(s.requests_admitted, 31);
        assert_eq!(s.requests_dropped_per_source, 1970);
    }

    #[test]
    fn the_global_bucket_caps_many_sources() {
        let mut b = RequestBudget::new(cfg(100, 100, 5), 0);
        let admitted = (1..=4u8)
            .flat_map(|i| [i, i])
            .filter(|&i| b.check(0, ip(i)) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 5);
        assert_eq!(b.stats().requests_dropped_global, 3);
    }

    #[test]
    fn the_source_map_is_bounded_and_forgets_the_least_recent() {
        let mut b = RequestBudget::new(cfg(1, 1, 0), 0);
        for i in 1..=4 {
            assert_eq!(b.check(0, ip(i)), Verdict::Admit);
        }
        // Source 1 seen again (refused: its single token is spent) so 2 is the oldest.
        assert_eq!(b.check(0, ip(1)), Verdict::SourceOverBudget);
        assert_eq!(b.check(0, ip(5)), Verdict::Admit);
        let s = b.stats();
        assert_eq!((s.sources, s.sources_evicted), (4, 1));
        assert_eq!(b.check(0, ip(1)), Verdict::SourceOverBudget);
        // 2 was forgotten: it starts with a full bucket.
        assert_eq!(b.check(0, ip(2)), Verdict::Admit);
    }

    #[test]
    fn zero_rates_turn_limits_off() {
        let mut b = RequestBudget::new(BudgetConfig::unlimited(), 0);
        assert!((0..10_000).all(|_| b.check(0, ip(9)) == Verdict::Admit));
    }
}
