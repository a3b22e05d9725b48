//! Safe wrappers over libsodium, the same library `sodium-native` binds for the JS stack.
//!
//! Using libsodium for every primitive (rather than mixing pure-Rust crates) means our
//! Ed25519 keys, BLAKE2b hashes, Ed25519 scalar multiplication and secretstream frames
//! are produced by the very code the JS peers run, edge cases included (for example
//! `crypto_scalarmult_ed25519_noclamp` refusing small-order points). The exception is
//! [`verify_batch`], which recognises valid signatures with libsodium's own verification
//! steps on curve25519-dalek (with keys decoded once per thread) and defers every other
//! verdict to libsodium: it gives exactly [`verify`]'s answers.

#![allow(unsafe_code)]

use std::sync::Once;

use libsodium_sys as ffi;

mod batch;
pub use batch::{verify_batch, SignedMessage};

#[cfg(any(test, feature = "torsion-signer"))]
pub mod torsion_signer;

/// Why a libsodium call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Ed25519 scalar multiplication hit an invalid or small-order point.
    #[error("invalid public key for Diffie-Hellman")]
    InvalidPoint,
    /// An AEAD ciphertext failed authentication or is shorter than its tag.
    #[error("decryption failed: ciphertext not authentic")]
    Decrypt,
    /// A secretstream header or message could not be processed.
    #[error("secretstream: {0}")]
    SecretStream(&'static str),
    /// An argument had the wrong length.
    #[error("{what} must be {expected} bytes, got {got}")]
    Length {
        /// The argument.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
}

static INIT: Once = Once::new();

/// Initialises libsodium once per process; every function here calls it.
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: sodium_init is safe to call; it returns -1 only when the library
        // cannot find a randomness source, which makes every later call unsafe.
        let rc = unsafe { ffi::sodium_init() };
        assert!(rc >= 0, "libsodium failed to initialise");
    });
}

/// Fills `out` with cryptographically secure random bytes.
pub fn random_bytes(out: &mut [u8]) {
    init();
    // SAFETY: out is a valid writable buffer of out.len() bytes.
    unsafe { ffi::randombytes_buf(out.as_mut_ptr().cast(), out.len()) }
}

/// Random fixed-size array.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    random_bytes(&mut out);
    out
}

/// An Ed25519 key pair in libsodium layout: the secret key is seed ‖ public key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The 32-byte public key.
    pub public_key: [u8; 32],
    /// The 64-byte libsodium secret key (seed followed by the public key).
    pub secret_key: [u8; 64],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key", &hex_short(&self.public_key))
            .finish_non_exhaustive()
    }
}

fn hex_short(b: &[u8]) -> String {
    b.iter()
        .take(8)
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        + "…"
}

impl KeyPair {
    /// The key pair `crypto_sign_seed_keypair` derives from `seed` (JS `DHT.keyPair(seed)`).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        init();
        let mut kp = KeyPair {
            public_key: [0; 32],
            secret_key: [0; 64],
        };
        // SAFETY: buffers have the sizes libsodium requires (32, 64, 32).
        unsafe {
            ffi::crypto_sign_seed_keypair(
                kp.public_key.as_mut_ptr(),
                kp.secret_key.as_mut_ptr(),
                seed.as_ptr(),
            );
        }
        kp
    }

    /// A fresh random key pair.
    pub fn generate() -> Self {
        KeyPair::from_seed(&random_array())
    }

    /// Rebuilds a key pair from a 64-byte libsodium secret key.
    pub fn from_secret_key(secret_key: &[u8]) -> Result<Self, CryptoError> {
        let sk: [u8; 64] = secret_key.try_into().map_err(|_| CryptoError::Length {
            what: "secret key",
            expected: 64,
            got: secret_key.len(),
        })?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&sk[..32]);
        let kp = KeyPair::from_seed(&seed);
        if kp.secret_key != sk {
            return Err(CryptoError::Length {
                what: "consistent secret key",
                expected: 64,
                got: 0,
            });
        }
        Ok(kp)
    }

    /// The 32-byte seed this key pair was derived from.
    pub fn seed(&self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&self.secret_key[..32]);
        seed
    }

    /// Ed25519 detached signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        sign(message, &self.secret_key)
    }
}

/// Ed25519 detached signature with a libsodium 64-byte secret key.
pub fn sign(message: &[u8], secret_key: &[u8; 64]) -> [u8; 64] {
    init();
    let mut sig = [0u8; 64];
    // SAFETY: sig is 64 bytes, secret_key 64 bytes, message valid for its length.
    unsafe {
        ffi::crypto_sign_detached(
            sig.as_mut_ptr(),
            std::ptr::null_mut(),
            message.as_ptr(),
            message.len() as u64,
            secret_key.as_ptr(),
        );
    }
    sig
}

/// Verifies an Ed25519 detached signature. Wrong lengths simply fail.
pub fn verify(signature: &[u8], message: &[u8], public_key: &[u8]) -> bool {
    if signature.len() != 64 || public_key.len() != 32 {
        return false;
    }
    init();
    // SAFETY: lengths checked above; message valid for its length.
    unsafe {
        ffi::crypto_sign_verify_detached(
            signature.as_ptr(),
            message.as_ptr(),
            message.len() as u64,
            public_key.as_ptr(),
        ) == 0
    }
}

/// Incremental BLAKE2b (`crypto_generichash`), optionally keyed.
pub struct Blake2b {
    state: ffi::crypto_generichash_state,
    out_len: usize,
}

impl Blake2b {
    /// A hasher producing `out_len` bytes (16..=64), keyed when `key` is given (16..=64 bytes).
    pub fn new(out_len: usize, key: Option<&[u8]>) -> Self {
        init();
        assert!((16..=64).contains(&out_len), "blake2b output length");
        let (kp, kl) = key.map_or((std::ptr::null(), 0), |k| (k.as_ptr(), k.len()));
        assert!(kl == 0 || (16..=64).contains(&kl), "blake2b key length");
        // SAFETY: an all-zero state is a valid placeholder that init overwrites.
        let mut state: ffi::crypto_generichash_state = unsafe { std::mem::zeroed() };
        // SAFETY: state is a valid state struct; key pointer/length are consistent.
        unsafe { ffi::crypto_generichash_init(&mut state, kp, kl, out_len) };
        Blake2b { state, out_len }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        // SAFETY: state was initialised; data valid for its length.
        unsafe {
            ffi::crypto_generichash_update(&mut self.state, data.as_ptr(), data.len() as u64)
        };
        self
    }

    /// Writes the digest into `out` (which must be `out_len` bytes).
    pub fn finalize_into(mut self, out: &mut [u8]) {
        assert_eq!(out.len(), self.out_len, "blake2b output buffer length");
        // SAFETY: out has out_len bytes, matching init.
        unsafe { ffi::crypto_generichash_final(&mut self.state, out.as_mut_ptr(), out.len()) };
    }
}

/// BLAKE2b-256 of the concatenation of `parts` (JS `crypto_generichash_batch`), optionally keyed.
pub fn blake2b_256(parts: &[&[u8]], key: Option<&[u8]>) -> [u8; 32] {
    let mut h = Blake2b::new(32, key);
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 32];
    h.finalize_into(&mut out);
    out
}

/// BLAKE2b-512 of the concatenation of `parts`, optionally keyed.
pub fn blake2b_512(parts: &[&[u8]], key: Option<&[u8]>) -> [u8; 64] {
    let mut h = Blake2b::new(64, key);
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 64];
    h.finalize_into(&mut out);
    out
}

/// SHA-512 (used to derive the Ed25519 scalar from a seed).
pub fn sha512(data: &[u8]) -> [u8; 64] {
    init();
    let mut out = [0u8; 64];
    // SAFETY: out is 64 bytes, data valid for its length.
    unsafe { ffi::crypto_hash_sha512(out.as_mut_ptr(), data.as_ptr(), data.len() as u64) };
    out
}

/// The clamped Ed25519 scalar of a libsodium secret key (as `noise-curve-ed` derives it).
pub fn ed25519_scalar(secret_key: &[u8; 64]) -> [u8; 32] {
    let h = sha512(&secret_key[..32]);
    let mut s = [0u8; 32];
    s.copy_from_slice(&h[..32]);
    s[0] &= 248;
    s[31] &= 127;
    s[31] |= 64;
    s
}

/// `crypto_scalarmult_ed25519_noclamp(scalar, point)`: the Noise DH of `noise-curve-ed`.
pub fn scalarmult_ed25519_noclamp(
    scalar: &[u8; 32],
    point: &[u8; 32],
) -> Result<[u8; 32], CryptoError> {
    init();
    let mut out = [0u8; 32];
    // SAFETY: all buffers are 32 bytes.
    let rc = unsafe {
        ffi::crypto_scalarmult_ed25519_noclamp(out.as_mut_ptr(), scalar.as_ptr(), point.as_ptr())
    };
    if rc != 0 {
        return Err(CryptoError::InvalidPoint);
    }
    Ok(out)
}

/// Noise's ChaChaPoly nonce: four zero bytes then the counter, little endian.
fn noise_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// `crypto_aead_chacha20poly1305_ietf_encrypt` with a Noise counter nonce.
pub fn aead_encrypt(key: &[u8; 32], counter: u64, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    init();
    let nonce = noise_nonce(counter);
    let mut out = vec![0u8; plaintext.len() + 16];
    let mut out_len = 0u64;
    // SAFETY: out has room for plaintext + 16-byte tag; other buffers valid.
    unsafe {
        ffi::crypto_aead_chacha20poly1305_ietf_encrypt(
            out.as_mut_ptr(),
            &mut out_len,
            plaintext.as_ptr(),
            plaintext.len() as u64,
            ad.as_ptr(),
            ad.len() as u64,
            std::ptr::null(),
            nonce.as_ptr(),
            key.as_ptr(),
        );
    }
    out
}

/// `crypto_aead_chacha20poly1305_ietf_decrypt` with a Noise counter nonce.
pub fn aead_decrypt(
    key: &[u8; 32],
    counter: u64,
    ad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if ciphertext.len() < 16 {
        return Err(CryptoError::Decrypt);
    }
    init();
    let nonce = noise_nonce(counter);
    let mut out = vec![0u8; ciphertext.len() - 16];
    let mut out_len = 0u64;
    // SAFETY: out has room for ciphertext - tag; other buffers valid.
    let rc = unsafe {
        ffi::crypto_aead_chacha20poly1305_ietf_decrypt(
            out.as_mut_ptr(),
            &mut out_len,
            std::ptr::null_mut(),
            ciphertext.as_ptr(),
            ciphertext.len() as u64,
            ad.as_ptr(),
            ad.len() as u64,
            nonce.as_ptr(),
            key.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(CryptoError::Decrypt);
    }
    Ok(out)
}

/// `crypto_secretbox_easy`: `out` receives the 16-byte MAC then the ciphertext.
pub fn secretbox_seal(key: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8]) -> Vec<u8> {
    init();
    let mut out = vec![0u8; plaintext.len() + 16];
    // SAFETY: out has plaintext + MAC bytes; key 32, nonce 24.
    unsafe {
        ffi::crypto_secretbox_easy(
            out.as_mut_ptr(),
            plaintext.as_ptr(),
            plaintext.len() as u64,
            nonce.as_ptr(),
            key.as_ptr(),
        );
    }
    out
}

/// `crypto_secretbox_open_easy`.
pub fn secretbox_open(
    key: &[u8; 32],
    nonce: &[u8; 24],
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if ciphertext.len() < 16 {
        return Err(CryptoError::Decrypt);
    }
    init();
    let mut out = vec![0u8; ciphertext.len() - 16];
    // SAFETY: out has ciphertext - MAC bytes; key 32, nonce 24.
    let rc = unsafe {
        ffi::crypto_secretbox_open_easy(
            out.as_mut_ptr(),
            ciphertext.as_ptr(),
            ciphertext.len() as u64,
            nonce.as_ptr(),
            key.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(CryptoError::Decrypt);
    }
    Ok(out)
}

/// Bytes a secretstream message adds: one encrypted tag byte and a 16-byte MAC.
pub const SECRETSTREAM_ABYTES: usize = 17;
/// Size of a secretstream header.
pub const SECRETSTREAM_HEADERBYTES: usize = 24;
/// Tag of an ordinary secretstream message.
pub const TAG_MESSAGE: u8 = 0;
/// Tag that ends a secretstream.
pub const TAG_FINAL: u8 = 3;

/// The sending half of `crypto_secretstream_xchacha20poly1305`.
pub struct SecretStreamPush {
    state: ffi::crypto_secretstream_xchacha20poly1305_state,
}

impl SecretStreamPush {
    /// Starts a stream under `key`; returns it with the header the receiver needs.
    pub fn new(key: &[u8; 32]) -> (Self, [u8; SECRETSTREAM_HEADERBYTES]) {
        init();
        // SAFETY: zeroed state is a placeholder that init_push overwrites.
        let mut state: ffi::crypto_secretstream_xchacha20poly1305_state =
            unsafe { std::mem::zeroed() };
        let mut header = [0u8; SECRETSTREAM_HEADERBYTES];
        // SAFETY: header is HEADERBYTES long, key 32 bytes.
        unsafe {
            ffi::crypto_secretstream_xchacha20poly1305_init_push(
                &mut state,
                header.as_mut_ptr(),
                key.as_ptr(),
            )
        };
        (SecretStreamPush { state }, header)
    }

    /// Encrypts `message` with `tag` into `out`, which must be `message.len() + 17` bytes.
    pub fn push_into(&mut self, message: &[u8], tag: u8, out: &mut [u8]) {
        assert_eq!(
            out.len(),
            message.len() + SECRETSTREAM_ABYTES,
            "secretstream output length"
        );
        let mut clen = 0u64;
        // SAFETY: out has message + ABYTES bytes; message valid for its length.
        unsafe {
            ffi::crypto_secretstream_xchacha20poly1305_push(
                &mut self.state,
                out.as_mut_ptr(),
                &mut clen,
                message.as_ptr(),
                message.len() as u64,
                std::ptr::null(),
                0,
                tag,
            );
        }
    }
}

/// The receiving half of `crypto_secretstream_xchacha20poly1305`.
pub struct SecretStreamPull {
    state: ffi::crypto_secretstream_xchacha20poly1305_state,
}

impl SecretStreamPull {
    /// Starts pulling a stream under `key` from the sender's `header`.
    pub fn new(
        key: &[u8; 32],
        header: &[u8; SECRETSTREAM_HEADERBYTES],
    ) -> Result<Self, CryptoError> {
        init();
        // SAFETY: zeroed state is a placeholder that init_pull overwrites.
        let mut state: ffi::crypto_secretstream_xchacha20poly1305_state =
            unsafe { std::mem::zeroed() };
        // SAFETY: header is HEADERBYTES long, key 32 bytes.
        let rc = unsafe {
            ffi::crypto_secretstream_xchacha20poly1305_init_pull(
                &mut state,
                header.as_ptr(),
                key.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(CryptoError::SecretStream("invalid header"));
        }
        Ok(SecretStreamPull { state })
    }

    /// Decrypts one message into `out` (which must be `cipher.len() - 17` bytes) and
    /// returns its tag. A forged, reordered or truncated message is an error.
    pub fn pull_into(&mut self, cipher: &[u8], out: &mut [u8]) -> Result<u8, CryptoError> {
        if cipher.len() < SECRETSTREAM_ABYTES {
            return Err(CryptoError::SecretStream("message shorter than its tag"));
        }
        if out.len() != cipher.len() - SECRETSTREAM_ABYTES {
            return Err(CryptoError::Length {
                what: "secretstream plaintext buffer",
                expected: cipher.len() - SECRETSTREAM_ABYTES,
                got: out.len(),
            });
        }
        let mut mlen = 0u64;
        let mut tag = 0u8;
        // SAFETY: lengths checked above.
        let rc = unsafe {
            ffi::crypto_secretstream_xchacha20poly1305_pull(
                &mut self.state,
                out.as_mut_ptr(),
                &mut mlen,
                &mut tag,
                cipher.as_ptr(),
                cipher.len() as u64,
                std::ptr::null(),
                0,
            )
        };
        if rc != 0 {
            return Err(CryptoError::SecretStream("message failed authentication"));
        }
        Ok(tag)
    }

    /// Decrypts one message and appends the plaintext to `out` without zero-filling the
    /// space first (the cipher writes every byte). Returns the tag. On failure `out` is
    /// left as it was.
    pub fn pull_append(&mut self, cipher: &[u8], out: &mut Vec<u8>) -> Result<u8, CryptoError> {
        if cipher.len() < SECRETSTREAM_ABYTES {
            return Err(CryptoError::SecretStream("message shorter than its tag"));
        }
        let mlen = cipher.len() - SECRETSTREAM_ABYTES;
        out.reserve(mlen);
        let at = out.len();
        let mut written = 0u64;
        let mut tag = 0u8;
        // SAFETY: `reserve` guarantees `mlen` writable bytes after `at`; libsodium writes
        // exactly `mlen` plaintext bytes there on success, and nothing is exposed on failure
        // because the length is only extended after a successful call.
        let rc = unsafe {
            ffi::crypto_secretstream_xchacha20poly1305_pull(
                &mut self.state,
                out.as_mut_ptr().add(at),
                &mut written,
                &mut tag,
                cipher.as_ptr(),
                cipher.len() as u64,
                std::ptr::null(),
                0,
            )
        };
        if rc != 0 || written != mlen as u64 {
            return Err(CryptoError::SecretStream("message failed authentication"));
        }
        // SAFETY: the `mlen` bytes after `at` were initialised by the successful pull.
        unsafe { out.set_len(at + mlen) };
        Ok(tag)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_keypair_is_deterministic_and_signs() {
        let kp = KeyPair::from_seed(&[7u8; 32]);
        assert_eq!(kp, KeyPair::from_seed(&[7u8; 32]));
        assert_eq!(&kp.secret_key[32..], &kp.public_key);
        let sig = kp.sign(b"hello");
        assert!(verify(&sig, b"hello", &kp.public_key));
        assert!(!verify(&sig, b"hellp", &kp.public_key));
        assert_eq!(KeyPair::from_secret_key(&kp.secret_key).unwrap(), kp);
    }

    #[test]
    fn ed25519_dh_agrees_both_ways() {
        let a = KeyPair::from_seed(&[1; 32]);
        let b = KeyPair::from_seed(&[2; 32]);
        let ab = scalarmult_ed25519_noclamp(&ed25519_scalar(&a.secret_key), &b.public_key).unwrap();
        let ba = scalarmult_ed25519_noclamp(&ed25519_scalar(&b.secret_key), &a.public_key).unwrap();
        assert_eq!(ab, ba);
        assert!(scalarmult_ed25519_noclamp(&[1; 32], &[0; 32]).is_err());
    }

    #[test]
    fn secretstream_round_trip_and_tamper() {
        let key = random_array::<32>();
        let (mut push, header) = SecretStreamPush::new(&key);
        let mut pull = SecretStreamPull::new(&key, &header).unwrap();
        for msg in [&b"one"[..], b"", &[9u8; 1000]] {
            let mut c = vec![0u8; msg.len() + SECRETSTREAM_ABYTES];
            push.push_into(msg, TAG_MESSAGE, &mut c);
            let mut p = vec![0u8; msg.len()];
            assert_eq!(pull.pull_into(&c, &mut p).unwrap(), TAG_MESSAGE);
            assert_eq!(p, msg);
        }
        let mut c = vec![0u8; 3 + SECRETSTREAM_ABYTES];
        push.push_into(b"abc", TAG_MESSAGE, &mut c);
        c[5] ^= 1;
        assert!(pull.pull_into(&c, &mut [0u8; 3]).is_err());
    }

    #[test]
    fn pull_append_matches_pull_into() {
        let key = random_array::<32>();
        let (mut push, header) = SecretStreamPush::new(&key);
        let mut pull = SecretStreamPull::new(&key, &header).unwrap();
        let msg = vec![0x5au8; 70_000];
        let mut c = vec![0u8; msg.len() + SECRETSTREAM_ABYTES];
        push.push_into(&msg, TAG_MESSAGE, &mut c);
        let mut out = b"prefix".to_vec();
        assert_eq!(pull.pull_append(&c, &mut out).unwrap(), TAG_MESSAGE);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..], &msg[..]);
        let mut bad = vec![0u8; 40];
        assert!(pull.pull_append(&bad, &mut out).is_err());
        bad.truncate(3);
        assert!(pull.pull_append(&bad, &mut out).is_err());
        assert_eq!(out.len(), 6 + msg.len());
    }

    #[test]
    fn aead_round_trip() {
        let key = [3u8; 32];
        let c = aead_encrypt(&key, 5, b"ad", b"plain");
        assert_eq!(aead_decrypt(&key, 5, b"ad", &c).unwrap(), b"plain");
        assert!(aead_decrypt(&key, 6, b"ad", &c).is_err());
        assert!(aead_decrypt(&key, 5, b"ad", &c[..10]).is_err());
    }
}
