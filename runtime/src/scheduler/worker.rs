//! The scheduler's record of one worker.

use crate::ids::{TaskId, WorkerId};
use crate::protocol::WorkerInfo;

/// Marks "not in this list" for the intrusive list positions below.
pub(crate) const NOT_LISTED: u32 = u32::MAX;

#[derive(Debug)]
pub(crate) struct Worker {
    pub id: WorkerId,
    pub info: WorkerInfo,
    /// Resource capacity, indexed by `ResourceId`.
    pub resources: Vec<u32>,
    /// Resources its processing tasks ask for, indexed by `ResourceId`
    /// (the worker runs them as these free up).
    pub used: Vec<u32>,
    /// Tasks in `Processing(self.id)`; each task knows its position.
    pub processing: Vec<TaskId>,
    /// Results this worker held at some point. Entries whose task no longer
    /// lists this worker in `who_has` are stale; they are skipped and
    /// compacted once they outnumber the live ones (`n_held`).
    pub has_what: Vec<TaskId>,
    pub n_held: u32,
    pub nbytes_held: u64,
    /// Sum of the duration estimates of `processing`, in seconds.
    pub occupancy: f64,
    /// Position in the scheduler's list of unsaturated workers.
    pub unsat_idx: u32,
    /// Position in the scheduler's list of all workers.
    pub all_idx: u32,
    /// Task slots before the worker counts as saturated for root tasks.
    pub slots: u32,
    /// Links sent ahead behind a root task among `processing` (waiting
    /// for it to finish there): they take no root-task slot, their root
    /// holds one. (A chain's further links do: a worker running a chain
    /// stays saturated.)
    pub ahead: u32,
    /// Moving average of its task durations in seconds (negative: none
    /// finished yet); sets `slots`.
    pub avg_task_s: f64,
    /// Paused by the worker (memory pressure): gets no new tasks.
    pub paused: bool,
}

impl Worker {
    /// Occupancy per thread, in seconds.
    #[inline]
    pub fn load(&self) -> f64 {
        self.occupancy / self.info.nthreads.max(1) as f64
    }

    /// Fewer tasks than threads: a thread has nothing to run.
    #[inline]
    pub fn has_idle_thread(&self) -> bool {
        self.processing.len() < self.info.nthreads.max(1) as usize
    }

    #[inline]
    pub fn saturated(&self) -> bool {
        self.processing.len() as u32 - self.ahead >= self.slots
    }

    /// Root-task slots it has whatever the length of its tasks.
    pub fn base_slots(&self, saturation: f64) -> u32 {
        (self.info.nthreads.max(1) as f64 * saturation).ceil().max(1.0) as u32
    }

    /// Root tasks it takes in a row before the next worker gets any: its
    /// slots for short tasks beyond the base ones, so neighbouring root
    /// tasks (the leaves under one reduction) share a worker, while long
    /// tasks (base slots only) are dealt out one at a time.
    pub fn root_run(&self, saturation: f64) -> u32 {
        self.slots.saturating_sub(self.base_slots(saturation)).max(1)
    }

    /// Takes root tasks now: not paused and not saturated. Exactly these
    /// workers are in the scheduler's unsaturated list.
    #[inline]
    pub fn open(&self) -> bool {
        !self.paused && !self.saturated()
    }
}

/// An unordered set of workers with O(1) insert, remove and round-robin pick;
/// each worker stores its own position (`pos` picks which field).
#[derive(Default, Debug)]
pub(crate) struct WorkerList {
    pub items: Vec<WorkerId>,
    cursor: usize,
    /// The worker of the current run of [`WorkerList::next_in_runs`], and
    /// its picks so far.
    run_of: Option<WorkerId>,
    picks: u32,
}

impl WorkerList {
    pub fn push(&mut self, w: WorkerId) -> u32 {
        self.items.push(w);
        (self.items.len() - 1) as u32
    }

    /// Removes the entry at `idx`; returns the worker that moved into it.
    pub fn swap_remove(&mut self, idx: u32) -> Option<WorkerId> {
        self.items.swap_remove(idx as usize);
        self.items.get(idx as usize).copied()
    }

    /// The next worker in round-robin order.
    pub fn next(&mut self) -> Option<WorkerId> {
        if self.items.is_empty() {
            return None;
        }
        if self.cursor >= self.items.len() {
            self.cursor = 0;
        }
        let w = self.items[self.cursor];
        self.cursor += 1;
        Some(w)
    }

    /// Round robin in runs: the worker at the cursor is picked `run(w)`
    /// times in a row (while it stays listed), then the next one.
    pub fn next_in_runs(&mut self, run: impl Fn(WorkerId) -> u32) -> Option<WorkerId> {
        if self.items.is_empty() {
            return None;
        }
        if self.cursor >= self.items.len() {
            self.cursor = 0;
        }
        let w = self.items[self.cursor];
        if self.run_of != Some(w) {
            self.run_of = Some(w);
            self.picks = 0;
        }
        self.picks += 1;
        if self.picks >= run(w) {
            self.cursor += 1;
            self.run_of = None;
        }
        Some(w)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}
