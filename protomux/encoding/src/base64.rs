//! Base64 as the JS stack writes and reads it: standard padded output (what
//! `b4a.toString(buf, 'base64')` writes) and Node's lenient `Buffer.from(s, 'base64')`
//! input, which welcomes and invites travel in.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard padded base64.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Node's `Buffer.from(s, 'base64')`: both alphabets (`+/` and `-_`), any other character
/// skipped, decoding stops at the first `=`, a trailing partial byte is dropped. Never
/// fails: garbage decodes to some bytes, which the caller then has to validate.
pub fn decode_lenient(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_decoding_matches_node() {
        assert_eq!(decode_lenient("aGVsbG8="), b"hello");
        assert_eq!(decode_lenient("aGVs bG8"), b"hello");
        assert_eq!(decode_lenient("aGV*sbG8=extra"), b"hello");
        assert_eq!(decode_lenient("a-_b"), vec![0x6b, 0xef, 0xdb]);
        assert_eq!(decode_lenient("abc"), vec![0x69, 0xb7]);
        assert_eq!(decode_lenient("a"), Vec::<u8>::new());
        assert_eq!(decode_lenient(""), Vec::<u8>::new());
    }

    #[test]
    fn encode_round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            assert_eq!(decode_lenient(&encode(s.as_bytes())), s.as_bytes());
        }
        assert_eq!(encode(b"fo"), "Zm8=");
    }
}
