//! The token strength rule: the bridge refuses to start with a token an attacker could guess.
//!
//! The rule (an addition: the JS bridge accepts any non-empty token). A token is accepted when all hold:
//!
//! 1. it is at least [`MIN_TOKEN_BYTES`] (16) bytes long;
//! 2. it has at least [`MIN_DISTINCT_CHARS`] (8) distinct characters (refuses `aaaaaaaaaaaaaaaa`, `abababab...`);
//! 3. its estimated entropy is at least [`MIN_TOKEN_BITS`] (128 bits = 16 bytes), where the estimate is
//!    `characters x log2(alphabet)` and the alphabet is the one the token looks drawn from: 16 when it is all hex
//!    digits (`0-9a-f` or `0-9A-F`), else the sum of the classes it uses: digits 10, lower-case 26, upper-case 26,
//!    other printable ASCII 33, anything else 128.
//!
//! So 32 hex characters (`openssl rand -hex 16`) pass with 128 bits, `openssl rand -hex 32` with 256 bits,
//! `openssl rand -base64 32` (44 characters) with about 262 bits; 20 random characters mixing all four ASCII
//! classes pass with 131 bits, while 16 such characters (105 bits), 31 hex characters (124 bits) and any
//! 15-byte token are refused. The estimate assumes random characters: it is an upper bound that catches short
//! and repetitive tokens, not a proof that a long passphrase is strong.

/// Shortest accepted token, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Fewest distinct characters in an accepted token.
pub const MIN_DISTINCT_CHARS: usize = 8;
/// Smallest accepted entropy estimate, in bits.
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// How to make a good token, for error messages.
pub const TOKEN_SUGGESTION: &str = "generate one with `openssl rand -hex 32` (or `head -c 32 /dev/urandom | xxd -p -c 64`), \
save it in a file readable only by you and pass --sc-bridge-token-file PATH (or set SC_BRIDGE_TOKEN)";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WeakToken {
    /// Shorter than [`MIN_TOKEN_BYTES`].
    #[error("the token is {0} bytes long; at least {MIN_TOKEN_BYTES} bytes are required")]
    TooShort(usize),
    /// Fewer than [`MIN_DISTINCT_CHARS`] distinct characters.
    #[error(
        "the token has only {0} distinct characters; at least {MIN_DISTINCT_CHARS} are required"
    )]
    Repetitive(usize),
    /// The entropy estimate is under [`MIN_TOKEN_BITS`].
    #[error("the token carries an estimated {0:.0} bits of entropy; at least {MIN_TOKEN_BITS:.0} (16 random bytes) are required")]
    LowEntropy(f64),
}

/// The entropy estimate of the rule above, in bits.
pub fn estimated_bits(token: &str) -> f64 {
    let chars = token.chars().count();
    if chars == 0 {
        return 0.0;
    }
    let hex_lower = token
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    let hex_upper = token
        .chars()
        .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c));
    let alphabet: u32 = if hex_lower || hex_upper {
        16
    } else {
        let has = |f: fn(&char) -> bool| token.chars().any(|c| f(&c));
        let mut a = 0;
        if has(char::is_ascii_digit) {
            a += 10;
        }
        if has(char::is_ascii_lowercase) {
            a += 26;
        }
        if has(char::is_ascii_uppercase) {
            a += 26;
        }
        if has(|c| c.is_ascii_punctuation() || *c == ' ') {
            a += 33;
        }
        if has(|c| !c.is_ascii() || c.is_ascii_control()) {
            a += 128;
        }
        a
    };
    chars as f64 * f64::from(alphabet.max(2)).log2()
}

/// Checks `token` against the rule above; `Ok` with the estimate in bits.
pub fn check_token(token: &str) -> Result<f64, WeakToken> {
    if token.len() < MIN_TOKEN_BYTES {
        return Err(WeakToken::TooShort(token.len()));
    }
    let mut distinct: Vec<char> = token.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return Err(WeakToken::Repetitive(distinct.len()));
    }
    let bits = estimated_bits(token);
    if bits < MIN_TOKEN_BITS {
        return Err(WeakToken::LowEntropy(bits));
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples() {
        // 15 bytes, whatever they are.
        assert_eq!(check_token("Ab3$Ab3$Ab3$Ab3"), Err(WeakToken::TooShort(15)));
        assert_eq!(check_token("0123456789abcde"), Err(WeakToken::TooShort(15)));
        assert_eq!(check_token("secret"), Err(WeakToken::TooShort(6)));
        assert_eq!(
            check_token("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Err(WeakToken::Repetitive(1))
        );
        // 32 hex = 128 bits; 31 = 124.
        let hex32 = "3f9c0b7e21d84a6f5c0e9b1a7d2f4e68";
        assert_eq!(check_token(hex32), Ok(128.0));
        assert!(matches!(
            check_token(&hex32[..31]),
            Err(WeakToken::LowEntropy(_))
        ));
        assert_eq!(check_token(&hex32.to_uppercase()), Ok(128.0));
        // 64 hex (openssl rand -hex 32).
        assert_eq!(check_token(&hex32.repeat(2)), Ok(256.0));
        // Mixed classes: 20 pass, 16 do not.
        assert!(check_token("k#9Qw!2Lp@7Zx$4Rt%6Y").is_ok());
        assert!(matches!(
            check_token("k#9Qw!2Lp@7Zx$4R"),
            Err(WeakToken::LowEntropy(_))
        ));
        // A base64 token of 32 random bytes.
        assert!(check_token("q3Vx9K0bR2m8T5nW1cY7zP4sL6fH0dJ8aG2eU5iO3k=").is_ok());
        // The test suites' tokens.
        assert!(check_token("test-token-0123456789").is_ok());
    }
}
