//! What the runtime reports, and where it goes.

use intercom_sidechannel::{ConnId, SidechannelEvent};
use tokio::sync::mpsc;

/// An event of the runtime: the plane's events plus connection and queue events.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// An event of the sidechannel plane. `peer` is the remote key (hex) of the connection
    /// the event concerns, when it concerns one.
    Sidechannel {
        /// The plane's event.
        event: SidechannelEvent,
        /// Remote public key of the connection, hex.
        peer: Option<String>,
    },
    /// A connection was taken into the plane.
    Connected {
        /// Its id.
        conn: ConnId,
        /// Remote public key, hex.
        peer: String,
        /// The adapter's label.
        label: String,
    },
    /// A connection ended.
    Disconnected {
        /// Its id.
        conn: ConnId,
        /// Remote public key, hex.
        peer: String,
    },
    /// A connection was refused (too many) and closed.
    Refused {
        /// Remote public key, hex.
        peer: String,
    },
    /// A frame for `channel` on `conn` was dropped: its writer queue was full or the
    /// channel was not open.
    SendDropped {
        /// The connection.
        conn: ConnId,
        /// The channel.
        channel: String,
        /// `queue_full` or `channel_not_open`.
        reason: &'static str,
    },
}

/// Receives every [`PeerEvent`] in order, on the runtime task: must not block.
pub trait EventSink: Send + 'static {
    /// One event.
    fn deliver(&mut self, event: &PeerEvent);
}

/// A bounded queue of events (tests, custom consumers). A full queue drops the event.
impl EventSink for mpsc::Sender<PeerEvent> {
    fn deliver(&mut self, event: &PeerEvent) {
        if self.try_send(event.clone()).is_err() {
            tracing::debug!("event queue full or closed; event dropped");
        }
    }
}

/// Any closure.
impl<F: FnMut(&PeerEvent) + Send + 'static> EventSink for F {
    fn deliver(&mut self, event: &PeerEvent) {
        self(event)
    }
}
