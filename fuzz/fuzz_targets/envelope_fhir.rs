//! Uploaded payloads: FHIR resources and bundles, JSON, security-rule documents and streamed
//! text. Validation never panics; a FHIR resource that validates names a resource type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_fuzz::selector;
use secnet_pdc::envelope::{Utf8Check, validate_structured};
use secnet_pdc::fhir;

fuzz_target!(|data: &[u8]| {
    let (which, data) = selector(data);
    match which % 5 {
        0 => {
            if let Ok(resource_type) = fhir::validate(data) {
                assert!(!resource_type.is_empty());
            }
        }
        1 => {
            let _ = fhir::decompose(data);
        }
        2 => {
            let _ = validate_structured("application/fhir+json", data);
        }
        3 => {
            let _ = validate_structured("application/json", data);
        }
        _ => {
            // Streamed text arrives in chunks that may split a character.
            let mut check = Utf8Check::default();
            let mut whole = true;
            for chunk in data.chunks(7) {
                if check.feed(chunk).is_err() {
                    whole = false;
                    break;
                }
            }
            let accepted = whole && check.finish().is_ok();
            assert_eq!(accepted, std::str::from_utf8(data).is_ok());
        }
    }
});
