//! Batch Ed25519 verification: many signatures for about half the cost of checking each.
//!
//! The one primitive here that is not libsodium's: libsodium has no batch verification,
//! and a busy sidechannel peer spends most of its time in `crypto_sign_verify_detached`.
//! The batch equation (below) accepts every signature libsodium accepts, and libsodium
//! stays the judge of every rejection: a batch that fails is re-checked one signature at a
//! time with [`verify`](crate::verify). Inputs libsodium rejects before its equation
//! (non-canonical `S`, `R` or public key encodings, small-order `R` or public key) never
//! enter a batch.
//!
//! The equation is the usual one, `sum z_i (R_i + h_i A_i - S_i B) = 0` with `z_i` random
//! 128-bit scalars and `h_i = SHA-512(R_i || A_i || M_i) mod l` (libsodium's), evaluated
//! as one multi-scalar multiplication (curve25519-dalek). The terms of one signer share
//! one point: `(sum of its z_i h_i) A`, so a burst from one peer costs about one point per
//! signature instead of two.
//!
//! A lone signature is checked with libsodium's equation itself (`R == encode(S·B - h·A)`),
//! only with its key decompressed once per thread instead of every time.
//!
//! One difference remains in batches of two or more, as with any cofactorless batch
//! equation: a signer who adds a small-order component to its own `R` on purpose can get
//! a signature accepted here with probability up to 1/2 that libsodium rejects. Only the key's owner can build one, and
//! it gains nothing it could not get by signing normally.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{Identity, IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};

use crate::verify;

/// One signature to check with [`verify_batch`].
#[derive(Debug, Clone, Copy)]
pub struct SignedMessage<'a> {
    /// The 64-byte detached signature (other lengths fail).
    pub signature: &'a [u8],
    /// The signed bytes.
    pub message: &'a [u8],
    /// The signer's 32-byte Ed25519 public key (other lengths fail).
    pub public_key: &'a [u8],
}

/// Verifies every signature: `result[i]` is what [`verify`] says of `items[i]`. A lone
/// signature that passes the pre-checks is checked with libsodium's equation itself.
pub fn verify_batch(items: &[SignedMessage<'_>]) -> Vec<bool> {
    let mut results = vec![false; items.len()];
    let mut batch = Batch::default();
    for (i, item) in items.iter().enumerate() {
        match batchable(item) {
            Some((signature, key)) => batch.push(i, item.message, signature, key),
            None => results[i] = verify(item.signature, item.message, item.public_key),
        }
    }
    let all_valid = match batch.signatures.as_slice() {
        [] => false,
        [alone] => alone.holds(&batch.keys[alone.key]),
        _ => batch.equation_holds(),
    };
    for &i in &batch.indices {
        let item = &items[i];
        results[i] = all_valid || verify(item.signature, item.message, item.public_key);
    }
    results
}

/// Signatures that passed the pre-checks, with their signers' points merged.
#[derive(Default)]
struct Batch<'a> {
    indices: Vec<usize>,
    signatures: Vec<Batched<'a>>,
    /// Distinct signers, in order of appearance.
    keys: Vec<VerifyingKey>,
}

struct Batched<'a> {
    r: &'a [u8; 32],
    s: Scalar,
    message: &'a [u8],
    /// Index into `Batch::keys`.
    key: usize,
}

impl Batched<'_> {
    /// `h = SHA-512(R || A || M) mod l`.
    fn challenge(&self, key: &VerifyingKey) -> Scalar {
        Scalar::from_hash(
            Sha512::new()
                .chain_update(self.r)
                .chain_update(key.as_bytes())
                .chain_update(self.message),
        )
    }

    /// libsodium's own equation for one signature, `R == encode(S·B - h·A)`, with the key
    /// already decompressed (a lone message skips that and libsodium's decompression).
    fn holds(&self, key: &VerifyingKey) -> bool {
        let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(
            &-self.challenge(key),
            &key.to_edwards(),
            &self.s,
        );
        check.compress().as_bytes() == self.r
    }
}

impl<'a> Batch<'a> {
    fn push(
        &mut self,
        index: usize,
        message: &'a [u8],
        (r, s): (&'a [u8; 32], Scalar),
        key: VerifyingKey,
    ) {
        let key = match self
            .keys
            .iter()
            .position(|k| k.as_bytes() == key.as_bytes())
        {
            Some(known) => known,
            None => {
                self.keys.push(key);
                self.keys.len() - 1
            }
        };
        self.indices.push(index);
        self.signatures.push(Batched { r, s, message, key });
    }

    /// Whether `sum z_i R_i + sum_keys (sum z_i h_i) A - (sum z_i S_i) B` is the identity.
    /// False also when an `R` is not a point.
    fn equation_holds(&self) -> bool {
        let mut random = vec![0u8; 16 * self.signatures.len()];
        crate::random_bytes(&mut random);
        let mut basepoint_coefficient = Scalar::ZERO;
        let mut key_coefficients = vec![Scalar::ZERO; self.keys.len()];
        let mut scalars = Vec::with_capacity(self.signatures.len() + self.keys.len() + 1);
        let mut points = Vec::with_capacity(scalars.capacity());
        for (signature, z) in self.signatures.iter().zip(random.chunks_exact(16)) {
            let Some(r) = CompressedEdwardsY(*signature.r).decompress() else {
                return false;
            };
            let z = Scalar::from(u128::from_le_bytes(z.try_into().expect("16-byte chunk")));
            let h = signature.challenge(&self.keys[signature.key]);
            basepoint_coefficient += z * signature.s;
            key_coefficients[signature.key] += z * h;
            scalars.push(z);
            points.push(r);
        }
        scalars.push(-basepoint_coefficient);
        points.push(ED25519_BASEPOINT_POINT);
        for (key, coefficient) in self.keys.iter().zip(key_coefficients) {
            scalars.push(coefficient);
            points.push(key.to_edwards());
        }
        EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
    }
}

/// The signature and key when libsodium's pre-checks would pass them to its equation.
/// Checks bytes only, except for a key seen the first time (decompressed once, then
/// cached): a point decompression costs about a fifth of a whole verification.
fn batchable<'a>(item: &SignedMessage<'a>) -> Option<((&'a [u8; 32], Scalar), VerifyingKey)> {
    let public_key: &[u8; 32] = item.public_key.try_into().ok()?;
    let (r, s) = item.signature.split_first_chunk::<32>()?;
    let s: [u8; 32] = s.try_into().ok()?; // and so the signature is 64 bytes
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))?;
    if !canonical_point_encoding(r) || has_small_order_encoding(r) {
        return None;
    }
    let key = batchable_key(public_key)?;
    Some(((r, s), key))
}

/// Keys decompressed per thread, at most this many (the cache starts over when full).
const KEY_CACHE_CAPACITY: usize = 256;

thread_local! {
    static KEY_CACHE: RefCell<HashMap<[u8; 32], Option<VerifyingKey>>> =
        RefCell::new(HashMap::with_capacity(KEY_CACHE_CAPACITY));
}

/// The decompressed key when libsodium would use it (canonical, on the curve, not of
/// small order), remembered per thread: a channel's messages come from a few keys.
fn batchable_key(public_key: &[u8; 32]) -> Option<VerifyingKey> {
    KEY_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(known) = cache.get(public_key) {
            return *known;
        }
        let key = if canonical_point_encoding(public_key) {
            VerifyingKey::from_bytes(public_key)
                .ok()
                .filter(|key| !key.is_weak())
        } else {
            None
        };
        if cache.len() >= KEY_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(*public_key, key);
        key
    })
}

/// Whether the encoding's y coordinate (sign bit ignored) is that of a point of small
/// order, as libsodium's `ge25519_has_small_order` judges an `R` before decompressing it.
/// Only canonical encodings reach here, so the five y values of the eight torsion points
/// are the whole list.
fn has_small_order_encoding(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    y[31] &= 0x7f;
    small_order_ys().contains(&y)
}

/// The distinct y encodings of the eight points of order dividing 8, computed once: for
/// a point `X` with a torsion component of order 8, `l·X` is that component's odd
/// multiple, a generator of the torsion subgroup.
fn small_order_ys() -> &'static [[u8; 32]] {
    static YS: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    YS.get_or_init(|| {
        let generator = torsion_generator();
        let mut ys: Vec<[u8; 32]> = Vec::new();
        let mut point = EdwardsPoint::identity();
        for _ in 0..8 {
            let mut y = point.compress().to_bytes();
            y[31] &= 0x7f;
            if !ys.contains(&y) {
                ys.push(y);
            }
            point += generator;
        }
        ys
    })
}

/// A point of order 8: `l·X` for the first small y whose point `X` has a torsion
/// component of order 8.
fn torsion_generator() -> EdwardsPoint {
    (2u8..)
        .filter_map(|y| {
            let mut encoding = [0u8; 32];
            encoding[0] = y;
            CompressedEdwardsY(encoding).decompress()
        })
        // l·X = (l - 1)·X + X, since scalars are taken modulo l.
        .map(|x| x * (Scalar::ZERO - Scalar::ONE) + x)
        .find(|t| {
            let twice = t + t;
            !(twice + twice).is_identity()
        })
        .expect("some small y gives a point with an order-8 component")
}

/// Whether the encoded y coordinate is below the field prime 2^255 - 19 (libsodium's
/// `ge25519_is_canonical`). The top bit is the sign of x and not part of y.
fn canonical_point_encoding(bytes: &[u8; 32]) -> bool {
    let top_is_max = bytes[31] & 0x7f == 0x7f;
    let middle_is_max = bytes[1..31].iter().all(|b| *b == 0xff);
    !(top_is_max && middle_is_max && bytes[0] >= 0xed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyPair;

    /// The group order l, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

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

    struct Case {
        name: &'static str,
        signature: Vec<u8>,
        message: Vec<u8>,
        public_key: Vec<u8>,
    }

    fn cases() -> Vec<Case> {
        let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed(&[i; 32])).collect();
        let mut cases = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let message = format!("message {i}").into_bytes();
            cases.push(Case {
                name: "valid",
                signature: k.sign(&message).to_vec(),
                message,
                public_key: k.public_key.to_vec(),
            });
        }
        let k = &keys[0];
        let good = k.sign(b"m");
        let mut tampered = good;
        tampered[5] ^= 1;
        let mut s_plus_l = good;
        s_plus_l[32..].copy_from_slice(&add_le(&good[32..], &L));
        let mut small_r = good;
        small_r[..32].copy_from_slice(&{
            let mut identity = [0u8; 32];
            identity[0] = 1;
            identity
        });
        let mut non_canonical_key = [0xffu8; 32];
        non_canonical_key[0] = 0xee;
        non_canonical_key[31] = 0x7f;
        let mut identity_key = [0u8; 32];
        identity_key[0] = 1;
        let mut push = |name, signature: &[u8], message: &[u8], public_key: &[u8]| {
            cases.push(Case {
                name,
                signature: signature.to_vec(),
                message: message.to_vec(),
                public_key: public_key.to_vec(),
            })
        };
        push("wrong message", &good, b"n", &k.public_key);
        push("wrong key", &good, b"m", &keys[1].public_key);
        push("tampered R", &tampered, b"m", &k.public_key);
        push("S + l", &s_plus_l, b"m", &k.public_key);
        push("small-order R", &small_r, b"m", &k.public_key);
        push("non-canonical key", &good, b"m", &non_canonical_key);
        push("small-order key", &good, b"m", &identity_key);
        push("short signature", &good[..63], b"m", &k.public_key);
        push("short key", &good, b"m", &k.public_key[..31]);
        cases
    }

    fn items(cases: &[Case]) -> Vec<SignedMessage<'_>> {
        cases
            .iter()
            .map(|c| SignedMessage {
                signature: &c.signature,
                message: &c.message,
                public_key: &c.public_key,
            })
            .collect()
    }

    #[test]
    fn a_batch_agrees_with_libsodium_on_every_signature() {
        let cases = cases();
        let results = verify_batch(&items(&cases));
        for (case, ok) in cases.iter().zip(&results) {
            let single = verify(&case.signature, &case.message, &case.public_key);
            assert_eq!(*ok, single, "{}", case.name);
            assert_eq!(*ok, case.name == "valid", "{}", case.name);
        }
    }

    #[test]
    fn a_batch_of_valid_signatures_passes_and_one_bad_one_is_found() {
        let cases = cases();
        let valid: Vec<&Case> = cases.iter().filter(|c| c.name == "valid").collect();
        let all: Vec<SignedMessage<'_>> = items(&cases)
            .into_iter()
            .zip(&cases)
            .filter(|(_, c)| c.name == "valid")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(verify_batch(&all), vec![true; valid.len()]);
        // One wrong message inside an otherwise batchable set.
        let mut mixed = all.clone();
        mixed[2].message = b"not what was signed";
        assert_eq!(verify_batch(&mixed), vec![true, true, false, true]);
        assert!(verify_batch(&[]).is_empty());
        assert_eq!(verify_batch(&all[..1]), vec![true]);
    }

    #[test]
    fn the_batch_equation_holds_for_valid_signatures_only() {
        // Two signers, one of them twice (its points merged), then one wrong message.
        let keys: Vec<KeyPair> = (1..=2u8).map(|i| KeyPair::from_seed(&[i; 32])).collect();
        let messages: Vec<Vec<u8>> = (0..3).map(|i| format!("m{i}").into_bytes()).collect();
        let signers = [0, 1, 0];
        let signatures: Vec<[u8; 64]> = signers
            .iter()
            .zip(&messages)
            .map(|(&k, m)| keys[k].sign(m))
            .collect();
        fn build<'a>(
            signers: &[usize],
            signatures: &'a [[u8; 64]],
            keys: &'a [KeyPair],
            messages: &[&'a [u8]],
        ) -> Batch<'a> {
            let mut batch = Batch::default();
            for (i, &k) in signers.iter().enumerate() {
                let item = SignedMessage {
                    signature: &signatures[i],
                    message: messages[i],
                    public_key: &keys[k].public_key,
                };
                let (signature, key) = batchable(&item).expect("valid signatures are batchable");
                batch.push(i, messages[i], signature, key);
            }
            batch
        }
        let valid: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let batch = build(&signers, &signatures, &keys, &valid);
        assert_eq!(batch.keys.len(), 2);
        assert!(batch.equation_holds());
        let mut wrong = valid.clone();
        wrong[2] = b"other";
        assert!(!build(&signers, &signatures, &keys, &wrong).equation_holds());
    }

    #[test]
    fn a_lone_signature_is_held_to_libsodiums_exact_equation() {
        let key = KeyPair::from_seed(&[5; 32]);
        let message = b"lone";
        let good = key.sign(message);
        let lone = |signature: &[u8; 64]| {
            let item = SignedMessage {
                signature,
                message,
                public_key: &key.public_key,
            };
            let (signature, verifying_key) = batchable(&item)?;
            let alone = Batched {
                r: signature.0,
                s: signature.1,
                message,
                key: 0,
            };
            Some(alone.holds(&verifying_key))
        };
        assert_eq!(lone(&good), Some(true));
        let mut tampered = good;
        tampered[40] ^= 1;
        assert_eq!(lone(&tampered), Some(false));
        // The signer adds an order-8 point to R and signs for that R: a cofactorless
        // batch equation accepts this now and then, libsodium's equation never does.
        let nonce = Scalar::from(0x1234_5678_u64);
        let r = (ED25519_BASEPOINT_POINT * nonce + torsion_generator()).compress();
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice(r.as_bytes());
        let h = Scalar::from_bytes_mod_order_wide(&crate::sha512(
            &[r.as_bytes(), &key.public_key[..], message].concat(),
        ));
        let a = Scalar::from_bytes_mod_order(crate::ed25519_scalar(&key.secret_key));
        forged[32..].copy_from_slice((nonce + h * a).as_bytes());
        assert_eq!(lone(&forged), Some(false));
        assert!(!verify(&forged, message, &key.public_key));
        let items = [SignedMessage {
            signature: &forged,
            message,
            public_key: &key.public_key,
        }];
        assert_eq!(verify_batch(&items), vec![false]);
        // Without the small-order part the same construction is a valid signature.
        let honest_r = (ED25519_BASEPOINT_POINT * nonce).compress();
        let mut honest = [0u8; 64];
        honest[..32].copy_from_slice(honest_r.as_bytes());
        let h = Scalar::from_bytes_mod_order_wide(&crate::sha512(
            &[honest_r.as_bytes(), &key.public_key[..], message].concat(),
        ));
        honest[32..].copy_from_slice((nonce + h * a).as_bytes());
        assert_eq!(lone(&honest), Some(true));
        assert!(verify(&honest, message, &key.public_key));
    }

    #[test]
    fn every_single_bit_flip_of_signature_or_key_is_judged_as_libsodium_does() {
        let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed(&[i; 32])).collect();
        let messages: Vec<Vec<u8>> = (0..4).map(|i| format!("m{i}").into_bytes()).collect();
        let signatures: Vec<[u8; 64]> =
            keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
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
                }
            }
        }
    }

    #[test]
    fn the_small_order_list_is_the_five_torsion_ys() {
        let ys = small_order_ys();
        assert_eq!(ys.len(), 5);
        let mut one = [0u8; 32];
        one[0] = 1;
        let mut minus_one = [0xffu8; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        for expected in [[0u8; 32], one, minus_one] {
            assert!(ys.contains(&expected));
        }
        for y in ys {
            for sign in [0, 0x80] {
                let mut encoding = *y;
                encoding[31] |= sign;
                let point = CompressedEdwardsY(encoding).decompress();
                // y = 1 and y = -1 with the sign bit set name x = -0: libsodium rejects
                // those encodings too (it masks the sign bit before comparing).
                if let Some(point) = point {
                    assert!(point.is_small_order(), "{encoding:02x?}");
                }
            }
        }
        let ordinary = KeyPair::from_seed(&[9; 32]).public_key;
        assert!(!has_small_order_encoding(&ordinary));
    }

    #[test]
    fn every_small_order_r_is_judged_as_libsodium_does() {
        let keys: Vec<KeyPair> = (1..=3u8).map(|i| KeyPair::from_seed(&[i; 32])).collect();
        let signatures: Vec<[u8; 64]> = keys.iter().map(|k| k.sign(b"m")).collect();
        for y in small_order_ys() {
            for sign in [0, 0x80] {
                // A signer who picks R of small order and S = h·a: with R the identity
                // the batch equation holds, so only the pre-check can refuse it.
                let mut forged = [0u8; 64];
                forged[..32].copy_from_slice(y);
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
    fn keys_are_judged_the_same_from_the_cache_and_after_it_starts_over() {
        let mut bad_key = [0u8; 32];
        bad_key[0] = 1; // the identity: small order
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
                ];
                assert_eq!(
                    verify_batch(&items),
                    vec![true, true, false],
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
}
