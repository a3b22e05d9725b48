//! A server's view of a PEER_HANDSHAKE value from the network: the handshake decoder, the
//! Noise IK responder and the `noisePayload` decoder, and a client's decoding of a reply.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| intercom_hyperdht::fuzz_handshake(data));
