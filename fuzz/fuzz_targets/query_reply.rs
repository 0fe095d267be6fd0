//! Fuzz target: see `resolvd::fuzz::query_and_reply`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| resolvd::fuzz::query_and_reply(data));
