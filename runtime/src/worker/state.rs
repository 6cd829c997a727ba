//! The worker's logic as a state machine (sans-IO): which tasks wait for
//! inputs, which are ready, which run; what to fetch from which peer; what
//! to tell the scheduler. The reactor owns the store, the sockets and the
//! compute threads, feeds [`WorkerEvent`]s in and carries out the
//! [`WorkerCommand`]s that come out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque, hash_map::Entry};

use bytes::Bytes;
use tracing::debug;

use super::quick::QuickOps;
use crate::ids::{FxHashMap, Key, SharedStr, TaskId, WorkerId};
use crate::protocol::{ComputeRequest, FromWorker, OpError, Peer, Priority, ResourceAmount, Tier, ToWorker};

/// Something that happened to the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// A message from the scheduler.
    Scheduler(ToWorker),
    /// A fetch from `peer` ended: `got` are now in the store (with their
    /// sizes); the peer did not have, or could not send, `missing`.
    Fetched {
        /// The peer asked.
        peer: WorkerId,
        /// Results now in the store, with their sizes.
        got: Vec<(TaskId, u64)>,
        /// Results the peer did not deliver.
        missing: Vec<TaskId>,
        /// How long the fetch took.
        micros: u64,
    },
    /// An op finished: its result is in the store (`Ok((nbytes, tier))`),
    /// or it failed with a message.
    Executed {
        /// The task.
        task: TaskId,
        /// Size and tier of the stored result, or the op's error.
        outcome: Result<(u64, Tier), OpError>,
        /// How long the op ran.
        compute_us: u64,
    },
    /// Memory crossed the pause threshold (true) or fell back below it.
    Paused(bool),
    /// The store moved a result between tiers.
    Moved {
        /// The result's task.
        task: TaskId,
        /// Where it is now.
        tier: Tier,
    },
}

/// The run time, in microseconds, of the quick ops one event starts
/// inline at most (by their averages): the event loop turns between them.
pub const INLINE_BUDGET_US: f64 = 250.0;

/// Something the reactor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerCommand {
    /// Run an op on a compute thread, or on the event loop where `inline`;
    /// its inputs are in the store.
    Execute {
        /// The task.
        task: TaskId,
        /// Its key, for the store's by-key index and for errors.
        key: Key,
        /// The op.
        op: SharedStr,
        /// Its serialized arguments.
        args: Bytes,
        /// Input results, in the op's order.
        inputs: Vec<TaskId>,
        /// A quick op: run it on the event loop; it holds no thread.
        inline: bool,
    },
    /// Fetch results from a peer into the store, then report
    /// [`WorkerEvent::Fetched`].
    Fetch {
        /// The peer.
        peer: WorkerId,
        /// Its data address.
        address: SharedStr,
        /// The results to fetch.
        tasks: Vec<TaskId>,
    },
    /// Drop a result from the store.
    Release(TaskId),
    /// Keep the value held under `key` (pushed by a client, or kept from
    /// an earlier scheduler) as `task`'s result.
    Adopt {
        /// The task.
        task: TaskId,
        /// The key it was pushed under.
        key: Key,
    },
    /// Drop the values held under these keys that no task claimed.
    Discard(Vec<Key>),
    /// Tell the scheduler.
    Send(FromWorker),
}

#[derive(Debug)]
struct Task {
    request: Box<ComputeRequest>,
    /// Inputs not yet in the store.
    missing: usize,
    phase: Phase,
    /// Started inline (see [`WorkerCommand::Execute`]): it holds no thread.
    inline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Ready,
    Running,
    /// Running, but its result is no longer wanted.
    Cancelled,
}

/// How much a worker fetches from its peers at once (Dask's
/// `transfer_incoming_count_limit`, `transfer_message_bytes_limit` and
/// `transfer_incoming_bytes_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Fetches in flight, across all peers.
    pub fetches: usize,
    /// Bytes asked of one peer in one fetch (a larger result goes alone).
    pub message_bytes: u64,
    /// Bytes in flight, across all fetches (one result larger than this
    /// still moves, alone).
    pub incoming_bytes: u64,
}

impl TransferLimits {
    /// Defaults for a worker with `memory_limit` bytes of host memory (0:
    /// no limit): 16 fetches, 50 MiB a message, a tenth of the memory in
    /// flight (at least 64 MiB; 1 GiB without a limit).
    pub fn for_memory(memory_limit: u64) -> Self {
        TransferLimits {
            fetches: 16,
            message_bytes: 50 << 20,
            incoming_bytes: match memory_limit {
                0 => 1 << 30,
                limit => (limit / 10).max(64 << 20),
            },
        }
    }
}

/// An input being fetched for one or more tasks.
#[derive(Debug)]
struct Transfer {
    /// Its size as the scheduler reported it.
    nbytes: u64,
    waiters: Vec<TaskId>,
    /// Holders not tried yet.
    candidates: Vec<Peer>,
    tried: Vec<WorkerId>,
}

/// A worker's tasks by state, for its status page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TaskCounts {
    /// Assigned, waiting for inputs.
    pub waiting: u64,
    /// Inputs here, waiting for a thread (or a resource).
    pub ready: u64,
    /// Running on a compute thread.
    pub running: u64,
    /// Inputs being fetched from peers.
    pub fetching: u64,
    /// Results held.
    pub memory: u64,
    /// Tasks finished since the worker registered.
    pub finished: u64,
    /// Runs failed since the worker registered.
    pub failed: u64,
    /// Whether it starts no new ops for lack of memory.
    pub paused: bool,
}

/// A result in the store.
#[derive(Debug)]
struct Held {
    nbytes: u64,
    /// Its key when it was made or adopted here (not for replicas): kept
    /// for a scheduler that replaces the current one.
    key: Option<Key>,
}

/// The worker's state.
#[derive(Debug)]
pub struct WorkerState {
    nthreads: usize,
    /// Ops started beyond the threads, queued for the next free one.
    ahead: usize,
    running: usize,
    /// Run times of ops, to start the shortest inline, beside the threads;
    /// `None` where ops never run inline (a GPU worker).
    quick: Option<QuickOps>,
    /// Ops finished and failed (for the status page).
    finished: u64,
    failed: u64,
    tasks: FxHashMap<TaskId, Task>,
    /// Ready tasks that need no resources.
    ready: BinaryHeap<Reverse<(Priority, TaskId)>>,
    /// Ready tasks that need resources (Dask's "constrained"): the first
    /// starts when what it asks for is free.
    constrained: BinaryHeap<Reverse<(Priority, TaskId)>>,
    /// Resources this worker offers, and how much of each running tasks
    /// hold.
    resources: Vec<(SharedStr, u32, u32)>,
    /// Results in the store.
    memory: FxHashMap<TaskId, Held>,
    transfers: FxHashMap<TaskId, Transfer>,
    /// Tasks waiting for the result of a task assigned here (links of a
    /// chain sent ahead), by that task.
    local_waiters: FxHashMap<TaskId, Vec<TaskId>>,
    /// Memory is short: start no ops until it is not.
    paused: bool,
    limits: TransferLimits,
    /// Inputs to fetch, by the peer to ask, in the order they were wanted;
    /// `queued_peers` takes turns among the peers.
    queued: FxHashMap<WorkerId, (SharedStr, VecDeque<TaskId>)>,
    queued_peers: VecDeque<WorkerId>,
    /// Inputs being fetched and their sizes; `fetches` and `in_flight_bytes`
    /// count them against `limits`.
    in_flight: FxHashMap<TaskId, u64>,
    fetches: usize,
    in_flight_bytes: u64,
}

impl WorkerState {
    /// A worker that runs up to `nthreads` ops at once and fetches within
    /// `limits`.
    pub fn new(nthreads: usize, limits: TransferLimits) -> Self {
        WorkerState {
            nthreads: nthreads.max(1),
            ahead: 0,
            running: 0,
            quick: None,
            finished: 0,
            failed: 0,
            tasks: FxHashMap::default(),
            ready: BinaryHeap::new(),
            constrained: BinaryHeap::new(),
            resources: Vec::new(),
            memory: FxHashMap::default(),
            transfers: FxHashMap::default(),
            local_waiters: FxHashMap::default(),
            paused: false,
            limits,
            queued: FxHashMap::default(),
            queued_peers: VecDeque::new(),
            in_flight: FxHashMap::default(),
            fetches: 0,
            in_flight_bytes: 0,
        }
    }

    /// The worker offers these resources (`gpu = 1`): a task that asks for
    /// some runs only while they are free, whatever threads are idle.
    pub fn with_resources(mut self, resources: &[ResourceAmount]) -> Self {
        for r in resources {
            match self.resources.iter_mut().find(|(name, ..)| *name == r.name) {
                Some((_, total, _)) => *total += r.amount,
                None => self.resources.push((r.name.clone(), r.amount, 0)),
            }
        }
        self
    }

    /// Ops seen to be short (see [`QuickOps`]) start on the event loop as
    /// soon as they are ready, without waiting for a thread: a row count
    /// behind each partition runs between two partitions instead of after
    /// all of them.
    pub fn with_quick_ops(mut self) -> Self {
        self.quick = Some(QuickOps::default());
        self
    }

    /// Starts up to `n` ops more than there are threads: they wait in the
    /// compute threads' queue, so a thread that finishes an op takes the
    /// next at once instead of waiting for the event loop to hear of it
    /// (on a busy machine that wake-up costs a tenth of a millisecond or
    /// more per op). A queued op counts as running: it cannot be stolen,
    /// and it holds the resources it asks for.
    pub fn with_queued_ahead(mut self, n: usize) -> Self {
        self.ahead = n;
        self
    }

    /// How much of `name` running tasks hold now.
    pub fn resource_in_use(&self, name: &str) -> u32 {
        self.resources
            .iter()
            .find(|(n, ..)| n.as_str() == name)
            .map_or(0, |r| r.2)
    }

    /// Whether the worker starts no new ops for lack of memory.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Tasks assigned and not yet finished.
    pub fn n_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Ops handed to the compute threads and not yet finished (quick ops
    /// run inline are not counted).
    pub fn running(&self) -> usize {
        self.running
    }

    /// Results held.
    pub fn n_results(&self) -> usize {
        self.memory.len()
    }

    /// The results made or adopted here, with their keys: what a worker
    /// keeps for the next scheduler when this one goes away (replicas
    /// fetched from peers are not kept).
    pub fn own_results(&self) -> Vec<(TaskId, Key)> {
        self.memory
            .iter()
            .filter_map(|(&task, held)| Some((task, held.key.clone()?)))
            .collect()
    }

    /// Bytes being fetched from peers now.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }

    /// Tasks by state and the totals; O(tasks), for a page being read.
    pub fn counts(&self) -> TaskCounts {
        let mut counts = TaskCounts {
            fetching: self.transfers.len() as u64,
            memory: self.memory.len() as u64,
            finished: self.finished,
            failed: self.failed,
            paused: self.paused,
            ..TaskCounts::default()
        };
        for task in self.tasks.values() {
            match task.phase {
                Phase::Waiting => counts.waiting += 1,
                Phase::Ready => counts.ready += 1,
                Phase::Running | Phase::Cancelled => counts.running += 1,
            }
        }
        counts
    }

    /// Handles one event, appending what to do to `out`.
    pub fn handle(&mut self, event: WorkerEvent, out: &mut Vec<WorkerCommand>) {
        match event {
            WorkerEvent::Scheduler(message) => self.scheduler_message(message, out),
            WorkerEvent::Fetched {
                peer,
                got,
                missing,
                micros,
            } => {
                self.fetches = self.fetches.saturating_sub(1);
                for task in got.iter().map(|(t, _)| t).chain(&missing) {
                    if let Some(nbytes) = self.in_flight.remove(task) {
                        self.in_flight_bytes -= nbytes;
                    }
                }
                let total = got.iter().map(|(_, n)| n).sum::<u64>().max(1);
                for (task, nbytes) in got {
                    self.memory.insert(task, Held { nbytes, key: None });
                    // Each result's share of the fetch's time, by size.
                    let micros = (micros as u128 * nbytes as u128 / total as u128) as u64;
                    out.push(WorkerCommand::Send(FromWorker::Acquired { task, nbytes, micros }));
                    if let Some(transfer) = self.transfers.remove(&task) {
                        for waiter in transfer.waiters {
                            self.input_arrived(waiter);
                        }
                    }
                }
                for task in missing {
                    self.retry_transfer(task, peer, out);
                }
            }
            WorkerEvent::Executed {
                task,
                outcome,
                compute_us,
            } => {
                // Those waiting here start now, or are cancelled by the
                // scheduler if this failed.
                let waiters = self.local_waiters.remove(&task).unwrap_or_default();
                let finished = self.tasks.remove(&task);
                match &finished {
                    Some(t) => {
                        if !t.inline {
                            self.running = self.running.saturating_sub(1);
                        }
                        self.hold(&t.request.resources, false);
                        if let Some(quick) = &mut self.quick {
                            quick.record(&t.request.op, compute_us);
                        }
                    }
                    None => self.running = self.running.saturating_sub(1),
                }
                match finished.map(|t| (t.phase, t.request.key)) {
                    Some((Phase::Running, key)) => match outcome {
                        Ok((nbytes, tier)) => {
                            self.finished += 1;
                            self.memory.insert(task, Held { nbytes, key: Some(key) });
                            for waiter in waiters {
                                self.input_arrived(waiter);
                            }
                            out.push(WorkerCommand::Send(FromWorker::Finished {
                                task,
                                nbytes,
                                compute_us,
                                tier,
                            }));
                        }
                        Err(error) => {
                            self.failed += 1;
                            out.push(WorkerCommand::Send(FromWorker::Failed { task, error }));
                        }
                    },
                    // Cancelled while running, or unknown: drop the result.
                    _ => {
                        if outcome.is_ok() {
                            out.push(WorkerCommand::Release(task));
                        }
                    }
                }
            }
            WorkerEvent::Moved { task, tier } => {
                if self.memory.contains_key(&task) {
                    out.push(WorkerCommand::Send(FromWorker::Moved { task, tier }));
                }
            }
            WorkerEvent::Paused(paused) => {
                if self.paused != paused {
                    self.paused = paused;
                    out.push(WorkerCommand::Send(FromWorker::Paused { paused }));
                }
            }
        }
        self.start_fetches(out);
        self.dispatch(out);
    }

    fn scheduler_message(&mut self, message: ToWorker, out: &mut Vec<WorkerCommand>) {
        match message {
            ToWorker::Compute(request) => {
                // A result still held (a replica, or one the scheduler lost
                // track of) answers at once.
                if let Some(&Held { nbytes, .. }) = self.memory.get(&request.task) {
                    out.push(WorkerCommand::Send(FromWorker::Finished {
                        task: request.task,
                        nbytes,
                        compute_us: 0,
                        tier: Tier::Host,
                    }));
                } else {
                    self.compute(request, out);
                }
            }
            ToWorker::Free { task } => {
                if self.memory.remove(&task).is_some() {
                    out.push(WorkerCommand::Release(task));
                }
            }
            ToWorker::Adopt { task, key, nbytes } => {
                self.memory.insert(
                    task,
                    Held {
                        nbytes,
                        key: Some(key.clone()),
                    },
                );
                out.push(WorkerCommand::Adopt { task, key });
            }
            ToWorker::Discard { keys } => out.push(WorkerCommand::Discard(keys)),
            ToWorker::Cancel { task } => match self.tasks.get_mut(&task).map(|t| &mut t.phase) {
                Some(phase @ (Phase::Running | Phase::Cancelled)) => *phase = Phase::Cancelled,
                Some(Phase::Waiting | Phase::Ready) => {
                    self.remove_waiting(task);
                }
                None => {}
            },
            ToWorker::Steal { task } => {
                let stolen = match self.tasks.get(&task).map(|t| t.phase) {
                    Some(Phase::Waiting | Phase::Ready) => {
                        self.remove_waiting(task);
                        // Links sent ahead behind it are called back by
                        // the scheduler.
                        self.local_waiters.remove(&task);
                        true
                    }
                    _ => false,
                };
                out.push(WorkerCommand::Send(FromWorker::StealResponse { task, stolen }));
            }
            ToWorker::Registered { .. } | ToWorker::Rejected { .. } => {
                debug!(?message, "registration message reached the worker state; ignored");
            }
        }
    }

    fn compute(&mut self, request: Box<ComputeRequest>, out: &mut Vec<WorkerCommand>) {
        let task = request.task;
        if let Some(existing) = self.tasks.get_mut(&task) {
            // Cancelled while running, then asked for again (the scheduler
            // took it back and placed it here anew): the run under way is
            // that same task, so its result is reported after all, not
            // dropped with nobody left to compute it.
            if existing.phase == Phase::Cancelled {
                existing.phase = Phase::Running;
            } else {
                debug!(%task, "duplicate compute request ignored");
            }
            return;
        }
        // Refused before any input is waited for: a waiter listed for a
        // task that is not here would count for its next request too.
        if let Some(dep) = request.deps.iter().find(|d| {
            d.who_has.is_empty()
                && !self.memory.contains_key(&d.task)
                && !self.tasks.contains_key(&d.task)
                && !self.transfers.contains_key(&d.task)
        }) {
            // Neither here nor anywhere: the scheduler must sort it out.
            out.push(WorkerCommand::Send(FromWorker::MissingData {
                task,
                dep: dep.task,
                tried: Vec::new(),
            }));
            return;
        }
        if let Some(short) = self.lacking(&request.resources) {
            // The scheduler placed it where it can never run.
            out.push(WorkerCommand::Send(FromWorker::Failed {
                task,
                error: OpError::Failed(format!("needs {short}, which this worker does not have")),
            }));
            return;
        }
        let mut missing = 0;
        for dep in &request.deps {
            if self.memory.contains_key(&dep.task) {
                continue;
            }
            if self.tasks.contains_key(&dep.task) {
                // A chain link sent ahead: its input is computed here.
                missing += 1;
                self.local_waiters.entry(dep.task).or_default().push(task);
                continue;
            }
            missing += 1;
            match self.transfers.entry(dep.task) {
                Entry::Occupied(mut entry) => entry.get_mut().waiters.push(task),
                Entry::Vacant(entry) => {
                    let mut candidates = dep.who_has.clone();
                    candidates.reverse(); // pop() then tries them in the given order
                    let transfer = entry.insert(Transfer {
                        nbytes: dep.nbytes,
                        waiters: vec![task],
                        candidates,
                        tried: Vec::new(),
                    });
                    if let Some(peer) = transfer.candidates.pop() {
                        self.queue_fetch(peer, dep.task);
                    }
                }
            }
        }
        let phase = if missing == 0 { Phase::Ready } else { Phase::Waiting };
        if phase == Phase::Ready {
            self.make_ready(request.priority, !request.resources.is_empty(), task);
        }
        self.tasks.insert(
            task,
            Task {
                request,
                missing,
                phase,
                inline: false,
            },
        );
    }

    /// Removes `task`, which has not started (cancelled, stolen, or its
    /// input lost), and takes it off the waiter lists of its inputs: an
    /// entry left there would count for its next request too, which could
    /// then start without an input. False where it was not here.
    fn remove_waiting(&mut self, task: TaskId) -> bool {
        let Some(removed) = self.tasks.remove(&task) else {
            return false;
        };
        for dep in &removed.request.deps {
            if let Some(waiters) = self.local_waiters.get_mut(&dep.task) {
                waiters.retain(|&w| w != task);
            }
            if let Some(transfer) = self.transfers.get_mut(&dep.task) {
                transfer.waiters.retain(|&w| w != task);
            }
        }
        true
    }

    fn input_arrived(&mut self, task: TaskId) {
        if let Some(t) = self.tasks.get_mut(&task) {
            t.missing = t.missing.saturating_sub(1);
            if t.missing == 0 && t.phase == Phase::Waiting {
                t.phase = Phase::Ready;
                let (priority, constrained) = (t.request.priority, !t.request.resources.is_empty());
                self.make_ready(priority, constrained, task);
            }
        }
    }

    /// `peer` did not deliver `dep`: try its next holder, or give up and
    /// tell the scheduler, which reassigns the waiting tasks.
    fn retry_transfer(&mut self, dep: TaskId, peer: WorkerId, out: &mut Vec<WorkerCommand>) {
        let Some(transfer) = self.transfers.get_mut(&dep) else {
            return;
        };
        transfer.tried.push(peer);
        if let Some(next) = transfer.candidates.pop() {
            self.queue_fetch(next, dep);
            return;
        }
        let Some(transfer) = self.transfers.remove(&dep) else {
            return;
        };
        for waiter in transfer.waiters {
            if self.remove_waiting(waiter) {
                out.push(WorkerCommand::Send(FromWorker::MissingData {
                    task: waiter,
                    dep,
                    tried: transfer.tried.clone(),
                }));
            }
        }
    }

    /// Queues `dep` to be fetched from `peer` once the limits allow.
    fn queue_fetch(&mut self, peer: Peer, dep: TaskId) {
        let (_, queue) = self.queued.entry(peer.worker).or_insert_with(|| {
            self.queued_peers.push_back(peer.worker);
            (peer.address, VecDeque::new())
        });
        queue.push_back(dep);
    }

    /// Starts fetches of queued inputs, taking turns among peers, each
    /// fetch up to `message_bytes`, while fewer than `limits.fetches` are
    /// in flight and their bytes stay within `incoming_bytes`. A result
    /// larger than a limit moves alone, when nothing else is in flight.
    fn start_fetches(&mut self, out: &mut Vec<WorkerCommand>) {
        while self.fetches < self.limits.fetches {
            let Some(peer) = self.queued_peers.pop_front() else {
                return;
            };
            let Some((address, queue)) = self.queued.get_mut(&peer) else {
                continue;
            };
            let (mut tasks, mut bytes) = (Vec::new(), 0u64);
            while let Some(&task) = queue.front() {
                // Wanted no more (its waiters were cancelled or it arrived).
                let Some(transfer) = self.transfers.get(&task) else {
                    queue.pop_front();
                    continue;
                };
                let nbytes = transfer.nbytes;
                let over_message = !tasks.is_empty() && bytes + nbytes > self.limits.message_bytes;
                let total = self.in_flight_bytes + bytes;
                if over_message || (total > 0 && total + nbytes > self.limits.incoming_bytes) {
                    break;
                }
                queue.pop_front();
                self.in_flight.insert(task, nbytes);
                tasks.push(task);
                bytes += nbytes;
            }
            let address = address.clone();
            if queue.is_empty() {
                self.queued.remove(&peer);
            } else if tasks.is_empty() {
                // Out of byte budget: wait for a fetch to end.
                self.queued_peers.push_front(peer);
                return;
            } else {
                self.queued_peers.push_back(peer);
            }
            if tasks.is_empty() {
                continue;
            }
            self.fetches += 1;
            self.in_flight_bytes += bytes;
            out.push(WorkerCommand::Fetch { peer, address, tasks });
        }
    }

    /// Queues a task whose inputs are all here; one that needs resources
    /// (`constrained`) waits for them apart.
    fn make_ready(&mut self, priority: Priority, constrained: bool, task: TaskId) {
        let entry = Reverse((priority, task));
        if constrained {
            self.constrained.push(entry);
        } else {
            self.ready.push(entry);
        }
    }

    /// The first of `needs` this worker lacks altogether, as `name = n`.
    fn lacking(&self, needs: &[ResourceAmount]) -> Option<String> {
        needs.iter().find_map(|r| {
            let total = self.resources.iter().find(|(n, ..)| *n == r.name).map_or(0, |x| x.1);
            (total < r.amount).then(|| format!("{} = {} (it has {total})", r.name, r.amount))
        })
    }

    /// Whether `needs` are free now.
    fn free(&self, needs: &[ResourceAmount]) -> bool {
        needs.iter().all(|r| {
            self.resources
                .iter()
                .find(|(n, ..)| *n == r.name)
                .is_some_and(|(_, total, used)| used + r.amount <= *total)
        })
    }

    /// Takes (`take`) or gives back what a task holds while it runs.
    fn hold(&mut self, needs: &[ResourceAmount], take: bool) {
        for r in needs {
            if let Some((_, _, used)) = self.resources.iter_mut().find(|(n, ..)| *n == r.name) {
                *used = if take {
                    *used + r.amount
                } else {
                    used.saturating_sub(r.amount)
                };
            }
        }
    }

    /// Whether `task` is still ready to start (not cancelled, stolen or
    /// started since it was queued).
    fn still_ready(&self, task: TaskId) -> bool {
        self.tasks.get(&task).is_some_and(|t| t.phase == Phase::Ready)
    }

    /// The next task to start, left queued: the more urgent of the first
    /// ready task and the first constrained one, if its resources are
    /// free; with whether it is the constrained one. Stale entries
    /// (cancelled, stolen or started since they were queued) are dropped
    /// on the way.
    fn next_ready(&mut self) -> Option<(TaskId, bool)> {
        while let Some(&Reverse((_, task))) = self.ready.peek()
            && !self.still_ready(task)
        {
            self.ready.pop();
        }
        while let Some(&Reverse((_, task))) = self.constrained.peek()
            && !self.still_ready(task)
        {
            self.constrained.pop();
        }
        let constrained = self
            .constrained
            .peek()
            .filter(|Reverse((_, task))| self.free(&self.tasks[task].request.resources))
            .copied();
        match (self.ready.peek(), constrained) {
            // Reversed: the greater entry is the more urgent task.
            (Some(r), Some(c)) if c > *r => Some((c.0.1, true)),
            (Some(r), _) => Some((r.0.1, false)),
            (None, Some(c)) => Some((c.0.1, true)),
            (None, None) => None,
        }
    }

    /// Starts ready tasks, most urgent first, while threads (or places in
    /// their queue, see [`WorkerState::with_queued_ahead`]) are free; a
    /// quick op without resources starts inline whatever the threads do
    /// (within [`INLINE_BUDGET_US`] per call).
    fn dispatch(&mut self, out: &mut Vec<WorkerCommand>) {
        let mut budget_us = INLINE_BUDGET_US;
        while !self.paused {
            let Some((task, constrained)) = self.next_ready() else {
                return;
            };
            let t = &self.tasks[&task];
            // Each counts at least 1 us, so one event starts a bounded number.
            let inline_us = (!constrained)
                .then(|| self.quick.as_ref()?.inline_us(&t.request.op))
                .flatten()
                .map(|us| us.max(1.0))
                .filter(|&us| us <= budget_us);
            let inline = inline_us.is_some();
            if !inline && self.running >= self.nthreads + self.ahead {
                return;
            }
            if constrained {
                self.constrained.pop();
            } else {
                self.ready.pop();
            }
            let t = self.tasks.get_mut(&task).expect("a ready task is known");
            t.phase = Phase::Running;
            t.inline = inline;
            let request = &t.request;
            let needs = (!request.resources.is_empty()).then(|| request.resources.clone());
            out.push(WorkerCommand::Execute {
                task,
                key: request.key.clone(),
                op: request.op.clone(),
                args: request.args.clone(),
                inputs: request.deps.iter().map(|d| d.task).collect(),
                inline,
            });
            match inline_us {
                Some(us) => budget_us -= us,
                None => self.running += 1,
            }
            if let Some(needs) = needs {
                self.hold(&needs, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DepInfo;

    fn request(task: u64, deps: &[(u64, &[u32])]) -> ToWorker {
        ToWorker::Compute(Box::new(ComputeRequest {
            task: TaskId::new(task),
            key: format!("t{task}").into(),
            op: "sum".into(),
            args: Bytes::new(),
            priority: Priority { user: 0, seq: task },
            resources: Vec::new(),
            deps: deps
                .iter()
                .map(|(dep, holders)| DepInfo {
                    task: TaskId::new(*dep),
                    nbytes: 8,
                    who_has: holders
                        .iter()
                        .map(|w| Peer {
                            worker: WorkerId::new(*w),
                            address: format!("tcp://w{w}:1").into(),
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    fn run(state: &mut WorkerState, event: WorkerEvent) -> Vec<WorkerCommand> {
        let mut out = Vec::new();
        state.handle(event, &mut out);
        out
    }

    fn executed(task: u64) -> WorkerEvent {
        WorkerEvent::Executed {
            task: TaskId::new(task),
            outcome: Ok((8, Tier::Host)),
            compute_us: 5,
        }
    }

    #[test]
    fn adopted_scattered_values_are_inputs_and_are_freed() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
        let adopt = ToWorker::Adopt {
            task: TaskId::new(7),
            key: "s".into(),
            nbytes: 8,
        };
        let out = run(&mut state, WorkerEvent::Scheduler(adopt));
        assert_eq!(
            out,
            vec![WorkerCommand::Adopt {
                task: TaskId::new(7),
                key: "s".into()
            }]
        );
        // A task on it runs at once: nothing to fetch.
        let out = run(&mut state, WorkerEvent::Scheduler(request(8, &[(7, &[1])])));
        assert!(matches!(&out[..], [WorkerCommand::Execute { inputs, .. }] if inputs == &[TaskId::new(7)]));
        let out = run(
            &mut state,
            WorkerEvent::Scheduler(ToWorker::Free { task: TaskId::new(7) }),
        );
        assert_eq!(out, vec![WorkerCommand::Release(TaskId::new(7))]);
    }

    fn gpu_request(task: u64) -> ToWorker {
        let ToWorker::Compute(mut r) = request(task, &[]) else {
            unreachable!()
        };
        r.resources = vec![ResourceAmount {
            name: "gpu".into(),
            amount: 1,
        }];
        ToWorker::Compute(r)
    }

    fn started(out: &[WorkerCommand]) -> Vec<u64> {
        out.iter()
            .filter_map(|c| match c {
                WorkerCommand::Execute { task, .. } => Some(task.as_num()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tasks_that_need_a_gpu_run_one_at_a_time_beside_the_others() {
        let gpu = ResourceAmount {
            name: "gpu".into(),
            amount: 1,
        };
        let mut state = WorkerState::new(8, TransferLimits::for_memory(0)).with_resources(&[gpu]);
        let mut out = Vec::new();
        for t in 1..=3 {
            out.extend(run(&mut state, WorkerEvent::Scheduler(gpu_request(t))));
        }
        for t in 4..=5 {
            out.extend(run(&mut state, WorkerEvent::Scheduler(request(t, &[]))));
        }
        // One GPU task at a time; plain tasks use the idle threads.
        assert_eq!(started(&out), [1, 4, 5]);
        assert_eq!(state.resource_in_use("gpu"), 1);
        assert_eq!(started(&run(&mut state, executed(4))), Vec::<u64>::new());
        assert_eq!(started(&run(&mut state, executed(1))), [2]);
        // A cancelled GPU task holds the GPU until its op returns.
        run(
            &mut state,
            WorkerEvent::Scheduler(ToWorker::Cancel { task: TaskId::new(2) }),
        );
        assert_eq!(state.resource_in_use("gpu"), 1);
        assert_eq!(started(&run(&mut state, executed(2))), [3]);
        run(&mut state, executed(3));
        assert_eq!(state.resource_in_use("gpu"), 0);
        // A worker without the resource refuses the task with a reason.
        let mut cpu = WorkerState::new(8, TransferLimits::for_memory(0));
        let out = run(&mut cpu, WorkerEvent::Scheduler(gpu_request(9)));
        assert!(
            matches!(&out[..], [WorkerCommand::Send(FromWorker::Failed { error, .. })] if error.to_string().contains("gpu = 1")),
            "{out:?}"
        );
    }

    #[test]
    fn a_task_cancelled_while_running_then_asked_for_again_reports_its_result() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
        let out = run(&mut state, WorkerEvent::Scheduler(request(4, &[])));
        assert!(matches!(&out[..], [WorkerCommand::Execute { .. }]));
        run(
            &mut state,
            WorkerEvent::Scheduler(ToWorker::Cancel { task: TaskId::new(4) }),
        );
        // Placed here again while its op still runs: not started twice...
        assert!(run(&mut state, WorkerEvent::Scheduler(request(4, &[]))).is_empty());
        // ...and its result is reported when the op returns.
        let out = run(&mut state, executed(4));
        assert!(
            matches!(&out[..], [WorkerCommand::Send(FromWorker::Finished { task, .. })] if *task == TaskId::new(4)),
            "{out:?}"
        );
        // Cancelled and not asked for again: the result is dropped.
        run(&mut state, WorkerEvent::Scheduler(request(5, &[])));
        run(
            &mut state,
            WorkerEvent::Scheduler(ToWorker::Cancel { task: TaskId::new(5) }),
        );
        assert!(matches!(&run(&mut state, executed(5))[..], [WorkerCommand::Release(_)]));
    }

    #[test]
    fn runs_in_priority_order_up_to_nthreads() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
        let out = run(&mut state, WorkerEvent::Scheduler(request(2, &[])));
        assert!(matches!(&out[..], [WorkerCommand::Execute { task, .. }] if *task == TaskId::new(2)));
        assert!(run(&mut state, WorkerEvent::Scheduler(request(9, &[]))).is_empty());
        assert!(run(&mut state, WorkerEvent::Scheduler(request(5, &[]))).is_empty());
        let out = run(&mut state, executed(2));
        assert!(matches!(&out[0], WorkerCommand::Send(FromWorker::Finished { task, .. }) if *task == TaskId::new(2)));
        assert!(matches!(&out[1], WorkerCommand::Execute { task, .. } if *task == TaskId::new(5)));
    }

    #[test]
    fn ops_queued_ahead_start_beyond_the_threads_and_cannot_be_stolen() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0)).with_queued_ahead(1);
        for task in [2, 9, 5] {
            run(&mut state, WorkerEvent::Scheduler(request(task, &[])));
        }
        // 2 started with the first request; 5 (more urgent than 9) can
        // not, since 9 took the place in the queue before it came.
        assert_eq!(state.running(), 2);
        // The queued one is not stolen; the one still waiting is.
        for (task, stealable) in [(9, false), (5, true)] {
            let out = run(
                &mut state,
                WorkerEvent::Scheduler(ToWorker::Steal {
                    task: TaskId::new(task),
                }),
            );
            assert!(
                matches!(&out[..], [WorkerCommand::Send(FromWorker::StealResponse { stolen, .. })] if *stolen == stealable),
                "{task}: {out:?}"
            );
        }
        let out = run(&mut state, executed(2));
        assert!(
            matches!(&out[..], [WorkerCommand::Send(FromWorker::Finished { .. })]),
            "{out:?}"
        );
        assert_eq!(state.running(), 1);
    }

    #[test]
    fn quick_ops_start_inline_beside_a_busy_thread() {
        let with_op = |task: u64, deps: &[(u64, &[u32])], op: &str| {
            let mut r = request(task, deps);
            if let ToWorker::Compute(c) = &mut r {
                c.op = op.into();
            }
            WorkerEvent::Scheduler(r)
        };
        let done = |task: u64, compute_us: u64| WorkerEvent::Executed {
            task: TaskId::new(task),
            outcome: Ok((8, Tier::Host)),
            compute_us,
        };
        let executes = |out: &[WorkerCommand]| -> Vec<(u64, bool)> {
            out.iter()
                .filter_map(|c| match c {
                    WorkerCommand::Execute { task, inline, .. } => Some((task.as_num(), *inline)),
                    _ => None,
                })
                .collect()
        };
        for quick in [true, false] {
            let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
            if quick {
                state = state.with_quick_ops();
            }
            // Three runs of 5 us make `count` a quick op here.
            for t in 1..=3 {
                assert_eq!(executes(&run(&mut state, with_op(t, &[], "count"))), [(t, false)]);
                run(&mut state, done(t, 5));
            }
            // A partition, its count (a link sent ahead), the next partition.
            assert_eq!(executes(&run(&mut state, with_op(10, &[], "scan"))), [(10, false)]);
            assert!(run(&mut state, with_op(11, &[(10, &[])], "count")).is_empty());
            assert!(run(&mut state, with_op(12, &[], "scan")).is_empty());
            let out = run(&mut state, done(10, 2000));
            if quick {
                // The count runs inline, and the next partition takes the
                // thread at once.
                assert_eq!(executes(&out), [(11, true), (12, false)]);
                assert_eq!(state.running(), 1);
                run(&mut state, done(11, 5));
                assert_eq!(state.running(), 1, "an inline op held no thread");
                // A hundred counts ready at once: one event starts those
                // that fit its budget (5 us each), the next ones the rest.
                for t in 20..120 {
                    run(&mut state, with_op(t, &[(12, &[])], "count"));
                }
                let started = executes(&run(&mut state, done(12, 2000)));
                let inline = started.iter().filter(|&&(_, inline)| inline).count();
                assert_eq!(inline, (INLINE_BUDGET_US / 5.0) as usize);
                assert_eq!(started.len(), inline + 1, "and one on the thread");
                assert_eq!(executes(&run(&mut state, done(20, 5))).len(), 100 - started.len());
            } else {
                assert_eq!(executes(&out), [(11, false)]);
            }
        }
    }

    fn fetches(out: &[WorkerCommand]) -> Vec<(u32, Vec<u64>)> {
        out.iter()
            .filter_map(|c| match c {
                WorkerCommand::Fetch { peer, tasks, .. } => {
                    Some((peer.as_num(), tasks.iter().map(|t| t.as_num()).collect()))
                }
                _ => None,
            })
            .collect()
    }

    fn fetched(peer: u32, got: &[u64], nbytes: u64) -> WorkerEvent {
        WorkerEvent::Fetched {
            peer: WorkerId::new(peer),
            got: got.iter().map(|&t| (TaskId::new(t), nbytes)).collect(),
            missing: vec![],
            micros: 0,
        }
    }

    #[test]
    fn fetches_stay_within_the_message_count_and_byte_limits() {
        let limits = TransferLimits {
            fetches: 2,
            message_bytes: 100,
            incoming_bytes: 250,
        };
        let mut state = WorkerState::new(1, limits);
        // Six 40-byte inputs on peer 7, one of 1,000 bytes on peer 8.
        let ToWorker::Compute(mut compute) = request(
            10,
            &[
                (1, &[7]),
                (2, &[7]),
                (3, &[7]),
                (4, &[7]),
                (5, &[7]),
                (6, &[7]),
                (7, &[8]),
            ],
        ) else {
            unreachable!()
        };
        for dep in &mut compute.deps {
            dep.nbytes = if dep.task.as_num() == 7 { 1000 } else { 40 };
        }
        let out = run(&mut state, WorkerEvent::Scheduler(ToWorker::Compute(compute)));
        // 100 bytes a message; the large one waits until nothing is in flight.
        assert_eq!(fetches(&out), vec![(7, vec![1, 2])]);
        assert_eq!(state.in_flight_bytes(), 80);
        let out = run(&mut state, fetched(7, &[1, 2], 40));
        assert_eq!(fetches(&out), vec![(8, vec![7])], "alone, though over the byte limit");
        assert_eq!(state.in_flight_bytes(), 1000);
        let out = run(&mut state, fetched(8, &[7], 1000));
        assert_eq!(fetches(&out), vec![(7, vec![3, 4]), (7, vec![5, 6])]);
        assert_eq!(state.in_flight_bytes(), 160);
        let out = run(&mut state, fetched(7, &[3, 4], 40));
        assert!(
            !out.iter()
                .any(|c| matches!(c, WorkerCommand::Fetch { .. } | WorkerCommand::Execute { .. }))
        );
        let out = run(&mut state, fetched(7, &[5, 6], 40));
        assert!(matches!(&out[..], [.., WorkerCommand::Execute { inputs, .. }] if inputs.len() == 7));
        assert_eq!(state.in_flight_bytes(), 0);
    }

    #[test]
    fn fetches_missing_inputs_batched_per_peer_and_falls_back() {
        let mut state = WorkerState::new(2, TransferLimits::for_memory(0));
        let out = run(
            &mut state,
            WorkerEvent::Scheduler(request(10, &[(1, &[7, 8]), (2, &[7])])),
        );
        let [WorkerCommand::Fetch { peer, tasks, .. }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!((*peer, tasks.len()), (WorkerId::new(7), 2));
        // Peer 7 had only task 2; task 1 is asked from peer 8 next.
        let out = run(
            &mut state,
            WorkerEvent::Fetched {
                peer: WorkerId::new(7),
                got: vec![(TaskId::new(2), 8)],
                missing: vec![TaskId::new(1)],
                micros: 0,
            },
        );
        assert!(
            out.iter()
                .any(|c| matches!(c, WorkerCommand::Fetch { peer, .. } if *peer == WorkerId::new(8)))
        );
        let out = run(
            &mut state,
            WorkerEvent::Fetched {
                peer: WorkerId::new(8),
                got: vec![(TaskId::new(1), 8)],
                missing: vec![],
                micros: 0,
            },
        );
        assert!(matches!(out.last(), Some(WorkerCommand::Execute { inputs, .. }) if inputs.len() == 2));
    }

    #[test]
    fn gives_up_after_every_holder_failed() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
        run(&mut state, WorkerEvent::Scheduler(request(10, &[(1, &[7])])));
        let out = run(
            &mut state,
            WorkerEvent::Fetched {
                peer: WorkerId::new(7),
                got: vec![],
                missing: vec![TaskId::new(1)],
                micros: 0,
            },
        );
        assert_eq!(
            out,
            vec![WorkerCommand::Send(FromWorker::MissingData {
                task: TaskId::new(10),
                dep: TaskId::new(1),
                tried: vec![WorkerId::new(7)],
            })]
        );
        assert_eq!(state.n_tasks(), 0);
    }

    #[test]
    fn steal_cancel_and_free() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
        run(&mut state, WorkerEvent::Scheduler(request(1, &[])));
        run(&mut state, WorkerEvent::Scheduler(request(2, &[])));
        let steal = |task| {
            WorkerEvent::Scheduler(ToWorker::Steal {
                task: TaskId::new(task),
            })
        };
        let out = run(&mut state, steal(1));
        assert!(matches!(
            &out[..],
            [WorkerCommand::Send(FromWorker::StealResponse { stolen: false, .. })]
        ));
        let out = run(&mut state, steal(2));
        assert!(matches!(
            &out[..],
            [WorkerCommand::Send(FromWorker::StealResponse { stolen: true, .. })]
        ));
        run(
            &mut state,
            WorkerEvent::Scheduler(ToWorker::Cancel { task: TaskId::new(1) }),
        );
        let out = run(&mut state, executed(1));
        assert_eq!(
            out,
            vec![WorkerCommand::Release(TaskId::new(1))],
            "cancelled result dropped"
        );
        assert_eq!(state.n_results(), 0);
        run(&mut state, WorkerEvent::Scheduler(request(3, &[])));
        run(&mut state, executed(3));
        let out = run(
            &mut state,
            WorkerEvent::Scheduler(ToWorker::Free { task: TaskId::new(3) }),
        );
        assert_eq!(out, vec![WorkerCommand::Release(TaskId::new(3))]);
    }

    #[test]
    fn a_task_asked_for_again_waits_for_every_input_once() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
        // 1 runs here; 2 waits on 1 (a link) and on 9 and 8 from a peer.
        run(&mut state, WorkerEvent::Scheduler(request(1, &[])));
        let two = || request(2, &[(1, &[]), (9, &[5]), (8, &[5])]);
        run(&mut state, WorkerEvent::Scheduler(two()));
        // Stolen while it waits, then placed here again: its inputs are
        // each waited for once, not once per request.
        run(
            &mut state,
            WorkerEvent::Scheduler(ToWorker::Steal { task: TaskId::new(2) }),
        );
        run(&mut state, WorkerEvent::Scheduler(two()));
        run(&mut state, fetched(5, &[9], 8));
        let out = run(&mut state, executed(1));
        assert!(
            !out.iter()
                .any(|c| matches!(c, WorkerCommand::Execute { task, .. } if task.as_num() == 2)),
            "8 is still missing: {out:?}"
        );
        let out = run(&mut state, fetched(5, &[8], 8));
        assert!(
            out.iter()
                .any(|c| matches!(c, WorkerCommand::Execute { task, .. } if task.as_num() == 2)),
            "{out:?}"
        );
    }

    #[test]
    fn chain_links_sent_ahead_start_when_their_input_is_done_here() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
        assert!(matches!(
            &run(&mut state, WorkerEvent::Scheduler(request(1, &[])))[..],
            [WorkerCommand::Execute { .. }]
        ));
        // `2` waits on `1`, which runs here: no fetch, no message.
        assert!(run(&mut state, WorkerEvent::Scheduler(request(2, &[(1, &[])]))).is_empty());
        assert!(run(&mut state, WorkerEvent::Scheduler(request(3, &[(2, &[])]))).is_empty());
        let out = run(&mut state, executed(1));
        assert!(
            matches!(&out[1], WorkerCommand::Execute { task, .. } if *task == TaskId::new(2)),
            "{out:?}"
        );
        let out = run(&mut state, executed(2));
        assert!(
            matches!(&out[1], WorkerCommand::Execute { task, .. } if *task == TaskId::new(3)),
            "{out:?}"
        );
        // A failed link leaves its waiter to the scheduler's cancel.
        run(&mut state, WorkerEvent::Scheduler(request(4, &[])));
        run(&mut state, WorkerEvent::Scheduler(request(5, &[(4, &[])])));
        let out = run(
            &mut state,
            WorkerEvent::Executed {
                task: TaskId::new(4),
                outcome: Err("boom".into()),
                compute_us: 1,
            },
        );
        assert!(
            !out.iter().any(|c| matches!(c, WorkerCommand::Execute { .. })),
            "{out:?}"
        );
        run(
            &mut state,
            WorkerEvent::Scheduler(ToWorker::Cancel { task: TaskId::new(5) }),
        );
        assert_eq!(state.n_tasks(), 1, "only 3 is left, running");
        // An input that is nowhere is reported at once.
        let out = run(&mut state, WorkerEvent::Scheduler(request(6, &[(99, &[])])));
        assert!(matches!(&out[..], [WorkerCommand::Send(FromWorker::MissingData { tried, .. })] if tried.is_empty()));
    }

    #[test]
    fn a_paused_worker_starts_nothing_until_it_resumes() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
        let out = run(&mut state, WorkerEvent::Paused(true));
        assert_eq!(out, vec![WorkerCommand::Send(FromWorker::Paused { paused: true })]);
        assert!(
            run(&mut state, WorkerEvent::Paused(true)).is_empty(),
            "no news, no message"
        );
        assert!(
            run(&mut state, WorkerEvent::Scheduler(request(1, &[]))).is_empty(),
            "queued, not started"
        );
        let out = run(&mut state, WorkerEvent::Paused(false));
        assert_eq!(out[0], WorkerCommand::Send(FromWorker::Paused { paused: false }));
        assert!(matches!(&out[1], WorkerCommand::Execute { task, .. } if *task == TaskId::new(1)));
    }

    #[test]
    fn failures_are_reported_and_free_the_thread() {
        let mut state = WorkerState::new(1, TransferLimits::for_memory(0));
        run(&mut state, WorkerEvent::Scheduler(request(1, &[])));
        run(&mut state, WorkerEvent::Scheduler(request(2, &[])));
        let out = run(
            &mut state,
            WorkerEvent::Executed {
                task: TaskId::new(1),
                outcome: Err("boom".into()),
                compute_us: 1,
            },
        );
        assert!(
            matches!(&out[0], WorkerCommand::Send(FromWorker::Failed { error, .. }) if error.to_string() == "boom")
        );
        assert!(matches!(&out[1], WorkerCommand::Execute { .. }));
    }
}
