//! Randomised round trips: every encoder's output decodes to the same value, spans exactly
//! `uint_len`/`encoded_len` bytes, and every truncation of it is an error (never a panic).

use intercom_encoding::{decode_exact, encode, uint_len, Reader, Writer};

/// xorshift64*: deterministic, dependency-free test randomness.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Numbers spread over every varint width.
    fn uint(&mut self) -> u64 {
        let bits = self.next() % 65;
        if bits == 64 {
            self.next()
        } else {
            self.next() & ((1u64 << bits) - 1)
        }
    }
}

#[test]
fn uints_and_ints_round_trip_at_every_width() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let n = rng.uint();
        let mut w = Writer::new();
        w.uint(n);
        assert_eq!(w.len(), uint_len(n));
        let bytes = w.into_vec();
        assert_eq!(Reader::new(&bytes).uint().unwrap(), n);
        for cut in 0..bytes.len() {
            assert!(Reader::new(&bytes[..cut]).uint().is_err());
        }
        let i = n as i64;
        let mut w = Writer::new();
        w.int(i);
        assert_eq!(Reader::new(w.as_slice()).int().unwrap(), i);
    }
}

#[test]
fn buffers_strings_and_arrays_round_trip() {
    let mut rng = Rng(42);
    for _ in 0..2_000 {
        let len = (rng.next() % 600) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let bytes = encode(&data);
        assert_eq!(decode_exact::<Vec<u8>>(&bytes).unwrap(), data);
        let text: String = data.iter().map(|b| char::from(b'a' + b % 26)).collect();
        assert_eq!(decode_exact::<String>(&encode(&text)).unwrap(), text);
        let list: Vec<u64> = (0..len % 40).map(|_| rng.uint()).collect();
        let mut w = Writer::new();
        w.array(&list, |w, x| {
            w.uint(*x);
        });
        let mut r = Reader::new(w.as_slice());
        assert_eq!(r.array(|r| r.uint()).unwrap(), list);
        assert!(r.is_empty());
    }
}

#[test]
fn non_canonical_varints_are_rejected() {
    for bytes in [
        &[0xfd, 0x05, 0x00][..],
        &[0xfe, 0xff, 0xff, 0x00, 0x00],
        &[0xff, 1, 0, 0, 0, 0, 0, 0, 0],
    ] {
        assert!(Reader::new(bytes).uint().is_err(), "{bytes:?}");
    }
}

#[test]
fn uint32_arrays_round_trip_and_reject_short_input() {
    // The bytes JS writes for `c.encode(c.uint32array, new Uint32Array([1, 0xdeadbeef]))`.
    let mut w = Writer::new();
    w.uint32_array(&[1, 0xdead_beef]);
    assert_eq!(w.as_slice(), [2, 1, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
    let mut r = Reader::new(w.as_slice());
    assert_eq!(r.uint32_array().unwrap(), [1, 0xdead_beef]);
    assert!(r.is_empty());
    for cut in 0..w.len() {
        assert!(Reader::new(&w.as_slice()[..cut]).uint32_array().is_err());
    }

    let mut rng = Rng(7);
    for _ in 0..500 {
        let list: Vec<u32> = (0..rng.next() % 300).map(|_| rng.next() as u32).collect();
        let mut w = Writer::new();
        w.uint32_array(&list);
        assert_eq!(w.len(), uint_len(list.len() as u64) + 4 * list.len());
        assert_eq!(Reader::new(w.as_slice()).uint32_array().unwrap(), list);
    }

    // A huge count is refused before anything is allocated.
    let mut huge = vec![0xff];
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(Reader::new(&huge).uint32_array().is_err());
}
