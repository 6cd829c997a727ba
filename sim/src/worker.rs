//! A virtual worker: the product's [`WorkerState`] (ready heap, chain
//! waiters, resources held while running, cancel, steal, fetch batching and
//! limits), with the effects it asks for faked on virtual time. An op runs
//! for the duration in its sim arguments and computes the reference value
//! ([`crate::reference::value_of`]); a fetch reads the peer's store and
//! lasts its bytes over the sim's bandwidth. What the state machine does
//! with their completions is the product's own logic.

use weft_runtime::ids::{FxHashMap, Key, TaskId, WorkerId};
use weft_runtime::protocol::{HeldResult, OpError, ResourceAmount, Tier};
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
        micros: u64,
    },
}

/// One virtual worker.
pub(crate) struct VWorker {
    pub alive: bool,
    pub state: WorkerState,
    /// Results held, mirroring what the state believes is in its store.
    pub store: FxHashMap<TaskId, Stored>,
    /// Results kept from a scheduler that crashed, by key, until the next
    /// one claims them (the real store's orphans).
    pub orphans: FxHashMap<Key, Stored>,
    /// Numbers its connections to a scheduler: effects started in an
    /// earlier one are dropped, as the real reactor drops them.
    pub session: u64,
    spec: WorkerSpec,
}

impl VWorker {
    pub fn new(spec: &WorkerSpec) -> Self {
        VWorker {
            alive: true,
            state: Self::fresh_state(spec),
            store: FxHashMap::default(),
            orphans: FxHashMap::default(),
            session: 0,
            spec: spec.clone(),
        }
    }

    fn fresh_state(spec: &WorkerSpec) -> WorkerState {
        WorkerState::new(spec.nthreads as usize, TransferLimits::for_memory(0)).with_resources(&resources(spec))
    }

    /// The scheduler went away: keeps the results it made, by key, drops
    /// the rest and its work, and returns what it keeps, for registering
    /// again.
    pub fn orphan(&mut self) -> Vec<HeldResult> {
        for (task, key) in self.state.own_results() {
            if let Some(stored) = self.store.remove(&task) {
                self.orphans.insert(key, stored);
            }
        }
        self.store.clear();
        self.state = Self::fresh_state(&self.spec);
        self.session += 1;
        self.held()
    }

    /// What it keeps from an earlier scheduler.
    pub fn held(&self) -> Vec<HeldResult> {
        self.orphans
            .iter()
            .map(|(key, stored)| HeldResult {
                key: key.clone(),
                nbytes: stored.nbytes,
                tier: Tier::Host,
            })
            .collect()
    }

    /// A result it holds: by task, or, while the scheduler's claim of a
    /// kept one is on its way, by `key` (the real data server waits for
    /// the claim).
    pub fn get(&self, task: TaskId, key: Option<&Key>) -> Option<Stored> {
        self.store
            .get(&task)
            .or_else(|| key.and_then(|k| self.orphans.get(k)))
            .copied()
    }

    /// Its description.
    pub fn spec(&self) -> &WorkerSpec {
        &self.spec
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
            Effect::Fetched {
                peer,
                got,
                missing,
                micros,
            } => {
                let got = got
                    .into_iter()
                    .map(|(task, stored)| {
                        self.store.insert(task, stored);
                        (task, stored.nbytes)
                    })
                    .collect();
                WorkerEvent::Fetched {
                    peer,
                    got,
                    missing,
                    micros,
                }
            }
        }
    }

    /// Dies: results and queued work vanish.
    pub fn kill(&mut self) {
        self.alive = false;
        self.store = FxHashMap::default();
        self.orphans = FxHashMap::default();
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
