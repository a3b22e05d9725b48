//! The sidechannel dedupe cache against a plain model: ids inserted with a timestamp are
//! found until it leaves the freshness window and gone one bucket later; the cap is never
//! exceeded and an insert is refused only when the cache is full (never by evicting).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    intercom_sidechannel::fuzz_dedupe(data);
});
