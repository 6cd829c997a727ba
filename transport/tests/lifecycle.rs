//! Connecting, limits, shutdown and vanishing peers: every wait ends in
//! bounded time with a clear error.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::task::Poll;
use std::time::{Duration, Instant};

use common::{Raw, accept_ok, config, echo, message};
use weft_transport::{Config, Message, TransportError, connect, listen};

/// Many clients at once on one listener, each exchanging messages.
async fn many_clients(listen_addr: &str, clients: usize, messages: u64) {
    let mut listener = listen(listen_addr, &patient("server")).await.unwrap();
    let addr = listener.local_addr().to_string();
    let server = tokio::spawn(async move {
        let mut served = Vec::new();
        for _ in 0..clients {
            served.push(tokio::spawn(echo(accept_ok(&mut listener).await)));
        }
        for task in served {
            task.await.unwrap();
        }
    });
    let mut tasks = Vec::new();
    for client in 0..clients as u64 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = connect(&addr, &patient(&format!("client-{client}"))).await.unwrap();
            for i in 0..messages {
                let sent = message(client * 1000 + i, 32, &[(i as usize * 131) % 5000, 17]);
                connection.send(sent.clone()).await.unwrap();
                assert_eq!(connection.recv().await.unwrap().unwrap(), sent);
            }
            connection.close().await.unwrap();
            assert!(connection.recv().await.unwrap().is_none());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    server.await.unwrap();
}

/// Timeouts long enough for the listener to set up two hundred connections
/// one after another on a loaded machine (each UCX connection creates a UCP
/// worker, about 20 ms here and several times that under CI load): these
/// tests are about concurrency; the timeout tests are below.
fn patient(name: &str) -> Config {
    Config {
        connect_timeout: Duration::from_secs(120),
        handshake_timeout: Duration::from_secs(60),
        io_timeout: Duration::from_secs(60),
        ..config(name)
    }
}

async fn two_hundred_concurrent_connections(addr: &str) {
    many_clients(addr, 200, 20).await;
}

socket_tests!(
    two_hundred_concurrent_connections,
    close_drains_pending_sends,
    abort_fails_pending_sends,
    stalled_reader_times_out_the_sender,
    peer_vanishing_mid_send,
);

socket_tests!(
    one_thread: connect_retries_until_the_listener_appears,
    connect_gives_up_at_the_deadline,
    ports_in_use,
    connection_limit,
    silent_peer_mid_message_times_out,
    recv_is_cancel_safe,
);

/// A free port of `addr`'s scheme: reserved, then released.
fn free_port(addr: &str) -> String {
    let scheme = addr.split_once("://").unwrap().0;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("{scheme}://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_inproc_connections() {
    many_clients("inproc://many-clients", 200, 20).await;
}

async fn connect_retries_until_the_listener_appears(addr: &str) {
    // Reserve a free port, release it, and listen on it only later.
    let addr = free_port(addr);
    let late = {
        let addr = addr.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut listener = listen(&addr, &config("server")).await.unwrap();
            echo(listener.accept().await.unwrap()).await;
        })
    };
    let mut connection = connect(&addr, &config("client")).await.unwrap();
    connection.send(message(1, 4, &[])).await.unwrap();
    assert!(connection.recv().await.unwrap().is_some());
    connection.close().await.unwrap();
    late.await.unwrap();
}

async fn connect_gives_up_at_the_deadline(addr: &str) {
    let addr = free_port(addr);
    let client = Config {
        connect_timeout: Duration::from_millis(400),
        ..config("client")
    };
    let started = Instant::now();
    let err = connect(&addr, &client).await.err().unwrap();
    let waited = started.elapsed();
    match &err {
        TransportError::Connect { attempts, last, .. } => {
            assert!(*attempts > 1, "{err}");
            assert_matches!(**last, TransportError::Io { .. });
        }
        _ => panic!("{err}"),
    }
    assert!(waited < Duration::from_secs(2), "gave up after {waited:?}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[tokio::test]
async fn bad_addresses() {
    let err = connect("tcp://localhost", &config("c")).await.err().unwrap();
    assert_matches!(err, TransportError::InvalidAddress { .. });
}

/// Without the `ucx` feature, `ucx://` says how to get it.
#[cfg(not(feature = "ucx"))]
#[tokio::test]
async fn ucx_needs_the_feature() {
    let err = listen("ucx://127.0.0.1:0", &config("c")).await.err().unwrap();
    assert_matches!(err, TransportError::Unsupported { scheme: "ucx", .. });
    assert!(err.to_string().contains("--features ucx"), "{err}");
    let err = connect("ucx://127.0.0.1:1", &config("c")).await.err().unwrap();
    assert_matches!(err, TransportError::Unsupported { scheme: "ucx", .. });
}

async fn ports_in_use(addr: &str) {
    let first = listen(addr, &config("s")).await.unwrap();
    let taken = first.local_addr().to_string();
    let err = listen(&taken, &config("s")).await.err().unwrap();
    assert_matches!(err, TransportError::AddrInUse { .. });
    assert!(err.to_string().contains(&taken), "{err}");
}

#[tokio::test]
async fn inproc_names_in_use() {
    let _inproc = listen("inproc://taken", &config("s")).await.unwrap();
    let err = listen("inproc://taken", &config("s")).await.err().unwrap();
    assert_matches!(err, TransportError::AddrInUse { .. });
}

#[tokio::test]
async fn inproc_name_is_free_again_after_the_listener_drops() {
    let listener = listen("inproc://reused", &config("s")).await.unwrap();
    drop(listener);
    let err = connect(
        "inproc://reused",
        &Config {
            connect_timeout: Duration::from_millis(100),
            ..config("c")
        },
    )
    .await
    .err()
    .unwrap();
    assert_matches!(err, TransportError::Connect { .. });
    let _again = listen("inproc://reused", &config("s")).await.unwrap();
}

/// At its connection limit a listener refuses clients as busy; they retry
/// and get in once a slot frees up.
async fn connection_limit(listen_addr: &str) {
    let server = Config {
        max_connections: 1,
        ..config("server")
    };
    let mut listener = listen(listen_addr, &server).await.unwrap();
    let addr = listener.local_addr().to_string();
    let first = connect(&addr, &config("first")).await.unwrap();
    let held = listener.accept().await.unwrap();

    let impatient = Config {
        connect_timeout: Duration::from_millis(300),
        ..config("second")
    };
    let err = connect(&addr, &impatient).await.err().unwrap();
    match &err {
        TransportError::Connect { last, .. } => assert!(
            matches!(&**last, TransportError::Rejected { retryable: true, reason, .. } if reason.contains("busy")),
            "{err}"
        ),
        _ => panic!("{err}"),
    }

    let patient = tokio::spawn({
        let addr = addr.clone();
        async move { connect(&addr, &config("third")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop((first, held));
    let third = patient.await.unwrap().unwrap();
    assert_eq!(accept_ok(&mut listener).await.peer().name, "third");
    drop(third);
}

#[tokio::test]
async fn inproc_connection_limit() {
    connection_limit("inproc://limited").await;
}

/// `close` lets queued sends finish first; the peer sees them all, then
/// the end of the stream.
async fn close_drains_pending_sends(listen_addr: &str) {
    let mut listener = listen(listen_addr, &config("server")).await.unwrap();
    let addr = listener.local_addr().to_string();
    let client = connect(&addr, &config("client")).await.unwrap();
    let mut server = listener.accept().await.unwrap();
    let (sender, _receiver) = client.split();
    let sends: Vec<_> = (0..10)
        .map(|i| {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send(message(i, 8, &[300_000])).await })
        })
        .collect();
    tokio::task::yield_now().await;
    let closing = tokio::spawn({
        let sender = sender.clone();
        async move { sender.close().await }
    });
    let mut received = 0;
    while let Some(got) = server.recv().await.unwrap() {
        assert_eq!(got.frames[0].len(), 300_000);
        received += 1;
    }
    closing.await.unwrap().unwrap();
    let sent = futures_ok(sends).await;
    assert_eq!(received, sent, "every send that succeeded arrived");
    let err = sender.send(Message::default()).await.err().unwrap();
    assert_matches!(err, TransportError::Closed { .. });
}

/// Counts the sends that succeeded; the others must have failed as closed.
async fn futures_ok(tasks: Vec<tokio::task::JoinHandle<Result<(), TransportError>>>) -> usize {
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(err) => assert!(matches!(err, TransportError::Closed { .. }), "{err}"),
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_close_drains_pending_sends() {
    close_drains_pending_sends("inproc://drain").await;
}

/// `abort` fails sends that wait for a peer that does not read, at once
/// and with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_abort_fails_pending_sends() {
    abort_fails_pending_sends("inproc://abort").await;
}

async fn abort_fails_pending_sends(addr: &str) {
    {
        let server_config = Config {
            inproc_queue: 1,
            inproc_max_in_flight_bytes: 1 << 20,
            ..config("server")
        };
        let mut listener = listen(addr, &server_config).await.unwrap();
        let addr = listener.local_addr().to_string();
        let client = connect(&addr, &server_config).await.unwrap();
        let _stalled_server = listener.accept().await.unwrap();
        let (sender, _receiver) = client.split();
        // Never read: the pipe fills and sends block.
        let sends: Vec<_> = (0..4)
            .map(|i| {
                let sender = sender.clone();
                tokio::spawn(async move { sender.send(message(i, 8, &[16 << 20])).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        sender.abort();
        // In process the first message fits the queue; every other send
        // is still waiting and must fail.
        let mut aborted = 0;
        for task in sends {
            if let Err(err) = task.await.unwrap() {
                assert!(matches!(err, TransportError::Aborted { .. }), "{addr}: {err}");
                aborted += 1;
            }
        }
        assert!(aborted >= 3, "{addr}: only {aborted} sends aborted");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

/// A peer that stops reading: the sender fails after `io_timeout`
/// instead of hanging.
async fn stalled_reader_times_out_the_sender(addr: &str) {
    let mut listener = listen(addr, &config("server")).await.unwrap();
    let addr = listener.local_addr().to_string();
    let client = Config {
        io_timeout: Duration::from_millis(300),
        ..config("client")
    };
    let connection = connect(&addr, &client).await.unwrap();
    let _never_reads = listener.accept().await.unwrap();
    let started = Instant::now();
    let err = connection.send(message(1, 8, &[64 << 20])).await.err().unwrap();
    assert_matches!(err, TransportError::Timeout { during: "message", .. });
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = connection.send(Message::default()).await.err().unwrap();
    assert!(
        matches!(err, TransportError::Closed { .. }),
        "a half-written connection is closed: {err}"
    );
}

/// A peer that vanishes mid-send (its process dies: the connection closes
/// with half a message sent): the receiver gets a clean error, never the
/// message. The sender dies while its write waits for the reader (256 MiB
/// fit in no socket buffer and are fetched by UCX only when received), so
/// how fast the transport moves data does not matter.
async fn peer_vanishing_mid_send(addr: &str) {
    let mut listener = listen(addr, &config("server")).await.unwrap();
    let addr = listener.local_addr().to_string();
    let client_config = config("client");
    let (client, accepted) = tokio::join!(connect(&addr, &client_config), listener.accept());
    let (client, mut accepted) = (client.unwrap(), accepted.unwrap());
    let big = message(3, 8, &[256 << 20]);
    let send = tokio::spawn(async move { client.send(big).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    send.abort();
    assert!(send.await.unwrap_err().is_cancelled());
    // Let the dead peer's connection finish closing, as a process's would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let err = accepted.recv().await.err().unwrap();
    assert_matches!(err, TransportError::Truncated { during: "message", .. });
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

/// A raw peer that sends half a message and then nothing, keeping the
/// connection open: the receiver times out.
async fn silent_peer_mid_message_times_out(addr: &str) {
    let server = Config {
        io_timeout: Duration::from_millis(300),
        ..config("server")
    };
    let mut listener = listen(addr, &server).await.unwrap();
    let addr = listener.local_addr().to_string();
    let mut raw = Raw::handshaken(&addr, b"").await;
    let mut accepted = listener.accept().await.unwrap();
    // A head announcing a frame that never comes.
    let mut head = 2u64.to_le_bytes().to_vec();
    head.extend_from_slice(&1u32.to_le_bytes());
    head.extend_from_slice(&10u64.to_le_bytes());
    head.extend_from_slice(b"he");
    raw.send(&head).await;
    raw.send_torn(b"half").await;
    let started = Instant::now();
    let err = accepted.recv().await.err().unwrap();
    assert_matches!(err, TransportError::Timeout { during: "message", .. });
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(raw);
}

/// Dropping a `recv` future mid-message loses nothing.
async fn recv_is_cancel_safe(addr: &str) {
    let mut listener = listen(addr, &config("server")).await.unwrap();
    let addr = listener.local_addr().to_string();
    let client = connect(&addr, &config("client")).await.unwrap();
    let mut server = listener.accept().await.unwrap();
    let sent = message(5, 100, &[8 << 20, 3]);
    let sending = tokio::spawn({
        let sent = sent.clone();
        async move {
            client.send(sent).await.unwrap();
            client
        }
    });
    // Each `recv` is polled once and dropped if not ready, then the sender
    // and the transport get a turn: every wait of the receive is a drop.
    // On one thread the sender has not run at the first poll, so at least
    // that one is dropped, whatever the transport's speed.
    let mut cancelled = 0;
    let got = loop {
        let mut recv = std::pin::pin!(server.recv());
        match std::future::poll_fn(|cx| Poll::Ready(recv.as_mut().poll(cx))).await {
            Poll::Ready(result) => break result.unwrap().unwrap(),
            Poll::Pending => cancelled += 1,
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(got, sent);
    assert!(cancelled > 0, "the receive was interrupted at least once");
    drop(sending.await.unwrap());
}
