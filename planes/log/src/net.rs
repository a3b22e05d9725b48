//! Runs a [`Replica`] over protomux: one `hypercore/alpha` channel per connection, a
//! bounded send queue per channel, and a change counter callers can wait on.
//!
//! The replica sits behind a plain mutex that is never held across an await: channel
//! tasks lock it to feed in what they received and to take the messages to send, which
//! go through each peer's bounded queue to that peer's writer task. A peer that lets its
//! queue fill up is dropped rather than allowed to grow our memory; a peer that sends
//! data that does not verify gets its whole connection destroyed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use intercom_protomux::{ChannelEvent, ChannelOptions, Mux};
use tokio::sync::{mpsc, watch};

use crate::replicate::{Outgoing, PeerError, PeerId, Replica, PROTOCOL};
use crate::wire::{Handshake, Message};
use crate::LogError;

/// Messages queued for one peer before it is considered stuck and dropped.
const SEND_QUEUE: usize = 4096;
/// How often each replication advances its replica's clock (request timeouts).
const CLOCK_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

struct State {
    replica: Replica,
    senders: HashMap<PeerId, mpsc::Sender<Message>>,
}

/// A replica shared by the channel tasks of all connections.
#[derive(Clone)]
pub struct SharedReplica {
    state: Arc<Mutex<State>>,
    changes: Arc<watch::Sender<u64>>,
}

impl SharedReplica {
    /// Shares `replica`.
    pub fn new(replica: Replica) -> SharedReplica {
        SharedReplica {
            state: Arc::new(Mutex::new(State {
                replica,
                senders: HashMap::new(),
            })),
            changes: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Replica methods do not panic on peer input; a poisoned lock means a bug, and the
        // state is still consistent enough to keep serving others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the replica.
    pub fn with<R>(&self, f: impl FnOnce(&Replica) -> R) -> R {
        f(&self.lock().replica)
    }

    /// Appends to our own log, tells every peer, and returns the new length (durable).
    pub fn append<E: AsRef<[u8]> + Sync>(&self, entries: &[E]) -> Result<u64, LogError> {
        let mut state = self.lock();
        let (length, out) = state.replica.append(entries)?;
        dispatch(&mut state, out);
        drop(state);
        self.changed();
        Ok(length)
    }

    /// Downloads blocks below `limit` only (all for `None`); see
    /// [`Replica::set_download_limit`]. Takes effect on every live replication at once:
    /// the requests a raised limit allows (and the cancellations of a lowered one) are
    /// queued to the peers now, not at their next message.
    pub fn set_download_limit(&self, limit: Option<u64>) {
        // Setting a limit fails no peer: there is no error to report.
        let _ = self.feed(|r| Ok(r.set_download_limit(limit)));
    }

    /// Waits until `done` holds for the replica (checked after every change).
    pub async fn wait_for(&self, mut done: impl FnMut(&Replica) -> bool) {
        let mut rx = self.changes.subscribe();
        loop {
            if self.with(&mut done) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A receiver that sees every change (appends, downloads, peers coming and going).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Replicates over `mux` (a connection where we are the initiator or not, with the
    /// given Noise handshake hash) until the channel or the connection closes.
    pub async fn replicate(&self, mux: Mux, is_initiator: bool, handshake_hash: &[u8]) {
        self.replicate_until(mux, is_initiator, handshake_hash, std::future::pending())
            .await
    }

    /// [`SharedReplica::replicate`] until `stop` resolves too (then the channel is closed
    /// gracefully and the peer forgotten).
    pub async fn replicate_until(
        &self,
        mux: Mux,
        is_initiator: bool,
        handshake_hash: &[u8],
        stop: impl std::future::Future<Output = ()>,
    ) {
        let (peer, handshake, discovery_key) = {
            let mut state = self.lock();
            let (peer, handshake) = state.replica.add_peer(is_initiator, handshake_hash);
            (peer, handshake, *state.replica.log().discovery_key())
        };
        let options = ChannelOptions::new(PROTOCOL)
            .with_id(discovery_key.to_vec())
            .with_handshake(intercom_encoding::encode(&handshake));
        let mut channel = match mux.open_channel(options).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "could not open a hypercore channel");
                self.finish(peer);
                return;
            }
        };
        let (tx, mut rx) = mpsc::channel::<Message>(SEND_QUEUE);
        self.lock().senders.insert(peer, tx);
        let sender = channel.sender();
        let writer = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                let (message_type, payload) = message.encode();
                if sender.send(message_type, &payload).await.is_err() {
                    break;
                }
            }
            let _ = sender.close().await;
        });

        tokio::pin!(stop);
        // The replica's clock: requests to peers that stopped answering time out.
        let mut clock = tokio::time::interval(CLOCK_PERIOD);
        loop {
            let event = tokio::select! {
                event = channel.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                _ = clock.tick() => {
                    let now = tokio::time::Instant::now().into_std();
                    let _ = self.feed(|r| Ok(r.tick(now)));
                    continue;
                }
                _ = &mut stop => break,
            };
            let result = match event {
                ChannelEvent::Opened { remote_handshake } => {
                    match intercom_encoding::decode::<Handshake>(&remote_handshake) {
                        Ok(h) => self.feed(|r| r.on_open(peer, &h)),
                        Err(e) => Err(PeerError::Protocol(format!("bad handshake: {e}"))),
                    }
                }
                ChannelEvent::Message {
                    message_type,
                    payload,
                } => match Message::decode(message_type, &payload) {
                    Ok(m) => self.feed(|r| r.on_message(peer, m)),
                    Err(e) => Err(PeerError::Protocol(format!(
                        "undecodable message of type {message_type}: {e}"
                    ))),
                },
                ChannelEvent::Closed { .. } => break,
            };
            if let Err(e) = result {
                match &e {
                    PeerError::Local(_) => {
                        tracing::warn!(error = %e, "hypercore replication stopped")
                    }
                    _ => tracing::warn!(error = %e, "dropping hypercore peer"),
                }
                if !matches!(e, PeerError::Local(_)) {
                    mux.destroy();
                }
                break;
            }
        }
        self.finish(peer);
        writer.abort();
        let _ = channel.close().await;
    }

    fn feed(
        &self,
        f: impl FnOnce(&mut Replica) -> Result<Outgoing, PeerError>,
    ) -> Result<(), PeerError> {
        let mut state = self.lock();
        let out = f(&mut state.replica)?;
        dispatch(&mut state, out);
        drop(state);
        self.changed();
        Ok(())
    }

    fn finish(&self, peer: PeerId) {
        let mut state = self.lock();
        state.senders.remove(&peer);
        let out = state.replica.remove_peer(peer);
        dispatch(&mut state, out);
        drop(state);
        self.changed();
    }
}

/// Queues each message for its peer; a peer whose queue is full loses its sender (its
/// writer then closes the channel, and its reader removes it).
fn dispatch(state: &mut State, out: Outgoing) {
    for (peer, message) in out {
        let Some(tx) = state.senders.get(&peer) else {
            continue;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(message) {
            tracing::warn!(peer, "hypercore peer is not reading; dropping it");
            state.senders.remove(&peer);
        }
    }
}
