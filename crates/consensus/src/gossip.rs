//! Transaction gossip: a transaction admitted by one validator is sent to all others, which
//! admit it to their own mempools after the same checks. A peer that sends bytes that are not
//! a transaction is blocked.

use crate::chain::Chain;
use commonware_codec::{Copying, Decode as _, Encode as _, RangeCfg};
use commonware_cryptography::ed25519;
use commonware_p2p::{Blocker, Receiver, Recipients, Sender};
use commonware_runtime::{Handle, Spawner};
use futures::StreamExt as _;
use futures::channel::mpsc;
use secnet_types::SignedTransaction;
use std::sync::Arc;

/// Publishes transactions to the other validators.
#[derive(Debug, Clone)]
pub struct TxGossip {
    sender: mpsc::UnboundedSender<Vec<u8>>,
}

/// Most transactions in one gossip message.
pub const MAX_GOSSIP_BATCH: usize = 1_024;

impl TxGossip {
    /// Sends `txs` (at most [`MAX_GOSSIP_BATCH`] per message) to every other validator.
    pub fn publish(&self, txs: &[SignedTransaction]) {
        for chunk in txs.chunks(MAX_GOSSIP_BATCH) {
            let _ = self.sender.unbounded_send(chunk.to_vec().encode().to_vec());
        }
    }
}

fn decode_batch(bytes: &[u8]) -> Result<Vec<SignedTransaction>, commonware_codec::Error> {
    Vec::<SignedTransaction>::decode_cfg(
        Copying(bytes),
        &(RangeCfg::from(1..=MAX_GOSSIP_BATCH), ()),
    )
}

/// Starts the gossip tasks on the transaction channel.
pub fn start_gossip<E, B, S, R>(
    context: E,
    chain: Arc<Chain>,
    mut blocker: B,
    (mut sender, mut receiver): (S, R),
) -> (TxGossip, Vec<Handle<()>>)
where
    E: Spawner,
    B: Blocker<PublicKey = ed25519::PublicKey>,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
{
    let (tx, mut rx) = mpsc::unbounded::<Vec<u8>>();
    let outbound = context.child("gossip_out").spawn(move |_| async move {
        while let Some(bytes) = rx.next().await {
            let _ = sender.send(Recipients::All, bytes, false);
        }
    });
    let inbound = context.child("gossip_in").spawn(move |_| async move {
        while let Ok((peer, message)) = receiver.recv().await {
            match decode_batch(message.as_ref()) {
                Ok(txs) => {
                    for tx in txs {
                        if let Err(e) = chain.submit(tx) {
                            tracing::error!(error = %e, "gossip stopped");
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "peer sent garbage on the transaction channel; blocking it");
                    let _ = blocker.block(peer);
                }
            }
        }
    });
    (TxGossip { sender: tx }, vec![outbound, inbound])
}
