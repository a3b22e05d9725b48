//! Deterministic randomness: BLAKE2b-256 keyed by a 32-byte seed over a counter.
//!
//! Production nodes seed it from libsodium; tests pass a seed so a whole simulated
//! network replays identically. It feeds transaction ids, token secrets, the ephemeral
//! table id, tick offsets and random table picks.

/// A small counter-mode DRBG.
#[derive(Debug, Clone)]
pub struct Rng {
    key: [u8; 32],
    counter: u64,
    buf: [u8; 32],
    pos: usize,
}

impl Rng {
    /// A generator replaying the stream of `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Rng {
            key: seed,
            counter: 0,
            buf: [0; 32],
            pos: 32,
        }
    }

    /// A generator seeded from the operating system (libsodium `randombytes_buf`).
    pub fn from_entropy() -> Self {
        Self::from_seed(intercom_crypto::random_array())
    }

    /// Fills `out` with the next bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.pos == 32 {
                self.buf =
                    intercom_crypto::blake2b_256(&[&self.counter.to_le_bytes()], Some(&self.key));
                self.counter += 1;
                self.pos = 0;
            }
            *b = self.buf[self.pos];
            self.pos += 1;
        }
    }

    /// 32 random bytes.
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.fill(&mut out);
        out
    }

    /// A random u64.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A float in `[0, 1)`, like `Math.random()`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_seed() {
        let mut a = Rng::from_seed([1; 32]);
        let mut b = Rng::from_seed([1; 32]);
        let mut c = Rng::from_seed([2; 32]);
        let xa: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..10).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..10).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        assert!((0..1000).all(|_| a.below(7) < 7));
        assert!((0..1000).all(|_| (0.0..1.0).contains(&a.unit())));
    }
}
