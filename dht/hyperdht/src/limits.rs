//! Budgets for inbound connections: how many handshakes may be in progress and how many
//! connections may be open, in total and per remote IP, and how much memory their
//! secret-stream frames may hold. JS HyperDHT has no such limits.
//!
//! ```text
//! PEER_HANDSHAKE ─► pending (total, per IP) and open (total, per IP) below limits?
//!                     │ no: dropped before any Noise work, counted, warned (≤ 1 / 10 s)
//!                     ▼ yes: a pending permit
//!                  stream connected, secret-stream started ─► open permit (checked again)
//!                                                               │ held by the connection
//!                                                               ▼ until both halves drop
//! ```
//!
//! Connections we dial are not counted: the swarm decides how many of those to make.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use intercom_secret_stream::{FrameBudget, FrameBudgetStats};
use tokio::time::Instant;

use crate::context::lock;

/// Default most handshakes in progress.
pub const DEFAULT_MAX_PENDING: usize = 512;
/// Default most handshakes in progress from one IP.
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 32;
/// Default most open inbound connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default most open inbound connections from one IP.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Default largest secret-stream frame accepted (the wire maximum, 16 MiB - 1, as JS:
/// log blocks reach 8 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = (1 << 24) - 1;
/// Default memory all connections together may hold for large frames in progress.
pub const DEFAULT_FRAME_MEMORY_BYTES: usize = 256 << 20;
/// Least time between two warnings about refused connections.
const LOG_INTERVAL_SECS: u64 = 10;

/// Limits on inbound connections (a node's [`crate::HyperDhtConfig::connection_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Handshakes in progress at most (answered, the stream not yet open).
    pub max_pending: usize,
    /// Handshakes in progress from one remote IP at most.
    pub max_pending_per_ip: usize,
    /// Open inbound connections at most.
    pub max_connections: usize,
    /// Open inbound connections from one remote IP at most.
    pub max_connections_per_ip: usize,
    /// Largest secret-stream frame accepted on any connection (up to 16 MiB - 1); a
    /// longer length prefix closes the connection.
    pub max_frame_bytes: usize,
    /// Memory all connections together may hold for frames in progress larger than their
    /// read buffer (64 KiB, up to 1 MiB under traffic); a frame that does not fit closes
    /// its connection.
    pub frame_memory_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_per_ip: DEFAULT_MAX_PENDING_PER_IP,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            frame_memory_bytes: DEFAULT_FRAME_MEMORY_BYTES,
        }
    }
}

/// Counters of a node's inbound connections, for metrics. `pending`, `open` and
/// `frame_bytes_in_use` are gauges, the rest only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Handshakes in progress.
    pub pending: u64,
    /// Open inbound connections.
    pub open: u64,
    /// Inbound connections that opened.
    pub connections_accepted_total: u64,
    /// Inbound handshakes or connections refused by any limit below.
    pub connections_refused_total: u64,
    /// Refused: `max_pending` handshakes were in progress.
    pub connections_refused_pending: u64,
    /// Refused: `max_connections` connections were open.
    pub connections_refused_open: u64,
    /// Refused: the remote IP was at `max_pending_per_ip` or `max_connections_per_ip`.
    pub connections_refused_per_ip: u64,
    /// Frames refused because their length prefix was above `max_frame_bytes`.
    pub frames_refused_oversize: u64,
    /// Frames refused because `frame_memory_bytes` was spent.
    pub frames_refused_budget: u64,
    /// Bytes held now for large frames in progress.
    pub frame_bytes_in_use: u64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Pending,
    Open,
    PerIp,
}

#[derive(Default)]
struct Counts {
    pending: HashMap<Ipv4Addr, usize>,
    pending_total: usize,
    open: HashMap<Ipv4Addr, usize>,
    open_total: usize,
}

fn dec(map: &mut HashMap<Ipv4Addr, usize>, ip: Ipv4Addr) {
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

/// The node-wide accounting behind [`ConnectionLimits`].
pub(crate) struct Limiter {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
    accepted: AtomicU64,
    refused_pending: AtomicU64,
    refused_open: AtomicU64,
    refused_per_ip: AtomicU64,
    frames: Arc<FrameBudget>,
    last_warning: Mutex<Option<(Instant, u64)>>,
}

impl Limiter {
    pub fn new(limits: ConnectionLimits) -> Arc<Limiter> {
        Arc::new(Limiter {
            limits,
            counts: Mutex::new(Counts::default()),
            accepted: AtomicU64::new(0),
            refused_pending: AtomicU64::new(0),
            refused_open: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            frames: Arc::new(FrameBudget::new(limits.frame_memory_bytes)),
            last_warning: Mutex::new(None),
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// The frame budget connections share.
    pub fn frames(&self) -> Arc<FrameBudget> {
        self.frames.clone()
    }

    pub fn stats(&self) -> ConnectionStats {
        let (pending, open) = {
            let c = lock(&self.counts);
            (c.pending_total as u64, c.open_total as u64)
        };
        let FrameBudgetStats {
            bytes_in_use,
            frames_refused_oversize,
            frames_refused_budget,
            ..
        } = self.frames.stats();
        let refused_pending = self.refused_pending.load(Ordering::Relaxed);
        let refused_open = self.refused_open.load(Ordering::Relaxed);
        let refused_per_ip = self.refused_per_ip.load(Ordering::Relaxed);
        ConnectionStats {
            pending,
            open,
            connections_accepted_total: self.accepted.load(Ordering::Relaxed),
            connections_refused_total: refused_pending + refused_open + refused_per_ip,
            connections_refused_pending: refused_pending,
            connections_refused_open: refused_open,
            connections_refused_per_ip: refused_per_ip,
            frames_refused_oversize,
            frames_refused_budget,
            frame_bytes_in_use: bytes_in_use,
        }
    }

    /// A handshake from `ip` may start: a permit until its connection opens or fails.
    pub fn try_pending(self: &Arc<Self>, ip: Ipv4Addr) -> Option<PendingPermit> {
        let l = &self.limits;
        let refusal = {
            let mut c = lock(&self.counts);
            let open_ip = c.open.get(&ip).copied().unwrap_or(0);
            let pending_ip = c.pending.get(&ip).copied().unwrap_or(0);
            if c.open_total >= l.max_connections {
                Some(Refusal::Open)
            } else if c.pending_total >= l.max_pending {
                Some(Refusal::Pending)
            } else if open_ip >= l.max_connections_per_ip || pending_ip >= l.max_pending_per_ip {
                Some(Refusal::PerIp)
            } else {
                c.pending_total += 1;
                *c.pending.entry(ip).or_default() += 1;
                None
            }
        };
        match refusal {
            Some(r) => {
                self.refused(r, ip);
                None
            }
            None => Some(PendingPermit {
                limiter: self.clone(),
                ip,
                done: false,
            }),
        }
    }

    fn refused(&self, r: Refusal, ip: Ipv4Addr) {
        match r {
            Refusal::Pending => &self.refused_pending,
            Refusal::Open => &self.refused_open,
            Refusal::PerIp => &self.refused_per_ip,
        }
        .fetch_add(1, Ordering::Relaxed);
        let total = self.stats().connections_refused_total;
        let now = Instant::now();
        let mut last = lock(&self.last_warning);
        let since = last.map_or(total.saturating_sub(1), |(_, n)| n);
        if last.is_none_or(|(at, _)| now.duration_since(at).as_secs() >= LOG_INTERVAL_SECS) {
            tracing::warn!(
                remote_ip = %ip,
                limit = match r {
                    Refusal::Pending => "max_pending",
                    Refusal::Open => "max_connections",
                    Refusal::PerIp => "per-IP limit",
                },
                refused_since_last_warning = total - since,
                refused_total = total,
                "inbound connection refused"
            );
            *last = Some((now, total));
        }
    }
}

/// A handshake in progress, counted against the pending limits until dropped or turned
/// into an [`OpenPermit`].
pub(crate) struct PendingPermit {
    limiter: Arc<Limiter>,
    ip: Ipv4Addr,
    done: bool,
}

impl PendingPermit {
    /// The connection opened: it now counts as open, unless the open limits were reached
    /// meanwhile (then it is refused and must be closed).
    pub fn open(mut self) -> Option<OpenPermit> {
        let lim = self.limiter.clone();
        let l = &lim.limits;
        let refusal = {
            let mut c = lock(&lim.counts);
            c.pending_total -= 1;
            dec(&mut c.pending, self.ip);
            self.done = true;
            if c.open_total >= l.max_connections {
                Some(Refusal::Open)
            } else if c.open.get(&self.ip).copied().unwrap_or(0) >= l.max_connections_per_ip {
                Some(Refusal::PerIp)
            } else {
                c.open_total += 1;
                *c.open.entry(self.ip).or_default() += 1;
                None
            }
        };
        if let Some(r) = refusal {
            lim.refused(r, self.ip);
            return None;
        }
        lim.accepted.fetch_add(1, Ordering::Relaxed);
        Some(OpenPermit {
            limiter: lim.clone(),
            ip: self.ip,
        })
    }
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        if !self.done {
            let mut c = lock(&self.limiter.counts);
            c.pending_total -= 1;
            dec(&mut c.pending, self.ip);
        }
    }
}

/// An open inbound connection, counted until dropped.
pub(crate) struct OpenPermit {
    limiter: Arc<Limiter>,
    ip: Ipv4Addr,
}

impl Drop for OpenPermit {
    fn drop(&mut self) {
        let mut c = lock(&self.limiter.counts);
        c.open_total -= 1;
        dec(&mut c.open, self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_pending: 3,
            max_pending_per_ip: 2,
            max_connections: 4,
            max_connections_per_ip: 3,
            ..ConnectionLimits::default()
        }
    }

    const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

    #[test]
    fn pending_and_open_limits_hold_per_ip_and_in_total() {
        let l = Limiter::new(limits());
        let a1 = l.try_pending(A).unwrap();
        let a2 = l.try_pending(A).unwrap();
        assert!(l.try_pending(A).is_none()); // per IP
        let b1 = l.try_pending(B).unwrap();
        assert!(l.try_pending(B).is_none()); // total pending
        let open: Vec<OpenPermit> = [a1, a2, b1].into_iter().filter_map(|p| p.open()).collect();
        assert_eq!(open.len(), 3);
        let a3 = l.try_pending(A).unwrap();
        let b2 = l.try_pending(B).unwrap();
        let a3 = a3.open().unwrap();
        assert!(b2.open().is_none()); // 4 open in total, checked again on opening
        assert!(l.try_pending(B).is_none()); // and before the handshake
        let s = l.stats();
        assert_eq!((s.pending, s.open), (0, 4));
        assert_eq!(s.connections_accepted_total, 4);
        assert_eq!(s.connections_refused_per_ip, 1);
        assert_eq!(s.connections_refused_pending, 1);
        assert_eq!(s.connections_refused_open, 2);
        assert_eq!(s.connections_refused_total, 4);
        drop(open);
        drop(a3);
        let s = l.stats();
        assert_eq!((s.pending, s.open), (0, 0));
        // Per IP open: A may hold 3.
        let held: Vec<OpenPermit> = (0..3)
            .filter_map(|_| l.try_pending(A).and_then(PendingPermit::open))
            .collect();
        assert_eq!(held.len(), 3);
        assert!(l.try_pending(A).is_none());
        assert!(l.try_pending(B).is_some());
        assert_eq!(l.stats().connections_refused_per_ip, 2);
    }
}
