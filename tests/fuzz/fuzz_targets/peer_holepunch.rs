//! A PEER_HOLEPUNCH value from the network: the holepunch decoder, the secure-payload
//! decryption and the `holepunchPayload` decoder, with round trips of what decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| intercom_hyperdht::fuzz_holepunch(data));
