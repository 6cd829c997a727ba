//! The client for code without an async runtime: the same calls as
//! [`crate::Client`], each blocking until done.
//!
//! A [`Client`] owns a small tokio runtime (one thread) that keeps the
//! connection to the scheduler alive between calls, and runs each call of
//! the async client on it. A call made on a thread that is itself running
//! an async runtime would stall that runtime (or deadlock it), so it
//! returns [`RuntimeError::InsideRuntime`] instead: there, await the async
//! client ([`Client::as_async`]).
//!
//! ```
//! use weft_runtime::blocking::Client;
//! use weft_runtime::{Value, ops::args};
//!
//! # fn main() -> Result<(), weft_runtime::RuntimeError> {
//! # let runtime = tokio::runtime::Runtime::new().expect("a runtime");
//! # let mut options = weft_runtime::LocalOptions::for_this_machine();
//! # options.mode = weft_runtime::WorkerMode::InProcess;
//! # let cluster = runtime.block_on(weft_runtime::LocalCluster::start(options))?;
//! # let address = cluster.address().to_string();
//! let client = Client::connect(&address, &Default::default())?;
//! let inputs = client.scatter([Value::encode(&20i64).unwrap()])?;
//! let task = weft_runtime::TaskSpec::new("y", "sum", args(&1i64).unwrap(), vec![inputs[0].key().clone()]);
//! let y = client.submit(task)?;
//! assert_eq!(client.result(&y)?.decode::<i64>().unwrap(), 21);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use weft_transport::Config as TransportConfig;

use crate::client::{Client as AsyncClient, ClientOptions, TaskFuture};
use crate::error::{Result, RuntimeError};
use crate::graph::{Graph, TaskSpec};
use crate::ids::Key;
use crate::layer::LayerGraph;
use crate::protocol::{Peer, WorkerStatus};
use crate::value::Value;

/// A blocking connection to a scheduler. Cloning shares it (and its
/// runtime). Its [`TaskFuture`]s are the async client's.
#[derive(Clone)]
pub struct Client {
    client: AsyncClient,
    runtime: Arc<Runtime>,
}

/// The client's runtime. Dropped without waiting for its tasks, so that
/// dropping a client never blocks (nor panics inside another runtime).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("internal error: the runtime lives until drop")
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Refuses a blocking call on a thread that runs an async runtime.
fn outside_runtime(call: &'static str) -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(RuntimeError::InsideRuntime { call }),
        Err(_) => Ok(()),
    }
}

impl Client {
    /// Connects to the scheduler at `address`.
    pub fn connect(address: &str, transport: &TransportConfig) -> Result<Client> {
        Self::connect_with(address, &ClientOptions::new(transport.clone()))
    }

    /// Connects to the scheduler at `address` with these options.
    pub fn connect_with(address: &str, options: &ClientOptions) -> Result<Client> {
        outside_runtime("connect")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weft-client")
            .enable_all()
            .build()
            .map_err(|source| RuntimeError::Process {
                what: "cannot start the client's async runtime".into(),
                source,
            })?;
        let runtime = Runtime(Some(runtime));
        let client = runtime.get().block_on(AsyncClient::connect_with(address, options))?;
        Ok(Client {
            client,
            runtime: Arc::new(runtime),
        })
    }

    /// The async client underneath, for use inside an async runtime.
    pub fn as_async(&self) -> &AsyncClient {
        &self.client
    }

    /// Runs one call of the async client to its end.
    fn block<T>(&self, call: &'static str, work: impl Future<Output = Result<T>>) -> Result<T> {
        outside_runtime(call)?;
        self.runtime.get().block_on(work)
    }

    /// Submits a graph; see [`AsyncClient::compute`].
    pub fn compute(&self, graph: Graph) -> Result<Vec<TaskFuture>> {
        self.block("compute", self.client.compute(graph))
    }

    /// Submits a graph of specs and layers; see [`AsyncClient::compute_layers`].
    pub fn compute_layers(&self, graph: LayerGraph) -> Result<Vec<TaskFuture>> {
        self.block("compute", self.client.compute_layers(graph))
    }

    /// Submits one task; see [`AsyncClient::submit`].
    pub fn submit(&self, task: TaskSpec) -> Result<TaskFuture> {
        self.block("submit", self.client.submit(task))
    }

    /// Runs `op` once per argument; see [`AsyncClient::map`].
    pub fn map(&self, op: &str, args: impl IntoIterator<Item = bytes::Bytes>) -> Result<Vec<TaskFuture>> {
        self.block("map", self.client.map(op, args))
    }

    /// Puts values into the workers' memory; see [`AsyncClient::scatter`].
    pub fn scatter(&self, values: impl IntoIterator<Item = Value>) -> Result<Vec<TaskFuture>> {
        self.block("scatter", self.client.scatter(values))
    }

    /// Puts values into one worker's memory; see [`AsyncClient::scatter_to`].
    pub fn scatter_to(
        &self,
        worker: &WorkerStatus,
        values: impl IntoIterator<Item = Value>,
    ) -> Result<Vec<TaskFuture>> {
        self.block("scatter_to", self.client.scatter_to(worker, values))
    }

    /// Waits for the futures and fetches their results; see
    /// [`AsyncClient::gather`].
    pub fn gather(&self, futures: &[TaskFuture]) -> Result<Vec<Value>> {
        self.block("gather", self.client.gather(futures))
    }

    /// Waits for one future and fetches its result.
    pub fn result(&self, future: &TaskFuture) -> Result<Value> {
        self.block("result", future.result())
    }

    /// Waits until every future has a result or an error.
    pub fn wait(&self, futures: &[TaskFuture]) -> Result<()> {
        self.block("wait", async {
            self.client.wait(futures).await;
            Ok(())
        })
    }

    /// The futures, as they complete (with a result or an error).
    pub fn as_completed(&self, futures: Vec<TaskFuture>) -> Result<AsCompleted> {
        outside_runtime("as_completed")?;
        let _entered = self.runtime.get().enter();
        Ok(AsCompleted {
            receiver: self.client.as_completed(futures),
            runtime: self.runtime.clone(),
            refused: false,
        })
    }

    /// Stops wanting these results; see [`AsyncClient::cancel`].
    pub fn cancel(&self, futures: &[TaskFuture]) {
        self.client.cancel(futures);
    }

    /// The scheduler's live workers.
    pub fn workers(&self) -> Result<Vec<WorkerStatus>> {
        self.block("workers", self.client.workers())
    }

    /// The workers holding each key.
    pub fn who_has(&self, keys: &[Key]) -> Result<Vec<Vec<Peer>>> {
        self.block("who_has", self.client.who_has(keys))
    }

    /// A key no other client or call uses.
    pub fn unique_key(&self, name: &str) -> Key {
        self.client.unique_key(name)
    }

    /// Turns progress bars of long calls on or off.
    pub fn set_progress(&self, on: bool) {
        self.client.set_progress(on);
    }
}

/// The futures of [`Client::as_completed`], in the order they complete.
/// Each step blocks; inside an async runtime it yields the
/// [`RuntimeError::InsideRuntime`] error once and then ends.
pub struct AsCompleted {
    receiver: mpsc::UnboundedReceiver<TaskFuture>,
    runtime: Arc<Runtime>,
    refused: bool,
}

impl Iterator for AsCompleted {
    type Item = Result<TaskFuture>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.refused {
            return None;
        }
        if let Err(error) = outside_runtime("as_completed") {
            self.refused = true;
            return Some(Err(error));
        }
        self.runtime.get().block_on(self.receiver.recv()).map(Ok)
    }
}
