//! A node's TLS files, in `tls/` of its data directory:
//!
//! - `ca.pem`: the network's certificate authority, which the node trusts when its
//!   application calls other holders, and which clients are given (`--ca`);
//! - `cert.pem` and `key.pem` (mode 0600): the node's certificate, for the names and
//!   addresses its API is reached at, and its key;
//! - `ca.key` (mode 0600), only on a `secnet dev` node, which is its own authority. A
//!   network made by `secnet testnet init` or `secnet devnet` keeps the authority's key
//!   beside the genesis, outside every node's directory.

use crate::keyfile::{KeyFileError, read_private, write_private};
use secnet_tls::{Authority, Issued, TlsError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory, inside a node's data directory, holding its TLS files.
pub const TLS_DIR: &str = "tls";
/// Largest certificate or key file read, in bytes.
pub const MAX_PEM_FILE: u64 = 64 * 1024;

/// How a node's API is served.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Over TLS with this configuration.
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP: allowed only on a loopback address, and only when asked for.
    Plain,
}

impl Transport {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Tls(_) => "https",
            Transport::Plain => "http",
        }
    }

    /// Refuses plain HTTP on an address other machines can reach.
    pub fn check(&self, listen: SocketAddr) -> Result<(), TlsFileError> {
        match self {
            Transport::Plain if !listen.ip().is_loopback() => {
                Err(TlsFileError::PlainNotLoopback(listen))
            }
            _ => Ok(()),
        }
    }

    /// The server configuration, if TLS.
    pub fn server_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        match self {
            Transport::Tls(c) => Some(c.clone()),
            Transport::Plain => None,
        }
    }
}

/// A node's TLS files that cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] KeyFileError),
    /// A file does not hold what it should.
    #[error("{path}: {problem}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong (shown in this error's message, so not also as its source).
        problem: TlsError,
    },
    /// A certificate or key could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The node has no TLS files.
    #[error(
        "{0} has no TLS certificate; `secnet testnet init` and `secnet devnet` create one for each node"
    )]
    Missing(PathBuf),
    /// Plain HTTP was asked for on an address others can reach.
    #[error(
        "plain HTTP is allowed only on a loopback address, not {0}; serve TLS (the default) instead"
    )]
    PlainNotLoopback(SocketAddr),
}

/// What a node serving TLS knows of its files.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// The server configuration.
    pub server: Arc<rustls::ServerConfig>,
    /// The authority clients are to trust (`--ca`).
    pub ca_path: PathBuf,
    /// The base64 SHA-256 of the node certificate's public key, to compare with what a
    /// browser shows.
    pub fingerprint: String,
}

/// The names a node listening on `listen` is reached at on this machine: `localhost`, the
/// loopback addresses, and the listening address itself when it is a specific one.
pub fn default_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names
}

fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(TLS_DIR)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsFileError + '_ {
    move |source| {
        TlsFileError::File(KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Writes a node's certificate and key, and the authority it trusts, into `data_dir/tls`.
/// The certificate goes last, each file whole or not at all: a node whose `cert.pem` exists
/// has the rest.
pub fn install(data_dir: &Path, ca_pem: &str, issued: &Issued) -> Result<(), TlsFileError> {
    let dir = tls_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    write_private(&dir.join("key.pem"), issued.key_pem.as_bytes())?;
    write_public(&dir.join(AUTHORITY_CERT), ca_pem.as_bytes())?;
    write_public(&dir.join("cert.pem"), issued.cert_pem.as_bytes())
}

/// Writes `bytes` to `path` atomically (a temporary file renamed into place).
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), TlsFileError> {
    let tmp = path.with_extension("pem-tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Trusts, in this process, the network authority in a node's `tls/` if it has one (a node
/// serving plain HTTP on loopback still calls other holders over TLS).
pub fn trust_network(data_dir: &Path) -> Result<(), TlsFileError> {
    let ca_path = tls_dir(data_dir).join(AUTHORITY_CERT);
    if !ca_path.exists() {
        return Ok(());
    }
    trust_file(&ca_path, MAX_PEM_FILE)
}

/// Trusts, in this process, the certificate authorities in the PEM file at `path`, which
/// must be at most `max` bytes.
pub fn trust_file(path: &Path, max: u64) -> Result<(), TlsFileError> {
    let ca = read_public(path, max)?;
    secnet_tls::trust(&ca).map_err(|problem| TlsFileError::Content {
        path: path.to_path_buf(),
        problem,
    })
}

/// The authority's certificate in an authority directory (and in a node's `tls/`).
pub const AUTHORITY_CERT: &str = "ca.pem";
/// The authority's key in an authority directory (mode 0600).
pub const AUTHORITY_KEY: &str = "ca.key";

/// Makes a new certificate authority in `dir`, `ca.pem` and `ca.key` (0600), for this
/// machine and `names` only (see [`Authority::create`]). An authority already there is
/// never replaced.
pub fn create_authority(dir: &Path, names: &[String]) -> Result<Authority, TlsFileError> {
    if dir.join(AUTHORITY_KEY).exists() {
        return Err(TlsFileError::File(KeyFileError::Exists(
            dir.join(AUTHORITY_KEY),
        )));
    }
    let authority = Authority::create(names)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_private(&dir.join(AUTHORITY_KEY), authority.key_pem().as_bytes())?;
    write_public(&dir.join(AUTHORITY_CERT), authority.cert_pem().as_bytes())?;
    Ok(authority)
}

/// The certificate authority in `dir` (`ca.pem` and `ca.key`, which others must not read).
pub fn read_authority(dir: &Path) -> Result<Authority, TlsFileError> {
    let cert_path = dir.join(AUTHORITY_CERT);
    let cert = read_public(&cert_path, MAX_PEM_FILE)?;
    let cert = String::from_utf8(cert).map_err(|_| TlsFileError::Content {
        path: cert_path.clone(),
        problem: TlsError::Config("not UTF-8 PEM text".into()),
    })?;
    let key_path = dir.join(AUTHORITY_KEY);
    let key = read_private(&key_path, MAX_PEM_FILE)?;
    Authority::load(&cert, &key).map_err(|problem| TlsFileError::Content {
        path: key_path,
        problem,
    })
}

/// Makes sure a `secnet dev` node has TLS files. On first start it is issued a certificate
/// for `names`: by the authority in `authority` if given, or else by an authority of its
/// own, made in its `tls/` (`ca.key` there). Later starts use what is there.
pub fn ensure_dev(
    data_dir: &Path,
    names: &[String],
    authority: Option<&Path>,
) -> Result<(), TlsFileError> {
    let dir = tls_dir(data_dir);
    if dir.join("cert.pem").exists() {
        if authority.is_some() {
            tracing::warn!(
                dir = %dir.display(),
                "the node already has a certificate; --authority is used only on first start (remove tls/ to issue a new one)"
            );
        }
        return Ok(());
    }
    let authority = match authority {
        Some(a) => read_authority(a)?,
        None if dir.join(AUTHORITY_KEY).exists() => read_authority(&dir)?,
        None => create_authority(&dir, names)?,
    };
    let issued = authority.issue(names)?;
    install(data_dir, authority.cert_pem(), &issued)
}

fn read_public(path: &Path, max: u64) -> Result<Vec<u8>, TlsFileError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(io(path))?;
    if bytes.len() as u64 > max {
        return Err(TlsFileError::Content {
            path: path.to_path_buf(),
            problem: TlsError::Config(format!("larger than {max} bytes")),
        });
    }
    Ok(bytes)
}

/// Reads a node's TLS files, trusts its network's authority in this process (the node's
/// application calls other holders of the same network), and returns the server side.
pub fn load(data_dir: &Path) -> Result<NodeTls, TlsFileError> {
    let dir = tls_dir(data_dir);
    let cert_path = dir.join("cert.pem");
    if !cert_path.exists() {
        return Err(TlsFileError::Missing(data_dir.to_path_buf()));
    }
    let cert = read_public(&cert_path, MAX_PEM_FILE)?;
    let key_path = dir.join("key.pem");
    let key = read_private(&key_path, MAX_PEM_FILE)?;
    let ca_path = dir.join(AUTHORITY_CERT);
    let content = |path: &Path| {
        let path = path.to_path_buf();
        move |problem| TlsFileError::Content { path, problem }
    };
    let server = secnet_tls::server_config(&cert, key.as_bytes()).map_err(content(&key_path))?;
    trust_file(&ca_path, MAX_PEM_FILE)?;
    let fingerprint = secnet_tls::fingerprint(&cert).map_err(content(&cert_path))?;
    Ok(NodeTls {
        server,
        ca_path,
        fingerprint,
    })
}

/// How a `secnet dev` node serves its API.
#[derive(Debug, Clone, Default)]
pub struct DevTls {
    /// Plain HTTP (on loopback only) instead of TLS.
    pub plain: bool,
    /// Names or addresses the certificate carries besides [`default_names`].
    pub extra_names: Vec<String>,
    /// The authority directory that issues the certificate; by default the node is its own.
    pub authority: Option<PathBuf>,
}

/// A `secnet dev` node's transport: TLS with the files [`ensure_dev`] makes in `data_dir`,
/// its authority trusted by this process; or plain HTTP, if asked for and `listen` is a
/// loopback address.
pub fn dev_transport(
    data_dir: &Path,
    listen: SocketAddr,
    how: &DevTls,
) -> Result<(Transport, Option<NodeTls>), TlsFileError> {
    if how.plain {
        let transport = Transport::Plain;
        transport.check(listen)?;
        return Ok((transport, None));
    }
    let mut names = default_names(listen);
    names.extend(how.extra_names.iter().cloned());
    ensure_dev(data_dir, &names, how.authority.as_deref())?;
    let tls = load(data_dir)?;
    Ok((Transport::Tls(tls.server.clone()), Some(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_on_every_address_but_loopback() {
        for ok in ["127.0.0.1:8100", "127.0.0.2:1", "[::1]:8100"] {
            assert!(Transport::Plain.check(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for refused in [
            "0.0.0.0:8100",
            "[::]:8100",
            "10.0.0.5:8100",
            "[::ffff:127.0.0.1]:8100",
        ] {
            let err = Transport::Plain
                .check(refused.parse().unwrap())
                .unwrap_err();
            assert!(
                err.to_string().contains("only on a loopback address"),
                "{refused}: {err}"
            );
        }
    }

    #[test]
    fn a_dev_node_is_its_own_authority_once_and_keeps_its_files_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let listen = "127.0.0.1:0".parse().unwrap();
        let (_, tls) = dev_transport(dir.path(), listen, &DevTls::default()).unwrap();
        let tls = tls.unwrap();
        let files = dir.path().join(TLS_DIR);
        for private in ["key.pem", "ca.key"] {
            let mode = std::fs::metadata(files.join(private))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{private}");
        }
        // A second start uses the same certificate; an authority is never made over one.
        let (_, again) = dev_transport(dir.path(), listen, &DevTls::default()).unwrap();
        assert_eq!(again.unwrap().fingerprint, tls.fingerprint);
        assert!(create_authority(&files, &[]).is_err());
        // A key others can read is refused, saying how to fix it.
        std::fs::set_permissions(
            files.join("key.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
