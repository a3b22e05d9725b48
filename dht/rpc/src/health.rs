//! Online/degraded/offline detection from response and timeout counts per tick, a port
//! of `lib/health.js`.

const MAX_HEALTH_WINDOW: usize = 4;
const OFFLINE_THRESHOLD: u32 = 2;
const IDLE_THRESHOLD: u64 = 4;
const DEGRADED_TIMEOUT_RATE_THRESHOLD: f64 = 0.5;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    responses: u64,
    timeouts: u64,
    offline: bool,
    degraded: Option<bool>,
}

/// Network health as dht-rpc judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Responses arrive.
    pub online: bool,
    /// More than half of the recent requests timed out for a while.
    pub degraded: bool,
}

/// A sliding window of per-tick request counters.
#[derive(Debug, Clone)]
pub struct NetworkHealth {
    window: Vec<Slot>,
    head: usize,
    offline_ticks: u32,
    degraded_ticks: i64,
    healthy_ticks: i64,
    online: bool,
    degraded: bool,
}

impl Default for NetworkHealth {
    fn default() -> Self {
        NetworkHealth {
            window: Vec::with_capacity(MAX_HEALTH_WINDOW),
            head: MAX_HEALTH_WINDOW - 1,
            offline_ticks: 0,
            degraded_ticks: 0,
            healthy_ticks: 0,
            online: true,
            degraded: false,
        }
    }
}

impl NetworkHealth {
    /// Current judgement.
    pub fn state(&self) -> Health {
        Health {
            online: self.online,
            degraded: self.degraded,
        }
    }

    /// Forgets the window (after a wake-up); the state is online again.
    pub fn reset(&mut self) {
        *self = NetworkHealth::default();
    }

    fn deltas(&self) -> (u64, u64) {
        if self.window.len() < 2 {
            return (0, 0);
        }
        let prev = (self.head + MAX_HEALTH_WINDOW - 1) % MAX_HEALTH_WINDOW;
        let (Some(n), Some(p)) = (self.window.get(self.head), self.window.get(prev)) else {
            return (0, 0);
        };
        (
            n.responses.saturating_sub(p.responses),
            n.timeouts.saturating_sub(p.timeouts),
        )
    }

    /// Records this tick's running totals; returns the new state when it changed or
    /// when the JS code would fire its (idempotent) state hooks.
    pub fn update(&mut self, responses: u64, timeouts: u64) -> Health {
        let tail = (self.head + 1) % MAX_HEALTH_WINDOW;
        if let Some(oldest) = self.window.get(tail) {
            match oldest.degraded {
                Some(true) => self.degraded_ticks -= 1,
                Some(false) => self.healthy_ticks -= 1,
                None => {}
            }
        }
        self.head = tail;
        let slot = Slot {
            responses,
            timeouts,
            ..Slot::default()
        };
        if self.head < self.window.len() {
            self.window[self.head] = slot;
        } else {
            self.window.push(slot);
        }

        let (res, tos) = self.deltas();
        let cold = self.window.len() < MAX_HEALTH_WINDOW;
        let idle = res + tos < IDLE_THRESHOLD;
        if cold || idle {
            return self.state();
        }
        let rate = if tos == 0 {
            0.0
        } else {
            tos as f64 / (res + tos) as f64
        };
        let offline = res == 0;
        let degraded = !offline && rate > DEGRADED_TIMEOUT_RATE_THRESHOLD;
        let newest = &mut self.window[self.head];
        newest.offline = offline;
        newest.degraded = Some(degraded);

        if offline {
            self.offline_ticks += 1;
        } else {
            self.offline_ticks = 0;
            if degraded {
                self.degraded_ticks += 1;
            } else {
                self.healthy_ticks += 1;
            }
        }

        if !offline {
            self.online = true;
        } else if self.offline_ticks >= OFFLINE_THRESHOLD {
            self.online = false;
        }

        if !self.online || self.healthy_ticks == MAX_HEALTH_WINDOW as i64 {
            self.degraded = false;
        } else if self.degraded_ticks == MAX_HEALTH_WINDOW as i64 {
            self.degraded = true;
        }
        self.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_offline_and_back() {
        let mut h = NetworkHealth::default();
        let (mut r, mut t) = (0, 0);
        for _ in 0..4 {
            r += 10;
            assert!(h.update(r, t).online);
        }
        t += 10;
        assert!(h.update(r, t).online, "one offline tick is tolerated");
        t += 10;
        assert!(!h.update(r, t).online);
        r += 10;
        assert_eq!(
            h.update(r, t),
            Health {
                online: true,
                degraded: false
            }
        );
        for _ in 0..4 {
            r += 2;
            t += 8;
            h.update(r, t);
        }
        assert!(h.state().degraded);
        h.reset();
        assert_eq!(
            h.state(),
            Health {
                online: true,
                degraded: false
            }
        );
    }
}
