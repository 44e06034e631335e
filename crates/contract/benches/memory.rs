//! What the state tree costs in memory per entry, and what updating it costs.
//!
//! The tree grows block by block (2,000 new entries each, keeping the last eight versions
//! as a node keeps recent ones for proofs) to as many entries as the given items make —
//! five per item, of the kinds the measured workload writes: a listing and its address, a
//! subscription, two grants, with the values that mix writes — and the growth of the
//! process's resident memory is printed per entry (with the allocator the node uses, its
//! rounding included). Then 600,000
//! updates (half of them new keys) are timed. JSON on standard output. `cargo bench -p
//! secnet-contract --bench memory [-- ITEMS]` (200,000 items by default).

use secnet_contract::{AccessGrant, Listing, StateKey, StateValue, Subscription};
use secnet_merkle::smt::SparseMerkleTree;
use secnet_types::{AccountId, DataKind, Hash};
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// This process's resident memory, in bytes (Linux).
fn resident() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

fn h(i: u64, tag: u8) -> Hash {
    Hash::digest_parts(&[b"bench-memory", &i.to_be_bytes(), &[tag]])
}

/// The five entries of item `i`.
fn item(i: u64) -> [(StateKey, StateValue); 5] {
    let owner = AccountId(h(i % 64, 0).0);
    let listing = Listing {
        id: h(i, 1),
        hash: h(i, 2),
        owner,
        holder: owner,
        holder_share_bps: 2_500,
        description: format!("bench record {}/new/{i}", i % 64),
        address: format!("pdc://bench/{}/new/{i}", i % 64),
        price: 100,
        kind: DataKind::UserData,
        registered_at: i,
    };
    let grant = |tag| AccessGrant {
        id: h(i, tag),
        data: listing.hash,
        address: listing.address.clone(),
        requester: owner,
        holder: owner,
        purpose: "treatment".into(),
        issued_at_ms: i,
        expires_at_ms: i + 3_600_000,
        log_index: i,
    };
    [
        (
            StateKey::Address(listing.address.clone()),
            StateValue::Address(listing.hash),
        ),
        (
            StateKey::Subscription(listing.hash, owner),
            StateValue::Subscription(Subscription {
                listing: listing.id,
                paid: 100,
                height: i,
            }),
        ),
        (StateKey::Grant(h(i, 3)), StateValue::Grant(grant(3))),
        (StateKey::Grant(h(i, 4)), StateValue::Grant(grant(4))),
        (
            StateKey::Listing(listing.hash),
            StateValue::Listing(listing),
        ),
    ]
}

/// A tree of the state's kind: each leaf keeps its entry's value bytes.
type Tree = SparseMerkleTree<Arc<[u8]>>;

/// Applies `entries` to `tree` as blocks of 2,000, keeping the last eight versions.
fn apply_in_blocks(
    tree: &mut Tree,
    versions: &mut Vec<Tree>,
    entries: impl Iterator<Item = ([u8; 32], Arc<[u8]>)>,
) {
    let mut block = Vec::with_capacity(2_000);
    let mut flush = |tree: &mut Tree, block: &mut Vec<_>| {
        versions.push(tree.clone());
        if versions.len() > 8 {
            versions.remove(0);
        }
        tree.apply_with(std::mem::take(block));
    };
    for (key, value) in entries {
        let value_hash = Hash::digest(&value).0;
        block.push((key, Some((value_hash, value))));
        if block.len() == 2_000 {
            flush(tree, &mut block);
        }
    }
    if !block.is_empty() {
        flush(tree, &mut block);
    }
}

fn main() -> Result<(), String> {
    let items: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let entries = move || {
        (0..items)
            .flat_map(item)
            .map(|(key, value)| (key.tree_key().0, Arc::<[u8]>::from(value.to_bytes())))
    };
    let sampled: Vec<usize> = entries().take(5_000).map(|(_, v)| v.len()).collect();

    let mut tree = Tree::default();
    let mut versions = Vec::new();
    let before = resident();
    apply_in_blocks(&mut tree, &mut versions, entries());
    let grown = resident().zip(before).map(|(after, before)| after - before);
    let count = tree.len();
    let root = Hash(tree.root());

    let updates = 600_000u64;
    let start = Instant::now();
    apply_in_blocks(
        &mut tree,
        &mut versions,
        (0..updates).map(|n| {
            // Even: an existing entry gets a new value; odd: a new key.
            let key = if n % 2 == 0 {
                item(n / 2 % items.max(1))[0].0.tree_key().0
            } else {
                h(n, 9).0
            };
            (key, Arc::from(vec![(n % 251) as u8; 131]))
        }),
    );
    let update_seconds = start.elapsed().as_secs_f64();

    let json = serde_json::json!({
        "bench": "state tree memory",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "entries": count,
        "value_bytes_mean": sampled.iter().sum::<usize>() as f64 / sampled.len().max(1) as f64,
        "resident_bytes_per_entry": grown.map(|g| g / count.max(1) as f64),
        "root": root.to_string(),
        "tree_updates": updates,
        "tree_update_seconds": update_seconds,
        "root_after_updates": Hash(tree.root()).to_string(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?
    );
    Ok(())
}
