//! Fuzz target: see `resolvd::fuzz::upstream_reply`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| resolvd::fuzz::upstream_reply(data));
