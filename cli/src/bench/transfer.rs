//! `weft bench transfer`: a task restricted to worker A makes `mib` MiB of
//! float64s (untimed, kept in memory); the timed part is a task restricted
//! to worker B that sums them, from handing it over until its result is at
//! the client. That moves the array from A to B by whatever path Weft picks:
//! shared memory between workers on one host, the socket otherwise.
//!
//! Beside the peers' schema the line carries, from the same run: `path`
//! (how the main figure moved its data), `socket` (the same workload with
//! shared memory turned off, plus `move_*`: a consumer that reads none of
//! the data, so pure transfer) and `baselines` (iperf3 single-stream
//! loopback, memcpy warm and into fresh pages). `compare.sh` reads only
//! the schema's fields and keeps the whole line in its log.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value as Json, json};
use weft::ops::args;
use weft::{Client, TaskSpec};
use weft_benches::baseline;
use weft_benches::median;
use weft_transport::shm::ENV_SAME_HOST_SHM;

use super::{Args, CpuWindow, Report, start};

/// The peers' default size.
pub const DEFAULT_MIB: usize = 256;

/// Names of the workers a local cluster starts first and second.
pub(super) const WORKER_A: &str = "local-0";
const WORKER_B: &str = "local-1";

/// Elements of the untimed warm-up (the peers' 2^17).
const WARM_ELEMENTS: u64 = 1 << 17;

/// Untimed pause after each repetition, so the releases of its results
/// reach both workers before the next array is made (its memory is then
/// reused, as it would be in a steady stream of transfers).
const SETTLE: Duration = Duration::from_millis(100);

/// Runs the workload; fills `report` and returns the check.
pub(super) async fn measure(args: &Args, mib: usize, report: &mut Report) -> Result<String> {
    if args.workers < 2 {
        bail!("transfer needs two workers (--workers 2)");
    }
    let n = ((mib << 20) / 8) as u64;
    let socket_only = if args.no_shm {
        vec![(ENV_SAME_HOST_SHM.to_string(), "0".to_string())]
    } else {
        Vec::new()
    };
    let (cluster, client) = start(args, socket_only, report).await?;
    let pair = Pair { client: &client };
    pair.rep(WARM_ELEMENTS, "sum_f64").await?;
    let window = CpuWindow::open(&cluster.worker_pids());
    let mut check = "ok".to_string();
    for _ in 0..args.reps {
        let (seconds, verdict) = pair.rep(n, "sum_f64").await?;
        report.times.push(seconds);
        if verdict != "ok" {
            check = verdict;
        }
    }
    report.line.insert("foreign_cpu_s".into(), json!(window.foreign()));
    drop(client);
    cluster.stop().await;
    let path = if args.no_shm || !weft_transport::shm::allowed_by_env() || weft_transport::shm::host_id().is_none() {
        "socket"
    } else {
        "shared memory"
    };
    report.line.insert("path".into(), json!(path));
    if args.no_baselines {
        return Ok(check);
    }

    let bytes = (n * 8) as f64;
    let mut socket = serde_json::Map::new();
    if path != "socket" {
        let mut scratch = Report::new("transfer", Json::Null, args.reps, 0, "bytes");
        let env = vec![(ENV_SAME_HOST_SHM.to_string(), "0".to_string())];
        let (cluster, client) = start(args, env, &mut scratch).await?;
        let pair = Pair { client: &client };
        pair.rep(WARM_ELEMENTS, "sum_f64").await?;
        let (mut sums, mut moves) = (Vec::new(), Vec::new());
        for _ in 0..args.reps {
            // Interleaved, so drifting load hits both alike.
            let (seconds, verdict) = pair.rep(n, "sum_f64").await?;
            sums.push(seconds);
            if verdict != "ok" {
                check = format!("socket path: {verdict}");
            }
            moves.push(pair.rep(n, "nbytes").await?.0);
        }
        drop(client);
        cluster.stop().await;
        socket.insert("all_s".into(), json!(sums));
        socket.insert("move_all_s".into(), json!(moves));
        let (sum, moved) = (median(&mut sums), median(&mut moves));
        socket.insert("median_s".into(), json!(sum));
        socket.insert("rate".into(), json!(bytes / sum));
        socket.insert("move_median_s".into(), json!(moved));
        socket.insert("move_rate".into(), json!(bytes / moved));
    }

    let iperf3 = tokio::task::spawn_blocking(|| baseline::iperf3_loopback(3, 2).map_err(|e| e.to_string()))
        .await
        .context("iperf3 baseline")?
        .map_err(anyhow::Error::msg)?;
    let (warm, cold) = baseline::memcpy(n as usize * 8, 5);
    let move_rate = socket.get("move_rate").and_then(Json::as_f64);
    report.line.insert(
        "baselines".into(),
        json!({
            "iperf3_single_stream_Bps": iperf3,
            "memcpy_warm_Bps": warm,
            "memcpy_cold_Bps": cold,
            "socket_move_vs_iperf3": move_rate.zip(iperf3).map(|(ours, theirs)| ours / theirs),
        }),
    );
    if !socket.is_empty() {
        report.line.insert("socket".into(), Json::Object(socket));
    }
    let gbps = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.2} GB/s", x / 1e9));
    eprintln!(
        "weft transfer: socket move {} (iperf3 single stream {}); memcpy warm {}, into fresh pages {}",
        gbps(move_rate),
        gbps(iperf3),
        gbps(Some(warm)),
        gbps(Some(cold)),
    );
    Ok(check)
}

/// Producer and consumer tasks over one client.
struct Pair<'a> {
    client: &'a Client,
}

impl Pair<'_> {
    /// Makes `n` float64s on A (untimed), then times `op` on B over them
    /// until its result is here. Returns the seconds and the check.
    async fn rep(&self, n: u64, op: &str) -> Result<(f64, String)> {
        let moved = a_to_b(self.client, "arange", "arange_f64", n, op).await?;
        let verdict = if moved.same_worker {
            format!("consumer ran on the producer's worker {WORKER_A}, not on worker B")
        } else if op == "sum_f64" {
            let (got, expected) = (
                moved.value.decode::<f64>().map_err(anyhow::Error::msg)?,
                (n * n.saturating_sub(1) / 2) as f64,
            );
            if got == expected {
                "ok".to_string()
            } else {
                format!("mismatch: got {got}, expected {expected}")
            }
        } else {
            let got = moved.value.decode::<u64>().map_err(anyhow::Error::msg)?;
            if got >= 8 * n {
                "ok".to_string()
            } else {
                format!("mismatch: moved {got} bytes of {}", 8 * n)
            }
        };
        Ok((moved.seconds, verdict))
    }
}

/// What [`a_to_b`] timed.
pub(super) struct Moved {
    /// The consumer's result.
    pub value: weft::Value,
    /// Seconds from submitting the consumer to its result being here.
    pub seconds: f64,
    /// The consumer ran on the producer's worker, not on worker B.
    pub same_worker: bool,
}

/// Op `make` (keys named `name`) of `n` made on worker A, untimed, then op
/// `consume` on worker B over its result, timed until that result is
/// here; both released and let settle before returning.
pub(super) async fn a_to_b(client: &Client, name: &str, make: &str, n: u64, consume: &str) -> Result<Moved> {
    let mut made = TaskSpec::new(
        client.unique_key(name),
        make,
        args(&n).map_err(anyhow::Error::msg)?,
        Vec::new(),
    );
    made.annotations.workers = vec![WORKER_A.into()];
    let made = client.submit(made).await?;
    let producers = made.wait().await?;
    let mut consumer = TaskSpec::new(
        client.unique_key(consume),
        consume,
        Default::default(),
        vec![made.key().clone()],
    );
    consumer.annotations.workers = vec![WORKER_B.into()];

    let started = Instant::now();
    let done = client.submit(consumer).await?;
    let value = done.result().await?;
    let seconds = started.elapsed().as_secs_f64();

    let consumers = done.wait().await?;
    let same_worker = consumers
        .iter()
        .any(|c| producers.iter().any(|p| p.address == c.address));
    drop((done, made));
    tokio::time::sleep(SETTLE).await;
    Ok(Moved {
        value,
        seconds,
        same_worker,
    })
}
