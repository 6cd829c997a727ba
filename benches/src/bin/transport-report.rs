//! Prints the transport's figures next to their peers, all measured in
//! this one run: TCP throughput of 64 MiB frames next to `iperf3`
//! single-stream loopback, small-message round trips next to a raw tokio
//! ping-pong, and `inproc://` throughput across frame sizes.
//!
//! `benches/transport.sh` installs iperf3 and runs this in release mode.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use weft_benches::baseline::iperf3_loopback;
use weft_benches::median;
use weft_benches::transport::{one_way, pair, ping_pong, raw_ping_pong};

const REPS: usize = 5;
const MIB: usize = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let iperf = iperf3_loopback(3, 3)?.map(|bytes_per_s| bytes_per_s / 1e9);
    let figures = runtime.block_on(measure())?;
    let tcp = figures.tcp_gbps;
    match iperf {
        Some(iperf) => println!(
            "(a) tcp 64 MiB frames: {tcp:.2} GB/s; iperf3 single stream: {iperf:.2} GB/s; ratio {:.0}%",
            100.0 * tcp / iperf
        ),
        None => {
            println!("(a) tcp 64 MiB frames: {tcp:.2} GB/s; iperf3 not installed (benches/transport.sh installs it)")
        }
    }
    let (ours, raw) = (figures.rtt_us, figures.raw_rtt_us);
    println!(
        "(b) 64-byte round trip: {ours:.1} us; raw tokio ping-pong: {raw:.1} us; ratio {:.2}x",
        ours / raw
    );
    for (size, gbps, rate) in &figures.inproc {
        println!(
            "(c) inproc {:>2} MiB frames: {gbps:>8.1} GB/s, {rate:>9.0} messages/s",
            size / MIB
        );
    }
    let json = json!({
        "tcp_64mib_gbps": tcp,
        "iperf3_gbps": iperf,
        "tcp_vs_iperf3": iperf.map(|i| tcp / i),
        "rtt_us": ours,
        "raw_rtt_us": raw,
        "rtt_vs_raw": ours / raw,
        "inproc": figures.inproc.iter().map(|(size, gbps, rate)| json!({"frame_bytes": size, "gbps": gbps, "messages_per_s": rate})).collect::<Vec<_>>(),
        "reps": REPS,
    });
    println!("{json}");
    Ok(())
}

struct Figures {
    tcp_gbps: f64,
    rtt_us: f64,
    raw_rtt_us: f64,
    /// Frame size, GB/s and messages per second.
    inproc: Vec<(usize, f64, f64)>,
}

async fn measure() -> Result<Figures, Box<dyn std::error::Error>> {
    let (client, mut server) = pair("tcp://127.0.0.1:0").await?;
    let frame = Bytes::from(vec![1u8; 64 * MIB]);
    let count = 16;
    (_, server) = one_way(&client, server, &frame, 4).await?; // warm the pool
    let mut tcp = Vec::new();
    for _ in 0..REPS {
        let elapsed;
        (elapsed, server) = one_way(&client, server, &frame, count).await?;
        tcp.push(gbps(count * frame.len(), elapsed));
    }

    let (mut client, mut server) = pair("tcp://127.0.0.1:0").await?;
    let rounds = 10_000;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    ping_pong(&mut client, &mut server, 64, 1000).await?;
    raw_ping_pong(64, 1000).await?;
    for _ in 0..REPS {
        // Interleaved, so drifting machine load hits both alike.
        ours.push(micros(ping_pong(&mut client, &mut server, 64, rounds).await?));
        raw.push(micros(raw_ping_pong(64, rounds).await?));
    }

    let (client, mut server) = pair("inproc://transport-report").await?;
    let mut inproc = Vec::new();
    for size in [MIB, 4 * MIB, 16 * MIB, 64 * MIB] {
        let frame = Bytes::from(vec![1u8; size]);
        let count = 20_000;
        let mut rates = Vec::new();
        for _ in 0..REPS {
            let elapsed;
            (elapsed, server) = one_way(&client, server, &frame, count).await?;
            rates.push(count as f64 / elapsed.as_secs_f64());
        }
        let rate = median(&mut rates);
        inproc.push((size, rate * size as f64 / 1e9, rate));
    }
    Ok(Figures {
        tcp_gbps: median(&mut tcp),
        rtt_us: median(&mut ours),
        raw_rtt_us: median(&mut raw),
        inproc,
    })
}

fn gbps(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
