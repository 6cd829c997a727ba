//! The messages between scheduler, workers and clients.
//!
//! These are plain serde enums: the reactor picks the codec and the framing.
//! Workers talk in [`TaskId`]s (compact interned keys); clients talk in keys,
//! since keys are what users name. Data never passes through here: a worker
//! learns from [`ComputeRequest::deps`] which peers hold its inputs and fetches
//! them itself.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::graph::Graph;
use crate::ids::{Key, SharedStr, TaskId, WorkerId};
use crate::layer::LayerGraph;

/// Bump on any incompatible change to these messages (or to the data plane's,
/// `codec::DataAsk` and `codec::DataReply`); the reactor checks it in
/// its handshake.
pub const PROTOCOL_VERSION: u32 = 8;

/// Scheduling priority: smaller runs first. Higher user priority wins, then
/// the submission sequence (earlier graphs first, then `dask.order`-style
/// position within a graph).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Priority {
    /// User priority from the task's annotations; larger is more urgent.
    pub user: i32,
    /// Global submission order.
    pub seq: u64,
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.user.cmp(&self.user).then_with(|| self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Where a result lives on its worker.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// GPU memory.
    Device,
    /// Host memory.
    #[default]
    Host,
    /// Spilled to disk.
    Disk,
}

/// An amount of a named resource (`gpu = 1`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceAmount {
    /// Resource name, such as `gpu`.
    pub name: SharedStr,
    /// Whole units.
    pub amount: u32,
}

/// What a worker tells the scheduler when it joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique name; task restrictions refer to workers by name or address.
    pub name: SharedStr,
    /// Where peers fetch data from (a transport URL).
    pub address: SharedStr,
    /// Compute threads.
    pub nthreads: u32,
    /// Memory limit in bytes (0 = none).
    pub memory_limit: u64,
    /// Resources this worker provides, such as `gpu = 1`.
    pub resources: Vec<ResourceAmount>,
    /// The URL of its own status page and `/metrics`, if it serves one.
    pub dashboard: Option<SharedStr>,
    /// Results it computed for an earlier scheduler (one that went away)
    /// and still holds: a restarted scheduler claims them for the tasks
    /// of the same keys instead of computing them again.
    pub held: Vec<HeldResult>,
}

/// A result a worker kept across a change of scheduler, by key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldResult {
    /// The key of the task that made it.
    pub key: Key,
    /// Its size.
    pub nbytes: u64,
    /// Where it is now.
    pub tier: Tier,
}

/// How busy a worker's process is, sent with each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vitals {
    /// CPU time used over the last heartbeat interval, in percent of one
    /// core (400 for four busy cores).
    pub cpu_percent: f32,
    /// Resident memory of the process, bytes.
    pub rss_bytes: u64,
}

/// A peer that holds some data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer's id.
    pub worker: WorkerId,
    /// The peer's data address.
    pub address: SharedStr,
}

/// An input of a task and where to fetch it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepInfo {
    /// The input's id.
    pub task: TaskId,
    /// Its size as reported by the worker that computed it.
    pub nbytes: u64,
    /// Workers that hold it (at least one).
    pub who_has: Vec<Peer>,
}

/// Everything a worker needs to run a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeRequest {
    /// The task.
    pub task: TaskId,
    /// Its key, for logs and error messages.
    pub key: Key,
    /// The op to run (a name in the worker's registry).
    pub op: SharedStr,
    /// Serialized arguments.
    pub args: Bytes,
    /// Worker-side ordering of ready tasks.
    pub priority: Priority,
    /// Resources the task holds while running.
    pub resources: Vec<ResourceAmount>,
    /// Inputs, in the order the op receives them.
    pub deps: Vec<DepInfo>,
}

/// Scheduler to worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Registration accepted.
    Registered {
        /// The id the scheduler knows this worker by.
        worker: WorkerId,
    },
    /// Registration refused (such as a duplicate name); the reactor closes.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Run a task. A worker that still holds the task's result (computed
    /// before, then cancelled) answers [`FromWorker::Finished`] at once.
    Compute(Box<ComputeRequest>),
    /// Drop a result (or a replica) from the store.
    Free {
        /// The result's task.
        task: TaskId,
    },
    /// Forget a task sent earlier; if it is running, discard its result.
    Cancel {
        /// The task.
        task: TaskId,
    },
    /// Give a task back if it has not started; answer with
    /// [`FromWorker::StealResponse`].
    Steal {
        /// The task.
        task: TaskId,
    },
    /// A value is held here under `key`, pushed by a client (scatter) or
    /// kept from an earlier scheduler ([`WorkerInfo::held`]), and the
    /// scheduler registered it: keep it as the result of `task` from now on.
    Adopt {
        /// The id the scheduler gave the scattered key.
        task: TaskId,
        /// The key the client pushed the value under.
        key: Key,
        /// Its size, as the client measured it.
        nbytes: u64,
    },
    /// Drop the values held under these keys that no task claimed (kept
    /// from an earlier scheduler; see [`WorkerInfo::held`]).
    Discard {
        /// The keys.
        keys: Vec<Key>,
    },
}

/// Worker to scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromWorker {
    /// A task ran and its result is in this worker's store.
    Finished {
        /// The task.
        task: TaskId,
        /// Size of the result.
        nbytes: u64,
        /// How long the op ran, in microseconds (measured by the worker).
        compute_us: u64,
        /// Where the result is kept.
        tier: Tier,
    },
    /// The op returned an error or panicked.
    Failed {
        /// The task.
        task: TaskId,
        /// What the op said (a panic is an [`OpError::Failed`]).
        error: OpError,
    },
    /// Answer to [`ToWorker::Steal`].
    StealResponse {
        /// The task.
        task: TaskId,
        /// True when the worker dropped the task; false when it had started
        /// (or finished) it.
        stolen: bool,
    },
    /// The worker could not fetch an input of `task` from any of `tried`.
    MissingData {
        /// The task that needed the input.
        task: TaskId,
        /// The input.
        dep: TaskId,
        /// The peers that failed to serve it.
        tried: Vec<WorkerId>,
    },
    /// The worker paused (memory pressure: it takes no new tasks) or
    /// resumed. Tasks it already has stay with it.
    Paused {
        /// True when paused.
        paused: bool,
    },
    /// A result moved between memory tiers on this worker: spilled to
    /// host memory or disk, or read back.
    Moved {
        /// The result's task.
        task: TaskId,
        /// Where it is now.
        tier: Tier,
    },
    /// The worker now holds a replica of `task`'s result (after a fetch).
    Acquired {
        /// The result's task.
        task: TaskId,
        /// Its size.
        nbytes: u64,
        /// Its share, by size, of the time the fetch that brought it took
        /// (the scheduler measures the bandwidth from it).
        micros: u64,
    },
}

/// Client to scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromClient {
    /// Submit a graph; the client gets futures on `graph.outputs`.
    SubmitGraph(Graph),
    /// Submit a graph of task specs and layers; the client gets futures
    /// on `outputs` and on every task of `output_layers`.
    SubmitLayers(LayerGraph),
    /// The client put data on a worker itself (scatter): register the keys
    /// as in memory there, with a future for the client, and tell the worker
    /// ([`ToWorker::Adopt`]). All or nothing: an unknown worker or a known
    /// key refuses the whole message with [`ToClient::ScatterRejected`];
    /// else each key is answered with [`ToClient::InMemory`]. Scattered
    /// data has no lineage: if its last holder dies it errs with
    /// [`TaskError::DataLost`].
    Scatter {
        /// The worker that holds the data.
        worker: WorkerId,
        /// Keys and their sizes.
        data: Vec<(Key, u64)>,
    },
    /// Drop the client's futures on these keys (a client holds at most one
    /// future per key).
    Release {
        /// The keys.
        keys: Vec<Key>,
    },
    /// Which workers are there? Answered by [`ToClient::Workers`].
    Workers {
        /// Echoed in the answer.
        request: u64,
    },
    /// The client could not gather these keys from the workers said to
    /// hold them (Dask's `missing-data`): each with the workers it tried.
    /// The scheduler forgets those replicas, recomputes a key that has
    /// none left from its lineage, and answers each key with its current
    /// status: [`ToClient::InMemory`] with the holders left,
    /// [`ToClient::Lost`] while it is being recomputed (`InMemory`
    /// follows), or [`ToClient::Erred`].
    MissingData {
        /// The keys, each with the workers that failed to deliver it.
        keys: Vec<(Key, Vec<WorkerId>)>,
    },
    /// Which workers hold these keys? Answered by [`ToClient::WhoHas`].
    WhoHas {
        /// Echoed in the answer.
        request: u64,
        /// The keys.
        keys: Vec<Key>,
    },
    /// Start (`true`) or stop sending this client the scheduler's task
    /// stream as [`ToClient::Observed`] batches (for performance reports);
    /// a scheduler that records nothing answers
    /// [`ToClient::ObserveRefused`].
    Observe {
        /// Start or stop.
        on: bool,
    },
    /// After a reconnection to a restarted scheduler: the client holds
    /// futures on these keys, which have no lineage (scattered). Each is
    /// registered again from a worker that kept it ([`WorkerInfo::held`])
    /// and answered like a submitted key, or erred with
    /// [`TaskError::DataLost`] when no worker did.
    Reclaim {
        /// The keys.
        keys: Vec<Key>,
    },
}

/// A live worker as the scheduler sees it, for clients (scatter placement,
/// diagnostics).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The scheduler's id for it.
    pub worker: WorkerId,
    /// Its unique name.
    pub name: SharedStr,
    /// Its data address.
    pub address: SharedStr,
    /// Compute threads.
    pub nthreads: u32,
    /// Results it holds, by the scheduler's books.
    pub n_held: u64,
    /// Their total size.
    pub nbytes_held: u64,
    /// Tasks assigned to it and not finished.
    pub processing: u64,
}

impl WorkerStatus {
    /// Where peers and clients reach it.
    pub fn peer(&self) -> Peer {
        Peer {
            worker: self.worker,
            address: self.address.clone(),
        }
    }
}

/// Scheduler to client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToClient {
    /// The graph was accepted.
    GraphAccepted {
        /// Tasks added.
        new_tasks: u64,
        /// Tasks dropped: already known to the scheduler or not needed for the
        /// outputs.
        culled: u64,
    },
    /// The graph was refused as a whole; nothing of it was kept.
    GraphRejected {
        /// Why (duplicate key, unknown dependency, cycle...).
        reason: String,
    },
    /// A wanted key is in memory.
    InMemory {
        /// The key.
        key: Key,
        /// Its task, by which its holders serve it (a replica fetched by a
        /// peer is held by task only).
        task: TaskId,
        /// Its size.
        nbytes: u64,
        /// Where to gather it from.
        who_has: Vec<Peer>,
    },
    /// A wanted key that was in memory lost its last holder (a worker
    /// died, or a client reported it missing) and is being recomputed from
    /// its lineage: wait for [`ToClient::InMemory`] (or
    /// [`ToClient::Erred`]) again.
    Lost {
        /// The key.
        key: Key,
    },
    /// A wanted key failed.
    Erred {
        /// The key.
        key: Key,
        /// The failure.
        error: TaskError,
    },
    /// A [`FromClient::Scatter`] was refused as a whole; none of its keys
    /// were registered.
    ScatterRejected {
        /// The worker named in it.
        worker: WorkerId,
        /// Its keys.
        keys: Vec<Key>,
        /// Why (unknown worker, key already known...).
        reason: String,
    },
    /// Answer to [`FromClient::Workers`]: the live workers, by id.
    Workers {
        /// The request's number.
        request: u64,
        /// The workers.
        workers: Vec<WorkerStatus>,
    },
    /// Answer to [`FromClient::WhoHas`]: per key asked, in order, the
    /// workers holding it (none when it is unknown or not in memory).
    WhoHas {
        /// The request's number.
        request: u64,
        /// Holders per key.
        who_has: Vec<Vec<Peer>>,
    },
    /// A batch of the task stream a client asked for with
    /// [`FromClient::Observe`]: an [`crate::observe::ObservedBatch`] as
    /// JSON (its events are tagged by kind, as the dashboard's pages read
    /// them, which postcard cannot decode).
    Observed {
        /// The batch, JSON.
        json: String,
        /// The last batch, sent after a stop.
        last: bool,
    },
    /// [`FromClient::Observe`] refused.
    ObserveRefused {
        /// Why.
        reason: String,
    },
}

/// Why an op failed, typed so that callers tell a full device from bad
/// input without reading messages. Crosses the wire intact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// Memory could not be had, even after spilling other results.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The arguments or inputs are not what the op takes.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The op failed (or panicked) with this message.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for OpError {
    fn from(message: String) -> Self {
        OpError::Failed(message)
    }
}

impl From<&str> for OpError {
    fn from(message: &str) -> Self {
        OpError::Failed(message.to_string())
    }
}

/// Why a task failed. Crosses the wire intact to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TaskError {
    /// The op returned an error or panicked.
    #[error("task {key} (op {op}) failed on worker {worker}: {error}")]
    OpFailed {
        /// The failing task.
        key: Key,
        /// Its op.
        op: SharedStr,
        /// Where it ran.
        worker: SharedStr,
        /// What the op said.
        error: OpError,
    },
    /// Workers kept dying while running the task.
    #[error(
        "task {key} (op {op}) was running on {deaths} workers that died \
         (allowed_failures = {allowed}); last one: {last_worker}"
    )]
    KilledWorkers {
        /// The task.
        key: Key,
        /// Its op.
        op: SharedStr,
        /// How many workers died while running it.
        deaths: u32,
        /// The configured `allowed_failures`.
        allowed: u32,
        /// The last of them.
        last_worker: SharedStr,
    },
    /// Scattered data lost its last holder; it has no lineage to recompute.
    #[error("scattered key {key} was lost (no worker holds it) and cannot be recomputed")]
    DataLost {
        /// The scattered key.
        key: Key,
    },
    /// An input failed.
    #[error("task {key} not run: its dependency failed: {cause}")]
    DependencyFailed {
        /// The task.
        key: Key,
        /// The original failure.
        cause: Box<TaskError>,
    },
}

impl TaskError {
    /// The failure at the root of a chain of [`TaskError::DependencyFailed`].
    pub fn root_cause(&self) -> &TaskError {
        match self {
            TaskError::DependencyFailed { cause, .. } => cause.root_cause(),
            other => other,
        }
    }
}
