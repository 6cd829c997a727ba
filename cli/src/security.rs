//! Who may join a cluster: the TLS files and shared secret of the command
//! line (Dask's flag names), applied to the transport's settings.

use std::path::PathBuf;

use anyhow::{Context, Result};
use weft::transport::{Config, TlsConfig, TlsFiles};

use crate::config::Settings;

/// TLS and token flags, shared by `weft scheduler`, `weft worker` and
/// `weft local`.
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
    /// Records the flags in `settings`.
    pub fn record(&self, settings: &mut Settings) -> Result<()> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        settings.flag("security.tls-ca-file", "--tls-ca-file", path(&self.tls_ca_file))?;
        settings.flag("security.tls-cert", "--tls-cert", path(&self.tls_cert))?;
        settings.flag("security.tls-key", "--tls-key", path(&self.tls_key))?;
        settings.flag("security.token-file", "--token-file", path(&self.token_file))
    }
}

/// The TLS files `settings` name, if any.
pub fn files(settings: &Settings) -> Option<TlsFiles> {
    Some(TlsFiles {
        ca: settings.get("security.tls-ca-file")?.into(),
        cert: settings.get("security.tls-cert").map(Into::into),
        key: settings.get("security.tls-key").map(Into::into),
        require_client_cert: true,
    })
}

/// Sets the token and TLS of `config` from `settings` (and `WEFT_TOKEN`).
pub fn apply(settings: &Settings, config: &mut Config) -> Result<()> {
    let token = match settings.get("security.token-file") {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("token file {path}"))?;
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
    let (cert, key) = (settings.get("security.tls-cert"), settings.get("security.tls-key"));
    anyhow::ensure!(
        cert.is_some() == key.is_some(),
        "a TLS certificate needs its key and the reverse (--tls-cert and --tls-key)"
    );
    if let Some(files) = files(settings) {
        config.tls = Some(TlsConfig::load(&files)?);
    } else {
        anyhow::ensure!(
            cert.is_none(),
            "a TLS certificate needs the CA that signed it (--tls-ca-file)"
        );
    }
    Ok(())
}

/// `weft tls generate DIR`: a certificate authority and certificates for
/// the scheduler, the workers and clients, signed by it, as PEM files
/// (`ca.pem`, `ROLE.pem`, `ROLE.key`), for a quick start. Each certificate
/// names `hosts` (the names and addresses peers dial it at).
pub fn generate(dir: &std::path::Path, hosts: &[String]) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, pem: &str, secret: bool| -> Result<()> {
        let path = dir.join(name);
        anyhow::ensure!(!path.exists(), "{} exists already; not overwritten", path.display());
        std::fs::write(&path, pem).with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let _ = secret;
        Ok(())
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write("ca.pem", &ca_cert.pem(), false)?;
    write("ca.key", &ca_key.serialize_pem(), true)?;
    let ca = Issuer::new(ca_params, ca_key);
    for role in ["scheduler", "worker", "client"] {
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(hosts.to_vec())?.signed_by(&key, &ca)?;
        write(&format!("{role}.pem"), &cert.pem(), false)?;
        write(&format!("{role}.key"), &key.serialize_pem(), true)?;
    }
    Ok(())
}

/// The default names in generated certificates: this host's name,
/// `localhost` and the loopback addresses.
pub fn default_hosts() -> Vec<String> {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        let name = name.trim();
        if !name.is_empty() && !hosts.iter().any(|h| h == name) {
            hosts.push(name.to_string());
        }
    }
    hosts
}
