//! A local cluster: a scheduler plus workers on this machine, either as
//! processes spawned from a program that calls [`worker_main`] first (so
//! user ops are there), or as tasks in this process (for tests).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use weft_transport::Config as TransportConfig;

use crate::client::Client;
use crate::error::{Result, RuntimeError};
use crate::ops::Registry;
use crate::server::{SchedulerHandle, SchedulerOptions, start_scheduler};
use crate::worker::{WorkerOptions, run_worker};

/// Environment variables that make [`worker_main`] run a worker.
const ENV_SCHEDULER: &str = "WEFT_WORKER_SCHEDULER";
const ENV_NAME: &str = "WEFT_WORKER_NAME";
const ENV_NTHREADS: &str = "WEFT_WORKER_NTHREADS";

/// Where the workers of a local cluster run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerMode {
    /// Child processes of this program (or of `program`), which must call
    /// [`worker_main`] before anything else.
    Processes {
        /// The executable to spawn; `None` for the current one.
        program: Option<PathBuf>,
    },
    /// Tasks in this process, talking over TCP like the real thing.
    InProcess,
}

/// How a local cluster is laid out.
#[derive(Clone)]
pub struct LocalOptions {
    /// Number of workers.
    pub workers: usize,
    /// Compute threads per worker.
    pub nthreads: usize,
    /// Processes or in-process tasks.
    pub mode: WorkerMode,
    /// Ops of in-process workers (processes build their own).
    pub registry: Arc<Registry>,
    /// The scheduler's settings; its listen address defaults to a free
    /// loopback port.
    pub scheduler: SchedulerOptions,
    /// How long to wait for every worker to register.
    pub startup_timeout: Duration,
    /// Environment variables set for worker processes (such as
    /// `WEFT_SAME_HOST_SHM=0`), beside what they inherit.
    pub env: Vec<(String, String)>,
}

impl LocalOptions {
    /// The default layout for this machine: one worker per core up to
    /// four cores, beyond that about the square root of the cores with the
    /// rest as threads (as Dask's `LocalCluster` splits them).
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (workers, nthreads) = split_cores(cores);
        LocalOptions {
            workers,
            nthreads,
            mode: WorkerMode::Processes { program: None },
            registry: Arc::new(Registry::builtin()),
            scheduler: SchedulerOptions::new("tcp://127.0.0.1:0"),
            startup_timeout: Duration::from_secs(30),
            env: Vec::new(),
        }
    }
}

/// Workers and threads per worker for `cores` cores.
pub fn split_cores(cores: usize) -> (usize, usize) {
    let cores = cores.max(1);
    if cores <= 4 {
        return (cores, 1);
    }
    let workers = (cores as f64).sqrt().ceil() as usize;
    (workers, cores / workers)
}

enum Worker {
    Process(Child),
    Task {
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<Result<()>>,
    },
}

/// A running local cluster; dropping it stops everything.
pub struct LocalCluster {
    scheduler: SchedulerHandle,
    workers: Vec<Worker>,
}

impl LocalCluster {
    /// Starts a scheduler and its workers and waits until all have
    /// registered.
    pub async fn start(options: LocalOptions) -> Result<LocalCluster> {
        let scheduler = start_scheduler(options.scheduler.clone()).await?;
        let address = scheduler.address().to_string();
        let mut workers = Vec::with_capacity(options.workers);
        for i in 0..options.workers {
            let name = format!("local-{i}");
            workers.push(match &options.mode {
                WorkerMode::Processes { program } => {
                    let program = match program {
                        Some(program) => program.clone(),
                        None => std::env::current_exe().map_err(|source| RuntimeError::Process {
                            what: "cannot find the current executable".into(),
                            source,
                        })?,
                    };
                    let child = Command::new(&program)
                        .env(ENV_SCHEDULER, &address)
                        .env(ENV_NAME, &name)
                        .env(ENV_NTHREADS, options.nthreads.to_string())
                        .envs(options.env.iter().map(|(k, v)| (k, v)))
                        .kill_on_drop(true)
                        .spawn()
                        .map_err(|source| RuntimeError::Process {
                            what: format!("cannot start worker {} from {}", name, program.display()),
                            source,
                        })?;
                    Worker::Process(child)
                }
                WorkerMode::InProcess => {
                    let mut worker = WorkerOptions::new(address.clone(), options.nthreads);
                    worker.name = Some(name);
                    worker.registry = options.registry.clone();
                    worker.transport = options.scheduler.transport.clone();
                    let (stop, stopped) = oneshot::channel::<()>();
                    let task = tokio::spawn(run_worker(worker, async {
                        let _ = stopped.await;
                    }));
                    Worker::Task { stop: Some(stop), task }
                }
            });
        }
        let cluster = LocalCluster { scheduler, workers };
        cluster
            .wait_for_workers(options.workers, options.startup_timeout)
            .await?;
        info!(%address, workers = options.workers, nthreads = options.nthreads, "local cluster up");
        Ok(cluster)
    }

    /// The scheduler's address.
    pub fn address(&self) -> &str {
        self.scheduler.address()
    }

    /// A client of this cluster.
    pub async fn client(&self) -> Result<Client> {
        Client::connect(self.address(), &TransportConfig::default()).await
    }

    /// Process ids of the worker processes (none for in-process workers).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers
            .iter()
            .filter_map(|w| match w {
                Worker::Process(child) => child.id(),
                Worker::Task { .. } => None,
            })
            .collect()
    }

    /// Workers registered with the scheduler right now.
    pub fn workers_registered(&self) -> usize {
        self.scheduler.workers_registered()
    }

    /// Waits until `n` workers are registered.
    pub async fn wait_for_workers(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.workers_registered() < n {
            if Instant::now() > deadline {
                return Err(RuntimeError::Config(format!(
                    "only {} of {n} workers registered within {timeout:?} (worker processes run this \
                     program again: does its main call weft::worker_main first?)",
                    self.workers_registered()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Kills worker `i` at once, as `kill -9` would (for tests of
    /// resilience); in-process workers are aborted.
    pub async fn kill_worker(&mut self, i: usize) -> Result<()> {
        match self.workers.get_mut(i) {
            Some(Worker::Process(child)) => child.kill().await.map_err(|source| RuntimeError::Process {
                what: format!("cannot kill worker {i}"),
                source,
            }),
            Some(Worker::Task { task, .. }) => {
                task.abort();
                Ok(())
            }
            None => Err(RuntimeError::Config(format!("no worker {i}"))),
        }
    }

    /// Stops the workers, then the scheduler.
    pub async fn stop(mut self) {
        for worker in self.workers.drain(..) {
            match worker {
                Worker::Process(mut child) => {
                    if let Err(error) = child.kill().await {
                        warn!(%error, "cannot stop a worker process");
                    }
                }
                Worker::Task { mut stop, task } => {
                    if let Some(stop) = stop.take() {
                        let _ = stop.send(());
                    }
                    let _ = task.await;
                }
            }
        }
        self.scheduler.stop().await;
    }
}

/// Call first thing in `main` of any program that starts a local cluster
/// of processes: in a process the cluster spawned as a worker, this runs
/// the worker with `registry` and exits; anywhere else it returns at once.
pub fn worker_main(registry: Registry) {
    let Ok(scheduler) = std::env::var(ENV_SCHEDULER) else {
        return;
    };
    let nthreads = std::env::var(ENV_NTHREADS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut options = WorkerOptions::new(scheduler, nthreads);
    options.name = std::env::var(ENV_NAME).ok();
    options.registry = Arc::new(registry);
    // A worker of a local cluster does not outlive its scheduler by long.
    options.reconnect_timeout = Duration::from_secs(5);
    let code = match run_worker_process(options) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("weft worker: {error}");
            1
        }
    };
    std::process::exit(code);
}

/// Runs a worker on its own runtime until Ctrl-C or until its scheduler
/// stays away.
pub fn run_worker_process(options: WorkerOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| RuntimeError::Process {
            what: "cannot start the async runtime".into(),
            source,
        })?;
    runtime.block_on(run_worker(options, async {
        let _ = tokio::signal::ctrl_c().await;
    }))
}
