//! The network adapter of `intercom run`: a Hyperswarm ([`intercom_swarm`]) behind the
//! peer runtime's seam. Topic changes from the runtime ([`TopicQueue`]) become
//! `swarm.join(topic, {server, client})` / `swarm.leave(topic)`; every swarm connection's
//! secret-stream is wrapped in a protomux [`Mux`] (5 s keep-alive, as HyperDHT's default
//! `connectionKeepAlive`) and handed to the runtime ([`ConnectionSink`]). The subnet
//! topic is joined too, and the subnet's writer logs replicate on every connection
//! ([`Subnet`]).

use std::time::Duration;

use anyhow::Context;
use intercom_crypto::KeyPair;
use intercom_dht_rpc::BudgetConfig;
use intercom_hyperdht::constants::BOOTSTRAP_NODES;
use intercom_hyperdht::{ConnectionLimits, HyperDhtConfig};
use intercom_peer::{Connection, ConnectionSink, TopicCommand, TopicQueue};
use intercom_protomux::{Mux, MuxConfig};
use intercom_swarm::{JoinOptions, Swarm, SwarmConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::dht_cli::{default_host, parse_nodes};

/// How long the adapter waits for the DHT to bootstrap before it starts joining topics
/// anyway (joins queue up meanwhile).
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(30);
/// How long the graceful shutdown (unannouncing) may take.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Topic changes queued between the runtime and the adapter.
const TOPIC_QUEUE: usize = 2048;

/// A bound swarm waiting for the runtime's connection sink.
pub struct PeerNet {
    swarm: Swarm,
    topics: mpsc::Receiver<TopicCommand>,
    pub bootstrap: Vec<String>,
    subnet: Option<Subnet>,
}

/// The subnet's swarm topic and the service whose logs replicate on every connection
/// (trac-peer's `swarm.join(channel)` + `store.replicate(connection)`).
pub struct Subnet {
    /// The topic: the subnet channel's bytes repeated over 32 bytes (JS
    /// `b4a.alloc(32).fill(channel)`).
    pub topic: [u8; 32],
    /// The subnet service.
    pub handle: intercom_subnet::SubnetHandle,
}

/// Remote opens of log channels waiting for the subnet service, per connection.
const REMOTE_OPEN_QUEUE: usize = 64;

/// The running adapter.
pub struct PeerNetTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Limits of the peer's DHT node and swarm (docs/hardening.md).
#[derive(Debug, Clone, Copy, Default)]
pub struct NetLimits {
    /// Inbound connections: pending and open, in total and per IP; frame memory.
    pub connections: ConnectionLimits,
    /// Requests the DHT node serves per source IP and in total.
    pub request_budget: BudgetConfig,
}

impl NetLimits {
    /// The limits from `--max-connections`, `--max-connections-per-ip`,
    /// `--max-pending-connections` and `--dht-request-rate` (defaults for absent flags).
    pub fn from_flags(
        max_connections: Option<u64>,
        max_connections_per_ip: Option<u64>,
        max_pending_connections: Option<u64>,
        dht_request_rate: Option<u32>,
    ) -> NetLimits {
        let mut connections = ConnectionLimits::default();
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(n) = max_connections {
            connections.max_connections = size(n);
        }
        if let Some(n) = max_connections_per_ip {
            connections.max_connections_per_ip = size(n);
        }
        if let Some(n) = max_pending_connections {
            connections.max_pending = size(n);
        }
        NetLimits {
            connections,
            request_budget: request_budget(dht_request_rate),
        }
    }
}

/// The DHT request budget for `--dht-request-rate N`: N requests/s per source IP (burst
/// 2N); 0 turns every budget off (the JS behaviour); absent = the defaults.
pub fn request_budget(rate: Option<u32>) -> BudgetConfig {
    match rate {
        None => BudgetConfig::default(),
        Some(0) => BudgetConfig::unlimited(),
        Some(n) => BudgetConfig::default().with_per_source_rate(n),
    }
}

/// Binds the DHT node and the swarm with the peer's identity. `nodes` is the
/// `--dht-bootstrap` list (default: the public HyperDHT nodes).
pub async fn bind(
    nodes: Option<&[String]>,
    keypair: KeyPair,
    limits: NetLimits,
) -> anyhow::Result<(TopicQueue, PeerNet)> {
    let list: Vec<String> = match nodes {
        Some(n) => n.to_vec(),
        None => BOOTSTRAP_NODES.iter().map(|s| s.to_string()).collect(),
    };
    let bootstrap = parse_nodes(&list).await?;
    if bootstrap.is_empty() {
        anyhow::bail!("--dht-bootstrap: no bootstrap node given");
    }
    let mut dht = HyperDhtConfig::new(bootstrap.clone());
    dht.dht.host = default_host(&bootstrap);
    dht.connection_limits = limits.connections;
    dht.dht.request_budget = limits.request_budget;
    let swarm_config = SwarmConfig {
        max_server_connections: limits.connections.max_connections,
        ..SwarmConfig::new(keypair)
    };
    let swarm = Swarm::bind(dht, swarm_config)
        .await
        .context("starting the peer's DHT node")?;
    let (queue, topics) = TopicQueue::new(TOPIC_QUEUE, true);
    Ok((
        queue,
        PeerNet {
            swarm,
            topics,
            bootstrap: bootstrap.iter().map(|a| a.to_string()).collect(),
            subnet: None,
        },
    ))
}

impl PeerNet {
    /// Joins the subnet topic once bootstrapped and replicates `subnet.logs` on every
    /// connection.
    pub fn with_subnet(mut self, subnet: Subnet) -> PeerNet {
        self.subnet = Some(subnet);
        self
    }

    /// A handle on the swarm's DHT node (for the metrics endpoint).
    pub fn dht(&self) -> intercom_hyperdht::HyperDht {
        self.swarm.dht().clone()
    }

    /// Starts forwarding topics and connections.
    pub fn start(self, connector: ConnectionSink) -> PeerNetTask {
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(
            self.swarm,
            self.topics,
            self.subnet,
            connector,
            stop_rx,
        ));
        PeerNetTask { stop, task }
    }
}

impl PeerNetTask {
    /// Leaves every topic (unannouncing) and destroys the swarm.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn mux_config() -> MuxConfig {
    MuxConfig {
        keepalive: Some(Duration::from_secs(5)),
        ..MuxConfig::default()
    }
}

/// Warns about connections closed because the peer runtime was busy at most every 10 s
/// (a flood of connections must not flood the log too).
#[derive(Default)]
struct BusyWarning {
    last: Option<tokio::time::Instant>,
    since: u64,
}

impl BusyWarning {
    fn refused(&mut self) {
        self.since += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::warn!(
                closed = self.since,
                "peer runtime busy or stopped; connections closed"
            );
            self.last = Some(now);
            self.since = 0;
        }
    }
}

async fn run(
    mut swarm: Swarm,
    mut topics: mpsc::Receiver<TopicCommand>,
    subnet: Option<Subnet>,
    connector: ConnectionSink,
    mut stop: oneshot::Receiver<()>,
) {
    let mut busy = BusyWarning::default();
    tokio::select! {
        r = tokio::time::timeout(BOOTSTRAP_WAIT, swarm.dht().dht().bootstrapped()) => match r {
            Ok(Ok(_)) => tracing::info!("peer DHT bootstrapped"),
            Ok(Err(e)) => crate::logging::warning(&format!("the peer's DHT did not bootstrap ({e}); discovery keeps trying")),
            Err(_) => crate::logging::warning(&format!("the peer's DHT is not bootstrapped after {} s; discovery keeps trying", BOOTSTRAP_WAIT.as_secs())),
        },
        _ = &mut stop => {
            let _ = tokio::time::timeout(SHUTDOWN_WAIT, swarm.destroy()).await;
            return;
        }
    }
    if let Some(subnet) = &subnet {
        let opts = JoinOptions {
            server: true,
            client: true,
        };
        if let Err(e) = swarm.join(subnet.topic, opts).await {
            tracing::warn!(error = %e, "joining the subnet topic failed");
        }
    }
    loop {
        tokio::select! {
            _ = &mut stop => break,
            cmd = topics.recv() => match cmd {
                Some(TopicCommand::Join { topic, channel }) => {
                    if let Err(e) = swarm.join(topic, JoinOptions { server: true, client: true }).await {
                        tracing::warn!(channel, error = %e, "swarm join failed");
                    }
                }
                Some(TopicCommand::Leave { topic, channel }) => {
                    if let Err(e) = swarm.leave(topic).await {
                        tracing::warn!(channel, error = %e, "swarm leave failed");
                    }
                }
                None => break,
            },
            conn = swarm.accept() => {
                let Some(c) = conn else { break };
                let info = c.connection.info().clone();
                let (reader, writer, handle) = c.connection.split();
                let (mux, events) = Mux::new(reader, writer, mux_config());
                let remote_opens = subnet.as_ref().map(|s| {
                    let (tx, rx) = mpsc::channel(REMOTE_OPEN_QUEUE);
                    s.handle.attach(intercom_subnet::Attachment {
                        remote_key: c.public_key,
                        mux: mux.clone(),
                        is_initiator: info.is_initiator,
                        handshake_hash: info.handshake_hash.to_vec(),
                        remote_opens: Some(rx),
                    });
                    tx
                });
                let label = format!(
                    "{} {}",
                    if c.client { "dialled" } else { "accepted" },
                    handle.remote_addr()
                );
                let connection = Connection { remote_public_key: c.public_key, mux, events, label, remote_opens };
                if let Err(refused) = connector.try_add(connection) {
                    busy.refused();
                    refused.mux.destroy();
                }
            }
        }
    }
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, swarm.destroy()).await;
}
