//! What a verifying client and a joining validator take from untrusted nodes: a header with
//! its finalization certificate, a cosigned checkpoint note, and a state snapshot. Nothing
//! panics, and nothing unsigned by the genesis validators is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_certified::CommitteeVerifier;
use secnet_fuzz::{genesis, selector, two_fields};
use secnet_ledger::Snapshot;
use std::sync::LazyLock;

static GENESIS: LazyLock<secnet_types::Genesis> = LazyLock::new(genesis);
static VERIFIER: LazyLock<CommitteeVerifier> =
    LazyLock::new(|| CommitteeVerifier::from_genesis(&GENESIS).expect("a valid committee"));

fuzz_target!(|data: &[u8]| {
    let (which, data) = selector(data);
    match which % 3 {
        0 => {
            let (header, certificate) = two_fields(data);
            // No fuzzer input carries the fixed validators' signatures.
            assert!(VERIFIER.verify(header, certificate).is_err());
        }
        1 => {
            if let Ok(note) = std::str::from_utf8(data) {
                let validators: Vec<_> = GENESIS.validators.iter().map(|v| v.key).collect();
                assert!(secnet_certified::checkpoint::verify_cosigned(note, "fuzz", &validators, 3).is_err());
            }
        }
        _ => {
            let _ = Snapshot::read(data, &GENESIS, 1 << 20);
        }
    }
});
