//! The `weft` command: run a scheduler, a worker, a local cluster, the
//! demo, or the benchmarks shared with the peer comparison scripts.

mod bench;
mod demo;
mod size;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use weft::{LocalCluster, LocalOptions, Registry, SchedulerOptions, WorkerOptions, worker_main};
use weft_runtime::local::{install_logging, run_worker_process};
use weft_runtime::observe::{ObserveConfig, Observer};

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
        /// Address to listen on.
        #[arg(long, default_value = "tcp://0.0.0.0:8786")]
        listen: String,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Run a worker that joins the scheduler at ADDR.
    Worker {
        /// The scheduler's address, such as tcp://10.0.0.1:8786.
        scheduler: String,
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
        /// Address to serve results on (port 0: any free port).
        #[arg(long, default_value = "tcp://127.0.0.1:0")]
        listen: String,
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
    worker_main(Registry::builtin());
    install_logging("warn,weft=info");
    if let Err(error) = run(Cli::parse().command) {
        eprintln!("weft: {error:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Worker {
            scheduler,
            nthreads,
            memory_limit,
            spill_dir,
            name,
            listen,
            timeout,
        } => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut options = WorkerOptions::new(scheduler, nthreads.unwrap_or(cores));
            options.memory.limit = memory_limit.unwrap_or_else(weft_runtime::store::machine_memory);
            options.memory.watch_process = true;
            if let Some(dir) = spill_dir {
                options.memory.spill_dir = dir;
            }
            options.name = name;
            options.listen = listen;
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
        Command::Scheduler { listen, dashboard } => {
            let mut options = SchedulerOptions::new(listen);
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
        Command::Worker { .. } => unreachable!("workers run on their own runtime"),
    }
    Ok(())
}

/// The machine's default layout, with overrides.
fn local_options(workers: Option<usize>, nthreads: Option<usize>) -> LocalOptions {
    let mut options = LocalOptions::for_this_machine();
    options.workers = workers.unwrap_or(options.workers);
    options.nthreads = nthreads.unwrap_or(options.nthreads);
    options.startup_timeout = Duration::from_secs(60);
    options
}
