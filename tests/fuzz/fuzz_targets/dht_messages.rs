//! Every UDP datagram decoder of the DHT: dht-rpc requests and responses, then every
//! HyperDHT message codec (which also re-encodes what decodes and checks the round trip).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    intercom_dht_rpc::fuzz_decode(data);
    intercom_hyperdht::fuzz_decode_all(data);
});
