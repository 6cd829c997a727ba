//! Prints the transport's figures next to their peers, all measured in
//! this one run: TCP throughput of 64 MiB frames next to `iperf3`
//! single-stream loopback, small-message round trips next to a raw tokio
//! ping-pong, and `inproc://` throughput across frame sizes.
//!
//! Built with the `ucx` feature, it also measures `ucx://` throughput of
//! 64 MiB frames under `UCX_TLS=tcp` and under shared memory
//! (`UCX_TLS=sm,self,tcp`), each next to `ucx_perftest -t tag_bw` with the
//! same `UCX_TLS` and message size, run here as a server and a client
//! process on loopback. UCX reads `UCX_TLS` once per process, so each
//! setting is measured by a child process of this binary
//! (`--ucx-throughput`).
//!
//! `benches/transport.sh` installs iperf3 (and ucx_perftest) and runs this
//! in release mode.

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use weft_benches::baseline::iperf3_loopback;
use weft_benches::median;
use weft_benches::transport::{one_way, one_way_gbps, pair, ping_pong, raw_ping_pong};

const REPS: usize = 5;
const MIB: usize = 1 << 20;
/// Buffer size of the throughput figures, and message size of ucx_perftest.
const BIG: usize = 64 * MIB;
/// The UCX transport selections measured: TCP, and shared memory (with TCP
/// for the connection setup, which UCX 1.13's sockaddr listener needs).
const UCX_TLS: [&str; 2] = ["tcp", "sm,self,tcp"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if std::env::args().nth(1).as_deref() == Some("--ucx-throughput") {
        // Child mode: one figure for the UCX_TLS this process was given.
        let gbps = runtime.block_on(one_way_gbps("ucx://127.0.0.1:0", BIG, 16, REPS))?;
        println!("{gbps}");
        return Ok(());
    }
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
    let mut ucx = Vec::new();
    if cfg!(feature = "ucx") {
        for tls in UCX_TLS {
            let ours = ucx_child(tls)?;
            let perftest = ucx_perftest_tag_bw(tls)?;
            match perftest {
                Some(peer) => println!(
                    "(d) ucx UCX_TLS={tls} 64 MiB frames: {ours:.2} GB/s; ucx_perftest tag_bw: {peer:.2} GB/s; ratio {:.0}%",
                    100.0 * ours / peer
                ),
                None => println!(
                    "(d) ucx UCX_TLS={tls} 64 MiB frames: {ours:.2} GB/s; ucx_perftest not installed (benches/transport.sh installs it)"
                ),
            }
            ucx.push(json!({"ucx_tls": tls, "gbps": ours, "ucx_perftest_gbps": perftest, "ratio": perftest.map(|p| ours / p)}));
        }
    } else {
        println!("(d) ucx: not built; run with --features ucx (benches/transport.sh does when UCX is installed)");
    }
    let json = json!({
        "tcp_64mib_gbps": tcp,
        "iperf3_gbps": iperf,
        "tcp_vs_iperf3": iperf.map(|i| tcp / i),
        "rtt_us": ours,
        "raw_rtt_us": raw,
        "rtt_vs_raw": ours / raw,
        "inproc": figures.inproc.iter().map(|(size, gbps, rate)| json!({"frame_bytes": size, "gbps": gbps, "messages_per_s": rate})).collect::<Vec<_>>(),
        "ucx": ucx,
        "reps": REPS,
    });
    println!("{json}");
    Ok(())
}

struct Figures {
    tcp_gbps: f64,
    rtt_us: f64,
    raw_rtt_us: f64,
    /// Buffer size, GB/s and messages per second.
    inproc: Vec<(usize, f64, f64)>,
}

async fn measure() -> Result<Figures, Box<dyn std::error::Error>> {
    let tcp = one_way_gbps("tcp://127.0.0.1:0", BIG, 16, REPS).await?;

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
        tcp_gbps: tcp,
        rtt_us: median(&mut ours),
        raw_rtt_us: median(&mut raw),
        inproc,
    })
}

/// `ucx://` throughput measured by a child process of this binary under
/// `UCX_TLS=tls`, in GB/s.
fn ucx_child(tls: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let output = Command::new(std::env::current_exe()?)
        .arg("--ucx-throughput")
        .env("UCX_TLS", tls)
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("the UCX measurement under UCX_TLS={tls} failed: {}", output.status).into());
    }
    // UCX logs to stdout too: the figure is the last line that is one.
    let stdout = String::from_utf8(output.stdout)?;
    let figure = stdout.lines().rev().find_map(|line| line.trim().parse().ok());
    figure.ok_or_else(|| format!("the UCX measurement under UCX_TLS={tls} printed no figure: {stdout}").into())
}

/// Median of three `ucx_perftest -t tag_bw` runs of 64 MiB messages on
/// loopback under `UCX_TLS=tls`, in GB/s (10^9 bytes), or `None` when
/// ucx_perftest is not installed.
fn ucx_perftest_tag_bw(tls: &str) -> Result<Option<f64>, Box<dyn std::error::Error>> {
    if Command::new("ucx_perftest")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return Ok(None);
    }
    let size = BIG.to_string();
    let common = ["-t", "tag_bw", "-s", &size, "-n", "100", "-w", "10"];
    let mut runs = Vec::new();
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
            .to_string();
        let mut server = Command::new("ucx_perftest")
            .args(["-p", &port])
            .args(common)
            .env("UCX_TLS", tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(500));
        let output = Command::new("ucx_perftest")
            .args(["127.0.0.1", "-p", &port])
            .args(common)
            .env("UCX_TLS", tls)
            .output()?;
        server.wait()?;
        // "Final: iterations lat(typical avg overall) bw(average overall) MB/s ..."
        let text = String::from_utf8_lossy(&output.stdout);
        let overall_mb = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("Final:"))
            .and_then(|rest| rest.split_whitespace().nth(5))
            .and_then(|field| field.parse::<f64>().ok())
            .ok_or_else(|| format!("ucx_perftest printed no Final line under UCX_TLS={tls}: {text}"))?;
        // ucx_perftest's MB are 2^20 bytes.
        runs.push(overall_mb * MIB as f64 / 1e9);
    }
    Ok(Some(median(&mut runs)))
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
