//! Owners' Cedar policy documents: checking never panics, and a document that passes is
//! read back with the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_policy::Engine;
use std::sync::LazyLock;

static ENGINE: LazyLock<Engine> = LazyLock::new(|| Engine::new(500_000).expect("the built-in policies"));

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(policies) = ENGINE.check(text) {
            assert_eq!(policies.text(), text);
        }
    }
});
