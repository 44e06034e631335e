//! Keys and genesis the ledger's tests share.

use secnet_types::{Allocation, Genesis, Keypair};

/// `n` deterministic keys of network `chain`.
pub fn keys(chain: &str, n: u64) -> Vec<Keypair> {
    (0..n).map(|i| Keypair::deterministic(chain, i)).collect()
}

/// A genesis of network `chain` funding the first `n` of its [`keys`], with no validators.
pub fn genesis(chain: &str, n: u64) -> Genesis {
    Genesis {
        chain_id: chain.into(),
        genesis_time_ms: 1_000,
        allocations: keys(chain, n)
            .iter()
            .map(|k| Allocation {
                account: k.account(),
                balance: 1_000_000,
            })
            .collect(),
        validators: vec![],
    }
}
