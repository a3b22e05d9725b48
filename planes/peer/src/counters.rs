//! Per-channel and per-reason counters the runtime keeps for operators (the metrics
//! endpoint reads them at scrape time through [`PeerHandle::counters`](crate::PeerHandle::counters)).
//!
//! Label sets stay bounded: the first [`CHANNEL_LABEL_CAP`] channels seen get their own
//! entry, every later channel is counted under [`OTHER_CHANNEL`]. A channel keeps its
//! entry after it is left (counters never go back). Drop reasons are the plane's fixed
//! [`DropReason::code`](intercom_sidechannel::DropReason::code)s, and connection roles are
//! `client` (we dialled), `server` (we accepted) or `other`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Channels that get a label of their own; later ones count under [`OTHER_CHANNEL`].
pub const CHANNEL_LABEL_CAP: usize = 64;

/// The name every channel past [`CHANNEL_LABEL_CAP`] is counted under.
pub const OTHER_CHANNEL: &str = "other";

/// What happened on one channel (or on the channels aggregated under `other`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounts {
    /// Messages that passed every check and were delivered to the application.
    pub received: u64,
    /// Messages we originated (one per successful send, whatever the fan-out).
    pub sent: u64,
    /// Copies of our messages queued for peers (a send to three peers counts three).
    pub sent_copies: u64,
    /// Frames queued for other peers while handling a received message (relays).
    pub relayed: u64,
    /// Messages dropped by the plane.
    pub dropped: u64,
}

/// Connections by role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Connections taken in, per role.
    pub opened: BTreeMap<&'static str, u64>,
    /// Connections ended, per role.
    pub closed: BTreeMap<&'static str, u64>,
}

/// A copy of every counter, taken at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Per channel, in the order the channels were first seen; `other` last when used.
    pub channels: Vec<(String, ChannelCounts)>,
    /// Dropped messages per reason code.
    pub drops: BTreeMap<&'static str, u64>,
    /// Connections opened and closed per role.
    pub connections: ConnectionCounts,
}

#[derive(Debug, Default)]
struct Inner {
    index: HashMap<String, usize>,
    channels: Vec<(String, ChannelCounts)>,
    other: Option<ChannelCounts>,
    drops: BTreeMap<&'static str, u64>,
    connections: ConnectionCounts,
}

impl Inner {
    fn channel(&mut self, name: &str) -> &mut ChannelCounts {
        if let Some(&i) = self.index.get(name) {
            return &mut self.channels[i].1;
        }
        if self.channels.len() < CHANNEL_LABEL_CAP && name != OTHER_CHANNEL {
            self.index.insert(name.to_owned(), self.channels.len());
            self.channels
                .push((name.to_owned(), ChannelCounts::default()));
            let last = self.channels.len() - 1;
            return &mut self.channels[last].1;
        }
        self.other.get_or_insert_with(ChannelCounts::default)
    }
}

/// The runtime's counters; cheap to update (one uncontended lock per event).
#[derive(Debug, Default)]
pub struct PeerCounters {
    inner: Mutex<Inner>,
}

impl PeerCounters {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub(crate) fn received(&self, channel: &str) {
        self.with(|i| i.channel(channel).received += 1);
    }

    pub(crate) fn sent(&self, channel: &str, copies: usize) {
        self.with(|i| {
            let c = i.channel(channel);
            c.sent += 1;
            c.sent_copies += copies as u64;
        });
    }

    pub(crate) fn relayed(&self, channel: &str) {
        self.with(|i| i.channel(channel).relayed += 1);
    }

    pub(crate) fn dropped(&self, channel: &str, reason: &'static str) {
        self.with(|i| {
            i.channel(channel).dropped += 1;
            *i.drops.entry(reason).or_default() += 1;
        });
    }

    pub(crate) fn connection_opened(&self, role: &'static str) {
        self.with(|i| *i.connections.opened.entry(role).or_default() += 1);
    }

    pub(crate) fn connection_closed(&self, role: &'static str) {
        self.with(|i| *i.connections.closed.entry(role).or_default() += 1);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        self.with(|i| {
            let mut channels = i.channels.clone();
            if let Some(other) = i.other {
                channels.push((OTHER_CHANNEL.to_owned(), other));
            }
            CountersSnapshot {
                channels,
                drops: i.drops.clone(),
                connections: i.connections.clone(),
            }
        })
    }
}

/// The role of a connection from its adapter label (`dialled ...` / `accepted ...`).
pub(crate) fn role_of(label: &str) -> &'static str {
    match label.split_whitespace().next() {
        Some("dialled") => "client",
        Some("accepted") => "server",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_past_the_cap_aggregate() {
        let c = PeerCounters::default();
        for i in 0..10_000 {
            c.received(&format!("chan-{i}"));
        }
        c.received("chan-0");
        c.dropped("chan-9999", "rate_limited");
        c.sent(OTHER_CHANNEL, 2);
        let s = c.snapshot();
        assert_eq!(s.channels.len(), CHANNEL_LABEL_CAP + 1);
        assert_eq!(
            s.channels[0],
            (
                "chan-0".into(),
                ChannelCounts {
                    received: 2,
                    ..Default::default()
                }
            )
        );
        let (name, other) = s.channels.last().unwrap();
        assert_eq!(name, OTHER_CHANNEL);
        assert_eq!(other.received, 10_000 - CHANNEL_LABEL_CAP as u64);
        assert_eq!((other.dropped, other.sent, other.sent_copies), (1, 1, 2));
        assert_eq!(s.drops["rate_limited"], 1);
    }

    #[test]
    fn roles() {
        assert_eq!(role_of("dialled 127.0.0.1:1"), "client");
        assert_eq!(role_of("accepted 127.0.0.1:1"), "server");
        assert_eq!(role_of("memory"), "other");
    }
}
