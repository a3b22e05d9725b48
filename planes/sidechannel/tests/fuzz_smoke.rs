//! Feeds mutated payloads through `fuzz_payload` (a cheap stand-in for the cargo-fuzz run).

use intercom_crypto::KeyPair;
use intercom_sidechannel::payload::{self, PrepareParams};
use serde_json::json;

#[test]
fn mutated_payloads_never_panic() {
    let k = KeyPair::from_seed(&[1; 32]);
    let seeds: Vec<Vec<u8>> = ["room", "owned", "vip", "0000intercom"]
        .iter()
        .map(|ch| {
            payload::prepare(
                &k,
                PrepareParams {
                    channel: (*ch).into(),
                    message: json!({"control": "open_channel", "channel": "x", "welcome": {"payload": {}, "sig": "00"}}),
                    ts: 5,
                    ttl: 3,
                    invite: None,
                    pow_difficulty: Some(1),
                    id_suffix: "seed0000".into(),
                },
            )
            .encode()
        })
        .collect();
    let mut rng: u64 = 0x1234_5678;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..200 {
        let mut data = seeds[i % seeds.len()].clone();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % data.len();
            match next() % 3 {
                0 => data[at] = next() as u8,
                1 => {
                    data.remove(at);
                }
                _ => data.insert(at, b"{}[]\",:0123456789"[(next() % 16) as usize]),
            }
        }
        intercom_sidechannel::fuzz_payload(&data);
    }
}
