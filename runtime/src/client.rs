//! The client: submits graphs to the scheduler, holds futures on their
//! keys, and gathers results straight from the workers that hold them.
//!
//! A [`TaskFuture`] keeps its key wanted: when the last clone of it is
//! dropped the client tells the scheduler, which may then release the
//! result. Errors carry the key, the op and the remote message.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;
use weft_transport::{Config as TransportConfig, Receiver, Sender, connect};

use crate::codec::{self, ClientDown, ClientUp, DataRequest, Hello};
use crate::data::PeerPool;
use crate::error::{Result, RuntimeError};
use crate::graph::{Graph, TaskSpec};
use crate::ids::Key;
use crate::protocol::{FromClient, PROTOCOL_VERSION, Peer, TaskError, ToClient};
use crate::value::Value;

/// Keys asked of one worker in one request when gathering.
const GATHER_BATCH: usize = 4096;

/// A connection to a scheduler. Cloning shares it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    scheduler: String,
    outbound: mpsc::UnboundedSender<FromClient>,
    state: Mutex<State>,
    peers: PeerPool,
    /// Prefix that keeps generated keys unique across clients.
    prefix: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

#[derive(Default)]
struct State {
    keys: HashMap<Key, Entry>,
    submissions: VecDeque<oneshot::Sender<std::result::Result<(), String>>>,
    /// Why the scheduler connection ended, once it has.
    lost: Option<String>,
    generated: u64,
}

struct Entry {
    refs: usize,
    status: Status,
    changed: Arc<Notify>,
}

#[derive(Clone)]
enum Status {
    Pending,
    Memory(Vec<Peer>),
    Erred(TaskError),
    Cancelled,
}

impl Client {
    /// Connects to the scheduler at `address`.
    pub async fn connect(address: &str, transport: &TransportConfig) -> Result<Client> {
        let connection = connect(address, transport).await?;
        let hello = Hello::Client {
            version: PROTOCOL_VERSION,
            name: transport.name.clone(),
        };
        connection
            .send(codec::encode(&hello).map_err(|reason| RuntimeError::protocol(address, reason))?)
            .await?;
        let (sender, receiver) = connection.split();
        let (outbound, queue) = mpsc::unbounded_channel();
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let writer = tokio::spawn(write(sender, queue));
            let reader = tokio::spawn(read(receiver, weak.clone()));
            Inner {
                scheduler: address.to_string(),
                outbound,
                state: Mutex::new(State::default()),
                peers: PeerPool::new(transport.clone()),
                prefix: format!("{:016x}", fastrand::u64(..)),
                tasks: vec![writer, reader],
            }
        });
        Ok(Client { inner })
    }

    /// Submits a graph and returns futures on its outputs, in order.
    pub async fn compute(&self, graph: Graph) -> Result<Vec<TaskFuture>> {
        let (accepted, answer) = oneshot::channel();
        let futures = {
            let mut state = self.inner.lock();
            if let Some(reason) = &state.lost {
                return Err(self.inner.lost(reason));
            }
            let futures: Vec<TaskFuture> = graph
                .outputs
                .iter()
                .map(|key| self.inner.want(&mut state, key))
                .collect();
            state.submissions.push_back(accepted);
            // Sent under the lock, so answers pair with submissions in order.
            self.inner
                .outbound
                .send(FromClient::SubmitGraph(graph))
                .map_err(|_| self.inner.lost("the connection writer stopped"))?;
            futures
        };
        match answer.await {
            Ok(Ok(())) => Ok(futures),
            Ok(Err(reason)) => Err(RuntimeError::GraphRejected(reason)),
            Err(_) => Err(self
                .inner
                .lost(self.inner.lock().lost.as_deref().unwrap_or("connection lost"))),
        }
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
    pub async fn gather(&self, futures: &[TaskFuture]) -> Result<Vec<Value>> {
        let mut holders = Vec::with_capacity(futures.len());
        for future in futures {
            holders.push(future.wait().await?);
        }
        let mut results: Vec<Option<Value>> = vec![None; futures.len()];
        // Ask each holder in turn, first holders first, for what is still
        // missing, batching the keys per worker.
        for round in 0.. {
            let mut asks: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, peers) in holders.iter().enumerate() {
                if results[i].is_none()
                    && let Some(peer) = peers.get(round)
                {
                    asks.entry(peer.address.to_string()).or_default().push(i);
                }
            }
            if asks.is_empty() {
                break;
            }
            let mut requests = JoinSet::new();
            for (address, indices) in asks {
                // Bounded requests: a reply's frames stay far below the
                // transport's limits.
                for indices in indices.chunks(GATHER_BATCH) {
                    let keys = indices.iter().map(|&i| futures[i].key.clone()).collect();
                    let (peers, address, indices) = (self.inner.peers.clone(), address.clone(), indices.to_vec());
                    requests.spawn(async move {
                        let reply = peers.request(&address, &DataRequest::Keys(keys)).await;
                        (address, indices, reply)
                    });
                }
            }
            while let Some(joined) = requests.join_next().await {
                let Ok((address, indices, reply)) = joined else {
                    continue;
                };
                match reply {
                    Ok(values) => {
                        for (i, value) in indices.into_iter().zip(values) {
                            results[i] = value;
                        }
                    }
                    Err(error) => debug!(address, %error, "gather from a holder failed; trying others"),
                }
            }
        }
        results
            .into_iter()
            .zip(futures)
            .map(|(value, future)| {
                value.ok_or_else(|| RuntimeError::Gather {
                    key: future.key.clone(),
                    reason: "no worker that was said to hold it could deliver it".into(),
                })
            })
            .collect()
    }

    /// Waits until every future has a result or an error.
    pub async fn wait(&self, futures: &[TaskFuture]) {
        for future in futures {
            let _ = future.wait().await;
        }
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
        for future in futures {
            if let Some(entry) = state.keys.get_mut(&future.key)
                && !matches!(entry.status, Status::Cancelled)
            {
                entry.status = Status::Cancelled;
                entry.changed.notify_waiters();
                keys.push(future.key.clone());
            }
        }
        if !keys.is_empty() {
            let _ = self.inner.outbound.send(FromClient::Release { keys });
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

    fn want(self: &Arc<Self>, state: &mut State, key: &Key) -> TaskFuture {
        let entry = state.keys.entry(key.clone()).or_insert_with(|| Entry {
            refs: 0,
            status: Status::Pending,
            changed: Arc::new(Notify::new()),
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
        loop {
            let changed = {
                let state = self.client.lock();
                let entry = state.keys.get(&self.key);
                match entry.map(|e| &e.status) {
                    Some(Status::Memory(holders)) => return Ok(holders.clone()),
                    Some(Status::Erred(error)) => return Err(RuntimeError::Task(error.clone())),
                    Some(Status::Cancelled) | None => return Err(RuntimeError::Cancelled { key: self.key.clone() }),
                    Some(Status::Pending) => {}
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
        state.lost.is_none() && matches!(state.keys.get(&self.key).map(|e| &e.status), Some(Status::Pending))
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
            let cancelled = matches!(entry.status, Status::Cancelled);
            state.keys.remove(&self.key);
            if !cancelled {
                let _ = self.client.outbound.send(FromClient::Release {
                    keys: vec![self.key.clone()],
                });
            }
        }
    }
}

impl std::fmt::Debug for TaskFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskFuture({})", self.key)
    }
}

/// Sends the client's messages, merging those that queued up meanwhile.
async fn write(sender: Sender, mut queue: mpsc::UnboundedReceiver<FromClient>) {
    while let Some(first) = queue.recv().await {
        let mut batch: ClientUp = vec![first];
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        let Ok(message) = codec::encode(&batch) else { return };
        if sender.send(message).await.is_err() {
            return;
        }
    }
}

/// Applies the scheduler's answers to the client's state.
async fn read(mut receiver: Receiver, inner: std::sync::Weak<Inner>) {
    let reason = loop {
        let message = match receiver.recv().await {
            Ok(Some(message)) => message,
            Ok(None) => break "the scheduler closed the connection".to_string(),
            Err(error) => break error.to_string(),
        };
        let batch: ClientDown = match codec::decode(&message) {
            Ok(batch) => batch,
            Err(reason) => break reason,
        };
        let Some(inner) = inner.upgrade() else { return };
        let mut state = inner.lock();
        for message in batch {
            apply(&mut state, message);
        }
    };
    let Some(inner) = inner.upgrade() else { return };
    let mut state = inner.lock();
    state.lost = Some(reason);
    state.submissions.clear();
    for entry in state.keys.values() {
        entry.changed.notify_waiters();
    }
}

fn apply(state: &mut State, message: ToClient) {
    match message {
        ToClient::GraphAccepted { .. } => {
            if let Some(waiter) = state.submissions.pop_front() {
                let _ = waiter.send(Ok(()));
            }
        }
        ToClient::GraphRejected { reason } => {
            if let Some(waiter) = state.submissions.pop_front() {
                let _ = waiter.send(Err(reason));
            }
        }
        ToClient::InMemory { key, who_has, .. } => set(state, &key, Status::Memory(who_has)),
        ToClient::Erred { key, error } => set(state, &key, Status::Erred(error)),
    }
}

fn set(state: &mut State, key: &Key, status: Status) {
    if let Some(entry) = state.keys.get_mut(key)
        && !matches!(entry.status, Status::Cancelled)
    {
        entry.status = status;
        entry.changed.notify_waiters();
    }
}
