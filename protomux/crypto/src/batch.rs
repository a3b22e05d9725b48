//! Many signatures checked at once, each to exactly the verdict libsodium gives it.
//!
//! libsodium's `crypto_sign_verify_detached` (ref10 `open.c` in the version
//! libsodium-sys-stable builds) rejects a non-canonical `S`, an `R` on its small-order list,
//! a public key `A` that is non-canonical, on that list or not a point; then it computes
//! `h = SHA-512(R || A || M) mod l` and accepts exactly when the canonical encoding of
//! `S·B + h·(-A)` is the 32 bytes of `R`. [`verify_batch`] takes the same steps with
//! curve25519-dalek, with one saving: a key is decoded once per thread and cached (a
//! sidechannel's messages come from a few keys). Its "valid" comes from those steps, which
//! are libsodium's one for one (see `libsodium_accepts`); any other answer is
//! libsodium's own, by passing the signature to [`verify`]. So a batch can only disagree
//! with libsodium by accepting something libsodium refuses, and it never does that unless
//! curve25519-dalek and libsodium disagree about a point.
//!
//! There is no batch equation. The usual one, `sum z_i (R_i + h_i A_i - S_i B) = 0` with
//! random `z_i` (what this module did before), cost a fifth of libsodium's check per
//! signature but cannot see small-order components: with `R = r·B + T` (`T` of order 2,
//! 4 or 8) a signer had up to one chance in two of a signature accepted here that
//! libsodium refuses (Chalkias et al., "Taming the many EdDSAs", 2020). Keys can be
//! checked torsion-free once, but every `R` would need `l·R = 0` checked as well, and that
//! one multiplication (~252 doublings) costs two thirds of the exact equation on a cached
//! key. Per signature, 64 signatures from 8 signers, release build
//! (`tests/verify_timing.rs`): batch equation 10 us, plus the check 33 us; the exact
//! equation 34 us; libsodium 48-54 us. A batch made exact would save nothing and need a
//! probabilistic argument, so each signature gets the equation.

use std::cell::RefCell;
use std::collections::HashMap;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
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

/// Verifies every signature: `result[i]` is what [`verify`] (libsodium) says of `items[i]`.
/// A valid signature is recognised by libsodium's equation on a cached key; everything
/// else is handed to libsodium.
pub fn verify_batch(items: &[SignedMessage<'_>]) -> Vec<bool> {
    items
        .iter()
        .map(|item| {
            libsodium_accepts(item) || verify(item.signature, item.message, item.public_key)
        })
        .collect()
}

/// Whether libsodium accepts `item`, worked out as libsodium does it, step for step (the
/// comments name its steps). A key's decoding is cached per thread.
fn libsodium_accepts(item: &SignedMessage<'_>) -> bool {
    let (Ok(public_key), Some((r, s))) = (
        <&[u8; 32]>::try_from(item.public_key),
        item.signature.split_first_chunk::<32>(),
    ) else {
        return false;
    };
    let Ok(s) = <[u8; 32]>::try_from(s) else {
        return false; // the signature is not 64 bytes
    };
    // sc25519_is_canonical(S) and ge25519_has_small_order(R).
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
        return false;
    };
    if has_small_order(r) {
        return false;
    }
    // ge25519_is_canonical(A), ge25519_has_small_order(A), ge25519_frombytes_negate_vartime.
    let Some(minus_key) = minus_key(public_key) else {
        return false;
    };
    // h = SHA-512(R || A || M) reduced mod l (sc25519_reduce).
    let h = Scalar::from_bytes_mod_order_wide(
        &Sha512::new()
            .chain_update(r)
            .chain_update(public_key)
            .chain_update(item.message)
            .finalize()
            .into(),
    );
    // ge25519_double_scalarmult_vartime: h·(-A) + S·B, exactly, for any A (a key with a
    // small-order part included: the negation is of the point, not of h, which would
    // leave l·A behind). Then ge25519_tobytes and a comparison with R's bytes.
    let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&h, &minus_key, &s);
    check.compress().as_bytes() == r
}

/// Keys decoded per thread, at most this many (the cache starts over when full).
const KEY_CACHE_CAPACITY: usize = 256;

thread_local! {
    static KEY_CACHE: RefCell<HashMap<[u8; 32], Option<EdwardsPoint>>> =
        RefCell::new(HashMap::with_capacity(KEY_CACHE_CAPACITY));
}

/// `-A` when libsodium would use the key (canonical, not on its small-order list, a
/// point), remembered per thread: a channel's messages come from a few keys, and decoding
/// one costs a fifth of a verification.
fn minus_key(public_key: &[u8; 32]) -> Option<EdwardsPoint> {
    KEY_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(known) = cache.get(public_key) {
            return *known;
        }
        let key = if canonical_point_encoding(public_key) && !has_small_order(public_key) {
            CompressedEdwardsY(*public_key).decompress().map(|a| -a)
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

/// libsodium's `ge25519_has_small_order` list, copied: the y coordinates of the points of
/// order 1, 2, 4 and 8, and the non-canonical encodings of 0 and 1.
const SMALL_ORDER_ENCODINGS: [[u8; 32]; 7] = [
    // 0 (order 4)
    [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ],
    // 1 (order 1)
    [
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ],
    // the two y values of order 8
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    // p - 1 (order 2)
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // p (non-canonical 0)
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // p + 1 (non-canonical 1)
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Whether the encoding (its sign bit ignored) is on libsodium's small-order list
/// (`ge25519_has_small_order`).
fn has_small_order(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    y[31] &= 0x7f;
    SMALL_ORDER_ENCODINGS.contains(&y)
}

/// Whether the encoded y coordinate is below the field prime 2^255 - 19 (libsodium's
/// `ge25519_is_canonical`). The top bit is the sign of x and not part of y.
fn canonical_point_encoding(bytes: &[u8; 32]) -> bool {
    let top_is_max = bytes[31] & 0x7f == 0x7f;
    let middle_is_max = bytes[1..31].iter().all(|b| *b == 0xff);
    !(top_is_max && middle_is_max && bytes[0] >= 0xed)
}

#[cfg(test)]
mod tests;
