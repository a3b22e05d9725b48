//! The small tasks around the runtime: one per connection (mux events and mux control),
//! one per sidechannel protocol channel (open, read) plus its writer, and the proof-of-work
//! jobs. They talk to the runtime task through its bounded internal queue and never touch
//! the plane.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use intercom_protomux::{ChannelEvent, ChannelOptions, DriverEvent, Mux, MuxEvents};
use intercom_sidechannel::{BroadcastJob, ConnId, Inbound, PreparedBroadcast};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::runtime::{PeerError, SendOutcome};

/// Inputs of the runtime task coming from its helper tasks.
pub(crate) enum Internal {
    /// The channel's open completed: the peer opened it too.
    ChannelOpened {
        conn: ConnId,
        channel: Arc<str>,
        gen: u64,
    },
    /// The channel closed (or was rejected) before it was fully open.
    ChannelFailed {
        conn: ConnId,
        channel: Arc<str>,
        gen: u64,
    },
    /// An open channel closed (remote close or transport end).
    ChannelClosed {
        conn: ConnId,
        channel: Arc<str>,
        gen: u64,
    },
    /// Type-0 messages, decoded (and their signatures checked when the connection is not
    /// being rate limited), in arrival order.
    Messages {
        conn: ConnId,
        channel: Arc<str>,
        gen: u64,
        inbound: Vec<Inbound>,
        /// One permit of the runtime's decoded-message bound per message, released once
        /// the plane has them.
        _permits: OwnedSemaphorePermit,
    },
    /// The peer opened a protocol we paired and no local channel was waiting for it.
    RemoteOpen { conn: ConnId, protocol: String },
    /// The mux ended.
    MuxClosed { conn: ConnId, error: Option<String> },
    /// A retry delay elapsed.
    RetryOpen {
        conn: ConnId,
        channel: Arc<str>,
        gen: u64,
    },
    /// A broadcast's proof of work and signature are done (or the job failed).
    Prepared {
        prepared: Result<PreparedBroadcast, PeerError>,
        reply: oneshot::Sender<Result<SendOutcome, PeerError>>,
    },
}

/// Mux operations the runtime asks a connection task to do, in order.
#[derive(Debug)]
pub(crate) enum ConnCtl {
    Pair(String),
    Unpair(String),
    Reject(String),
}

/// Reads the mux's events and runs the runtime's mux operations in order.
pub(crate) async fn connection_task(
    conn: ConnId,
    mux: Mux,
    mut events: MuxEvents,
    mut ctl: mpsc::Receiver<ConnCtl>,
    internal: mpsc::Sender<Internal>,
    remote_opens: Option<mpsc::Sender<(String, Vec<u8>)>>,
) {
    let mut ctl_open = true;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(DriverEvent::RemoteOpenRequest { protocol, id }) => {
                    if let Some(id) = id.filter(|id| !id.is_empty()) {
                        // Sidechannels never use ids: a keyed channel (a hypercore log)
                        // goes to whoever replicates logs, or is rejected.
                        let handed = remote_opens
                            .as_ref()
                            .is_some_and(|tx| tx.try_send((protocol.clone(), id.clone())).is_ok());
                        if !handed {
                            let _ = mux.reject(&protocol, Some(&id)).await;
                        }
                    } else if internal.send(Internal::RemoteOpen { conn, protocol }).await.is_err() {
                        break;
                    }
                }
                Some(DriverEvent::Closed { error }) => {
                    let _ = internal
                        .send(Internal::MuxClosed { conn, error: error.map(|e| e.to_string()) })
                        .await;
                    return;
                }
                Some(_) => {}
                None => {
                    let _ = internal.send(Internal::MuxClosed { conn, error: None }).await;
                    return;
                }
            },
            cmd = ctl.recv(), if ctl_open => match cmd {
                Some(ConnCtl::Pair(p)) => { let _ = mux.pair(&p, None).await; }
                Some(ConnCtl::Unpair(p)) => { let _ = mux.unpair(&p, None).await; }
                Some(ConnCtl::Reject(p)) => { let _ = mux.reject(&p, None).await; }
                // The runtime forgot the connection: close it, then keep reading events
                // until the mux reports its end.
                None => {
                    ctl_open = false;
                    let m = mux.clone();
                    tokio::spawn(async move { m.close().await });
                }
            },
        }
    }
}

/// Everything a channel task needs.
pub(crate) struct ChannelTask {
    pub mux: Mux,
    pub conn: ConnId,
    pub channel: Arc<str>,
    pub protocol: String,
    pub gen: u64,
    pub outgoing: mpsc::Receiver<Arc<[u8]>>,
    pub close: oneshot::Receiver<()>,
    pub internal: mpsc::Sender<Internal>,
    /// The plane's message size limit, to decode with.
    pub max_message_bytes: usize,
    /// Whether to check signatures here, off the runtime task (cleared while the
    /// connection's peer is being rate limited, so a flood costs no signature checks).
    pub verify_ahead: Arc<AtomicBool>,
    /// Bounds the decoded messages waiting for the runtime task over all channels (a
    /// decoded payload is a few times the size of its bytes).
    pub decoded: Arc<Semaphore>,
}

/// Messages a channel task decodes and verifies together (16 signatures take about 0.55 ms
/// to check, 34 us each in a release build, short enough not to hold up other tasks).
const READ_BATCH: usize = 16;

/// Opens the protomux channel, waits for the peer, then forwards messages until it closes.
/// Dropping the runtime's end of `close` closes the channel.
pub(crate) async fn channel_task(t: ChannelTask) {
    let ChannelTask {
        mux,
        conn,
        channel,
        protocol,
        gen,
        mut outgoing,
        mut close,
        internal,
        max_message_bytes,
        verify_ahead,
        decoded,
    } = t;
    let failed = |internal: mpsc::Sender<Internal>, channel: Arc<str>| async move {
        let _ = internal
            .send(Internal::ChannelFailed { conn, channel, gen })
            .await;
    };
    let mut ch = tokio::select! {
        r = mux.open_channel(ChannelOptions::new(protocol)) => match r {
            Ok(ch) => ch,
            Err(_) => return failed(internal, channel).await,
        },
        _ = &mut close => return,
    };
    let opened = tokio::select! {
        o = ch.fully_opened() => o,
        _ = &mut close => {
            let _ = ch.close().await;
            return;
        }
    };
    if !opened {
        return failed(internal, channel).await;
    }
    if internal
        .send(Internal::ChannelOpened {
            conn,
            channel: channel.clone(),
            gen,
        })
        .await
        .is_err()
    {
        return;
    }
    // Writing runs in its own task so that a peer that stops reading cannot stop us from
    // reading (the mux's queues are bounded in both directions).
    let sender = ch.sender();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if sender.send(0, &bytes).await.is_err() {
                break;
            }
        }
    });
    let mut closed_here = false;
    loop {
        // A message is read only once the runtime has room for it decoded.
        let read = async {
            let permits = decoded.clone().acquire_owned().await.ok()?; // never closed
            Some((permits, ch.recv().await))
        };
        let (mut permits, mut next) = tokio::select! {
            read = read => match read {
                Some(read) => read,
                None => break,
            },
            _ = &mut close => {
                closed_here = true;
                let _ = ch.close().await;
                break;
            }
        };
        // Whatever else has already arrived (and fits the bound) goes in the same batch.
        let mut inbound = Vec::new();
        let ended = loop {
            match next {
                Some(ChannelEvent::Message {
                    message_type: 0,
                    payload,
                }) => {
                    inbound.push(Inbound::decode(&payload, max_message_bytes));
                }
                // Sidechannels define one message type; others are ignored as JS does.
                Some(ChannelEvent::Message { .. }) | Some(ChannelEvent::Opened { .. }) => {}
                Some(ChannelEvent::Closed { .. }) | None => break true,
            }
            if inbound.len() >= READ_BATCH {
                break false;
            }
            if inbound.len() == permits.num_permits() {
                match decoded.clone().try_acquire_owned() {
                    Ok(more) => permits.merge(more),
                    Err(_) => break false,
                }
            }
            match ch.try_recv() {
                Some(ev) => next = Some(ev),
                None => break false,
            }
        };
        if !inbound.is_empty() {
            if verify_ahead.load(Ordering::Relaxed) {
                Inbound::verify_ahead(&mut inbound);
            }
            let msg = Internal::Messages {
                conn,
                channel: channel.clone(),
                gen,
                inbound,
                _permits: permits,
            };
            if internal.send(msg).await.is_err() {
                break;
            }
        }
        if ended {
            break;
        }
    }
    writer.abort();
    if !closed_here {
        let _ = internal
            .send(Internal::ChannelClosed { conn, channel, gen })
            .await;
    }
}

/// Sends [`Internal::RetryOpen`] after `delay`.
pub(crate) fn schedule_retry(
    internal: mpsc::Sender<Internal>,
    delay: Duration,
    conn: ConnId,
    channel: Arc<str>,
    gen: u64,
) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = internal
            .send(Internal::RetryOpen { conn, channel, gen })
            .await;
    });
}

/// Runs a broadcast's proof of work and signature on a blocking thread, then hands the
/// payload back to the runtime task.
pub(crate) fn prepare_broadcast(
    internal: mpsc::Sender<Internal>,
    job: BroadcastJob,
    reply: oneshot::Sender<Result<SendOutcome, PeerError>>,
) {
    tokio::spawn(async move {
        let prepared = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| PeerError::Internal(format!("proof-of-work task failed: {e}")));
        // The runtime counts the job finished either way.
        if let Err(mpsc::error::SendError(Internal::Prepared { reply, .. })) =
            internal.send(Internal::Prepared { prepared, reply }).await
        {
            let _ = reply.send(Err(PeerError::Stopped));
        }
    });
}
