//! Compute threads: run ops off the event loop, so a long op never delays
//! heartbeats or transfers, and turn errors and panics into task failures.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::ids::{Key, SharedStr, TaskId};
use crate::ops::Registry;
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
    /// Its key.
    pub key: Key,
    /// The op that ran.
    pub op: SharedStr,
    /// The result, or the failure as the client will read it.
    pub outcome: Result<Value, String>,
    /// How long the op ran.
    pub compute_us: u64,
}

/// A fixed pool of compute threads. Dropping it lets each thread finish
/// its current op and exit; nothing waits for them, so a long op never
/// holds up a shutdown. Clones share the threads.
#[derive(Clone)]
pub struct Executor {
    jobs: crossbeam_channel::Sender<Job>,
}

impl Executor {
    /// Starts `nthreads` threads that run ops from `registry` and hand
    /// each finished job to `report`, which returns false once nobody
    /// listens any more.
    /// Each thread first calls `setup` (which binds it to the worker's GPU).
    pub fn start(
        nthreads: usize,
        worker: String,
        registry: Arc<Registry>,
        setup: impl Fn() + Send + Clone + 'static,
        report: impl Fn(Done) -> bool + Send + Clone + 'static,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for i in 0..nthreads.max(1) {
            let (queue, registry, report, worker) = (queue.clone(), registry.clone(), report.clone(), worker.clone());
            let setup = setup.clone();
            std::thread::Builder::new()
                .name(format!("weft-compute-{i}"))
                .spawn(move || {
                    setup();
                    for job in queue {
                        if !report(run(&registry, &worker, job)) {
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

/// Runs one job on this thread, timing it.
pub fn run(registry: &Registry, worker: &str, job: Job) -> Done {
    let started = Instant::now();
    let outcome = run_op(registry, worker, &job);
    Done {
        session: job.session,
        task: job.task,
        key: job.key,
        op: job.op,
        outcome,
        compute_us: started.elapsed().as_micros() as u64,
    }
}

/// Runs one op; a panic becomes an error naming it.
fn run_op(registry: &Registry, worker: &str, job: &Job) -> Result<Value, String> {
    let Some(op) = registry.get(&job.op) else {
        return Err(format!(
            "unknown op {:?} on worker {worker} (it has: {})",
            job.op.as_str(),
            registry.names().join(", ")
        ));
    };
    match catch_unwind(AssertUnwindSafe(|| op(&job.args, &job.inputs))) {
        Ok(result) => result,
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
