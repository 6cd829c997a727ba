//! Compute threads: run ops off the event loop, so a long op never delays
//! heartbeats or transfers, and turn errors and panics into task failures.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::ids::{Key, SharedStr, TaskId};
use crate::ops::{OpContext, OpError, Registry, Site};
use crate::value::Value;

/// One op to run.
pub struct Job {
    /// The scheduler session it belongs to (see [`Done::session`]).
    pub session: u64,
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

/// A finished job.
pub struct Done {
    /// The session of its job: results of a session that ended (the
    /// scheduler went away meanwhile) are dropped, since task ids restart
    /// with a new scheduler.
    pub session: u64,
    /// The task.
    pub task: TaskId,
    /// The result, or the failure as the client will read it.
    pub outcome: Result<Value, OpError>,
    /// How long the op ran.
    pub compute_us: u64,
    /// The op failed and the worker's GPU can no longer be used (a CUDA
    /// sticky error): why. The worker then stops, so that its tasks run
    /// elsewhere, instead of failing every task it is given.
    pub device_lost: Option<String>,
}

/// A fixed pool of compute threads. Dropping it lets each thread finish
/// its current op and exit; nothing waits for them, so a long op never
/// holds up a shutdown. Clones share the threads.
#[derive(Clone)]
pub struct Executor {
    jobs: crossbeam_channel::Sender<Job>,
}

impl Executor {
    /// Starts `nthreads` threads that run ops from `registry` on `site`
    /// and hand each finished job to `report`, which returns false once
    /// nobody listens any more.
    pub fn start(
        nthreads: usize,
        site: Arc<Site>,
        registry: Arc<Registry>,
        report: impl Fn(Done) -> bool + Send + Clone + 'static,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for i in 0..nthreads.max(1) {
            let (queue, registry, report, site) = (queue.clone(), registry.clone(), report.clone(), site.clone());
            std::thread::Builder::new()
                .name(format!("weft-compute-{i}"))
                .spawn(move || {
                    for job in queue {
                        if !report(run(&registry, &site, job)) {
                            return; // the worker is shutting down
                        }
                    }
                })?;
        }
        Ok(Executor { jobs })
    }

    /// Queues a job; the state machine queues at most a few more than
    /// there are threads (`WorkerState::with_queued_ahead`).
    pub fn submit(&self, job: Job) {
        // Only fails once every thread has exited, i.e. at shutdown.
        let _ = self.jobs.send(job);
    }
}

/// Runs one job on this thread, timing it.
pub fn run(registry: &Registry, site: &Site, job: Job) -> Done {
    let started = Instant::now();
    let outcome = run_op(registry, site, &job);
    let compute_us = started.elapsed().as_micros() as u64;
    let device_lost = match (&outcome, &site.gpu) {
        (Err(_), Some(gpu)) => gpu.lost(),
        _ => None,
    };
    Done {
        session: job.session,
        task: job.task,
        outcome,
        compute_us,
        device_lost,
    }
}

/// Runs one op; a panic becomes an error naming it. On a GPU worker the
/// op's kernels run asynchronously on this thread's stream: it is
/// synchronised before the result (or the inputs, which the job holds)
/// leaves this thread, and a failure found there fails the op.
fn run_op(registry: &Registry, site: &Site, job: &Job) -> Result<Value, OpError> {
    let result = call_op(registry, site, job);
    match site.gpu.as_ref().map(|gpu| gpu.sync_thread_stream()) {
        Some(Err(e)) if result.is_ok() => Err(e.into()),
        _ => result,
    }
}

fn call_op(registry: &Registry, site: &Site, job: &Job) -> Result<Value, OpError> {
    let Some(op) = registry.get(&job.op) else {
        return Err(OpError::Failed(format!(
            "unknown op {:?} on worker {} (it has: {})",
            job.op.as_str(),
            site.worker,
            registry.names().join(", ")
        )));
    };
    let context = OpContext::new(site, &job.key);
    match catch_unwind(AssertUnwindSafe(|| op(&context, &job.args, &job.inputs))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".into());
            Err(OpError::Failed(format!("op panicked: {message}")))
        }
    }
}
