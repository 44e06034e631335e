//! Gossip between validators on the transaction channel: a transaction admitted by one
//! validator is sent to all others, which admit it to their own mempools after the same
//! checks; each validator announces its executed height once a second, so that any node
//! can report how far its peers are, and its newest cosignature of the access log's head
//! (`tlog-cosignature` v1), so that every node can serve a head a quorum cosigned. A peer
//! that sends a malformed message of a known kind, a cosignature that does not verify, or a
//! transaction of another chain or not signed by its sender (which no validator admits, so
//! no honest one relays), is blocked; a message of a kind this version does not know is
//! ignored (a peer may run a newer version); cosignatures beyond
//! [`MAX_COSIGNATURES_PER_INTERVAL`] per peer and interval are dropped unread.

use crate::chain::Chain;
use crate::executor::unix_seconds;
use commonware_codec::{Copying, Decode as _, Encode as _, RangeCfg};
use commonware_cryptography::ed25519;
use commonware_p2p::{Blocker, Receiver, Recipients, Sender};
use commonware_runtime::{Clock, Handle, Spawner};
use futures::StreamExt as _;
use futures::channel::mpsc;
use secnet_certified::checkpoint::log_origin;
use secnet_certified::{Checkpoint, CosignRejected, Cosignature};
use secnet_types::{AccountId, Hash, Signature, SignedTransaction};
use std::sync::Arc;
use std::time::Duration;

/// Publishes transactions to the other validators.
#[derive(Debug, Clone)]
pub struct TxGossip {
    sender: mpsc::UnboundedSender<Vec<u8>>,
}

/// Most transactions in one gossip message.
pub const MAX_GOSSIP_BATCH: usize = 1_024;

/// How often a validator announces its height.
pub const HEIGHT_INTERVAL: Duration = Duration::from_secs(1);

const TAG_TXS: u8 = 0;
const TAG_HEIGHT: u8 = 1;
const TAG_COSIGNATURE: u8 = 2;

/// Most cosignatures read from one peer per [`HEIGHT_INTERVAL`] (an honest validator sends
/// its newest once per interval, plus those its executor made in between).
pub const MAX_COSIGNATURES_PER_INTERVAL: u32 = 40;

/// Length of a cosignature message after its tag: size, root, time, signature.
const COSIGNATURE_LEN: usize = 8 + 32 + 8 + 64;

/// One gossip message.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    /// A kind this version does not know.
    Unknown(u8),
    /// Transactions the sender admitted.
    Txs(Vec<SignedTransaction>),
    /// The sender's executed height.
    Height(u64),
    /// The sender's cosignature of the log head of this size and root (the log's origin is
    /// the network's).
    Cosignature {
        tree_size: u64,
        root: Hash,
        time: u64,
        signature: Signature,
    },
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Txs(txs) => {
                let mut out = vec![TAG_TXS];
                out.extend_from_slice(&txs.encode());
                out
            }
            Message::Height(h) => {
                let mut out = vec![TAG_HEIGHT];
                out.extend_from_slice(&h.to_be_bytes());
                out
            }
            Message::Unknown(tag) => vec![*tag],
            Message::Cosignature {
                tree_size,
                root,
                time,
                signature,
            } => {
                let mut out = Vec::with_capacity(1 + COSIGNATURE_LEN);
                out.push(TAG_COSIGNATURE);
                out.extend_from_slice(&tree_size.to_be_bytes());
                out.extend_from_slice(root.as_bytes());
                out.extend_from_slice(&time.to_be_bytes());
                out.extend_from_slice(&signature.0);
                out
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Message, String> {
        match bytes.split_first() {
            Some((&TAG_TXS, rest)) => Vec::<SignedTransaction>::decode_cfg(
                Copying(rest),
                &(RangeCfg::from(1..=MAX_GOSSIP_BATCH), ()),
            )
            .map(Message::Txs)
            .map_err(|e| e.to_string()),
            Some((&TAG_HEIGHT, rest)) => <[u8; 8]>::try_from(rest)
                .map(|b| Message::Height(u64::from_be_bytes(b)))
                .map_err(|_| format!("height message of {} bytes, expected 8", rest.len())),
            Some((&TAG_COSIGNATURE, rest)) => {
                if rest.len() != COSIGNATURE_LEN {
                    return Err(format!(
                        "cosignature message of {} bytes, expected {COSIGNATURE_LEN}",
                        rest.len()
                    ));
                }
                let (size, rest) = rest.split_at(8);
                let (root, rest) = rest.split_at(32);
                let (time, signature) = rest.split_at(8);
                let array = |b: &[u8]| -> [u8; 8] { b.try_into().unwrap_or([0; 8]) };
                Ok(Message::Cosignature {
                    tree_size: u64::from_be_bytes(array(size)),
                    root: Hash(root.try_into().unwrap_or([0; 32])),
                    time: u64::from_be_bytes(array(time)),
                    signature: Signature(signature.try_into().unwrap_or([0; 64])),
                })
            }
            Some((tag, _)) => Ok(Message::Unknown(*tag)),
            None => Err("empty message".into()),
        }
    }
}

impl TxGossip {
    /// Sends `txs` (at most [`MAX_GOSSIP_BATCH`] per message) to every other validator.
    pub fn publish(&self, txs: &[SignedTransaction]) {
        for chunk in txs.chunks(MAX_GOSSIP_BATCH) {
            let _ = self
                .sender
                .unbounded_send(Message::Txs(chunk.to_vec()).encode());
        }
    }
}

/// Starts the gossip tasks on the transaction channel.
pub fn start_gossip<E, B, S, R>(
    context: E,
    chain: Arc<Chain>,
    mut blocker: B,
    (mut sender, mut receiver): (S, R),
) -> (TxGossip, Vec<Handle<()>>)
where
    E: Spawner + Clock,
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
    let announcer = {
        let chain = chain.clone();
        let out = tx.clone();
        context
            .child("gossip_height")
            .spawn(move |context| async move {
                let mut last = None;
                loop {
                    let Ok(height) = chain.executed_height() else {
                        return;
                    };
                    if out
                        .unbounded_send(Message::Height(height).encode())
                        .is_err()
                    {
                        return;
                    }
                    // Idle for an interval: every validator has executed the same head, so
                    // cosign it. Under load, the executor cosigns at fixed heights.
                    let own = if last == Some(height) {
                        chain.cosign_head(unix_seconds(&context))
                    } else {
                        chain.own_cosignature()
                    };
                    let (Ok(own), Ok(made)) = (own, chain.take_outbox()) else {
                        return;
                    };
                    // Every head the executor cosigned since the last interval (so that a
                    // quorum forms on the same heads under load), then the newest again
                    // (for peers that restarted or lost it).
                    for (checkpoint, cosignature) in made.into_iter().chain(own) {
                        let message = Message::Cosignature {
                            tree_size: checkpoint.tree_size,
                            root: checkpoint.root_hash,
                            time: cosignature.time,
                            signature: cosignature.signature,
                        };
                        if out.unbounded_send(message.encode()).is_err() {
                            return;
                        }
                    }
                    last = Some(height);
                    context.sleep(HEIGHT_INTERVAL).await;
                }
            })
    };
    let inbound = context
        .child("gossip_in")
        .spawn(move |context| async move {
            // Cosignatures read per peer in the current interval.
            let mut budget: std::collections::HashMap<ed25519::PublicKey, (std::time::SystemTime, u32)> =
                std::collections::HashMap::new();
            while let Ok((peer, message)) = receiver.recv().await {
                if message.as_ref().first() == Some(&TAG_COSIGNATURE) {
                    let now = context.current();
                    let used = budget.entry(peer.clone()).or_insert((now, 0));
                    if now.duration_since(used.0).unwrap_or_default() >= HEIGHT_INTERVAL {
                        *used = (now, 0);
                    }
                    used.1 += 1;
                    if used.1 > MAX_COSIGNATURES_PER_INTERVAL {
                        continue;
                    }
                }
                match Message::decode(message.as_ref()) {
                    Ok(Message::Txs(txs)) => {
                        // A validator relays only transactions it admitted, and whether a
                        // transaction names this chain, or its signature verifies, depends on
                        // no one's state: a batch with one that fails either was not relayed
                        // honestly. It is dropped whole and its sender blocked, whatever
                        // else admission would have said of it (a used nonce, a full pool).
                        if let Some(t) = txs.iter().find(|t| t.tx().chain_id != chain.chain_id()) {
                            tracing::warn!(%peer, chain = %t.tx().chain_id, "peer relayed another chain's transaction; blocking it");
                            let _ = blocker.block(peer);
                            continue;
                        }
                        let valid = secnet_types::verify_signatures(&txs);
                        if let Some(t) = txs.iter().zip(&valid).find_map(|(t, ok)| (!ok).then_some(t)) {
                            tracing::warn!(%peer, sender = %t.tx().sender, "peer relayed a transaction its sender did not sign; blocking it");
                            let _ = blocker.block(peer);
                            continue;
                        }
                        if let Err(e) = chain.submit_checked(txs, &valid) {
                            tracing::error!(error = %e, "gossip stopped");
                            return;
                        }
                    }
                    Ok(Message::Height(height)) => {
                        let account = AccountId::of_key(&peer);
                        chain.saw_peer(account, height, context.current());
                    }
                    Ok(Message::Cosignature {
                        tree_size,
                        root,
                        time,
                        signature,
                    }) => {
                        let checkpoint = Checkpoint {
                            origin: log_origin(chain.chain_id()),
                            tree_size,
                            root_hash: root,
                        };
                        let cosignature = Cosignature {
                            signer: AccountId::of_key(&peer),
                            time,
                            signature,
                        };
                        match chain.add_cosignature(checkpoint, cosignature) {
                            Ok(_) => {}
                            Err(e @ (CosignRejected::BadSignature(_) | CosignRejected::NotAValidator(_))) => {
                                tracing::warn!(%peer, error = %e, "peer sent a false cosignature; blocking it");
                                let _ = blocker.block(peer);
                            }
                            Err(e) => tracing::warn!(%peer, error = %e, "cosignature refused"),
                        }
                    }
                    Ok(Message::Unknown(tag)) => {
                        tracing::debug!(%peer, tag, "gossip message of a kind this version does not know; ignored");
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "peer sent garbage on the gossip channel; blocking it");
                        let _ = blocker.block(peer);
                    }
                }
            }
        });
    (TxGossip { sender: tx }, vec![outbound, announcer, inbound])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let m = Message::Height(42);
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        let empty = Message::Txs(vec![]).encode();
        assert!(
            Message::decode(&empty).is_err(),
            "an empty batch is not a message"
        );
        assert!(Message::decode(&[]).is_err());
        // A kind a newer version may send is not garbage.
        assert_eq!(Message::decode(&[7, 1, 2]).unwrap(), Message::Unknown(7));
        assert!(Message::decode(&[TAG_HEIGHT, 1]).is_err());
        let c = Message::Cosignature {
            tree_size: 9,
            root: Hash::digest(b"root"),
            time: 1_700_000_000,
            signature: Signature([7; 64]),
        };
        assert_eq!(Message::decode(&c.encode()).unwrap(), c);
        let mut short = c.encode();
        short.pop();
        assert!(
            Message::decode(&short)
                .unwrap_err()
                .contains("cosignature message")
        );
        assert!(Message::decode(&[TAG_TXS, 0xff, 0xff, 0xff]).is_err());
    }
}
