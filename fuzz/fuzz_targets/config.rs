//! Fuzz target: see `resolvd::fuzz::config_text`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| resolvd::fuzz::config_text(data));
