//! Every `hypercore/alpha` decoder: the ten channel messages by protomux type, the channel
//! handshake, manifests and both multisig formats (each value that decodes is re-encoded
//! and must decode back to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    intercom_log::wire::fuzz_messages(data);
});
