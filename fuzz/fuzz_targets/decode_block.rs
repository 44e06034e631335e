//! Block decoding never panics; a decoded block is applied without panicking, and a block
//! whose body does not match its header is refused whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secnet_contract::State;
use secnet_types::{Allocation, Block, Genesis, Keypair};

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode_bytes(data) {
        assert_eq!(block.to_bytes(), data, "the encoding is canonical");
        let genesis = Genesis {
            chain_id: "fuzz".into(),
            genesis_time_ms: 0,
            allocations: vec![Allocation { account: Keypair::deterministic("fuzz", 0).account(), balance: 1_000 }],
            validators: vec![],
        };
        let mut state = State::genesis(&genesis);
        let before = state.state_root();
        if state.apply_block(&block).is_err() {
            assert_eq!(state.state_root(), before, "a refused block changes nothing");
        }
    }
});
