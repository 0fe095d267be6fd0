//! Fuzz target: see `resolvd::fuzz::zone_text`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| resolvd::fuzz::zone_text(data));
