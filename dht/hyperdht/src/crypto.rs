//! Hashes, signables and signatures of hyperdht records, as `lib/persistent.js`,
//! `lib/crypto.js`, `lib/noise-wrap.js` and `lib/secure-payload.js` compute them.
//!
//! ```text
//! target of a peer / mutable  = blake2b256(publicKey)            (DHT.hash)
//! target of an immutable      = blake2b256(value)
//! announce signable           = NS.ANNOUNCE ‖ blake2b256(target ‖ nodeId ‖ token ‖
//!                                                        peer ‖ (refresh or nothing))
//! unannounce signable         = NS.UNANNOUNCE ‖ the same hash
//! mutable signable            = NS.MUTABLE_PUT ‖ blake2b256(uint seq ‖ buffer value)
//! holepunch secret            = blake2b256(NS.PEER_HOLEPUNCH, key = noise handshake hash)
//! secure holepunch payload    = nonce(24) ‖ secretbox(holepunchPayload, holepunch secret)
//! holepunch address token     = blake2b256(host as dotted text, key = local secret)
//! ```
//!
//! `nodeId` is the id of the DHT node the request is sent to (the signer learns it from
//! the node's lookup reply) and `token` the dht-rpc token that node handed out, so an
//! announce signature is only valid at one node for one token period. `peer` is the
//! `peer` encoding of the announce's record *before* the node trims it to
//! [`MAX_RELAY_ADDRESSES`](crate::constants::MAX_RELAY_ADDRESSES).

use std::net::Ipv4Addr;

use intercom_crypto::{blake2b_256, secretbox_open, secretbox_seal, verify, KeyPair};
use intercom_encoding::{decode, encode, uint_len, DecodeError, Writer};

use crate::constants::NS;
use crate::messages::{HolepunchPayload, Peer};

/// BLAKE2b-256 of `data` (`DHT.hash`).
pub fn hash(data: &[u8]) -> [u8; 32] {
    blake2b_256(&[data], None)
}

/// The DHT target a peer announces itself under, and a mutable value is stored under.
pub fn public_key_target(public_key: &[u8; 32]) -> [u8; 32] {
    hash(public_key)
}

/// The DHT target an immutable value is stored under.
pub fn immutable_target(value: &[u8]) -> [u8; 32] {
    hash(value)
}

fn ann_signable(
    ns: &[u8; 32],
    target: &[u8; 32],
    token: &[u8],
    node_id: &[u8; 32],
    peer: &Peer,
    refresh: Option<&[u8; 32]>,
) -> [u8; 64] {
    let peer = encode(peer);
    let refresh: &[u8] = refresh.map_or(&[], |r| r);
    let digest = blake2b_256(&[target, node_id, token, &peer, refresh], None);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(ns);
    out[32..].copy_from_slice(&digest);
    out
}

/// The bytes an ANNOUNCE signature covers (`annSignable(…, NS.ANNOUNCE)`).
pub fn announce_signable(
    target: &[u8; 32],
    token: &[u8],
    node_id: &[u8; 32],
    peer: &Peer,
    refresh: Option<&[u8; 32]>,
) -> [u8; 64] {
    ann_signable(&NS.announce, target, token, node_id, peer, refresh)
}

/// The bytes an UNANNOUNCE signature covers (`annSignable(…, NS.UNANNOUNCE)`).
pub fn unannounce_signable(
    target: &[u8; 32],
    token: &[u8],
    node_id: &[u8; 32],
    peer: &Peer,
    refresh: Option<&[u8; 32]>,
) -> [u8; 64] {
    ann_signable(&NS.unannounce, target, token, node_id, peer, refresh)
}

/// `Persistent.signAnnounce`: signs `peer` (and `refresh`) for the node `node_id`.
pub fn sign_announce(
    target: &[u8; 32],
    token: &[u8],
    node_id: &[u8; 32],
    peer: &Peer,
    refresh: Option<&[u8; 32]>,
    key_pair: &KeyPair,
) -> [u8; 64] {
    key_pair.sign(&announce_signable(target, token, node_id, peer, refresh))
}

/// `Persistent.signUnannounce`.
pub fn sign_unannounce(
    target: &[u8; 32],
    token: &[u8],
    node_id: &[u8; 32],
    peer: &Peer,
    refresh: Option<&[u8; 32]>,
    key_pair: &KeyPair,
) -> [u8; 64] {
    key_pair.sign(&unannounce_signable(target, token, node_id, peer, refresh))
}

/// Checks an announce signature against `peer.public_key`, as `onannounce` does.
pub fn verify_announce(
    signature: &[u8; 64],
    target: &[u8; 32],
    token: &[u8],
    node_id: &[u8; 32],
    peer: &Peer,
    refresh: Option<&[u8; 32]>,
) -> bool {
    let signable = announce_signable(target, token, node_id, peer, refresh);
    verify(signature, &signable, &peer.public_key)
}

/// Checks an unannounce signature against `peer.public_key`, as `onunannounce` does.
pub fn verify_unannounce(
    signature: &[u8; 64],
    target: &[u8; 32],
    token: &[u8],
    node_id: &[u8; 32],
    peer: &Peer,
    refresh: Option<&[u8; 32]>,
) -> bool {
    let signable = unannounce_signable(target, token, node_id, peer, refresh);
    verify(signature, &signable, &peer.public_key)
}

/// The bytes a mutable value's signature covers (the hash is over a `mutableSignable`).
pub fn mutable_signable(seq: u64, value: &[u8]) -> [u8; 64] {
    let mut body =
        Writer::with_capacity(uint_len(seq) + uint_len(value.len() as u64) + value.len());
    body.uint(seq).buffer(value);
    let body = body.into_vec();
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&NS.mutable_put);
    out[32..].copy_from_slice(&hash(&body));
    out
}

/// `Persistent.signMutable`.
pub fn sign_mutable(seq: u64, value: &[u8], key_pair: &KeyPair) -> [u8; 64] {
    key_pair.sign(&mutable_signable(seq, value))
}

/// `Persistent.verifyMutable`.
pub fn verify_mutable(signature: &[u8; 64], seq: u64, value: &[u8], public_key: &[u8; 32]) -> bool {
    verify(signature, &mutable_signable(seq, value), public_key)
}

/// The secret both ends of a connection derive from the Noise handshake hash to encrypt
/// holepunch payloads (`NoiseWrap.final().holepunchSecret`).
pub fn holepunch_secret(handshake_hash: &[u8]) -> [u8; 32] {
    blake2b_256(&[&NS.peer_holepunch], Some(handshake_hash))
}

/// Why an encrypted holepunch payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Shorter than nonce and MAC plus at least one byte of plaintext.
    #[error("holepunch payload too short: {0} bytes")]
    TooShort(usize),
    /// The secretbox did not authenticate under the shared secret.
    #[error("holepunch payload failed to decrypt")]
    Decrypt,
    /// The plaintext is not a `holepunchPayload`.
    #[error("holepunch payload does not decode: {0}")]
    Decode(#[from] DecodeError),
}

/// `lib/secure-payload.js`: encrypts and decrypts [`HolepunchPayload`]s with the
/// holepunch secret, and makes the per-address tokens the holepuncher echoes.
#[derive(Clone)]
pub struct SecurePayload {
    shared_secret: [u8; 32],
    local_secret: [u8; 32],
}

impl std::fmt::Debug for SecurePayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurePayload").finish_non_exhaustive()
    }
}

/// Nonce bytes in front of the secretbox.
const NONCE_LEN: usize = 24;
/// Secretbox MAC bytes.
const MAC_LEN: usize = 16;

impl SecurePayload {
    /// A payload codec for `holepunch_secret` with a fresh random local token secret.
    pub fn new(holepunch_secret: [u8; 32]) -> Self {
        SecurePayload::with_local_secret(holepunch_secret, intercom_crypto::random_array())
    }

    /// A payload codec with a chosen local token secret (deterministic tests).
    pub fn with_local_secret(holepunch_secret: [u8; 32], local_secret: [u8; 32]) -> Self {
        SecurePayload {
            shared_secret: holepunch_secret,
            local_secret,
        }
    }

    /// Decrypts and decodes `nonce ‖ secretbox`. Like JS, a box whose plaintext would
    /// be empty is refused without trying to open it.
    pub fn decrypt(&self, buffer: &[u8]) -> Result<HolepunchPayload, PayloadError> {
        if buffer.len() <= NONCE_LEN + MAC_LEN {
            return Err(PayloadError::TooShort(buffer.len()));
        }
        let (nonce, cipher) = buffer.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| PayloadError::Decrypt)?;
        let plain = secretbox_open(&self.shared_secret, nonce, cipher)
            .map_err(|_| PayloadError::Decrypt)?;
        Ok(decode(&plain)?)
    }

    /// Encodes and encrypts `payload` under a random nonce.
    pub fn encrypt(&self, payload: &HolepunchPayload) -> Vec<u8> {
        self.encrypt_with_nonce(payload, &intercom_crypto::random_array())
    }

    /// Encodes and encrypts `payload` under `nonce`, returning `nonce ‖ secretbox`.
    pub fn encrypt_with_nonce(&self, payload: &HolepunchPayload, nonce: &[u8; 24]) -> Vec<u8> {
        let sealed = secretbox_seal(&self.shared_secret, nonce, &encode(payload));
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The token for a remote address: keyed BLAKE2b of its host in dotted-decimal text.
    pub fn token(&self, host: &Ipv4Addr) -> [u8; 32] {
        blake2b_256(&[host.to_string().as_bytes()], Some(&self.local_secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_signature_round_trip() {
        let kp = KeyPair::from_seed(&[1; 32]);
        let peer = Peer {
            public_key: kp.public_key,
            relay_addresses: vec![],
        };
        let (target, token, id) = ([2; 32], [3; 32], [4; 32]);
        let sig = sign_announce(&target, &token, &id, &peer, None, &kp);
        assert!(verify_announce(&sig, &target, &token, &id, &peer, None));
        assert!(!verify_unannounce(&sig, &target, &token, &id, &peer, None));
        assert!(!verify_announce(
            &sig,
            &target,
            &token,
            &id,
            &peer,
            Some(&[0; 32])
        ));
        assert!(!verify_announce(&sig, &target, &[9; 32], &id, &peer, None));
        let sig = sign_unannounce(&target, &token, &id, &peer, None, &kp);
        assert!(verify_unannounce(&sig, &target, &token, &id, &peer, None));
    }

    #[test]
    fn mutable_signature_round_trip() {
        let kp = KeyPair::from_seed(&[5; 32]);
        let sig = sign_mutable(7, b"hello", &kp);
        assert!(verify_mutable(&sig, 7, b"hello", &kp.public_key));
        assert!(!verify_mutable(&sig, 8, b"hello", &kp.public_key));
        assert!(!verify_mutable(&sig, 7, b"hellO", &kp.public_key));
    }

    #[test]
    fn secure_payload_round_trip() {
        let sp = SecurePayload::new([9; 32]);
        let p = HolepunchPayload {
            round: 2,
            punching: true,
            token: Some(sp.token(&Ipv4Addr::new(1, 2, 3, 4))),
            ..HolepunchPayload::default()
        };
        let boxed = sp.encrypt(&p);
        assert_eq!(sp.decrypt(&boxed), Ok(p));
        let other = SecurePayload::new([8; 32]);
        assert_eq!(other.decrypt(&boxed), Err(PayloadError::Decrypt));
        assert_eq!(sp.decrypt(&boxed[..40]), Err(PayloadError::TooShort(40)));
        assert_ne!(
            sp.token(&Ipv4Addr::LOCALHOST),
            other.token(&Ipv4Addr::LOCALHOST)
        );
    }
}
