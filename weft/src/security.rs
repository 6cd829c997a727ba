//! Who may join a cluster: the TLS files and shared secret of the command
//! line (Dask's flag names), applied to the transport's settings.

use std::path::PathBuf;

use anyhow::{Context, Result};
use weft::transport::{Config, TlsConfig, TlsFiles};

/// TLS and token flags, shared by `weft scheduler` and `weft worker`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Security {
    /// PEM file of the certificate authority that signs every node's
    /// certificate. With it, `tls://` addresses authenticate both sides
    /// (mutual TLS): a peer without a certificate signed by it is refused.
    #[arg(long, value_name = "PEM")]
    pub tls_ca_file: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the CA.
    #[arg(long, value_name = "PEM", requires = "tls_ca_file", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File holding the cluster's shared secret (else `WEFT_TOKEN`, if
    /// set): a peer that does not present it is refused.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl Security {
    /// Sets the token and TLS of `config` from the flags (and `WEFT_TOKEN`).
    pub fn apply(&self, config: &mut Config) -> Result<()> {
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("--token-file {}", path.display()))?;
                Some(text.trim().to_string())
            }
            None => std::env::var("WEFT_TOKEN").ok(),
        };
        if let Some(token) = token {
            anyhow::ensure!(
                !token.is_empty(),
                "the shared secret (--token-file or WEFT_TOKEN) is empty"
            );
            config.token = Some(token.into_bytes());
        }
        if let Some(ca) = &self.tls_ca_file {
            let files = TlsFiles {
                ca: ca.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                require_client_cert: true,
            };
            config.tls = Some(TlsConfig::load(&files)?);
        }
        Ok(())
    }
}
