//! Identifiers: content ids (CIDv1) and Uniform Data Identifiers.
//!
//! A content id is a CIDv1 with the `raw` codec and a SHA-256 multihash, written in base32
//! (`bafkrei…`), so IPFS tools read it; its digest is the hash registered on the ledger.
//!
//! A Uniform Data Identifier names one version of one object and carries everything needed to
//! interpret it: `udi:<owner>/<source>/<object>@<version>/<cid>`, where `owner` is the owning
//! account (hex), `source` the producer of the data (a hospital, a device, an import), and
//! `object` a path of name segments (for FHIR, `<ResourceType>/<id>`).

use cid::Cid;
use secnet_types::{AccountId, Hash};
use std::fmt;
use std::str::FromStr;

const RAW: u64 = 0x55;
const SHA2_256: u64 = 0x12;

/// A CIDv1 (raw codec, SHA-256) of an object's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId(Hash);

/// Why an identifier did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a CIDv1 with the raw codec and a SHA-256 multihash.
    #[error("not a SecNet content id (CIDv1, raw, sha2-256): {0}")]
    Cid(String),
    /// Not of the form `udi:<owner>/<source>/<object>@<version>/<cid>`.
    #[error("not a Uniform Data Identifier (udi:<owner>/<source>/<object>@<version>/<cid>): {0}")]
    Udi(String),
    /// A name segment with characters outside `[A-Za-z0-9._-]` or of a bad length.
    #[error("bad name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    Name(String),
}

impl ContentId {
    /// The content id of content whose SHA-256 is `hash`.
    pub fn from_hash(hash: Hash) -> ContentId {
        ContentId(hash)
    }

    /// The SHA-256 of the content: the hash registered on the ledger.
    pub fn hash(&self) -> Hash {
        self.0
    }

    fn cid(&self) -> Option<Cid> {
        let mh = cid::multihash::Multihash::<64>::wrap(SHA2_256, self.0.as_bytes()).ok()?;
        Some(Cid::new_v1(RAW, mh))
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cid() {
            Some(c) => write!(f, "{c}"),
            None => Err(fmt::Error),
        }
    }
}

impl FromStr for ContentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<ContentId, IdError> {
        let bad = || IdError::Cid(s.to_string());
        let c = Cid::try_from(s).map_err(|_| bad())?;
        if c.version() != cid::Version::V1 || c.codec() != RAW || c.hash().code() != SHA2_256 {
            return Err(bad());
        }
        let digest: [u8; 32] = c.hash().digest().try_into().map_err(|_| bad())?;
        Ok(ContentId(Hash(digest)))
    }
}

impl serde::Serialize for ContentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ContentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks one name segment: 1 to 64 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_name(s: &str) -> Result<(), IdError> {
    let ok = (1..=64).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdError::Name(s.to_string()))
    }
}

/// Checks an object path: 1 to 8 name segments joined by `/`.
pub fn check_object_path(s: &str) -> Result<(), IdError> {
    let segments: Vec<&str> = s.split('/').collect();
    if segments.len() > 8 {
        return Err(IdError::Name(s.to_string()));
    }
    segments.into_iter().try_for_each(check_name)
}

/// Names one version of one object: owner, source, object path, version and content id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Udi {
    /// The owning account.
    pub owner: AccountId,
    /// Who produced the data.
    pub source: String,
    /// The object's path, stable across versions.
    pub object: String,
    /// 1 for the first version, then +1 for each new one.
    pub version: u32,
    /// The content of this version.
    pub cid: ContentId,
}

impl fmt::Display for Udi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "udi:{}/{}/{}@{}/{}",
            self.owner, self.source, self.object, self.version, self.cid
        )
    }
}

impl FromStr for Udi {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Udi, IdError> {
        let bad = || IdError::Udi(s.to_string());
        let rest = s.strip_prefix("udi:").ok_or_else(bad)?;
        let (owner, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (source, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (object, rest) = rest.rsplit_once('@').ok_or_else(bad)?;
        let (version, cid) = rest.split_once('/').ok_or_else(bad)?;
        let owner: AccountId = owner.parse().map_err(|_| bad())?;
        check_name(source)?;
        check_object_path(object)?;
        let number: u32 = version.parse().map_err(|_| bad())?;
        if number == 0 || number.to_string() != version {
            return Err(bad());
        }
        Ok(Udi {
            owner,
            source: source.to_string(),
            object: object.to_string(),
            version: number,
            cid: cid.parse()?,
        })
    }
}

impl serde::Serialize for Udi {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Udi {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_ids_are_standard_cids() {
        // The CIDv1 of the empty string with the raw codec, as `ipfs add --raw-leaves
        // --cid-version 1` writes it.
        let empty = ContentId::from_hash(Hash::digest(b""));
        assert_eq!(
            empty.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        assert_eq!(empty.to_string().parse::<ContentId>().unwrap(), empty);
        // CIDv0 and other codecs are refused.
        assert!(
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
                .parse::<ContentId>()
                .is_err()
        );
        assert!("bagaaiera".parse::<ContentId>().is_err());
    }

    #[test]
    fn bad_udis_are_refused() {
        let owner = AccountId([7; 32]);
        let cid = ContentId::from_hash(Hash::digest(b"x"));
        for bad in [
            format!("{owner}/h/Condition/1@1/{cid}"),
            format!("udi:{owner}/h/Condition/1@0/{cid}"),
            format!("udi:{owner}/h/Condition/1@01/{cid}"),
            format!("udi:{owner}/h/../x@1/{cid}"),
            format!("udi:{owner}/h a/x@1/{cid}"),
            format!("udi:zz/h/x@1/{cid}"),
            format!("udi:{owner}/h/x@1/notacid"),
        ] {
            assert!(bad.parse::<Udi>().is_err(), "{bad} parsed");
        }
    }

    proptest! {
        #[test]
        fn udis_round_trip(
            owner in any::<[u8; 32]>(),
            source in "[a-z0-9-]{1,20}",
            object in "[A-Za-z]{1,12}(/[A-Za-z0-9.-]{1,20}){0,3}",
            version in 1u32..,
            content in any::<Vec<u8>>(),
        ) {
            prop_assume!(!object.split('/').any(|s| s == "." || s == ".."));
            let udi = Udi {
                owner: AccountId(owner),
                source,
                object,
                version,
                cid: ContentId::from_hash(Hash::digest(&content)),
            };
            prop_assert_eq!(udi.to_string().parse::<Udi>().unwrap(), udi);
        }
    }
}
