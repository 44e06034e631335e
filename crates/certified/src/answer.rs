//! What a node answers when asked for certified state: bytes as hex on the wire, decoded by
//! the verifier with the same bounds validators use.

use secnet_contract::StateProof;
use serde::{Deserialize, Serialize};

/// Bytes carried as lower-case hex in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text.as_bytes())
            .map(HexBytes)
            .map_err(|e| serde::de::Error::custom(format!("not hex: {e}")))
    }
}

/// A block header with the finalization certificate over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertifiedHeader {
    /// The header's canonical encoding (its SHA-256 is the block hash the certificate signs),
    /// hex.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub header: HexBytes,
    /// The simplex finalization certificate, in Commonware's encoding, hex.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub certificate: HexBytes,
}

/// State entries proven as of a height whose root a certified header commits to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertifiedState {
    /// The certified header committing to the root of `height`.
    pub certified: CertifiedHeader,
    /// The height the proofs are as of.
    pub height: u64,
    /// One proof per requested key, in the order asked: the key, its value bytes (absent
    /// to prove absence) and the sparse Merkle path.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub proofs: Vec<StateProof>,
}

/// A committed transaction's receipt with its audit path to the block's receipts root (an
/// RFC 6962 tree over the block's encoded receipts, which a later header commits to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptProof {
    /// The block.
    pub height: u64,
    /// The transaction's position in it.
    pub position: u64,
    /// Number of receipts in the block.
    pub count: u64,
    /// The receipt's canonical bytes, hex.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub receipt: HexBytes,
    /// The audit path from the receipt's leaf upwards, hex.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub path: Vec<HexBytes>,
}

/// The access log's head cosigned by validators: the note is what a verifier checks; the
/// other fields repeat what it says, for reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CosignedCheckpointAnswer {
    /// The checkpoint the note carries.
    pub checkpoint: crate::Checkpoint,
    /// The C2SP note: the checkpoint body, then one `tlog-cosignature` v1 line per validator.
    pub note: String,
    /// The validators that cosigned.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub cosigners: Vec<secnet_types::AccountId>,
    /// Cosignatures a verifier requires (2f+1 of the genesis validators).
    pub quorum: usize,
}
