//! Helpers shared by the transport's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use weft_transport::{Config, Connection, Frame, Message, TlsConfig, TlsFiles};

/// Asserts that a value matches a pattern, showing the value if not.
#[macro_export]
macro_rules! assert_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {{
        let value = &$value;
        assert!(matches!(value, $pattern $(if $guard)?), "unexpected: {value}");
    }};
}

/// One test per socket scheme this build has: `tcp` always and `ucx` with
/// the `ucx` feature, each in a module named after the test and each
/// calling the async function with a listen address of its scheme.
#[macro_export]
macro_rules! socket_tests {
    ($($name:ident => $body:ident;)*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                super::$body("tcp://127.0.0.1:0").await;
            }

            #[cfg(feature = "ucx")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ucx() {
                super::$body("ucx://127.0.0.1:0").await;
            }
        }
    )*};
}

/// The bytes of a hello with this version and token.
pub fn hello(version: u16, token: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    weft_transport::wire::encode_hello(
        &weft_transport::wire::Hello {
            version,
            token: token.to_vec(),
            name: name.into(),
        },
        &mut out,
    )
    .unwrap();
    out
}

/// Deterministic bytes that differ with `seed` and position.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A message with a header and frames of the given sizes.
pub fn message(seed: u64, header_len: usize, frame_lens: &[usize]) -> Message {
    let frames = frame_lens
        .iter()
        .enumerate()
        .map(|(i, &len)| Frame::host(pattern(len, seed * 1000 + i as u64)))
        .collect();
    Message::new(pattern(header_len, seed), frames)
}

/// Asserts two messages are equal byte for byte, naming the first difference.
pub fn assert_same(got: &Message, want: &Message) {
    assert_eq!(got.header, want.header, "header differs");
    assert_eq!(got.frames.len(), want.frames.len(), "frame count differs");
    for (i, (g, w)) in got.frames.iter().zip(&want.frames).enumerate() {
        assert_eq!(g.len(), w.len(), "frame {i} length differs");
        assert!(g.as_host().unwrap() == w.as_host().unwrap(), "frame {i} bytes differ");
    }
}

/// Test settings: short timeouts so failures show quickly.
pub fn config(name: &str) -> Config {
    Config {
        name: name.into(),
        connect_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

/// A throw-away certificate authority with a server and a client
/// certificate, written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_params, ca_key);
        write(dir.path(), "ca.pem", &ca_cert.pem());
        for (name, sans) in [
            ("server", vec!["localhost".to_string(), "127.0.0.1".to_string()]),
            ("client", vec!["client".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans).unwrap().signed_by(&key, &ca).unwrap();
            write(dir.path(), &format!("{name}.pem"), &cert.pem());
            write(dir.path(), &format!("{name}.key"), &key.serialize_pem());
        }
        // A second, unrelated authority, for certificates nobody trusts.
        let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other_key = KeyPair::generate().unwrap();
        write(
            dir.path(),
            "other-ca.pem",
            &other.self_signed(&other_key).unwrap().pem(),
        );
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// TLS settings for `identity` ("server" or "client"), trusting `ca`.
    pub fn tls(&self, identity: Option<&str>, ca: &str, require_client_cert: bool) -> TlsConfig {
        TlsConfig::load(&TlsFiles {
            ca: self.path(ca),
            cert: identity.map(|name| self.path(&format!("{name}.pem"))),
            key: identity.map(|name| self.path(&format!("{name}.key"))),
            require_client_cert,
        })
        .unwrap()
    }
}

fn write(dir: &Path, file: &str, contents: &str) {
    std::fs::write(dir.join(file), contents).unwrap();
}

/// Echoes every message back until the peer closes, then closes too.
pub async fn echo(mut connection: Connection) {
    while let Ok(Some(message)) = connection.recv().await {
        if connection.send(message).await.is_err() {
            return;
        }
    }
    let _ = connection.close().await;
}
