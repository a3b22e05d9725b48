//! Noise handshakes over Ed25519 keys, as the JS `noise-handshake` + `noise-curve-ed` do them.
//!
//! Protocol names are `Noise_XX_Ed25519_ChaChaPoly_BLAKE2b` and
//! `Noise_IK_Ed25519_ChaChaPoly_BLAKE2b`: the DH is Ed25519 scalar multiplication without
//! clamping (`crypto_scalarmult_ed25519_noclamp`) on the clamped SHA-512 scalar of the
//! local seed, HASHLEN is 64 (BLAKE2b-512) and HKDF is HMAC-BLAKE2b. snow cannot name an
//! Ed25519 DH, so this is a small state machine of our own. It is pure: ephemeral keys
//! come from the caller (or libsodium's RNG), nothing touches I/O.

use intercom_crypto::{
    aead_decrypt, aead_encrypt, blake2b_512, ed25519_scalar, scalarmult_ed25519_noclamp, KeyPair,
};

/// Length of the handshake hash and of the chaining key.
pub const HASHLEN: usize = 64;
/// Largest Noise message, ciphertext included.
pub const MAX_MESSAGE: usize = 65535;
const BLOCKLEN: usize = 128;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// The message was shorter than the pattern requires.
    #[error("handshake message too short")]
    Truncated,
    /// A handshake ciphertext failed authentication.
    #[error("handshake message failed authentication")]
    Decrypt,
    /// A remote key was not a usable Ed25519 point.
    #[error("invalid remote key for Diffie-Hellman")]
    InvalidKey,
    /// A message would exceed the Noise maximum of 65535 bytes.
    #[error("noise message exceeds 65535 bytes")]
    TooLarge,
    /// `send`/`recv` was called out of turn or after completion.
    #[error("handshake step out of order")]
    OutOfOrder,
    /// IK was started as initiator without the responder's static key.
    #[error("IK initiator needs the remote static key")]
    MissingRemoteStatic,
}

/// The handshake patterns the Holepunch stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Mutual authentication with static keys sent during the handshake (secret-stream).
    XX,
    /// The initiator already knows the responder's static key (HyperDHT connect).
    IK,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    E,
    S,
    EE,
    ES,
    SE,
    SS,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::XX => "Noise_XX_Ed25519_ChaChaPoly_BLAKE2b",
            Pattern::IK => "Noise_IK_Ed25519_ChaChaPoly_BLAKE2b",
        }
    }

    fn messages(self) -> &'static [&'static [Token]] {
        use Token::*;
        match self {
            Pattern::XX => &[&[E], &[E, EE, S, ES], &[S, SE]],
            Pattern::IK => &[&[E, ES, S, SS], &[E, EE, SE]],
        }
    }
}

/// What a completed handshake yields: transport keys, the handshake hash and both static keys.
#[derive(Clone, PartialEq, Eq)]
pub struct HandshakeResult {
    /// True for the side that sent the first message.
    pub is_initiator: bool,
    /// Key for what we send.
    pub tx: [u8; 32],
    /// Key for what we receive.
    pub rx: [u8; 32],
    /// The final handshake hash (channel binding).
    pub hash: [u8; HASHLEN],
    /// Our static public key.
    pub public_key: [u8; 32],
    /// The authenticated remote static public key.
    pub remote_public_key: [u8; 32],
}

impl std::fmt::Debug for HandshakeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeResult")
            .field("is_initiator", &self.is_initiator)
            .field("remote_public_key", &self.remote_public_key)
            .finish_non_exhaustive()
    }
}

/// A Noise handshake in progress.
pub struct Handshake {
    pattern: Pattern,
    initiator: bool,
    step: usize,
    s: KeyPair,
    e: Option<KeyPair>,
    rs: Option<[u8; 32]>,
    re: Option<[u8; 32]>,
    h: [u8; HASHLEN],
    ck: [u8; HASHLEN],
    k: Option<[u8; 32]>,
    n: u64,
    result: Option<HandshakeResult>,
}

impl Handshake {
    /// Starts a handshake. `remote_static` is required for an IK initiator and ignored otherwise.
    pub fn new(
        pattern: Pattern,
        initiator: bool,
        static_keypair: KeyPair,
        prologue: &[u8],
        remote_static: Option<[u8; 32]>,
    ) -> Result<Self, NoiseError> {
        let name = pattern.name().as_bytes();
        let mut h = [0u8; HASHLEN];
        h[..name.len()].copy_from_slice(name);
        let mut hs = Handshake {
            pattern,
            initiator,
            step: 0,
            s: static_keypair,
            e: None,
            rs: None,
            re: None,
            h,
            ck: h,
            k: None,
            n: 0,
            result: None,
        };
        hs.mix_hash(prologue);
        if pattern == Pattern::IK {
            // The responder's static key is pre-shared: both sides hash it.
            let rs_key = if initiator {
                let rs = remote_static.ok_or(NoiseError::MissingRemoteStatic)?;
                hs.rs = Some(rs);
                rs
            } else {
                hs.s.public_key
            };
            hs.mix_hash(&rs_key);
        }
        Ok(hs)
    }

    /// Uses `e` as the ephemeral key instead of a random one (for reproducible transcripts).
    pub fn set_ephemeral(&mut self, e: KeyPair) {
        self.e = Some(e);
    }

    /// True once the last message has been sent or received.
    pub fn is_complete(&self) -> bool {
        self.result.is_some()
    }

    /// True when the next step is ours to send.
    pub fn is_our_turn(&self) -> bool {
        !self.is_complete() && self.step.is_multiple_of(2) == self.initiator
    }

    /// The outcome, once complete.
    pub fn result(&self) -> Option<&HandshakeResult> {
        self.result.as_ref()
    }

    /// Our static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.s.public_key
    }

    /// The remote static key once known: from the start for an IK initiator, after the
    /// first message for an IK responder (HyperDHT's server firewall decides on it before
    /// answering), after the static key's message in XX.
    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.rs
    }

    /// The current handshake hash (final once complete).
    pub fn hash(&self) -> [u8; HASHLEN] {
        self.h
    }

    /// Writes our next handshake message carrying `payload`.
    pub fn send(&mut self, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if !self.is_our_turn() {
            return Err(NoiseError::OutOfOrder);
        }
        let tokens = self.pattern.messages()[self.step];
        let mut out = Vec::with_capacity(128 + payload.len());
        for &t in tokens {
            match t {
                Token::E => {
                    let e = self.e.get_or_insert_with(KeyPair::generate).public_key;
                    self.mix_hash(&e);
                    out.extend_from_slice(&e);
                }
                Token::S => {
                    let s = self.s.public_key;
                    let c = self.encrypt_and_hash(&s)?;
                    out.extend_from_slice(&c);
                }
                dh => self.mix_dh(dh)?,
            }
        }
        let c = self.encrypt_and_hash(payload)?;
        out.extend_from_slice(&c);
        self.advance();
        Ok(out)
    }

    /// Reads the remote's next handshake message and returns its payload.
    pub fn recv(&mut self, message: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if self.is_complete() || self.is_our_turn() {
            return Err(NoiseError::OutOfOrder);
        }
        if message.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        let tokens = self.pattern.messages()[self.step];
        let mut rest = message;
        for &t in tokens {
            match t {
                Token::E => {
                    let re = take32(&mut rest)?;
                    self.mix_hash(&re);
                    self.re = Some(re);
                }
                Token::S => {
                    let len = if self.k.is_some() { 48 } else { 32 };
                    if rest.len() < len {
                        return Err(NoiseError::Truncated);
                    }
                    let (c, tail) = rest.split_at(len);
                    rest = tail;
                    let plain = self.decrypt_and_hash(c)?;
                    let rs: [u8; 32] = plain
                        .as_slice()
                        .try_into()
                        .map_err(|_| NoiseError::Truncated)?;
                    self.rs = Some(rs);
                }
                dh => self.mix_dh(dh)?,
            }
        }
        let payload = self.decrypt_and_hash(rest)?;
        self.advance();
        Ok(payload)
    }

    fn advance(&mut self) {
        self.step += 1;
        if self.step == self.pattern.messages().len() {
            let [k1, k2] = hkdf2(&self.ck, &[]);
            let (tx, rx) = if self.initiator { (k1, k2) } else { (k2, k1) };
            let mut first = [0u8; 32];
            let mut second = [0u8; 32];
            first.copy_from_slice(&tx[..32]);
            second.copy_from_slice(&rx[..32]);
            self.result = Some(HandshakeResult {
                is_initiator: self.initiator,
                tx: first,
                rx: second,
                hash: self.h,
                public_key: self.s.public_key,
                remote_public_key: self.rs.unwrap_or_default(),
            });
            self.e = None;
            self.k = None;
        }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = blake2b_512(&[&self.h, data], None);
    }

    fn mix_dh(&mut self, token: Token) -> Result<(), NoiseError> {
        // Which of our keys and which of theirs each token combines, by role.
        let (local_static, remote_static) = match token {
            Token::EE => (false, false),
            Token::ES => (!self.initiator, self.initiator),
            Token::SE => (self.initiator, !self.initiator),
            Token::SS => (true, true),
            Token::E | Token::S => return Ok(()),
        };
        let local = if local_static {
            Some(&self.s)
        } else {
            self.e.as_ref()
        };
        let remote = if remote_static { self.rs } else { self.re };
        let (local, remote) = match (local, remote) {
            (Some(l), Some(r)) => (l, r),
            _ => return Err(NoiseError::OutOfOrder),
        };
        let dh = scalarmult_ed25519_noclamp(&ed25519_scalar(&local.secret_key), &remote)
            .map_err(|_| NoiseError::InvalidKey)?;
        let [ck, k] = hkdf2(&self.ck, &dh);
        self.ck = ck;
        let mut key = [0u8; 32];
        key.copy_from_slice(&k[..32]);
        self.k = Some(key);
        self.n = 0;
        Ok(())
    }

    fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let c = match &self.k {
            Some(k) => {
                let c = aead_encrypt(k, self.n, &self.h, plaintext);
                self.n += 1;
                c
            }
            None => plaintext.to_vec(),
        };
        if c.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        self.mix_hash(&c);
        Ok(c)
    }

    fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let p = match &self.k {
            Some(k) => {
                let p = aead_decrypt(k, self.n, &self.h, ciphertext)
                    .map_err(|_| NoiseError::Decrypt)?;
                self.n += 1;
                p
            }
            None => ciphertext.to_vec(),
        };
        self.mix_hash(ciphertext);
        Ok(p)
    }
}

fn take32(rest: &mut &[u8]) -> Result<[u8; 32], NoiseError> {
    if rest.len() < 32 {
        return Err(NoiseError::Truncated);
    }
    let (head, tail) = rest.split_at(32);
    *rest = tail;
    let mut out = [0u8; 32];
    out.copy_from_slice(head);
    Ok(out)
}

/// HMAC-BLAKE2b-512 over the concatenation of `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; HASHLEN] {
    let mut block = [0u8; BLOCKLEN];
    if key.len() > BLOCKLEN {
        block[..HASHLEN].copy_from_slice(&blake2b_512(&[key], None));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0u8; BLOCKLEN];
    let mut opad = [0u8; BLOCKLEN];
    for i in 0..BLOCKLEN {
        ipad[i] = block[i] ^ 0x36;
        opad[i] = block[i] ^ 0x5c;
    }
    let mut inner_parts: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
    inner_parts.push(&ipad);
    inner_parts.extend_from_slice(parts);
    let inner = blake2b_512(&inner_parts, None);
    blake2b_512(&[&opad, &inner], None)
}

/// Noise HKDF with two outputs (empty info, as `noise-handshake` uses it).
fn hkdf2(chaining_key: &[u8], input: &[u8]) -> [[u8; HASHLEN]; 2] {
    let prk = hmac(chaining_key, &[input]);
    let t1 = hmac(&prk, &[&[1u8]]);
    let t2 = hmac(&prk, &[&t1, &[2u8]]);
    [t1, t2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pattern: Pattern) -> (HandshakeResult, HandshakeResult, Vec<u8>) {
        let a = KeyPair::from_seed(&[1; 32]);
        let b = KeyPair::from_seed(&[2; 32]);
        let mut i = Handshake::new(pattern, true, a, b"prologue", Some(b.public_key)).unwrap();
        let mut r = Handshake::new(pattern, false, b, b"prologue", None).unwrap();
        let mut last_payload = Vec::new();
        let mut turn_i = true;
        while !(i.is_complete() && r.is_complete()) {
            let (from, to) = if turn_i {
                (&mut i, &mut r)
            } else {
                (&mut r, &mut i)
            };
            let m = from.send(b"payload").unwrap();
            last_payload = to.recv(&m).unwrap();
            turn_i = !turn_i;
        }
        (
            i.result().unwrap().clone(),
            r.result().unwrap().clone(),
            last_payload,
        )
    }

    #[test]
    fn xx_and_ik_agree_on_keys_and_hash() {
        for p in [Pattern::XX, Pattern::IK] {
            let (i, r, payload) = run(p);
            assert_eq!(payload, b"payload");
            assert_eq!(i.tx, r.rx);
            assert_eq!(i.rx, r.tx);
            assert_eq!(i.hash, r.hash);
            assert_eq!(i.remote_public_key, r.public_key);
            assert_eq!(r.remote_public_key, i.public_key);
        }
    }

    #[test]
    fn tampered_or_short_messages_fail_cleanly() {
        let a = KeyPair::from_seed(&[1; 32]);
        let b = KeyPair::from_seed(&[2; 32]);
        let mut i = Handshake::new(Pattern::XX, true, a, b"", None).unwrap();
        let mut r = Handshake::new(Pattern::XX, false, b, b"", None).unwrap();
        let m1 = i.send(b"").unwrap();
        assert_eq!(r.recv(&m1[..10]), Err(NoiseError::Truncated));
        let mut r2 =
            Handshake::new(Pattern::XX, false, KeyPair::from_seed(&[2; 32]), b"", None).unwrap();
        r2.recv(&m1).unwrap();
        let mut m2 = r2.send(b"").unwrap();
        m2[40] ^= 1;
        assert!(i.recv(&m2).is_err());
        assert_eq!(r.send(b"").err(), Some(NoiseError::OutOfOrder));
    }
}
