//! Differential: batch Ed25519 verification must judge every signature as libsodium's
//! single verification does. Each 8-byte record of the input picks a signer, a message
//! and what happens to the signature: a flip of one bit of the signature, key or message,
//! nothing, or small-order points added to the nonce point `R`, to the public key `A` or
//! to both by a signer who knows its scalars and signs for them (the signatures
//! libsodium refuses unless the small-order parts cancel, `R_t = -h·A_t`). So batches mix
//! valid signatures with almost-valid ones.
#![no_main]

use intercom_crypto::torsion_signer::TorsionSigner;
use intercom_crypto::{verify, verify_batch, KeyPair, SignedMessage};
use libfuzzer_sys::fuzz_target;

struct Item {
    signature: [u8; 64],
    message: Vec<u8>,
    public_key: [u8; 32],
}

fuzz_target!(|data: &[u8]| {
    let items: Vec<Item> = data
        .chunks_exact(8)
        .take(32)
        .map(|r| {
            let seed = [r[0] % 4; 32];
            let message = r[1..5].to_vec();
            // Small-order parts k·T (T of order 8) for R and for A, by mode.
            let (at, bit) = (usize::from(r[6]), r[7] % 8);
            let torsion = match r[5] % 8 {
                4 => Some((0, 1 + r[6] % 7)),
                5 => Some((1 + r[6] % 7, 0)),
                6 => Some((r[6] % 8, r[7] % 8)),
                _ => None,
            };
            let mut item = match torsion {
                Some((key_torsion, nonce_torsion)) => {
                    let signer = TorsionSigner::new(&seed, key_torsion);
                    Item {
                        signature: signer.sign(&message, nonce_torsion),
                        message,
                        public_key: signer.public_key(),
                    }
                }
                None => {
                    let keys = KeyPair::from_seed(&seed);
                    Item {
                        signature: keys.sign(&message),
                        message,
                        public_key: keys.public_key,
                    }
                }
            };
            match r[5] % 8 {
                0 => item.signature[at % 64] ^= 1 << bit,
                1 => item.public_key[at % 32] ^= 1 << bit,
                2 => item.message[at % 4] ^= 1 << bit,
                _ => {}
            }
            item
        })
        .collect();
    let batch: Vec<SignedMessage<'_>> = items
        .iter()
        .map(|i| SignedMessage {
            signature: &i.signature,
            message: &i.message,
            public_key: &i.public_key,
        })
        .collect();
    let single: Vec<bool> = batch
        .iter()
        .map(|i| verify(i.signature, i.message, i.public_key))
        .collect();
    assert_eq!(verify_batch(&batch), single);
});
