//! The light client: certificates checked against the genesis validators, state proofs
//! against the roots certified headers commit to.

use secnet_certified::{
    CertificateError, CertifiedHeader, CertifiedState, CommitteeVerifier, ReceiptProof,
};
use secnet_contract::{StateKey, StateProofError, StateValue};
use secnet_merkle::log::{leaf_hash, verify_inclusion};
use secnet_types::{BlockHeader, Genesis, Hash, Receipt};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Most certified headers remembered (verified once, then trusted by hash).
const REMEMBERED_HEADERS: usize = 1024;

/// Why an answer is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The certificate does not certify the header.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// A snapshot is not the certified state of its height.
    #[error("the snapshot of height {height} is not the network's: {reason}")]
    Snapshot {
        /// Its height.
        height: u64,
        /// What differs.
        reason: String,
    },
    /// The certified header does not commit to the root of the height the answer is about.
    #[error("the certified block {block} does not commit to the state root of height {height}")]
    NotCommitted {
        /// The answer's state height.
        height: u64,
        /// The certified block.
        block: u64,
    },
    /// An answer older than this client accepts.
    #[error("answer is as of height {height}, older than height {floor} already required")]
    Stale {
        /// The answer's state height.
        height: u64,
        /// The lowest height accepted.
        floor: u64,
    },
    /// A checkpoint smaller than one this client already verified: a node hiding entries.
    #[error("checkpoint of {size} leaves, smaller than the {floor} already verified")]
    OlderCheckpoint {
        /// The answer's tree size.
        size: u64,
        /// The largest verified before.
        floor: u64,
    },
    /// Certified longer ago than the caller accepts.
    #[error(
        "the newest certified state offered was certified at {certified_at_ms} ms, more than {max_age_ms} ms before now ({now_ms} ms)"
    )]
    TooOld {
        /// The certifying block's timestamp.
        certified_at_ms: u64,
        /// This machine's clock.
        now_ms: u64,
        /// The most accepted.
        max_age_ms: u64,
    },
    /// A key asked for has no proof in the answer.
    #[error("no proof for {key}")]
    MissingProof {
        /// The key.
        key: String,
    },
    /// A proof of another key than the one asked for.
    #[error("asked for {asked}, the proof is of {proven}")]
    OtherKey {
        /// The key asked for.
        asked: String,
        /// The key proven.
        proven: String,
    },
    /// A proof said to be as of another height.
    #[error("proof of {key} is as of height {proof}, the answer says {answer}")]
    ProofHeight {
        /// The key.
        key: String,
        /// The proof's height.
        proof: u64,
        /// The answer's.
        answer: u64,
    },
    /// The proof does not verify against the certified root.
    #[error("proof of {key} against the certified root of height {height}: {source}")]
    Proof {
        /// The key.
        key: String,
        /// The state height.
        height: u64,
        /// What failed.
        source: StateProofError,
    },
    /// A proven value that does not decode as the key's kind.
    #[error("proven value of {key} does not decode: {reason}")]
    Undecodable {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A certified header of another height than the one asked for.
    #[error("asked for the certificate of block {asked}, got block {got}")]
    OtherHeight {
        /// Height asked for.
        asked: u64,
        /// Height of the certified header.
        got: u64,
    },
    /// A receipt of another transaction than the one asked about.
    #[error("asked about transaction {asked}, the receipt is of {got}")]
    OtherTransaction {
        /// The transaction asked about.
        asked: Hash,
        /// The one the receipt names.
        got: Hash,
    },
    /// The receipt is not in the block's certified receipts root.
    #[error("receipt of {tx} at height {height}: {reason}")]
    ReceiptProof {
        /// The transaction.
        tx: Hash,
        /// Its block.
        height: u64,
        /// What failed.
        reason: String,
    },
    /// No certified header commits to the height yet (or ever, from this node).
    #[error("no certified block commits to height {height} yet")]
    Uncertified {
        /// The height.
        height: u64,
    },
    /// A checkpoint note that a quorum of validators did not cosign.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] secnet_certified::CheckpointError),
    /// Two headers that should be parent and child are not.
    #[error("block {height} does not extend the verified block before it")]
    BrokenChain {
        /// The height whose parent link fails.
        height: u64,
    },
}

/// State entries as of a certified height, every one verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedState {
    /// The height the entries are as of.
    pub height: u64,
    /// Its state root, as the certified header commits to it.
    pub state_root: Hash,
    /// The certified block whose header commits to that root.
    pub certified_block: u64,
    /// That block's timestamp (milliseconds since the Unix epoch).
    pub certified_at_ms: u64,
    /// Each asked key with its value (`None`: proven absent), in the order asked.
    pub values: Vec<(StateKey, Option<StateValue>)>,
}

impl VerifiedState {
    /// The verified value of `key`, if it was asked for and is present.
    pub fn get(&self, key: &StateKey) -> Option<&StateValue> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_ref())
    }
}

#[derive(Debug, Default)]
struct Memory {
    /// Verified headers by hash.
    headers: BTreeMap<Hash, BlockHeader>,
    /// Their hashes, oldest first (the first forgotten).
    order: VecDeque<Hash>,
    /// Answers below this height are refused.
    floor: u64,
}

/// A light client of one network, defined by its genesis.
#[derive(Debug)]
pub struct LightClient {
    committee: CommitteeVerifier,
    genesis_hash: Hash,
    memory: Mutex<Memory>,
}

fn show(key: &StateKey) -> String {
    match key {
        StateKey::Account(a) => format!("account {a}"),
        StateKey::Listing(h) => format!("listing {h}"),
        StateKey::Address(a) => format!("address {a:?}"),
        StateKey::Subscription(h, a) => format!("subscription of {a} to {h}"),
        StateKey::Grant(g) => format!("grant {g}"),
        StateKey::LogHead => "the access log's head".into(),
    }
}

impl LightClient {
    /// A light client of the network `genesis` defines.
    pub fn new(genesis: &Genesis) -> Result<LightClient, CertificateError> {
        Ok(LightClient {
            committee: CommitteeVerifier::from_genesis(genesis)?,
            genesis_hash: genesis.hash(),
            memory: Mutex::new(Memory::default()),
        })
    }

    /// The hash of the genesis this client trusts.
    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    /// The validator set certificates are checked against.
    pub fn committee(&self) -> &CommitteeVerifier {
        &self.committee
    }

    /// Refuses, from now on, answers as of a height below `height` (e.g. one already seen
    /// elsewhere: a node must not roll a client back).
    pub fn require_at_least(&self, height: u64) {
        if let Ok(mut m) = self.memory.lock() {
            m.floor = m.floor.max(height);
        }
    }

    /// Checks a cosigned checkpoint note of the access log: at least 2f+1 of the genesis
    /// validators cosigned it (C2SP `tlog-cosignature` v1). Returns the checkpoint and one
    /// verified cosignature per validator that cosigned.
    pub fn verify_checkpoint(
        &self,
        note: &str,
    ) -> Result<
        (
            secnet_certified::Checkpoint,
            Vec<secnet_certified::Cosignature>,
        ),
        VerifyError,
    > {
        Ok(self.committee().verify_checkpoint(note)?)
    }

    /// Checks a certified header; a header verified before is trusted by its hash.
    pub fn verify_header(&self, certified: &CertifiedHeader) -> Result<BlockHeader, VerifyError> {
        if let Ok(header) = BlockHeader::decode_bytes(&certified.header.0)
            && let Ok(m) = self.memory.lock()
            && m.headers.contains_key(&header.hash())
        {
            return Ok(header);
        }
        let header = self
            .committee
            .verify(&certified.header.0, &certified.certificate.0)?;
        if let Ok(mut m) = self.memory.lock() {
            if m.headers.len() >= REMEMBERED_HEADERS
                && let Some(oldest) = m.order.pop_front()
            {
                m.headers.remove(&oldest);
            }
            if m.headers.insert(header.hash(), header.clone()).is_none() {
                m.order.push_back(header.hash());
            }
        }
        Ok(header)
    }

    /// Checks a certified header said to be at `height`.
    pub fn verify_header_at(
        &self,
        height: u64,
        certified: &CertifiedHeader,
    ) -> Result<BlockHeader, VerifyError> {
        let header = self.verify_header(certified)?;
        if header.height != height {
            return Err(VerifyError::OtherHeight {
                asked: height,
                got: header.height,
            });
        }
        Ok(header)
    }

    /// Checks an answer about `keys`: the certificate against the genesis validators, the
    /// answer's height against the roots the header commits to, each proof against that root.
    /// It refuses answers below the floor but does not raise it: a caller that must not be
    /// rolled back raises it with [`Self::require_at_least`] after each verified answer (as
    /// `RemoteNode` does).
    pub fn verify_state(
        &self,
        answer: &CertifiedState,
        keys: &[StateKey],
    ) -> Result<VerifiedState, VerifyError> {
        let header = self.verify_header(&answer.certified)?;
        let root = header
            .state
            .root_at(answer.height)
            .ok_or(VerifyError::NotCommitted {
                height: answer.height,
                block: header.height,
            })?;
        let floor = self.memory.lock().map(|m| m.floor).unwrap_or(0);
        if answer.height < floor {
            return Err(VerifyError::Stale {
                height: answer.height,
                floor,
            });
        }
        let mut values = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let proof = answer
                .proofs
                .get(i)
                .ok_or_else(|| VerifyError::MissingProof { key: show(key) })?;
            if &proof.key != key {
                return Err(VerifyError::OtherKey {
                    asked: show(key),
                    proven: show(&proof.key),
                });
            }
            if proof.height != answer.height {
                return Err(VerifyError::ProofHeight {
                    key: show(key),
                    proof: proof.height,
                    answer: answer.height,
                });
            }
            proof.verify(&root).map_err(|source| VerifyError::Proof {
                key: show(key),
                height: answer.height,
                source,
            })?;
            let value = match &proof.value {
                None => None,
                Some(bytes) => Some(StateValue::from_bytes(key, bytes).map_err(|e| {
                    VerifyError::Undecodable {
                        key: show(key),
                        reason: e.0,
                    }
                })?),
            };
            values.push((key.clone(), value));
        }
        Ok(VerifiedState {
            height: answer.height,
            state_root: root,
            certified_block: header.height,
            certified_at_ms: header.timestamp_ms,
            values,
        })
    }

    /// Checks that `proof` shows the receipt of transaction `tx` in the block whose receipts
    /// root is `receipts_root` (a root a certified header commits to). Returns the receipt.
    pub fn verify_receipt(
        &self,
        tx: &Hash,
        proof: &ReceiptProof,
        receipts_root: &Hash,
    ) -> Result<Receipt, VerifyError> {
        let failed = |reason: String| VerifyError::ReceiptProof {
            tx: *tx,
            height: proof.height,
            reason,
        };
        let receipt = Receipt::decode_bytes(&proof.receipt.0)
            .map_err(|e| failed(format!("receipt does not decode: {e}")))?;
        if receipt.tx != *tx {
            return Err(VerifyError::OtherTransaction {
                asked: *tx,
                got: receipt.tx,
            });
        }
        let path: Vec<[u8; 32]> = proof
            .path
            .iter()
            .map(|h| h.0.as_slice().try_into())
            .collect::<Result<_, _>>()
            .map_err(|_| failed("a path hash is not 32 bytes".into()))?;
        verify_inclusion(
            &leaf_hash(&proof.receipt.0),
            proof.position,
            proof.count,
            &path,
            &receipts_root.0,
        )
        .map_err(|e| failed(e.to_string()))?;
        Ok(receipt)
    }

    /// Follows a chain of certified headers from a verified `trusted` header: each must be
    /// certified and extend the one before it. Returns the last.
    pub fn follow(
        &self,
        trusted: &BlockHeader,
        next: &[CertifiedHeader],
    ) -> Result<BlockHeader, VerifyError> {
        let mut tip = trusted.clone();
        for certified in next {
            let header = self.verify_header(certified)?;
            if header.height != tip.height + 1 || header.parent != tip.hash() {
                return Err(VerifyError::BrokenChain {
                    height: header.height,
                });
            }
            tip = header;
        }
        Ok(tip)
    }
}
