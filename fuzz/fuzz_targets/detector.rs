//! Learned detector files: decoding never panics, and a decoded detector encodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_ai::model::Detector;

fuzz_target!(|data: &[u8]| {
    if let Ok(detector) = Detector::from_bytes(data) {
        let bytes = detector.to_bytes().expect("a decoded detector encodes");
        assert!(Detector::from_bytes(&bytes).is_ok(), "and decodes again");
    }
});
