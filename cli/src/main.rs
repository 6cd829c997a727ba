//! The `weft` command: run a scheduler, a worker, a local cluster, the
//! demo, or the benchmarks shared with the peer comparison scripts.

mod bench;
mod config;
mod demo;
mod logging;
mod security;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::Settings;
use weft::{LocalCluster, LocalOptions, SchedulerOptions, WorkerOptions, worker_main};
use weft_runtime::local::{open_gpu, run_worker_process};
use weft_runtime::observe::{ObserveConfig, Observer};
use weft_runtime::protocol::ResourceAmount;

/// Weft: distributed execution for GPU clusters.
#[derive(Parser)]
#[command(name = "weft", version, about)]
struct Cli {
    /// Settings file (TOML) [default: $WEFT_CONFIG, else
    /// ~/.config/weft/weft.toml when it exists]; `weft config show` lists
    /// every setting.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scheduler.
    Scheduler {
        /// Address to listen on (`tls://` with the TLS flags) [default:
        /// tcp://0.0.0.0:8786].
        #[arg(long)]
        listen: Option<String>,
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
        #[arg(long, value_parser = weft_gpu::units::parse_size)]
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
        /// Give up when the scheduler cannot be reached for this long (at
        /// start or after losing it), such as 60s or 5m [default: 60s].
        #[arg(long, value_parser = config::parse_duration)]
        timeout: Option<Duration>,
        /// Address of the worker's own status page and /metrics: HOST:PORT,
        /// or :PORT for every interface [default: a free port on the host
        /// it listens on]; the scheduler's dashboard links it.
        #[arg(long)]
        dashboard_address: Option<String>,
        /// Serve no status page.
        #[arg(long, conflicts_with = "dashboard_address")]
        no_dashboard: bool,
    },
    /// Start a scheduler and workers on this machine; runs until Ctrl-C.
    Local {
        /// Scheduler address [default: tcp://127.0.0.1:8786].
        #[arg(long)]
        listen: Option<String>,
        /// Workers (default: from the machine's cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Threads per worker (default: from the machine's cores).
        #[arg(long)]
        nthreads: Option<usize>,
        #[command(flatten)]
        dashboard: DashboardArgs,
        /// The scheduler's and the workers' (one certificate for all).
        #[command(flatten)]
        security: security::Security,
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
    /// The effective settings (file, `WEFT_*` variables, defaults).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
    /// Records the flags in `settings`.
    fn record(&self, settings: &mut Settings) -> Result<()> {
        settings.flag(
            "dashboard.address",
            "--dashboard-address",
            self.dashboard_address.as_ref(),
        )?;
        settings.flag(
            "dashboard.enabled",
            "--no-dashboard",
            self.no_dashboard.then_some(false),
        )
    }

    /// The dashboard as `settings` say, for the commands that serve one.
    fn from_settings(settings: &Settings) -> Self {
        DashboardArgs {
            dashboard_address: settings.get("dashboard.address"),
            no_dashboard: !settings.switch("dashboard.enabled"),
        }
    }

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

/// Every op a `weft` process runs: the library's, and the benches' own
/// (their workers are processes of this binary).
fn registry() -> weft::Registry {
    let mut registry = weft::registry();
    bench::device_transfer::register(&mut registry);
    registry
}

fn main() {
    worker_main(registry());
    let cli = Cli::parse();
    let result = Settings::load(cli.config.as_deref()).and_then(|mut settings| {
        record_flags(&cli.command, &mut settings)?;
        logging::install(&settings)?;
        run(cli.command, settings)
    });
    if let Err(error) = result {
        eprintln!("weft: {error:#}");
        std::process::exit(1);
    }
}

/// Puts the flags given to `command` over the file's and the variables'
/// settings.
fn record_flags(command: &Command, settings: &mut Settings) -> Result<()> {
    match command {
        Command::Scheduler {
            listen,
            security,
            dashboard,
        } => {
            settings.flag("scheduler.listen", "--listen", listen.as_ref())?;
            security.record(settings)?;
            dashboard.record(settings)
        }
        Command::Worker {
            security,
            nthreads,
            memory_limit,
            spill_dir,
            listen,
            contact_address,
            timeout,
            dashboard_address,
            no_dashboard,
            ..
        } => {
            security.record(settings)?;
            settings.flag("worker.dashboard", "--no-dashboard", no_dashboard.then_some(false))?;
            settings.flag(
                "worker.dashboard-address",
                "--dashboard-address",
                dashboard_address.as_ref(),
            )?;
            settings.flag("worker.nthreads", "--nthreads", nthreads.as_ref())?;
            settings.flag("worker.memory-limit", "--memory-limit", memory_limit.as_ref())?;
            settings.flag(
                "worker.spill-dir",
                "--spill-dir",
                spill_dir.as_ref().map(|d| d.display()),
            )?;
            settings.flag("worker.listen", "--listen", listen.as_ref())?;
            settings.flag("worker.contact-address", "--contact-address", contact_address.as_ref())?;
            let timeout = timeout.map(|t| format!("{}ms", t.as_millis()));
            settings.flag("worker.reconnect-timeout", "--timeout", timeout)
        }
        Command::Local {
            listen,
            dashboard,
            security,
            ..
        } => {
            settings.flag("local.listen", "--listen", listen.as_ref())?;
            security.record(settings)?;
            dashboard.record(settings)
        }
        Command::Demo { dashboard, .. } => dashboard.record(settings),
        _ => Ok(()),
    }
}

/// The transport's settings: timeouts and limits from `settings`, then the
/// TLS files and shared secret.
fn transport(settings: &Settings) -> Result<weft::transport::Config> {
    let mut config = weft::transport::Config {
        connect_timeout: settings.duration("transport.connect-timeout"),
        handshake_timeout: settings.duration("transport.handshake-timeout"),
        io_timeout: settings.duration("transport.io-timeout"),
        shared_memory: settings.switch("transport.same-host-shm"),
        ..Default::default()
    };
    if let Some(max) = settings.count("transport.max-connections") {
        config.max_connections = max;
    }
    if let Some(max) = settings.size("transport.max-frame") {
        config.limits.max_frame_bytes = max;
    }
    if let Some(max) = settings.size("transport.max-message") {
        config.limits.max_message_bytes = max;
    }
    security::apply(settings, &mut config)?;
    Ok(config)
}

/// The scheduler's options from `settings`, listening on `listen`.
fn scheduler_options(settings: &Settings, listen: String) -> Result<SchedulerOptions> {
    let mut options = SchedulerOptions::new(listen);
    options.transport = transport(settings)?;
    options.heartbeat_timeout = settings.duration("scheduler.heartbeat-timeout");
    options.balance_interval = settings.duration("scheduler.balance-interval");
    options.observe = DashboardArgs::from_settings(settings).observe();
    Ok(options)
}

fn run(command: Command, settings: Settings) -> Result<()> {
    match command {
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            print!("{}", settings.show());
            Ok(())
        }
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
            name,
            gpu,
            gpus: None,
            resources,
            ..
        } => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut options = WorkerOptions::new(scheduler, settings.count("worker.nthreads").unwrap_or(cores));
            options.registry = std::sync::Arc::new(registry());
            let memory = &mut options.memory;
            memory.limit = settings
                .size("worker.memory-limit")
                .unwrap_or_else(weft_runtime::store::machine_memory);
            memory.device_limit = settings.size("worker.device-memory-limit").unwrap_or(0);
            memory.target = settings.fraction("worker.memory-target");
            memory.spill = settings.fraction("worker.memory-spill");
            memory.pause = settings.fraction("worker.memory-pause");
            memory.terminate = settings.fraction("worker.memory-terminate");
            memory.watch_process = true;
            if let Some(dir) = settings.get("worker.spill-dir") {
                memory.spill_dir = dir.into();
            }
            options.name = name;
            options.listen = settings
                .get("worker.listen")
                .unwrap_or_else(|| weft_runtime::worker::default_listen(&options.scheduler, "0.0.0.0"));
            options.contact = settings.get("worker.contact-address");
            options.transport = transport(&settings)?;
            if let Some(index) = gpu {
                options.pin_gpu(open_gpu(index).context("--gpu")?);
            }
            options.resources.extend(resources.map(|r| r.0).unwrap_or_default());
            options.heartbeat = settings.duration("worker.heartbeat");
            options.dashboard = settings
                .switch("worker.dashboard")
                .then(|| weft_dashboard::worker_dashboard(settings.get("worker.dashboard-address")));
            options.reconnect_timeout = settings.duration("worker.reconnect-timeout");
            Ok(run_worker_process(options)?)
        }
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run_async(command, settings))
        }
    }
}

async fn run_async(command: Command, settings: Settings) -> Result<()> {
    let dashboard = DashboardArgs::from_settings(&settings);
    match command {
        Command::Scheduler { .. } => {
            let listen = settings.get("scheduler.listen").context("scheduler.listen is empty")?;
            let options = scheduler_options(&settings, listen)?;
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
        Command::Local { workers, nthreads, .. } => {
            let mut options = local_options(workers, nthreads);
            let listen = settings.get("local.listen").context("local.listen is empty")?;
            options.scheduler = scheduler_options(&settings, listen)?;
            options.tls_files = security::files(&settings);
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
        Command::Demo { workers, .. } => {
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
        Command::Worker { .. } | Command::Tls { .. } | Command::Config { .. } => {
            unreachable!("run without the async runtime")
        }
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

/// `weft config ...`.
#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every setting, its value and where that came from.
    Show,
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
    options.registry = std::sync::Arc::new(registry());
    options.workers = workers.unwrap_or(options.workers);
    options.nthreads = nthreads.unwrap_or(options.nthreads);
    options.startup_timeout = Duration::from_secs(60);
    options
}
