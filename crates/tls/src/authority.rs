//! A network's own certificate authority, and the certificates it issues its nodes.

use crate::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData as _,
};
use sha2::Digest as _;
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// The authority's certificates are good for this many years from the day they are made.
const AUTHORITY_YEARS: i32 = 10;
/// A node's certificate is good for this many years.
const NODE_YEARS: i32 = 2;
/// The subject every SecNet authority names; issuing rebuilds it, so it is fixed.
const AUTHORITY_NAME: &str = "SecNet network certificate authority";

/// A certificate and its private key, as PEM text. The key is zeroised when dropped.
#[derive(Debug)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM), for a file only its owner reads.
    pub key_pem: Zeroizing<String>,
}

/// A certificate authority: its certificate, which clients trust, and its signing key.
pub struct Authority {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new authority with a fresh ECDSA P-256 key, valid from yesterday (clocks differ)
    /// for ten years, allowed to sign server certificates and nothing below them, and only
    /// for `names` (DNS names, and addresses as text) and this machine (`localhost`,
    /// 127.0.0.0/8, `::1`): a browser or client that trusts it trusts it for nothing else,
    /// even if its key is stolen.
    pub fn create(names: &[String]) -> Result<Authority, TlsError> {
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = authority_params();
        set_validity(&mut params, AUTHORITY_YEARS);
        params.name_constraints = Some(permitted(names));
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// The authority whose certificate is `cert_pem` and whose key is `key_pem`, as
    /// [`Authority::create`] made them.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Authority, TlsError> {
        crate::certificates(cert_pem.as_bytes(), "the certificate authority")?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Key {
            what: "the certificate authority's key".into(),
            reason: e.to_string(),
        })?;
        let cert_spki = Authority::spki_sha256(cert_pem.as_bytes())?;
        if cert_spki != spki_base64(&key.subject_public_key_info()) {
            return Err(TlsError::Key {
                what: "the certificate authority's key".into(),
                reason: "it is not the key of the authority's certificate".into(),
            });
        }
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    /// The authority's certificate (PEM): what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The authority's private key (PKCS#8 PEM), for a file only its owner reads.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    /// A certificate for a server reachable at `names`: DNS names and IP addresses (as
    /// text), each one a subject alternative name. A fresh key goes with it.
    pub fn issue(&self, names: &[String]) -> Result<Issued, TlsError> {
        if names.is_empty() {
            return Err(TlsError::Generate(
                "a node certificate needs at least one name or address".into(),
            ));
        }
        let mut params = CertificateParams::new(names.to_vec()).map_err(generate)?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_YEARS);
        let key = KeyPair::generate().map_err(generate)?;
        let issuer = Issuer::new(authority_params(), &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(generate)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// The base64 SHA-256 of the first certificate's SubjectPublicKeyInfo in `cert_pem`.
    pub(crate) fn spki_sha256(cert_pem: &[u8]) -> Result<String, TlsError> {
        let certs = crate::certificates(cert_pem, "the certificate")?;
        let first = certs.first().ok_or_else(|| TlsError::Certificate {
            what: "the certificate".into(),
            reason: "no CERTIFICATE block".into(),
        })?;
        let parsed = webpki::EndEntityCert::try_from(first).map_err(|e| TlsError::Certificate {
            what: "the certificate".into(),
            reason: format!("{e:?}"),
        })?;
        Ok(spki_base64(parsed.subject_public_key_info().as_ref()))
    }
}

/// Name constraints permitting this machine and `names`.
fn permitted(names: &[String]) -> NameConstraints {
    let mut subtrees = vec![
        GeneralSubtree::DnsName("localhost".into()),
        GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([127, 0, 0, 0], 8)),
        GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            std::net::Ipv6Addr::LOCALHOST.into(),
            128,
        )),
    ];
    for name in names {
        let subtree = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, bits))
            }
            Err(_) => GeneralSubtree::DnsName(name.clone()),
        };
        if !subtrees.contains(&subtree) {
            subtrees.push(subtree);
        }
    }
    NameConstraints {
        permitted_subtrees: subtrees,
        excluded_subtrees: Vec::new(),
    }
}

/// The authority's subject and powers. Issuing rebuilds the issuer from these, so they
/// must stay what [`Authority::create`] signed.
fn authority_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, AUTHORITY_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn spki_base64(spki_der: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki_der))
}

fn generate(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// From yesterday to `years` from today (UTC dates), so that a client whose clock is a
/// little behind still accepts a certificate made just now.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0).saturating_sub(1));
    // 28 February stands in for a 29th that the last year may not have.
    let last_day = if m == 2 && d == 29 { 28 } else { d };
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y.saturating_add(years), m, last_day);
}

/// The date of a day counted from 1970-01-01, as rcgen takes it.
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let (y, m, d) = secnet_types::date::civil_from_days(days);
    (
        i32::try_from(y).unwrap_or(i32::MAX),
        u8::try_from(m).unwrap_or(1),
        u8::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_789), (2026, 12, 2));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn an_authority_reloads_and_refuses_a_key_not_its_own() {
        let a = Authority::create(&[]).unwrap();
        let again = Authority::load(a.cert_pem(), &a.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), a.cert_pem());
        let b = Authority::create(&[]).unwrap();
        let err = Authority::load(a.cert_pem(), &b.key_pem()).unwrap_err();
        assert!(err.to_string().contains("not the key"), "{err}");
        assert!(Authority::load("not pem", &a.key_pem()).is_err());
    }
}
