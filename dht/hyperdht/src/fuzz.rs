//! Fuzzing entry points for what a server and a client decode from the network while
//! connecting (a cargo-fuzz target calls one with the fuzzer's bytes; they must never
//! panic):
//!
//! * [`fuzz_handshake`]: a PEER_HANDSHAKE value — the `handshake` decoder, then the
//!   Noise IK responder and `noisePayload` decoder on its `noise`, and a client's
//!   decoding of a handshake reply;
//! * [`fuzz_holepunch`]: a PEER_HOLEPUNCH value — the `holepunch` decoder, then the
//!   secure-payload decryption and `holepunchPayload` decoder on its payload, and
//!   whatever decodes must re-encode to bytes that decode to the same value.

use intercom_crypto::KeyPair;
use intercom_encoding::{decode, encode};

use crate::crypto::SecurePayload;
use crate::messages::{Handshake, Holepunch, HolepunchPayload, NoisePayload};
use crate::noise_wrap::NoiseWrap;

/// The server key the fuzzed handshakes are addressed to.
fn server_key() -> KeyPair {
    KeyPair::from_seed(&[7; 32])
}

/// Decodes `data` as a PEER_HANDSHAKE value and runs the handshake on it.
pub fn fuzz_handshake(data: &[u8]) {
    if let Ok(hs) = decode::<Handshake>(data) {
        assert_eq!(decode::<Handshake>(&encode(&hs)).ok(), Some(hs.clone()));
        let mut responder = NoiseWrap::responder(server_key());
        if let Ok(payload) = responder.recv(&hs.noise) {
            assert_eq!(
                decode::<NoisePayload>(&encode(&payload)).ok(),
                Some(payload)
            );
            let _ = responder.remote_public_key();
            let _ = responder.send(&NoisePayload::default());
            let _ = responder.finish();
        }
    }
    if let Ok(p) = decode::<NoisePayload>(data) {
        let again = encode(&p);
        assert_eq!(
            decode::<NoisePayload>(&again).ok().map(|q| encode(&q)),
            Some(again)
        );
    }
    // The raw bytes as a first IK message, and as the reply a client receives.
    let _ = NoiseWrap::responder(server_key()).recv(data);
    let mut client = NoiseWrap::initiator(KeyPair::from_seed(&[8; 32]), server_key().public_key);
    if client.send(&NoisePayload::default()).is_ok() {
        let _ = client.recv(data);
        let _ = client.finish();
    }
}

/// Decodes `data` as a PEER_HOLEPUNCH value and opens its payload.
pub fn fuzz_holepunch(data: &[u8]) {
    let secure = SecurePayload::with_local_secret([3; 32], [4; 32]);
    if let Ok(hp) = decode::<Holepunch>(data) {
        assert_eq!(decode::<Holepunch>(&encode(&hp)).ok(), Some(hp.clone()));
        if let Ok(p) = secure.decrypt(&hp.payload) {
            let boxed = secure.encrypt_with_nonce(&p, &[0; 24]);
            assert_eq!(secure.decrypt(&boxed).ok(), Some(p));
        }
    }
    let _ = secure.decrypt(data);
    if let Ok(p) = decode::<HolepunchPayload>(data) {
        assert_eq!(
            decode::<HolepunchPayload>(&encode(&p)).ok(),
            Some(p.clone())
        );
        // A well-formed payload behind a valid box must come out again.
        let boxed = secure.encrypt_with_nonce(&p, &[1; 24]);
        assert_eq!(secure.decrypt(&boxed).ok(), Some(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Small values keep flags, modes and lengths plausible.
                if x.is_multiple_of(3) {
                    (x >> 8) as u8
                } else {
                    (x % 8) as u8
                }
            })
            .collect()
    }

    #[test]
    fn entry_points_survive_garbage() {
        for len in 0..400usize {
            let d = noise(len as u64 * 31 + 7, len);
            fuzz_handshake(&d);
            fuzz_holepunch(&d);
        }
    }

    #[test]
    fn real_messages_go_all_the_way() {
        let mut c = NoiseWrap::initiator(KeyPair::from_seed(&[8; 32]), server_key().public_key);
        let hs = encode(&Handshake {
            mode: 0,
            noise: c.send(&NoisePayload::default()).unwrap(),
            peer_address: None,
            relay_address: None,
        });
        fuzz_handshake(&hs);
        let secure = SecurePayload::with_local_secret([3; 32], [4; 32]);
        let hp = encode(&Holepunch {
            mode: 2,
            id: 1,
            payload: secure.encrypt(&HolepunchPayload {
                round: 3,
                punching: true,
                ..HolepunchPayload::default()
            }),
            peer_address: None,
        });
        fuzz_holepunch(&hp);
        for n in 0..hp.len() {
            fuzz_holepunch(&hp[..n]);
        }
    }
}
