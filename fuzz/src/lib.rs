//! Fixtures shared by the fuzz targets: a fixed network and ways to split one input into
//! several fields.

use secnet_types::{Allocation, Genesis, Keypair, Validator};

/// A four-validator network whose keys are derived from fixed labels.
pub fn genesis() -> Genesis {
    Genesis {
        chain_id: "fuzz".into(),
        genesis_time_ms: 0,
        allocations: vec![Allocation {
            account: Keypair::deterministic("fuzz", 0).account(),
            balance: 1_000,
        }],
        validators: (0..4)
            .map(|i| Validator {
                key: Keypair::deterministic("fuzz-validator", i).account(),
                address: format!("127.0.0.1:{}", 9000 + i),
                name: String::new(),
            })
            .collect(),
    }
}

/// Splits `data` into a selector byte and the rest (selector 0 for empty input).
pub fn selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => (0, data),
    }
}

/// Splits `data` into two fields: a two-byte big-endian length, that many bytes, the rest.
pub fn two_fields(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return (&[], data);
    };
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    rest.split_at(len)
}
