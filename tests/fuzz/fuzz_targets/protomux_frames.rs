//! protomux's frame decoder and channel state machine on arbitrary frame sequences.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    intercom_protomux::fuzz_frames(data);
});
