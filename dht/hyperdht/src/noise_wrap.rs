//! The Noise IK handshake of a HyperDHT connection (`lib/noise-wrap.js`).
//!
//! The client (initiator) knows the server's public key; the two handshake messages
//! travel inside PEER_HANDSHAKE requests through DHT relays and carry a
//! [`NoisePayload`] each. The prologue is `NS.PEER_HANDSHAKE`. When both messages are
//! through, [`NoiseWrap::finish`] yields the secret-stream keys (the stream is started
//! from them, without a second handshake) and the holepunch secret.
//!
//! ```text
//! client                                         server
//!   IK msg 1 = e, es, s, ss + payload  ──relay──►  recv: remote key known → firewall
//!   recv  ◄──relay──  IK msg 2 = e, ee, se + payload
//! ```

use intercom_crypto::KeyPair;
use intercom_encoding::{decode, encode, DecodeError};
use intercom_secret_stream::{Handshake, HandshakeResult, NoiseError, Pattern};

use crate::constants::NS;
use crate::crypto::holepunch_secret;
use crate::messages::NoisePayload;

/// Why a handshake message was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseWrapError {
    /// The Noise layer refused the message (bad MAC, wrong key, out of order).
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// The decrypted payload is not a `noisePayload`.
    #[error("noise payload does not decode: {0}")]
    Payload(#[from] DecodeError),
}

/// A completed handshake: what the secret-stream starts from, and the holepunch secret.
#[derive(Debug, Clone)]
pub struct NoiseResult {
    /// Keys, handshake hash and both public keys.
    pub handshake: HandshakeResult,
    /// `blake2b(NS.PEER_HOLEPUNCH, key = handshake hash)`.
    pub holepunch_secret: [u8; 32],
}

/// One side of the IK handshake.
pub struct NoiseWrap {
    hs: Handshake,
    is_initiator: bool,
}

impl std::fmt::Debug for NoiseWrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseWrap")
            .field("is_initiator", &self.is_initiator)
            .finish_non_exhaustive()
    }
}

impl NoiseWrap {
    /// The client side, connecting to `remote_public_key`.
    pub fn initiator(key_pair: KeyPair, remote_public_key: [u8; 32]) -> NoiseWrap {
        let hs = Handshake::new(
            Pattern::IK,
            true,
            key_pair,
            &NS.peer_handshake,
            Some(remote_public_key),
        );
        NoiseWrap {
            // An IK initiator with a remote key cannot fail to start.
            hs: hs.unwrap_or_else(|_| unreachable!("IK initiator has the remote key")),
            is_initiator: true,
        }
    }

    /// The server side, listening on `key_pair`.
    pub fn responder(key_pair: KeyPair) -> NoiseWrap {
        let hs = Handshake::new(Pattern::IK, false, key_pair, &NS.peer_handshake, None);
        NoiseWrap {
            hs: hs.unwrap_or_else(|_| unreachable!("IK responder needs no remote key")),
            is_initiator: false,
        }
    }

    /// True for the client.
    pub fn is_initiator(&self) -> bool {
        self.is_initiator
    }

    /// Encodes `payload` into our next handshake message.
    pub fn send(&mut self, payload: &NoisePayload) -> Result<Vec<u8>, NoiseWrapError> {
        Ok(self.hs.send(&encode(payload))?)
    }

    /// Reads the remote's handshake message and decodes its payload.
    pub fn recv(&mut self, message: &[u8]) -> Result<NoisePayload, NoiseWrapError> {
        let plain = self.hs.recv(message)?;
        Ok(decode(&plain)?)
    }

    /// The remote's static key (known to the server after the first message).
    pub fn remote_public_key(&self) -> Option<[u8; 32]> {
        self.hs.remote_static()
    }

    /// The outcome, once both messages went through (`final()`).
    pub fn finish(&self) -> Option<NoiseResult> {
        let handshake = self.hs.result()?.clone();
        let holepunch_secret = holepunch_secret(&handshake.hash);
        Some(NoiseResult {
            handshake,
            holepunch_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{SecretStreamInfo, UdxInfo};

    #[test]
    fn both_sides_agree() {
        let server = KeyPair::from_seed(&[1; 32]);
        let client = KeyPair::from_seed(&[2; 32]);
        let mut c = NoiseWrap::initiator(client.clone(), server.public_key);
        let mut s = NoiseWrap::responder(server.clone());
        let req = NoisePayload {
            firewall: 1,
            udx: Some(UdxInfo {
                id: 42,
                ..UdxInfo::default()
            }),
            secret_stream: Some(SecretStreamInfo::default()),
            ..NoisePayload::default()
        };
        let m1 = c.send(&req).unwrap();
        assert_eq!(s.recv(&m1).unwrap(), req);
        assert_eq!(s.remote_public_key(), Some(client.public_key));
        assert!(s.finish().is_none());
        let m2 = s.send(&NoisePayload::default()).unwrap();
        assert_eq!(c.recv(&m2).unwrap(), NoisePayload::default());
        let (a, b) = (c.finish().unwrap(), s.finish().unwrap());
        assert_eq!(a.holepunch_secret, b.holepunch_secret);
        assert_eq!(a.handshake.tx, b.handshake.rx);
        assert_eq!(a.handshake.remote_public_key, server.public_key);
        assert_eq!(b.handshake.remote_public_key, client.public_key);
        assert!(a.handshake.is_initiator && !b.handshake.is_initiator);
    }

    #[test]
    fn wrong_server_key_fails() {
        let server = KeyPair::from_seed(&[1; 32]);
        let wrong = KeyPair::from_seed(&[9; 32]).public_key;
        let mut c = NoiseWrap::initiator(KeyPair::from_seed(&[2; 32]), wrong);
        let mut s = NoiseWrap::responder(server);
        let m1 = c.send(&NoisePayload::default()).unwrap();
        assert!(s.recv(&m1).is_err());
    }
}
