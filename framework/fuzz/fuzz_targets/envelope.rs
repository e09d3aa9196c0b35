//! Differential fuzzing of the envelope scanner: it must accept exactly the frames
//! `serde_json::from_str::<serde_json::Value>` accepts (objects only), and find the same route,
//! `ref` and `data` in them (`switchboard::protocol::__fuzz::check` panics otherwise).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A text frame is UTF-8: the socket closes with 1007 on anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    switchboard::protocol::__fuzz::check(text, "type");
    switchboard::protocol::__fuzz::check(text, "meta.kind");
});
