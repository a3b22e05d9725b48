//! Counters the subnet service keeps for operators (read by the metrics endpoint through
//! [`SubnetHandle::counters`](crate::service::SubnetHandle::counters)): operations applied
//! per entry type and outcome, and how long each apply step took.
//!
//! Entry types are the fixed set of [`Body`](crate::Body) kinds (`tx`, `ack`,
//! `add_writer`, ...) and outcomes are `applied`, `ignored` or `rejected`, so the label
//! sets stay small.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the apply-step duration buckets.
pub const APPLY_STEP_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A histogram of apply-step durations, read as cumulative buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepHistogram {
    /// `(upper bound in seconds, steps at or under it)`, cumulative, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Steps measured.
    pub count: u64,
    /// Their total duration in seconds.
    pub sum_seconds: f64,
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct SubnetCounters {
    applied: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Per bucket (not cumulative), plus one past the last bound.
    steps: [AtomicU64; APPLY_STEP_BUCKETS.len() + 1],
    step_nanos: AtomicU64,
}

impl SubnetCounters {
    pub(crate) fn applied(&self, kind: &str, outcome: &'static str) {
        let mut m = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(&(kind.to_owned(), outcome)) {
            Some(n) => *n += 1,
            None => {
                m.insert((kind.to_owned(), outcome), 1);
            }
        }
    }

    pub(crate) fn step(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = APPLY_STEP_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(APPLY_STEP_BUCKETS.len());
        self.steps[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.step_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Operations applied so far per `(entry type, outcome)`.
    pub fn applied_ops(&self) -> BTreeMap<(String, &'static str), u64> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Durations of the engine steps that applied at least one entry.
    pub fn apply_steps(&self) -> StepHistogram {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(APPLY_STEP_BUCKETS.len());
        for (i, bound) in APPLY_STEP_BUCKETS.iter().enumerate() {
            running += self.steps[i].load(Ordering::Relaxed);
            buckets.push((*bound, running));
        }
        let count = running + self.steps[APPLY_STEP_BUCKETS.len()].load(Ordering::Relaxed);
        StepHistogram {
            buckets,
            count,
            sum_seconds: self.step_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let c = SubnetCounters::default();
        c.step(Duration::from_micros(50));
        c.step(Duration::from_millis(3));
        c.step(Duration::from_secs(10));
        let h = c.apply_steps();
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets[0], (0.000_1, 1));
        assert_eq!(h.buckets[5], (0.005, 2));
        assert_eq!(h.buckets.last().unwrap().1, 2);
        assert!((h.sum_seconds - 10.003_05).abs() < 1e-9);
        c.applied("tx", "applied");
        c.applied("tx", "applied");
        c.applied("ack", "applied");
        let ops = c.applied_ops();
        assert_eq!(ops[&("tx".to_owned(), "applied")], 2);
        assert_eq!(ops.len(), 2);
    }
}
