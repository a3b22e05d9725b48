//! A Hyperswarm-compatible swarm over HyperDHT: the Rust counterpart of the JS
//! [`hyperswarm`](https://github.com/holepunchto/hyperswarm) module 4.17.
//!
//! Join a 32-byte topic as a server (announce ourselves, accept connections) and/or a
//! client (look the topic up, dial the peers found); the swarm keeps exactly one
//! connection per remote public key and hands each one out as a [`SwarmConnection`]
//! carrying the remote key. A JS `Hyperswarm` on the same topic and DHT finds and
//! connects to us, and we to it.
//!
//! ```text
//!   join(topic) ──► topic task: announce / lookup, refresh every 10 min ± 2
//!                        │ peers found
//!                        ▼
//!   Core (sans-io): peer queue by priority ─► dial ≤ 3 at once (≤ max_peers)
//!                   one connection per key, tie-break on public keys
//!                   retry after ~1 s / 5 s / 15 s
//!                        │ actions
//!                        ▼
//!   driver task: HyperDht::connect / Server::accept, close watchers ─► SwarmConnection
//! ```
//!
//! * [`core`]: every decision, with an explicit clock and no I/O;
//! * [`discovery`]: the per-topic announce/lookup task;
//! * `driver`: the one task that executes the core's actions.
//!
//! Differences from JS: at most [`SwarmConfig::max_server_connections`] connections
//! dialled by others (JS: unlimited; the node's own inbound limits, total and per IP,
//! are [`intercom_hyperdht::ConnectionLimits`]), no blind-relay (`relayThrough`) support, no suspend/resume,
//! and a connection the application does not take from [`Swarm::accept`] in time
//! (the event queue is full) is destroyed rather than buffered.

#![forbid(unsafe_code)]

pub mod core;
pub mod discovery;
mod driver;
pub mod peer;
pub mod queue;
pub mod retry;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_hyperdht::{Connection, HyperDht, HyperDhtConfig, HyperDhtError, ListenOptions};
use tokio::sync::{mpsc, oneshot};

pub use crate::core::SwarmFirewall;
use crate::core::{Core, CoreConfig};
pub use crate::discovery::JoinOptions;
use crate::driver::{Command, Driver};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Errors of the swarm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The DHT node could not be started.
    #[error(transparent)]
    Dht(#[from] HyperDhtError),
    /// The swarm was destroyed.
    #[error("swarm destroyed")]
    Destroyed,
}

/// Settings of a [`Swarm`].
#[derive(Clone)]
pub struct SwarmConfig {
    /// Our identity (the key we announce and connect with).
    pub key_pair: KeyPair,
    /// Most connections (`maxPeers`, 64).
    pub max_peers: usize,
    /// Most dials at once (`maxParallel`, 3).
    pub max_parallel: usize,
    /// Most connections we dialled.
    pub max_client_connections: usize,
    /// Most connections dialled by others (default: the node's default inbound limit,
    /// [`intercom_hyperdht::limits::DEFAULT_MAX_CONNECTIONS`]; JS: unlimited).
    pub max_server_connections: usize,
    /// Accept (`true`) or reject a remote key, before any data flows, in both
    /// directions; rejected keys are banned.
    pub firewall: Option<SwarmFirewall>,
    /// Reconnect backoffs (short, medium, long, explicit peers).
    pub backoffs: [Duration; 4],
    /// Jitter added to each backoff.
    pub jitter: Duration,
    /// Bound on one dial.
    pub connect_timeout: Duration,
    /// Connections waiting for [`Swarm::accept`].
    pub event_queue: usize,
}

impl SwarmConfig {
    /// The JS defaults for `key_pair`.
    pub fn new(key_pair: KeyPair) -> Self {
        SwarmConfig {
            key_pair,
            max_peers: 64,
            max_parallel: 3,
            max_client_connections: usize::MAX,
            max_server_connections: intercom_hyperdht::limits::DEFAULT_MAX_CONNECTIONS,
            firewall: None,
            backoffs: retry::BACKOFFS,
            jitter: retry::JITTER,
            connect_timeout: Duration::from_secs(30),
            event_queue: 256,
        }
    }
}

impl std::fmt::Debug for SwarmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmConfig")
            .field("max_peers", &self.max_peers)
            .field("max_parallel", &self.max_parallel)
            .field("firewall", &self.firewall.is_some())
            .finish_non_exhaustive()
    }
}

/// A new connection: the encrypted stream and who is on the other end.
pub struct SwarmConnection {
    /// The connection (split it for protomux).
    pub connection: Connection,
    /// The remote's public key.
    pub public_key: [u8; 32],
    /// True when we dialled it.
    pub client: bool,
    /// Topics the remote was found under (empty for server connections from unknown
    /// peers).
    pub topics: Vec<[u8; 32]>,
}

impl std::fmt::Debug for SwarmConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmConnection")
            .field("client", &self.client)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// A snapshot of the swarm.
#[derive(Debug, Clone, Default)]
pub struct SwarmStatus {
    /// Open connections.
    pub connections: usize,
    /// Dials in progress.
    pub connecting: usize,
    /// Known peers.
    pub peers: usize,
    /// Remote keys with an open connection.
    pub open_keys: Vec<[u8; 32]>,
    /// Joined topics.
    pub topics: Vec<[u8; 32]>,
    /// Whether our server listens.
    pub listening: bool,
    /// Open connections dialled by others.
    pub server_connections: usize,
    /// Connections dialled by others that were closed because
    /// [`SwarmConfig::max_server_connections`] were open (the node's own inbound limits
    /// are counted in [`HyperDht::connection_stats`]).
    pub server_refused_over_limit: u64,
}

/// A Hyperswarm. Cheap handles are not offered: one owner accepts connections; the
/// control methods take `&self`.
pub struct Swarm {
    cmd: mpsc::Sender<Command>,
    events: mpsc::Receiver<SwarmConnection>,
    dht: HyperDht,
    public_key: [u8; 32],
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm").finish_non_exhaustive()
    }
}

impl Swarm {
    /// Starts a DHT node with `dht` and a swarm on it.
    pub async fn bind(dht: HyperDhtConfig, config: SwarmConfig) -> Result<Swarm, SwarmError> {
        let node = HyperDht::bind(dht).await?;
        Ok(Swarm::new(node, config))
    }

    /// A swarm on an existing node (which it destroys with itself).
    pub fn new(dht: HyperDht, config: SwarmConfig) -> Swarm {
        let public_key = config.key_pair.public_key;
        let banned: Arc<Mutex<HashSet<[u8; 32]>>> = Arc::default();
        let user = config.firewall.clone();
        let check: SwarmFirewall = {
            let banned = banned.clone();
            Arc::new(move |key: &[u8; 32]| {
                if *key == public_key || lock(&banned).contains(key) {
                    return false;
                }
                let ok = user.as_ref().is_none_or(|f| f(key));
                if !ok {
                    lock(&banned).insert(*key);
                }
                ok
            })
        };
        let server_check = check.clone();
        let listen_opts = ListenOptions {
            firewall: Some(Arc::new(move |key: &[u8; 32], _: &_, _| server_check(key))),
            ..ListenOptions::default()
        };
        let core = Core::new(
            CoreConfig {
                public_key,
                max_peers: config.max_peers,
                max_parallel: config.max_parallel,
                max_client_connections: config.max_client_connections,
                max_server_connections: config.max_server_connections,
                backoffs: config.backoffs,
                jitter: config.jitter,
                firewall: Some(check),
            },
            u64::from_le_bytes(intercom_crypto::random_array()),
        );
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(config.event_queue.max(1));
        let driver = Driver {
            core,
            dht: dht.clone(),
            key_pair: config.key_pair,
            listen_opts,
            connect_timeout: config.connect_timeout,
            cmd: cmd_rx,
            events: ev_tx,
            banned,
        };
        tokio::spawn(driver.run());
        Swarm {
            cmd: cmd_tx,
            events: ev_rx,
            dht,
            public_key,
        }
    }

    /// The DHT node.
    pub fn dht(&self) -> &HyperDht {
        &self.dht
    }

    /// Our public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SwarmError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| SwarmError::Destroyed)?;
        rx.await.map_err(|_| SwarmError::Destroyed)
    }

    /// Joins `topic` (or changes how it is joined); discovery starts at once.
    pub async fn join(&self, topic: [u8; 32], opts: JoinOptions) -> Result<(), SwarmError> {
        self.ask(|done| Command::Join { topic, opts, done })
            .await
            .map(drop)
    }

    /// Leaves `topic`: no more discovery, and unannounces if we announced. Open
    /// connections stay.
    pub async fn leave(&self, topic: [u8; 32]) -> Result<(), SwarmError> {
        self.ask(|done| Command::Leave { topic, done }).await
    }

    /// Keeps a connection to `key` regardless of topics (`joinPeer`).
    pub async fn join_peer(&self, key: [u8; 32]) -> Result<(), SwarmError> {
        self.cmd
            .send(Command::JoinPeer(key))
            .await
            .map_err(|_| SwarmError::Destroyed)
    }

    /// Stops keeping `key` connected (`leavePeer`).
    pub async fn leave_peer(&self, key: [u8; 32]) -> Result<(), SwarmError> {
        self.cmd
            .send(Command::LeavePeer(key))
            .await
            .map_err(|_| SwarmError::Destroyed)
    }

    /// Waits until every topic finished its current announce/lookup and every peer it
    /// found was tried (`flush()`); false when the swarm was destroyed meanwhile.
    pub async fn flush(&self) -> Result<bool, SwarmError> {
        let refreshing = self.ask(Command::Refreshing).await?;
        for mut r in refreshing {
            let _ = r.wait_for(|busy| !*busy).await;
        }
        self.ask(Command::Flush).await
    }

    /// The next connection; `None` once the swarm is destroyed.
    pub async fn accept(&mut self) -> Option<SwarmConnection> {
        self.events.recv().await
    }

    /// A snapshot of the connection set.
    pub async fn status(&self) -> Result<SwarmStatus, SwarmError> {
        self.ask(Command::Status).await
    }

    /// Graceful shutdown: leaves every topic (unannouncing), closes the server
    /// (unannouncing our key), destroys the connections and the DHT node.
    pub async fn destroy(self) {
        let _ = self.ask(Command::Destroy).await;
    }
}
