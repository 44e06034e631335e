//! The Uniform Data Representation: every object is an envelope that says what its payload is
//! (media type, schema and schema version) beside the payload itself.

use crate::fhir::{self, FhirError};
use serde::{Deserialize, Serialize};

/// FHIR R4 in JSON.
pub const FHIR_JSON: &str = "application/fhir+json";
/// FHIR version of every FHIR object.
pub const FHIR_VERSION: &str = "4.0.1";
/// Any JSON document.
pub const JSON: &str = "application/json";
/// UTF-8 text.
pub const TEXT: &str = "text/plain";
/// UTF-8 comma-separated values.
pub const CSV: &str = "text/csv";
/// Opaque bytes.
pub const OCTETS: &str = "application/octet-stream";
/// A security rule (a detector or a rule set), as published by the AI component.
pub const SECURITY_RULE: &str = "application/vnd.secnet.security-rule+json";

/// Every media type a Private Data Center accepts.
pub const MEDIA_TYPES: &[&str] = &[FHIR_JSON, JSON, TEXT, CSV, OCTETS, SECURITY_RULE];

/// Largest document whose structure is validated in memory (FHIR and JSON). Opaque and text
/// payloads stream and have no such limit.
pub const MAX_STRUCTURED_BYTES: usize = 16 * 1024 * 1024;

/// What a payload is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// IANA media type.
    pub media_type: String,
    /// The schema the payload follows (for FHIR, the resource's StructureDefinition), or
    /// empty for schemaless payloads.
    pub schema: String,
    /// The schema's version (for FHIR, the FHIR version).
    pub schema_version: String,
}

/// A payload that does not fit its declared representation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The media type is not one a PDC stores.
    #[error("unknown media type {0:?}; accepted: {accepted}", accepted = MEDIA_TYPES.join(", "))]
    UnknownMediaType(String),
    /// A structured payload is larger than [`MAX_STRUCTURED_BYTES`].
    #[error("a {media_type} document is limited to {MAX_STRUCTURED_BYTES} bytes")]
    TooLarge {
        /// Its media type.
        media_type: String,
    },
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Not valid UTF-8 text.
    #[error("invalid UTF-8 at byte {0}")]
    Utf8(u64),
    /// Not a valid FHIR R4 resource.
    #[error(transparent)]
    Fhir(#[from] FhirError),
}

/// How a media type's payload is checked on write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Parsed and validated whole, in memory (FHIR, JSON, security rules).
    Structured,
    /// Checked to be UTF-8 while streaming.
    Text,
    /// Not checked.
    Opaque,
}

/// How payloads of `media_type` are validated, or an error if it is not accepted.
pub fn validation(media_type: &str) -> Result<Validation, EnvelopeError> {
    match media_type {
        FHIR_JSON | JSON | SECURITY_RULE => Ok(Validation::Structured),
        TEXT | CSV => Ok(Validation::Text),
        OCTETS => Ok(Validation::Opaque),
        other => Err(EnvelopeError::UnknownMediaType(other.to_string())),
    }
}

/// Validates a whole structured payload and returns its envelope.
pub fn validate_structured(media_type: &str, payload: &[u8]) -> Result<Envelope, EnvelopeError> {
    if payload.len() > MAX_STRUCTURED_BYTES {
        return Err(EnvelopeError::TooLarge {
            media_type: media_type.to_string(),
        });
    }
    match media_type {
        FHIR_JSON => {
            let resource_type = fhir::validate(payload)?;
            Ok(Envelope {
                media_type: FHIR_JSON.into(),
                schema: fhir::structure_definition(&resource_type),
                schema_version: FHIR_VERSION.into(),
            })
        }
        JSON | SECURITY_RULE => {
            serde_json::from_slice::<serde::de::IgnoredAny>(payload)
                .map_err(|e| EnvelopeError::Json(e.to_string()))?;
            Ok(Envelope {
                media_type: media_type.into(),
                schema: String::new(),
                schema_version: String::new(),
            })
        }
        other => Err(EnvelopeError::UnknownMediaType(other.to_string())),
    }
}

/// The envelope of a streamed (text or opaque) payload.
pub fn streamed(media_type: &str) -> Envelope {
    Envelope {
        media_type: media_type.into(),
        schema: String::new(),
        schema_version: String::new(),
    }
}

/// Incremental UTF-8 check for streamed text: feed chunks, then `finish`.
#[derive(Debug, Default)]
pub struct Utf8Check {
    carry: Vec<u8>,
    offset: u64,
}

impl Utf8Check {
    /// Checks the next chunk; a code point may straddle chunks.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), EnvelopeError> {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        match std::str::from_utf8(&buf) {
            Ok(_) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.error_len().is_none() => {
                let valid = e.valid_up_to();
                self.offset += valid as u64;
                self.carry = buf.split_off(valid);
                Ok(())
            }
            Err(e) => Err(EnvelopeError::Utf8(self.offset + e.valid_up_to() as u64)),
        }
    }

    /// Checks that the text does not end inside a code point.
    pub fn finish(self) -> Result<(), EnvelopeError> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(EnvelopeError::Utf8(self.offset))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn media_types_are_checked() {
        assert_eq!(validation("text/csv").unwrap(), Validation::Text);
        assert!(matches!(
            validation("application/x-unknown"),
            Err(EnvelopeError::UnknownMediaType(_))
        ));
        assert!(validate_structured(JSON, b"{\"a\": [1, 2]}").is_ok());
        assert!(matches!(
            validate_structured(JSON, b"{\"a\": "),
            Err(EnvelopeError::Json(_))
        ));
    }

    #[test]
    fn utf8_is_checked_across_chunk_boundaries() {
        let text = "héllo wörld ✓".as_bytes();
        for split in 0..text.len() {
            let mut c = Utf8Check::default();
            c.feed(&text[..split]).unwrap();
            c.feed(&text[split..]).unwrap();
            c.finish().unwrap();
        }
        let mut c = Utf8Check::default();
        c.feed(b"ok").unwrap();
        assert_eq!(c.feed(&[0xff]), Err(EnvelopeError::Utf8(2)));
        let mut c = Utf8Check::default();
        c.feed(&"✓".as_bytes()[..2]).unwrap();
        assert!(c.finish().is_err());
    }
}
