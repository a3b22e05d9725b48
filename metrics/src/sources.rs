//! Where the figures come from: each [`Source`] reads the counters one crate already keeps
//! and adds its families to the scrape's [`Snapshot`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use intercom_hyperdht::HyperDht;
use intercom_peer::PeerHandle;
use intercom_sc_bridge::Publisher;
use intercom_subnet::SubnetHandle;

use crate::bridge::CommandCounters;
use crate::snapshot::Snapshot;

/// A boxed future borrowing the source and the snapshot.
pub type Collecting<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Adds one part's families to a scrape.
pub trait Source: Send + Sync + 'static {
    /// Reads the part's counters into `snap`.
    fn collect<'a>(&'a self, snap: &'a mut Snapshot) -> Collecting<'a>;
}

fn label(name: &'static str, value: impl Into<String>) -> Vec<(&'static str, String)> {
    vec![(name, value.into())]
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The sidechannel runtime: connections, channels, messages and drops.
pub struct PeerSource(pub PeerHandle);

impl Source for PeerSource {
    fn collect<'a>(&'a self, snap: &'a mut Snapshot) -> Collecting<'a> {
        Box::pin(async move {
            let handle = &self.0;
            let c = handle.counters().snapshot();
            for (role, n) in &c.connections.opened {
                snap.counter(
                    "intercom_connections_opened",
                    "Peer connections taken into the runtime, by role (client: we dialled, server: we accepted).",
                    label("role", *role),
                    *n as f64,
                );
            }
            for (role, n) in &c.connections.closed {
                snap.counter(
                    "intercom_connections_closed",
                    "Peer connections ended, by role.",
                    label("role", *role),
                    *n as f64,
                );
            }
            for (channel, n) in &c.channels {
                let l = || label("channel", channel.clone());
                snap.counter(
                    "intercom_sidechannel_messages_received",
                    "Sidechannel messages that passed every check, per channel (channels past the label cap count as \"other\").",
                    l(),
                    n.received as f64,
                );
                snap.counter(
                    "intercom_sidechannel_messages_sent",
                    "Sidechannel messages this peer originated, per channel (one per send).",
                    l(),
                    n.sent as f64,
                );
                snap.counter(
                    "intercom_sidechannel_message_copies_sent",
                    "Copies of originated messages queued for peers, per channel.",
                    l(),
                    n.sent_copies as f64,
                );
                snap.counter(
                    "intercom_sidechannel_messages_relayed",
                    "Frames relayed to other peers while handling received messages, per channel.",
                    l(),
                    n.relayed as f64,
                );
                snap.counter(
                    "intercom_sidechannel_messages_dropped",
                    "Sidechannel messages the policy dropped, per channel.",
                    l(),
                    n.dropped as f64,
                );
            }
            for (reason, n) in &c.drops {
                snap.counter(
                    "intercom_sidechannel_drops",
                    "Sidechannel messages dropped, by reason (rate_limited, pow, invite, awaiting_welcome, oversize, bad_signature, duplicate, ...).",
                    label("reason", *reason),
                    *n as f64,
                );
            }
            let Ok(stats) = handle.stats().await else {
                return;
            };
            snap.gauge(
                "intercom_connections",
                "Open peer connections.",
                vec![],
                stats.connections as f64,
            );
            snap.counter(
                "intercom_connections_refused",
                "Peer connections refused (too many).",
                vec![],
                stats.refused_connections as f64,
            );
            let sc = &stats.sidechannel;
            snap.gauge(
                "intercom_sidechannel_channels",
                "Sidechannels joined.",
                vec![],
                sc.channels.len() as f64,
            );
            snap.gauge(
                "intercom_sidechannel_open_channels",
                "Sidechannel protocol channels open over all connections.",
                vec![],
                stats.open_channels as f64,
            );
            snap.gauge(
                "intercom_sidechannel_seen_entries",
                "Message ids held by the dedupe cache.",
                vec![],
                sc.seen as f64,
            );
            snap.gauge(
                "intercom_sidechannel_blocked_peers",
                "Peers blocked after repeated rate-limit strikes.",
                vec![],
                sc.blocked_peers as f64,
            );
            for (reason, n) in [
                ("queue_full", stats.send_queue_full),
                ("channel_not_open", stats.send_not_open),
            ] {
                snap.counter(
                    "intercom_sidechannel_send_dropped",
                    "Outgoing frames dropped before the wire, by reason.",
                    label("reason", reason),
                    n as f64,
                );
            }
        })
    }
}

/// The subnet: lengths, membership, operations applied and apply-step durations.
pub struct SubnetSource(pub SubnetHandle);

impl Source for SubnetSource {
    fn collect<'a>(&'a self, snap: &'a mut Snapshot) -> Collecting<'a> {
        Box::pin(async move {
            let handle = &self.0;
            let counters = handle.counters();
            for ((kind, outcome), n) in counters.applied_ops() {
                snap.counter(
                    "intercom_subnet_ops_applied",
                    "Subnet operations applied in the confirmed order, by entry type (tx, ack, add_writer, ...) and outcome (applied, ignored, rejected).",
                    vec![("type", kind), ("outcome", outcome.to_owned())],
                    n as f64,
                );
            }
            let h = counters.apply_steps();
            snap.histogram(
                "intercom_subnet_apply_step_seconds",
                "Duration of the subnet engine steps that applied at least one entry.",
                &h.buckets,
                h.count,
                h.sum_seconds,
            );
            let Ok(info) = handle.info().await else {
                return;
            };
            let own = intercom_subnet_hex(&handle.writer_key());
            let local = info
                .logs
                .iter()
                .find(|(k, _)| *k == own)
                .map_or(0, |(_, n)| *n);
            let held: u64 = info.logs.iter().map(|(_, n)| *n).sum();
            for (name, help, v) in [
                (
                    "intercom_subnet_confirmed_length",
                    "Entries in the subnet's confirmed order.",
                    info.confirmed_length as f64,
                ),
                (
                    "intercom_subnet_unconfirmed_length",
                    "Entries in the tentative order after the confirmed one.",
                    info.unconfirmed_length as f64,
                ),
                (
                    "intercom_subnet_waiting_entries",
                    "Entries held but waiting for what they depend on.",
                    info.waiting as f64,
                ),
                (
                    "intercom_subnet_local_log_length",
                    "Entries this peer appended to its own writer log.",
                    local as f64,
                ),
                (
                    "intercom_subnet_log_entries",
                    "Entries held over every followed writer log.",
                    held as f64,
                ),
                (
                    "intercom_subnet_logs",
                    "Writer logs followed.",
                    info.logs.len() as f64,
                ),
                (
                    "intercom_subnet_writers",
                    "Writers of the subnet (the bootstrap included).",
                    info.writers.len() as f64,
                ),
                (
                    "intercom_subnet_indexers",
                    "Indexers of the subnet (the bootstrap included).",
                    info.indexers.len() as f64,
                ),
                (
                    "intercom_subnet_is_writer",
                    "1 when this peer may write.",
                    flag(info.is_writer),
                ),
                (
                    "intercom_subnet_is_indexer",
                    "1 when this peer is an indexer.",
                    flag(info.is_indexer),
                ),
                (
                    "intercom_subnet_connections",
                    "Connections the subnet's logs replicate on.",
                    info.connections as f64,
                ),
            ] {
                snap.gauge(name, help, vec![], v);
            }
        })
    }
}

fn intercom_subnet_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// A HyperDHT node: routing table, NAT/firewall state, health, requests served and
/// dropped, inbound connection limits and stored records.
pub struct DhtSource(pub HyperDht);

impl Source for DhtSource {
    fn collect<'a>(&'a self, snap: &'a mut Snapshot) -> Collecting<'a> {
        Box::pin(async move {
            let s = self.0.dht().status();
            for (name, help, v) in [
                (
                    "intercom_dht_routing_table_nodes",
                    "Nodes in the DHT routing table.",
                    s.table_len as f64,
                ),
                (
                    "intercom_dht_bootstrapped",
                    "1 once the bootstrap walk finished.",
                    flag(s.bootstrapped),
                ),
                (
                    "intercom_dht_firewalled",
                    "1 when the node is firewalled (requests leave from the client socket; others cannot reach us unsolicited).",
                    flag(s.firewalled),
                ),
                (
                    "intercom_dht_persistent",
                    "1 when the node announces its id (routes and stores for others).",
                    flag(s.id.is_some()),
                ),
                (
                    "intercom_dht_online",
                    "1 while responses arrive.",
                    flag(s.health.online),
                ),
                (
                    "intercom_dht_degraded",
                    "1 while more than half of the recent requests time out.",
                    flag(s.health.degraded),
                ),
            ] {
                snap.gauge(name, help, vec![], v);
            }
            let budget = self.0.dht().request_budget_stats();
            snap.counter(
                "intercom_dht_requests_admitted",
                "DHT requests admitted by the request budget (served).",
                vec![],
                budget.requests_admitted as f64,
            );
            for (reason, n) in [
                ("per_source", budget.requests_dropped_per_source),
                ("global", budget.requests_dropped_global),
            ] {
                snap.counter(
                    "intercom_dht_requests_dropped",
                    "DHT requests dropped by the request budget, by reason.",
                    label("reason", reason),
                    n as f64,
                );
            }
            snap.gauge(
                "intercom_dht_budget_sources",
                "Source addresses the request budget remembers.",
                vec![],
                budget.sources as f64,
            );
            let c = self.0.connection_stats();
            snap.gauge(
                "intercom_inbound_connections_pending",
                "Inbound handshakes in progress.",
                vec![],
                c.pending as f64,
            );
            snap.gauge(
                "intercom_inbound_connections_open",
                "Open inbound connections.",
                vec![],
                c.open as f64,
            );
            snap.counter(
                "intercom_inbound_connections_accepted",
                "Inbound connections that opened.",
                vec![],
                c.connections_accepted_total as f64,
            );
            for (reason, n) in [
                ("pending", c.connections_refused_pending),
                ("open", c.connections_refused_open),
                ("per_ip", c.connections_refused_per_ip),
            ] {
                snap.counter(
                    "intercom_inbound_connections_refused",
                    "Inbound handshakes or connections refused by a limit, by which one.",
                    label("reason", reason),
                    n as f64,
                );
            }
            for (reason, n) in [
                ("oversize", c.frames_refused_oversize),
                ("budget", c.frames_refused_budget),
            ] {
                snap.counter(
                    "intercom_frames_refused",
                    "Secret-stream frames refused, by reason (length above the cap, frame memory spent).",
                    label("reason", reason),
                    n as f64,
                );
            }
            let sizes = self.0.store_sizes();
            for (kind, n) in [
                ("records", sizes.records),
                ("forwards", sizes.forwards),
                ("mutables", sizes.mutables),
                ("immutables", sizes.immutables),
            ] {
                snap.gauge(
                    "intercom_dht_stored",
                    "Records this node stores for others, by kind.",
                    label("kind", kind),
                    n as f64,
                );
            }
        })
    }
}

/// The SC-Bridge: authenticated clients and commands by type and result.
pub struct BridgeSource {
    /// The bridge's publisher (for the client count).
    pub publisher: Publisher,
    /// The counts of the [`CountingBackend`](crate::CountingBackend).
    pub commands: Arc<CommandCounters>,
}

impl Source for BridgeSource {
    fn collect<'a>(&'a self, snap: &'a mut Snapshot) -> Collecting<'a> {
        Box::pin(async move {
            snap.gauge(
                "intercom_bridge_clients",
                "Authenticated SC-Bridge clients.",
                vec![],
                self.publisher.client_count() as f64,
            );
            for ((kind, result), n) in self.commands.snapshot() {
                snap.counter(
                    "intercom_bridge_commands",
                    "SC-Bridge commands handed to the peer, by type and result (ok or the error code).",
                    vec![("type", kind.to_owned()), ("result", result.to_owned())],
                    n as f64,
                );
            }
        })
    }
}
