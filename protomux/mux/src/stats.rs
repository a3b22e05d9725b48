//! Process-wide counters of muxes failed by their bounds on data held for channels the
//! application has not accepted, for metrics (every [`crate::MuxCore`] adds to them).

use std::sync::atomic::{AtomicU64, Ordering};

static PENDING_OVERFLOW: AtomicU64 = AtomicU64::new(0);
static TOO_MANY_PENDING_OPENS: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuxLimitStats {
    /// Muxes failed because more than [`crate::CoreConfig::max_held_bytes`] were held
    /// for unaccepted channels.
    pub muxes_failed_held_bytes: u64,
    /// Muxes failed because more than [`crate::CoreConfig::max_pending_opens`] remote
    /// opens waited for a decision.
    pub muxes_failed_pending_opens: u64,
}

/// The counters since the process started.
pub fn limit_stats() -> MuxLimitStats {
    MuxLimitStats {
        muxes_failed_held_bytes: PENDING_OVERFLOW.load(Ordering::Relaxed),
        muxes_failed_pending_opens: TOO_MANY_PENDING_OPENS.load(Ordering::Relaxed),
    }
}

pub(crate) fn held_bytes_exceeded(limit: usize) {
    let n = PENDING_OVERFLOW.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(
            limit,
            times = n,
            "mux closed: a peer held too much data for channels not accepted"
        );
    }
}

pub(crate) fn pending_opens_exceeded(limit: usize) {
    let n = TOO_MANY_PENDING_OPENS.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(
            limit,
            times = n,
            "mux closed: a peer opened too many channels not accepted"
        );
    }
}
