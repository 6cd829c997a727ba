//! What the machine itself does, measured beside Weft in the same run:
//! `iperf3` single-stream TCP on loopback and `memcpy` into warm and into
//! freshly faulted memory. Reports put Weft's figures next to these.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::median;

/// Median of `runs` single-stream `iperf3` runs on loopback of `seconds`
/// each, in bytes per second, or `None` when iperf3 is not installed
/// (`benches/transport.sh` installs it).
pub fn iperf3_loopback(runs: usize, seconds: u32) -> Result<Option<f64>, Box<dyn std::error::Error>> {
    if Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Ok(None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port()
        .to_string();
    let mut rates = Vec::new();
    for _ in 0..runs {
        let mut server = Command::new("iperf3")
            .args(["-s", "-1", "-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        let output = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port, "-t", &seconds.to_string(), "-J"])
            .output()?;
        server.wait()?;
        let report: Value = serde_json::from_slice(&output.stdout)?;
        let bits = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .ok_or("iperf3 printed no end.sum_received.bits_per_second")?;
        rates.push(bits / 8.0);
    }
    Ok(Some(median(&mut rates)))
}

/// `memcpy` of `bytes` bytes, in bytes per second (median of `runs`):
/// between two buffers already faulted in (`warm`), and into a fresh
/// allocation whose pages the copy faults in (cold).
pub fn memcpy(bytes: usize, runs: usize) -> (f64, f64) {
    let source = vec![1u8; bytes];
    let mut target = vec![2u8; bytes];
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        target.copy_from_slice(&source);
        warm.push(bytes as f64 / started.elapsed().as_secs_f64());
        std::hint::black_box(&target);
        // A zeroed allocation this large is fresh pages from the kernel,
        // not yet touched.
        let started = Instant::now();
        let mut fresh = vec![0u8; bytes];
        fresh.copy_from_slice(&source);
        cold.push(bytes as f64 / started.elapsed().as_secs_f64());
        std::hint::black_box(&fresh);
    }
    (median(&mut warm), median(&mut cold))
}
