use curve25519_dalek::constants::EIGHT_TORSION;

use super::*;
use crate::torsion_signer::TorsionSigner;
use crate::KeyPair;

/// The group order l, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// How many random batches each fixed case is tried in, and how many random cases of each
/// generated kind are made (each then tried in one random batch).
const RUNS: usize = 64;

fn add_le(a: &[u8], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = a[i] as u16 + b[i] as u16 + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    out
}

/// An owned signature to check.
#[derive(Clone)]
struct Case {
    name: String,
    signature: Vec<u8>,
    message: Vec<u8>,
    public_key: Vec<u8>,
}

impl Case {
    fn new(name: impl Into<String>, signature: &[u8], message: &[u8], public_key: &[u8]) -> Self {
        Case {
            name: name.into(),
            signature: signature.to_vec(),
            message: message.to_vec(),
            public_key: public_key.to_vec(),
        }
    }

    fn item(&self) -> SignedMessage<'_> {
        SignedMessage {
            signature: &self.signature,
            message: &self.message,
            public_key: &self.public_key,
        }
    }

    /// libsodium's verdict.
    fn libsodium(&self) -> bool {
        verify(&self.signature, &self.message, &self.public_key)
    }
}

fn items(cases: &[Case]) -> Vec<SignedMessage<'_>> {
    cases.iter().map(Case::item).collect()
}

/// xorshift64*, seeded at random; each test prints its seed when it fails.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Rng(u64::from_le_bytes(crate::random_array()) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
        out
    }
}

/// Checks `cases` alone, then each inside `runs` batches of 0 to 15 valid signatures from
/// four signers with the case at a random place (and, half of the time, another of the
/// cases too): every verdict must be libsodium's, and libsodium's steps on the cached key
/// must reach it without libsodium's help.
fn assert_libsodiums_verdicts(cases: &[Case], runs: usize) {
    let mut rng = Rng::new();
    let seed = rng.0;
    let signers: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed(&[i; 32])).collect();
    for case in cases {
        let expected = case.libsodium();
        assert_eq!(
            libsodium_accepts(&case.item()),
            expected,
            "{}: libsodium's steps alone",
            case.name
        );
        assert_eq!(
            verify_batch(&[case.item()]),
            vec![expected],
            "{}",
            case.name
        );
    }
    for case in cases {
        for run in 0..runs {
            let mut batch: Vec<Case> = (0..rng.below(16))
                .map(|i| {
                    let signer = &signers[rng.below(signers.len())];
                    let message = rng.bytes::<24>();
                    Case::new(
                        format!("valid {i}"),
                        &signer.sign(&message),
                        &message,
                        &signer.public_key,
                    )
                })
                .collect();
            batch.insert(rng.below(batch.len() + 1), case.clone());
            if rng.below(2) == 0 {
                let other = cases[rng.below(cases.len())].clone();
                batch.insert(rng.below(batch.len() + 1), other);
            }
            let expected: Vec<bool> = batch.iter().map(Case::libsodium).collect();
            let names: Vec<&str> = batch.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(
                verify_batch(&items(&batch)),
                expected,
                "{} run {run} (rng seed {seed:#x}): {names:?}",
                case.name
            );
        }
    }
}

/// Everyday good and bad signatures.
fn ordinary_cases() -> Vec<Case> {
    let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed(&[i; 32])).collect();
    let mut cases = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let message = format!("message {i}").into_bytes();
        cases.push(Case::new(
            "valid",
            &k.sign(&message),
            &message,
            &k.public_key,
        ));
    }
    let k = &keys[0];
    let good = k.sign(b"m");
    let mut tampered = good;
    tampered[5] ^= 1;
    let mut s_plus_l = good;
    s_plus_l[32..].copy_from_slice(&add_le(&good[32..], &L));
    let mut small_r = good;
    small_r[..32].copy_from_slice(&SMALL_ORDER_ENCODINGS[1]);
    let mut non_canonical_key = [0xffu8; 32];
    non_canonical_key[0] = 0xee;
    non_canonical_key[31] = 0x7f;
    let identity_key = SMALL_ORDER_ENCODINGS[1];
    let push = |cases: &mut Vec<Case>, name, signature: &[u8], message: &[u8], key: &[u8]| {
        cases.push(Case::new(name, signature, message, key))
    };
    push(&mut cases, "wrong message", &good, b"n", &k.public_key);
    push(&mut cases, "wrong key", &good, b"m", &keys[1].public_key);
    push(&mut cases, "tampered R", &tampered, b"m", &k.public_key);
    push(&mut cases, "S + l", &s_plus_l, b"m", &k.public_key);
    push(&mut cases, "small-order R", &small_r, b"m", &k.public_key);
    push(
        &mut cases,
        "non-canonical key",
        &good,
        b"m",
        &non_canonical_key,
    );
    push(&mut cases, "small-order key", &good, b"m", &identity_key);
    push(
        &mut cases,
        "short signature",
        &good[..63],
        b"m",
        &k.public_key,
    );
    push(&mut cases, "short key", &good, b"m", &k.public_key[..31]);
    cases
}

#[test]
fn ordinary_signatures_get_libsodiums_verdict_alone_and_in_batches() {
    let cases = ordinary_cases();
    for case in &cases {
        assert_eq!(case.libsodium(), case.name == "valid", "{}", case.name);
    }
    assert_libsodiums_verdicts(&cases, RUNS);
    assert!(verify_batch(&[]).is_empty());
}

/// The twelve vectors of Chalkias et al. with libsodium's verdicts (vector 3 only is
/// valid), from `tests/data/ed25519_speccheck_cases.json`.
fn speccheck_cases() -> Vec<(Case, bool)> {
    let json = include_str!("../../tests/data/ed25519_speccheck_cases.json");
    let verdicts = {
        let start = json.find("\"libsodium_accepts\": [").expect("verdicts");
        let list = &json[start..];
        let list = &list[list.find('[').expect("[") + 1..list.find(']').expect("]")];
        list.split(',')
            .map(|v| match v.trim() {
                "true" => true,
                "false" => false,
                other => panic!("verdict {other:?}"),
            })
            .collect::<Vec<bool>>()
    };
    let field = |object: &str, name: &str| -> Vec<u8> {
        let key = format!("\"{name}\": \"");
        let start = object.find(&key).expect(name) + key.len();
        let end = start + object[start..].find('"').expect("closing quote");
        hex::decode(&object[start..end]).expect("hex")
    };
    let cases_start = json.find("\"cases\": [").expect("cases");
    let cases: Vec<Case> = json[cases_start..]
        .split('{')
        .skip(1)
        .enumerate()
        .map(|(i, object)| {
            Case::new(
                format!("vector {i}"),
                &field(object, "signature"),
                &field(object, "message"),
                &field(object, "pub_key"),
            )
        })
        .collect();
    assert_eq!(cases.len(), 12);
    assert_eq!(verdicts.len(), 12);
    cases.into_iter().zip(verdicts).collect()
}

#[test]
fn the_twelve_vectors_of_chalkias_et_al_get_libsodiums_verdict_alone_and_in_batches() {
    let vectors = speccheck_cases();
    for (case, expected) in &vectors {
        assert_eq!(case.libsodium(), *expected, "{}: libsodium", case.name);
    }
    let cases: Vec<Case> = vectors.into_iter().map(|(case, _)| case).collect();
    assert_libsodiums_verdicts(&cases, RUNS);
}

/// Signatures whose nonce point `R = r·B + k·T` has a small-order part (`k` in 1..8: of
/// order 8, 4, 8, 2, 8, 4, 8) under ordinary keys: libsodium refuses every one.
#[test]
fn nonce_points_with_small_order_parts_are_refused_alone_and_in_batches() {
    let mut rng = Rng::new();
    let mut cases = Vec::new();
    for (order, torsions) in [(2, &[4u8][..]), (4, &[2, 6]), (8, &[1, 3, 5, 7])] {
        for run in 0..RUNS {
            let signer = TorsionSigner::new(&rng.bytes(), 0);
            let message = rng.bytes::<16>();
            let k = torsions[rng.below(torsions.len())];
            let case = Case::new(
                format!("R with order-{order} part {k}·T, run {run}"),
                &signer.sign(&message, k),
                &message,
                &signer.public_key(),
            );
            assert!(!case.libsodium(), "{}", case.name);
            cases.push(case);
        }
    }
    // A random-coefficient batch equation let such a signature through when its
    // coefficient killed the small-order part (one time in two for order 2), and pairs
    // whose parts can cancel (k·T and (8-k)·T) when the two coefficients agree modulo the
    // order.
    let signer = TorsionSigner::new(&[9; 32], 0);
    for k in 1..8u8 {
        let pair: Vec<Case> = [k, 8 - k]
            .iter()
            .map(|&t| {
                let message = format!("cancelling pair {k}, {t}").into_bytes();
                Case::new(
                    format!("pair {k}: R with {t}·T"),
                    &signer.sign(&message, t),
                    &message,
                    &signer.public_key(),
                )
            })
            .collect();
        assert_eq!(verify_batch(&items(&pair)), vec![false, false], "pair {k}");
    }
    assert_libsodiums_verdicts(&cases, 1);
}

/// Keys `A = a·B + k·T` with a small-order part. libsodium accepts a signature under such
/// a key exactly when `S·B - h·A = R`, i.e. when `R`'s small-order part is `-h·k·T`; the
/// signer, knowing `a`, finds such signatures by trying nonces. Valid ones, ones whose
/// small-order parts do not cancel, and valid ones altered are all checked.
#[test]
fn signatures_under_mixed_order_keys_get_libsodiums_verdict_alone_and_in_batches() {
    let mut rng = Rng::new();
    let mut cases = Vec::new();
    let (mut valid, mut refused) = (0, 0);
    for run in 0..RUNS {
        let key_torsion = 1 + rng.below(7) as u8;
        let signer = TorsionSigner::new(&rng.bytes(), key_torsion);
        let message = rng.bytes::<16>();
        let name = format!("key with {key_torsion}·T, run {run}");
        // Any nonce torsion: accepted about one time in eight.
        let signature = signer.sign(&message, rng.below(8) as u8);
        cases.push(Case::new(
            format!("{name}: any R"),
            &signature,
            &message,
            &signer.public_key(),
        ));
        // Nonces tried until libsodium accepts.
        let accepted = (0..256)
            .map(|_| {
                let r = Scalar::from_bytes_mod_order_wide(&rng.bytes());
                signer.sign_with_nonce(&message, &r, rng.below(8) as u8)
            })
            .find(|signature| verify(signature, &message, &signer.public_key()))
            .expect("one nonce in eight works");
        cases.push(Case::new(
            format!("{name}: valid"),
            &accepted,
            &message,
            &signer.public_key(),
        ));
        // That valid signature for another message, and with S off by one.
        let other = format!("other {run}").into_bytes();
        cases.push(Case::new(
            format!("{name}: other message"),
            &accepted,
            &other,
            &signer.public_key(),
        ));
        let mut s_off = accepted;
        let s = Scalar::from_canonical_bytes(s_off[32..].try_into().expect("32 bytes"));
        let s = Option::<Scalar>::from(s).expect("canonical S") + Scalar::ONE;
        s_off[32..].copy_from_slice(s.as_bytes());
        cases.push(Case::new(
            format!("{name}: S + 1"),
            &s_off,
            &message,
            &signer.public_key(),
        ));
    }
    for case in &cases {
        if case.libsodium() {
            valid += 1;
        } else {
            refused += 1;
        }
    }
    assert!(
        valid >= RUNS && refused >= 2 * RUNS,
        "{valid} valid, {refused} refused"
    );
    assert_libsodiums_verdicts(&cases, 1);
}

#[test]
fn every_single_bit_flip_of_signature_or_key_is_judged_as_libsodium_does() {
    let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed(&[i; 32])).collect();
    let messages: Vec<Vec<u8>> = (0..4).map(|i| format!("m{i}").into_bytes()).collect();
    let signatures: Vec<[u8; 64]> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
    for (field, len) in [("signature", 64), ("key", 32)] {
        for byte in 0..len {
            for bit in 0..8 {
                let mut signature = signatures[3];
                let mut key = keys[3].public_key;
                match field {
                    "signature" => signature[byte] ^= 1 << bit,
                    _ => key[byte] ^= 1 << bit,
                }
                let mut items: Vec<SignedMessage<'_>> = (0..3)
                    .map(|i| SignedMessage {
                        signature: &signatures[i],
                        message: &messages[i],
                        public_key: &keys[i].public_key,
                    })
                    .collect();
                items.push(SignedMessage {
                    signature: &signature,
                    message: &messages[3],
                    public_key: &key,
                });
                let single: Vec<bool> = items
                    .iter()
                    .map(|i| verify(i.signature, i.message, i.public_key))
                    .collect();
                assert_eq!(
                    verify_batch(&items),
                    single,
                    "{field} byte {byte} bit {bit}"
                );
                assert_eq!(libsodium_accepts(&items[3]), single[3]);
            }
        }
    }
}

#[test]
fn every_small_order_r_is_judged_as_libsodium_does() {
    let keys: Vec<KeyPair> = (1..=3u8).map(|i| KeyPair::from_seed(&[i; 32])).collect();
    let signatures: Vec<[u8; 64]> = keys.iter().map(|k| k.sign(b"m")).collect();
    for y in SMALL_ORDER_ENCODINGS {
        for sign in [0, 0x80] {
            // A signer who picks R of small order and S = h·a: with R the identity the
            // equation S·B = R + h·A holds, so only the pre-check refuses it.
            let mut forged = [0u8; 64];
            forged[..32].copy_from_slice(&y);
            forged[31] |= sign;
            let h = Scalar::from_bytes_mod_order_wide(&crate::sha512(
                &[&forged[..32], &keys[2].public_key[..], b"m"].concat(),
            ));
            let a = Scalar::from_bytes_mod_order(crate::ed25519_scalar(&keys[2].secret_key));
            forged[32..].copy_from_slice((h * a).as_bytes());
            let items: Vec<SignedMessage<'_>> = (0..3)
                .map(|i| SignedMessage {
                    signature: if i == 2 { &forged } else { &signatures[i] },
                    message: b"m",
                    public_key: &keys[i].public_key,
                })
                .collect();
            assert_eq!(verify_batch(&items), vec![true, true, false], "{y:02x?}");
        }
    }
}

#[test]
fn the_small_order_list_is_libsodiums_the_eight_torsion_points_and_two_non_canonical() {
    let mut torsion_ys: Vec<[u8; 32]> = EIGHT_TORSION
        .iter()
        .map(|t| {
            let mut y = t.compress().to_bytes();
            y[31] &= 0x7f;
            y
        })
        .collect();
    torsion_ys.sort();
    torsion_ys.dedup();
    assert_eq!(torsion_ys.len(), 5);
    let canonical: Vec<[u8; 32]> = SMALL_ORDER_ENCODINGS
        .into_iter()
        .filter(canonical_point_encoding)
        .collect();
    assert_eq!(canonical.len(), 5);
    for y in &torsion_ys {
        assert!(canonical.contains(y), "{y:02x?}");
    }
    // The two others are p and p + 1, that is 0 and 1 again.
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    let mut p_plus_1 = p;
    p_plus_1[0] = 0xee;
    assert!(has_small_order(&p) && has_small_order(&p_plus_1));
    let ordinary = KeyPair::from_seed(&[9; 32]).public_key;
    assert!(!has_small_order(&ordinary));
    for t in EIGHT_TORSION {
        let mut negative_x = t.compress().to_bytes();
        negative_x[31] |= 0x80;
        assert!(has_small_order(&negative_x));
    }
}

#[test]
fn keys_are_judged_the_same_from_the_cache_and_after_it_starts_over() {
    let bad_key = SMALL_ORDER_ENCODINGS[1]; // the identity
    let mixed_signer = TorsionSigner::new(&[0xbb; 32], 3);
    let mixed_signature = mixed_signer.sign(b"m", 0);
    let mixed_verdict = verify(&mixed_signature, b"m", &mixed_signer.public_key());
    for round in 0..2 {
        // More distinct keys than the cache holds, so it starts over in between.
        for i in 0..(KEY_CACHE_CAPACITY + 10) as u32 {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let key = KeyPair::from_seed(&seed);
            let signature = key.sign(b"m");
            let other = KeyPair::from_seed(&[0xaa; 32]);
            let other_signature = other.sign(b"m");
            let items = [
                SignedMessage {
                    signature: &signature,
                    message: b"m",
                    public_key: &key.public_key,
                },
                SignedMessage {
                    signature: &other_signature,
                    message: b"m",
                    public_key: &other.public_key,
                },
                SignedMessage {
                    signature: &signature,
                    message: b"m",
                    public_key: &bad_key,
                },
                SignedMessage {
                    signature: &mixed_signature,
                    message: b"m",
                    public_key: &mixed_signer.public_key(),
                },
            ];
            assert_eq!(
                verify_batch(&items),
                vec![true, true, false, mixed_verdict],
                "round {round} key {i}"
            );
        }
    }
}

#[test]
fn the_field_prime_and_above_are_non_canonical() {
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    assert!(!canonical_point_encoding(&p));
    p[31] = 0xff; // sign bit set: still y = p
    assert!(!canonical_point_encoding(&p));
    p[0] = 0xec; // p - 1
    assert!(canonical_point_encoding(&p));
    assert!(canonical_point_encoding(&[0u8; 32]));
}
