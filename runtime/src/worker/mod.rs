//! The worker: a state machine ([`WorkerState`]) plus the reactor that
//! connects it to the scheduler, serves its results to peers, fetches its
//! inputs from them and runs ops on a pool of compute threads.

mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};
use weft_transport::{Config as TransportConfig, Connection, Receiver, Sender, connect, listen};

pub use state::{WorkerCommand, WorkerEvent, WorkerState};

use crate::codec::{self, DataRequest, Hello, WorkerDown, WorkerUp};
use crate::data::{PeerPool, serve};
use crate::error::{Result, RuntimeError};
use crate::executor::{self, Executor, Job};
use crate::ids::{Key, TaskId, WorkerId};
use crate::ops::Registry;
use crate::protocol::{FromWorker, ResourceAmount, ToWorker, WorkerInfo};
use crate::store::Store;
use crate::value::Value;

/// Concurrent fetches from peers, across all of them.
const MAX_FETCHES: usize = 16;

/// Longest a report to the scheduler waits for others to join its batch
/// while ops are still running.
const LINGER: Duration = Duration::from_micros(500);

/// Reports that go out at once whatever else is running.
const MAX_BATCH: usize = 1024;

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The scheduler's address.
    pub scheduler: String,
    /// Where to serve results to peers and clients (`tcp://HOST:0` picks a
    /// port).
    pub listen: String,
    /// Unique name (default: from the data address).
    pub name: Option<String>,
    /// Compute threads.
    pub nthreads: usize,
    /// Memory limit in bytes, reported to the scheduler (0: none).
    pub memory_limit: u64,
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
}

impl WorkerOptions {
    /// Defaults for a worker of `scheduler` with `nthreads` threads.
    pub fn new(scheduler: impl Into<String>, nthreads: usize) -> Self {
        WorkerOptions {
            scheduler: scheduler.into(),
            listen: "tcp://127.0.0.1:0".into(),
            name: None,
            nthreads,
            memory_limit: 0,
            resources: Vec::new(),
            registry: Arc::new(Registry::builtin()),
            transport: TransportConfig::default(),
            heartbeat: Duration::from_secs(1),
            reconnect_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs a worker until `shutdown` resolves (or the scheduler stays away
/// longer than `reconnect_timeout`). Results are kept while connected; a
/// scheduler that restarts knows none of them, so they are dropped and
/// the worker registers afresh.
pub async fn run_worker(options: WorkerOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    // Shared-memory regions hold a descriptor each (see `shm`).
    if let Some(limit) = crate::shm::raise_fd_limit() {
        debug!(limit, "open file limit");
    }
    let listener = listen(&options.listen, &options.transport).await?;
    let address = listener.local_addr().to_string();
    let name = options.name.clone().unwrap_or_else(|| format!("worker-{address}"));
    let store = Arc::new(Store::default());
    let server = tokio::spawn(serve(listener, store.clone()));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let report = {
        let done_tx = done_tx.clone();
        move |job: executor::Done| {
            let what = Completed::Executed {
                task: job.task,
                key: job.key,
                outcome: job.outcome,
                compute_us: job.compute_us,
            };
            done_tx
                .send(Done {
                    session: job.session,
                    what,
                })
                .is_ok()
        }
    };
    let executor =
        Executor::start(options.nthreads, name.clone(), options.registry.clone(), report).map_err(|source| {
            RuntimeError::Process {
                what: "cannot start compute threads".into(),
                source,
            }
        })?;
    let info = WorkerInfo {
        name: name.clone().into(),
        address: address.clone().into(),
        nthreads: options.nthreads as u32,
        memory_limit: options.memory_limit,
        resources: options.resources.clone(),
    };
    let mut link = Link {
        options: &options,
        store,
        executor,
        peers: PeerPool::new(options.transport.clone()),
        fetches: Arc::new(Semaphore::new(MAX_FETCHES)),
        done_tx,
        session: 0,
    };
    tokio::pin!(shutdown);
    let result = loop {
        let session = tokio::select! {
            () = &mut shutdown => break Ok(()),
            session = link.register(&info) => session,
        };
        let (connection, id, early) = match session {
            Ok(session) => session,
            Err(error) => break Err(error),
        };
        info!(worker = %name, %id, %address, scheduler = %options.scheduler, "registered");
        let (sender, mut receiver) = connection.split();
        link.session += 1;
        tokio::select! {
            () = &mut shutdown => {
                let _ = sender.close().await;
                break Ok(());
            }
            lost = link.serve(&sender, &mut receiver, early, &mut done) => {
                warn!(worker = %name, reason = %lost, "lost the scheduler; reconnecting");
                link.store.clear();
            }
        }
    };
    server.abort();
    result
}

/// What a worker keeps across connections to the scheduler.
struct Link<'a> {
    options: &'a WorkerOptions,
    store: Arc<Store>,
    executor: Executor,
    peers: PeerPool,
    fetches: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Done>,
    /// Numbers the connections to a scheduler; work of an earlier one is
    /// void once it ends.
    session: u64,
}

impl Link<'_> {
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

    /// Works for the scheduler until the connection ends; returns why.
    async fn serve(
        &mut self,
        sender: &Sender,
        receiver: &mut Receiver,
        early: WorkerDown,
        done: &mut mpsc::UnboundedReceiver<Done>,
    ) -> String {
        let scheduler = self.options.scheduler.clone();
        let mut state = WorkerState::new(self.options.nthreads);
        let mut commands = Vec::new();
        let mut outbox: Vec<FromWorker> = Vec::new();
        let mut heartbeat = tokio::time::interval(self.options.heartbeat);
        let mut quiet = true;
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
            let due = flush_by.is_some_and(|t| t <= Instant::now());
            if !outbox.is_empty() && (state.running() == 0 || outbox.len() >= MAX_BATCH || due) {
                quiet = false;
                flush_by = None;
                let batch = WorkerUp::Batch(std::mem::take(&mut outbox));
                let message = match codec::encode(&batch) {
                    Ok(message) => message,
                    Err(reason) => return reason,
                };
                if let Err(error) = sender.send(message).await {
                    return error.to_string();
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
                        Ok(None) => return "the scheduler closed the connection".into(),
                        Err(error) => return error.to_string(),
                    };
                    let batch: WorkerDown = match codec::decode(&message) {
                        Ok(batch) => batch,
                        Err(reason) => return format!("malformed message from {scheduler}: {reason}"),
                    };
                    for message in batch {
                        state.handle(WorkerEvent::Scheduler(message), &mut commands);
                    }
                }
                Some(finished) = done.recv() => {
                    self.complete(finished, &mut state, &mut commands);
                    // Take whatever else is ready, to answer in one batch.
                    while let Ok(finished) = done.try_recv() {
                        self.complete(finished, &mut state, &mut commands);
                    }
                }
                _ = heartbeat.tick() => {
                    if quiet {
                        let Ok(message) = codec::encode(&WorkerUp::Heartbeat) else { continue };
                        if let Err(error) = sender.send(message).await {
                            return error.to_string();
                        }
                    }
                    quiet = true;
                }
            }
        }
    }

    /// Stores what a job or fetch of this session produced and tells the
    /// state machine; drops what an earlier session left behind.
    fn complete(&self, done: Done, state: &mut WorkerState, commands: &mut Vec<WorkerCommand>) {
        if done.session != self.session {
            return;
        }
        let event = match done.what {
            Completed::Executed {
                task,
                key,
                outcome,
                compute_us,
            } => WorkerEvent::Executed {
                task,
                outcome: outcome.map(|value| {
                    let nbytes = value.nbytes();
                    self.store.insert(task, Some(key), Arc::new(value));
                    nbytes
                }),
                compute_us,
            },
            Completed::Fetched { peer, got, missing } => WorkerEvent::Fetched {
                peer,
                got: got
                    .into_iter()
                    .map(|(task, value)| {
                        let nbytes = value.nbytes();
                        self.store.insert(task, None, Arc::new(value));
                        (task, nbytes)
                    })
                    .collect(),
                missing,
            },
        };
        state.handle(event, commands);
    }

    fn carry_out(&self, command: WorkerCommand, outbox: &mut Vec<FromWorker>) {
        match command {
            WorkerCommand::Send(message) => outbox.push(message),
            WorkerCommand::Release(task) => self.store.remove(task),
            WorkerCommand::Execute {
                task,
                key,
                op,
                args,
                inputs,
            } => {
                let inputs: Option<Vec<_>> = inputs.iter().map(|t| self.store.get(*t)).collect();
                let session = self.session;
                match inputs {
                    Some(inputs) => self.executor.submit(Job {
                        session,
                        task,
                        key,
                        op,
                        args,
                        inputs,
                    }),
                    None => {
                        let _ = self.done_tx.send(Done {
                            session,
                            what: Completed::Executed {
                                task,
                                key,
                                outcome: Err("an input vanished from the store before the op ran".into()),
                                compute_us: 0,
                            },
                        });
                    }
                }
            }
            WorkerCommand::Fetch { peer, address, tasks } => {
                let (peers, done, session) = (self.peers.clone(), self.done_tx.clone(), self.session);
                let permits = self.fetches.clone();
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let what = fetch(&peers, peer, &address, tasks).await;
                    let _ = done.send(Done { session, what });
                });
            }
        }
    }
}

/// What finished, for [`Link::complete`].
enum Completed {
    Executed {
        task: TaskId,
        key: Key,
        outcome: Result<Value, String>,
        compute_us: u64,
    },
    Fetched {
        peer: WorkerId,
        got: Vec<(TaskId, Value)>,
        missing: Vec<TaskId>,
    },
}

/// A job or fetch that finished, tagged with its session.
struct Done {
    session: u64,
    what: Completed,
}

/// Fetches results from one peer.
async fn fetch(peers: &PeerPool, peer: WorkerId, address: &str, tasks: Vec<TaskId>) -> Completed {
    match peers.request(address, &DataRequest::Tasks(tasks.clone())).await {
        Ok(values) => {
            let (mut got, mut missing) = (Vec::new(), Vec::new());
            for (task, value) in tasks.into_iter().zip(values) {
                match value {
                    Some(value) => got.push((task, value)),
                    None => missing.push(task),
                }
            }
            Completed::Fetched { peer, got, missing }
        }
        Err(error) => {
            debug!(%peer, address, %error, "fetch failed");
            peers.forget(address);
            Completed::Fetched {
                peer,
                got: Vec::new(),
                missing: tasks,
            }
        }
    }
}
