//! Sidechannel payload parsing and the full receive policy of a configured plane (entry,
//! welcomed, owner-only, proof-of-work and invite-only channels) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    intercom_sidechannel::fuzz_payload(data);
});
