//! Wire layout of protomux frames: constants and the encoders for the frames a mux writes.
//!
//! ```text
//! frame    = uint channel, uint type, payload          (channel 0 = control)
//! open     = 0, 1, uint localId, string protocol, optionalBuffer id, handshake...
//! reject   = 0, 2, uint remoteId
//! close    = 0, 3, uint localId
//! batch    = 0, 0, uint firstChannel, { uint len, (uint type, payload) | 0, uint channel }*
//! ```

use intercom_encoding::{uint_len, Writer};

/// Control message type: a batch of messages.
pub const CONTROL_BATCH: u64 = 0;
/// Control message type: open a channel.
pub const CONTROL_OPEN: u64 = 1;
/// Control message type: reject a remote open.
pub const CONTROL_REJECT: u64 = 2;
/// Control message type: close a channel.
pub const CONTROL_CLOSE: u64 = 3;

/// A corked batch is flushed before an entry is added once it has reached this size
/// (JS `MAX_BATCH`), so one batch frame is at most this plus one entry.
pub const MAX_BATCH: usize = 8 * 1024 * 1024;

/// Accounting overhead per message buffered for a channel the application has not accepted
/// yet (JS `byteSize`: 512 + payload length).
pub const PENDING_OVERHEAD: usize = 512;

/// `0, 1, uint localId, string protocol, optionalBuffer id, handshake`.
pub(crate) fn encode_open(
    local_id: u32,
    protocol: &str,
    id: Option<&[u8]>,
    handshake: &[u8],
) -> Vec<u8> {
    let id = id.unwrap_or_default();
    let len = 2
        + uint_len(u64::from(local_id))
        + uint_len(protocol.len() as u64)
        + protocol.len()
        + uint_len(id.len() as u64)
        + id.len()
        + handshake.len();
    let mut w = Writer::with_capacity(len);
    w.uint8(0)
        .uint8(CONTROL_OPEN as u8)
        .uint(u64::from(local_id))
        .string(protocol)
        .buffer(id)
        .raw(handshake);
    w.into_vec()
}

/// `0, 2, uint remoteId`.
pub(crate) fn encode_reject(remote_id: u64) -> Vec<u8> {
    control_with_id(CONTROL_REJECT, remote_id)
}

/// `0, 3, uint localId`.
pub(crate) fn encode_close(local_id: u32) -> Vec<u8> {
    control_with_id(CONTROL_CLOSE, u64::from(local_id))
}

fn control_with_id(kind: u64, id: u64) -> Vec<u8> {
    let mut w = Writer::with_capacity(2 + uint_len(id));
    w.uint8(0).uint8(kind as u8).uint(id);
    w.into_vec()
}

/// `uint localId, uint type, payload`, allocated once at its exact size.
pub(crate) fn encode_message(local_id: u32, message_type: u32, payload: &[u8]) -> Vec<u8> {
    let len = uint_len(u64::from(local_id)) + uint_len(u64::from(message_type)) + payload.len();
    let mut w = Writer::with_capacity(len);
    w.uint(u64::from(local_id))
        .uint(u64::from(message_type))
        .raw(payload);
    w.into_vec()
}
