//! Invariant checks, for tests and the simulator.
//!
//! [`Scheduler::check_tasks`] checks a few tasks against their neighbours
//! (O(inputs + dependents) each): feed it what [`Scheduler::take_touched`]
//! reports after each event. [`Scheduler::check_all`] does that for every
//! task and also checks the worker, queue and client books; it is O(tasks +
//! edges), so callers run it periodically rather than after every event.
//! Both are meant to run between events (after `handle` returns), when the
//! work lists are empty.

use super::task::QueueKind;
use super::worker::NOT_LISTED;
use super::{Scheduler, TaskState};
use crate::ids::TaskId;

/// A broken invariant, with the task or worker it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scheduler invariant broken: {0}")]
pub struct InvariantError(pub String);

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(InvariantError(format!($($fmt)+)));
        }
    };
}

impl Scheduler {
    /// Checks the given tasks (stale ids are skipped, after checking that
    /// their key is not still mapped to them).
    pub fn check_tasks(&self, ids: &[TaskId]) -> Result<(), InvariantError> {
        for &id in ids {
            self.check_task(id)?;
        }
        Ok(())
    }

    fn check_task(&self, id: TaskId) -> Result<(), InvariantError> {
        let Some(t) = self.tasks.get(id) else {
            return Ok(());
        };
        let key = &t.key;
        ensure!(t.id == id, "{key}: id {:?} stored as {:?}", id, t.id);
        // Waiters: the active dependents (counted per edge), which must be
        // live; live_dependents counts the live ones.
        let mut active = 0;
        let mut live = 0;
        for &d in &t.dependents {
            if let Some(dt) = self.tasks.get(d) {
                // One entry per edge (a task using an input twice is listed
                // twice).
                live += 1;
                if dt.state.is_active() {
                    active += 1;
                }
            }
        }
        ensure!(
            t.waiters == active,
            "{key}: waiters {} but {} active dependents",
            t.waiters,
            active
        );
        ensure!(
            t.live_dependents == live,
            "{key}: live_dependents {} but {} live",
            t.live_dependents,
            live
        );
        // Inputs: each exists; an active task's inputs are in memory or on
        // their way (never released, erred or forgotten).
        let mut not_in_memory = 0;
        for &d in t.deps.iter() {
            let Some(dt) = self.tasks.get(d) else {
                return Err(InvariantError(format!("{key}: input {d:?} forgotten")));
            };
            if dt.state != TaskState::Memory {
                not_in_memory += 1;
                ensure!(
                    !t.state.is_active() || dt.state.is_active(),
                    "{key} is {:?} but its input {} is {:?}",
                    t.state,
                    dt.key,
                    dt.state
                );
            }
        }
        for c in &t.who_wants {
            ensure!(self.clients.contains_key(c), "{key}: wanted by unknown client {c}");
        }
        ensure!(
            !t.state.is_active() || t.waiters > 0 || t.wanted(),
            "{key} is {:?} but nothing needs it",
            t.state
        );
        if t.state != TaskState::Memory {
            ensure!(t.who_has.is_empty(), "{key}: {:?} with holders", t.state);
        }
        if !matches!(t.state, TaskState::Processing(_)) {
            ensure!(t.proc_idx == NOT_LISTED, "{key}: proc_idx set while {:?}", t.state);
            ensure!(
                self.stealing.is_empty() || !self.stealing.contains_key(&id),
                "{key}: steal pending while {:?}",
                t.state
            );
        }
        if t.state != TaskState::Queued {
            ensure!(t.queue == QueueKind::None, "{key}: queue mark while {:?}", t.state);
        }
        if t.state == TaskState::Erred {
            ensure!(self.errors.contains_key(&id), "{key}: erred without an error");
        }
        match t.state {
            TaskState::Released => {
                ensure!(!t.wanted(), "{key}: released while a client holds a future");
                ensure!(t.waiters == 0, "{key}: released while {} tasks need it", t.waiters);
            }
            TaskState::Waiting => {
                ensure!(
                    t.waiting_on == not_in_memory && not_in_memory > 0,
                    "{key}: waiting_on {} with {} inputs not in memory",
                    t.waiting_on,
                    not_in_memory
                );
            }
            TaskState::Queued => {
                ensure!(not_in_memory == 0, "{key}: queued with inputs not in memory");
                ensure!(t.queue != QueueKind::None, "{key}: queued without a queue");
                if t.queue == QueueKind::Root {
                    ensure!(
                        self.unsat.len() == 0,
                        "{key}: queued while {} workers have free slots",
                        self.unsat.len()
                    );
                }
            }
            TaskState::Processing(w) => {
                // Only a link sent ahead waits, on inputs running there.
                for &d in t.deps.iter() {
                    let dt = self.tasks.get(d).map(|d| d.state);
                    ensure!(
                        dt == Some(TaskState::Memory) || dt == Some(TaskState::Processing(w)),
                        "{key}: processing on {w} with an input {dt:?}"
                    );
                }
                ensure!(
                    t.waiting_on == not_in_memory,
                    "{key}: processing, waiting_on {} with {} inputs not in memory",
                    t.waiting_on,
                    not_in_memory
                );
                let Some(wk) = self.workers.get(&w) else {
                    return Err(InvariantError(format!("{key}: processing on dead worker {w}")));
                };
                ensure!(
                    wk.processing.get(t.proc_idx as usize) == Some(&id),
                    "{key}: not at its place in {w}'s processing list"
                );
            }
            TaskState::Memory => {
                ensure!(!t.who_has.is_empty(), "{key}: in memory with no holder");
                for (i, h) in t.who_has.iter().enumerate() {
                    ensure!(self.workers.contains_key(h), "{key}: held by dead worker {h}");
                    ensure!(!t.who_has[..i].contains(h), "{key}: holder {h} listed twice");
                }
                ensure!(t.waiters > 0 || t.wanted(), "{key}: in memory but nothing needs it");
            }
            TaskState::Erred => {}
            TaskState::Forgotten => {
                return Err(InvariantError(format!("{key}: stored as forgotten")));
            }
        }
        if matches!(t.state, TaskState::Released | TaskState::Erred) {
            ensure!(
                t.live_dependents > 0 || t.wanted(),
                "{key}: {:?} with nothing referring to it was not forgotten",
                t.state
            );
        }
        Ok(())
    }

    /// Checks every task and the books kept about workers, queues and
    /// clients.
    pub fn check_all(&self) -> Result<(), InvariantError> {
        ensure!(
            self.ready.is_empty() && self.recheck.is_empty() && self.freed.is_empty(),
            "work lists not drained"
        );
        ensure!(
            self.tasks.n_keys() == self.tasks.len(),
            "key map and task table differ in size"
        );
        let mut processing = 0usize;
        let mut root_queued = 0usize;
        let mut held: crate::ids::FxHashMap<crate::ids::WorkerId, u32> = Default::default();
        ensure!(
            self.errors
                .keys()
                .all(|id| self.tasks.get(*id).is_some_and(|t| t.state == TaskState::Erred)),
            "error records for tasks not erred"
        );
        for t in self.tasks.iter() {
            self.check_task(t.id)?;
            ensure!(
                t.key_hash == super::task::key_hash(&t.key) && self.tasks.find(&t.key) == Some(t.id),
                "{}: key map does not point at {:?}",
                t.key,
                t.id
            );
            for &w in &t.who_has {
                *held.entry(w).or_default() += 1;
            }
            match t.state {
                TaskState::Processing(_) => processing += 1,
                TaskState::Queued if t.queue == QueueKind::Root => root_queued += 1,
                TaskState::Queued => {
                    ensure!(self.unrunnable.contains(&t.id), "{}: unrunnable but not parked", t.key);
                }
                _ => {}
            }
        }
        let valid_heap = self
            .root_queue
            .iter()
            .filter(|e| {
                let id = (e.0).1;
                self.tasks
                    .get(id)
                    .is_some_and(|t| t.state == TaskState::Queued && t.queue == QueueKind::Root)
            })
            .map(|e| (e.0).1)
            .collect::<std::collections::HashSet<_>>()
            .len();
        ensure!(
            valid_heap == root_queued,
            "{root_queued} root-queued tasks but {valid_heap} in the queue"
        );
        let mut listed = 0usize;
        let mut unsat = 0usize;
        let mut backlogged = 0u32;
        for (&w, wk) in &self.workers {
            ensure!(wk.id == w, "worker {w} stored as {}", wk.id);
            listed += wk.processing.len();
            backlogged += u32::from(wk.processing.len() > wk.info.nthreads.max(1) as usize);
            let mut occ = 0.0;
            for (i, &id) in wk.processing.iter().enumerate() {
                let t = &self.tasks.get(id);
                ensure!(
                    t.is_some_and(|t| t.state == TaskState::Processing(w) && t.proc_idx as usize == i),
                    "worker {w}: processing list entry {id:?} is wrong"
                );
                occ += t.map_or(0.0, |t| t.est as f64);
            }
            let mut used = vec![0u32; wk.used.len()];
            for &id in &wk.processing {
                for &(r, amount) in self.requests[self.tasks[id].request as usize].iter() {
                    if let Some(u) = used.get_mut(r.index()) {
                        *u += amount;
                    }
                }
            }
            ensure!(
                used == wk.used,
                "worker {w}: resources in use {:?} but its tasks ask for {used:?}",
                wk.used
            );
            let ahead = wk.processing.iter().filter(|&&id| self.tasks[id].ahead).count();
            ensure!(
                ahead == wk.ahead as usize,
                "worker {w}: {} links sent ahead counted, {ahead} marked",
                wk.ahead
            );
            ensure!(
                wk.processing
                    .iter()
                    .all(|&id| !self.tasks[id].ahead || self.tasks[id].waiting_on > 0),
                "worker {w}: a link marked ahead waits on nothing"
            );
            let tolerance = 1e-6 * (1.0 + occ.abs()) + 1e-9 * wk.processing.len() as f64;
            let close = (occ - wk.occupancy).abs() <= tolerance;
            ensure!(
                close,
                "worker {w}: occupancy {} but estimates sum to {occ}",
                wk.occupancy
            );
            ensure!(
                held.get(&w).copied().unwrap_or(0) == wk.n_held,
                "worker {w}: n_held {} but holds {:?}",
                wk.n_held,
                held.get(&w)
            );
            ensure!(
                self.all.items.get(wk.all_idx as usize) == Some(&w),
                "worker {w}: not at its place in the worker list"
            );
            if !wk.open() {
                ensure!(
                    wk.unsat_idx == NOT_LISTED,
                    "worker {w}: saturated or paused but listed free"
                );
            } else {
                unsat += 1;
                ensure!(
                    self.unsat.items.get(wk.unsat_idx as usize) == Some(&w),
                    "worker {w}: has free slots but is not listed"
                );
            }
        }
        ensure!(listed == processing, "{processing} tasks processing, {listed} listed");
        ensure!(
            backlogged == self.backlogged,
            "{backlogged} workers with more tasks than threads, {} counted",
            self.backlogged
        );
        ensure!(self.all.len() == self.workers.len(), "worker list size");
        ensure!(self.unsat.len() == unsat, "unsaturated list size");
        for (&id, &thief) in &self.stealing {
            ensure!(
                self.tasks
                    .get(id)
                    .is_some_and(|t| matches!(t.state, TaskState::Processing(_))),
                "steal of {id:?} (to {thief:?}) pending for a task not processing"
            );
        }
        for (&c, client) in &self.clients {
            let n = client
                .wants
                .iter()
                .filter(|&&id| self.tasks.get(id).is_some_and(|t| t.who_wants.contains(&c)))
                .collect::<std::collections::HashSet<_>>()
                .len();
            ensure!(
                n == client.n_wants as usize,
                "client {c}: wants {} but holds {n}",
                client.n_wants
            );
        }
        Ok(())
    }
}
