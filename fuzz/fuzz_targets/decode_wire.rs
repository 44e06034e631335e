//! The binary encodings validators and nodes exchange or store: headers, receipts, stored
//! blocks, binary transaction batches, access-log entries, journaled access decisions and
//! state entries. Decoding never
//! panics, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_contract::{LogEntry, StateKey, StateValue};
use secnet_fuzz::{selector, two_fields};
use secnet_ledger::StoredBlock;
use secnet_types::{AccessEntry, BlockHeader, Receipt};

fuzz_target!(|data: &[u8]| {
    let (which, data) = selector(data);
    match which % 7 {
        0 => {
            if let Ok(h) = BlockHeader::decode_bytes(data) {
                assert_eq!(h.to_bytes(), data, "the encoding is canonical");
            }
        }
        1 => {
            if let Ok(r) = Receipt::decode_bytes(data) {
                assert_eq!(r.to_bytes(), data, "the encoding is canonical");
            }
        }
        2 => {
            if let Ok(b) = StoredBlock::from_bytes(data) {
                assert_eq!(b.to_bytes(), data, "the encoding is canonical");
            }
        }
        3 => {
            if let Ok(txs) = secnet_api::txs::decode_batch(data, 64) {
                assert!(txs.len() <= 64, "the batch bound holds");
            }
        }
        4 => {
            if let Ok(e) = LogEntry::from_bytes(data) {
                assert_eq!(e.to_bytes(), data, "the encoding is canonical");
            }
        }
        5 => {
            if let Ok(e) = AccessEntry::decode_bytes(data) {
                assert_eq!(e.to_bytes(), data, "the encoding is canonical");
            }
        }
        _ => {
            let (key, value) = two_fields(data);
            if let Ok(k) = StateKey::from_bytes(key) {
                assert_eq!(k.to_bytes(), key, "the key encoding is canonical");
                if let Ok(v) = StateValue::from_bytes(&k, value) {
                    assert_eq!(v.to_bytes(), value, "the value encoding is canonical");
                }
            }
        }
    }
});
