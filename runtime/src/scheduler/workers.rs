//! What the scheduler does on worker events: joins, pauses, losses (with
//! recomputation from lineage) and task reports.

use crate::ids::{TaskId, WorkerId};
use crate::protocol::{OpError, TaskError, Tier, ToClient, ToWorker, WorkerInfo};

use super::task::{QueueKind, Task, Tasks};
use super::worker::{NOT_LISTED, Worker};
use super::{Comm, MAX_SLOTS_PER_THREAD, QUEUE_TARGET_S, Scheduler, TaskState};

impl Scheduler {
    pub(super) fn worker_joined(&mut self, worker: WorkerId, mut info: WorkerInfo, comm: &mut impl Comm) {
        if self.workers.contains_key(&worker) {
            tracing::warn!(%worker, "duplicate worker registration; ignored");
            self.stats.ignored += 1;
            return;
        }
        if self.names.contains_key(&info.name) || self.names.contains_key(&info.address) {
            tracing::warn!(%worker, name = %info.name, address = %info.address,
                "a live worker already has this name or address; registration refused");
            self.stats.ignored += 1;
            comm.to_worker(
                worker,
                ToWorker::Rejected {
                    reason: format!(
                        "a live worker already has name {} or address {}",
                        info.name, info.address
                    ),
                },
            );
            return;
        }
        let held = std::mem::take(&mut info.held);
        let mut resources = Vec::new();
        for r in &info.resources {
            let rid = self.intern_resource(&r.name);
            if resources.len() <= rid.index() {
                resources.resize(rid.index() + 1, 0);
            }
            resources[rid.index()] += r.amount;
        }
        let slots = match self.config.worker_saturation {
            Some(f) => ((info.nthreads as f64 * f).ceil() as u32).max(1),
            None => u32::MAX,
        };
        if resources.iter().any(|&a| a > 0) {
            self.resource_workers.push(worker);
        }
        self.names.insert(info.name.clone(), worker);
        self.names.insert(info.address.clone(), worker);
        let all_idx = self.all.push(worker);
        let unsat_idx = self.unsat.push(worker);
        tracing::debug!(%worker, name = %info.name, nthreads = info.nthreads, "worker joined");
        self.workers.insert(
            worker,
            Worker {
                id: worker,
                info,
                used: vec![0; resources.len()],
                resources,
                processing: Vec::new(),
                has_what: Vec::new(),
                n_held: 0,
                nbytes_held: 0,
                occupancy: 0.0,
                unsat_idx,
                all_idx,
                slots,
                ahead: 0,
                avg_task_s: -1.0,
                paused: false,
            },
        );
        comm.to_worker(worker, ToWorker::Registered { worker });
        self.claim_held(worker, held, comm);
        self.freed.push(worker);
        // A new worker may be able to run what nobody could.
        self.retry_unrunnable(comm);
    }

    pub(super) fn worker_paused(&mut self, worker: WorkerId, paused: bool, comm: &mut impl Comm) {
        let wk = self
            .workers
            .get_mut(&worker)
            .expect("internal error: checked by handle");
        if wk.paused == paused {
            return;
        }
        tracing::info!(%worker, paused, "worker pause state changed");
        wk.paused = paused;
        self.relist(worker);
        if !paused {
            self.retry_unrunnable(comm);
        }
    }

    /// Root tasks that take far less than a round trip to the scheduler
    /// would leave a worker idle between assignments if it held only
    /// `ceil(nthreads * saturation)` of them. So the slot count follows
    /// the worker's recent task durations: enough to keep about
    /// [`QUEUE_TARGET_S`] of work queued per thread, never fewer than the
    /// saturation gives and at most [`MAX_SLOTS_PER_THREAD`] per thread.
    /// Tasks that take longer than the target get exactly the saturation
    /// limit, as in Dask.
    fn adapt_slots(&mut self, worker: WorkerId, secs: f64) {
        let Some(saturation) = self.config.worker_saturation else {
            return;
        };
        let wk = self
            .workers
            .get_mut(&worker)
            .expect("internal error: checked by caller");
        wk.avg_task_s = if wk.avg_task_s < 0.0 {
            secs
        } else {
            0.8 * wk.avg_task_s + 0.2 * secs
        };
        let threads = wk.info.nthreads.max(1) as f64;
        let wanted = (threads * QUEUE_TARGET_S / wk.avg_task_s.max(1e-7)).min(threads * MAX_SLOTS_PER_THREAD);
        let slots = wk.base_slots(saturation).max(wanted.ceil() as u32);
        if slots != wk.slots {
            wk.slots = slots;
            self.relist(worker);
        }
    }

    /// Tries to place the tasks no worker could run (after a worker joined
    /// or resumed). O(parked tasks).
    pub(super) fn retry_unrunnable(&mut self, comm: &mut impl Comm) {
        let parked = std::mem::take(&mut self.unrunnable);
        for id in parked {
            match self.tasks.get(id) {
                Some(t) if t.state == TaskState::Queued && t.queue == QueueKind::Unrunnable => {}
                _ => continue,
            }
            match self.decide_worker(id) {
                Some(w) => self.assign(id, w, comm),
                None => self.unrunnable.push(id),
            }
        }
    }

    pub(super) fn worker_lost(&mut self, worker: WorkerId, comm: &mut impl Comm) {
        let Some(wk) = self.workers.remove(&worker) else {
            tracing::warn!(%worker, "loss of an unknown worker; ignored");
            self.stats.ignored += 1;
            return;
        };
        tracing::info!(%worker, name = %wk.info.name, running = wk.processing.len(),
            held = wk.n_held, "worker removed (its running tasks are rescheduled)");
        if wk.processing.len() > wk.info.nthreads.max(1) as usize {
            self.backlogged -= 1;
        }
        self.names.remove(&wk.info.name);
        self.names.remove(&wk.info.address);
        if let Some(moved) = self.all.swap_remove(wk.all_idx) {
            self.workers
                .get_mut(&moved)
                .expect("internal error: worker list")
                .all_idx = wk.all_idx;
        }
        if wk.unsat_idx != NOT_LISTED {
            self.unlist_at(wk.unsat_idx);
        }
        self.resource_workers.retain(|&w| w != worker);
        self.unstage(worker);
        // Steals towards this worker resolve on the victim's answer.

        // 1. Its tasks go back to waiting (ready again unless an input is
        //    lost below); the ones it has now killed too often fail.
        let allowed = self.config.allowed_failures;
        let mut killed = Vec::new();
        for &id in &wk.processing {
            let t = &mut self.tasks[id];
            t.proc_idx = NOT_LISTED;
            t.ahead = false;
            // A link sent ahead had not started: its input was still running.
            let started = t.waiting_on == 0;
            if started {
                t.deaths = t.deaths.saturating_add(1);
            }
            let deaths = t.deaths as u32;
            if !self.stealing.is_empty() {
                self.stealing.remove(&id);
            }
            if started && deaths > allowed {
                self.tasks[id].waiting_on = 0;
                self.set_state(id, TaskState::Waiting);
                killed.push((id, deaths));
            } else {
                self.requeue(id);
            }
        }
        for (id, deaths) in killed {
            let t = &self.tasks[id];
            let error = TaskError::KilledWorkers {
                key: t.key.clone(),
                op: self.ops[t.op.index()].name.clone(),
                deaths,
                allowed,
                last_worker: wk.info.name.clone(),
            };
            self.fail(id, error, comm);
        }
        // 2. Results that lived only there are lost; recompute the needed
        //    ones from lineage.
        for &id in &wk.has_what {
            let Some(t) = self.tasks.get_mut(id) else {
                continue;
            };
            let Some(pos) = t.who_has.iter().position(|&w| w == worker) else {
                continue; // stale entry
            };
            t.who_has.swap_remove(pos);
            let in_memory = t.state == TaskState::Memory;
            let (lost, wanted) = (in_memory && t.who_has.is_empty(), in_memory && !t.who_wants.is_empty());
            self.touch(id);
            if lost {
                self.lost(id, comm);
            } else if wanted {
                // Clients holding it hear of the holders left, so they do
                // not try the dead one.
                let t = &self.tasks[id];
                let message = self.in_memory(t);
                for &c in &t.who_wants {
                    comm.to_client(c, message.clone());
                }
            }
        }
    }

    /// A result in memory lost its last holder.
    pub(super) fn lost(&mut self, id: TaskId, comm: &mut impl Comm) {
        self.set_state(id, TaskState::Released);
        let dependents = std::mem::take(&mut self.tasks[id].dependents);
        for &d in &dependents {
            let Some(dt) = self.tasks.get_mut(d) else {
                continue;
            };
            match dt.state {
                TaskState::Waiting => {
                    dt.waiting_on += 1;
                    self.touch(d);
                }
                TaskState::Queued => {
                    dt.queue = QueueKind::None;
                    dt.waiting_on = 1;
                    self.set_state(d, TaskState::Waiting);
                }
                TaskState::Processing(w) => {
                    self.unassign(d);
                    comm.to_worker(w, ToWorker::Cancel { task: d });
                    self.requeue(d);
                    self.recall_links(d, comm);
                }
                _ => {}
            }
        }
        self.tasks[id].dependents = dependents;
        let t = &self.tasks[id];
        if t.scattered && (t.waiters > 0 || t.wanted()) {
            let key = t.key.clone();
            self.fail(id, TaskError::DataLost { key }, comm);
        } else if t.waiters > 0 || t.wanted() {
            tracing::debug!(task = %t.key, "result lost; recomputing");
            for &c in &t.who_wants {
                comm.to_client(c, ToClient::Lost { key: t.key.clone() });
            }
            self.stats.recomputed += 1;
            self.need(id, comm);
        } else {
            self.recheck.push(id);
        }
    }

    /// Looks up a task a worker reports on; `None` (after logging) when the
    /// id is stale or the task is not processing on that worker.
    pub(super) fn processing_task(&mut self, worker: WorkerId, id: TaskId, what: &str) -> Option<&Task> {
        match self.tasks.get(id) {
            Some(t) if t.state == TaskState::Processing(worker) => self.tasks.get(id),
            // Both are routine races (a report crossing a cancel, a steal or
            // a release), so they log at debug level.
            Some(t) => {
                tracing::debug!(%worker, task = %t.key, state = ?t.state,
                    "{what} for a task not processing on this worker; ignored");
                self.stats.ignored += 1;
                None
            }
            None => {
                tracing::debug!(%worker, task = ?id, "{what} for an unknown task; ignored");
                self.stats.ignored += 1;
                None
            }
        }
    }

    pub(super) fn task_finished(
        &mut self,
        worker: WorkerId,
        id: TaskId,
        nbytes: u64,
        compute_us: u64,
        tier: Tier,
        comm: &mut impl Comm,
    ) {
        if self.processing_task(worker, id, "finished").is_none() {
            // The worker may hold a result nobody tracks: let it drop it
            // (unless it is a holder we know of).
            let holder = self.tasks.get(id).is_some_and(|t| t.who_has.contains(&worker));
            if !holder {
                comm.to_worker(worker, ToWorker::Free { task: id });
            }
            return;
        }
        let secs = compute_us as f64 * 1e-6;
        self.adapt_slots(worker, secs);
        self.unassign(id);
        let t = &self.tasks[id];
        let op = &mut self.ops[t.op.index()];
        op.avg = if op.count == 0 { secs } else { 0.5 * op.avg + 0.5 * secs };
        op.count += 1;
        self.put_in_memory(worker, id, nbytes, tier, comm);
    }

    /// A task's result is now held by `worker` (and nowhere else): the
    /// clients that want it hear so, and its waiting dependents advance.
    pub(super) fn put_in_memory(
        &mut self,
        worker: WorkerId,
        id: TaskId,
        nbytes: u64,
        tier: Tier,
        comm: &mut impl Comm,
    ) {
        let t = &mut self.tasks[id];
        t.nbytes = nbytes;
        t.tier = tier;
        self.add_replica(worker, id, nbytes);
        self.set_state(id, TaskState::Memory);
        let t = &self.tasks[id];
        if !t.who_wants.is_empty() {
            let message = self.in_memory(t);
            for &c in &t.who_wants {
                comm.to_client(c, message.clone());
            }
        }
        let dependents = std::mem::take(&mut self.tasks[id].dependents);
        for &d in &dependents {
            let Some(dt) = self.tasks.get_mut(d) else {
                continue;
            };
            match dt.state {
                TaskState::Waiting => {
                    dt.waiting_on -= 1;
                    if dt.waiting_on == 0 {
                        self.ready.push(d);
                    }
                    self.touch(d);
                }
                // A link sent ahead: its input is now in memory, and it
                // takes a slot once it can start.
                TaskState::Processing(w) if dt.waiting_on > 0 => {
                    dt.waiting_on -= 1;
                    if dt.waiting_on == 0
                        && std::mem::take(&mut dt.ahead)
                        && let Some(wk) = self.workers.get_mut(&w)
                    {
                        wk.ahead -= 1;
                        if !wk.open() && wk.unsat_idx != NOT_LISTED {
                            self.relist(w);
                        }
                    }
                    self.touch(d);
                }
                _ => {}
            }
        }
        self.tasks[id].dependents = dependents;
        self.recheck.push(id);
    }

    pub(super) fn compact_has_what(wk: &mut Worker, tasks: &Tasks) {
        if wk.has_what.len() > 16 && wk.has_what.len() > 2 * wk.n_held as usize {
            let w = wk.id;
            wk.has_what
                .retain(|&id| tasks.get(id).is_some_and(|t| t.who_has.contains(&w)));
            // A task freed and re-acquired may appear twice.
            wk.has_what.sort_unstable();
            wk.has_what.dedup();
        }
    }

    pub(super) fn task_failed(&mut self, worker: WorkerId, id: TaskId, error: OpError, comm: &mut impl Comm) {
        if self.processing_task(worker, id, "failure").is_none() {
            return;
        }
        self.unassign(id);
        let t = &mut self.tasks[id];
        if t.retries_left > 0 {
            t.retries_left -= 1;
            t.waiting_on = 0;
            tracing::debug!(task = %t.key, %error, left = t.retries_left, "task failed; retrying");
            self.set_state(id, TaskState::Waiting);
            self.ready.push(id);
            self.recall_links(id, comm);
            return;
        }
        let error = TaskError::OpFailed {
            key: t.key.clone(),
            op: self.ops[t.op.index()].name.clone(),
            worker: self.workers[&worker].info.name.clone(),
            error,
        };
        self.set_state(id, TaskState::Waiting);
        self.fail(id, error, comm);
    }

    pub(super) fn steal_response(&mut self, worker: WorkerId, id: TaskId, stolen: bool, comm: &mut impl Comm) {
        let Some(&Some(thief)) = self.stealing.get(&id) else {
            tracing::debug!(%worker, task = ?id, "steal response without a pending steal; ignored");
            self.stats.ignored += 1;
            return;
        };
        if self.processing_task(worker, id, "steal response").is_none() {
            return;
        }
        if !stolen {
            // It had started. A thief still idle beside a backlog asks
            // again now, not at the next balance round, once no other
            // answer to it is pending (balancing does not count asks in
            // flight, so asking sooner would ask for too many).
            self.stealing.insert(id, None);
            if self.backlogged > 0
                && self.workers.get(&thief).is_some_and(super::Worker::has_idle_thread)
                && !self.stealing.values().any(|t| *t == Some(thief))
            {
                self.idle_thief = true;
            }
            return;
        }
        self.stealing.remove(&id);
        self.stats.steals += 1;
        self.unassign(id);
        // Its links sent ahead come back from the victim and, where the
        // thief takes it, go ahead to the thief.
        self.recall_links(id, comm);
        let valid = self.workers.contains_key(&thief) && self.valid_worker(id, thief, true);
        if valid {
            self.assign(id, thief, comm);
            self.pipeline(id, thief, comm);
        } else {
            self.requeue(id);
        }
    }

    pub(super) fn missing_data(
        &mut self,
        worker: WorkerId,
        id: TaskId,
        dep: TaskId,
        tried: Vec<WorkerId>,
        comm: &mut impl Comm,
    ) {
        let Some(t) = self.processing_task(worker, id, "missing data") else {
            return;
        };
        if !t.deps.contains(&dep) {
            tracing::warn!(%worker, task = %t.key, "missing data for a key that is not an input; ignored");
            self.stats.ignored += 1;
            return;
        }
        if self.drop_replicas(dep, &tried, comm) {
            // `lost` moved `id` back to waiting too.
        } else if self.tasks[id].state == TaskState::Processing(worker) {
            self.unassign(id);
            comm.to_worker(worker, ToWorker::Cancel { task: id });
            self.requeue(id);
            self.recall_links(id, comm);
        }
    }

    /// Forgets the replicas of `id` on `tried` (they could not deliver
    /// it); when none is left the result is lost and recomputed if needed.
    /// Returns whether it was lost.
    pub(super) fn drop_replicas(&mut self, id: TaskId, tried: &[WorkerId], comm: &mut impl Comm) -> bool {
        let t = &mut self.tasks[id];
        let nbytes = t.nbytes;
        for w in tried {
            if let Some(pos) = t.who_has.iter().position(|h| h == w) {
                t.who_has.swap_remove(pos);
                if let Some(wk) = self.workers.get_mut(w) {
                    wk.n_held -= 1;
                    wk.nbytes_held = wk.nbytes_held.saturating_sub(nbytes);
                }
            }
        }
        let lost = t.who_has.is_empty() && t.state == TaskState::Memory;
        self.touch(id);
        if lost {
            self.lost(id, comm);
        }
        lost
    }

    /// A holder moved a result between tiers. The task keeps one tier, the
    /// one its holders reported last.
    pub(super) fn moved(&mut self, worker: WorkerId, id: TaskId, tier: Tier) {
        match self.tasks.get_mut(id) {
            Some(t) if t.state == TaskState::Memory && t.who_has.contains(&worker) => t.tier = tier,
            _ => {
                tracing::debug!(%worker, task = %id, ?tier, "tier of a result this worker does not hold; ignored");
                self.stats.ignored += 1;
            }
        }
    }

    pub(super) fn acquired(&mut self, worker: WorkerId, id: TaskId, nbytes: u64, comm: &mut impl Comm) {
        match self.tasks.get(id) {
            Some(t) if t.state == TaskState::Memory => self.add_replica(worker, id, nbytes),
            // Lost meanwhile and being computed again by this same worker:
            // it answers from the replica (freeing it here would take an
            // input from the tasks waiting there for it).
            Some(t) if t.state == TaskState::Processing(worker) => {}
            _ => {
                // Released meanwhile (or never known): the replica is garbage.
                comm.to_worker(worker, ToWorker::Free { task: id });
            }
        }
    }

    /// `worker`, live, now also holds the result of `id`, in memory.
    pub(super) fn add_replica(&mut self, worker: WorkerId, id: TaskId, nbytes: u64) {
        let t = &mut self.tasks[id];
        if t.who_has.contains(&worker) {
            return;
        }
        t.who_has.push(worker);
        let wk = self
            .workers
            .get_mut(&worker)
            .expect("internal error: checked by caller");
        wk.has_what.push(id);
        wk.n_held += 1;
        wk.nbytes_held += nbytes;
        Self::compact_has_what(wk, &self.tasks);
        self.touch(id);
    }
}
