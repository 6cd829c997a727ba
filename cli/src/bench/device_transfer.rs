//! `weft bench transfer --device emulated|cuda`: a device result made on
//! worker A (its float64s uploaded to A's GPU, untimed) is summed on worker
//! B by a device kernel, timed from handing the sum over until its result
//! is at the client. Both workers are processes of this binary pinned to
//! GPU 0 of their process (on a one-GPU node both share it; emulated GPUs
//! are one per process), so the result moves by whatever path Weft picks
//! between GPU workers of one host: device IPC, or the socket into B's GPU.
//!
//! The line is the peers' schema (`params` says the device). On stderr:
//! the path taken (from B's count of IPC copies and whether the input was
//! on its GPU) and the device-to-device copy bandwidth of GPU 0 measured
//! in the same run. The check fails unless the sum is right, ran on B on
//! an input in B's device memory, and, on emulated GPUs, came by IPC.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use weft::gpu::{Buffer, DeviceConfig, Devices, Gpu};
use weft::ops::OpContext;
use weft::{Client, OpError, Registry, Value};
use weft_benches::median;
use weft_kernels::{Column, DType};

use super::transfer::WORKER_A;
use super::{Args, CpuWindow, Report, start};

/// Makes `n` float64s on the worker's GPU.
const ARANGE: &str = "bench_arange_f64_device";
/// Sums a device-resident input on the worker's GPU.
const SUM: &str = "bench_sum_f64_device";

/// Registers the ops this workload runs on its workers (processes of this
/// binary, so the CLI's registry has them).
pub fn register(registry: &mut Registry) {
    registry.raw_op(ARANGE, arange).raw_op(SUM, sum);
}

fn gpu_of<'a>(ctx: &'a OpContext, op: &str) -> Result<&'a Arc<Gpu>, OpError> {
    ctx.gpu()
        .ok_or_else(|| OpError::from(format!("{op} runs on a GPU worker; {} has none", ctx.worker())))
}

fn arange(ctx: &OpContext, args: &[u8], _: &[Arc<Value>]) -> Result<Value, OpError> {
    let gpu = gpu_of(ctx, ARANGE)?;
    let n: u64 = weft::ops::decode_args(args)?;
    let values = Buffer::from_vec((0..n).map(|i| i as f64).collect::<Vec<f64>>());
    let stream = gpu.thread_stream()?;
    let buffer = stream.upload(values.as_host().map_or(&[], |b| &b[..]))?;
    stream.synchronize()?;
    let mut value = Value::encode(&n)?;
    value.frames.push(Buffer::device(buffer));
    Ok(value)
}

/// What the sum on B says about itself: the sum, whether the input was in
/// this worker's own device memory, and how many buffers its GPU has
/// copied in by IPC so far.
type Summed = (f64, bool, u64);

fn sum(ctx: &OpContext, _: &[u8], inputs: &[Arc<Value>]) -> Result<Value, OpError> {
    let gpu = gpu_of(ctx, SUM)?;
    let frame = inputs
        .first()
        .and_then(|v| v.frames.first())
        .ok_or_else(|| OpError::from(format!("{SUM} takes one input with a frame of float64s")))?;
    let on_device = frame.as_device().is_some_and(|d| Arc::ptr_eq(d.gpu(), gpu));
    let column = Column::new(DType::F64, frame.len() / 8, frame.clone(), None, None).map_err(|e| e.to_string())?;
    let column = if on_device {
        column
    } else {
        column.to_device(gpu).map_err(|e| e.to_string())?
    };
    let total = weft_kernels::reduce::sum(&column).map_err(|e| e.to_string())?;
    let summed: Summed = (total.as_f64(), on_device, gpu.ipc_copies());
    Ok(Value::encode(&summed)?)
}

/// Runs the workload on `device`; fills `report` and returns the check.
pub(super) async fn measure(args: &Args, device: &str, mib: usize, report: &mut Report) -> Result<String> {
    if args.workers < 2 {
        bail!("transfer needs two workers (--workers 2)");
    }
    let mut env = vec![(weft_runtime::local::ENV_GPU.to_string(), "0".to_string())];
    match device {
        "emulated" => env.extend([
            ("WEFT_EMULATED_GPUS".to_string(), "1".to_string()),
            ("WEFT_DISABLE_CUDA".to_string(), "1".to_string()),
            // Room for the result, its copy and the warm-up.
            (
                "WEFT_EMULATED_GPU_MEMORY".to_string(),
                format!("{}", 4 * (mib << 20) + (256 << 20)),
            ),
        ]),
        "cuda" => {}
        other => bail!("transfer --device takes cpu, emulated or cuda, not {other:?}"),
    }
    let d2d = d2d_bandwidth(device, mib << 20, args.reps.max(3))?;
    let n = ((mib << 20) / 8) as u64;
    let (cluster, client) = start(args, env, report).await?;
    let pair = Pair {
        client: &client,
        ipc_seen: Default::default(),
    };
    pair.rep(1 << 17).await?;
    let window = CpuWindow::open(&cluster.worker_pids());
    let (mut check, mut paths) = ("ok".to_string(), Vec::new());
    for _ in 0..args.reps {
        let (seconds, verdict, path) = pair.rep(n).await?;
        report.times.push(seconds);
        if verdict != "ok" {
            check = verdict;
        }
        paths.push(path);
    }
    report.line.insert("foreign_cpu_s".into(), json!(window.foreign()));
    drop(client);
    cluster.stop().await;
    paths.dedup();
    let path = paths.join(", then ");
    if device == "emulated" && check == "ok" && path != "ipc copy" {
        check = format!("moved by {path}, not by device IPC");
    }
    let mut times = report.times.clone();
    let rate = (n * 8) as f64 / median(&mut times).max(f64::MIN_POSITIVE);
    eprintln!(
        "weft transfer --device {device}: path {path}; {:.2} GB/s, device-to-device copy {:.2} GB/s ({:.0}%)",
        rate / 1e9,
        d2d / 1e9,
        100.0 * rate / d2d
    );
    Ok(check)
}

/// Bytes per second of a device-to-device copy of `bytes` on GPU 0 of
/// `device`'s kind, median of `reps`, measured in this process.
fn d2d_bandwidth(device: &str, bytes: usize, reps: usize) -> Result<f64> {
    let gpu = if device == "cuda" {
        Devices::open_one(&DeviceConfig::default(), 0).context("--device cuda")?
    } else {
        Gpu::emulated(0, 2 * bytes + (1 << 20), true)
    };
    let stream = gpu.thread_stream()?;
    let (src, dst) = (gpu.alloc(bytes)?, gpu.alloc(bytes)?);
    stream.memset_zero(&src, bytes)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..=reps {
        let started = Instant::now();
        stream.copy_d2d(&src, &dst)?.synchronize()?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.remove(0); // warm-up
    Ok(bytes as f64 / median(&mut times).max(f64::MIN_POSITIVE))
}

struct Pair<'a> {
    client: &'a Client,
    /// B's count of IPC copies after the last repetition.
    ipc_seen: std::cell::Cell<u64>,
}

impl Pair<'_> {
    /// Makes `n` float64s on A's GPU (untimed), then times their sum on B.
    /// Returns the seconds, the check and the path the input took.
    async fn rep(&self, n: u64) -> Result<(f64, String, String)> {
        let moved = super::transfer::a_to_b(self.client, "arange-device", ARANGE, n, SUM).await?;
        let (sum, on_device, ipc_copies): Summed = moved.value.decode().map_err(anyhow::Error::msg)?;
        let path = if ipc_copies > self.ipc_seen.replace(ipc_copies) {
            "ipc copy"
        } else if on_device {
            "socket into device memory"
        } else {
            "host memory"
        }
        .to_string();
        let expected = (n * n.saturating_sub(1) / 2) as f64;
        let verdict = if moved.same_worker {
            format!("consumer ran on the producer's worker {WORKER_A}, not on worker B")
        } else if !on_device {
            "the input reached B in host memory, not in its device memory".to_string()
        } else if sum != expected {
            format!("mismatch: got {sum}, expected {expected}")
        } else {
            "ok".to_string()
        };
        Ok((moved.seconds, verdict, path))
    }
}
