//! In-process connections between runtimes, for tests and swarm-less meshes: what the
//! swarm adapter does over real sockets, done over [`memory_pair`].

use intercom_protomux::{memory_pair, Mux, MuxConfig};

use crate::network::Connection;
use crate::runtime::{PeerError, PeerHandle};

/// Connects `a` and `b` with an in-memory transport (`capacity` frames per direction) and
/// a mux on each side, and hands each runtime its end.
pub async fn connect(
    a: &PeerHandle,
    b: &PeerHandle,
    capacity: usize,
    config: MuxConfig,
) -> Result<(), PeerError> {
    let ((a_rx, a_tx), (b_rx, b_tx)) = memory_pair(capacity);
    let (a_mux, a_events) = Mux::new(a_rx, a_tx, config.clone());
    let (b_mux, b_events) = Mux::new(b_rx, b_tx, config);
    a.connector()
        .add(Connection {
            remote_public_key: b.public_key(),
            mux: a_mux,
            events: a_events,
            label: "memory".into(),
            remote_opens: None,
        })
        .await
        .map_err(|_| PeerError::Stopped)?;
    b.connector()
        .add(Connection {
            remote_public_key: a.public_key(),
            mux: b_mux,
            events: b_events,
            label: "memory".into(),
            remote_opens: None,
        })
        .await
        .map_err(|_| PeerError::Stopped)
}
