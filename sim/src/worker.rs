//! A virtual worker: the product's [`WorkerState`] (ready heap, chain
//! waiters, resources held while running, cancel, steal, fetch batching and
//! limits), with the effects it asks for faked on virtual time. An op runs
//! for the duration in its sim arguments and computes the reference value
//! ([`crate::reference::value_of`]); a fetch reads the peer's store and
//! lasts its bytes over the sim's bandwidth. What the state machine does
//! with their completions is the product's own logic.

use weft_runtime::ids::{FxHashMap, TaskId, WorkerId};
use weft_runtime::protocol::{OpError, ResourceAmount, Tier};
use weft_runtime::worker::{TransferLimits, WorkerEvent, WorkerState};

use crate::config::WorkerSpec;

/// A result in a virtual store: its reference value and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub value: u64,
    pub nbytes: u64,
}

/// What an op or a fetch started by a virtual worker will report.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Execute ended: the value and size, or the op's error.
    Executed {
        task: TaskId,
        outcome: Result<Stored, String>,
        compute_us: u64,
    },
    /// A fetch from `peer` ended.
    Fetched {
        peer: WorkerId,
        got: Vec<(TaskId, Stored)>,
        missing: Vec<TaskId>,
    },
}

/// One virtual worker.
pub(crate) struct VWorker {
    pub alive: bool,
    pub state: WorkerState,
    /// Results held, mirroring what the state believes is in its store.
    pub store: FxHashMap<TaskId, Stored>,
}

impl VWorker {
    pub fn new(spec: &WorkerSpec) -> Self {
        VWorker {
            alive: true,
            state: WorkerState::new(spec.nthreads as usize, TransferLimits::for_memory(0))
                .with_resources(&resources(spec)),
            store: FxHashMap::default(),
        }
    }

    /// Turns an ended effect into the event the real reactor would feed,
    /// storing what it produced.
    pub fn complete(&mut self, effect: Effect) -> WorkerEvent {
        match effect {
            Effect::Executed {
                task,
                outcome,
                compute_us,
            } => {
                let outcome = outcome.map_err(OpError::from).map(|stored| {
                    self.store.insert(task, stored);
                    (stored.nbytes, Tier::Host)
                });
                WorkerEvent::Executed {
                    task,
                    outcome,
                    compute_us,
                }
            }
            Effect::Fetched { peer, got, missing } => {
                let got = got
                    .into_iter()
                    .map(|(task, stored)| {
                        self.store.insert(task, stored);
                        (task, stored.nbytes)
                    })
                    .collect();
                WorkerEvent::Fetched { peer, got, missing }
            }
        }
    }

    /// Dies: results and queued work vanish.
    pub fn kill(&mut self) {
        self.alive = false;
        self.store = FxHashMap::default();
        self.state = WorkerState::new(1, TransferLimits::for_memory(0));
    }
}

/// The resources a worker of this spec offers.
pub(crate) fn resources(spec: &WorkerSpec) -> Vec<ResourceAmount> {
    if spec.gpus == 0 {
        return Vec::new();
    }
    vec![ResourceAmount {
        name: "gpu".into(),
        amount: spec.gpus,
    }]
}
