//! Transaction decoding never panics, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_types::SignedTransaction;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTransaction::decode_bytes(data) {
        assert_eq!(tx.to_bytes(), data, "the encoding is canonical");
        let _ = tx.verify_signature();
    }
});
