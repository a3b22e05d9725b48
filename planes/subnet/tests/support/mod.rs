//! In-memory subnet peers for the tests: real subnet services over in-memory muxes,
//! attached the way the peer runtime attaches connections.

#![allow(dead_code)]

use std::sync::Arc;

use intercom_contracts::builtin::BuiltinContract;
use intercom_crypto::KeyPair;
use intercom_log::{Log, Replica, SharedReplica};
use intercom_protomux::{memory_pair, DriverEvent, Mux, MuxConfig, MuxEvents};
use intercom_stores::MemoryStore;
use intercom_subnet::{start, Attachment, Key, SubnetConfig, SubnetHandle};
use tokio::sync::mpsc;

pub const CHANNEL: &str = "subnet-test";
/// Both ends of a test connection use this as their Noise handshake hash.
const HANDSHAKE_HASH: [u8; 32] = [7; 32];

pub struct Node {
    pub handle: SubnetHandle,
    pub identity: KeyPair,
    pub writer: Key,
}

/// A subnet peer with identity `seed`, sequenced by `bootstrap` (itself if `None`).
pub fn node(seed: u8, bootstrap: Option<Key>) -> Node {
    let kv = Arc::new(MemoryStore::default());
    let log = Log::open_writer(kv.clone(), KeyPair::from_seed(&[seed ^ 0x40; 32])).unwrap();
    let writer = *log.key();
    let identity = KeyPair::from_seed(&[seed; 32]);
    let config = SubnetConfig::new(
        CHANNEL,
        bootstrap.unwrap_or(writer),
        Arc::new(BuiltinContract),
        identity.clone(),
    );
    let handle = start(config, kv, log).unwrap();
    Node {
        handle,
        identity,
        writer,
    }
}

/// What the peer runtime does with a connection's mux events: keyed remote opens go to
/// the subnet service, or are rejected when it is busy.
fn attach(node: &Node, remote: &KeyPair, mux: Mux, mut events: MuxEvents, initiator: bool) {
    let (tx, rx) = mpsc::channel(64);
    node.handle.attach(Attachment {
        remote_key: remote.public_key,
        mux: mux.clone(),
        is_initiator: initiator,
        handshake_hash: HANDSHAKE_HASH.to_vec(),
        remote_opens: Some(rx),
    });
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let DriverEvent::RemoteOpenRequest {
                protocol,
                id: Some(id),
            } = event
            {
                if tx.try_send((protocol.clone(), id.clone())).is_err() {
                    let _ = mux.reject(&protocol, Some(&id)).await;
                }
            }
        }
    });
}

fn mux_pair() -> ((Mux, MuxEvents), (Mux, MuxEvents)) {
    let ((a_rx, a_tx), (b_rx, b_tx)) = memory_pair(256);
    (
        Mux::new(a_rx, a_tx, MuxConfig::default()),
        Mux::new(b_rx, b_tx, MuxConfig::default()),
    )
}

/// Connects two nodes; returns both muxes (destroy one to drop the connection).
pub fn connect(a: &Node, b: &Node) -> (Mux, Mux) {
    let ((a_mux, a_events), (b_mux, b_events)) = mux_pair();
    attach(a, &b.identity, a_mux.clone(), a_events, true);
    attach(b, &a.identity, b_mux.clone(), b_events, false);
    (a_mux, b_mux)
}

/// A writer that is not a subnet service: its bare log, which it appends to as it
/// likes (a misbehaving or removed writer), replicated to `peers`.
pub struct RawWriter {
    pub identity: KeyPair,
    pub writer: Key,
    pub replica: SharedReplica,
}

impl RawWriter {
    pub fn new(seed: u8) -> RawWriter {
        let kv = Arc::new(MemoryStore::default());
        let log = Log::open_writer(kv, KeyPair::from_seed(&[seed ^ 0x40; 32])).unwrap();
        let writer = *log.key();
        let replica = SharedReplica::new(Replica::new(log, Default::default()));
        RawWriter {
            identity: KeyPair::from_seed(&[seed; 32]),
            writer,
            replica,
        }
    }

    /// Connects to `node` and replicates the bare log there.
    pub fn connect(&self, node: &Node) -> Mux {
        let ((a_mux, a_events), (b_mux, b_events)) = mux_pair();
        attach(node, &self.identity, b_mux, b_events, false);
        let replica = self.replica.clone();
        let mux = a_mux.clone();
        tokio::spawn(async move {
            // Only this log: the peer's other opens are left to expire.
            drop(a_events);
            replica.replicate(mux, true, &HANDSHAKE_HASH).await;
        });
        a_mux
    }
}

/// The confirmed value of contract key `key` on `node`.
pub async fn value(node: &Node, key: &str) -> Option<serde_json::Value> {
    node.handle.get(key, true).await.unwrap().0
}

/// How much of `writer`'s log `node` holds.
pub async fn held(node: &Node, writer: &Key) -> u64 {
    let info = node.handle.info().await.unwrap();
    info.logs
        .iter()
        .find(|(k, _)| *k == hex::encode(writer))
        .map_or(0, |(_, n)| *n)
}
