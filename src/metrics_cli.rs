//! `--metrics-port` / `--metrics-host` of `intercom run` and `intercom dht-node`: wires the
//! parts of a running process into an [`intercom_metrics::Exporter`] and serves it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use intercom_hyperdht::HyperDht;
use intercom_metrics::{
    BridgeSource, CommandCounters, CountingBackend, DhtSource, Exporter, MetricsServer, PeerSource,
    SubnetSource,
};
use intercom_peer::PeerHandle;
use intercom_sc_bridge::{Backend, Publisher};
use intercom_subnet::SubnetHandle;

/// The metrics flags (flattened into the commands that serve metrics).
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (off unless given; 0 picks a free port).
    #[arg(long, value_name = "PORT", help_heading = "Operator surfaces")]
    pub metrics_port: Option<u16>,

    /// Metrics bind host (another address exposes the figures to whoever reaches it).
    #[arg(
        long,
        value_name = "HOST",
        default_value = "127.0.0.1",
        help_heading = "Operator surfaces"
    )]
    pub metrics_host: IpAddr,
}

impl MetricsArgs {
    fn addr(&self) -> Option<SocketAddr> {
        self.metrics_port
            .map(|port| SocketAddr::new(self.metrics_host, port))
    }
}

/// What `intercom run` observes: built before the bridge (whose backend it wraps), served
/// once every part exists.
pub struct PeerObserver {
    exporter: Arc<Exporter>,
    commands: Arc<CommandCounters>,
}

impl PeerObserver {
    /// An observer for the peer with `public_key`.
    pub fn new(public_key: &[u8; 32]) -> PeerObserver {
        let exporter = Exporter::new("peer");
        exporter.set_peer_key(public_key);
        PeerObserver {
            exporter,
            commands: Arc::new(CommandCounters::default()),
        }
    }

    /// Wraps the bridge's backend so its commands are counted.
    pub fn backend<B: Backend>(&self, backend: B) -> CountingBackend<B> {
        CountingBackend::new(backend, self.commands.clone())
    }

    /// Adds the bridge's client count and command counts.
    pub fn bridge(&self, publisher: Publisher) {
        self.exporter.add(BridgeSource {
            publisher,
            commands: self.commands.clone(),
        });
    }

    /// Adds the runtime, the subnet and the DHT node, and serves the endpoint when
    /// `--metrics-port` was given (`None` otherwise).
    pub async fn serve(
        &self,
        args: &MetricsArgs,
        peer: &PeerHandle,
        subnet: &SubnetHandle,
        dht: HyperDht,
    ) -> anyhow::Result<Option<MetricsServer>> {
        let Some(addr) = args.addr() else {
            return Ok(None);
        };
        self.exporter.add(PeerSource(peer.clone()));
        self.exporter.add(SubnetSource(subnet.clone()));
        self.exporter.add(DhtSource(dht));
        let server = self
            .exporter
            .serve(addr)
            .await
            .with_context(|| format!("--metrics-port: cannot bind {addr}"))?;
        Ok(Some(server))
    }
}

/// Serves a DHT node's own metrics (`intercom dht-node --metrics-port`).
pub async fn serve_dht_node(
    args: &MetricsArgs,
    node: &HyperDht,
) -> anyhow::Result<Option<MetricsServer>> {
    let Some(addr) = args.addr() else {
        return Ok(None);
    };
    let exporter = Exporter::new("dht-node");
    exporter.add(DhtSource(node.clone()));
    let server = exporter
        .serve(addr)
        .await
        .with_context(|| format!("--metrics-port: cannot bind {addr}"))?;
    Ok(Some(server))
}
