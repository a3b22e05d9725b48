//! The post-handshake layer: the stream-id header exchange and per-message secretstream
//! encryption. Pure functions over bytes.

use intercom_crypto::{
    blake2b_256, SecretStreamPull, SecretStreamPush, SECRETSTREAM_ABYTES, SECRETSTREAM_HEADERBYTES,
    TAG_MESSAGE,
};

use crate::framing::{prefix, MAX_FRAME, PREFIX};
use crate::noise::{HandshakeResult, HASHLEN};
use crate::SecretStreamError;

/// Body length of the header frame: stream id then secretstream header.
pub const HEADER_LEN: usize = 32 + SECRETSTREAM_HEADERBYTES;
/// Largest plaintext one message can carry.
pub const MAX_MESSAGE: usize = MAX_FRAME - SECRETSTREAM_ABYTES;

/// `hypercore-crypto`'s `namespace('hyperswarm/secret-stream', [0, 1, 2])`:
/// initiator id, responder id and the unordered-send namespace.
pub fn namespaces() -> [[u8; 32]; 3] {
    let ns = blake2b_256(&[b"hyperswarm/secret-stream"], None);
    [0u8, 1, 2].map(|i| blake2b_256(&[&ns, &[i]], None))
}

/// The 32-byte stream id a side announces: BLAKE2b-256 keyed by the handshake hash.
pub fn stream_id(handshake_hash: &[u8; HASHLEN], is_initiator: bool) -> [u8; 32] {
    let [ns_initiator, ns_responder, _] = namespaces();
    let ns = if is_initiator {
        ns_initiator
    } else {
        ns_responder
    };
    blake2b_256(&[&ns], Some(handshake_hash))
}

/// Encrypts outgoing messages into complete frames.
pub struct Encryptor {
    push: SecretStreamPush,
}

impl Encryptor {
    /// Starts encryption under our `tx` key; returns the header frame (prefix included) to
    /// send before any message.
    pub fn new(handshake: &HandshakeResult) -> (Self, Vec<u8>) {
        let (push, header) = SecretStreamPush::new(&handshake.tx);
        let mut frame = Vec::with_capacity(PREFIX + HEADER_LEN);
        frame.extend_from_slice(&prefix(HEADER_LEN));
        frame.extend_from_slice(&stream_id(&handshake.hash, handshake.is_initiator));
        frame.extend_from_slice(&header);
        (Encryptor { push }, frame)
    }

    /// Appends one encrypted frame carrying `message` to `out`.
    pub fn encrypt_into(
        &mut self,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SecretStreamError> {
        let at = out.len();
        out.resize(at + Self::frame_len(message.len())?, 0);
        self.encrypt_at(message, &mut out[at..])
    }

    /// Bytes the frame for a message of `len` bytes takes, prefix included.
    pub fn frame_len(len: usize) -> Result<usize, SecretStreamError> {
        if len > MAX_MESSAGE {
            return Err(SecretStreamError::MessageTooLarge(len));
        }
        Ok(PREFIX + len + SECRETSTREAM_ABYTES)
    }

    /// Writes the frame for `message` into `frame`, which must be exactly
    /// [`Encryptor::frame_len`] bytes. The plaintext is read once, by the cipher.
    pub fn encrypt_at(
        &mut self,
        message: &[u8],
        frame: &mut [u8],
    ) -> Result<(), SecretStreamError> {
        let len = Self::frame_len(message.len())?;
        if frame.len() != len {
            return Err(SecretStreamError::MessageTooLarge(message.len()));
        }
        let (head, body) = frame.split_at_mut(PREFIX);
        head.copy_from_slice(&prefix(body.len()));
        self.push.push_into(message, TAG_MESSAGE, body);
        Ok(())
    }
}

/// Checks the remote header and decrypts incoming message bodies.
pub struct Decryptor {
    rx: [u8; 32],
    expected_id: [u8; 32],
    pull: Option<SecretStreamPull>,
}

impl Decryptor {
    /// Prepares to receive from the remote side of `handshake`.
    pub fn new(handshake: &HandshakeResult) -> Self {
        Decryptor {
            rx: handshake.rx,
            expected_id: stream_id(&handshake.hash, !handshake.is_initiator),
            pull: None,
        }
    }

    /// True once the remote header has been accepted.
    pub fn is_ready(&self) -> bool {
        self.pull.is_some()
    }

    /// Accepts the remote's header frame body.
    pub fn accept_header(&mut self, body: &[u8]) -> Result<(), SecretStreamError> {
        if body.len() != HEADER_LEN {
            return Err(SecretStreamError::InvalidHeader(
                "header frame must be 56 bytes",
            ));
        }
        if body[..32] != self.expected_id {
            return Err(SecretStreamError::InvalidHeader(
                "stream id does not match the handshake",
            ));
        }
        let mut header = [0u8; SECRETSTREAM_HEADERBYTES];
        header.copy_from_slice(&body[32..]);
        let pull = SecretStreamPull::new(&self.rx, &header)
            .map_err(|_| SecretStreamError::InvalidHeader("secretstream header"))?;
        self.pull = Some(pull);
        Ok(())
    }

    /// Decrypts a message body and returns the plaintext in a new buffer (the cipher
    /// writes it there directly, so there is no extra copy).
    pub fn decrypt(&mut self, body: &[u8]) -> Result<Vec<u8>, SecretStreamError> {
        let pull = self
            .pull
            .as_mut()
            .ok_or(SecretStreamError::InvalidHeader("message before header"))?;
        if body.len() < SECRETSTREAM_ABYTES {
            return Err(SecretStreamError::Decrypt);
        }
        let mut plain = Vec::new();
        pull.pull_append(body, &mut plain)
            .map_err(|_| SecretStreamError::Decrypt)?;
        Ok(plain)
    }

    /// Handles any frame body: the header first, then messages. Returns the plaintext of
    /// messages and `None` for the header.
    pub fn handle_frame(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, SecretStreamError> {
        if self.is_ready() {
            self.decrypt(body).map(Some)
        } else {
            self.accept_header(body).map(|()| None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameDecoder;
    use crate::noise::{Handshake, Pattern};
    use intercom_crypto::KeyPair;

    fn pair() -> (HandshakeResult, HandshakeResult) {
        let mut i =
            Handshake::new(Pattern::XX, true, KeyPair::from_seed(&[1; 32]), b"", None).unwrap();
        let mut r =
            Handshake::new(Pattern::XX, false, KeyPair::from_seed(&[2; 32]), b"", None).unwrap();
        let m1 = i.send(b"").unwrap();
        r.recv(&m1).unwrap();
        let m2 = r.send(b"").unwrap();
        i.recv(&m2).unwrap();
        let m3 = i.send(b"").unwrap();
        r.recv(&m3).unwrap();
        (i.result().unwrap().clone(), r.result().unwrap().clone())
    }

    #[test]
    fn frames_round_trip_through_the_decoder() {
        let (a, b) = pair();
        let (mut enc, header) = Encryptor::new(&a);
        let mut dec = Decryptor::new(&b);
        let mut wire = header;
        for m in [&b"hello"[..], b"", &[1u8; 5000]] {
            enc.encrypt_into(m, &mut wire).unwrap();
        }
        let mut fd = FrameDecoder::new(crate::framing::MAX_FRAME);
        fd.push(&wire);
        let mut got = Vec::new();
        while let Some(body) = fd.next_frame().unwrap() {
            if let Some(p) = dec.handle_frame(&body).unwrap() {
                got.push(p);
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![], vec![1u8; 5000]]);
    }

    #[test]
    fn wrong_stream_id_and_tampering_are_rejected() {
        let (a, b) = pair();
        let (_, header) = Encryptor::new(&a);
        // Our own header is not what the remote expects from us.
        let mut own = Decryptor::new(&a);
        assert!(own.accept_header(&header[3..]).is_err());
        let mut dec = Decryptor::new(&b);
        dec.accept_header(&header[3..]).unwrap();
        assert!(dec.decrypt(&[0u8; 10]).is_err());
        assert!(dec.decrypt(&[0u8; 40]).is_err());
    }
}
