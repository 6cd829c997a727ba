//! The worker: a state machine ([`WorkerState`]) plus the reactor that
//! connects it to the scheduler, serves its results to peers, fetches its
//! inputs from them and runs ops on a pool of compute threads (or, for ops
//! it has seen to be short, on its own event loop: see `quick`).

pub(crate) mod probe;
mod quick;
mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use weft_gpu::{Device, Gpu};
use weft_transport::{Buffer, Config as TransportConfig, Connection, Receiver, Sender, connect, listen};

pub use probe::{
    StatusPage, TaskCounts, WorkerDashboard, WorkerDescription, WorkerFigures, WorkerProbe, process_cpu_seconds,
};
pub use state::{TransferLimits, WorkerCommand, WorkerEvent, WorkerState};

use crate::codec::{self, DataRequest, Hello, WorkerDown, WorkerUp};
use crate::data::{PeerPool, STAGED_TTL, serve};
use crate::error::{Result, RuntimeError};
use crate::executor::{self, Executor, Job};
use crate::ids::{TaskId, WorkerId};
use crate::ops::{Registry, Site};
use crate::protocol::{FromWorker, OpError, ResourceAmount, Tier, ToWorker, WorkerInfo};
use crate::store::{MemoryConfig, MemoryStats, Pressure, Store};
use crate::value::Value;
use probe::{CpuMeter, TransferCounters};

/// Longest a report to the scheduler waits for others to join its batch
/// while ops are still running.
const LINGER: Duration = Duration::from_micros(500);

/// Ops a worker queues for its compute threads beyond those they run (see
/// [`WorkerState::with_queued_ahead`]).
const QUEUED_AHEAD: usize = 1;

/// Reports that go out at once whatever else is running.
const MAX_BATCH: usize = 1024;

/// How often a worker with a memory limit checks its memory.
const MEMORY_CHECK: Duration = Duration::from_millis(50);

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The scheduler's address.
    pub scheduler: String,
    /// Where to serve results to peers and clients (`tcp://HOST:0` picks a
    /// port; `tcp://0.0.0.0:PORT` listens on every interface).
    pub listen: String,
    /// The address peers and clients are given (default: the listening
    /// address, its host being this host's address on the route to the
    /// scheduler when it listens on every interface; see
    /// [`crate::contact`]).
    pub contact: Option<String>,
    /// Unique name (default: from the data address).
    pub name: Option<String>,
    /// Compute threads.
    pub nthreads: usize,
    /// Memory limit, thresholds and spill directory.
    pub memory: MemoryConfig,
    /// The GPU this worker is pinned to; `None` for a CPU worker.
    pub gpu: Option<Arc<Gpu>>,
    /// Where the worker publishes its memory figures.
    pub memory_stats: Arc<MemoryStats>,
    /// Resources offered, such as `gpu = 1`.
    pub resources: Vec<ResourceAmount>,
    /// The ops this worker can run.
    pub registry: Arc<Registry>,
    /// Transport settings (token, TLS, timeouts).
    pub transport: TransportConfig,
    /// Interval of heartbeats to the scheduler.
    pub heartbeat: Duration,
    /// How long to keep trying to reach a scheduler that went away before
    /// giving up.
    pub reconnect_timeout: Duration,
    /// The worker's own status page and `/metrics`, reported to the
    /// scheduler so its dashboard links it; `None` (the default here:
    /// the runtime serves no HTTP) for none. `weft worker` serves
    /// `weft-dashboard`'s on a free port unless told otherwise.
    pub dashboard: Option<WorkerDashboard>,
}

/// Where a worker of `scheduler` serves results unless told: a free port
/// on `host`, over the scheduler's scheme (TLS for a TLS cluster).
pub fn default_listen(scheduler: &str, host: &str) -> String {
    let scheme = scheduler.split_once("://").map_or("tcp", |(scheme, _)| scheme);
    format!("{scheme}://{host}:0")
}

impl WorkerOptions {
    /// Defaults for a worker of `scheduler` with `nthreads` threads,
    /// serving results on loopback.
    pub fn new(scheduler: impl Into<String>, nthreads: usize) -> Self {
        let scheduler = scheduler.into();
        WorkerOptions {
            listen: default_listen(&scheduler, "127.0.0.1"),
            scheduler,
            contact: None,
            name: None,
            nthreads,
            memory: MemoryConfig::default(),
            gpu: None,
            memory_stats: Arc::default(),
            resources: Vec::new(),
            registry: Arc::new(Registry::builtin()),
            transport: TransportConfig::default(),
            heartbeat: Duration::from_secs(1),
            reconnect_timeout: Duration::from_secs(60),
            dashboard: None,
        }
    }

    /// Pins the worker to `gpu`: its results and ops live there, and it
    /// offers `gpu = 1` to tasks that ask for one (they run one at a
    /// time, whatever its threads).
    pub fn pin_gpu(&mut self, gpu: Arc<Gpu>) {
        self.gpu = Some(gpu);
        self.resources.push(ResourceAmount {
            name: "gpu".into(),
            amount: 1,
        });
    }
}

/// Runs a worker until `shutdown` resolves (or the scheduler stays away
/// longer than `reconnect_timeout`). When the scheduler goes away, the
/// results made here are kept, filed by key, and reported when the worker
/// registers again, so that a restarted scheduler claims them instead of
/// computing them again; replicas and unfinished work are dropped.
pub async fn run_worker(options: WorkerOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    // Shared-memory regions hold a descriptor each (see `shm`).
    if let Some(limit) = weft_transport::shm::raise_fd_limit() {
        debug!(limit, "open file limit");
    }
    // Frames that peers send from device memory land on this worker's GPU.
    let transport = TransportConfig {
        gpu: options.gpu.clone(),
        ..options.transport.clone()
    };
    let listener = listen(&options.listen, &transport).await?;
    let address =
        crate::contact::contact_address(&listener.local_addr(), &options.scheduler, options.contact.as_deref())?;
    let name = options.name.clone().unwrap_or_else(|| format!("worker-{address}"));
    let mut memory = options.memory.clone();
    if let Some(gpu) = &options.gpu
        && memory.device_limit == 0
    {
        memory.device_limit = gpu.capacity() as u64 / 5 * 4;
    }
    let (moved_tx, mut moved) = mpsc::unbounded_channel();
    let (probe, mut count_requests, transfers) = WorkerProbe::new(
        WorkerDescription {
            name: name.clone(),
            address: address.clone(),
            scheduler: options.scheduler.clone(),
            nthreads: options.nthreads,
            memory_limit: memory.limit,
            device_limit: memory.device_limit,
            spill: memory.spill,
            pause: memory.pause,
        },
        options.memory_stats.clone(),
    );
    let (memory_limit, device_limit) = (memory.limit, memory.device_limit);
    let store = Store::new(memory, &name, options.memory_stats.clone(), move |task, tier| {
        let _ = moved_tx.send((task, tier));
    });
    let peers = PeerPool::new(transport);
    let shuffle = Arc::new(crate::shuffle::Service::new(
        address.clone().into(),
        store.clone(),
        peers.clone(),
        tokio::runtime::Handle::current(),
        options.registry.clone(),
    ));
    let site = Arc::new(Site {
        worker: name.clone(),
        gpu: options.gpu.clone(),
        memory_limit,
        device_limit,
        shuffle: Some(shuffle.clone()),
    });
    if let Some(gpu) = &options.gpu {
        // Every allocation on the GPU (ops', kernels', copies') that finds
        // it full spills device results to host memory and tries again.
        let store = Arc::downgrade(&store);
        gpu.on_out_of_memory(move |bytes| store.upgrade().is_some_and(|s| s.free_device(bytes as u64) > 0));
    }
    // In a set, so that the server stops with this future even when it is
    // dropped (an in-process worker aborted as if killed), not only at the end.
    let mut server = tokio::task::JoinSet::new();
    server.spawn(serve(
        listener,
        store.clone(),
        weft_transport::shm::offered(&options.transport),
        transfers.clone(),
        shuffle.clone(),
    ));
    let dashboard = match &options.dashboard {
        Some(dashboard) => {
            let (listener, url) = bind_dashboard(dashboard, &options.listen, &address).await?;
            server.spawn(dashboard.server.serve(listener, probe.clone()));
            info!(worker = %name, %url, "worker dashboard listening");
            Some(url.into())
        }
        None => None,
    };
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let report = {
        let done_tx = done_tx.clone();
        move |job: executor::Done| done_tx.send(Done::executed(job)).is_ok()
    };
    let executor =
        Executor::start(options.nthreads, site.clone(), options.registry.clone(), report).map_err(|source| {
            RuntimeError::Process {
                what: "cannot start compute threads".into(),
                source,
            }
        })?;
    let mut info = WorkerInfo {
        name: name.clone().into(),
        address: address.clone().into(),
        nthreads: options.nthreads as u32,
        memory_limit: options.memory.limit,
        resources: options.resources.clone(),
        dashboard,
        held: Vec::new(),
    };
    let mut link = Link {
        options: &options,
        name: name.clone(),
        site,
        store,
        executor,
        peers,
        done_tx,
        session: 0,
        inline: Vec::new(),
        probe,
        transfers,
        cpu: CpuMeter::default(),
    };
    tokio::pin!(shutdown);
    let result = loop {
        let session = tokio::select! {
            () = &mut shutdown => break Ok(()),
            session = link.register_retrying(&info) => session,
        };
        let (connection, id, early) = match session {
            Ok(session) => session,
            Err(error) => break Err(error),
        };
        info!(worker = %name, %id, %address, scheduler = %options.scheduler, "registered");
        let (sender, mut receiver) = connection.split();
        link.session += 1;
        let limits = TransferLimits::for_memory(options.memory.limit);
        let mut state = WorkerState::new(options.nthreads, limits)
            .with_resources(&options.resources)
            .with_queued_ahead(QUEUED_AHEAD);
        if options.gpu.is_none() {
            // A GPU worker's ops run on its compute threads' streams.
            state = state.with_quick_ops();
        }
        tokio::select! {
            () = &mut shutdown => {
                let _ = sender.close().await;
                break Ok(());
            }
            lost = link.serve(&mut state, &sender, &mut receiver, early, &mut done, &mut moved, &mut count_requests) => match lost {
                Ok(reason) => {
                    // What this worker made stays for the next scheduler
                    // (a restarted one claims it); the rest is dropped.
                    info.held = link.store.orphan(state.own_results());
                    shuffle.clear();
                    warn!(worker = %name, %reason, kept = info.held.len(), "lost the scheduler; reconnecting");
                }
                Err(error) => break Err(error),
            }
        }
    };
    server.abort_all();
    result
}

/// What a worker keeps across connections to the scheduler.
struct Link<'a> {
    options: &'a WorkerOptions,
    name: String,
    site: Arc<Site>,
    store: Arc<Store>,
    executor: Executor,
    peers: PeerPool,
    done_tx: mpsc::UnboundedSender<Done>,
    /// Numbers the connections to a scheduler; work of an earlier one is
    /// void once it ends.
    session: u64,
    /// Quick ops to run on the event loop once the commands that go to
    /// the compute threads are out.
    inline: Vec<Job>,
    /// What the status page reads.
    probe: WorkerProbe,
    transfers: Arc<TransferCounters>,
    cpu: CpuMeter,
}

/// The pause before registering again after a handshake failed on the way.
const REGISTER_RETRY_PAUSE: Duration = Duration::from_millis(100);

impl Link<'_> {
    /// [`Link::register`], tried again within `reconnect_timeout` while it
    /// fails for a reason that may pass (a connection reset during the
    /// handshake, as when a scheduler going down accepted it); a refusal
    /// or a protocol error ends it.
    async fn register_retrying(&self, info: &WorkerInfo) -> Result<(Connection, WorkerId, WorkerDown)> {
        let deadline = Instant::now() + self.options.reconnect_timeout;
        loop {
            match self.register(info).await {
                Err(error) if transient(&error) && Instant::now() + REGISTER_RETRY_PAUSE < deadline => {
                    debug!(worker = %self.name, %error, "registering failed on the way; trying again");
                    tokio::time::sleep(REGISTER_RETRY_PAUSE).await;
                }
                done => return done,
            }
        }
    }

    /// Connects to the scheduler and registers.
    /// Returns the connection, our id, and what else the scheduler sent in
    /// the same batch (work queued before we joined).
    async fn register(&self, info: &WorkerInfo) -> Result<(Connection, WorkerId, WorkerDown)> {
        let transport = TransportConfig {
            connect_timeout: self.options.reconnect_timeout,
            ..self.options.transport.clone()
        };
        let scheduler = &self.options.scheduler;
        let mut connection = connect(scheduler, &transport).await?;
        let hello =
            codec::encode(&Hello::worker(info.clone())).map_err(|reason| RuntimeError::protocol(scheduler, reason))?;
        connection.send(hello).await?;
        let reply = connection.recv().await?.ok_or_else(|| RuntimeError::SchedulerLost {
            scheduler: scheduler.clone(),
            reason: "closed the connection during registration".into(),
        })?;
        let mut batch: WorkerDown =
            codec::decode(&reply).map_err(|reason| RuntimeError::protocol(scheduler, reason))?;
        let first = (!batch.is_empty()).then(|| batch.remove(0));
        match first {
            Some(ToWorker::Registered { worker }) => Ok((connection, worker, batch)),
            Some(ToWorker::Rejected { reason }) => Err(RuntimeError::Refused {
                scheduler: scheduler.clone(),
                role: "worker",
                reason,
            }),
            other => Err(RuntimeError::protocol(
                scheduler,
                format!("expected a registration answer, got {other:?}"),
            )),
        }
    }

    /// Works for the scheduler until the connection ends; returns why, or
    /// an error when the worker must stop (out of memory).
    // The connection's halves and the reactor's channels, passed apart.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &mut self,
        state: &mut WorkerState,
        sender: &Sender,
        receiver: &mut Receiver,
        early: WorkerDown,
        done: &mut mpsc::UnboundedReceiver<Done>,
        moved: &mut mpsc::UnboundedReceiver<(TaskId, Tier)>,
        count_requests: &mut mpsc::Receiver<oneshot::Sender<TaskCounts>>,
    ) -> Result<String> {
        let scheduler = self.options.scheduler.clone();
        let mut commands = Vec::new();
        let mut outbox: Vec<FromWorker> = Vec::new();
        let mut heartbeat = tokio::time::interval(self.options.heartbeat);
        let mut memory_check = tokio::time::interval(MEMORY_CHECK);
        let limited = self.options.memory.limit > 0;
        for message in early {
            state.handle(WorkerEvent::Scheduler(message), &mut commands);
        }
        // When the batch in `outbox` must go out at the latest.
        let mut flush_by: Option<Instant> = None;
        loop {
            // Carry out what the last step decided. Answers go out at once
            // when no op is running (the scheduler may be waiting on them:
            // a chain's next link), else they linger up to `LINGER` so a
            // stream of short tasks costs one message per batch, not per task.
            for command in commands.drain(..) {
                self.carry_out(command, &mut outbox);
            }
            // Ops run inline count as running until their results are
            // handled, on the next turn: a chain of quick links answers in
            // batches, not once per link.
            let ran_inline = !self.inline.is_empty();
            for job in std::mem::take(&mut self.inline) {
                let done = executor::run(&self.options.registry, &self.site, job);
                let _ = self.done_tx.send(Done::executed(done));
            }
            let idle = state.running() == 0 && !ran_inline;
            let due = flush_by.is_some_and(|t| t <= Instant::now());
            if !outbox.is_empty() && (idle || outbox.len() >= MAX_BATCH || due) {
                flush_by = None;
                let batch = WorkerUp::Batch(std::mem::take(&mut outbox));
                let message = match codec::encode(&batch) {
                    Ok(message) => message,
                    Err(reason) => return Ok(reason),
                };
                if let Err(error) = sender.send(message).await {
                    return Ok(error.to_string());
                }
            } else if !outbox.is_empty() && flush_by.is_none() {
                flush_by = Some(Instant::now() + LINGER);
            }
            let linger = async {
                match flush_by {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = linger => {}
                message = receiver.recv() => {
                    let message = match message {
                        Ok(Some(message)) => message,
                        Ok(None) => return Ok("the scheduler closed the connection".into()),
                        Err(error) => return Ok(error.to_string()),
                    };
                    let batch: WorkerDown = match codec::decode(&message) {
                        Ok(batch) => batch,
                        Err(reason) => return Ok(format!("malformed message from {scheduler}: {reason}")),
                    };
                    for message in batch {
                        state.handle(WorkerEvent::Scheduler(message), &mut commands);
                    }
                }
                Some((task, tier)) = moved.recv() => {
                    state.handle(WorkerEvent::Moved { task, tier }, &mut commands);
                }
                Some(finished) = done.recv() => {
                    self.complete(finished, state, &mut commands)?;
                    // Take whatever else is ready, to answer in one batch.
                    while let Ok(finished) = done.try_recv() {
                        self.complete(finished, state, &mut commands)?;
                    }
                }
                _ = heartbeat.tick() => {
                    let expired = self.store.expire_staged(Instant::now(), STAGED_TTL);
                    if expired > 0 {
                        warn!(expired, "dropped scattered values never registered (their client went away?)");
                    }
                    let vitals = self.cpu.sample();
                    self.probe.set_vitals(vitals);
                    let Ok(message) = codec::encode(&WorkerUp::Heartbeat(vitals)) else { continue };
                    if let Err(error) = sender.send(message).await {
                        return Ok(error.to_string());
                    }
                }
                Some(reply) = count_requests.recv() => {
                    let _ = reply.send(state.counts());
                }
                _ = memory_check.tick(), if limited => {
                    let pressure = self.store.pressure();
                    if pressure == Pressure::Terminate {
                        return Err(RuntimeError::OutOfMemory {
                            worker: self.name.clone(),
                            limit: self.options.memory.limit,
                        });
                    }
                    let paused = pressure == Pressure::Pause;
                    if paused && !state.paused() {
                        self.store.stats().paused();
                        warn!(worker = %self.name, "memory past the pause threshold; no new tasks until it falls");
                    } else if !paused && state.paused() {
                        info!(worker = %self.name, "memory fell; taking tasks again");
                    }
                    state.handle(WorkerEvent::Paused(paused), &mut commands);
                }
            }
        }
    }

    /// Stores what a job or fetch of this session produced and tells the
    /// state machine; drops what an earlier session left behind.
    /// Err when the worker must stop: its GPU was lost. The task is not
    /// reported failed: the scheduler runs it again elsewhere once this
    /// worker is gone (up to its allowed failures, so an op that breaks
    /// every GPU it runs on still fails in the end).
    fn complete(&mut self, done: Done, state: &mut WorkerState, commands: &mut Vec<WorkerCommand>) -> Result<()> {
        if done.session != self.session {
            return Ok(());
        }
        let event = match done.what {
            Completed::DeviceLost { task, reason } => {
                let device = self.site.gpu.as_ref().map_or(Device::Cpu, |gpu| gpu.device());
                error!(worker = %self.name, %task, %device, %reason, "the GPU cannot be used any more; stopping");
                return Err(RuntimeError::GpuLost {
                    worker: self.name.clone(),
                    device: device.to_string(),
                    reason,
                });
            }
            Completed::Executed {
                task,
                outcome,
                compute_us,
            } => WorkerEvent::Executed {
                task,
                outcome: outcome.map(|value| {
                    let placed = (value.nbytes(), value.tier());
                    self.store.insert(task, Arc::new(value));
                    placed
                }),
                compute_us,
            },
            Completed::Fetched {
                peer,
                got,
                missing,
                micros,
            } => {
                let got: Vec<(TaskId, u64)> = got
                    .into_iter()
                    .map(|(task, value)| {
                        let nbytes = value.nbytes();
                        self.store.insert(task, Arc::new(value));
                        (task, nbytes)
                    })
                    .collect();
                self.transfers.fetched(got.len(), got.iter().map(|(_, n)| n).sum());
                WorkerEvent::Fetched {
                    peer,
                    got,
                    missing,
                    micros,
                }
            }
        };
        state.handle(event, commands);
        Ok(())
    }

    fn carry_out(&mut self, command: WorkerCommand, outbox: &mut Vec<FromWorker>) {
        match command {
            WorkerCommand::Send(message) => outbox.push(message),
            WorkerCommand::Release(task) => self.store.remove(task),
            WorkerCommand::Adopt { task, key } => {
                // Only a bug or a value dropped meanwhile gets here; peers
                // asking for it then hear that it is missing.
                if !self.store.adopt(&key, task) {
                    warn!(%key, %task, "told to adopt a value that is not held here");
                }
            }
            WorkerCommand::Discard(keys) => {
                let dropped = self.store.discard(&keys);
                debug!(dropped, "dropped results no scheduler claimed");
            }
            WorkerCommand::Execute {
                task,
                key,
                op,
                args,
                inputs,
                inline,
            } => {
                let job = Job {
                    session: self.session,
                    task,
                    key,
                    op,
                    args,
                    inputs: Vec::new(),
                };
                // Inputs in memory go straight to a compute thread (or run
                // here, for a quick op, once the rest is out); one on disk
                // is read back first, off the event loop.
                match inputs.iter().map(|t| self.store.get(*t)).collect() {
                    Some(values) if inline => self.inline.push(Job { inputs: values, ..job }),
                    Some(values) => self.executor.submit(Job { inputs: values, ..job }),
                    None => {
                        let (store, executor, done) = (self.store.clone(), self.executor.clone(), self.done_tx.clone());
                        tokio::spawn(async move {
                            let values = store.load_all(inputs).await;
                            match values.into_iter().collect() {
                                Some(values) => executor.submit(Job { inputs: values, ..job }),
                                None => {
                                    let _ = done.send(Done {
                                        session: job.session,
                                        what: Completed::Executed {
                                            task: job.task,
                                            outcome: Err(OpError::Failed(
                                                "an input vanished from the store before the op ran".into(),
                                            )),
                                            compute_us: 0,
                                        },
                                    });
                                }
                            }
                        });
                    }
                }
            }
            WorkerCommand::Fetch { peer, address, tasks } => {
                let (peers, done, session) = (self.peers.clone(), self.done_tx.clone(), self.session);
                let gpu = self.options.gpu.clone();
                tokio::spawn(async move {
                    let what = fetch(&peers, peer, &address, tasks, gpu).await;
                    let _ = done.send(Done { session, what });
                });
            }
        }
    }
}

/// Binds the worker's dashboard: at its address, or on a free port of the
/// host the data server listens on. Returns the listener and the URL the
/// scheduler is told (with the host peers reach this worker at when it
/// listens on every interface).
async fn bind_dashboard(
    dashboard: &WorkerDashboard,
    listen: &str,
    contact: &str,
) -> Result<(tokio::net::TcpListener, String)> {
    let address = match &dashboard.address {
        Some(address) => match address.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => address.clone(),
        },
        None => format!("{}:0", url_host(listen)),
    };
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| RuntimeError::Process {
            what: format!(
                "cannot serve the worker's dashboard on {address} (choose another with --dashboard-address, \
                 or turn it off with --no-dashboard)"
            ),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| RuntimeError::Process {
        what: format!("the worker's dashboard listener on {address} has no address"),
        source,
    })?;
    let host = if bound.ip().is_unspecified() {
        url_host(contact)
    } else {
        match bound.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    Ok((listener, format!("http://{host}:{}", bound.port())))
}

/// The host of a transport URL such as `tcp://10.0.0.7:40000`
/// (`127.0.0.1` for an in-process one, which has none).
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host.to_string(),
        _ => "127.0.0.1".to_string(),
    }
}

/// Moves every device frame of `values` to `gpu` (peer copies), or to host
/// memory on a worker without one.
fn localize(values: Vec<(TaskId, Value)>, gpu: Option<&Arc<Gpu>>) -> std::result::Result<Vec<(TaskId, Value)>, String> {
    values
        .into_iter()
        .map(|(task, value)| {
            let frames = value
                .frames
                .iter()
                .map(|frame| match (frame.as_device(), gpu) {
                    (None, _) => Ok(frame.clone()),
                    (Some(_), Some(gpu)) => crate::device::to_gpu(frame, gpu),
                    (Some(_), None) => frame.to_host().map(Buffer::host),
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| format!("{task}: {e}"))?;
            Ok((task, Value { frames, ..value }))
        })
        .collect()
}

/// What finished, for [`Link::complete`].
enum Completed {
    Executed {
        task: TaskId,
        outcome: Result<Value, OpError>,
        compute_us: u64,
    },
    Fetched {
        peer: WorkerId,
        got: Vec<(TaskId, Value)>,
        missing: Vec<TaskId>,
        micros: u64,
    },
    /// An op failed and left the GPU unusable (see
    /// [`executor::Done::device_lost`]).
    DeviceLost { task: TaskId, reason: String },
}

/// A job or fetch that finished, tagged with its session.
struct Done {
    session: u64,
    what: Completed,
}

impl Done {
    fn executed(job: executor::Done) -> Self {
        let what = match job.device_lost {
            Some(reason) => Completed::DeviceLost { task: job.task, reason },
            None => Completed::Executed {
                task: job.task,
                outcome: job.outcome,
                compute_us: job.compute_us,
            },
        };
        Done {
            session: job.session,
            what,
        }
    }
}

/// Fetches results from one peer; device frames that arrive by reference
/// (in-process peers) are copied to this worker's own device.
async fn fetch(
    peers: &PeerPool,
    peer: WorkerId,
    address: &str,
    tasks: Vec<TaskId>,
    gpu: Option<Arc<Gpu>>,
) -> Completed {
    let started = Instant::now();
    match peers.request(address, &DataRequest::Tasks(tasks.clone())).await {
        Ok(values) => {
            let (mut got, mut missing) = (Vec::new(), Vec::new());
            for (task, value) in tasks.into_iter().zip(values) {
                match value {
                    Some(value) => got.push((task, value)),
                    None => missing.push(task),
                }
            }
            if got.iter().any(|(_, v)| v.tier() == Tier::Device) {
                let fetched: Vec<TaskId> = got.iter().map(|(t, _)| *t).collect();
                let localized = tokio::task::spawn_blocking(move || localize(got, gpu.as_ref()))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                got = match localized {
                    Ok(local) => local,
                    Err(error) => {
                        warn!(%peer, %error, "cannot copy fetched device results to this worker's memory");
                        missing.extend(fetched);
                        Vec::new()
                    }
                };
            }
            Completed::Fetched {
                peer,
                got,
                missing,
                micros: started.elapsed().as_micros() as u64,
            }
        }
        Err(error) => {
            debug!(%peer, address, %error, "fetch failed");
            peers.forget(address);
            Completed::Fetched {
                peer,
                got: Vec::new(),
                missing: tasks,
                micros: 0,
            }
        }
    }
}

/// Whether registering may succeed if tried again.
fn transient(error: &RuntimeError) -> bool {
    match error {
        RuntimeError::Transport(error) => error.is_retryable(),
        RuntimeError::SchedulerLost { .. } => true,
        _ => false,
    }
}
