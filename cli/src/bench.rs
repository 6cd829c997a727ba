//! `weft bench`: the workloads of `../shared/peers`, on a local cluster of
//! worker processes, printed as one JSON line in the peers' schema.

pub mod device_transfer;
mod transfer;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value as Json, json};
use weft::{Client, Graph, LocalCluster, LocalOptions, WorkerMode, graphs};

/// Arguments of `weft bench`.
#[derive(clap::Args)]
pub struct Args {
    /// noop, tree, chain, transfer or kernels.
    workload: String,
    /// Print the JSON line (always printed; kept for the peers' command line).
    #[arg(long)]
    json: bool,
    /// noop and chain: number of tasks; array workloads: the side n.
    #[arg(long)]
    n: Option<usize>,
    /// array_sum, array_add_t, matmul: the chunks' side.
    #[arg(long)]
    chunk: Option<usize>,
    /// tree: number of leaves.
    #[arg(long)]
    leaves: Option<usize>,
    /// transfer: MiB of float64s moved from worker A to worker B.
    #[arg(long)]
    mib: Option<usize>,
    /// transfer: move over the socket even between workers on this host
    /// (as WEFT_SAME_HOST_SHM=0 does), and skip the same-run socket figures.
    #[arg(long)]
    no_shm: bool,
    /// transfer: skip the same-run figures beside the main one (the socket
    /// path, iperf3 and memcpy).
    #[arg(long)]
    no_baselines: bool,
    /// Timed repetitions.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Hard limit in seconds for the whole run.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// Worker processes (the peers use 2).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads per worker (the peers use 1).
    #[arg(long, default_value_t = 1)]
    nthreads: usize,
    /// kernels: cpu, emulated or cuda (default cuda); transfer: where the
    /// result is made and consumed: cpu (default), emulated or cuda.
    #[arg(long)]
    device: Option<String>,
    /// kernels: rows of the sum, argsort and partition inputs; groupby,
    /// join, shuffle: rows of the frame.
    #[arg(long)]
    rows: Option<usize>,
    /// kernels: partitions of the hash partition; groupby, join, shuffle:
    /// partitions of the frame.
    #[arg(long)]
    parts: Option<u32>,
    /// groupby, join, shuffle: distinct keys.
    #[arg(long)]
    keys: Option<i64>,
    /// join: rows of the right frame.
    #[arg(long = "right_rows")]
    right_rows: Option<u64>,
    /// tpch_*: scale factor.
    #[arg(long)]
    sf: Option<f64>,
    /// kernels: MiB of the host<->device copies (0: none).
    #[arg(long)]
    copy_mib: Option<usize>,
    /// kernels: side of the square f64 matrices of the GEMM (0: none;
    /// default 4096 on CUDA, 128 elsewhere).
    #[arg(long)]
    gemm: Option<usize>,
    /// kernels: skip the CuPy lines on a CUDA device.
    #[arg(long)]
    no_cupy: bool,
    /// Task workloads: serve the dashboard, keep its live page's event
    /// stream open and scrape /metrics every second while timing (to
    /// measure what watching costs).
    #[arg(long)]
    dashboard: bool,
}

/// `weft bench kernels`: one JSON line per kernel (and CuPy's, on CUDA).
fn kernels(args: &Args) -> Result<()> {
    let device = args.device.clone().unwrap_or_else(|| "cuda".into());
    let defaults = weft_kernels::bench::BenchOptions::for_device(&device);
    let opts = weft_kernels::bench::BenchOptions {
        device,
        rows: args.rows.unwrap_or(defaults.rows),
        parts: args.parts.unwrap_or(defaults.parts),
        copy_bytes: args.copy_mib.map_or(defaults.copy_bytes, |m| m << 20),
        gemm: args.gemm.unwrap_or(defaults.gemm),
        reps: args.reps,
        cupy: !args.no_cupy,
    };
    let lines = weft_kernels::bench::run(&opts).map_err(anyhow::Error::msg)?;
    for line in &lines {
        println!("{line}");
    }
    Ok(())
}

/// One task workload: its size parameter and default.
struct Workload {
    name: &'static str,
    param: &'static str,
    default: usize,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "noop",
        param: "n",
        default: 10_000,
    },
    Workload {
        name: "tree",
        param: "leaves",
        default: 16_384,
    },
    Workload {
        name: "chain",
        param: "n",
        default: 5_000,
    },
];

/// The JSON line, filled in as the run goes.
struct Report {
    line: serde_json::Map<String, Json>,
    times: Vec<f64>,
}

/// What a run measures.
enum Plan {
    /// A task workload of this size.
    Tasks(&'static Workload, usize),
    /// `transfer` of this many MiB.
    Transfer(usize),
}

fn plan(args: &Args) -> Result<Plan> {
    if args.workload == "transfer" {
        if args.n.is_some() || args.leaves.is_some() {
            bail!("transfer takes --mib only");
        }
        return Ok(Plan::Transfer(args.mib.unwrap_or(transfer::DEFAULT_MIB)));
    }
    let Some(workload) = WORKLOADS.iter().find(|w| w.name == args.workload) else {
        bail!(
            "unknown or not yet supported workload {:?}; weft bench runs {}, transfer",
            args.workload,
            WORKLOADS.map(|w| w.name).join(", ")
        );
    };
    let size = match (workload.param, args.n, args.leaves, args.mib) {
        ("n", n, None, None) => n.unwrap_or(workload.default),
        ("leaves", None, leaves, None) => leaves.unwrap_or(workload.default),
        _ => bail!("{} takes --{} only", workload.name, workload.param),
    };
    Ok(Plan::Tasks(workload, size))
}

pub async fn run(args: Args) -> Result<()> {
    if args.workload == "kernels" {
        return kernels(&args);
    }
    if let Some(workload) = weft::frame::bench::Workload::new(
        &args.workload,
        args.rows.map(|r| r as u64),
        args.parts.map(|p| p as usize),
        args.keys,
        args.right_rows,
        args.sf,
    ) {
        return frames(&args, workload).await;
    }
    if weft::array::bench::WORKLOADS.contains(&args.workload.as_str()) {
        return arrays(&args).await;
    }
    let plan = plan(&args)?;
    let mut report = match &plan {
        Plan::Transfer(mib) => {
            let params = match args.device.as_deref() {
                None | Some("cpu") => json!({ "mib": mib }),
                Some(device) => json!({ "mib": mib, "device": device }),
            };
            Report::new("transfer", params, args.reps, mib << 20, "bytes")
        }
        Plan::Tasks(workload, size) => {
            let work = if workload.name == "tree" { 2 * size - 1 } else { *size };
            Report::new(workload.name, json!({ workload.param: size }), args.reps, work, "tasks")
        }
    };
    let limit = Duration::from_secs_f64(args.timeout);
    let outcome = tokio::time::timeout(limit, async {
        match plan {
            Plan::Transfer(mib) => match args.device.as_deref() {
                None | Some("cpu") => transfer::measure(&args, mib, &mut report).await,
                Some(device) => device_transfer::measure(&args, device, mib, &mut report).await,
            },
            Plan::Tasks(workload, size) => measure(&args, workload.name, size, &mut report).await,
        }
    })
    .await;
    report.conclude(outcome.map(|run| run.map(passed)))
}

/// A check and whether it passed (the peers' checks say `ok`).
fn passed(check: String) -> (String, bool) {
    let ok = check == "ok";
    (check, ok)
}

/// A dataframe workload (`weft_frame::bench`), in the peers' schema.
async fn frames(args: &Args, workload: weft::frame::bench::Workload) -> Result<()> {
    let params: serde_json::Map<String, Json> = workload
        .params()
        .into_iter()
        .map(|(k, v)| (k.to_string(), if v.fract() == 0.0 { json!(v as i64) } else { json!(v) }))
        .collect();
    let mut report = Report::new(
        &workload.name,
        Json::Object(params),
        args.reps,
        workload.work() as usize,
        "rows",
    );
    let limit = Duration::from_secs_f64(args.timeout);
    let outcome = tokio::time::timeout(limit, async {
        let (cluster, client) = start(args, Vec::new(), &mut report).await?;
        let window = CpuWindow::open(&cluster.worker_pids());
        let frames = weft::frame::Frames::new(client.clone());
        let outcome = weft::frame::bench::measure(&frames, &workload, args.reps).await;
        report.line.insert("foreign_cpu_s".into(), json!(window.foreign()));
        drop(frames);
        drop(client);
        cluster.stop().await;
        Ok::<_, anyhow::Error>(outcome?)
    })
    .await;
    let outcome = outcome.map(|run| {
        run.map(|outcome| {
            report.times = outcome.times;
            (outcome.check, outcome.agrees)
        })
    });
    report.conclude(outcome)
}

impl Report {
    fn new(workload: &str, params: Json, reps: usize, work: usize, unit: &str) -> Self {
        let mut line = serde_json::Map::new();
        line.insert("system".into(), json!("weft"));
        line.insert("workload".into(), json!(workload));
        line.insert("params".into(), params);
        line.insert("reps".into(), json!(reps));
        for field in ["median_s", "min_s", "max_s"] {
            line.insert(field.into(), Json::Null);
        }
        line.insert("all_s".into(), json!([]));
        line.insert("work".into(), json!(work));
        line.insert("unit".into(), json!(unit));
        line.insert("rate".into(), Json::Null);
        line.insert("startup_s".into(), Json::Null);
        line.insert("check".into(), json!("not run"));
        line.insert("foreign_cpu_s".into(), Json::Null);
        Report {
            line,
            times: Vec::new(),
        }
    }

    /// Finishes the line from a run's outcome (its check, an error, or a
    /// timeout), prints it and exits with the peers' status: 0 ok, 1 check
    /// failed or error, 3 timeout.
    /// `outcome` holds the check and whether it passed.
    fn conclude<E: std::fmt::Display>(
        mut self,
        outcome: std::result::Result<std::result::Result<(String, bool), E>, tokio::time::error::Elapsed>,
    ) -> Result<()> {
        let code = match outcome {
            Ok(Ok((check, passed))) => {
                self.finish(check);
                if passed { 0 } else { 1 }
            }
            Ok(Err(error)) => {
                self.finish(format!("error: {error:#}"));
                1
            }
            Err(_) => {
                self.finish("timeout".into());
                3
            }
        };
        println!("{}", Json::Object(self.line));
        if code != 0 {
            std::process::exit(code);
        }
        Ok(())
    }

    fn finish(&mut self, check: String) {
        if !self.times.is_empty() {
            let mut sorted = self.times.clone();
            sorted.sort_by(f64::total_cmp);
            let median = if sorted.len() % 2 == 1 {
                sorted[sorted.len() / 2]
            } else {
                (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
            };
            let work = self.line["work"].as_f64().unwrap_or(0.0);
            self.line.insert("median_s".into(), json!(median));
            self.line.insert("min_s".into(), json!(sorted[0]));
            self.line.insert("max_s".into(), json!(sorted[sorted.len() - 1]));
            self.line.insert("all_s".into(), json!(self.times));
            self.line.insert("rate".into(), json!(work / median));
        }
        self.line.insert("check".into(), json!(check));
        self.line.insert(
            "versions".into(),
            json!({
                "weft": env!("CARGO_PKG_VERSION"),
                "machine": std::env::consts::ARCH,
                "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            }),
        );
    }
}

/// Starts a local cluster of the run's workers (with `env` set for them)
/// and a client; records the startup time.
async fn start(args: &Args, env: Vec<(String, String)>, report: &mut Report) -> Result<(LocalCluster, Client)> {
    let mut options = LocalOptions::for_this_machine();
    options.workers = args.workers;
    options.nthreads = args.nthreads;
    options.mode = WorkerMode::Processes { program: None };
    options.env = env;
    if args.dashboard {
        options.scheduler.observe = Some(weft_runtime::observe::ObserveConfig::default());
    }
    let started = Instant::now();
    let cluster = LocalCluster::start(options).await?;
    let client = cluster.client().await?;
    // Timings only: no progress bar drawing beside them.
    client.set_progress(false);
    report
        .line
        .insert("startup_s".into(), json!(started.elapsed().as_secs_f64()));
    Ok((cluster, client))
}

/// `weft bench array_sum|array_add_t|matmul` (the workload code lives in
/// `weft::array::bench`).
async fn arrays(args: &Args) -> Result<()> {
    let (n0, c0) = weft::array::bench::defaults(&args.workload);
    let (n, chunk) = (args.n.unwrap_or(n0), args.chunk.unwrap_or(c0));
    let (work, unit) = weft::array::bench::work(&args.workload, n);
    let mut report = Report::new(&args.workload, json!({ "n": n, "chunk": chunk }), args.reps, 0, unit);
    // Whole numbers, as the peers print them (2 * 8000^3 fits a u64).
    report.line.insert("work".into(), json!(work as u64));
    let outcome = tokio::time::timeout(Duration::from_secs_f64(args.timeout), async {
        let started = Instant::now();
        // Worker processes of this executable, as the other benches run.
        let mode = WorkerMode::Processes { program: None };
        let mut bench =
            weft::array::bench::ArrayBench::start(&args.workload, (n, chunk), args.workers, args.nthreads, mode)
                .await?;
        report
            .line
            .insert("startup_s".into(), json!(started.elapsed().as_secs_f64()));
        bench.warm().await?;
        let window = CpuWindow::open(&bench.worker_pids());
        for rep in 0..args.reps {
            let t = bench.rep(rep).await?;
            report.times.push(t);
        }
        report.line.insert("foreign_cpu_s".into(), json!(window.foreign()));
        let check = bench.check().await?;
        bench.stop().await;
        Ok::<_, weft::array::ArrayError>(check)
    })
    .await;
    report.conclude(outcome.map(|run| run.map(passed)))
}

/// Starts the cluster, warms up, times the repetitions; returns the check.
async fn measure(args: &Args, workload: &str, size: usize, report: &mut Report) -> Result<String> {
    let (cluster, client) = start(args, Vec::new(), report).await?;
    let watching = match cluster.observer().filter(|_| args.dashboard) {
        Some(observer) => {
            let options = weft::dashboard::DashboardOptions {
                address: "127.0.0.1:0".into(),
                ..Default::default()
            };
            let board = weft::dashboard::serve(observer, options).await?;
            let viewer = weft::dashboard::viewer::Viewer::start(board.local_addr(), Duration::from_secs(1));
            Some((board, viewer))
        }
        None => None,
    };

    execute(&client, build(&client, workload, "warm", size.min(200))).await?;
    let window = CpuWindow::open(&cluster.worker_pids());
    let mut last = 0;
    for rep in 0..args.reps {
        let graph = build(&client, workload, &format!("rep{rep}"), size);
        let started = Instant::now();
        last = execute(&client, graph).await?;
        report.times.push(started.elapsed().as_secs_f64());
    }
    report.line.insert("foreign_cpu_s".into(), json!(window.foreign()));
    if let Some((board, viewer)) = watching {
        let seen = viewer.stop().await;
        board.stop().await;
        report.line.insert(
            "dashboard".into(),
            json!({ "messages": seen.messages, "scrapes": seen.scrapes, "failed_scrapes": seen.failures }),
        );
    }
    drop(client);
    cluster.stop().await;

    let expected = match workload {
        "chain" => size as i64,
        _ => (size as i64) * (size as i64 - 1) / 2,
    };
    Ok(if last == expected {
        "ok".into()
    } else {
        format!("mismatch: got {last}, expected {expected}")
    })
}

/// The workload's graph, with keys no other run uses (built untimed, as
/// the peers build theirs).
fn build(client: &Client, workload: &str, tag: &str, size: usize) -> Graph {
    let prefix = client.unique_key(&format!("{workload}-{tag}"));
    match workload {
        "noop" => graphs::map(&prefix, size),
        "tree" => graphs::tree(&prefix, size),
        _ => graphs::chain(&prefix, size),
    }
}

/// Hands the graph over and gathers its outputs; returns their sum.
async fn execute(client: &Client, graph: Graph) -> Result<i64> {
    let futures = client.compute(graph).await?;
    let values = client.gather(&futures).await?;
    let mut sum = 0i64;
    for value in values {
        sum += value.decode::<i64>().map_err(anyhow::Error::msg)?;
    }
    Ok(sum)
}

/// CPU used on the machine by anything other than this process and its
/// workers, over a window (the peers' `foreign_cpu_s`).
struct CpuWindow {
    pids: Vec<u32>,
    busy: f64,
    own: f64,
}

/// Linux reports CPU times in clock ticks of 1/100 s (USER_HZ, fixed by
/// the kernel's ABI).
const TICKS_PER_S: f64 = 100.0;

impl CpuWindow {
    fn open(worker_pids: &[u32]) -> Self {
        let mut pids = vec![std::process::id()];
        pids.extend_from_slice(worker_pids);
        let own = own_cpu_s(&pids);
        CpuWindow {
            pids,
            busy: busy_cpu_s(),
            own,
        }
    }

    fn foreign(&self) -> Option<f64> {
        let busy = busy_cpu_s() - self.busy;
        let own = own_cpu_s(&self.pids) - self.own;
        (busy.is_finite() && own.is_finite()).then(|| ((busy - own).max(0.0) * 100.0).round() / 100.0)
    }
}

/// Busy CPU seconds of the whole machine: all but idle and iowait.
fn busy_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 8 {
        return f64::NAN;
    }
    (fields.iter().sum::<f64>() - fields[3] - fields[4]) / TICKS_PER_S
}

/// User plus system CPU seconds of these processes.
fn own_cpu_s(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the parenthesised command name; utime and stime
            // are the 14th and 15th of the whole line.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS_PER_S)
        })
        .sum()
}
