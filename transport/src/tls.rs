//! TLS for `tls://` addresses: rustls configurations loaded from PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::TransportError;

/// Where a node's TLS material lies, as PEM files (the same three files
/// Dask takes as `--tls-ca-file`, `--tls-cert` and `--tls-key`).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Certificate authorities that sign the peers' certificates.
    pub ca: PathBuf,
    /// This node's certificate chain; needed to listen, and to connect
    /// to a listener that requires client certificates.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// Listeners demand and verify client certificates (mutual TLS).
    pub require_client_cert: bool,
}

/// Loaded rustls configurations for both sides of a connection.
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) client: Arc<ClientConfig>,
    pub(crate) server: Option<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("can_listen", &self.server.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads and checks the PEM files; errors name the file at fault.
    pub fn load(files: &TlsFiles) -> Result<Self, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&files.ca)? {
            roots.add(cert).map_err(|e| tls_error(&files.ca, &e.to_string()))?;
        }
        let roots = Arc::new(roots);
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => Some((read_certs(cert)?, read_key(key)?)),
            (None, None) => None,
            _ => {
                return Err(TransportError::TlsConfig(
                    "a certificate needs its key and a key its certificate".into(),
                ));
            }
        };

        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::TlsConfig(e.to_string()))?
            .with_root_certificates(roots.clone());
        let client = match &identity {
            Some((certs, key)) => client
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| TransportError::TlsConfig(format!("client certificate: {e}")))?,
            None => client.with_no_client_auth(),
        };

        let server = match identity {
            Some((certs, key)) => {
                let builder = ServerConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TransportError::TlsConfig(e.to_string()))?;
                let builder = if files.require_client_cert {
                    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| TransportError::TlsConfig(format!("client verifier: {e}")))?;
                    builder.with_client_cert_verifier(verifier)
                } else {
                    builder.with_no_client_auth()
                };
                let config = builder
                    .with_single_cert(certs, key)
                    .map_err(|e| TransportError::TlsConfig(format!("server certificate: {e}")))?;
                Some(Arc::new(config))
            }
            None => None,
        };
        Ok(TlsConfig {
            client: Arc::new(client),
            server,
        })
    }

    /// The name a server's certificate must carry: an IP address or a DNS
    /// name, taken from the host of the address we connect to.
    pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, TransportError> {
        ServerName::try_from(host.to_string())
            .map_err(|e| TransportError::TlsConfig(format!("{host:?} is not a valid server name: {e}")))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(path, &e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate found"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_error(path, &e.to_string()))
}

fn tls_error(path: &Path, reason: &str) -> TransportError {
    TransportError::TlsConfig(format!("{}: {reason}", path.display()))
}
