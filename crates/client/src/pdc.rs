//! The consumer's side of the Private Data Center protocol: with a grant proven on certified
//! state, ask the holder for a token, sign the fetch, unseal the data key and decrypt — the
//! plaintext checked against the hash registered on the ledger (also proven) before anything
//! is handed over.

use crate::api::now_ms;
use crate::remote::{ClientError, RemoteNode, read_bounded};
use secnet_pdc::access::{AccessToken, FetchProof};
use secnet_pdc::crypto::{BlobId, DataKey, SealedKey};
use secnet_pdc::store::Decryptor;
use secnet_types::{AccountId, GrantId, Hash, Keypair};
use std::io::{Read, Write};

/// Largest object fetched into memory, in bytes of ciphertext.
pub const MAX_FETCH_BYTES: usize = 1 << 30;
const TAG_BYTES: u64 = secnet_pdc::crypto::TAG_SIZE as u64;
const CHUNK_BYTES: u64 = secnet_pdc::crypto::CHUNK_SIZE as u64;

/// What a holder delivered, before decryption: everything needed to decrypt and check it.
#[derive(Debug)]
pub struct Delivery {
    /// The grant presented.
    pub grant: GrantId,
    /// The holder (proven on the ledger as the grant's holder).
    pub holder: AccountId,
    /// The content hash registered on the ledger (proven), which the plaintext must have.
    pub registered: Hash,
    /// The certified height the grant and listing were proven at.
    pub height: u64,
    /// The object's Uniform Data Identifier, as the holder names it.
    pub udi: String,
    /// Its media type, as the holder declares it.
    pub media_type: String,
    /// The owner's policies that permitted the fetch, as the holder reports them.
    pub policies: Vec<String>,
    /// The holder's detector score of this request, parts per million.
    pub score: u32,
    /// Plaintext size.
    pub size: u64,
    ciphertext: Vec<u8>,
    data_key: DataKey,
    blob: BlobId,
}

/// Why a delivery does not decrypt to the registered content.
#[derive(Debug, thiserror::Error)]
#[error(
    "verification failed: integrity failure: what the holder served for {udi} does not decrypt to the content registered as {registered} ({source})"
)]
pub struct IntegrityError {
    /// The object.
    pub udi: String,
    /// The registered hash.
    pub registered: Hash,
    /// What failed.
    pub source: std::io::Error,
}

impl Delivery {
    /// Decrypts into `out`, checking every chunk and, at the end, the registered hash.
    /// `out` receives bytes as they are checked chunk by chunk: give it a temporary file and
    /// keep it only on `Ok` (the whole content is checked only at the end).
    pub fn decrypt_to(&self, out: &mut impl Write) -> Result<u64, IntegrityError> {
        std::io::copy(&mut self.decryptor(), out).map_err(|e| self.integrity(e))
    }

    /// Decrypts into memory; the plaintext only if it is the registered content.
    pub fn plaintext(&self) -> Result<Vec<u8>, IntegrityError> {
        let mut plain = Vec::new();
        self.decryptor()
            .read_to_end(&mut plain)
            .map_err(|e| self.integrity(e))?;
        Ok(plain)
    }

    fn decryptor(&self) -> Decryptor<&[u8]> {
        Decryptor::with_expected(
            self.ciphertext.as_slice(),
            &self.data_key,
            self.blob,
            self.size,
            self.registered,
        )
    }

    fn integrity(&self, source: std::io::Error) -> IntegrityError {
        IntegrityError {
            udi: self.udi.clone(),
            registered: self.registered,
            source,
        }
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Result<String, ClientError> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| ClientError::Malformed(format!("the holder's answer has no {name} header")))
}

impl RemoteNode {
    /// Fetches the data of `grant_id` from this node, which must be its holder, as `key`.
    ///
    /// The grant and the listing are read from certified state, never from the holder's
    /// word: the grant must be `key`'s, name this node's account as holder and be in force;
    /// the token must be signed by that holder; the content must hash to the registered hash.
    pub async fn fetch(&self, key: &Keypair, grant_id: &GrantId) -> Result<Delivery, ClientError> {
        let grant =
            self.grant(grant_id).await?.value.ok_or_else(|| {
                ClientError::Refused(format!("no grant {grant_id} on the ledger"))
            })?;
        if grant.requester != key.account() {
            return Err(ClientError::Refused(format!(
                "grant {grant_id} was issued to {}, not to this key's account {}",
                grant.requester,
                key.account()
            )));
        }
        let listing = self.listing(&grant.data).await?;
        let height = listing.height;
        let listing = listing.value.ok_or_else(|| {
            ClientError::Refused(format!("data {} is no longer registered", grant.data))
        })?;
        let here = self.api().holder().await?;
        if here != grant.holder {
            return Err(ClientError::Refused(format!(
                "the data is held by {}, and {} is node {here}: ask the holder",
                grant.holder,
                self.base()
            )));
        }

        let sealed = self.api().token(key, grant_id).await?.token;
        let token = AccessToken::open(&sealed, &grant.holder).map_err(|r| {
            ClientError::Malformed(format!(
                "the token is not signed by the grant's holder: {r:?}"
            ))
        })?;
        let path = format!("/v1/pdc/data/{}", grant.data);
        let proof = FetchProof::sign(key, &token, "GET", &path, now_ms());
        let resp = self
            .api()
            .http()
            .get(format!("{}{path}", self.base()))
            .header("accept", secnet_pdc::envelope::OCTETS)
            .header("secnet-token", &sealed)
            .header("secnet-fetch", proof.to_header())
            .send()
            .await
            .map_err(|e| crate::api::unreachable(self.base(), &e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let detail = read_bounded(resp, 64 * 1024)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<secnet_api::ProblemBody>(&b).ok())
                .map(|p| p.detail)
                .unwrap_or_default();
            return Err(ClientError::Refused(format!(
                "holder answered {status}: {detail}"
            )));
        }
        let blob = BlobId::from_hex(&header(&resp, "secnet-blob")?)
            .ok_or_else(|| ClientError::Malformed("malformed secnet-blob header".into()))?;
        let sealed_key = SealedKey::from_hex(&header(&resp, "secnet-sealed-key")?)
            .map_err(|e| ClientError::Malformed(format!("secnet-sealed-key: {e}")))?;
        let size: u64 = header(&resp, "secnet-size")?
            .parse()
            .map_err(|e| ClientError::Malformed(format!("secnet-size: {e}")))?;
        let udi = header(&resp, "secnet-udi")?;
        let media_type = header(&resp, "secnet-media-type")?;
        let policies = header(&resp, "secnet-policies")?
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let score = header(&resp, "secnet-score")?.parse().unwrap_or(0);
        let data_key = DataKey::open(&sealed_key, key, blob).map_err(|e| {
            ClientError::Malformed(format!(
                "the data key was not sealed to this key's encryption key: {e}"
            ))
        })?;
        if usize::try_from(size).map_or(true, |s| s > self.max_fetch) {
            return Err(ClientError::Refused(format!(
                "the object is {size} bytes, more than the {} this reader takes",
                self.max_fetch
            )));
        }
        // The ciphertext of `size` plaintext bytes: one tag per 64 KiB chunk.
        let expected =
            size.saturating_add(size.div_ceil(CHUNK_BYTES).max(1).saturating_mul(TAG_BYTES));
        let max = usize::try_from(expected)
            .unwrap_or(usize::MAX)
            .min(MAX_FETCH_BYTES);
        let ciphertext = read_bounded(resp, max).await.map_err(|_| {
            ClientError::Malformed(format!(
                "the holder sent more than the {max} bytes a {size}-byte object takes"
            ))
        })?;
        Ok(Delivery {
            grant: *grant_id,
            holder: grant.holder,
            registered: listing.hash,
            height,
            udi,
            media_type,
            policies,
            score,
            size,
            ciphertext,
            data_key,
            blob,
        })
    }
}
