//! The answers a node gives clients that trust no node, built from the ledger.

use crate::store::Ledger;
use secnet_certified::{CertifiedHeader, CertifiedState, HexBytes};
use secnet_contract::StateKey;
use secnet_types::BlockHeader;

impl Ledger {
    /// The answer to a certified-state query about `keys`: the certified block `header`
    /// with its `certificate`, and a proof of each key (present or absent) as of the newest
    /// height whose state root the header commits to. `None` if the header commits to no
    /// height whose state this ledger still holds (see [`crate::RECENT_STATES`]).
    pub fn certified_state(
        &self,
        header: &BlockHeader,
        certificate: Vec<u8>,
        keys: &[StateKey],
    ) -> Option<CertifiedState> {
        let (height, _) = header.state.last()?;
        let snapshot = self.snapshot_at(height)?;
        Some(CertifiedState {
            certified: CertifiedHeader {
                header: HexBytes(header.to_bytes()),
                certificate: HexBytes(certificate),
            },
            height,
            proofs: keys.iter().map(|k| snapshot.prove(k)).collect(),
        })
    }
}
