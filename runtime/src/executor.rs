//! Compute threads: run ops off the event loop, so a long op never delays
//! heartbeats or transfers, and turn errors and panics into task failures.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use crate::data::Store;
use crate::ids::{Key, SharedStr, TaskId};
use crate::ops::Registry;
use crate::value::Value;
use crate::worker::WorkerEvent;

/// One op to run.
pub struct Job {
    /// The task.
    pub task: TaskId,
    /// Its key.
    pub key: Key,
    /// The op's name.
    pub op: SharedStr,
    /// Serialized arguments.
    pub args: Bytes,
    /// Input values, in order.
    pub inputs: Vec<Arc<Value>>,
}

/// A fixed pool of compute threads. Dropping it lets each thread finish
/// its current op and exit; nothing waits for them, so a long op never
/// holds up a shutdown.
pub struct Executor {
    jobs: crossbeam_channel::Sender<Job>,
}

impl Executor {
    /// Starts `nthreads` threads that run ops from `registry`, keep each
    /// result in `store`, and report to `events`.
    pub fn start(
        nthreads: usize,
        worker: String,
        registry: Arc<Registry>,
        store: Arc<Store>,
        events: UnboundedSender<WorkerEvent>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for i in 0..nthreads.max(1) {
            let (queue, registry, store, events) = (queue.clone(), registry.clone(), store.clone(), events.clone());
            let worker = worker.clone();
            std::thread::Builder::new()
                .name(format!("weft-compute-{i}"))
                .spawn(move || {
                    for job in queue {
                        let task = job.task;
                        let started = Instant::now();
                        let outcome = run(&registry, &worker, job, &store);
                        let compute_us = started.elapsed().as_micros() as u64;
                        let executed = WorkerEvent::Executed {
                            task,
                            outcome,
                            compute_us,
                        };
                        if events.send(executed).is_err() {
                            return; // the worker is shutting down
                        }
                    }
                })?;
        }
        Ok(Executor { jobs })
    }

    /// Queues a job; the state machine never queues more than there are
    /// threads.
    pub fn submit(&self, job: Job) {
        // Only fails once every thread has exited, i.e. at shutdown.
        let _ = self.jobs.send(job);
    }
}

/// Runs one op, storing its result; the size, or the failure as the
/// client will read it.
fn run(registry: &Registry, worker: &str, job: Job, store: &Store) -> Result<u64, String> {
    let Some(op) = registry.get(&job.op) else {
        return Err(format!(
            "unknown op {:?} on worker {worker} (it has: {})",
            job.op.as_str(),
            registry.names().join(", ")
        ));
    };
    let result = catch_unwind(AssertUnwindSafe(|| op(&job.args, &job.inputs)));
    match result {
        Ok(Ok(value)) => {
            let nbytes = value.nbytes();
            store.insert(job.task, Some(job.key), Arc::new(value));
            Ok(nbytes)
        }
        Ok(Err(message)) => Err(message),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".into());
            Err(format!("op panicked: {message}"))
        }
    }
}
