//! What a run is configured with and what it reports.

/// How much the simulator checks.
#[derive(Clone, Copy, Debug)]
pub struct CheckMode {
    /// Check the tasks each event touched.
    pub incremental: bool,
    /// Sweep everything every this many scheduler events (0: only at the end).
    pub full_every: u64,
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed for worker timing and random faults.
    pub seed: u64,
    /// One-way scheduler<->worker message latency, microseconds.
    pub latency_us: u64,
    /// Worker<->worker bandwidth, bytes per microsecond.
    pub bytes_per_us: u64,
    /// Period of [`Event::Balance`](weft_runtime::scheduler::Event::Balance), microseconds (0: never).
    pub balance_every_us: u64,
    /// Checks.
    pub check: CheckMode,
    /// The client releases each output as soon as it has gathered it.
    pub release_on_receipt: bool,
    /// Deliver messages that a worker sent before it died (the scheduler
    /// must ignore them).
    pub deliver_from_dead: bool,
    /// How long after a kill the scheduler learns of it, microseconds (0:
    /// at once). Meanwhile peers and the client find the worker's results
    /// missing and say so first.
    pub detect_loss_us: u64,
    /// Keep a copy of every event fed to the scheduler (for replay in
    /// benchmarks: the scheduler is deterministic, so replaying the events
    /// into a fresh one repeats the run without the simulator's cost).
    pub record_events: bool,
    /// How long a worker paused by [`crate::Sim::pause_random_at`] stays
    /// paused, microseconds.
    pub pause_us: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            latency_us: 50,
            bytes_per_us: 1_000,
            balance_every_us: 20_000,
            check: CheckMode {
                incremental: true,
                full_every: 1_000,
            },
            release_on_receipt: true,
            deliver_from_dead: true,
            detect_loss_us: 0,
            record_events: false,
            pause_us: 10_000,
        }
    }
}

/// A virtual worker's description.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// Threads.
    pub nthreads: u32,
    /// `gpu` units.
    pub gpus: u32,
}

/// Counters of a run.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    /// Simulator events processed.
    pub sim_events: u64,
    /// Incremental task checks.
    pub task_checks: u64,
    /// Full sweeps.
    pub full_checks: u64,
    /// Workers killed.
    pub kills: u64,
    /// Workers added.
    pub adds: u64,
    /// Output reports gathered with the right value (an output lost and
    /// recomputed while the client holds it is reported again).
    pub outputs_ok: u64,
    /// Outputs the client had seen in memory that were lost and recomputed.
    pub outputs_lost: u64,
    /// Outputs the client could not read from the holders it was told
    /// (reported to the scheduler as missing data).
    pub outputs_missing: u64,
    /// Outputs erred as the reference says.
    pub outputs_erred: u64,
    /// Outputs erred because workers died under them (KilledWorkers).
    pub outputs_killed: u64,
    /// Task runs started on virtual workers.
    pub runs: u64,
    /// Messages from dead workers delivered anyway.
    pub from_dead: u64,
    /// Workers killed by `crash` tasks.
    pub crashes: u64,
    /// Scheduler crashes (and restarts).
    pub scheduler_crashes: u64,
    /// Results workers kept across a scheduler crash that the next
    /// scheduler claimed (counted when that scheduler is replaced, and
    /// by [`crate::Sim::reclaimed`]).
    pub reclaimed: u64,
    /// Runs of a key that a worker kept across the last scheduler crash
    /// and registered with before the client resubmitted: zero unless
    /// workers die after the crash.
    pub kept_recomputed: u64,
}

/// A failed simulator check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("simulation check failed at t={at_us}us after {events} events: {message}")]
pub struct SimError {
    /// Logical time.
    pub at_us: u64,
    /// Scheduler events so far.
    pub events: u64,
    /// What broke.
    pub message: String,
}
