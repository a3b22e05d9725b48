//! Subnet entries: the entry decoder (what decodes re-encodes to itself), then the same
//! bytes as writer-log blocks through the linearizer and the built-in contract.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    intercom_subnet::entry::fuzz_entry(data);
    intercom_subnet::engine::fuzz_engine(
        data,
        Arc::new(intercom_contracts::builtin::BuiltinContract),
    );
});
