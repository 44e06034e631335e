//! The single development node the node's tests start, and its genesis.

use secnet_node::dev::ProducerConfig;
use secnet_types::{Genesis, Keypair};
use std::path::Path;
use std::time::Duration;

/// A genesis of network `chain`, begun a second ago, with no validators, funding each of
/// `funded` with `balance`.
pub fn funding(chain: &str, funded: &[&Keypair], balance: u64) -> Genesis {
    Genesis::single_node(
        chain,
        secnet_node::datadir::now_ms() - 1_000,
        funded.iter().map(|k| k.account()),
        balance,
    )
}

/// A development node of `genesis` in `dir`, run by `key`, making a block every
/// `block_interval`, over HTTPS on loopback with a certificate from its own authority, which
/// this process then trusts.
pub async fn dev_node(
    dir: &Path,
    genesis: &Genesis,
    key: Keypair,
    block_interval: Duration,
) -> secnet_node::RunningNode {
    let listen = "127.0.0.1:0".parse().unwrap();
    let transport = secnet_node::tls::dev_transport(dir, listen, &Default::default())
        .unwrap()
        .0;
    secnet_node::start_dev(
        dir,
        genesis,
        key,
        listen,
        transport,
        ProducerConfig {
            block_interval,
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap()
}
