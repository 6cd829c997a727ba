//! The client: submits graphs to the scheduler, holds futures on their
//! keys, and gathers results straight from the workers that hold them.
//!
//! A [`TaskFuture`] keeps its key wanted: when the last clone of it is
//! dropped the client tells the scheduler, which may then release the
//! result. Errors carry the key, the op and the remote message.
//!
//! Scatter works as in Dask: the client asks the scheduler for its workers,
//! pushes the values straight to the chosen workers' data servers (which
//! keep them aside), then tells the scheduler, which registers the keys and
//! has each worker adopt its values. A push or a registration that fails
//! fails the whole call, and what was put aside is dropped.
//!
//! A scheduler that goes away (killed, then restarted on the same
//! address) does not end the client's work: the client reconnects for up
//! to [`ClientOptions::reconnect_timeout`], waits for the workers that held
//! its results to register again, and resubmits the graphs it still holds
//! futures from (each kept, encoded, while it has live futures), so the
//! new scheduler claims what the workers kept and computes only the rest.
//! The futures stay the same and resolve as if nothing happened.
//!
//! [`gather`](Client::gather) and [`wait`](Client::wait) show a progress
//! bar on a terminal (with the `progress-bar` feature); the blocking facade is in
//! [`crate::blocking`].

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};
use weft_transport::{Config as TransportConfig, Connection, Message, Receiver, Sender, connect};

use crate::codec::{self, ClientDown, ClientUp, DataRequest, Hello};
use crate::data::PeerPool;
use crate::error::{Result, RuntimeError};
use crate::graph::{Graph, TaskSpec};
use crate::ids::{FxHashMap, Key, TaskId};
use crate::layer::LayerGraph;
#[cfg(feature = "progress-bar")]
use crate::progress::{self, Meter};
use crate::protocol::{FromClient, PROTOCOL_VERSION, Peer, TaskError, ToClient, WorkerStatus};
use crate::value::Value;

/// Keys asked of one worker in one request when gathering, and values
/// pushed in one request when scattering.
const GATHER_BATCH: usize = 4096;

/// How often one gather reports the same key missing before it gives up
/// on it: each report has the scheduler recompute the key, so only a key
/// whose new holders keep failing too reaches this.
pub const MAX_MISSING_REPORTS: u32 = 16;

/// Most bytes and frames pushed in one scatter request: far below the
/// transport's limits on one message.
const PUT_BYTES: u64 = 1 << 30;
const PUT_FRAMES: usize = 32_768;

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Transport settings (token, TLS, timeouts).
    pub transport: TransportConfig,
    /// Show a progress bar on stderr during long calls when stderr is a
    /// terminal (default: on, unless `WEFT_PROGRESS=0`; only with the
    /// `progress-bar` feature, which the `weft` facade turns on).
    pub progress: bool,
    /// How long to keep trying to reach a scheduler that went away (and
    /// may restart on the same address) before failing the futures with
    /// [`RuntimeError::SchedulerLost`]; zero fails them at once.
    pub reconnect_timeout: Duration,
    /// Once reconnected, how long to wait at most for the workers that
    /// held this client's results to register again before resubmitting,
    /// so that what they kept is claimed rather than computed again.
    pub resume_wait: Duration,
}

impl ClientOptions {
    /// Defaults with these transport settings: reconnect for 30 s, wait
    /// up to 10 s for the workers.
    pub fn new(transport: TransportConfig) -> Self {
        ClientOptions {
            transport,
            progress: progress_by_env(),
            reconnect_timeout: Duration::from_secs(30),
            resume_wait: Duration::from_secs(10),
        }
    }
}

/// The environment variable that turns progress bars off with `0`.
pub const PROGRESS_ENV: &str = "WEFT_PROGRESS";

/// Whether progress bars are on by default: unless `WEFT_PROGRESS` says
/// `0`, `false`, `no` or `off`.
fn progress_by_env() -> bool {
    std::env::var(PROGRESS_ENV).map_or(true, |value| weft_gpu::units::parse_bool(&value).unwrap_or(true))
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self::new(TransportConfig::default())
    }
}

/// A connection to a scheduler. Cloning shares it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    scheduler: String,
    outbound: mpsc::UnboundedSender<Outgoing>,
    state: Mutex<State>,
    /// Woken when a lost connection is replaced, or given up on.
    reconnected: Notify,
    peers: PeerPool,
    /// Prefix that keeps generated keys unique across clients.
    prefix: String,
    /// Whether long calls may show a progress bar.
    progress: AtomicBool,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// What the connection's writer sends.
enum Outgoing {
    /// Merged with the messages queued with it into one batch.
    Message(FromClient),
    /// Already encoded (a graph, kept for resubmission): sent as it is.
    Encoded(Message),
}

/// Answers to a graph submission.
type Accepted = oneshot::Sender<std::result::Result<(), String>>;

#[derive(Default)]
struct State {
    keys: FxHashMap<Key, Entry>,
    /// Graphs submitted, by number, kept while futures they made live.
    graphs: BTreeMap<u64, Kept>,
    next_graph: u64,
    /// Graphs sent on this connection and not answered yet, in order.
    unanswered: VecDeque<u64>,
    /// Queries sent, by request number, waiting for their answer.
    queries: HashMap<u64, oneshot::Sender<ToClient>>,
    next_query: u64,
    /// False while the client reconnects to a scheduler that went away.
    reconnecting: bool,
    /// Data addresses in the last list of workers asked for: after a
    /// reconnection the client waits for them (and for the holders of its
    /// results), as they hold what it needs.
    workers_seen: BTreeSet<String>,
    /// Why the scheduler connection ended for good, once it has.
    lost: Option<String>,
    generated: u64,
    /// Futures that left `Pending`, ever: progress bars count with it.
    resolved: u64,
    /// Where the task stream goes while the client records it.
    observed: Option<mpsc::UnboundedSender<ToClient>>,
}

struct Entry {
    refs: usize,
    status: Status,
    changed: Arc<Notify>,
    /// What made the future first: resubmitted with it after a reconnection.
    origin: Origin,
}

/// Where a future came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The graph of this number (see [`State::graphs`]).
    Graph(u64),
    /// A scatter: no lineage.
    Scatter,
}

/// A submitted graph, encoded, kept for resubmission.
struct Kept {
    message: Message,
    /// Futures whose origin it is.
    live: usize,
    /// The submitter, until the scheduler answers.
    accepted: Option<Accepted>,
}

#[derive(Clone)]
enum Status {
    Pending,
    /// Was in memory, then lost every holder: being recomputed.
    Lost,
    /// In memory: its task (what holders serve it by) and its holders.
    Memory(TaskId, Vec<Peer>),
    Erred(TaskError),
    Cancelled,
    /// A scatter the scheduler refused: it never knew the key.
    Rejected {
        worker: String,
        reason: String,
    },
    /// Its graph could not be resubmitted to a restarted scheduler.
    Abandoned(String),
}

impl Status {
    /// Whether the scheduler holds no future of ours on the key (so a
    /// release would be void).
    fn unknown_to_scheduler(&self) -> bool {
        matches!(self, Status::Cancelled | Status::Rejected { .. } | Status::Abandoned(_))
    }

    /// Whether a scheduler still has to settle it.
    fn unsettled(&self) -> bool {
        matches!(self, Status::Pending | Status::Lost | Status::Memory(..))
    }
}

impl Client {
    /// Connects to the scheduler at `address`.
    pub async fn connect(address: &str, transport: &TransportConfig) -> Result<Client> {
        Self::connect_with(address, &ClientOptions::new(transport.clone())).await
    }

    /// Connects to the scheduler at `address` with these options.
    pub async fn connect_with(address: &str, options: &ClientOptions) -> Result<Client> {
        let connection = open(address, &options.transport).await?;
        let (outbound, queue) = mpsc::unbounded_channel();
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let session = tokio::spawn(run(connection, queue, weak.clone(), options.clone()));
            Inner {
                scheduler: address.to_string(),
                outbound,
                state: Mutex::new(State::default()),
                reconnected: Notify::new(),
                peers: PeerPool::new(options.transport.clone()),
                prefix: format!("{:016x}", fastrand::u64(..)),
                progress: AtomicBool::new(options.progress),
                tasks: vec![session],
            }
        });
        Ok(Client { inner })
    }

    /// Submits a graph and returns futures on its outputs, in order.
    pub async fn compute(&self, graph: Graph) -> Result<Vec<TaskFuture>> {
        let outputs = graph.outputs.clone();
        self.send_graph(&outputs, FromClient::SubmitGraph(graph)).await
    }

    /// Submits a graph of specs and layers ([`crate::layer`]) and returns
    /// futures on its `outputs`, then on every task of each of its
    /// `output_layers`, in order.
    pub async fn compute_layers(&self, graph: LayerGraph) -> Result<Vec<TaskFuture>> {
        let mut outputs = graph.outputs.clone();
        for name in &graph.output_layers {
            let Some(layer) = graph.layers.iter().find(|l| l.name == *name) else {
                return Err(RuntimeError::GraphRejected(format!(
                    "output layer {name} is not in the graph"
                )));
            };
            outputs.extend(layer.keys());
        }
        self.send_graph(&outputs, FromClient::SubmitLayers(graph)).await
    }

    /// Sends a graph submission and returns futures on `outputs` once the
    /// scheduler accepted it.
    async fn send_graph(&self, outputs: &[Key], message: FromClient) -> Result<Vec<TaskFuture>> {
        let message =
            codec::encode(&vec![message]).map_err(|reason| RuntimeError::protocol(&self.inner.scheduler, reason))?;
        let (accepted, answer) = oneshot::channel();
        let (futures, sent) = {
            let mut state = self.inner.lock();
            if let Some(reason) = &state.lost {
                return Err(self.inner.lost(reason));
            }
            let id = state.next_graph;
            state.next_graph += 1;
            state.graphs.insert(
                id,
                Kept {
                    message: message.clone(),
                    live: 0,
                    accepted: Some(accepted),
                },
            );
            let futures: Vec<TaskFuture> = outputs
                .iter()
                .map(|key| self.inner.want(&mut state, key, Origin::Graph(id)))
                .collect();
            // Sent under the lock, so answers pair with submissions in
            // order; while reconnecting, the resubmission sends it.
            let sent = state.reconnecting || {
                state.unanswered.push_back(id);
                self.inner.outbound.send(Outgoing::Encoded(message)).is_ok()
            };
            (futures, sent)
        };
        // Checked once the lock is free: dropping the futures takes it.
        if !sent {
            return Err(self.inner.lost("the connection writer stopped"));
        }
        match answer.await {
            Ok(Ok(())) => Ok(futures),
            Ok(Err(reason)) => Err(RuntimeError::GraphRejected(reason)),
            Err(_) => Err(self.inner.lost_now()),
        }
    }

    /// Turns progress bars of long calls on or off (see [`ClientOptions`]).
    pub fn set_progress(&self, on: bool) {
        self.inner.progress.store(on, Ordering::Relaxed);
    }

    /// The scheduler's live workers, by id.
    pub async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        match self.ask(|request| FromClient::Workers { request }).await? {
            ToClient::Workers { workers, .. } => Ok(workers),
            other => Err(self.inner.unexpected(&other)),
        }
    }

    /// The workers holding each key, in order (none for a key that is not
    /// in memory or not known).
    pub async fn who_has(&self, keys: &[Key]) -> Result<Vec<Vec<Peer>>> {
        let keys = keys.to_vec();
        match self
            .ask(move |request| FromClient::WhoHas {
                request,
                keys: keys.clone(),
            })
            .await?
        {
            ToClient::WhoHas { who_has, .. } => Ok(who_has),
            other => Err(self.inner.unexpected(&other)),
        }
    }

    /// The scheduler's address.
    pub(crate) fn scheduler_address(&self) -> &str {
        &self.inner.scheduler
    }

    /// Asks the scheduler for its task stream: [`ToClient::Observed`] and
    /// [`ToClient::ObserveRefused`] messages arrive on the receiver (see
    /// `crate::recording`); a stream already being received is replaced.
    pub(crate) fn observe(&self) -> Result<mpsc::UnboundedReceiver<ToClient>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.inner.lock();
        self.inner.send(&state, FromClient::Observe { on: true })?;
        state.observed = Some(tx);
        Ok(rx)
    }

    /// Asks the scheduler to end the task stream (with one last batch).
    pub(crate) fn stop_observing(&self) -> Result<()> {
        let state = self.inner.lock();
        self.inner.send(&state, FromClient::Observe { on: false })
    }

    /// Sends a query numbered by `make`'s argument and waits for its
    /// answer; asks again once reconnected if the scheduler went away.
    async fn ask(&self, make: impl Fn(u64) -> FromClient) -> Result<ToClient> {
        loop {
            let reconnected = self.inner.reconnected.notified();
            tokio::pin!(reconnected);
            reconnected.as_mut().enable();
            let answer = {
                let mut state = self.inner.lock();
                if let Some(reason) = &state.lost {
                    return Err(self.inner.lost(reason));
                }
                if state.reconnecting {
                    None
                } else {
                    let (answered, answer) = oneshot::channel();
                    state.next_query += 1;
                    let request = state.next_query;
                    state.queries.insert(request, answered);
                    self.inner
                        .outbound
                        .send(Outgoing::Message(make(request)))
                        .map_err(|_| self.inner.lost("the connection writer stopped"))?;
                    Some(answer)
                }
            };
            if let Some(answer) = answer
                && let Ok(answer) = answer.await
            {
                return Ok(answer);
            }
            reconnected.await;
        }
    }

    /// Puts values into the workers' memory and returns futures on them,
    /// in order, under generated keys (`scatter-PREFIX-N`). Each value goes
    /// to the worker holding the fewest bytes so far (counting the values
    /// already placed), so equal values spread round-robin. Scattered
    /// values are inputs like any result, are gathered like any result,
    /// and are released when their futures are dropped; they have no
    /// lineage, so a value whose worker dies is lost
    /// ([`TaskError::DataLost`]).
    pub async fn scatter(&self, values: impl IntoIterator<Item = Value>) -> Result<Vec<TaskFuture>> {
        let values: Vec<Value> = values.into_iter().collect();
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let workers = self.workers().await?;
        if workers.is_empty() {
            return Err(RuntimeError::Scatter {
                worker: "any worker".into(),
                reason: format!("the scheduler at {} has no workers", self.inner.scheduler),
            });
        }
        let sizes: Vec<u64> = values.iter().map(Value::nbytes).collect();
        let placement = place(&workers, &sizes);
        self.scatter_placed(&workers, values.into_iter().zip(placement).collect())
            .await
    }

    /// Puts values into one worker's memory (one of [`Client::workers`]);
    /// see [`Client::scatter`].
    pub async fn scatter_to(
        &self,
        worker: &WorkerStatus,
        values: impl IntoIterator<Item = Value>,
    ) -> Result<Vec<TaskFuture>> {
        let values = values.into_iter().map(|value| (value, 0)).collect();
        self.scatter_placed(std::slice::from_ref(worker), values).await
    }

    /// Scatters each value to `workers[i]` for its `i`.
    async fn scatter_placed(&self, workers: &[WorkerStatus], values: Vec<(Value, usize)>) -> Result<Vec<TaskFuture>> {
        // Keys in the caller's order; values grouped per worker.
        let mut keys = Vec::with_capacity(values.len());
        let mut groups: Vec<Vec<(Key, Value)>> = vec![Vec::new(); workers.len()];
        for (value, i) in values {
            let key = self.unique_key("scatter");
            keys.push((key.clone(), value.nbytes(), i));
            groups[i].push((key, value));
        }
        let pushed: Vec<usize> = (0..workers.len()).filter(|&i| !groups[i].is_empty()).collect();
        // 1. The values to the workers, every worker at once.
        let mut pushes = JoinSet::new();
        for (i, group) in groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()) {
            let (peers, address) = (self.inner.peers.clone(), workers[i].address.to_string());
            pushes.spawn(async move {
                for batch in put_batches(group) {
                    if let Err(error) = peers.put(&address, &batch).await {
                        return Err((i, error.to_string()));
                    }
                }
                Ok(())
            });
        }
        let mut failure = None;
        while let Some(joined) = pushes.join_next().await {
            let outcome = joined.unwrap_or_else(|error| Err((usize::MAX, error.to_string())));
            if let (Err(failed), None) = (outcome, &failure) {
                failure = Some(failed);
            }
        }
        if let Some((i, reason)) = failure {
            // Not on the worker whose connection just failed: it is most
            // likely gone, and trying would only add a connect timeout.
            let landed: Vec<usize> = pushed.iter().copied().filter(|&j| j != i).collect();
            self.discard(workers, &keys, &landed).await;
            let worker = workers
                .get(i)
                .map_or_else(|| names(workers, &pushed), |w| w.name.to_string());
            return Err(RuntimeError::Scatter {
                worker,
                reason: format!("pushing the values failed: {reason}"),
            });
        }
        // 2. The keys to the scheduler, one message per worker, sent under
        // the lock so that the answers find the futures.
        let mut data: Vec<Vec<(Key, u64)>> = vec![Vec::new(); workers.len()];
        for (key, nbytes, i) in &keys {
            data[*i].push((key.clone(), *nbytes));
        }
        let registered = {
            let mut state = self.inner.lock();
            (state.lost.is_none() && !state.reconnecting).then(|| {
                let futures: Vec<TaskFuture> = keys
                    .iter()
                    .map(|(key, ..)| self.inner.want(&mut state, key, Origin::Scatter))
                    .collect();
                let sent = pushed.iter().all(|&i| {
                    let data = std::mem::take(&mut data[i]);
                    let worker = workers[i].worker;
                    self.inner
                        .outbound
                        .send(Outgoing::Message(FromClient::Scatter { worker, data }))
                        .is_ok()
                });
                (futures, sent)
            })
        };
        // Futures are dropped (and released) only once the lock is free.
        let futures = match registered {
            Some((futures, true)) => futures,
            _ => {
                self.discard(workers, &keys, &pushed).await;
                return Err(self.inner.lost_now());
            }
        };
        // 3. Each key registered, or the call fails and what was registered
        // is released as the futures drop.
        let mut refused = Vec::new();
        let mut first_error = None;
        for (future, (_, _, i)) in futures.iter().zip(&keys) {
            match future.wait().await {
                Ok(_) => {}
                Err(RuntimeError::Scatter { reason, .. }) => {
                    if !refused.contains(i) {
                        refused.push(*i);
                    }
                    first_error.get_or_insert(RuntimeError::Scatter {
                        worker: workers[*i].name.to_string(),
                        reason,
                    });
                }
                Err(other) => {
                    first_error.get_or_insert(other);
                }
            }
        }
        match first_error {
            None => Ok(futures),
            Some(error) => {
                drop(futures);
                self.discard(workers, &keys, &refused).await;
                Err(error)
            }
        }
    }

    /// Best effort: drops what a failed scatter put aside on `which` workers.
    async fn discard(&self, workers: &[WorkerStatus], keys: &[(Key, u64, usize)], which: &[usize]) {
        let mut discards = JoinSet::new();
        for &i in which {
            let mine: Vec<Key> = keys.iter().filter(|k| k.2 == i).map(|k| k.0.clone()).collect();
            let (peers, address) = (self.inner.peers.clone(), workers[i].address.to_string());
            discards.spawn(async move {
                if let Err(error) = peers.discard(&address, mine).await {
                    debug!(address, %error, "could not drop the values of a failed scatter");
                }
            });
        }
        while discards.join_next().await.is_some() {}
    }

    /// Submits one task.
    pub async fn submit(&self, task: TaskSpec) -> Result<TaskFuture> {
        let key = task.key.clone();
        let mut futures = self
            .compute(Graph {
                tasks: vec![task],
                outputs: vec![key],
            })
            .await?;
        futures
            .pop()
            .ok_or_else(|| RuntimeError::protocol(&self.inner.scheduler, "no future for a submitted key"))
    }

    /// Runs `op` once per argument, with generated keys.
    pub async fn map(&self, op: &str, args: impl IntoIterator<Item = bytes::Bytes>) -> Result<Vec<TaskFuture>> {
        let tasks: Vec<TaskSpec> = args
            .into_iter()
            .map(|args| TaskSpec::new(self.unique_key(op), op, args, Vec::new()))
            .collect();
        let outputs = tasks.iter().map(|t| t.key.clone()).collect();
        self.compute(Graph { tasks, outputs }).await
    }

    /// A key no other client or call uses: `PREFIX-NAME-N`.
    pub fn unique_key(&self, name: &str) -> Key {
        let n = {
            let mut state = self.inner.lock();
            state.generated += 1;
            state.generated
        };
        format!("{name}-{}-{n}", self.inner.prefix).into()
    }

    /// Waits for every future and fetches the results from the workers
    /// that hold them, in the order given.
    ///
    /// A result that none of its holders can deliver (its worker died) is
    /// reported to the scheduler, which recomputes it from its lineage; the
    /// call waits for it and tries again. It fails only for what cannot be
    /// recomputed (a task error, a scattered value whose last copy died),
    /// or for a key reported missing [`MAX_MISSING_REPORTS`] times.
    pub async fn gather(&self, futures: &[TaskFuture]) -> Result<Vec<Value>> {
        let mut results: Vec<Option<Value>> = vec![None; futures.len()];
        let mut reports = vec![0u32; futures.len()];
        let mut todo: Vec<usize> = (0..futures.len()).collect();
        let mut reported: HashMap<usize, Vec<Peer>> = HashMap::new();
        let mut first = true;
        while !todo.is_empty() {
            let waiting = async {
                let mut holders = Vec::with_capacity(todo.len());
                for &i in &todo {
                    holders.push(futures[i].held().await?);
                }
                Ok::<_, RuntimeError>(holders)
            };
            let holders = if first {
                self.with_progress(futures, waiting).await?
            } else {
                waiting.await?
            };
            first = false;
            // A holder named again after it was reported has delivered a
            // result since: it is alive, whatever failed before.
            for (&i, (_, peers)) in todo.iter().zip(&holders) {
                for peer in peers.iter().filter(|p| reported.get(&i).is_some_and(|r| r.contains(p))) {
                    self.inner.peers.retry(&peer.address);
                }
            }
            let failed = self.fetch(&todo, &holders, &mut results).await;
            for &(i, ref tried) in &failed {
                reports[i] += 1;
                if reports[i] >= MAX_MISSING_REPORTS {
                    let tried: Vec<&str> = tried.iter().map(|p| p.address.as_str()).collect();
                    return Err(RuntimeError::Gather {
                        key: futures[i].key.clone(),
                        reason: format!(
                            "reported missing {MAX_MISSING_REPORTS} times; the last holders ({}) could not deliver it",
                            tried.join(", ")
                        ),
                    });
                }
            }
            self.report_missing(futures, &failed);
            todo = failed.iter().map(|(i, _)| *i).collect();
            reported = failed.into_iter().collect();
        }
        Ok(results.into_iter().map(|v| v.unwrap_or_default()).collect())
    }

    /// Fetches the results of `futures[todo[j]]` (task `holders[j].0`)
    /// from `holders[j].1`, each holder in turn (first holders first),
    /// batching the tasks per worker; returns the indices that no holder
    /// delivered, with those holders.
    async fn fetch(
        &self,
        todo: &[usize],
        holders: &[(TaskId, Vec<Peer>)],
        results: &mut [Option<Value>],
    ) -> Vec<(usize, Vec<Peer>)> {
        for round in 0.. {
            // Positions in `todo`, by the holder asked this round.
            let mut asks: HashMap<&str, Vec<usize>> = HashMap::new();
            for (j, (_, peers)) in holders.iter().enumerate() {
                if results[todo[j]].is_none()
                    && let Some(peer) = peers.get(round)
                {
                    asks.entry(peer.address.as_str()).or_default().push(j);
                }
            }
            if asks.is_empty() {
                break;
            }
            let mut requests = JoinSet::new();
            for (address, positions) in asks {
                // Bounded requests: a reply's frames stay far below the
                // transport's limits.
                for positions in positions.chunks(GATHER_BATCH) {
                    let tasks = positions.iter().map(|&j| holders[j].0).collect();
                    let (peers, address, positions) =
                        (self.inner.peers.clone(), address.to_string(), positions.to_vec());
                    requests.spawn(async move {
                        let reply = peers.request(&address, &DataRequest::Tasks(tasks)).await;
                        (address, positions, reply)
                    });
                }
            }
            while let Some(joined) = requests.join_next().await {
                let Ok((address, positions, reply)) = joined else {
                    continue;
                };
                match reply {
                    Ok(values) => {
                        for (j, value) in positions.into_iter().zip(values) {
                            results[todo[j]] = value;
                        }
                    }
                    Err(error) => debug!(address, %error, "gather from a holder failed; trying others"),
                }
            }
        }
        todo.iter()
            .zip(holders)
            .filter(|(i, _)| results[**i].is_none())
            .map(|(&i, (_, peers))| (i, peers.clone()))
            .collect()
    }

    /// Tells the scheduler that these results could not be had from the
    /// holders tried, and waits for them again: a status that still names
    /// those holders becomes [`Status::Lost`] until the scheduler answers.
    fn report_missing(&self, futures: &[TaskFuture], failed: &[(usize, Vec<Peer>)]) {
        if failed.is_empty() {
            return;
        }
        let mut state = self.inner.lock();
        let mut keys = Vec::with_capacity(failed.len());
        for (i, tried) in failed {
            let key = &futures[*i].key;
            // Other statuses are newer than what failed (a reconnection
            // reset them): the scheduler has nothing to learn.
            if let Some(entry) = state.keys.get_mut(key)
                && matches!(&entry.status, Status::Memory(_, holders) if holders == tried)
            {
                entry.status = Status::Lost;
                keys.push((key.clone(), tried.iter().map(|p| p.worker).collect()));
            }
        }
        if keys.is_empty() {
            return;
        }
        debug!(
            keys = keys.len(),
            "results missing from their holders; asking the scheduler to recompute them"
        );
        let _ = self.inner.send(&state, FromClient::MissingData { keys });
    }

    /// Waits until every future has a result or an error.
    pub async fn wait(&self, futures: &[TaskFuture]) {
        let waiting = async {
            for future in futures {
                let _ = future.wait().await;
            }
        };
        self.with_progress(futures, waiting).await;
    }

    /// Runs `work` (waiting on `futures`), with a progress bar on a
    /// terminal when progress is on; else just runs it.
    async fn with_progress<T>(&self, futures: &[TaskFuture], work: impl Future<Output = T>) -> T {
        #[cfg(not(feature = "progress-bar"))]
        let _ = futures;
        #[cfg(feature = "progress-bar")]
        if progress::wanted(self.inner.progress.load(Ordering::Relaxed), futures.len()) {
            return self.drawn(futures, work).await;
        }
        work.await
    }

    /// Runs `work` (waiting on `futures`) under a progress bar.
    #[cfg(feature = "progress-bar")]
    async fn drawn<T>(&self, futures: &[TaskFuture], work: impl Future<Output = T>) -> T {
        // One pass now; afterwards the client's count of resolved futures
        // tells how many more are done.
        let (done, resolved) = {
            let state = self.inner.lock();
            let done = futures
                .iter()
                .filter(|f| !matches!(state.keys.get(&f.key).map(|e| &e.status), Some(Status::Pending)))
                .count() as u64;
            (done, state.resolved)
        };
        let meter = Meter::new(futures.len() as u64, done, std::time::Instant::now());
        let inner = &self.inner;
        progress::draw_while(meter, || done + (inner.lock().resolved - resolved), work).await
    }

    /// Yields the futures as they complete (with a result or an error).
    pub fn as_completed(&self, futures: Vec<TaskFuture>) -> mpsc::UnboundedReceiver<TaskFuture> {
        let (tx, rx) = mpsc::unbounded_channel();
        for future in futures {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = future.wait().await;
                let _ = tx.send(future);
            });
        }
        rx
    }

    /// Stops wanting these results: waiters get [`RuntimeError::Cancelled`]
    /// and the scheduler may forget the tasks.
    pub fn cancel(&self, futures: &[TaskFuture]) {
        let mut state = self.inner.lock();
        let mut keys = Vec::new();
        let mut resolved = 0;
        for future in futures {
            if let Some(entry) = state.keys.get_mut(&future.key)
                && !entry.status.unknown_to_scheduler()
            {
                resolved += u64::from(matches!(entry.status, Status::Pending));
                entry.status = Status::Cancelled;
                entry.changed.notify_waiters();
                keys.push(future.key.clone());
            }
        }
        state.resolved += resolved;
        if !keys.is_empty() {
            let _ = self.inner.send(&state, FromClient::Release { keys });
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain maps, updated in single steps: valid after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lost(&self, reason: &str) -> RuntimeError {
        RuntimeError::SchedulerLost {
            scheduler: self.scheduler.clone(),
            reason: reason.to_string(),
        }
    }

    /// The loss of the connection, once a waiter found its answer gone.
    fn lost_now(&self) -> RuntimeError {
        self.lost(self.lock().lost.as_deref().unwrap_or("connection lost"))
    }

    /// Queues `message` for the scheduler; dropped while reconnecting
    /// (what the client still holds is resubmitted then); an error once
    /// the scheduler is lost for good.
    fn send(&self, state: &State, message: FromClient) -> Result<()> {
        if let Some(reason) = &state.lost {
            return Err(self.lost(reason));
        }
        if state.reconnecting {
            return Ok(());
        }
        self.outbound
            .send(Outgoing::Message(message))
            .map_err(|_| self.lost("the connection writer stopped"))
    }

    fn unexpected(&self, answer: &ToClient) -> RuntimeError {
        RuntimeError::protocol(&self.scheduler, format!("unexpected answer {answer:?}"))
    }

    fn want(self: &Arc<Self>, state: &mut State, key: &Key, origin: Origin) -> TaskFuture {
        let entry = state.keys.entry(key.clone()).or_insert_with(|| {
            if let Origin::Graph(id) = origin
                && let Some(kept) = state.graphs.get_mut(&id)
            {
                kept.live += 1;
            }
            Entry {
                refs: 0,
                status: Status::Pending,
                changed: Arc::new(Notify::new()),
                origin,
            }
        });
        entry.refs += 1;
        TaskFuture {
            key: key.clone(),
            client: self.clone(),
        }
    }
}

/// A result that is or will be in a worker's memory.
pub struct TaskFuture {
    key: Key,
    client: Arc<Inner>,
}

impl TaskFuture {
    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Waits for the task: the workers holding its result, or its error.
    pub async fn wait(&self) -> Result<Vec<Peer>> {
        Ok(self.held().await?.1)
    }

    /// Waits for the task: its id and the workers holding its result.
    async fn held(&self) -> Result<(TaskId, Vec<Peer>)> {
        loop {
            let changed = {
                let state = self.client.lock();
                let entry = state.keys.get(&self.key);
                match entry.map(|e| &e.status) {
                    Some(Status::Memory(task, holders)) => return Ok((*task, holders.clone())),
                    Some(Status::Erred(error)) => return Err(RuntimeError::Task(error.clone())),
                    Some(Status::Rejected { worker, reason }) => {
                        return Err(RuntimeError::Scatter {
                            worker: worker.clone(),
                            reason: reason.clone(),
                        });
                    }
                    Some(Status::Cancelled) | None => return Err(RuntimeError::Cancelled { key: self.key.clone() }),
                    Some(Status::Abandoned(reason)) => return Err(self.client.lost(reason)),
                    Some(Status::Pending | Status::Lost) => {}
                }
                if let Some(reason) = &state.lost {
                    return Err(self.client.lost(reason));
                }
                entry.map(|e| e.changed.clone())
            };
            if let Some(changed) = changed {
                let notified = changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // Re-check: the status may have changed before `enable`.
                if self.is_pending() {
                    notified.await;
                }
            }
        }
    }

    fn is_pending(&self) -> bool {
        let state = self.client.lock();
        state.lost.is_none()
            && matches!(
                state.keys.get(&self.key).map(|e| &e.status),
                Some(Status::Pending | Status::Lost)
            )
    }

    /// Waits for the task and fetches its result.
    pub async fn result(&self) -> Result<Value> {
        let client = Client {
            inner: self.client.clone(),
        };
        let mut values = client.gather(std::slice::from_ref(self)).await?;
        values.pop().ok_or_else(|| RuntimeError::Gather {
            key: self.key.clone(),
            reason: "empty reply".into(),
        })
    }
}

impl Clone for TaskFuture {
    fn clone(&self) -> Self {
        let mut state = self.client.lock();
        if let Some(entry) = state.keys.get_mut(&self.key) {
            entry.refs += 1;
        }
        TaskFuture {
            key: self.key.clone(),
            client: self.client.clone(),
        }
    }
}

impl Drop for TaskFuture {
    fn drop(&mut self) {
        let mut state = self.client.lock();
        let Some(entry) = state.keys.get_mut(&self.key) else {
            return;
        };
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs == 0 {
            let (unknown, origin) = (entry.status.unknown_to_scheduler(), entry.origin);
            state.keys.remove(&self.key);
            if let Origin::Graph(id) = origin {
                state.forget_graph_future(id);
            }
            if !unknown {
                let _ = self.client.send(
                    &state,
                    FromClient::Release {
                        keys: vec![self.key.clone()],
                    },
                );
            }
        }
    }
}

impl std::fmt::Debug for TaskFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskFuture({})", self.key)
    }
}

/// Connects to the scheduler at `address` and says hello as a client.
async fn open(address: &str, transport: &TransportConfig) -> Result<Connection> {
    let connection = connect(address, transport).await?;
    let hello = Hello::Client {
        version: PROTOCOL_VERSION,
        name: transport.name.clone(),
    };
    connection
        .send(codec::encode(&hello).map_err(|reason| RuntimeError::protocol(address, reason))?)
        .await?;
    Ok(connection)
}

/// Runs the client's connection: sends what is queued, applies what comes
/// back, and when the scheduler goes away, reconnects and resubmits (see
/// the module docs), or fails every waiter once that is given up.
async fn run(
    connection: Connection,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    inner: std::sync::Weak<Inner>,
    options: ClientOptions,
) {
    let (mut sender, mut receiver) = connection.split();
    loop {
        let reason = tokio::select! {
            reason = read(&mut receiver, &inner) => reason,
            () = write(&sender, &mut queue) => "the connection writer stopped".to_string(),
        };
        let Some(client) = inner.upgrade() else { return };
        if options.reconnect_timeout.is_zero() {
            client.give_up(reason);
            return;
        }
        let holders = client.lock().outage();
        let address = client.scheduler.clone();
        drop(client);
        warn!(scheduler = %address, %reason, "lost the scheduler; reconnecting");
        let connection = match reconnect(&address, &options, holders).await {
            Ok(connection) => connection,
            Err(error) => {
                if let Some(client) = inner.upgrade() {
                    client.give_up(format!(
                        "{reason}; reconnecting for {:?} failed: {error}",
                        options.reconnect_timeout
                    ));
                }
                return;
            }
        };
        // Queued before the outage was seen: superseded by the resubmission.
        while queue.try_recv().is_ok() {}
        let Some(client) = inner.upgrade() else { return };
        client.resume();
        (sender, receiver) = connection.split();
    }
}

/// How long the set of workers registered with a restarted scheduler must
/// stay the same before a client that still misses some it saw (they may
/// be gone for good) resubmits anyway: workers retry at least every
/// second.
const RESUME_QUIET: Duration = Duration::from_secs(2);

/// Connects again within the reconnect timeout (a connection that fails
/// while the client resumes, such as one the old scheduler accepted as it
/// went, is tried again), then waits until the workers at `seen` have
/// registered again, or no more have come for [`RESUME_QUIET`] (or, with
/// none seen, for half that), or `resume_wait` is over.
async fn reconnect(address: &str, options: &ClientOptions, seen: BTreeSet<String>) -> Result<Connection> {
    let deadline = tokio::time::Instant::now() + options.reconnect_timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let transport = TransportConfig {
            connect_timeout: left,
            ..options.transport.clone()
        };
        let attempt = async {
            let mut connection = open(address, &transport).await?;
            wait_for_workers(&mut connection, address, options.resume_wait, &seen).await?;
            Ok::<_, RuntimeError>(connection)
        };
        match attempt.await {
            Ok(connection) => return Ok(connection),
            Err(error) if tokio::time::Instant::now() + RETRY_PAUSE < deadline => {
                debug!(scheduler = %address, %error, "resuming failed; connecting again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The pause before connecting again after a failed resume.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Asks a restarted scheduler for its workers until those at `seen` are
/// back (see [`reconnect`]).
async fn wait_for_workers(
    connection: &mut Connection,
    address: &str,
    wait: Duration,
    seen: &BTreeSet<String>,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let quiet = if seen.is_empty() {
        RESUME_QUIET / 2
    } else {
        RESUME_QUIET
    };
    let (mut request, mut registered, mut since) = (0, 0, tokio::time::Instant::now());
    loop {
        request += 1;
        let ask: ClientUp = vec![FromClient::Workers { request }];
        connection
            .send(codec::encode(&ask).map_err(|reason| RuntimeError::protocol(address, reason))?)
            .await?;
        let reply = connection.recv().await?.ok_or_else(|| RuntimeError::SchedulerLost {
            scheduler: address.to_string(),
            reason: "closed the connection while the client resumed".into(),
        })?;
        let answers: ClientDown = codec::decode(&reply).map_err(|reason| RuntimeError::protocol(address, reason))?;
        let back: BTreeSet<&str> = answers
            .iter()
            .filter_map(|answer| match answer {
                ToClient::Workers { workers, .. } => Some(workers.iter().map(|w| w.address.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        let now = tokio::time::Instant::now();
        if back.len() != registered {
            (registered, since) = (back.len(), now);
        }
        let missing = seen.iter().filter(|h| !back.contains(h.as_str())).count();
        let settled = registered > 0 && now - since >= quiet;
        if (missing == 0 && !seen.is_empty()) || settled || now >= deadline {
            info!(scheduler = %address, registered, missing, "reconnected; resubmitting");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends the client's messages, merging those that queued up meanwhile;
/// returns when the connection fails.
async fn write(sender: &Sender, queue: &mut mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(first) = queue.recv().await {
        let mut batch: ClientUp = Vec::new();
        let mut encoded = None;
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            match outgoing {
                Outgoing::Message(message) => batch.push(message),
                Outgoing::Encoded(message) => {
                    encoded = Some(message);
                    break;
                }
            }
            next = queue.try_recv().ok();
        }
        if !batch.is_empty() {
            let Ok(message) = codec::encode(&batch) else { return };
            if sender.send(message).await.is_err() {
                return;
            }
        }
        if let Some(message) = encoded
            && sender.send(message).await.is_err()
        {
            return;
        }
    }
    std::future::pending().await
}

/// Applies the scheduler's answers to the client's state until the
/// connection ends; returns why it did.
async fn read(receiver: &mut Receiver, inner: &std::sync::Weak<Inner>) -> String {
    loop {
        let message = match receiver.recv().await {
            Ok(Some(message)) => message,
            Ok(None) => return "the scheduler closed the connection".to_string(),
            Err(error) => return error.to_string(),
        };
        let batch: ClientDown = match codec::decode(&message) {
            Ok(batch) => batch,
            Err(reason) => return reason,
        };
        let Some(inner) = inner.upgrade() else {
            return "the client was dropped".to_string();
        };
        let mut state = inner.lock();
        for message in batch {
            apply(&mut state, message);
        }
    }
}

impl Inner {
    /// The scheduler is lost for good: every waiter fails.
    fn give_up(&self, reason: String) {
        warn!(scheduler = %self.scheduler, %reason, "scheduler lost");
        let mut state = self.lock();
        state.lost = Some(reason);
        state.reconnecting = false;
        state.unanswered.clear();
        state.queries.clear();
        for kept in state.graphs.values_mut() {
            kept.accepted = None;
        }
        for entry in state.keys.values() {
            entry.changed.notify_waiters();
        }
        drop(state);
        self.reconnected.notify_waiters();
    }

    /// Reconnected: queues what the new scheduler must know (the scattered
    /// keys held, then every kept graph, for the futures still unsettled)
    /// ahead of anything else, and takes calls again.
    fn resume(&self) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut scattered = Vec::new();
        let mut outputs: FxHashMap<u64, Vec<Key>> = FxHashMap::default();
        for (key, entry) in &state.keys {
            if !entry.status.unsettled() {
                continue;
            }
            match entry.origin {
                Origin::Scatter => scattered.push(key.clone()),
                Origin::Graph(id) => outputs.entry(id).or_default().push(key.clone()),
            }
        }
        if !scattered.is_empty() {
            let _ = self
                .outbound
                .send(Outgoing::Message(FromClient::Reclaim { keys: scattered }));
        }
        let mut abandoned = Vec::new();
        for (&id, kept) in &mut state.graphs {
            let Some(keys) = outputs.remove(&id) else {
                // Every future it made is another graph's: that one brings
                // them back.
                if let Some(waiter) = kept.accepted.take() {
                    let _ = waiter.send(Ok(()));
                }
                continue;
            };
            match resubmission(&kept.message, keys) {
                Ok(message) => {
                    state.unanswered.push_back(id);
                    let _ = self.outbound.send(Outgoing::Encoded(message));
                }
                Err(reason) => abandoned.push((id, reason)),
            }
        }
        for (id, reason) in abandoned {
            state.abandon(id, &reason);
        }
        state.reconnecting = false;
        let n = state.unanswered.len();
        drop(guard);
        info!(scheduler = %self.scheduler, graphs = n, "resubmitted after reconnecting");
        self.reconnected.notify_waiters();
    }
}

/// `kept`, a submitted graph, with `outputs` as its only outputs.
fn resubmission(kept: &Message, outputs: Vec<Key>) -> std::result::Result<Message, String> {
    let mut batch: ClientUp = codec::decode(kept)?;
    match batch.first_mut() {
        Some(FromClient::SubmitGraph(graph)) => graph.outputs = outputs,
        Some(FromClient::SubmitLayers(graph)) => {
            graph.outputs = outputs;
            graph.output_layers.clear();
        }
        _ => return Err("internal error: a kept graph is not a submission".into()),
    }
    codec::encode(&batch)
}

impl State {
    /// The connection is gone: futures wait again (their results' ids and
    /// holders were the old scheduler's), queries are void. Returns the
    /// addresses of the workers seen last and of the holders of results,
    /// which hold what was made so far (intermediate results included).
    fn outage(&mut self) -> BTreeSet<String> {
        self.reconnecting = true;
        self.unanswered.clear();
        self.queries.clear();
        let mut seen = self.workers_seen.clone();
        for entry in self.keys.values_mut() {
            match &entry.status {
                Status::Memory(_, holders) => {
                    seen.extend(holders.iter().map(|p| p.address.to_string()));
                    entry.status = Status::Pending;
                }
                Status::Lost => entry.status = Status::Pending,
                _ => {}
            }
        }
        seen
    }

    /// A future made by graph `id` is gone; so is the graph once it has
    /// none left and its submitter has its answer.
    fn forget_graph_future(&mut self, id: u64) {
        if let Some(kept) = self.graphs.get_mut(&id) {
            kept.live = kept.live.saturating_sub(1);
            if kept.live == 0 && kept.accepted.is_none() {
                self.graphs.remove(&id);
            }
        }
    }

    /// Graph `id` cannot be resubmitted: its unsettled futures fail.
    fn abandon(&mut self, id: u64, reason: &str) {
        self.graphs.remove(&id);
        let why = format!("resubmitting its graph after a reconnection failed: {reason}");
        for entry in self.keys.values_mut() {
            if entry.origin == Origin::Graph(id) && entry.status.unsettled() {
                entry.status = Status::Abandoned(why.clone());
                entry.changed.notify_waiters();
            }
        }
    }
}

fn apply(state: &mut State, message: ToClient) {
    match message {
        ToClient::GraphAccepted { .. } => {
            if let Some(id) = state.unanswered.pop_front()
                && let Some(kept) = state.graphs.get_mut(&id)
            {
                if let Some(waiter) = kept.accepted.take() {
                    let _ = waiter.send(Ok(()));
                }
                if kept.live == 0 {
                    state.graphs.remove(&id);
                }
            }
        }
        ToClient::GraphRejected { reason } => {
            if let Some(id) = state.unanswered.pop_front() {
                match state.graphs.get_mut(&id).and_then(|kept| kept.accepted.take()) {
                    Some(waiter) => {
                        state.graphs.remove(&id);
                        let _ = waiter.send(Err(reason));
                    }
                    None => state.abandon(id, &reason),
                }
            }
        }
        ToClient::InMemory { key, task, who_has, .. } => set(state, &key, Status::Memory(task, who_has)),
        ToClient::Erred { key, error } => set(state, &key, Status::Erred(error)),
        ToClient::Lost { key } => set(state, &key, Status::Lost),
        ToClient::ScatterRejected { worker, keys, reason } => {
            for key in keys {
                let status = Status::Rejected {
                    worker: format!("id {worker}"),
                    reason: reason.clone(),
                };
                set(state, &key, status);
            }
        }
        ToClient::Workers { request, .. } | ToClient::WhoHas { request, .. } => {
            if let ToClient::Workers { workers, .. } = &message {
                state.workers_seen = workers.iter().map(|w| w.address.to_string()).collect();
            }
            if let Some(waiter) = state.queries.remove(&request) {
                let _ = waiter.send(message);
            }
        }
        ToClient::Observed { .. } | ToClient::ObserveRefused { .. } => {
            if let Some(observed) = &state.observed
                && observed.send(message).is_err()
            {
                state.observed = None;
            }
        }
    }
}

fn set(state: &mut State, key: &Key, status: Status) {
    let Some(entry) = state.keys.get_mut(key) else {
        return;
    };
    if matches!(entry.status, Status::Cancelled) {
        return;
    }
    let first = matches!(entry.status, Status::Pending);
    entry.status = status;
    entry.changed.notify_waiters();
    state.resolved += u64::from(first);
}

/// The names of `which` workers, for errors.
fn names(workers: &[WorkerStatus], which: &[usize]) -> String {
    let names: Vec<&str> = which.iter().map(|&i| workers[i].name.as_str()).collect();
    names.join(", ")
}

/// For each value (by size), the index of the worker that gets it: the one
/// with the fewest bytes held plus placed so far; ties go to the one given
/// the fewest values, then to the first, so equal values go round-robin.
fn place(workers: &[WorkerStatus], sizes: &[u64]) -> Vec<usize> {
    let mut loads: BinaryHeap<std::cmp::Reverse<(u64, u64, usize)>> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| std::cmp::Reverse((w.nbytes_held, 0, i)))
        .collect();
    sizes
        .iter()
        .filter_map(|&size| {
            let std::cmp::Reverse((bytes, count, i)) = loads.pop()?;
            loads.push(std::cmp::Reverse((bytes.saturating_add(size), count + 1, i)));
            Some(i)
        })
        .collect()
}

/// Splits values into requests within [`GATHER_BATCH`] values,
/// [`PUT_BYTES`] and [`PUT_FRAMES`] (a single larger value goes alone).
fn put_batches(values: Vec<(Key, Value)>) -> Vec<Vec<(Key, Value)>> {
    let mut batches = Vec::new();
    let (mut batch, mut bytes, mut frames) = (Vec::new(), 0u64, 0usize);
    for (key, value) in values {
        let (b, f) = (value.nbytes(), value.frames.len());
        if !batch.is_empty() && (batch.len() >= GATHER_BATCH || bytes + b > PUT_BYTES || frames + f > PUT_FRAMES) {
            batches.push(std::mem::take(&mut batch));
            (bytes, frames) = (0, 0);
        }
        batch.push((key, value));
        (bytes, frames) = (bytes + b, frames + f);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkerId;

    fn worker(i: u32, nbytes_held: u64) -> WorkerStatus {
        WorkerStatus {
            worker: WorkerId::new(i),
            name: format!("w{i}").into(),
            address: format!("tcp://w{i}:1").into(),
            nthreads: 1,
            n_held: 0,
            nbytes_held,
            processing: 0,
        }
    }

    #[test]
    fn placement_fills_the_least_loaded_first_then_goes_round_robin() {
        let workers = [worker(0, 300), worker(1, 0), worker(2, 100)];
        assert_eq!(place(&workers, &[100, 100, 100, 100, 100, 100]), vec![1, 2, 1, 2, 1, 0]);
        let even = [worker(0, 0), worker(1, 0)];
        assert_eq!(place(&even, &[0, 0, 0, 0, 0]), vec![0, 1, 0, 1, 0]);
        assert!(place(&[], &[1, 2]).is_empty());
    }

    #[test]
    fn puts_are_split_by_count_bytes_and_frames() {
        let small = |i: usize| {
            (
                Key::from(format!("k{i}")),
                Value::encode(&(i as u64)).unwrap_or_default(),
            )
        };
        let batches = put_batches((0..GATHER_BATCH + 1).map(small).collect());
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![GATHER_BATCH, 1]);
        let framed = |i: usize| {
            let value = Value {
                header: bytes::Bytes::new(),
                frames: vec![weft_transport::Buffer::host(vec![0u8; 1]); PUT_FRAMES / 2 + 1],
            };
            (Key::from(format!("f{i}")), value)
        };
        let batches = put_batches((0..3).map(framed).collect());
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1]);
        assert!(put_batches(Vec::new()).is_empty());
    }
}
