//! Differential: batch Ed25519 verification must judge every signature as libsodium's
//! single verification does. Each 8-byte record of the input picks a signer, a message
//! and a flip of one bit of the signature, key or message (or none), so batches mix
//! valid signatures with almost-valid ones.
#![no_main]

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
            let keys = KeyPair::from_seed(&[r[0] % 4; 32]);
            let message = r[1..5].to_vec();
            let mut item = Item {
                signature: keys.sign(&message),
                message,
                public_key: keys.public_key,
            };
            let (at, bit) = (usize::from(r[6]), r[7] % 8);
            match r[5] % 4 {
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
