//! The answers a node gives clients that trust no node, built from the ledger.

use crate::store::Ledger;
use secnet_certified::{CertifiedHeader, CertifiedState, HexBytes};
use secnet_contract::StateKey;
use secnet_types::BlockHeader;

/// How many of the latest blocks are searched for one with a certificate: a block finalized
/// only through a descendant has none of its own.
pub const CERTIFIED_SEARCH: u64 = 16;

impl Ledger {
    /// The headers of the last [`CERTIFIED_SEARCH`] blocks at or below `tip`, newest first,
    /// that commit to a state this ledger still holds: the first of them whose block has a
    /// certificate of its own makes the freshest certified-state answer.
    pub fn answerable_headers(&self, tip: u64) -> Vec<BlockHeader> {
        (tip.saturating_sub(CERTIFIED_SEARCH).max(1)..=tip)
            .rev()
            .filter_map(|height| {
                let header = self.header(height).ok()??;
                let (state_height, _) = header.state.last()?;
                self.snapshot_at(state_height).map(|_| header)
            })
            .collect()
    }

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
