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
use weft_gpu::{DeviceConfig, Devices, Gpu, GpuError, probe_cuda};
use weft_transport::{Config as TransportConfig, TlsConfig, TlsFiles};

use crate::client::Client;
use crate::error::{Result, RuntimeError};
use crate::ops::Registry;
use crate::server::{SchedulerHandle, SchedulerOptions, start_scheduler};
use crate::store::{MemoryConfig, MemorySnapshot, MemoryStats, machine_memory};
use crate::worker::{WorkerDashboard, WorkerOptions, run_worker};

/// How long a worker process has to stop after Ctrl-C's signal before it
/// is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Environment variables that make [`worker_main`] run a worker.
const ENV_SCHEDULER: &str = "WEFT_WORKER_SCHEDULER";
const ENV_NAME: &str = "WEFT_WORKER_NAME";
const ENV_NTHREADS: &str = "WEFT_WORKER_NTHREADS";
const ENV_MEMORY_LIMIT: &str = "WEFT_WORKER_MEMORY_LIMIT";
const ENV_SPILL_DIR: &str = "WEFT_WORKER_SPILL_DIR";
/// The GPU (index among this machine's, as [`open_gpu`] counts) a worker
/// process of a local cluster is pinned to.
pub const ENV_GPU: &str = "WEFT_WORKER_GPU";
/// The TLS files and shared secret of a local cluster's worker processes
/// (the `weft` command's own names for them).
const ENV_TLS_CA: &str = "WEFT_SECURITY_TLS_CA_FILE";
const ENV_TLS_CERT: &str = "WEFT_SECURITY_TLS_CERT";
const ENV_TLS_KEY: &str = "WEFT_SECURITY_TLS_KEY";
const ENV_TOKEN: &str = "WEFT_TOKEN";

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
    /// Each worker's memory limit and spilling; `watch_process` is set
    /// for worker processes and cleared for in-process workers, which
    /// share their process.
    pub memory: MemoryConfig,
    /// GPUs to pin worker processes to, one each: the first `gpus`
    /// workers open the devices of the `WEFT_*` environment and take
    /// theirs by index.
    pub gpus: usize,
    /// GPUs to pin in-process workers to, one each, in order.
    pub in_process_gpus: Vec<Arc<Gpu>>,
    /// Where in-process workers serve results: `tcp://127.0.0.1:0`, or
    /// `inproc://` (a name is added per worker), which passes device
    /// buffers between them by reference.
    pub worker_listen: String,
    /// Environment variables set for worker processes (such as
    /// `WEFT_SAME_HOST_SHM=0`), beside what they inherit.
    pub env: Vec<(String, String)>,
    /// The status page of each in-process worker (processes serve none).
    pub worker_dashboard: Option<WorkerDashboard>,
    /// The files the scheduler's TLS settings came from, for worker
    /// processes to load (in-process workers share the scheduler's
    /// transport settings, token included; processes get the token too).
    pub tls_files: Option<TlsFiles>,
}

impl LocalOptions {
    /// The default layout for this machine (see [`layout`]): one worker
    /// per core up to four cores, beyond that about the square root of the
    /// cores with the rest as threads (as Dask's `LocalCluster` splits
    /// them).
    ///
    /// With GPUs (real, or emulated through `WEFT_EMULATED_GPUS`), at
    /// least one worker per GPU, the first ones pinned to them, the others
    /// a CPU pool.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let gpus = gpu_count();
        let (workers, nthreads) = layout(cores, gpus);
        LocalOptions {
            workers,
            nthreads,
            mode: WorkerMode::Processes { program: None },
            registry: Arc::new(Registry::builtin()),
            scheduler: SchedulerOptions::new("tcp://127.0.0.1:0"),
            startup_timeout: Duration::from_secs(30),
            memory: MemoryConfig {
                limit: machine_memory() / workers as u64,
                ..MemoryConfig::default()
            },
            gpus,
            in_process_gpus: Vec::new(),
            worker_listen: "tcp://127.0.0.1:0".into(),
            env: Vec::new(),
            worker_dashboard: None,
            tls_files: None,
        }
    }
}

/// Workers and threads per worker for `cores` cores and `gpus` GPUs. As
/// many workers as the cores call for (one per core up to four, beyond
/// that about the square root of the cores), and at least one per GPU; the
/// first `gpus` of them are GPU workers, the rest a CPU pool beside them
/// (as dask-cuda users run). Tiny-task throughput grows with workers (each
/// has its own reactor), not with the threads of one worker: a 16-core
/// node with one GPU gets 4 workers of 4 threads, not one of 16.
pub fn layout(cores: usize, gpus: usize) -> (usize, usize) {
    let cores = cores.max(1);
    let workers = if cores <= 4 {
        cores
    } else {
        (cores as f64).sqrt().ceil() as usize
    };
    let workers = workers.max(gpus);
    (workers, (cores / workers).max(1))
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
    options: LocalOptions,
    workers: Vec<Worker>,
    /// Memory figures of in-process workers.
    memory: Vec<Arc<MemoryStats>>,
}

impl LocalCluster {
    /// Starts a scheduler and its workers and waits until all have
    /// registered.
    pub async fn start(options: LocalOptions) -> Result<LocalCluster> {
        let scheduler = start_scheduler(options.scheduler.clone()).await?;
        let address = scheduler.address().to_string();
        let mut cluster = LocalCluster {
            scheduler,
            workers: Vec::with_capacity(options.workers),
            memory: Vec::new(),
            options,
        };
        for _ in 0..cluster.options.workers {
            cluster.spawn_worker()?;
        }
        let (n, timeout) = (cluster.options.workers, cluster.options.startup_timeout);
        cluster.wait_for_workers(n, timeout).await?;
        info!(%address, workers = n, nthreads = cluster.options.nthreads, "local cluster up");
        Ok(cluster)
    }

    /// Starts one more worker, laid out as the others (without a GPU of
    /// its own once the GPUs are taken), and waits until it has
    /// registered. Returns its index, for [`LocalCluster::kill_worker`].
    pub async fn add_worker(&mut self) -> Result<usize> {
        let joined = self.scheduler.workers_joined();
        let i = self.spawn_worker()?;
        let timeout = self.options.startup_timeout;
        self.wait_until(
            timeout,
            |cluster| cluster.scheduler.workers_joined() > joined,
            |_| format!("worker {i} did not register within {timeout:?}"),
        )
        .await?;
        Ok(i)
    }

    /// Spawns worker number `self.workers.len()`; returns its index.
    fn spawn_worker(&mut self) -> Result<usize> {
        let options = &self.options;
        let address = self.scheduler.address().to_string();
        let i = self.workers.len();
        let name = format!("local-{i}");
        let worker = match &options.mode {
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
                    .env(ENV_MEMORY_LIMIT, options.memory.limit.to_string())
                    .env(ENV_SPILL_DIR, &options.memory.spill_dir)
                    .envs((i < options.gpus).then(|| (ENV_GPU, i.to_string())))
                    .envs(security_env(options))
                    .envs(options.env.iter().map(|(k, v)| (k.clone(), v.clone())))
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|source| RuntimeError::Process {
                        what: format!("cannot start worker {} from {}", name, program.display()),
                        source,
                    })?;
                Worker::Process(child)
            }
            WorkerMode::InProcess => {
                let mut worker = WorkerOptions::new(address, options.nthreads);
                worker.name = Some(name.clone());
                worker.registry = options.registry.clone();
                worker.transport = options.scheduler.transport.clone();
                worker.memory = MemoryConfig {
                    watch_process: false,
                    ..options.memory.clone()
                };
                self.memory.push(worker.memory_stats.clone());
                worker.dashboard = options.worker_dashboard.clone();
                if let Some(gpu) = options.in_process_gpus.get(i) {
                    worker.pin_gpu(gpu.clone());
                }
                worker.listen = match options.worker_listen.as_str() {
                    "inproc://" => format!("inproc://weft-{}-{name}-{:08x}", std::process::id(), fastrand::u32(..)),
                    other => other.to_string(),
                };
                let (stop, stopped) = oneshot::channel::<()>();
                let task = tokio::spawn(run_worker(worker, async {
                    let _ = stopped.await;
                }));
                Worker::Task { stop: Some(stop), task }
            }
        };
        self.workers.push(worker);
        Ok(i)
    }

    /// Memory figures of each in-process worker (none for processes, which
    /// log theirs).
    pub fn memory(&self) -> Vec<MemorySnapshot> {
        self.memory.iter().map(|m| m.snapshot()).collect()
    }

    /// What a dashboard reads, when the scheduler's options ask for it
    /// ([`SchedulerOptions::observe`]).
    pub fn observer(&self) -> Option<crate::observe::Observer> {
        self.scheduler.observer()
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
        self.wait_until(
            timeout,
            |cluster| cluster.workers_registered() >= n,
            |cluster| {
                format!(
                    "only {} of {n} workers registered within {timeout:?} (worker processes run this \
                     program again: does its main call weft::worker_main first?)",
                    cluster.workers_registered()
                )
            },
        )
        .await
    }

    /// Polls `done` until it holds, or fails with `why` after `timeout`.
    async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&Self) -> bool,
        why: impl FnOnce(&Self) -> String,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if Instant::now() > deadline {
                return Err(RuntimeError::Config(why(self)));
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

    /// Stops the workers (a process gets SIGINT, as Ctrl-C sends, and
    /// two seconds to close its connections before it is killed), then
    /// the scheduler.
    pub async fn stop(mut self) {
        // Processes are asked first, all at once, and killed if they
        // linger; tasks stop when told.
        let mut processes = Vec::new();
        for worker in self.workers.drain(..) {
            match worker {
                Worker::Process(child) => {
                    if let Some(pid) = child.id() {
                        // SAFETY: kill(2) with a pid of our own child and a
                        // signal number; it touches no memory of ours.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
                    }
                    processes.push(child);
                }
                Worker::Task { mut stop, task } => {
                    if let Some(stop) = stop.take() {
                        let _ = stop.send(());
                    }
                    let _ = task.await;
                }
            }
        }
        for mut child in processes {
            if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err()
                && let Err(error) = child.kill().await
            {
                warn!(%error, "cannot stop a worker process");
            }
        }
        self.scheduler.stop().await;
    }
}

/// What a worker process needs to join a scheduler with TLS or a token:
/// the files and the secret, as variables.
fn security_env(options: &LocalOptions) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(files) = &options.tls_files {
        env.push((ENV_TLS_CA.to_string(), files.ca.display().to_string()));
        for (name, path) in [(ENV_TLS_CERT, &files.cert), (ENV_TLS_KEY, &files.key)] {
            if let Some(path) = path {
                env.push((name.to_string(), path.display().to_string()));
            }
        }
    }
    if let Some(token) = options.scheduler.transport.token.as_ref() {
        env.push((ENV_TOKEN.to_string(), String::from_utf8_lossy(token).into_owned()));
    }
    env
}

/// The TLS and token settings of a worker process, from the variables
/// [`security_env`] set.
fn security_from_env(transport: &mut TransportConfig) -> Result<()> {
    if let Some(ca) = std::env::var_os(ENV_TLS_CA) {
        let files = TlsFiles {
            ca: ca.into(),
            cert: std::env::var_os(ENV_TLS_CERT).map(Into::into),
            key: std::env::var_os(ENV_TLS_KEY).map(Into::into),
            require_client_cert: true,
        };
        transport.tls = Some(TlsConfig::load(&files)?);
    }
    if let Ok(token) = std::env::var(ENV_TOKEN) {
        transport.token = Some(token.into_bytes());
    }
    Ok(())
}

/// Whether this process was spawned by a local cluster to be a worker
/// (and [`worker_main`] will run it).
pub fn is_worker_process() -> bool {
    std::env::var_os(ENV_SCHEDULER).is_some()
}

/// Call first thing in `main` of any program that starts a local cluster
/// of processes: in a process the cluster spawned as a worker, this runs
/// the worker with `registry` and exits; anywhere else it returns at once.
/// It may be called from a plain `main` or from an async one
/// (`#[tokio::main]`): the worker runs on a thread of its own. It installs
/// no logger: `weft::worker_main` logs to stderr first.
pub fn worker_main(registry: Registry) {
    worker_main_with(registry, None);
}

/// [`worker_main`], the worker serving its own status page and metrics
/// through `dashboard` (on a free port of its host unless it says where).
pub fn worker_main_with(registry: Registry, dashboard: Option<WorkerDashboard>) {
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
    if let Some(limit) = std::env::var(ENV_MEMORY_LIMIT).ok().and_then(|l| l.parse().ok()) {
        options.memory.limit = limit;
    }
    if let Some(dir) = std::env::var_os(ENV_SPILL_DIR) {
        options.memory.spill_dir = dir.into();
    }
    options.memory.watch_process = true;
    options.dashboard = dashboard;
    options.transport.shared_memory = weft_transport::shm::allowed_by_env();
    if let Err(error) = security_from_env(&mut options.transport) {
        eprintln!("weft worker: {error}");
        std::process::exit(1);
    }
    if let Some(index) = std::env::var(ENV_GPU).ok().and_then(|i| i.parse::<usize>().ok()) {
        match open_gpu(index) {
            Ok(gpu) => options.pin_gpu(gpu),
            Err(error) => eprintln!("weft worker: {error}; running on the CPU"),
        }
    }
    // A worker of a local cluster does not outlive its scheduler by long.
    options.reconnect_timeout = Duration::from_secs(5);
    // On a thread of its own, so that a `main` already inside an async
    // runtime (`#[tokio::main]`) can call this too: the worker's runtime
    // cannot start on a thread that runs another.
    let outcome = std::thread::Builder::new()
        .name("weft-worker".into())
        .spawn(move || run_worker_process(options))
        .map_err(|source| RuntimeError::Process {
            what: "cannot start the worker's thread".into(),
            source,
        })
        .and_then(|thread| {
            thread
                .join()
                .unwrap_or_else(|_| Err(RuntimeError::Config("the worker panicked".into())))
        });
    let code = match outcome {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("weft worker: {error}");
            1
        }
    };
    std::process::exit(code);
}

/// Opens GPU `index` of this machine, real or emulated (as the `WEFT_*`
/// environment says), for a worker to pin (see
/// [`WorkerOptions::pin_gpu`]); `weft worker --gpu` and the workers of a
/// local cluster both start so.
pub fn open_gpu(index: usize) -> Result<Arc<Gpu>> {
    let config =
        DeviceConfig::from_env().map_err(|error| RuntimeError::Config(format!("cannot open GPU {index}: {error}")))?;
    let index = u32::try_from(index).map_err(|_| RuntimeError::Config(format!("there is no GPU {index}")))?;
    Devices::open_one(&config, index).map_err(|error| match error {
        error @ GpuError::NoSuchGpu { .. } => RuntimeError::Config(error.to_string()),
        error => RuntimeError::Config(format!("cannot open GPU {index}: {error}")),
    })
}

/// GPUs here, real and emulated, counted without opening them.
pub fn gpu_count() -> usize {
    match DeviceConfig::from_env() {
        Ok(config) => {
            let cuda = if config.use_cuda { probe_cuda().count } else { 0 };
            (cuda + config.emulated_gpus) as usize
        }
        Err(error) => {
            warn!(%error, "ignoring the GPU settings; workers run on the CPU");
            0
        }
    }
}

/// Runs a worker on its own runtime until Ctrl-C or until its scheduler
/// stays away, its process's allocator keeping freed memory for reuse
/// ([`crate::store::allocator`]).
pub fn run_worker_process(options: WorkerOptions) -> Result<()> {
    crate::store::allocator::keep_freed_memory();
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

#[cfg(test)]
mod tests {
    use super::layout;

    #[test]
    fn workers_grow_with_cores_and_gpus_get_one_each_beside_a_cpu_pool() {
        // Without GPUs: a worker per core up to four, then about √cores.
        assert_eq!(layout(0, 0), (1, 1));
        assert_eq!(layout(2, 0), (2, 1));
        assert_eq!(layout(4, 0), (4, 1));
        assert_eq!(layout(16, 0), (4, 4));
        assert_eq!(layout(64, 0), (8, 8));
        // A 16-core node with one GPU: a GPU worker and three CPU workers
        // of 4 threads each, not one worker of 16 threads.
        assert_eq!(layout(16, 1), (4, 4));
        // More GPUs than that many workers: one per GPU, cores shared.
        assert_eq!(layout(16, 8), (8, 2));
        assert_eq!(layout(128, 8), (12, 10));
        assert_eq!(layout(2, 4), (4, 1));
    }
}
