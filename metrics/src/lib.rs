//! Operator metrics: `GET /metrics` in the Prometheus text format (version 0.0.4), for
//! `intercom run --metrics-port` and `intercom dht-node --metrics-port`. The JS Intercom
//! has no equivalent; the metric names follow Prometheus conventions (`_total` counters,
//! base units, `process_*` as the client libraries name them).
//!
//! ```text
//!   scrape ──> MetricsServer (127.0.0.1:PORT, ≤ 8 connections, 8 KiB head, 5 s)
//!                  │ Exporter::render
//!                  v
//!   Sources ──> Snapshot ──> prometheus-client (Collector) ──> text format
//!   PeerSource    PeerHandle::counters() + stats()   connections, channels, messages, drops
//!   SubnetSource  SubnetHandle::counters() + info()  lengths, membership, ops, apply steps
//!   DhtSource     HyperDht status + store sizes       routing table, NAT/firewall, health
//!   BridgeSource  Publisher + CountingBackend         clients, commands by type and result
//!   process       /proc/self                          RSS, CPU, threads, fds
//! ```
//!
//! Nothing is threaded through the crates: they keep their own plain counters and the
//! sources read them at scrape time, so a peer without `--metrics-port` pays only for
//! those counters. Label sets are bounded: channels past
//! [`CHANNEL_LABEL_CAP`](intercom_peer::counters::CHANNEL_LABEL_CAP) aggregate under
//! `channel="other"`; reasons, roles, types and outcomes are fixed sets. No label or value
//! carries a secret (the bridge token never reaches this crate).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bridge;
pub mod http;
pub mod process;
pub mod snapshot;
pub mod sources;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

pub use bridge::{CommandCounters, CountingBackend};
pub use http::MetricsServer;
pub use snapshot::Snapshot;
pub use sources::{BridgeSource, DhtSource, PeerSource, Source, SubnetSource};

/// How long one source may take at a scrape before it is skipped.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Gathers every source into the text format.
#[derive(Default)]
pub struct Exporter {
    sources: Mutex<Vec<Arc<dyn Source>>>,
    /// Constant labels of `intercom_info` (set once: version, kind, peer key prefix).
    info: Mutex<Vec<(&'static str, String)>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// A snapshot owned by a one-scrape registry.
#[derive(Debug)]
struct Owned(Snapshot);

impl Collector for Owned {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

impl Exporter {
    /// An exporter for a process of `kind` (`peer`, `dht-node`).
    pub fn new(kind: &str) -> Arc<Exporter> {
        let e = Exporter::default();
        *e.info.lock().unwrap_or_else(|e| e.into_inner()) = vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("kind", kind.to_owned()),
        ];
        Arc::new(e)
    }

    /// Adds the first 16 hex digits of the peer's public key to `intercom_info`.
    pub fn set_peer_key(&self, key: &[u8; 32]) {
        let prefix: String = key[..8].iter().map(|b| format!("{b:02x}")).collect();
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        info.retain(|(k, _)| *k != "peer");
        info.push(("peer", prefix));
    }

    /// Adds a source; later scrapes include it.
    pub fn add(&self, source: impl Source) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(source));
    }

    /// Reads every source into a snapshot.
    pub async fn snapshot(&self) -> Snapshot {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut snap = Snapshot::default();
        let info = self.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
        snap.gauge(
            "intercom_info",
            "Constant 1, labelled with the version, the process kind and the peer key's first 16 hex digits.",
            info,
            1.0,
        );
        for source in sources {
            let mut part = Snapshot::default();
            if tokio::time::timeout(SOURCE_TIMEOUT, source.collect(&mut part))
                .await
                .is_err()
            {
                tracing::debug!("metrics: a source took too long; skipped in this scrape");
                continue;
            }
            snap.merge(part);
        }
        process::collect(&mut snap);
        snap
    }

    /// The body of `GET /metrics`.
    pub async fn render(&self) -> String {
        let snap = self.snapshot().await;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Owned(snap)));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        out
    }

    /// Serves [`render`](Self::render) on `GET /metrics` at `addr`.
    pub async fn serve(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<MetricsServer> {
        let me = self.clone();
        let render: http::Render = Arc::new(move || {
            let me = me.clone();
            Box::pin(async move { me.render().await })
        });
        MetricsServer::bind(addr, render).await
    }
}
