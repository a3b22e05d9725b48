//! Every compact-encoding decoder on arbitrary bytes: errors are fine, panics are not, and
//! whatever decodes must re-encode to the bytes it was read from.
#![no_main]

use intercom_encoding::{Reader, Writer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let mut r = Reader::new(input);
    let mut w = Writer::new();
    let start = r.remaining();
    let ok = match selector % 16 {
        0 => r.uint().map(|v| { w.uint(v); }),
        1 => r.int().map(|v| { w.int(v); }),
        2 => r.buffer().map(|v| { w.buffer(v); }),
        3 => r.string().map(|v| { w.string(v); }),
        4 => r.json().map(|_| ()),
        5 => r.bool().map(|v| { w.bool(v); }),
        6 => r.array(|r| r.uint()).map(|v| { w.array(&v, |w, x| { w.uint(*x); }); }),
        7 => r.array(|r| r.buffer()).map(|v| { w.array(&v, |w, x| { w.buffer(x); }); }),
        8 => r.ip_address().map(|v| { w.ip_address(&v); }),
        9 => r.ipv4_address().map(|v| { w.ipv4_address(&v); }),
        10 => r.ipv6_address().map(|v| { w.ipv6_address(&v); }),
        11 => r.optional_buffer().map(|v| { w.optional_buffer(v); }),
        12 => r.fixed32().map(|v| { w.fixed(&v); }),
        13 => r.uint24().map(|v| { w.uint24(v); }),
        14 => r.float64().map(|v| { w.float64(v); }),
        _ => r.array(|r| r.string()).map(|v| { w.array(&v, |w, x| { w.string(x); }); }),
    };
    if ok.is_ok() && !w.is_empty() {
        let consumed = start - r.remaining();
        assert_eq!(w.as_slice(), &input[..consumed], "re-encoding differs");
    }
});
