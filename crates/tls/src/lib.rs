//! TLS for SecNet's HTTP APIs.
//!
//! - [`Authority`]: a network's own certificate authority. `secnet devnet`, `secnet testnet
//!   init` and `secnet dev` create one and issue each node a certificate for the names and
//!   addresses it serves; clients trust the authority's certificate (`--ca`), nothing else.
//! - [`server_config`] and [`client_config`]: rustls configurations from PEM text, with the
//!   ring provider, TLS 1.2 and 1.3.
//! - [`serve`]: serves an axum router on a listener, over TLS or (where the caller allows it)
//!   plain HTTP, with handshakes and request headers bounded in time and connections in
//!   number, so a slow client holds one connection's slot and nothing else; each request
//!   can learn that the server is stopping ([`Stopping`]).
//! - [`TrustedProxies`]: which peers are the node's reverse proxies, whose `X-Forwarded-For`
//!   names the client ([`ClientAddr`]) that budgets and throttles count.
//!
//! - [`trust`] and [`http_client`]: the authorities this process trusts, and HTTP clients
//!   that trust exactly those. A node trusts its own network's authority when it starts (its
//!   application calls other holders); the command line adds `--ca`.
//!
//! Files are the caller's business: this crate turns PEM text into certificates and
//! configurations and back, and the node's data directory decides where they live.

mod authority;
mod client;
mod serve;

pub use authority::{Authority, Issued};
pub use client::{
    ClientAddr, MAX_TRUSTED_PROXIES, MIN_PROXY_PREFIX_V4, MIN_PROXY_PREFIX_V6, Net, NetError,
    TrustedProxies,
};
pub use serve::{ServeLimits, Stopping, serve};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, RwLock};

/// The certificate authorities this process trusts, in the order they were added.
static TRUSTED: RwLock<Vec<CertificateDer<'static>>> = RwLock::new(Vec::new());

/// Trusts the certificate authorities in `ca_pem` (one or more certificates, PEM) from now
/// on, besides those trusted already, in every client [`http_client`] makes.
pub fn trust(ca_pem: &[u8]) -> Result<(), TlsError> {
    let certs = certificates(ca_pem, "the certificate authority")?;
    // Each must be usable as a trust anchor before any is added.
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| TlsError::Certificate {
            what: "the certificate authority".into(),
            reason: e.to_string(),
        })?;
    }
    let mut trusted = TRUSTED
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for cert in certs {
        if !trusted.contains(&cert) {
            trusted.push(cert);
        }
    }
    Ok(())
}

/// A client builder whose TLS trusts the authorities passed to [`trust`] and no other, and
/// speaks HTTP/1.1. Plain `http://` URLs work as they always do; with no authority trusted,
/// every `https://` URL is refused.
pub fn http_client() -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder().use_preconfigured_tls(client_config_with(trusted_roots())?))
}

fn trusted_roots() -> rustls::RootCertStore {
    let trusted = TRUSTED
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted.iter() {
        // Each was checked in `trust`.
        let _ = roots.add(cert.clone());
    }
    roots
}

/// What could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate could not be generated or signed.
    #[error("generating a certificate: {0}")]
    Generate(String),
    /// PEM text held no certificate, or one that does not parse.
    #[error("{what}: no usable certificate ({reason})")]
    Certificate {
        /// Which file or value.
        what: String,
        /// Why.
        reason: String,
    },
    /// PEM text held no private key, or one that does not parse.
    #[error("{what}: no usable private key ({reason})")]
    Key {
        /// Which file or value.
        what: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The ring provider, the one every configuration here uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in `pem`, in order; at least one.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            what: what.to_string(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// A byte stream to a server, over TLS or not.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A connection to the server at `base` (`https://host:port` or `http://host:port`), over
/// TLS trusting what [`trust`] added, or plain TCP: for tools that write HTTP/1.1 by hand,
/// such as the attack suite's partial and slow requests.
pub async fn connect(base: &str) -> std::io::Result<Box<dyn Stream>> {
    let invalid =
        |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{base}: {why}"));
    let (tls, authority) = if let Some(rest) = base.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = base.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(invalid("not an http(s) URL"));
    };
    let authority = authority.split('/').next().unwrap_or(authority);
    let tcp = tokio::net::TcpStream::connect(authority).await?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let host = match authority.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| invalid("not a host name or address"))?;
    let config = client_config_with(trusted_roots()).map_err(std::io::Error::other)?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    Ok(Box::new(stream))
}

/// A server configuration presenting the certificate chain `cert_pem` with `key_pem`.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates(cert_pem, "the node's certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        what: "the node's TLS key".into(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts the certificate authorities in `ca_pem` and no other.
pub fn client_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca_pem, "the certificate authority")? {
        roots.add(cert).map_err(|e| TlsError::Certificate {
            what: "the certificate authority".into(),
            reason: e.to_string(),
        })?;
    }
    client_config_with(roots)
}

fn client_config_with(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The SHA-256 of a certificate's SubjectPublicKeyInfo, base64: what browsers take to pin
/// one certificate (`--ignore-certificate-errors-spki-list`), and what `secnet devnet` prints
/// so that a person can compare it with the certificate their browser shows.
pub fn fingerprint(cert_pem: &[u8]) -> Result<String, TlsError> {
    Authority::spki_sha256(cert_pem)
}
