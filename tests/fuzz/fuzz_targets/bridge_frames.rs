//! SC-Bridge input on arbitrary text: the request parser, the invite/welcome decoder (JSON
//! or base64) and the filter syntax. Errors are fine; panics are not.
#![no_main]

use intercom_sc_bridge::protocol::{parse_frame, parse_json_or_base64};
use intercom_sc_bridge::Filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_frame(text);
    let _ = parse_json_or_base64(&serde_json::Value::String(text.to_owned()));
    let filter = Filter::parse(text);
    let _ = filter.matches(text);
});
