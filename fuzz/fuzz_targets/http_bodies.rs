//! JSON bodies: what the node's routes read (transaction submissions, token requests, access
//! asks) and what the verifying client reads from nodes it does not trust. Parsing never
//! panics, and whatever parses serialises and parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_api::{audit, chain, pdc, txs};
use secnet_fuzz::selector;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_slice(&serde_json::to_vec(&value).expect("serialises"))
            .expect("parses back");
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    let (which, data) = selector(data);
    match which % 12 {
        0 => round_trip::<txs::SubmitTx>(data),
        1 => round_trip::<txs::SubmitTxs>(data),
        2 => round_trip::<pdc::TokenRequest>(data),
        3 => round_trip::<pdc::AccessAsk>(data),
        4 => round_trip::<chain::HeaderAnswer>(data),
        5 => round_trip::<chain::BlockAnswer>(data),
        6 => round_trip::<chain::AccountAnswer>(data),
        7 => round_trip::<chain::ListingAnswer>(data),
        8 => round_trip::<chain::GrantAnswer>(data),
        9 => round_trip::<txs::TxStatusAnswer>(data),
        10 => round_trip::<audit::LogPage>(data),
        _ => round_trip::<pdc::DataAnswer>(data),
    }
});
