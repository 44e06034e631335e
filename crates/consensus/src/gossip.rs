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
//!
//! Relayed transactions are checked in batches as large as what waits allows: the messages
//! already received when one is read are read with it, up to [`MAX_CHECKED_TOGETHER`]
//! transactions, and their signatures checked as one batch. If a forged signature is among
//! them, each message's transactions are checked again apart, and the search for the forged
//! one stays within its message: the others pay one more batch check, once (a message of
//! fewer than four transactions is checked singly). Everything its relayer sent in that
//! round is dropped, what the others sent is admitted, and the relayer is blocked; what it
//! sent that still waits is dropped unread.

use crate::chain::{Chain, Poisoned};
use crate::executor::unix_seconds;
use commonware_codec::{Copying, Decode as _, Encode as _, RangeCfg};
use commonware_cryptography::ed25519;
use commonware_p2p::{Blocker, Receiver, Recipients, Sender};
use commonware_runtime::{Clock, Handle, Spawner};
use futures::channel::mpsc;
use futures::{FutureExt as _, StreamExt as _};
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
    blocker: B,
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
    let inbound = context.child("gossip_in").spawn(move |context| async move {
        let mut inbound = Inbound {
            chain,
            blocker,
            budget: std::collections::HashMap::new(),
            blocked: std::collections::HashMap::new(),
        };
        let mut next = receiver.recv().await;
        while let Ok(first) = next {
            // Messages already waiting are read too, and the transactions they relay checked
            // as one batch; the next message is awaited only once none waits.
            let (relayed, closed) = gather(
                first,
                || receiver.recv().now_or_never(),
                |peer, message| inbound.handle(&context, peer, message),
            );
            if !relayed.is_empty() && inbound.admit_relayed(&context, relayed).is_err() {
                tracing::error!("gossip stopped: the ledger is poisoned");
                return;
            }
            next = match closed {
                Some(e) => Err(e),
                None => receiver.recv().await,
            };
        }
    });
    (TxGossip { sender: tx }, vec![outbound, announcer, inbound])
}

/// Most relayed transactions checked as one batch: ed25519 batch verification costs less per
/// signature the larger the batch (on one core here about 96,000 a second in batches of 200,
/// the size clients submit, and 117,000 in batches of 1,024). About 17 ms of one core here.
pub const MAX_CHECKED_TOGETHER: usize = 2 * MAX_GOSSIP_BATCH;

/// How long after this task blocks a peer the messages from it that still arrive are
/// dropped unread: those it sent before the network cut it off. The network's own block
/// lasts longer.
pub const DROP_AFTER_BLOCKING: Duration = Duration::from_secs(10);

/// Most messages of any kind read in one round, so that messages without transactions do
/// not hold the round's transactions back.
pub const MAX_READ_TOGETHER: usize = 32;

/// The transactions relayed in `first` and in the messages already waiting (`waiting` gives
/// the next one if it is there, without waiting), each handled by `read`; and the error that
/// closed the channel, if it did. Reading stops when none waits, after
/// [`MAX_READ_TOGETHER`] messages, or when one more batch could take the transactions past
/// [`MAX_CHECKED_TOGETHER`].
fn gather<P: Clone, M, E>(
    first: (P, M),
    mut waiting: impl FnMut() -> Option<Result<(P, M), E>>,
    mut read: impl FnMut(P, &M) -> Option<Vec<SignedTransaction>>,
) -> (Vec<(P, Vec<SignedTransaction>)>, Option<E>) {
    let mut relayed = Vec::new();
    let (mut count, mut messages) = (0, 0);
    let mut next = Some(Ok(first));
    while let Some(message) = next {
        let (peer, message) = match message {
            Ok(m) => m,
            Err(e) => return (relayed, Some(e)),
        };
        messages += 1;
        if let Some(txs) = read(peer.clone(), &message) {
            count += txs.len();
            relayed.push((peer, txs));
        }
        next = if messages < MAX_READ_TOGETHER && count + MAX_GOSSIP_BATCH <= MAX_CHECKED_TOGETHER {
            waiting()
        } else {
            None
        };
    }
    (relayed, None)
}

/// The receiving side of gossip: what it keeps between messages.
struct Inbound<B> {
    chain: Arc<Chain>,
    blocker: B,
    /// Cosignatures read per peer in the current interval.
    budget: std::collections::HashMap<ed25519::PublicKey, (std::time::SystemTime, u32)>,
    /// The peers this task blocked lately, and when: what they sent before the network cut
    /// them off, still waiting to be read, is dropped unread ([`DROP_AFTER_BLOCKING`]).
    blocked: std::collections::HashMap<ed25519::PublicKey, std::time::SystemTime>,
}

impl<B: Blocker<PublicKey = ed25519::PublicKey>> Inbound<B> {
    /// Handles `message` from `peer` (blocking a peer that sent garbage or a false
    /// cosignature), except the transactions it relays, which it returns to be checked with
    /// others.
    fn handle(
        &mut self,
        clock: &impl Clock,
        peer: ed25519::PublicKey,
        message: &impl AsRef<[u8]>,
    ) -> Option<Vec<SignedTransaction>> {
        if let Some(at) = self.blocked.get(&peer) {
            let since = clock.current().duration_since(*at).unwrap_or_default();
            if since < DROP_AFTER_BLOCKING {
                return None;
            }
            self.blocked.remove(&peer);
        }
        let message = message.as_ref();
        if message.first() == Some(&TAG_COSIGNATURE) {
            let now = clock.current();
            let used = self.budget.entry(peer.clone()).or_insert((now, 0));
            if now.duration_since(used.0).unwrap_or_default() >= HEIGHT_INTERVAL {
                *used = (now, 0);
            }
            used.1 += 1;
            if used.1 > MAX_COSIGNATURES_PER_INTERVAL {
                return None;
            }
        }
        match Message::decode(message) {
            Ok(Message::Txs(txs)) => return Some(txs),
            Ok(Message::Height(height)) => {
                let account = AccountId::of_key(&peer);
                self.chain.saw_peer(account, height, clock.current());
            }
            Ok(Message::Cosignature {
                tree_size,
                root,
                time,
                signature,
            }) => {
                let checkpoint = Checkpoint {
                    origin: log_origin(self.chain.chain_id()),
                    tree_size,
                    root_hash: root,
                };
                let cosignature = Cosignature {
                    signer: AccountId::of_key(&peer),
                    time,
                    signature,
                };
                match self.chain.add_cosignature(checkpoint, cosignature) {
                    Ok(_) => {}
                    Err(
                        e @ (CosignRejected::BadSignature(_) | CosignRejected::NotAValidator(_)),
                    ) => {
                        tracing::warn!(%peer, error = %e, "peer sent a false cosignature; blocking it");
                        self.block(clock, peer);
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "cosignature refused"),
                }
            }
            Ok(Message::Unknown(tag)) => {
                tracing::debug!(%peer, tag, "gossip message of a kind this version does not know; ignored");
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "peer sent garbage on the gossip channel; blocking it");
                self.block(clock, peer);
            }
        }
        None
    }

    /// Checks the transactions `relayed` by peers ([`check_relayed`]), blocks the peers that
    /// relayed one no validator admits, and admits the rest.
    fn admit_relayed(
        &mut self,
        clock: &impl Clock,
        relayed: Vec<(ed25519::PublicKey, Vec<SignedTransaction>)>,
    ) -> Result<(), Poisoned> {
        let checked = check_relayed(
            relayed,
            self.chain.chain_id(),
            secnet_types::verify_signatures_in_parts,
        );
        for (peer, fault) in checked.faults {
            match fault {
                RelayFault::WrongChain { chain } => {
                    tracing::warn!(%peer, %chain, "peer relayed another chain's transaction; blocking it")
                }
                RelayFault::BadSignature { sender } => {
                    tracing::warn!(%peer, %sender, "peer relayed a transaction its sender did not sign; blocking it")
                }
            }
            self.block(clock, peer);
        }
        if checked.txs.is_empty() {
            return Ok(());
        }
        let valid = vec![true; checked.txs.len()];
        self.chain.submit_checked(checked.txs, &valid).map(|_| ())
    }

    fn block(&mut self, clock: &impl Clock, peer: ed25519::PublicKey) {
        let _ = self.blocker.block(peer.clone());
        self.blocked.insert(peer, clock.current());
    }
}

/// Why a peer is blocked for what it relayed.
#[derive(Debug, PartialEq, Eq)]
enum RelayFault {
    /// A transaction of another chain.
    WrongChain { chain: String },
    /// A transaction whose signature does not verify.
    BadSignature { sender: AccountId },
}

/// Relayed transactions, checked.
#[derive(Debug)]
struct Checked<P> {
    /// Those to admit: every transaction relayed by a peer that relayed nothing faulty.
    txs: Vec<SignedTransaction>,
    /// The peers that relayed a transaction no validator admits, once each, with the first
    /// such transaction's fault.
    faults: Vec<(P, RelayFault)>,
}

/// Checks the batches peers relayed. A validator relays only transactions it admitted, and
/// whether a transaction names this chain, or its signature verifies, depends on no one's
/// state: a peer that relayed one that fails either did not relay honestly. Everything it
/// relayed in these batches is dropped, also what it relayed honestly and whatever else
/// admission would have said of it (a used nonce, a full pool); the signatures of a peer
/// that relayed another chain's transaction are not checked. `verify` checks the others'
/// signatures, given the batches' lengths (`secnet_types::verify_signatures_in_parts`
/// checks them as one batch, and each batch apart if that fails, so that a forged signature
/// costs the other batches one more check).
fn check_relayed<P: PartialEq + Clone>(
    relayed: Vec<(P, Vec<SignedTransaction>)>,
    chain_id: &str,
    verify: impl FnOnce(&[SignedTransaction], &[usize]) -> Vec<bool>,
) -> Checked<P> {
    fn blame<P: PartialEq>(faults: &mut Vec<(P, RelayFault)>, peer: P, fault: RelayFault) {
        if !faults.iter().any(|(p, _)| *p == peer) {
            faults.push((peer, fault));
        }
    }
    let mut faults = Vec::new();
    for (peer, txs) in &relayed {
        if let Some(t) = txs.iter().find(|t| t.tx().chain_id != chain_id) {
            let chain = t.tx().chain_id.clone();
            blame(&mut faults, peer.clone(), RelayFault::WrongChain { chain });
        }
    }
    // The batches of peers not blamed: each one's peer and length, their transactions in
    // `all`, in order.
    let mut kept: Vec<(P, usize)> = Vec::with_capacity(relayed.len());
    let mut all = Vec::with_capacity(relayed.iter().map(|(_, txs)| txs.len()).sum());
    for (peer, txs) in relayed {
        if !faults.iter().any(|(p, _)| *p == peer) {
            kept.push((peer, txs.len()));
            all.extend(txs);
        }
    }
    let lengths: Vec<usize> = kept.iter().map(|(_, len)| *len).collect();
    let valid = verify(&all, &lengths);
    let mut at = 0;
    for (peer, len) in &kept {
        let unsigned = (at..at + len).find(|&i| !valid.get(i).copied().unwrap_or(false));
        if let Some(t) = unsigned.and_then(|i| all.get(i)) {
            let sender = t.tx().sender;
            blame(
                &mut faults,
                peer.clone(),
                RelayFault::BadSignature { sender },
            );
        }
        at += len;
    }
    let mut txs = Vec::with_capacity(all.len());
    let mut all = all.into_iter();
    for (peer, len) in kept {
        let batch = all.by_ref().take(len);
        if faults.iter().any(|(p, _)| *p == peer) {
            batch.for_each(drop);
        } else {
            txs.extend(batch);
        }
    }
    Checked { txs, faults }
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

    fn signed(sender: u64, nonce: u64, chain: &str) -> SignedTransaction {
        let key = secnet_types::Keypair::from_seeds([sender as u8; 32], [0; 32]);
        secnet_types::Transaction {
            chain_id: chain.into(),
            sender: key.account(),
            nonce,
            call: secnet_types::Call::Transfer {
                to: key.account(),
                amount: 1,
            },
        }
        .sign(&key)
    }

    fn forged(sender: u64, nonce: u64) -> SignedTransaction {
        let t = signed(sender, nonce, "c");
        SignedTransaction::new(t.tx().clone(), Signature([7; 64]))
    }

    #[test]
    fn relayed_batches_are_checked_together_and_a_faulty_relayers_are_all_dropped() {
        let honest = vec![signed(1, 0, "c"), signed(1, 1, "c")];
        let later = vec![signed(2, 0, "c")];
        let relayed = vec![
            ("a", honest.clone()),
            ("b", vec![signed(3, 0, "c"), forged(3, 1)]),
            ("c", vec![signed(4, 0, "c")]),
            ("b", vec![signed(5, 0, "c")]),
            ("c", vec![signed(6, 0, "other")]),
            ("a", later.clone()),
        ];
        let mut calls = Vec::new();
        let checked = check_relayed(relayed, "c", |txs, parts| {
            calls.push((txs.len(), parts.to_vec()));
            secnet_types::verify_signatures_in_parts(txs, parts)
        });
        // One call for the batches of the peers that relayed only this chain's transactions,
        // each batch a part; none of "c"'s, which relayed another chain's.
        assert_eq!(calls, vec![(6, vec![2, 2, 1, 1])]);
        assert_eq!(checked.txs, [honest, later].concat());
        assert_eq!(
            checked.faults,
            vec![
                (
                    "c",
                    RelayFault::WrongChain {
                        chain: "other".into()
                    }
                ),
                (
                    "b",
                    RelayFault::BadSignature {
                        sender: forged(3, 1).tx().sender
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_checker_answering_short_counts_as_a_bad_signature() {
        let relayed = vec![
            ("a", vec![signed(1, 0, "c")]),
            ("b", vec![signed(2, 0, "c")]),
        ];
        let checked = check_relayed(relayed, "c", |_, _| vec![true]);
        assert_eq!(checked.txs, vec![signed(1, 0, "c")]);
        assert_eq!(checked.faults.len(), 1);
        assert_eq!(checked.faults.first().map(|(p, _)| *p), Some("b"));
    }

    #[test]
    fn waiting_messages_are_gathered_up_to_a_bound() {
        type Queue = std::collections::VecDeque<Result<(&'static str, Option<u64>), ()>>;
        let batch = |n: u64| (0..n).map(|i| signed(1, i, "c")).collect::<Vec<_>>();
        // A transaction message, a message of another kind, another transaction message:
        // gathered until none waits.
        let mut queue: Queue = [Ok(("b", None)), Ok(("c", Some(2)))].into();
        let (relayed, closed) = gather(
            ("a", Some(3)),
            || queue.pop_front(),
            |_, m: &Option<u64>| m.map(batch),
        );
        assert_eq!(closed, None);
        assert_eq!(
            relayed
                .iter()
                .map(|(p, t)| (*p, t.len()))
                .collect::<Vec<_>>(),
            vec![("a", 3), ("c", 2)]
        );
        // Past the bound, the rest waits for the next round: two full batches fill it...
        let big = MAX_GOSSIP_BATCH as u64;
        let mut queue: Queue = [Ok(("b", Some(big))), Ok(("c", Some(1)))].into();
        let (relayed, _) = gather(("a", Some(big)), || queue.pop_front(), |_, m| m.map(batch));
        assert_eq!(relayed.len(), 2);
        assert_eq!(queue.len(), 1);
        // ... and a message is read only if a full one still fits after it.
        let mut queue: Queue = [Ok(("b", Some(big))), Ok(("c", Some(big)))].into();
        let (relayed, _) = gather(("a", Some(1)), || queue.pop_front(), |_, m| m.map(batch));
        assert_eq!((relayed.len(), queue.len()), (2, 1));
        // Messages without transactions count too.
        let mut queue: Queue = std::iter::repeat_n(Ok(("b", None)), 40).collect();
        let (relayed, _) = gather(("a", Some(1)), || queue.pop_front(), |_, m| m.map(batch));
        assert_eq!(relayed.len(), 1);
        assert_eq!(queue.len(), 40 - (MAX_READ_TOGETHER - 1));
        // A closed channel ends the gathering, with what was gathered before it.
        let mut queue: Queue = [Err(()), Ok(("c", Some(1)))].into();
        let (relayed, closed) = gather(("a", Some(1)), || queue.pop_front(), |_, m| m.map(batch));
        assert_eq!((relayed.len(), closed), (1, Some(())));
    }
}
