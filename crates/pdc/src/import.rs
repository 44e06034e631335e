//! Importing FHIR Bundles: each resource becomes its own object owned by the patient, at
//! `fhir/<ResourceType>/<id>`, so that conditions, medications and observations can be
//! shared one by one.

use crate::envelope::FHIR_JSON;
use crate::fhir::{self, FhirError};
use crate::ids::Udi;
use crate::store::{PutRequest, Store, StoreError};
use secnet_types::{AccountId, EncryptionKey};
use std::collections::BTreeMap;

/// What an import stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Imported {
    /// The Bundle's Patient id.
    pub patient: Option<String>,
    /// One identifier per stored resource, in Bundle order.
    pub objects: Vec<Udi>,
    /// How many resources of each type.
    pub counts: BTreeMap<String, usize>,
}

/// The object path of a FHIR resource.
pub fn object_path(resource_type: &str, id: &str) -> String {
    format!("fhir/{resource_type}/{id}")
}

/// Validates the whole Bundle first, then stores each of its resources as an object of
/// `owner`. An invalid Bundle stores nothing.
pub fn import_bundle(
    store: &Store,
    owner: AccountId,
    owner_key: EncryptionKey,
    source: &str,
    bundle: &[u8],
) -> Result<Imported, StoreError> {
    let decomposed =
        fhir::decompose(bundle).map_err(|e: FhirError| StoreError::Envelope(e.into()))?;
    let mut objects = Vec::with_capacity(decomposed.components.len());
    let mut counts = BTreeMap::new();
    for c in &decomposed.components {
        let bytes = serde_json::to_vec(&c.resource).map_err(|e| StoreError::Db(e.to_string()))?;
        let (_, udi) = store.put(
            &PutRequest {
                owner,
                owner_key,
                source: source.to_string(),
                object: object_path(&c.resource_type, &c.id),
                media_type: FHIR_JSON.into(),
            },
            bytes.as_slice(),
        )?;
        objects.push(udi);
        *counts.entry(c.resource_type.clone()).or_insert(0) += 1;
    }
    Ok(Imported {
        patient: decomposed.patient,
        objects,
        counts,
    })
}
