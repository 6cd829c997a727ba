//! Bad input on real sockets: each case gives its typed error, nothing
//! panics, nothing of the announced size is allocated, and the listener
//! still serves a good client afterwards.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Pki, Raw, config, hello, message};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weft_transport::wire::{self, Status};
use weft_transport::{Config, Limits, Listener, TransportError, WireError, connect, listen};

/// Records the largest single allocation of this test binary.
struct PeakAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// records the requested size.
unsafe impl GlobalAlloc for PeakAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocation = PeakAllocation;

/// No test here legitimately allocates more than a few MiB at once.
fn assert_no_huge_allocation() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < 64 << 20, "an allocation of {largest} bytes happened");
}

const TOKEN: &[u8] = b"s3cret";

fn server_config() -> Config {
    Config {
        token: Some(TOKEN.to_vec()),
        limits: Limits {
            max_frames: 64,
            ..Limits::default()
        },
        ..config("server")
    }
}

fn client_config() -> Config {
    Config {
        token: Some(TOKEN.to_vec()),
        ..config("client")
    }
}

async fn server(addr: &str) -> (Listener, String) {
    let listener = listen(addr, &server_config()).await.unwrap();
    let addr = listener.local_addr().to_string();
    (listener, addr)
}

/// A good client still gets through and is echoed.
async fn assert_still_serves(listener: &mut Listener, addr: &str, client: &Config) {
    let (client, server) = tokio::join!(connect(addr, client), listener.accept());
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    let sent = message(42, 10, &[1000]);
    client.send(sent.clone()).await.unwrap();
    let got = server.recv().await.unwrap().unwrap();
    assert_eq!(got, sent);
    server.send(got).await.unwrap();
    assert_eq!(client.recv().await.unwrap().unwrap(), sent);
}

fn socket_addr(addr: &str) -> &str {
    addr.split_once("://").unwrap().1
}

fn prelude(header_len: u64, frame_count: u32) -> Vec<u8> {
    let mut out = header_len.to_le_bytes().to_vec();
    out.extend_from_slice(&frame_count.to_le_bytes());
    out
}

socket_tests!(
    one_thread: wrong_magic,
    wrong_version,
    wrong_or_missing_token_fails_at_once,
    oversized_announcements,
    connection_cut_mid_frame,
    connection_cut_mid_handshake,
    random_garbage,
);

async fn wrong_magic(addr: &str) {
    let (mut listener, addr) = server(addr).await;
    let mut raw = Raw::connect(&addr).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let err = listener.accept().await.err().unwrap();
    assert_matches!(&err, TransportError::Handshake { source: WireError::BadMagic { found }, .. } if found == b"GET ");
    assert!(err.to_string().contains("127.0.0.1"), "error names the peer: {err}");
    raw.assert_closed_by_peer().await;
    assert_still_serves(&mut listener, &addr, &client_config()).await;
    assert_no_huge_allocation();
}

async fn wrong_version(addr: &str) {
    let (mut listener, addr) = server(addr).await;
    let mut raw = Raw::connect(&addr).await;
    raw.send(&hello(99, TOKEN, "raw")).await;
    let (status, text) = raw.read_ack().await;
    assert_eq!(status, Status::VersionMismatch);
    assert!(text.contains("we speak 1, the peer speaks 99"), "{text}");
    let err = listener.accept().await.err().unwrap();
    assert_matches!(
        err,
        TransportError::Handshake {
            source: WireError::VersionMismatch { ours: 1, theirs: 99 },
            ..
        }
    );
    assert_still_serves(&mut listener, &addr, &client_config()).await;
}

async fn wrong_or_missing_token_fails_at_once(addr: &str) {
    let (mut listener, addr) = server(addr).await;
    for token in [Some(b"nope".to_vec()), None] {
        let client = Config {
            token,
            ..config("intruder")
        };
        let started = Instant::now();
        let err = connect(&addr, &client).await.err().unwrap();
        assert_matches!(&err, TransportError::Rejected { retryable: false, reason, .. } if reason.contains("token"));
        assert!(started.elapsed() < Duration::from_secs(2), "no retries on a refusal");
        let err = listener.accept().await.err().unwrap();
        assert_matches!(
            err,
            TransportError::Handshake {
                source: WireError::BadToken,
                ..
            }
        );
    }
    assert_still_serves(&mut listener, &addr, &client_config()).await;
}

#[tokio::test]
async fn inproc_checks_tokens_too() {
    let mut listener = listen("inproc://malformed-token", &server_config()).await.unwrap();
    let client = Config {
        token: Some(b"nope".to_vec()),
        ..config("intruder")
    };
    let err = connect("inproc://malformed-token", &client).await.err().unwrap();
    assert_matches!(err, TransportError::Rejected { retryable: false, .. });
    let err = listener.accept().await.err().unwrap();
    assert_matches!(
        err,
        TransportError::Handshake {
            source: WireError::BadToken,
            ..
        }
    );
    assert_still_serves(&mut listener, "inproc://malformed-token", &client_config()).await;
}

/// Lengths that would exhaust memory if believed.
async fn oversized_announcements(addr: &str) {
    let (mut listener, addr) = server(addr).await;
    type Expect = fn(&WireError) -> bool;
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (
            prelude(1 << 62, 0),
            |e| matches!(e, WireError::HeaderTooLarge { len, .. } if *len == 1 << 62),
        ),
        (prelude(0, 65), |e| {
            matches!(e, WireError::TooManyFrames { count: 65, max: 64 })
        }),
        (prelude(0, u32::MAX), |e| matches!(e, WireError::TooManyFrames { .. })),
        (
            [
                prelude(0, 2),
                (1u64 << 40).to_le_bytes().to_vec(),
                8u64.to_le_bytes().to_vec(),
            ]
            .concat(),
            |e| matches!(e, WireError::FrameTooLarge { index: 0, .. }),
        ),
        (
            [
                prelude(16, 2),
                (8u64 << 30).to_le_bytes().to_vec(),
                (8u64 << 30).to_le_bytes().to_vec(),
            ]
            .concat(),
            |e| matches!(e, WireError::MessageTooLarge { .. }),
        ),
    ];
    for (bytes, expected) in cases {
        let mut raw = Raw::handshaken(&addr, TOKEN).await;
        let mut server = listener.accept().await.unwrap();
        raw.send(&bytes).await;
        let err = server.recv().await.err().unwrap();
        match &err {
            TransportError::Malformed { source, peer } => {
                assert!(expected(source), "unexpected: {err}");
                assert!(peer.contains("raw"), "names the peer: {err}");
            }
            _ => panic!("unexpected: {err}"),
        }
        assert!(matches!(server.recv().await, Err(TransportError::Closed { .. })));
        drop(server);
        raw.assert_closed_by_peer().await;
    }
    assert_still_serves(&mut listener, &addr, &client_config()).await;
    assert_no_huge_allocation();
}

async fn connection_cut_mid_frame(addr: &str) {
    let (mut listener, addr) = server(addr).await;
    let mut raw = Raw::handshaken(&addr, TOKEN).await;
    let mut server = listener.accept().await.unwrap();
    let mut head = prelude(4, 1);
    head.extend_from_slice(&(1u64 << 20).to_le_bytes());
    head.extend_from_slice(b"head");
    raw.send(&head).await;
    raw.send_torn(&[7u8; 1000]).await;
    drop(raw);
    let started = Instant::now();
    let err = server.recv().await.err().unwrap();
    assert_matches!(err, TransportError::Truncated { during: "message", .. });
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_still_serves(&mut listener, &addr, &client_config()).await;
}

async fn connection_cut_mid_handshake(addr: &str) {
    let (mut listener, addr) = server(addr).await;
    let mut raw = Raw::connect(&addr).await;
    raw.send_torn(&hello(wire::PROTOCOL_VERSION, TOKEN, "raw")[..7]).await;
    drop(raw);
    let err = listener.accept().await.err().unwrap();
    assert_matches!(
        err,
        TransportError::Truncated {
            during: "handshake",
            ..
        }
    );
    assert_still_serves(&mut listener, &addr, &client_config()).await;
}

/// Seeded random bytes instead of a handshake, and instead of messages
/// after one: always an error, never a panic or a hang.
async fn random_garbage(addr: &str) {
    let (mut listener, addr) = server(addr).await;
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..20 {
        let garbage: Vec<u8> = (0..rng.usize(1..512)).map(|_| rng.u8(..)).collect();
        if round % 2 == 0 {
            let mut raw = Raw::connect(&addr).await;
            raw.send(&garbage).await;
            drop(raw);
            assert!(listener.accept().await.is_err());
        } else {
            let mut raw = Raw::handshaken(&addr, TOKEN).await;
            let mut server = listener.accept().await.unwrap();
            raw.send(&garbage).await;
            drop(raw);
            // Either a typed error, or (rarely) garbage that parses as
            // small messages, followed by an error or the end of stream.
            while let Ok(Some(_)) = server.recv().await {}
        }
    }
    assert_still_serves(&mut listener, &addr, &client_config()).await;
    assert_no_huge_allocation();
}

/// Both sides fail with a TLS error, at once rather than after retries.
async fn assert_tls_refused(listener: &mut Listener, addr: &str, client: &Config) {
    let started = Instant::now();
    assert_matches!(connect(addr, client).await.err().unwrap(), TransportError::Tls { .. });
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no retries on a TLS failure"
    );
    assert_matches!(listener.accept().await.err().unwrap(), TransportError::Tls { .. });
}

#[tokio::test]
async fn untrusted_certificates_are_refused() {
    let pki = Pki::new();
    let server = Config {
        tls: Some(pki.tls(Some("server"), "ca.pem", true)),
        ..config("server")
    };
    let mut listener = listen("tls://127.0.0.1:0", &server).await.unwrap();
    let addr = listener.local_addr().to_string();

    // The client trusts another authority than the one that signed the server.
    let distrustful = Config {
        tls: Some(pki.tls(Some("client"), "other-ca.pem", false)),
        ..config("client")
    };
    assert_tls_refused(&mut listener, &addr, &distrustful).await;

    // The server demands a client certificate that this client lacks.
    let anonymous = Config {
        tls: Some(pki.tls(None, "ca.pem", false)),
        ..config("client")
    };
    assert_tls_refused(&mut listener, &addr, &anonymous).await;

    // Plain TCP bytes at a TLS listener.
    let mut socket = TcpStream::connect(socket_addr(&addr)).await.unwrap();
    socket
        .write_all(&hello(wire::PROTOCOL_VERSION, b"", "raw"))
        .await
        .unwrap();
    assert!(matches!(
        listener.accept().await.err().unwrap(),
        TransportError::Tls { .. }
    ));

    let good = Config {
        tls: Some(pki.tls(Some("client"), "ca.pem", false)),
        ..config("client")
    };
    assert_still_serves(&mut listener, &addr, &good).await;
}
