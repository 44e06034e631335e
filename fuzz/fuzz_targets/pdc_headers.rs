//! The headers a PDC reads before anything else: SecNet-Auth, fetch proofs, access tokens,
//! content digests, and sealed data keys read back from disk. Parsing never panics, and a
//! token nobody signed never opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_fuzz::selector;
use secnet_pdc::SealedKey;
use secnet_pdc::access::{AccessToken, FetchProof};
use secnet_pdc::auth::{RequestAuth, parse_content_digest};
use secnet_types::Keypair;

fuzz_target!(|data: &[u8]| {
    let (which, data) = selector(data);
    if which % 5 == 4 {
        let _ = SealedKey::from_bytes(data);
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(auth) = RequestAuth::from_header(text) {
                assert_eq!(RequestAuth::from_header(&auth.to_header()).map(|a| a.to_header()).ok(), Some(auth.to_header()));
            }
        }
        1 => {
            if let Ok(proof) = FetchProof::from_header(text) {
                assert!(FetchProof::from_header(&proof.to_header()).is_ok());
            }
        }
        2 => {
            let holder = Keypair::deterministic("fuzz-holder", 0).account();
            assert!(AccessToken::open(text, &holder).is_err(), "an unsigned token opened");
        }
        _ => {
            let _ = parse_content_digest(text);
        }
    }
});
