//! A signer that puts small-order points into its key or its nonce point, to test the
//! verification paths against libsodium (the crate's tests and the `signature_batch` fuzz
//! target; feature `torsion-signer`).
//!
//! An honest Ed25519 signer's key `A = a·B` and nonce point `R = r·B` lie in the subgroup
//! of prime order `l`. This signer knows its scalars `a` and `r` as well, but adds `k·T`
//! to `A`, to `R` or to both, where `T` is a point of order 8 (so `k·T` has order 8 for an
//! odd `k`, 4 for `k` = 2 or 6, 2 for `k` = 4, and is the identity for 0), and signs as
//! usual: `S = r + h·a mod l` with `h = SHA-512(R || A || M) mod l`. libsodium accepts
//! such a signature exactly when `S·B - h·A = R`, that is when the small-order parts
//! cancel: `R_t = -h·A_t`. Vectors 3 and 4 of Chalkias et al., "Taming the many EdDSAs"
//! (2020) are signatures of this kind.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

use crate::KeyPair;

/// Signs with a public key `a·B + k·T` and nonce points `r·B + k'·T`.
#[derive(Clone)]
pub struct TorsionSigner {
    scalar: Scalar,
    /// The second half of SHA-512(seed), from which Ed25519 derives nonces.
    prefix: [u8; 32],
    public_key: [u8; 32],
}

impl std::fmt::Debug for TorsionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorsionSigner")
            .field("public_key", &crate::hex_short(&self.public_key))
            .finish_non_exhaustive()
    }
}

/// `k·T` for a fixed point `T` of order 8 (only `k mod 8` counts).
pub fn small_order_point(k: u8) -> EdwardsPoint {
    EIGHT_TORSION[usize::from(k % 8)]
}

impl TorsionSigner {
    /// The signer of [`KeyPair::from_seed`]`(seed)` with `key_torsion·T` added to its public
    /// key (0 gives the key pair's own public key).
    pub fn new(seed: &[u8; 32], key_torsion: u8) -> Self {
        let keys = KeyPair::from_seed(seed);
        let expanded = crate::sha512(seed);
        let mut prefix = [0u8; 32];
        prefix.copy_from_slice(&expanded[32..]);
        let scalar = Scalar::from_bytes_mod_order(crate::ed25519_scalar(&keys.secret_key));
        let public_key =
            (ED25519_BASEPOINT_POINT * scalar + small_order_point(key_torsion)).compress();
        TorsionSigner {
            scalar,
            prefix,
            public_key: public_key.to_bytes(),
        }
    }

    /// The public key, small-order part included.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// A signature of `message` whose nonce point carries `nonce_torsion·T`. The nonce is
    /// Ed25519's (`r = SHA-512(prefix || M)`), so with no torsion anywhere this is the
    /// signature libsodium makes.
    pub fn sign(&self, message: &[u8], nonce_torsion: u8) -> [u8; 64] {
        let r = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(self.prefix)
                .chain_update(message)
                .finalize()
                .into(),
        );
        self.sign_with_nonce(message, &r, nonce_torsion)
    }

    /// A signature of `message` with the nonce scalar `r` chosen by the caller and
    /// `nonce_torsion·T` added to `r·B`.
    pub fn sign_with_nonce(&self, message: &[u8], r: &Scalar, nonce_torsion: u8) -> [u8; 64] {
        let nonce_point =
            (ED25519_BASEPOINT_POINT * r + small_order_point(nonce_torsion)).compress();
        let h = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(nonce_point.as_bytes())
                .chain_update(self.public_key)
                .chain_update(message)
                .finalize()
                .into(),
        );
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(nonce_point.as_bytes());
        signature[32..].copy_from_slice((r + h * self.scalar).as_bytes());
        signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::traits::IsIdentity;

    #[test]
    fn the_small_order_points_are_the_multiples_of_one_point_of_order_8() {
        let t = small_order_point(1);
        for k in 0..16u8 {
            assert_eq!(small_order_point(k), t * Scalar::from(k % 8), "{k}");
        }
        let order = |p: EdwardsPoint| (1..=8).find(|n| (p * Scalar::from(*n as u8)).is_identity());
        let orders: Vec<_> = (0..8).map(|k| order(small_order_point(k))).collect();
        let expected = [1, 8, 4, 8, 2, 8, 4, 8].map(Some);
        assert_eq!(orders, expected);
    }

    #[test]
    fn without_torsion_it_signs_as_libsodium_does() {
        for seed in [[1u8; 32], [0xfe; 32]] {
            let keys = KeyPair::from_seed(&seed);
            let signer = TorsionSigner::new(&seed, 0);
            assert_eq!(signer.public_key(), keys.public_key);
            for message in [&b""[..], b"m", &[7u8; 300]] {
                assert_eq!(signer.sign(message, 0), keys.sign(message));
            }
            // The same key with an order-8 part added is another key.
            assert_ne!(TorsionSigner::new(&seed, 1).public_key(), keys.public_key);
        }
    }
}
