//! Helpers shared by the transport's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_transport::ucx::RawPeer;
use weft_transport::wire::{self, Status};
use weft_transport::{Buffer, Config, Connection, Message, TlsConfig, TlsFiles};

/// Asserts that a value matches a pattern, showing the value if not.
#[macro_export]
macro_rules! assert_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {{
        let value = &$value;
        assert!(matches!(value, $pattern $(if $guard)?), "unexpected: {value}");
    }};
}

/// One test per socket scheme this build has, for each async function
/// named: `NAME::tcp` always and `NAME::ucx` with the `ucx` feature, each
/// calling `NAME` with a listen address of its scheme (port 0). They run on
/// two runtime threads, or with `one_thread:` first on one, for tests that
/// rely on the sender and the receiver taking turns.
#[macro_export]
macro_rules! socket_tests {
    (one_thread: $($name:ident),* $(,)?) => {
        $crate::socket_tests!(@each (flavor = "current_thread") $($name),*);
    };
    (@each $flavor:tt $($name:ident),*) => {$(
        mod $name {
            #[tokio::test $flavor]
            async fn tcp() {
                super::$name("tcp://127.0.0.1:0").await;
            }

            #[cfg(feature = "ucx")]
            #[tokio::test $flavor]
            async fn ucx() {
                super::$name("ucx://127.0.0.1:0").await;
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {
        $crate::socket_tests!(@each (flavor = "multi_thread", worker_threads = 2) $($name),*);
    };
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
        .map(|(i, &len)| Buffer::host(pattern(len, seed * 1000 + i as u64)))
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

/// The next connection a listener accepts, skipping attempts that clients
/// gave up (on a loaded machine a stalled attempt is retried, and the one
/// abandoned shows up at `accept` as a typed, retryable error).
pub async fn accept_ok(listener: &mut weft_transport::Listener) -> Connection {
    loop {
        match listener.accept().await {
            Ok(connection) => return connection,
            Err(error) => assert!(error.is_retryable(), "{error}"),
        }
    }
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

/// A peer that writes raw bytes, bypassing the transport's own sender: a
/// socket for `tcp://`, a bare UCX endpoint sending datagrams for `ucx://`.
pub enum Raw {
    Tcp(TcpStream),
    Ucx(RawPeer),
}

impl Raw {
    /// Connects to a `tcp://` or `ucx://` listener, without a handshake.
    pub async fn connect(addr: &str) -> Raw {
        match addr.split_once("://").unwrap() {
            ("ucx", _) => Raw::Ucx(RawPeer::connect(addr).await.unwrap()),
            (_, location) => Raw::Tcp(TcpStream::connect(location).await.unwrap()),
        }
    }

    /// A raw peer that passed the handshake with this token.
    pub async fn handshaken(addr: &str, token: &[u8]) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.send(&hello(wire::PROTOCOL_VERSION, token, "raw")).await;
        assert_eq!(raw.read_ack().await.0, Status::Accepted);
        raw
    }

    /// Sends one part of the protocol: appended to the stream over TCP,
    /// one datagram over UCX.
    pub async fn send(&mut self, bytes: &[u8]) {
        match self {
            Raw::Tcp(socket) => socket.write_all(bytes).await.unwrap(),
            Raw::Ucx(peer) => peer
                .send(bytes)
                .await
                .unwrap_or_else(|e| panic!("send of {} bytes: {e}", bytes.len())),
        }
    }

    /// Sends the start of a part that is never finished: the bytes over
    /// TCP; nothing over UCX, where a datagram arrives whole or not at all.
    pub async fn send_torn(&mut self, bytes: &[u8]) {
        if let Raw::Tcp(socket) = self {
            socket.write_all(bytes).await.unwrap();
        }
    }

    /// Reads an ack: its status and text.
    pub async fn read_ack(&mut self) -> (Status, String) {
        let ack = match self {
            Raw::Tcp(socket) => {
                let mut fixed = [0u8; wire::ACK_FIXED_LEN];
                socket.read_exact(&mut fixed).await.unwrap();
                let mut text = vec![0u8; wire::ack_text_len(&fixed).unwrap()];
                socket.read_exact(&mut text).await.unwrap();
                wire::decode_ack(&fixed, &text).unwrap()
            }
            Raw::Ucx(peer) => {
                let bytes = peer.recv(Duration::from_secs(5)).await.unwrap().expect("an ack");
                wire::decode_ack_datagram(&bytes).unwrap()
            }
        };
        (ack.status, ack.text)
    }

    /// The server closed the connection, in bounded time.
    pub async fn assert_closed_by_peer(&mut self) {
        match self {
            Raw::Tcp(socket) => {
                let mut buf = [0u8; 64];
                let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
                assert!(
                    matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                    "connection still open: {read:?}"
                );
            }
            Raw::Ucx(peer) => {
                let read = peer.recv(Duration::from_secs(5)).await;
                assert!(matches!(read, Ok(None)), "connection still open: {read:?}");
            }
        }
    }
}
