//! Security-rule artifacts bought from other nodes: decoding never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_rules::SecurityRule;

fuzz_target!(|data: &[u8]| {
    let _ = SecurityRule::from_bytes(data);
});
