//! Micro-benchmark of signature checks, ignored by default. Run it in release:
//! `cargo test --release -p intercom-crypto --test verify_timing -- --ignored --nocapture`.
//! Prints nanoseconds per signature for libsodium's `verify` one by one and for
//! `verify_batch` on the shapes the sidechannel sees, and what checking one point
//! torsion-free (`l·R = 0`) costs: the price of making a batch equation agree with
//! libsodium (see `src/batch.rs`).

use std::hint::black_box;
use std::time::Instant;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use intercom_crypto::{verify, verify_batch, KeyPair, SignedMessage};

struct Signed {
    signature: [u8; 64],
    message: Vec<u8>,
    public_key: [u8; 32],
}

/// `count` valid signatures from `signers` keys, taking turns.
fn signed(count: usize, signers: u8) -> Vec<Signed> {
    let keys: Vec<KeyPair> = (0..signers).map(|i| KeyPair::from_seed(&[i; 32])).collect();
    (0..count)
        .map(|i| {
            let key = &keys[i % keys.len()];
            let message = format!("{{\"message\":{i},\"padding\":\"{}\"}}", "x".repeat(200));
            Signed {
                signature: key.sign(message.as_bytes()),
                message: message.into_bytes(),
                public_key: key.public_key,
            }
        })
        .collect()
}

fn items(signed: &[Signed]) -> Vec<SignedMessage<'_>> {
    signed
        .iter()
        .map(|s| SignedMessage {
            signature: &s.signature,
            message: &s.message,
            public_key: &s.public_key,
        })
        .collect()
}

/// The best of five rounds of `rounds` calls, in nanoseconds per signature.
fn ns_per_signature(signatures: usize, rounds: usize, mut run: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..rounds {
                run();
            }
            start.elapsed().as_nanos() as f64 / (rounds * signatures) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn time_signature_checks() {
    for (count, signers) in [(64, 8), (16, 1), (16, 4), (2, 1), (1, 1)] {
        let signed = signed(count, signers);
        let items = items(&signed);
        assert!(verify_batch(&items).iter().all(|ok| *ok));
        let rounds = 4096 / count;
        let single = ns_per_signature(count, rounds, || {
            for i in &items {
                assert!(verify(i.signature, i.message, i.public_key));
            }
        });
        let batch = ns_per_signature(count, rounds, || {
            assert!(verify_batch(&items)[0]);
        });
        println!(
            "{count} signatures from {signers} signers: libsodium one by one {single:.0} ns, \
             verify_batch {batch:.0} ns per signature"
        );
    }
    // l·R = (l - 1)·R + R, variable time, on the R of real signatures.
    let signed = signed(64, 8);
    let points: Vec<EdwardsPoint> = signed
        .iter()
        .map(|s| {
            let r: [u8; 32] = s.signature[..32].try_into().expect("32 bytes");
            CompressedEdwardsY(r).decompress().expect("a point")
        })
        .collect();
    let l_minus_one = Scalar::ZERO - Scalar::ONE;
    let torsion_check = ns_per_signature(points.len(), 64, || {
        for r in &points {
            let l_r = EdwardsPoint::vartime_double_scalar_mul_basepoint(
                &l_minus_one,
                black_box(r),
                &Scalar::ZERO,
            ) + r;
            assert!(l_r.is_identity());
        }
    });
    println!("checking R torsion-free (l·R = 0): {torsion_check:.0} ns per point");
}
