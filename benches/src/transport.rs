//! Transport workloads: one-way throughput, small-message ping-pong, and
//! the raw tokio ping-pong they are compared with.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_transport::{Buffer, Config, Connection, Message, TransportError, connect, listen};

/// A connected pair over `addr` (port 0 or an inproc name).
///
/// In process the byte budget is the largest there is (4 GiB), so that
/// even 64 MiB frames queue by the dozen and what is measured is the hand
/// over, not waits for credit.
pub async fn pair(addr: &str) -> Result<(Connection, Connection), TransportError> {
    let config = Config {
        inproc_max_in_flight_bytes: usize::MAX,
        ..Config::default()
    };
    let mut listener = listen(addr, &config).await?;
    let target = listener.local_addr().to_string();
    let (client, server) = tokio::join!(connect(&target, &config), listener.accept());
    Ok((client?, server?))
}

/// Sends `count` messages with one frame of `frame` each from `tx` to
/// `rx` and returns the time until `rx` has received them all, with `rx`
/// back. The receiver runs as its own task, so sending and receiving can
/// use two cores, as iperf3's two processes do.
pub async fn one_way(
    tx: &Connection,
    mut rx: Connection,
    frame: &Bytes,
    count: usize,
) -> Result<(Duration, Connection), TransportError> {
    let start = Instant::now();
    let expected = frame.len();
    let receive = tokio::spawn(async move {
        for _ in 0..count {
            let message = rx.recv().await?.ok_or_else(|| closed("receiver"))?;
            debug_assert_eq!(message.frames[0].len(), expected);
        }
        Ok::<_, TransportError>(rx)
    });
    for _ in 0..count {
        tx.send(Message::new(Bytes::new(), vec![Buffer::host(frame.clone())]))
            .await?;
    }
    let rx = receive.await.map_err(|_| closed("receiver task"))??;
    Ok((start.elapsed(), rx))
}

/// One-way throughput over `addr` (port 0) in GB/s: the median of `reps`
/// runs of `count` messages of one `frame_len`-byte frame each, after a
/// warm-up that fills the receiver's buffer pool.
pub async fn one_way_gbps(addr: &str, frame_len: usize, count: usize, reps: usize) -> Result<f64, TransportError> {
    let (client, mut server) = pair(addr).await?;
    // A pooled frame, as a received result is: both ends then have the
    // same kind of pages.
    let mut buf = weft_transport::BufferPool::default().take(frame_len);
    buf.as_mut_slice().fill(1);
    let frame = buf.freeze();
    (_, server) = one_way(&client, server, &frame, 4).await?;
    let mut runs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let elapsed;
        (elapsed, server) = one_way(&client, server, &frame, count).await?;
        runs.push((count * frame_len) as f64 / elapsed.as_secs_f64() / 1e9);
    }
    Ok(crate::median(&mut runs))
}

/// `rounds` round trips of a `size`-byte header-only message; returns
/// the time per round trip.
pub async fn ping_pong(
    client: &mut Connection,
    server: &mut Connection,
    size: usize,
    rounds: usize,
) -> Result<Duration, TransportError> {
    let header = Bytes::from(vec![7u8; size]);
    let echo = async {
        for _ in 0..rounds {
            let message = server.recv().await?.ok_or_else(|| closed("server"))?;
            server.send(message).await?;
        }
        Ok::<_, TransportError>(())
    };
    let start = Instant::now();
    let drive = async {
        for _ in 0..rounds {
            client.send(Message::new(header.clone(), Vec::new())).await?;
            client.recv().await?.ok_or_else(|| closed("client"))?;
        }
        Ok::<_, TransportError>(start.elapsed())
    };
    let (echoed, elapsed) = tokio::join!(echo, drive);
    echoed?;
    Ok(elapsed? / rounds as u32)
}

/// The same ping-pong on bare tokio sockets with `TCP_NODELAY`: the floor
/// a framed transport is measured against.
pub async fn raw_ping_pong(size: usize, rounds: usize) -> std::io::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (mut client, (mut server, _)) = (client?, server?);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let echo = async {
        let mut buf = vec![0u8; size];
        for _ in 0..rounds {
            server.read_exact(&mut buf).await?;
            server.write_all(&buf).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let start = Instant::now();
    let drive = async {
        let mut buf = vec![7u8; size];
        for _ in 0..rounds {
            client.write_all(&buf).await?;
            client.read_exact(&mut buf).await?;
        }
        Ok::<_, std::io::Error>(start.elapsed())
    };
    let (echoed, elapsed) = tokio::join!(echo, drive);
    echoed?;
    Ok(elapsed? / rounds as u32)
}

fn closed(side: &str) -> TransportError {
    TransportError::Closed {
        peer: format!("benchmark {side}"),
    }
}
