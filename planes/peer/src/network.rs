//! The seam between the runtime and the network: topics out ([`Discovery`]), connections in
//! ([`ConnectionSink`]).

use intercom_protomux::{Mux, MuxEvents};
use tokio::sync::mpsc;

/// An established connection to a peer, handed to the runtime by the network adapter.
///
/// The mux must be running over an authenticated transport whose remote static key is
/// `remote_public_key` (secret-stream's Noise handshake gives both). The runtime owns the
/// mux from here on: it opens the sidechannel protocols on it and closes it on shutdown.
pub struct Connection {
    /// The remote's Ed25519 public key (its Noise static key, Hyperswarm's `remotePublicKey`).
    pub remote_public_key: [u8; 32],
    /// The protomux session over the connection.
    pub mux: Mux,
    /// The mux-level events (remote open requests, close); the runtime reads them.
    pub events: MuxEvents,
    /// Free text for logs (an address, "memory"...).
    pub label: String,
    /// Where remote opens of channels with an id (hypercore logs, keyed by discovery key)
    /// go as `(protocol, id)`; the receiver opens the matching channel to accept. Without
    /// it, or when it is full, they are rejected (sidechannels never use ids).
    pub remote_opens: Option<mpsc::Sender<(String, Vec<u8>)>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote_public_key", &hex::encode(self.remote_public_key))
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Where the network adapter puts new connections: a bounded queue into the runtime task.
#[derive(Debug, Clone)]
pub struct ConnectionSink {
    pub(crate) tx: mpsc::Sender<Connection>,
}

impl ConnectionSink {
    /// Hands a connection to the runtime; waits while its queue is full. Gives the
    /// connection back when the runtime has stopped.
    pub async fn add(&self, connection: Connection) -> Result<(), Box<Connection>> {
        self.tx.send(connection).await.map_err(|e| Box::new(e.0))
    }

    /// Like [`ConnectionSink::add`] but never waits: gives the connection back when the
    /// queue is full or the runtime has stopped (the caller should then close it).
    pub fn try_add(&self, connection: Connection) -> Result<(), Box<Connection>> {
        self.tx.try_send(connection).map_err(|e| {
            Box::new(match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            })
        })
    }

    /// True once the runtime has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Topic membership, driven by the runtime for every joined and left channel.
///
/// Called from the runtime task: implementations must return at once (forward to the
/// swarm's own command queue). The reference joins sidechannel topics as both server and
/// client (`swarm.join(topic, {server: true, client: true})`).
pub trait Discovery: Send + 'static {
    /// Announce and look up `topic` (`channel` is its sidechannel name, for logs).
    fn join(&mut self, topic: [u8; 32], channel: &str);
    /// Stop announcing and looking up `topic`.
    fn leave(&mut self, topic: [u8; 32], channel: &str);
    /// Whether this adapter actually reaches other peers (shown in stats and the banner).
    fn is_networked(&self) -> bool {
        true
    }
}

/// No network: topics are remembered by nobody and no connection ever arrives except the
/// ones handed in directly (tests, in-process meshes).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNetwork;

impl Discovery for NoNetwork {
    fn join(&mut self, _topic: [u8; 32], channel: &str) {
        tracing::debug!(channel, "no network: topic not announced");
    }
    fn leave(&mut self, _topic: [u8; 32], _channel: &str) {}
    fn is_networked(&self) -> bool {
        false
    }
}

/// A topic change, as forwarded by [`TopicQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicCommand {
    /// Join the topic (server and client).
    Join {
        /// The swarm topic.
        topic: [u8; 32],
        /// Its sidechannel name.
        channel: String,
    },
    /// Leave the topic.
    Leave {
        /// The swarm topic.
        topic: [u8; 32],
        /// Its sidechannel name.
        channel: String,
    },
}

/// A [`Discovery`] that forwards topic changes into a bounded queue, for adapters that
/// prefer to consume them from their own task. A full queue drops the change with a
/// warning (size it for `max_channels` joins).
#[derive(Debug, Clone)]
pub struct TopicQueue {
    tx: mpsc::Sender<TopicCommand>,
    networked: bool,
}

impl TopicQueue {
    /// A queue of `capacity` changes; `networked` is what [`Discovery::is_networked`] says.
    pub fn new(capacity: usize, networked: bool) -> (TopicQueue, mpsc::Receiver<TopicCommand>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (TopicQueue { tx, networked }, rx)
    }

    fn push(&self, cmd: TopicCommand) {
        if let Err(e) = self.tx.try_send(cmd) {
            tracing::warn!(error = %e, "topic change dropped: queue full or closed");
        }
    }
}

impl Discovery for TopicQueue {
    fn join(&mut self, topic: [u8; 32], channel: &str) {
        self.push(TopicCommand::Join {
            topic,
            channel: channel.to_owned(),
        });
    }
    fn leave(&mut self, topic: [u8; 32], channel: &str) {
        self.push(TopicCommand::Leave {
            topic,
            channel: channel.to_owned(),
        });
    }
    fn is_networked(&self) -> bool {
        self.networked
    }
}
