//! The sans-IO scheduler.
//!
//! A [`Scheduler`] is a plain struct driven by [`Scheduler::handle`]: the
//! reactor decodes a message into an [`Event`], calls `handle`, and carries
//! out what the scheduler wrote into its [`Comm`] (messages to workers and
//! clients). No sockets, clocks or threads inside: durations arrive in the
//! events ([`FromWorker::Finished::compute_us`]) and periodic work (stealing)
//! runs when the reactor sends [`Event::Balance`].
//!
//! Task states and transitions (see [`TaskState`]):
//!
//! ```text
//! released -> waiting -> queued -> processing -> memory -> released -> forgotten
//!                    \______________/     |  \-> erred ------------------^
//!   (lost results: memory -> released -> waiting again, from lineage)
//! ```
//!
//! What a reactor does around it:
//!
//! - number workers and clients (never reusing a number) and feed
//!   [`Event::WorkerJoined`] after a worker's handshake, [`Event::WorkerLost`]
//!   when its connection drops or its heartbeats stop, and
//!   [`Event::ClientConnected`] / [`Event::ClientDisconnected`];
//! - decode each message into [`Event::Worker`] / [`Event::Client`], keeping
//!   each connection's order;
//! - send [`Event::Balance`] on a timer (100 ms);
//! - deliver what `handle` wrote, per destination in order, and close a
//!   worker's connection after [`ToWorker::Rejected`]. Messages to a worker
//!   that has just gone can be dropped: the scheduler already knows.
//!
//! Malformed or out-of-order input (unknown or stale ids, reports from the
//! wrong worker, duplicate registrations, unknown keys) is logged with
//! `tracing` and ignored, counted in [`Stats::ignored`]; it never changes
//! task state.
//!
//! Per-task work is O(1) amortized plus O(edges); placement looks at the
//! workers that hold a task's inputs (at most [`MAX_CANDIDATES`]) and, when
//! the best of them is busy, at the less loaded of two others, the inputs'
//! transfer counted at the bandwidth fetches measure; a task without inputs
//! takes the next unsaturated worker in round-robin order. The root-task queue is a
//! binary heap (O(log queued)); stealing scans all workers once per
//! `Balance`, and at the end of an event that left a worker with an idle
//! thread while another has more tasks than threads.

mod check;
mod clients;
mod place;
mod restart;
mod snapshot;
mod submit;
mod task;
#[cfg(test)]
mod tests;
mod worker;
mod workers;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::ids::{ClientId, FxHashMap, Key, OpId, ResourceId, SharedStr, TaskId, WorkerId};
use crate::protocol::{
    ComputeRequest, DepInfo, FromClient, FromWorker, Priority, ResourceAmount, TaskError, Tier, ToClient, ToWorker,
    WorkerInfo,
};

pub use check::InvariantError;
pub use snapshot::{
    ErredTask, GroupSnapshot, OpSnapshot, Snapshot, SnapshotCache, StateCounts, StatsSnapshot, TaskView, TierBytes,
    WorkerSnapshot, key_prefix,
};
pub use task::TaskState;
use task::{QueueKind, Tasks};
use worker::{NOT_LISTED, Worker, WorkerList};

/// Most candidate workers placement weighs for one task.
pub const MAX_CANDIDATES: usize = 32;

/// Seconds of short root tasks to keep queued on each thread of a worker,
/// covering the round trip to the scheduler (see `adapt_slots`).
pub const QUEUE_TARGET_S: f64 = 0.002;

/// Fetches smaller than this do not measure the bandwidth (their time is
/// mostly latency).
pub const BANDWIDTH_MIN_BYTES: u64 = 1 << 20;

/// The measured bandwidth is the mean of the first this many fetches, then
/// a moving average weighing the latest by one over this.
const BANDWIDTH_WINDOW: u32 = 16;

/// Most root-task slots per thread, however short the tasks.
pub const MAX_SLOTS_PER_THREAD: f64 = 256.0;

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// A task that was running on more than this many workers that died
    /// fails (Dask's `allowed-failures`, default 2: the third death fails it).
    pub allowed_failures: u32,
    /// Root tasks are held in the scheduler once every worker has
    /// `ceil(nthreads * saturation)` tasks, not counting the links sent
    /// ahead behind root tasks (a partition's count, sent with it, would
    /// otherwise hold the slot of the next partition, and the worker would
    /// wait a round trip for each one; a chain's further links count);
    /// `None` sends them all at once.
    pub worker_saturation: Option<f64>,
    /// Duration estimate of an op never seen finishing, in seconds.
    pub unknown_duration: f64,
    /// Bandwidth between workers in bytes per second, assumed until
    /// fetches of at least [`BANDWIDTH_MIN_BYTES`] measure it.
    pub bandwidth: f64,
    /// Assumed cost of fetching a task's inputs from other workers beyond
    /// their bytes (a round trip and the wake-ups on both ends), in
    /// seconds. Keeps stealing from moving tasks whose inputs take longer
    /// to ask for than they take to compute.
    pub fetch_latency: f64,
    /// Steal a task only when moving its inputs costs at most this many times
    /// its estimated compute time.
    pub steal_ratio: f64,
    /// Record the tasks each event touched (for incremental invariant
    /// checks; see [`Scheduler::take_touched`]).
    pub record_touched: bool,
    /// Send the rest of a linear chain to the worker of its first link at
    /// once (see `pipeline`), so each link starts without a round trip.
    pub pipeline_chains: bool,
    /// Results that workers kept from an earlier scheduler and that no
    /// graph claimed within this many balance rounds are dropped (3000:
    /// five minutes at the reactor's 100 ms rounds; see `restart`).
    pub unclaimed_rounds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            allowed_failures: 2,
            worker_saturation: Some(1.1),
            unknown_duration: 0.5,
            bandwidth: 100e6,
            fetch_latency: 0.001,
            steal_ratio: 2.0,
            record_touched: false,
            pipeline_chains: true,
            unclaimed_rounds: 3000,
        }
    }
}

/// Something the reactor tells the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A worker connected and registered. The reactor numbers workers and
    /// never reuses a number.
    WorkerJoined {
        /// The reactor's id for it.
        worker: WorkerId,
        /// What it offers.
        info: WorkerInfo,
    },
    /// A worker's connection dropped or its heartbeats stopped.
    WorkerLost {
        /// The worker.
        worker: WorkerId,
    },
    /// A message from a worker.
    Worker {
        /// The sender.
        worker: WorkerId,
        /// The message.
        msg: FromWorker,
    },
    /// A client connected.
    ClientConnected {
        /// The reactor's id for it.
        client: ClientId,
    },
    /// A client went away; its futures are released.
    ClientDisconnected {
        /// The client.
        client: ClientId,
    },
    /// A message from a client.
    Client {
        /// The sender.
        client: ClientId,
        /// The message.
        msg: FromClient,
    },
    /// Periodic balancing (work stealing); the reactor sends it on a timer
    /// (Dask uses 100 ms).
    Balance,
}

/// Where the scheduler writes its output. The reactor implements it over its
/// connections; tests record.
pub trait Comm {
    /// Send to a worker.
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker);
    /// Send to a client.
    fn to_client(&mut self, client: ClientId, msg: ToClient);
}

/// One output of the scheduler, for callers that want a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send to a worker.
    ToWorker(WorkerId, ToWorker),
    /// Send to a client.
    ToClient(ClientId, ToClient),
}

impl Comm for Vec<Command> {
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker) {
        self.push(Command::ToWorker(worker, msg));
    }
    fn to_client(&mut self, client: ClientId, msg: ToClient) {
        self.push(Command::ToClient(client, msg));
    }
}

/// Counters for benchmarks and dashboards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Task state transitions so far.
    pub transitions: u64,
    /// Events handled.
    pub events: u64,
    /// Messages ignored as malformed, stale or out of order.
    pub ignored: u64,
    /// Steal requests sent.
    pub steal_requests: u64,
    /// Steals that moved a task.
    pub steals: u64,
    /// Links of chains sent to a worker ahead of their input.
    pub pipelined: u64,
    /// Results recomputed after they were lost.
    pub recomputed: u64,
    /// Results kept by workers from an earlier scheduler and claimed here
    /// instead of being computed again.
    pub reclaimed: u64,
}

#[derive(Debug)]
struct OpStats {
    name: SharedStr,
    /// Exponential moving average of durations, seconds.
    avg: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Client {
    /// Keys this client wanted at some point; entries whose task no longer
    /// lists the client are stale (compacted like `Worker::has_what`).
    wants: Vec<TaskId>,
    n_wants: u32,
}

/// The scheduler state machine. See the module docs.
pub struct Scheduler {
    config: Config,
    /// Bandwidth between workers in bytes per second: `config.bandwidth`
    /// until fetches measure it (`learn_bandwidth`).
    bandwidth: f64,
    /// Measured fetches it averages so far (at most `BANDWIDTH_WINDOW`).
    bandwidth_samples: u32,
    tasks: Tasks,
    workers: FxHashMap<WorkerId, Worker>,
    /// Live workers by name and by address (restrictions use either).
    names: FxHashMap<SharedStr, WorkerId>,
    all: WorkerList,
    unsat: WorkerList,
    resource_workers: Vec<WorkerId>,
    clients: FxHashMap<ClientId, Client>,
    ops: Vec<OpStats>,
    op_ids: FxHashMap<SharedStr, OpId>,
    res_names: Vec<SharedStr>,
    res_ids: FxHashMap<SharedStr, ResourceId>,
    requests: Vec<Box<[(ResourceId, u32)]>>,
    request_ids: FxHashMap<Box<[(ResourceId, u32)]>, u32>,
    errors: FxHashMap<TaskId, TaskError>,
    /// Steals asked for: task -> thief while the victim's answer is
    /// pending, `None` once the victim refused (the task had started), so
    /// it is not asked for again while it runs there.
    stealing: FxHashMap<TaskId, Option<WorkerId>>,
    root_queue: BinaryHeap<Reverse<(Priority, TaskId)>>,
    unrunnable: Vec<TaskId>,
    next_seq: u64,
    // Work lists, drained at the end of each event.
    ready: Vec<TaskId>,
    recheck: Vec<TaskId>,
    freed: Vec<WorkerId>,
    touched: Vec<TaskId>,
    cand: Vec<(WorkerId, f64)>,
    stats: Stats,
    /// Results workers kept from an earlier scheduler, by key, that no
    /// task has claimed yet (see `restart`).
    staged: FxHashMap<Key, restart::Staged>,
    /// Balance rounds so far: the clock of staged results.
    rounds: u64,
    /// Workers with more tasks than threads.
    backlogged: u32,
    /// A worker has an idle thread while another has a backlog: stealing
    /// runs at the end of this event, not at the next `Balance`.
    idle_thief: bool,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl Scheduler {
    /// A scheduler with no workers, clients or tasks.
    pub fn new(config: Config) -> Self {
        Self {
            bandwidth: config.bandwidth,
            bandwidth_samples: 0,
            config,
            tasks: Tasks::default(),
            workers: FxHashMap::default(),
            names: FxHashMap::default(),
            all: WorkerList::default(),
            unsat: WorkerList::default(),
            resource_workers: Vec::new(),
            clients: FxHashMap::default(),
            ops: Vec::new(),
            op_ids: FxHashMap::default(),
            res_names: Vec::new(),
            res_ids: FxHashMap::default(),
            requests: vec![Box::default()],
            request_ids: FxHashMap::default(),
            errors: FxHashMap::default(),
            stealing: FxHashMap::default(),
            root_queue: BinaryHeap::new(),
            unrunnable: Vec::new(),
            next_seq: 0,
            ready: Vec::new(),
            recheck: Vec::new(),
            freed: Vec::new(),
            touched: Vec::new(),
            cand: Vec::new(),
            stats: Stats::default(),
            staged: FxHashMap::default(),
            rounds: 0,
            backlogged: 0,
            idle_thief: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Tasks known (not forgotten).
    pub fn n_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks waiting, queued or processing (O(tasks); for tests).
    pub fn count_active(&self) -> usize {
        self.tasks.iter().filter(|t| t.state.is_active()).count()
    }

    /// A one-line account of a key and, for a waiting task, of the input
    /// it waits on, down to something not waiting (for stall reports).
    pub fn explain(&self, key: &str) -> String {
        let mut lines = Vec::new();
        let mut cur = self.tasks.find(key);
        let mut hops = 0;
        while let Some(id) = cur {
            let t = &self.tasks[id];
            lines.push(format!(
                "{} {:?}{} waiting_on={} waiters={} wanted={} deaths={}; ",
                t.key,
                t.state,
                match t.queue {
                    QueueKind::None => String::new(),
                    QueueKind::Root => " (root queue)".into(),
                    QueueKind::Unrunnable => format!(
                        " (no valid worker; needs {:?}, restricted to {:?})",
                        self.requests[t.request as usize],
                        t.restrictions.as_ref().map(|r| (&r.workers, r.allow_other))
                    ),
                },
                t.waiting_on,
                t.waiters,
                t.wanted(),
                t.deaths
            ));
            cur = None;
            if t.state == TaskState::Waiting && hops < 100_000 {
                cur = t
                    .deps
                    .iter()
                    .copied()
                    .find(|&d| self.tasks[d].state != TaskState::Memory);
                hops += 1;
            }
        }
        if lines.len() > 4 {
            lines.drain(1..lines.len() - 3);
        }
        lines.concat()
    }

    /// Live workers.
    pub fn n_workers(&self) -> usize {
        self.workers.len()
    }

    /// The state of a key (`Forgotten` when unknown).
    pub fn state_of_key(&self, key: &str) -> TaskState {
        self.tasks
            .find(key)
            .map_or(TaskState::Forgotten, |id| self.tasks[id].state)
    }

    /// The state of a task id (`Forgotten` when stale or unknown).
    pub fn state_of(&self, id: TaskId) -> TaskState {
        self.tasks.get(id).map_or(TaskState::Forgotten, |t| t.state)
    }

    /// The interned id of a key.
    pub fn task_id(&self, key: &str) -> Option<TaskId> {
        self.tasks.find(key)
    }

    /// The key of a task id.
    pub fn key_of(&self, id: TaskId) -> Option<&Key> {
        self.tasks.get(id).map(|t| &t.key)
    }

    /// Workers holding a key's result.
    pub fn who_has(&self, key: &str) -> &[WorkerId] {
        self.tasks.find(key).map_or(&[], |id| self.tasks[id].who_has.as_slice())
    }

    /// Where a key's result lives (as its computing worker reported).
    pub fn tier_of(&self, key: &str) -> Option<Tier> {
        let t = &self.tasks[self.tasks.find(key)?];
        (t.state == TaskState::Memory).then_some(t.tier)
    }

    /// The error of an erred key.
    pub fn error_of(&self, key: &str) -> Option<&TaskError> {
        self.tasks.find(key).and_then(|id| self.errors.get(&id))
    }

    /// Tasks processing on a worker.
    pub fn processing_on(&self, worker: WorkerId) -> &[TaskId] {
        self.workers.get(&worker).map_or(&[], |w| w.processing.as_slice())
    }

    /// The learned duration estimate of an op, in seconds.
    pub fn op_estimate(&self, op: &str) -> Option<f64> {
        let id = self.op_ids.get(op)?;
        let s = &self.ops[id.index()];
        (s.count > 0).then_some(s.avg)
    }

    /// Moves the ids of tasks touched since the last call into `out` (only
    /// with [`Config::record_touched`]). May hold duplicates and ids of
    /// tasks forgotten since.
    pub fn take_touched(&mut self, out: &mut Vec<TaskId>) {
        out.append(&mut self.touched);
    }

    /// Handles one event, writing the resulting messages into `comm`.
    pub fn handle(&mut self, event: Event, comm: &mut impl Comm) {
        self.stats.events += 1;
        match event {
            Event::WorkerJoined { worker, info } => self.worker_joined(worker, info, comm),
            Event::WorkerLost { worker } => self.worker_lost(worker, comm),
            Event::Worker { worker, msg } => {
                if !self.workers.contains_key(&worker) {
                    tracing::warn!(%worker, ?msg, "message from an unknown worker; ignored");
                    self.stats.ignored += 1;
                    return;
                }
                match msg {
                    FromWorker::Finished {
                        task,
                        nbytes,
                        compute_us,
                        tier,
                    } => self.task_finished(worker, task, nbytes, compute_us, tier, comm),
                    FromWorker::Failed { task, error } => self.task_failed(worker, task, error, comm),
                    FromWorker::StealResponse { task, stolen } => self.steal_response(worker, task, stolen, comm),
                    FromWorker::MissingData { task, dep, tried } => self.missing_data(worker, task, dep, tried, comm),
                    FromWorker::Acquired { task, nbytes, micros } => {
                        self.learn_bandwidth(nbytes, micros);
                        self.acquired(worker, task, nbytes, comm)
                    }
                    FromWorker::Moved { task, tier } => self.moved(worker, task, tier),
                    FromWorker::Paused { paused } => self.worker_paused(worker, paused, comm),
                }
            }
            Event::ClientConnected { client } => {
                if let std::collections::hash_map::Entry::Vacant(e) = self.clients.entry(client) {
                    e.insert(Client::default());
                } else {
                    tracing::warn!(%client, "duplicate client registration; ignored");
                    self.stats.ignored += 1;
                }
            }
            Event::ClientDisconnected { client } => self.client_gone(client),
            Event::Client { client, msg } => {
                if !self.clients.contains_key(&client) {
                    tracing::warn!(%client, "message from an unknown client; ignored");
                    self.stats.ignored += 1;
                    return;
                }
                match msg {
                    FromClient::SubmitGraph(graph) => self.submit(client, graph.into(), comm),
                    FromClient::SubmitLayers(graph) => self.submit(client, graph, comm),
                    FromClient::Release { keys } => self.client_release(client, keys),
                    FromClient::Scatter { worker, data } => self.scatter(client, worker, data, comm),
                    FromClient::MissingData { keys } => self.client_missing_data(client, keys, comm),
                    FromClient::Reclaim { keys } => self.reclaim(client, keys, comm),
                    FromClient::Workers { request } => {
                        let workers = self.worker_statuses();
                        comm.to_client(client, ToClient::Workers { request, workers });
                    }
                    FromClient::WhoHas { request, keys } => {
                        let who_has = self.who_has_peers(&keys);
                        comm.to_client(client, ToClient::WhoHas { request, who_has });
                    }
                    // The task stream is the reactor's (see `observe`); one
                    // that passes this on serves none.
                    FromClient::Observe { .. } => {
                        let reason = "this scheduler's reactor serves no task stream".to_string();
                        comm.to_client(client, ToClient::ObserveRefused { reason });
                    }
                }
            }
            Event::Balance => {
                self.expire_staged(comm);
                self.balance(comm);
            }
        }
        self.drain(comm);
        if std::mem::take(&mut self.idle_thief) {
            self.balance(comm);
        }
    }

    /// [`Scheduler::handle`] returning the messages as a list.
    pub fn handle_to_vec(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        self.handle(event, &mut out);
        out
    }

    // ---- state bookkeeping -------------------------------------------------

    /// The one place a task's state changes. Keeps the inputs' `waiters`
    /// counts in step with whether this task is active.
    fn set_state(&mut self, id: TaskId, new: TaskState) {
        let t = &mut self.tasks[id];
        let old = t.state;
        t.state = new;
        self.stats.transitions += 1;
        tracing::trace!(task = %t.key, ?old, ?new, "transition");
        let record = self.config.record_touched;
        if record {
            self.touched.push(id);
        }
        let (was, now) = (old.is_active(), new.is_active());
        if was != now {
            let deps = std::mem::take(&mut t.deps);
            for &d in deps.iter() {
                let dt = &mut self.tasks[d];
                if now {
                    dt.waiters += 1;
                } else {
                    dt.waiters -= 1;
                    if dt.waiters == 0 {
                        self.recheck.push(d);
                    }
                }
                if record {
                    self.touched.push(d);
                }
            }
            self.tasks[id].deps = deps;
        }
    }

    fn touch(&mut self, id: TaskId) {
        if self.config.record_touched {
            self.touched.push(id);
        }
    }

    /// Takes a fetch of `nbytes` in `micros` into the bandwidth: the mean of
    /// the assumption and the first `BANDWIDTH_WINDOW` measured fetches,
    /// then a moving average.
    fn learn_bandwidth(&mut self, nbytes: u64, micros: u64) {
        if nbytes < BANDWIDTH_MIN_BYTES || micros == 0 {
            return;
        }
        let rate = nbytes as f64 * 1e6 / micros as f64;
        self.bandwidth_samples = (self.bandwidth_samples + 1).min(BANDWIDTH_WINDOW);
        self.bandwidth += (rate - self.bandwidth) / (self.bandwidth_samples + 1) as f64;
    }

    fn estimate(&self, op: OpId) -> f64 {
        let s = &self.ops[op.index()];
        if s.count > 0 {
            s.avg
        } else {
            self.config.unknown_duration
        }
    }

    /// Makes a released task needed: it and, transitively, its released
    /// inputs become waiting; those with all inputs in memory become ready.
    fn need(&mut self, root: TaskId, comm: &mut impl Comm) {
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            let t = &self.tasks[id];
            if t.state != TaskState::Released {
                continue;
            }
            if t.scattered {
                let key = t.key.clone();
                self.fail(id, TaskError::DataLost { key }, comm);
                continue;
            }
            let mut missing = 0;
            let mut failed = None;
            for &d in t.deps.iter() {
                match self.tasks[d].state {
                    TaskState::Memory => {}
                    TaskState::Erred => failed = Some(d),
                    TaskState::Released => {
                        missing += 1;
                        stack.push(d);
                    }
                    _ => missing += 1,
                }
            }
            if let Some(d) = failed {
                let cause = self.errors[&d].root_cause().clone();
                let key = self.tasks[id].key.clone();
                self.set_state(id, TaskState::Waiting);
                self.fail(
                    id,
                    TaskError::DependencyFailed {
                        key,
                        cause: Box::new(cause),
                    },
                    comm,
                );
                continue;
            }
            self.tasks[id].waiting_on = missing;
            self.set_state(id, TaskState::Waiting);
            if missing == 0 {
                self.ready.push(id);
            }
        }
    }

    /// Errs a task and every active task downstream of it.
    fn fail(&mut self, id: TaskId, error: TaskError, comm: &mut impl Comm) {
        let mut stack = vec![(id, error)];
        while let Some((id, error)) = stack.pop() {
            let state = self.tasks[id].state;
            match state {
                TaskState::Processing(w) => {
                    self.unassign(id);
                    comm.to_worker(w, ToWorker::Cancel { task: id });
                }
                TaskState::Erred | TaskState::Memory => continue,
                _ => {}
            }
            self.tasks[id].queue = QueueKind::None;
            self.set_state(id, TaskState::Erred);
            let t = &self.tasks[id];
            tracing::debug!(task = %t.key, %error, "task erred");
            for &c in &t.who_wants {
                comm.to_client(
                    c,
                    ToClient::Erred {
                        key: t.key.clone(),
                        error: error.clone(),
                    },
                );
            }
            let root = error.root_cause();
            for &d in &t.dependents {
                if let Some(dt) = self.tasks.get(d)
                    && dt.state.is_active()
                {
                    stack.push((
                        d,
                        TaskError::DependencyFailed {
                            key: dt.key.clone(),
                            cause: Box::new(root.clone()),
                        },
                    ));
                }
            }
            self.errors.insert(id, error);
            self.recheck.push(id);
        }
    }

    /// Takes a processing task off its worker's books (its state is set by
    /// the caller right after).
    fn unassign(&mut self, id: TaskId) -> WorkerId {
        let t = &mut self.tasks[id];
        let TaskState::Processing(w) = t.state else {
            panic!("internal error: unassign of {:?} in {:?}", id, t.state);
        };
        let idx = t.proc_idx;
        t.proc_idx = NOT_LISTED;
        let (est, request, ahead) = (t.est as f64, t.request, std::mem::take(&mut t.ahead));
        let wk = self
            .workers
            .get_mut(&w)
            .expect("internal error: processing on a dead worker");
        let was_open = wk.open();
        wk.processing.swap_remove(idx as usize);
        if ahead {
            wk.ahead -= 1;
        }
        if let Some(&moved) = wk.processing.get(idx as usize) {
            self.tasks[moved].proc_idx = idx;
        }
        let threads = wk.info.nthreads.max(1) as usize;
        if wk.processing.len() == threads {
            self.backlogged -= 1;
        }
        if wk.has_idle_thread() && self.backlogged > 0 {
            self.idle_thief = true;
        }
        wk.occupancy = if wk.processing.is_empty() {
            0.0
        } else {
            (wk.occupancy - est).max(0.0)
        };
        for &(r, amount) in self.requests[request as usize].iter() {
            if let Some(used) = wk.used.get_mut(r.index()) {
                *used -= amount;
            }
        }
        if !was_open && wk.open() {
            wk.unsat_idx = self.unsat.push(w);
            self.freed.push(w);
        }
        if !self.stealing.is_empty() {
            self.stealing.remove(&id);
        }
        w
    }

    /// Puts a worker on the unsaturated list or takes it off, to match
    /// [`Worker::open`]; a worker that opens up is also queued for filling.
    pub(super) fn relist(&mut self, w: WorkerId) {
        let wk = self
            .workers
            .get_mut(&w)
            .expect("internal error: relist of a dead worker");
        match (wk.open(), wk.unsat_idx != NOT_LISTED) {
            (true, false) => {
                wk.unsat_idx = self.unsat.push(w);
                self.freed.push(w);
            }
            (false, true) => {
                let idx = wk.unsat_idx;
                wk.unsat_idx = NOT_LISTED;
                self.unlist_at(idx);
            }
            _ => {}
        }
    }

    /// Removes the unsaturated list's entry at `idx`, fixing the position
    /// of the worker that moves into it.
    pub(super) fn unlist_at(&mut self, idx: u32) {
        if let Some(moved) = self.unsat.swap_remove(idx) {
            self.workers
                .get_mut(&moved)
                .expect("internal error: unsat list")
                .unsat_idx = idx;
        }
    }

    fn assign(&mut self, id: TaskId, w: WorkerId, comm: &mut impl Comm) {
        let est = self.estimate(self.tasks[id].op);
        let wk = self
            .workers
            .get_mut(&w)
            .expect("internal error: assign to a dead worker");
        let t = &mut self.tasks[id];
        t.proc_idx = wk.processing.len() as u32;
        t.est = est as f32;
        t.queue = QueueKind::None;
        wk.processing.push(id);
        if t.ahead {
            wk.ahead += 1;
        }
        if wk.processing.len() == wk.info.nthreads.max(1) as usize + 1 {
            self.backlogged += 1;
        }
        wk.occupancy += est;
        for &(r, amount) in self.requests[t.request as usize].iter() {
            if let Some(used) = wk.used.get_mut(r.index()) {
                *used += amount;
            }
        }
        if !wk.open() && wk.unsat_idx != NOT_LISTED {
            self.relist(w);
        }
        self.set_state(id, TaskState::Processing(w));
        let t = &self.tasks[id];
        let deps = t
            .deps
            .iter()
            .map(|&d| {
                let dt = &self.tasks[d];
                DepInfo {
                    task: d,
                    nbytes: dt.nbytes,
                    who_has: self.peers(&dt.who_has),
                }
            })
            .collect();
        let resources = self.requests[t.request as usize]
            .iter()
            .map(|&(r, amount)| ResourceAmount {
                name: self.res_names[r.index()].clone(),
                amount,
            })
            .collect();
        comm.to_worker(
            w,
            ToWorker::Compute(Box::new(ComputeRequest {
                task: id,
                key: t.key.clone(),
                op: self.ops[t.op.index()].name.clone(),
                args: t.args.clone(),
                priority: t.priority,
                resources,
                deps,
            })),
        );
    }

    /// Sends the links of a linear chain that follow `id` (just assigned
    /// to `w`) to `w` as well: each next link whose only input not in
    /// memory is the previous one, which has no other dependent, and whose
    /// other inputs are on `w`. The
    /// worker starts a link as soon as the one before it finishes there,
    /// without waiting for the scheduler. The scheduler never steals a
    /// link sent ahead; the task it waits on moves with its links (see
    /// [`Scheduler::steal_response`]).
    pub(super) fn pipeline(&mut self, mut id: TaskId, w: WorkerId, comm: &mut impl Comm) {
        if !self.config.pipeline_chains {
            return;
        }
        loop {
            let t = &self.tasks[id];
            let [next] = t.dependents[..] else {
                return;
            };
            match self.tasks.get(next) {
                Some(n) if n.state == TaskState::Waiting && n.waiting_on == 1 => {}
                _ => return,
            }
            // Only where its other inputs already are: a link sent ahead
            // must not pull data away from where placement would run it.
            let local = self.tasks[next]
                .deps
                .iter()
                .all(|&d| d == id || self.tasks[d].who_has.contains(&w));
            if !local || !self.valid_worker(next, w, true) {
                return;
            }
            self.tasks[next].ahead = self.rationed(id);
            self.assign(next, w, comm);
            self.stats.pipelined += 1;
            id = next;
        }
    }

    /// The links sent ahead behind `id`, in chain order: each the only
    /// dependent of the one before, processing and waiting for it.
    pub(super) fn links_ahead(&self, id: TaskId) -> impl Iterator<Item = TaskId> + '_ {
        std::iter::successors(Some(id), |&prev| match self.tasks[prev].dependents[..] {
            [next]
                if self
                    .tasks
                    .get(next)
                    .is_some_and(|n| matches!(n.state, TaskState::Processing(_)) && n.waiting_on > 0) =>
            {
                Some(next)
            }
            _ => None,
        })
        .skip(1)
    }

    /// Calls back the links sent ahead behind `id`, which stopped
    /// processing without a result: they wait again, for its next run.
    pub(super) fn recall_links(&mut self, id: TaskId, comm: &mut impl Comm) {
        let links: Vec<TaskId> = self.links_ahead(id).collect();
        for next in links {
            if let TaskState::Processing(w) = self.tasks[next].state {
                self.unassign(next);
                comm.to_worker(w, ToWorker::Cancel { task: next });
                self.requeue(next);
            }
        }
    }

    /// Puts a task that stopped processing back to waiting, ready when all
    /// its inputs are in memory.
    pub(super) fn requeue(&mut self, id: TaskId) {
        let missing = self.tasks[id]
            .deps
            .iter()
            .filter(|&&d| self.tasks.get(d).is_none_or(|d| d.state != TaskState::Memory))
            .count();
        self.tasks[id].waiting_on = missing as u32;
        self.set_state(id, TaskState::Waiting);
        if missing == 0 {
            self.ready.push(id);
        }
    }

    /// Whether `id` is a root task that worker saturation rations (no
    /// inputs, restrictions or resources): one waits for a free slot, and
    /// the link sent ahead behind it takes none.
    fn rationed(&self, id: TaskId) -> bool {
        let t = &self.tasks[id];
        t.deps.is_empty() && t.restrictions.is_none() && t.request == 0 && self.config.worker_saturation.is_some()
    }

    /// Places a ready task, queues it, or parks it as unrunnable.
    fn schedule(&mut self, id: TaskId, comm: &mut impl Comm) {
        let t = &self.tasks[id];
        if self.rationed(id) {
            let (workers, saturation) = (&self.workers, self.config.worker_saturation.unwrap_or(1.0));
            if let Some(w) = self.unsat.next_in_runs(|w| workers[&w].root_run(saturation)) {
                self.assign(id, w, comm);
                self.pipeline(id, w, comm);
            } else {
                let prio = t.priority;
                self.tasks[id].queue = QueueKind::Root;
                self.root_queue.push(Reverse((prio, id)));
                self.set_state(id, TaskState::Queued);
            }
            return;
        }
        match self.decide_worker(id) {
            Some(w) => {
                self.assign(id, w, comm);
                self.pipeline(id, w, comm);
            }
            None => {
                tracing::debug!(task = %self.tasks[id].key, "no worker can run this task now");
                self.tasks[id].queue = QueueKind::Unrunnable;
                self.unrunnable.push(id);
                self.set_state(id, TaskState::Queued);
            }
        }
    }

    /// Fills an unsaturated worker from the root queue.
    fn fill_worker(&mut self, w: WorkerId, comm: &mut impl Comm) {
        loop {
            match self.workers.get(&w) {
                Some(wk) if wk.open() => {}
                _ => return,
            }
            let Some(Reverse((_, id))) = self.root_queue.pop() else {
                return;
            };
            match self.tasks.get(id) {
                Some(t) if t.state == TaskState::Queued && t.queue == QueueKind::Root => {
                    self.assign(id, w, comm);
                    self.pipeline(id, w, comm);
                }
                _ => {} // stale entry
            }
        }
    }

    /// Releases what nobody needs any more, and forgets what nobody can.
    fn check_release(&mut self, id: TaskId, comm: &mut impl Comm) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        if t.waiters > 0 || t.wanted() {
            return;
        }
        match t.state {
            TaskState::Memory => {
                let holders = std::mem::take(&mut t.who_has);
                let nbytes = t.nbytes;
                for w in holders {
                    if let Some(wk) = self.workers.get_mut(&w) {
                        wk.n_held -= 1;
                        wk.nbytes_held = wk.nbytes_held.saturating_sub(nbytes);
                    }
                    comm.to_worker(w, ToWorker::Free { task: id });
                }
                self.set_state(id, TaskState::Released);
            }
            TaskState::Processing(w) => {
                self.unassign(id);
                comm.to_worker(w, ToWorker::Cancel { task: id });
                self.recall_links(id, comm);
                self.set_state(id, TaskState::Released);
            }
            TaskState::Waiting | TaskState::Queued => {
                self.tasks[id].queue = QueueKind::None;
                self.set_state(id, TaskState::Released);
            }
            TaskState::Released | TaskState::Erred => {}
            TaskState::Forgotten => unreachable!("forgotten tasks are not stored"),
        }
        if self.tasks[id].live_dependents == 0 {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: TaskId) {
        let Some(t) = self.tasks.remove(id) else {
            return;
        };
        tracing::trace!(task = %t.key, "forgotten");
        self.stats.transitions += 1;
        if t.state == TaskState::Erred {
            self.errors.remove(&id);
        }
        for &d in t.deps.iter() {
            let Some(dt) = self.tasks.get_mut(d) else {
                continue;
            };
            dt.live_dependents -= 1;
            let live = dt.live_dependents as usize;
            if dt.dependents.len() > 8 && live * 2 < dt.dependents.len() {
                let mut deps = std::mem::take(&mut dt.dependents);
                deps.retain(|&x| self.tasks.contains(x));
                self.tasks[d].dependents = deps;
            }
            self.recheck.push(d);
            self.touch(d);
        }
    }

    /// Runs the work lists until nothing is left. Releases go first, so a
    /// ready task that stopped being needed in the same event is not sent.
    fn drain(&mut self, comm: &mut impl Comm) {
        loop {
            let mut progressed = false;
            if !self.recheck.is_empty() {
                progressed = true;
                let mut batch = std::mem::take(&mut self.recheck);
                for &id in &batch {
                    self.check_release(id, comm);
                }
                batch.clear();
                if self.recheck.is_empty() {
                    self.recheck = batch;
                }
            }
            if !self.ready.is_empty() {
                progressed = true;
                let mut batch = std::mem::take(&mut self.ready);
                for &id in &batch {
                    if let Some(t) = self.tasks.get(id)
                        && t.state == TaskState::Waiting
                        && t.waiting_on == 0
                    {
                        self.schedule(id, comm);
                    }
                }
                batch.clear();
                if self.ready.is_empty() {
                    self.ready = batch;
                }
            }
            if !self.freed.is_empty() {
                progressed = true;
                let mut batch = std::mem::take(&mut self.freed);
                for &w in &batch {
                    self.fill_worker(w, comm);
                }
                batch.clear();
                if self.freed.is_empty() {
                    self.freed = batch;
                }
            }
            if !progressed {
                return;
            }
        }
    }
}
