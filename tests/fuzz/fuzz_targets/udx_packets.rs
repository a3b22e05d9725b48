//! UDX datagrams as a stream receives them: header, SACK ranges and payload decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| intercom_udx::fuzz_decode(data));
