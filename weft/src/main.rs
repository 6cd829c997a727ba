//! The `weft` command: run a scheduler, a worker, a local cluster, the
//! demo, or the benchmarks shared with the peer comparison scripts.

mod bench;
mod demo;
mod security;
mod size;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use weft::{LocalCluster, LocalOptions, SchedulerOptions, WorkerOptions, worker_main};
use weft_runtime::local::{install_logging, open_gpu, run_worker_process};
use weft_runtime::observe::{ObserveConfig, Observer};
use weft_runtime::protocol::ResourceAmount;

/// Weft: distributed execution for GPU clusters.
#[derive(Parser)]
#[command(name = "weft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scheduler.
    Scheduler {
        /// Address to listen on (`tls://` with the TLS flags).
        #[arg(long, default_value = "tcp://0.0.0.0:8786")]
        listen: String,
        #[command(flatten)]
        security: security::Security,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Run a worker that joins the scheduler at ADDR.
    Worker {
        /// The scheduler's address, such as tcp://10.0.0.1:8786.
        scheduler: String,
        #[command(flatten)]
        security: security::Security,
        /// Compute threads (default: every core).
        #[arg(long)]
        nthreads: Option<usize>,
        /// Memory limit for results, such as 8GiB or 500MB; past 60% of it
        /// results spill to disk, past 80% the worker pauses (default: the
        /// machine's memory; 0: no limit).
        #[arg(long, value_parser = size::parse)]
        memory_limit: Option<u64>,
        /// Where to spill results (default: the system's temporary directory).
        #[arg(long)]
        spill_dir: Option<std::path::PathBuf>,
        /// Unique worker name (default: from its address).
        #[arg(long)]
        name: Option<String>,
        /// Address to serve results on (port 0: any free port); by default
        /// every interface (over the scheduler address's scheme: tcp, tls
        /// or ucx), advertised as this host's address on the route to the
        /// scheduler.
        #[arg(long)]
        listen: Option<String>,
        /// The address to give peers and clients instead (behind NAT, or a
        /// name they resolve), such as tcp://node7.example:40000.
        #[arg(long)]
        contact_address: Option<String>,
        /// Pin the worker to GPU N of this machine (CUDA's numbering;
        /// emulated GPUs count too): its results live there, and it offers
        /// `gpu = 1`, so tasks that ask for a GPU run one at a time.
        #[arg(long, conflicts_with = "gpus")]
        gpu: Option<usize>,
        /// One worker process per GPU: `all`, or a list such as `0,2`; each
        /// is this command again with `--gpu I` (and `--name NAME-gpuI`).
        #[arg(long)]
        gpus: Option<String>,
        /// Resources this worker offers besides its GPU, such as
        /// `licence=1,scratch=4`: a task that asks for some runs only while
        /// they are free.
        #[arg(long, value_parser = parse_resources)]
        resources: Option<Resources>,
        /// Give up when the scheduler cannot be reached for this many
        /// seconds (at start or after losing it).
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// Start a scheduler and workers on this machine; runs until Ctrl-C.
    Local {
        /// Scheduler address.
        #[arg(long, default_value = "tcp://127.0.0.1:8786")]
        listen: String,
        /// Workers (default: from the machine's cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Threads per worker (default: from the machine's cores).
        #[arg(long)]
        nthreads: Option<usize>,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Run the demo on a local cluster: a map of 100,000 tasks and a tree
    /// reduction over 65,536 leaves.
    Demo {
        /// Workers (default: from the machine's cores).
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Certificates for a cluster with mutual TLS.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Run a benchmark workload and print one JSON line in the schema of
    /// the peer scripts (../shared/peers).
    Bench(bench::Args),
    /// Write a performance report (one standalone HTML file) of the last
    /// seconds of a running scheduler, from its dashboard.
    Report {
        /// The dashboard's address, HOST:PORT (as served by `weft
        /// scheduler` or `weft local`).
        #[arg(long, default_value = "127.0.0.1:8787")]
        dashboard: String,
        /// Seconds back from now (the dashboard keeps the last minute).
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// The file to write.
        #[arg(long, short, default_value = "weft-report.html")]
        output: std::path::PathBuf,
    },
}

/// Where the scheduler's dashboard listens.
#[derive(clap::Args)]
struct DashboardArgs {
    /// Address of the dashboard (pages, /metrics, /api/state, /health):
    /// HOST:PORT, or :PORT for every interface [default: :8787, or a free
    /// port when that is taken].
    #[arg(long)]
    dashboard_address: Option<String>,
    /// Serve no dashboard.
    #[arg(long)]
    no_dashboard: bool,
}

impl DashboardArgs {
    /// What the scheduler should publish for it.
    fn observe(&self) -> Option<ObserveConfig> {
        (!self.no_dashboard).then(ObserveConfig::default)
    }

    /// Serves the dashboard over `observer` (if there is one) and says where.
    async fn serve(&self, observer: Option<Observer>) -> Result<Option<weft_dashboard::Dashboard>> {
        let Some(observer) = observer else {
            return Ok(None);
        };
        let address = self
            .dashboard_address
            .clone()
            .unwrap_or_else(|| weft_dashboard::DEFAULT_ADDRESS.to_string());
        let options = weft_dashboard::DashboardOptions {
            address: address.clone(),
            ..Default::default()
        };
        let dashboard = match weft_dashboard::serve(observer.clone(), options.clone()).await {
            // The default port taken (another cluster here?): like Dask,
            // serve on a free port and say so. A port asked for is an error.
            Err(weft_dashboard::DashboardError::Bind { source, .. }) if self.dashboard_address.is_none() => {
                let fallback = weft_dashboard::DashboardOptions {
                    address: ":0".into(),
                    ..options
                };
                let dashboard = weft_dashboard::serve(observer, fallback).await?;
                eprintln!(
                    "weft: the dashboard's port {address} is taken ({source}); serving it on port {} instead \
                     (choose one with --dashboard-address, or turn it off with --no-dashboard)",
                    dashboard.local_addr().port()
                );
                dashboard
            }
            other => other?,
        };
        println!("dashboard at {}", dashboard.url());
        Ok(Some(dashboard))
    }
}

fn main() {
    worker_main(weft::registry());
    install_logging("warn,weft=info");
    if let Err(error) = run(Cli::parse().command) {
        eprintln!("weft: {error:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Worker { gpus: Some(which), .. } => one_worker_per_gpu(&which),
        Command::Tls {
            command: TlsCommand::Generate { dir, hosts },
        } => {
            let hosts = if hosts.is_empty() {
                security::default_hosts()
            } else {
                hosts
            };
            security::generate(&dir, &hosts)?;
            println!(
                "wrote ca.pem and scheduler, worker and client certificates for {} into {}",
                hosts.join(", "),
                dir.display()
            );
            Ok(())
        }
        Command::Worker {
            scheduler,
            nthreads,
            memory_limit,
            spill_dir,
            name,
            listen,
            gpu,
            gpus: None,
            resources,
            timeout,
            contact_address,
            security,
        } => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut options = WorkerOptions::new(scheduler, nthreads.unwrap_or(cores));
            options.memory.limit = memory_limit.unwrap_or_else(weft_runtime::store::machine_memory);
            options.memory.watch_process = true;
            if let Some(dir) = spill_dir {
                options.memory.spill_dir = dir;
            }
            options.name = name;
            options.listen = listen.unwrap_or_else(|| {
                let scheme = options.scheduler.split_once("://").map_or("tcp", |(scheme, _)| scheme);
                format!("{scheme}://0.0.0.0:0")
            });
            options.contact = contact_address;
            security.apply(&mut options.transport)?;
            if let Some(index) = gpu {
                options.pin_gpu(open_gpu(index).context("--gpu")?);
            }
            options.resources.extend(resources.map(|r| r.0).unwrap_or_default());
            options.reconnect_timeout = Duration::try_from_secs_f64(timeout).context("--timeout")?;
            Ok(run_worker_process(options)?)
        }
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run_async(command))
        }
    }
}

async fn run_async(command: Command) -> Result<()> {
    match command {
        Command::Scheduler {
            listen,
            security,
            dashboard,
        } => {
            let mut options = SchedulerOptions::new(listen);
            security.apply(&mut options.transport)?;
            options.observe = dashboard.observe();
            let scheduler = weft_runtime::start_scheduler(options).await?;
            println!("scheduler at {}", scheduler.address());
            let board = match dashboard.serve(scheduler.observer()).await {
                Ok(board) => board,
                Err(error) => {
                    scheduler.stop().await;
                    return Err(error);
                }
            };
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            if let Some(board) = board {
                board.stop().await;
            }
            scheduler.stop().await;
        }
        Command::Local {
            listen,
            workers,
            nthreads,
            dashboard,
        } => {
            let mut options = local_options(workers, nthreads);
            options.scheduler = SchedulerOptions::new(listen);
            options.scheduler.observe = dashboard.observe();
            let cluster = LocalCluster::start(options).await?;
            println!(
                "scheduler at {} with {} workers; Ctrl-C stops",
                cluster.address(),
                cluster.workers_registered()
            );
            let board = match dashboard.serve(cluster.observer()).await {
                Ok(board) => board,
                Err(error) => {
                    cluster.stop().await;
                    return Err(error);
                }
            };
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            if let Some(board) = board {
                board.stop().await;
            }
            cluster.stop().await;
        }
        Command::Demo { workers, dashboard } => {
            let mut options = local_options(workers, None);
            options.scheduler.observe = dashboard.observe();
            demo::run(options, |observer| dashboard.serve(observer)).await?
        }
        Command::Bench(args) => bench::run(args).await?,
        Command::Report {
            dashboard,
            seconds,
            output,
        } => {
            let host = dashboard.trim_start_matches("http://").trim_end_matches('/');
            let addr = weft_dashboard::parse_address(host)?;
            let (status, body) = weft_dashboard::viewer::fetch(addr, &format!("/report?seconds={seconds}"))
                .await
                .with_context(|| format!("cannot reach the dashboard at {host}"))?;
            anyhow::ensure!(status == 200, "the dashboard at {host} answered {status}");
            std::fs::write(&output, body).with_context(|| format!("cannot write {}", output.display()))?;
            println!("report written to {}", output.display());
        }
        Command::Worker { .. } | Command::Tls { .. } => unreachable!("run without the async runtime"),
    }
    Ok(())
}

/// `weft worker --gpus WHICH`: runs this command again once per GPU, with
/// `--gpu I` instead of `--gpus` (and the name, if any, suffixed), and
/// waits for them all; the first that fails makes this fail. On Linux the
/// workers stop when this process dies.
fn one_worker_per_gpu(which: &str) -> Result<()> {
    let gpus: Vec<usize> = if which == "all" {
        (0..weft_runtime::local::gpu_count()).collect()
    } else {
        which
            .split(',')
            .map(|i| {
                i.trim()
                    .parse()
                    .with_context(|| format!("--gpus {which}: {i:?} is not a GPU number"))
            })
            .collect::<Result<_>>()?
    };
    anyhow::ensure!(
        !gpus.is_empty(),
        "--gpus {which}: no GPU found (CUDA, or WEFT_EMULATED_GPUS)"
    );
    // This command's arguments less `--gpus`, `--gpu` and `--name`.
    let mut rest = Vec::new();
    let mut name = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "--gpus" | "--gpu" | "--name" => {
                let value = inline.or_else(|| args.next());
                if flag == "--name" {
                    name = value;
                }
            }
            _ => rest.push(arg),
        }
    }
    let program = std::env::current_exe().context("cannot find the weft executable")?;
    let mut children = Vec::new();
    for gpu in gpus {
        let mut command = std::process::Command::new(&program);
        command.args(&rest).args(["--gpu", &gpu.to_string()]);
        if let Some(name) = &name {
            command.args(["--name", &format!("{name}-gpu{gpu}")]);
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl(2) with constant arguments, between fork and
            // exec: async-signal-safe, touches no memory of ours.
            unsafe {
                command.pre_exec(|| {
                    // Stop (as on Ctrl-C) when this process dies.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                    Ok(())
                });
            }
        }
        children.push((
            gpu,
            command
                .spawn()
                .with_context(|| format!("cannot start the worker of GPU {gpu}"))?,
        ));
    }
    let mut failed = None;
    for (gpu, mut child) in children {
        let status = child
            .wait()
            .with_context(|| format!("waiting for the worker of GPU {gpu}"))?;
        if !status.success() && failed.is_none() {
            failed = Some(format!("the worker of GPU {gpu} stopped with {status}"));
        }
    }
    failed.map_or(Ok(()), |why| Err(anyhow::anyhow!(why)))
}

/// `weft tls ...`.
#[derive(Subcommand)]
enum TlsCommand {
    /// Write a certificate authority (ca.pem, ca.key) and scheduler, worker
    /// and client certificates signed by it (ROLE.pem, ROLE.key) into DIR.
    Generate {
        /// Where to write them (created if missing; existing files are
        /// never overwritten).
        dir: std::path::PathBuf,
        /// Host names and addresses the certificates are valid for
        /// (default: this host's name, localhost, 127.0.0.1 and ::1).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
    },
}

/// Resources from the command line.
#[derive(Clone, Debug)]
struct Resources(Vec<ResourceAmount>);

/// Parses `name=amount[,name=amount...]`.
fn parse_resources(text: &str) -> Result<Resources, String> {
    let parsed = text
        .split(',')
        .map(|item| {
            let (name, amount) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not NAME=AMOUNT (such as gpu=1)"))?;
            let amount = amount
                .trim()
                .parse()
                .map_err(|_| format!("the amount of {name:?} ({amount:?}) is not a whole number"))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("{item:?} names no resource"));
            }
            Ok(ResourceAmount {
                name: name.into(),
                amount,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Resources(parsed))
}

/// The machine's default layout, with overrides.
fn local_options(workers: Option<usize>, nthreads: Option<usize>) -> LocalOptions {
    let mut options = LocalOptions::for_this_machine();
    options.workers = workers.unwrap_or(options.workers);
    options.nthreads = nthreads.unwrap_or(options.nthreads);
    options.startup_timeout = Duration::from_secs(60);
    options
}
