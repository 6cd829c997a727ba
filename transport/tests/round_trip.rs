//! Messages of 0 to 64 frames, 0 bytes to 64 MiB, round-trip over every
//! backend and come back byte for byte.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Pki, assert_same, config, echo, message};
use weft_transport::{Buffer, Config, Message, connect, listen};

const MIB: usize = 1 << 20;

/// The messages every backend must carry.
fn messages() -> Vec<Message> {
    let many: Vec<usize> = (0..64).map(|i| if i % 9 == 0 { 0 } else { i * 997 + 13 }).collect();
    vec![
        message(1, 0, &[]),
        message(2, 300, &[]),
        message(3, 0, &[0]),
        message(4, 17, &[1]),
        message(5, 64, &many),
        message(6, 128, &[64 * MIB]),
        message(7, 5, &[3, 5 * MIB + 1, 0, MIB + 3, 65_536]),
        message(8, 70_000, &[200_000; 7]),
    ]
}

/// Sends each message through an echo server and checks what comes back.
async fn round_trip(listen_addr: &str, server: Config, client: Config) {
    let mut listener = listen(listen_addr, &server).await.unwrap();
    let addr = listener.local_addr().to_string();
    let server_task = tokio::spawn(async move {
        let connection = listener.accept().await.unwrap();
        assert_eq!(connection.peer().name, "client");
        echo(connection).await;
    });
    let mut connection = connect(&addr, &client).await.unwrap();
    assert_eq!(connection.peer().name, "server");
    for want in messages() {
        connection.send(want.clone()).await.unwrap();
        let got = connection.recv().await.unwrap().expect("echo");
        assert_same(&got, &want);
        if !addr.starts_with("inproc") {
            for frame in got.frames.iter().filter(|f| f.len() >= 64) {
                assert_eq!(
                    frame.as_host().unwrap().as_ptr() as usize % 64,
                    0,
                    "frames land 64-byte aligned"
                );
            }
        }
    }
    connection.close().await.unwrap();
    assert!(connection.recv().await.unwrap().is_none(), "server closes after us");
    server_task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_round_trip() {
    round_trip("inproc://round-trip", config("server"), config("client")).await;
}

async fn socket_round_trip(addr: &str) {
    round_trip(addr, config("server"), config("client")).await;
}

async fn tokens_that_match_are_accepted(addr: &str) {
    let with_token = |name: &str| Config {
        token: Some(b"s3cret".to_vec()),
        ..config(name)
    };
    round_trip(addr, with_token("server"), with_token("client")).await;
}

/// A device frame goes by reference in process; a socket backend copies it
/// to host memory (emulated GPUs are never handed to UCX as CUDA memory),
/// so its bytes arrive; no pinned buffer of the frame's size is made or
/// kept for it (large copies go through the staging pool's chunks).
async fn device_frames_arrive_as_their_bytes(addr: &str) {
    let gpu = weft_gpu::Gpu::emulated(0, 16 * MIB, true);
    let bytes: Vec<u8> = (0..3 * MIB + 5).map(|i| (i % 251) as u8).collect();
    let buffer = gpu.stream().unwrap().upload(&bytes).unwrap();
    let mut listener = listen(addr, &config("server")).await.unwrap();
    let at = listener.local_addr().to_string();
    let server = tokio::spawn(async move { echo(listener.accept().await.unwrap()).await });
    let mut connection = connect(&at, &config("client")).await.unwrap();
    let sent = Message::new(
        &b"device"[..],
        vec![Buffer::device(buffer), Buffer::host(vec![1u8; 10])],
    );
    connection.send(sent).await.unwrap();
    let got = connection.recv().await.unwrap().expect("echo");
    assert_eq!(got.frames[0].as_host().expect("staged to host")[..], bytes[..]);
    assert_eq!(got.frames[1].as_host().unwrap()[..], [1u8; 10]);
    connection.close().await.unwrap();
    server.await.unwrap();
    let staging = gpu.staging_stats();
    assert_eq!((staging.allocated, staging.in_use), (0, 0), "{staging:?}");
}

/// A receiver with a GPU gets a frame the sender held on a GPU in its own
/// GPU's memory (over `tcp://` through its pinned staging pool, chunk by
/// chunk; over a UCX without CUDA received into host memory, then copied
/// up; over a UCX with CUDA straight into the device), host frames in host
/// memory; a receiver without a GPU gets host memory for both. Run with an
/// emulated receiving GPU, and a CUDA one where present.
async fn device_frames_land_in_the_receivers_gpu(addr: &str) {
    for (name, receiver_gpu) in weft_gpu::testing::test_gpus("device frames land in the receiver's GPU") {
        device_frames_land_in(addr, &name, receiver_gpu).await;
    }
}

async fn device_frames_land_in(addr: &str, name: &str, receiver_gpu: std::sync::Arc<weft_gpu::Gpu>) {
    let sender_gpu = weft_gpu::Gpu::emulated(0, 64 * MIB, true);
    let bytes: Vec<u8> = (0..9 * MIB + 5).map(|i| (i % 253) as u8).collect();
    let buffer = sender_gpu.stream().unwrap().upload(&bytes).unwrap();
    let server_config = Config {
        gpu: Some(receiver_gpu.clone()),
        ..config("server")
    };
    let mut listener = listen(addr, &server_config).await.unwrap();
    let at = listener.local_addr().to_string();
    let server = tokio::spawn(async move {
        let mut connection = listener.accept().await.unwrap();
        let got = connection.recv().await.unwrap().expect("a message");
        // Sent back as it landed: from the receiver's GPU, to a client without one.
        connection.send(got.clone()).await.unwrap();
        assert!(connection.recv().await.unwrap().is_none());
        got
    });
    let mut connection = connect(&at, &config("client")).await.unwrap();
    let sent = Message::new(
        &b"device"[..],
        vec![Buffer::device(buffer), Buffer::host(vec![1u8; 10])],
    );
    let h2d_before = emulated(&receiver_gpu).map(|e| e.copies().h2d);
    connection.send(sent).await.unwrap();
    let echoed = connection.recv().await.unwrap().expect("echo");
    connection.close().await.unwrap();
    let landed = server.await.unwrap();

    let device = landed.frames[0].as_device().expect("lands in device memory");
    assert!(std::sync::Arc::ptr_eq(device.gpu(), &receiver_gpu), "{name}");
    assert_eq!(
        receiver_gpu.stream().unwrap().download(device).unwrap(),
        bytes,
        "{name}"
    );
    assert_eq!(
        landed.frames[1].location(),
        weft_gpu::Device::Cpu,
        "a host frame stays on the host"
    );
    if let (Some(before), Some(e)) = (h2d_before, emulated(&receiver_gpu)) {
        let expected = if addr.starts_with("ucx") { 1 } else { 3 }; // 9 MiB in 4 MiB chunks
        assert_eq!(e.copies().h2d - before, expected, "copies up to the receiver's GPU");
    }
    assert_eq!(receiver_gpu.staging_stats().in_use, 0, "{name}");

    assert_eq!(echoed.frames[0].as_host().expect("no GPU: host memory")[..], bytes[..]);
    assert_eq!(echoed.frames[1].as_host().unwrap()[..], [1u8; 10]);
}

fn emulated(gpu: &weft_gpu::Gpu) -> Option<&weft_gpu::EmulatedGpu> {
    match gpu.backend() {
        weft_gpu::GpuBackend::Emulated(e) => Some(e),
        weft_gpu::GpuBackend::Cuda(_) => None,
    }
}

/// Closes and drops a connection without reading the peer's answering
/// close: over UCX that close datagram arrives with no receive posted.
async fn closing_without_reading_the_peers_close(addr: &str) {
    let mut listener = listen(addr, &config("server")).await.unwrap();
    let at = listener.local_addr().to_string();
    let server = tokio::spawn(async move { echo(listener.accept().await.unwrap()).await });
    let mut connection = connect(&at, &config("client")).await.unwrap();
    connection.send(message(1, 8, &[100, 70_000])).await.unwrap();
    assert_same(
        &connection.recv().await.unwrap().expect("echo"),
        &message(1, 8, &[100, 70_000]),
    );
    connection.close().await.unwrap();
    drop(connection);
    server.await.unwrap();
}

/// UCX prints `unexpected tag-receive descriptor ... was not matched` when
/// a worker is destroyed with a datagram nobody received (the peer's close
/// crossing ours). Runs the scenario in a child process, whose stderr is
/// where UCX writes, and checks that UCX had nothing to say.
#[cfg(feature = "ucx")]
#[test]
fn ucx_leaves_no_unmatched_receive_at_close() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "closing_without_reading_the_peers_close::ucx", "--nocapture"])
        .env("UCX_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the scenario ran"
    );
    assert!(!stderr.contains("was not matched"), "{stderr}");
}

/// Over a byte stream a device frame larger than a chunk goes out chunk
/// by chunk through the sender's staging pool, a few chunks at a time, not
/// staged whole; its bytes arrive in order between the frames around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_device_frames_are_sent_a_few_chunks_at_a_time() {
    let gpu = weft_gpu::Gpu::emulated(0, 64 * MIB, true);
    let bytes: Vec<u8> = (0..21 * MIB + 7).map(|i| (i % 247) as u8).collect();
    let buffer = gpu.stream().unwrap().upload(&bytes).unwrap();
    let mut listener = listen("tcp://127.0.0.1:0", &config("server")).await.unwrap();
    let at = listener.local_addr().to_string();
    let server = tokio::spawn(async move { echo(listener.accept().await.unwrap()).await });
    let mut connection = connect(&at, &config("client")).await.unwrap();
    let sent = Message::new(
        &b"device"[..],
        vec![
            Buffer::host(vec![1u8; 10]),
            Buffer::device(buffer),
            Buffer::host(vec![2u8; 3]),
        ],
    );
    connection.send(sent).await.unwrap();
    let got = connection.recv().await.unwrap().expect("echo");
    assert_eq!(got.frames[0].as_host().unwrap()[..], [1u8; 10]);
    assert!(
        got.frames[1].as_host().unwrap()[..] == bytes[..],
        "the device frame's bytes"
    );
    assert_eq!(got.frames[2].as_host().unwrap()[..], [2u8; 3]);
    connection.close().await.unwrap();
    server.await.unwrap();
    let staging = gpu.staging_stats();
    let chunk = weft_gpu::pool::size_class(4 * MIB);
    assert_eq!(staging.in_use, 0, "{staging:?}");
    assert!(
        staging.cached <= 3 * chunk && staging.allocated <= 3,
        "at most three 4 MiB chunks staged at once, not 21 MiB: {staging:?}"
    );
}

socket_tests!(
    closing_without_reading_the_peers_close,
    socket_round_trip,
    tokens_that_match_are_accepted,
    halves_send_and_receive_concurrently,
    device_frames_arrive_as_their_bytes,
    device_frames_land_in_the_receivers_gpu
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip() {
    let pki = Pki::new();
    let server = Config {
        tls: Some(pki.tls(Some("server"), "ca.pem", false)),
        ..config("server")
    };
    let client = Config {
        tls: Some(pki.tls(None, "ca.pem", false)),
        ..config("client")
    };
    round_trip("tls://127.0.0.1:0", server, client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_round_trip() {
    let pki = Pki::new();
    let server = Config {
        tls: Some(pki.tls(Some("server"), "ca.pem", true)),
        ..config("server")
    };
    let client = Config {
        tls: Some(pki.tls(Some("client"), "ca.pem", false)),
        ..config("client")
    };
    round_trip("tls://127.0.0.1:0", server, client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_tokens_that_match_are_accepted() {
    tokens_that_match_are_accepted("inproc://with-token").await;
}

/// In process, frames are passed by reference: the receiver sees the very
/// buffer the sender made.
#[tokio::test]
async fn inproc_passes_frames_without_copying() {
    let mut listener = listen("inproc://zero-copy", &config("server")).await.unwrap();
    let client = connect("inproc://zero-copy", &config("client")).await.unwrap();
    let mut server = listener.accept().await.unwrap();
    let sent = message(9, 10, &[MIB, 0, 7]);
    client.send(sent.clone()).await.unwrap();
    let got = server.recv().await.unwrap().unwrap();
    assert_eq!(got.header.as_ptr(), sent.header.as_ptr());
    for (g, s) in got.frames.iter().zip(&sent.frames) {
        assert_eq!(g.as_host().unwrap().as_ptr(), s.as_host().unwrap().as_ptr());
    }
}

/// Halves work from separate tasks at once: both sides send while they
/// receive.
async fn halves_send_and_receive_concurrently(addr: &str) {
    let mut listener = listen(addr, &config("server")).await.unwrap();
    let addr = listener.local_addr().to_string();
    let client = connect(&addr, &config("client")).await.unwrap();
    let server = listener.accept().await.unwrap();
    let (client_tx, client_rx) = client.split();
    let (server_tx, server_rx) = server.split();
    let n = 200u64;
    let send = |tx: weft_transport::Sender| async move {
        for i in 0..n {
            tx.send(message(i, 8, &[(i as usize) * 4099])).await.unwrap();
        }
        tx.close().await.unwrap();
    };
    let recv = |mut rx: weft_transport::Receiver| async move {
        let mut i = 0;
        while let Some(got) = rx.recv().await.unwrap() {
            assert_same(&got, &message(i, 8, &[(i as usize) * 4099]));
            i += 1;
        }
        assert_eq!(i, n);
    };
    tokio::join!(send(client_tx), send(server_tx), recv(client_rx), recv(server_rx));
}
