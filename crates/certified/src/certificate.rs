//! Finalization certificates over block headers: the format, its verification against the
//! genesis validator set, and certificates signed by chosen validators.

use crate::checkpoint::{Checkpoint, CheckpointError, CosignPool, Cosignature, verify_cosigned};
use commonware_codec::{Copying, Decode as _, DecodeExt as _, Encode as _};
use commonware_consensus::simplex::types::{
    Finalization as SimplexFinalization, Finalize, Proposal,
};
use commonware_consensus::types::{Epoch, Round, View};
use commonware_cryptography::certificate::{Attestation, Signers};
use commonware_cryptography::ed25519::certificate::Certificate;
use commonware_cryptography::{ed25519, sha256};
use commonware_parallel::Sequential;
use commonware_utils::TryCollect as _;
use commonware_utils::ordered::Set;
use secnet_types::{AccountId, BlockHeader, Genesis, Hash, Keypair};

/// The most validators a network has (`secnet testnet init` allows up to this many).
pub const MAX_VALIDATORS: usize = 64;

/// The simplex signing scheme of SecNet validators.
pub type Scheme = commonware_consensus::simplex::scheme::ed25519::Scheme;

/// A finalization certificate over a block digest.
pub type Finalization = SimplexFinalization<Scheme, sha256::Digest>;

/// The consensus digest of a SecNet block hash.
pub fn digest_of(hash: &Hash) -> sha256::Digest {
    sha256::Digest(hash.0)
}

/// The namespace every consensus signature of the network of `genesis` is made under.
///
/// It names the genesis, so a vote or certificate of another network — even one run by the
/// same validator keys — never verifies here.
pub fn consensus_namespace(genesis: &Genesis) -> Vec<u8> {
    let mut namespace = b"secnet/consensus/v1/".to_vec();
    namespace.extend_from_slice(genesis.hash().to_hex().as_bytes());
    namespace
}

/// The consensus signing key of an account key (the same ed25519 seed).
pub fn consensus_key(key: &Keypair) -> Option<ed25519::PrivateKey> {
    Some(key.signing_key().clone())
}

/// Why a certified header is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The genesis names no validators, so nothing can be certified.
    #[error("the genesis names no validators: its state cannot be certified")]
    NoValidators,
    /// The genesis lists a validator key that is not an ed25519 public key.
    #[error("genesis validator {0} is not an ed25519 public key")]
    BadValidatorKey(AccountId),
    /// The header bytes do not decode.
    #[error("header does not decode: {0}")]
    MalformedHeader(String),
    /// The certificate is larger than any certificate of this validator set.
    #[error(
        "certificate of {len} bytes is larger than {max}, the most a set of {validators} validators can sign"
    )]
    TooLarge {
        /// Its length.
        len: usize,
        /// The most this set can produce.
        max: usize,
        /// Size of the validator set.
        validators: usize,
    },
    /// The certificate bytes do not decode.
    #[error("certificate does not decode: {0}")]
    MalformedCertificate(String),
    /// The certificate's signer set is not the genesis validator set.
    #[error("certificate is for a set of {certificate} validators; the genesis has {genesis}")]
    WrongCommittee {
        /// Size of the set the certificate names.
        certificate: usize,
        /// Size of the genesis set.
        genesis: usize,
    },
    /// Fewer than 2f+1 validators signed.
    #[error("certificate has {got} signatures; {need} of {validators} validators must sign")]
    TooFewSignatures {
        /// Signatures present.
        got: usize,
        /// The quorum.
        need: usize,
        /// Size of the validator set.
        validators: usize,
    },
    /// The certificate signs another block.
    #[error("certificate signs block {certified}, not the header's block {header}")]
    OtherBlock {
        /// The digest signed.
        certified: Hash,
        /// The header's hash.
        header: Hash,
    },
    /// Signatures that do not verify under the genesis validators' keys and this network's
    /// namespace (signed by other keys, for another network, or altered).
    #[error("signatures of validators {} do not verify for this network", list(.0))]
    BadSignatures(Vec<AccountId>),
    /// A key asked to sign is not a validator of the genesis.
    #[error("{0} is not a validator of this genesis")]
    NotAValidator(AccountId),
}

fn list(ids: &[AccountId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Signatures `n` validators need for a certificate or a cosigned checkpoint: 2f+1 where
/// f = (n-1)/3 is the most faults the network tolerates.
pub fn quorum_of(n: usize) -> usize {
    n - (n.saturating_sub(1)) / 3
}

/// The validator set of a genesis, able to verify its certificates.
#[derive(Debug, Clone)]
pub struct CommitteeVerifier {
    scheme: Scheme,
    namespace: Vec<u8>,
    chain_id: String,
    participants: Set<ed25519::PublicKey>,
    /// Validators in the certificate's signer order.
    validators: Vec<AccountId>,
}

impl CommitteeVerifier {
    /// The verifier of the network `genesis` defines.
    pub fn from_genesis(genesis: &Genesis) -> Result<CommitteeVerifier, CertificateError> {
        if genesis.validators.is_empty() {
            return Err(CertificateError::NoValidators);
        }
        let keys = genesis
            .validators
            .iter()
            .map(|v| {
                ed25519::PublicKey::decode(v.key.0.to_vec())
                    .map_err(|_| CertificateError::BadValidatorKey(v.key))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let participants: Set<ed25519::PublicKey> =
            keys.into_iter().try_collect().map_err(|_| {
                CertificateError::MalformedCertificate("the genesis lists a validator twice".into())
            })?;
        let validators = participants
            .iter()
            .map(|k| {
                let bytes: &[u8] = k.as_ref();
                AccountId(bytes.try_into().unwrap_or([0u8; 32]))
            })
            .collect();
        let namespace = consensus_namespace(genesis);
        Ok(CommitteeVerifier {
            scheme: Scheme::verifier(&namespace, participants.clone()),
            namespace,
            chain_id: genesis.chain_id.clone(),
            participants,
            validators,
        })
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Whether the set is empty (never, for a verifier built from a genesis).
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Signatures a certificate needs: 2f+1 of n = 3f+1.
    pub fn quorum(&self) -> usize {
        quorum_of(self.len())
    }

    /// The network's chain id.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Checks a cosigned checkpoint note of this network's access log: at least 2f+1 of the
    /// genesis validators cosigned it. Returns the checkpoint and its cosignatures.
    pub fn verify_checkpoint(
        &self,
        note: &str,
    ) -> Result<(Checkpoint, Vec<Cosignature>), CheckpointError> {
        verify_cosigned(note, &self.chain_id, &self.validators, self.quorum())
    }

    /// An empty pool of this network's cosignatures.
    pub fn cosign_pool(&self) -> CosignPool {
        CosignPool::new(&self.chain_id, &self.validators, self.quorum())
    }

    /// The validators, in the order a certificate's signer bitmap names them.
    pub fn validators(&self) -> &[AccountId] {
        &self.validators
    }

    /// The largest certificate read, in bytes: one of the largest validator set a network
    /// may have (so that a certificate of another set is named as such, not just as too
    /// large), or of this set if it is larger.
    pub fn max_certificate_len(&self) -> usize {
        Finalization::max_encode_size(self.decode_bound())
    }

    fn decode_bound(&self) -> u32 {
        u32::try_from(self.len().max(MAX_VALIDATORS)).unwrap_or(u32::MAX)
    }

    /// Decodes `header` and checks that `certificate` is a finalization of it signed by at
    /// least 2f+1 of the genesis validators. Returns the header.
    pub fn verify(
        &self,
        header: &[u8],
        certificate: &[u8],
    ) -> Result<BlockHeader, CertificateError> {
        self.verify_finalization(header, certificate)
            .map(|(h, _)| h)
    }

    /// Like [`Self::verify`], also returning the verified finalization (a validator that
    /// joins the network starts consensus from one).
    pub fn verify_finalization(
        &self,
        header: &[u8],
        certificate: &[u8],
    ) -> Result<(BlockHeader, Finalization), CertificateError> {
        let header = BlockHeader::decode_bytes(header)
            .map_err(|e| CertificateError::MalformedHeader(e.to_string()))?;
        let finalization = self.decode(certificate)?;
        let signed = Hash(finalization.proposal.payload.0);
        if signed != header.hash() {
            return Err(CertificateError::OtherBlock {
                certified: signed,
                header: header.hash(),
            });
        }
        self.check_signatures(&finalization)?;
        Ok((header, finalization))
    }

    fn decode(&self, certificate: &[u8]) -> Result<Finalization, CertificateError> {
        let max = self.max_certificate_len();
        if certificate.len() > max {
            return Err(CertificateError::TooLarge {
                len: certificate.len(),
                max,
                validators: self.len(),
            });
        }
        let finalization =
            Finalization::decode_cfg(Copying(certificate), &(self.decode_bound() as usize))
                .map_err(|e| CertificateError::MalformedCertificate(e.to_string()))?;
        let signers = &finalization.certificate.signers;
        if signers.len() != self.len() {
            return Err(CertificateError::WrongCommittee {
                certificate: signers.len(),
                genesis: self.len(),
            });
        }
        if signers.count() < self.quorum() {
            return Err(CertificateError::TooFewSignatures {
                got: signers.count(),
                need: self.quorum(),
                validators: self.len(),
            });
        }
        Ok(finalization)
    }

    fn check_signatures(&self, finalization: &Finalization) -> Result<(), CertificateError> {
        let mut rng = rand::rng();
        if finalization.verify(&mut rng, &self.scheme, &Sequential) {
            return Ok(());
        }
        // Name the validators whose signatures fail.
        let bad = finalization
            .certificate
            .signers
            .iter()
            .zip(&finalization.certificate.signatures)
            .filter(|(signer, signature)| {
                let vote = Finalize::<Scheme, sha256::Digest> {
                    proposal: finalization.proposal.clone(),
                    attestation: Attestation {
                        signer: *signer,
                        signature: (*signature).clone(),
                    },
                };
                !vote.verify(&mut rng, &self.scheme, &Sequential)
            })
            .filter_map(|(signer, _)| self.validators.get(signer.get() as usize).copied())
            .collect();
        Err(CertificateError::BadSignatures(bad))
    }
}

/// Validators of one network ready to sign certificates (their schemes built once).
#[derive(Debug)]
pub struct Certifier {
    validators: usize,
    schemes: Vec<Scheme>,
}

impl Certifier {
    /// `signers`, validators of `genesis`, ready to certify its headers.
    pub fn new(genesis: &Genesis, signers: &[&Keypair]) -> Result<Certifier, CertificateError> {
        let committee = CommitteeVerifier::from_genesis(genesis)?;
        let schemes = signers
            .iter()
            .map(|key| {
                let not_validator = || CertificateError::NotAValidator(key.account());
                let private = consensus_key(key).ok_or_else(not_validator)?;
                Scheme::signer(
                    &committee.namespace,
                    committee.participants.clone(),
                    private,
                )
                .ok_or_else(not_validator)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Certifier {
            validators: committee.len(),
            schemes,
        })
    }

    /// A finalization certificate of `header` signed by every signer.
    ///
    /// Whether they are enough is for the verifier to decide: a one-validator development
    /// network certifies its blocks with its own key; tests make certificates with too few.
    pub fn certify(&self, header: &BlockHeader) -> Result<Vec<u8>, CertificateError> {
        let proposal = Proposal::new(
            Round::new(Epoch::zero(), View::new(header.height)),
            View::new(header.height.saturating_sub(1)),
            digest_of(&header.hash()),
        );
        let mut attestations = Vec::with_capacity(self.schemes.len());
        for scheme in &self.schemes {
            let vote = Finalize::<Scheme, sha256::Digest>::sign(scheme, proposal.clone()).ok_or(
                CertificateError::MalformedCertificate("a signer cannot sign".into()),
            )?;
            attestations.push(vote.attestation);
        }
        attestations.sort_by_key(|a| a.signer);
        attestations.dedup_by_key(|a| a.signer);
        let n = u32::try_from(self.validators).unwrap_or(u32::MAX);
        let signers = Signers::new(n, attestations.iter().map(|a| a.signer))
            .map_err(|e| CertificateError::MalformedCertificate(e.to_string()))?;
        let finalization = Finalization {
            proposal,
            certificate: Certificate {
                signers,
                signatures: attestations.into_iter().map(|a| a.signature).collect(),
            },
        };
        Ok(finalization.encode().to_vec())
    }
}

/// A finalization certificate of `header` signed by `signers`, validators of `genesis` (see
/// [`Certifier::certify`]).
pub fn certify(
    genesis: &Genesis,
    signers: &[&Keypair],
    header: &BlockHeader,
) -> Result<Vec<u8>, CertificateError> {
    Certifier::new(genesis, signers)?.certify(header)
}
