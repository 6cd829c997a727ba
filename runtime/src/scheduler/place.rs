//! Placement (which worker runs a ready task) and work stealing.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::{MAX_CANDIDATES, Scheduler, TaskState};
use crate::ids::{TaskId, WorkerId};
use crate::protocol::ToWorker;

/// Most tasks looked at per victim when stealing.
const STEAL_SCAN: usize = 8;

/// Most links sent ahead behind a task that move with it when it is
/// stolen.
const STEAL_LINKS: usize = 4;

impl Scheduler {
    /// Can `w` run task `id`? Resources are checked against capacity (the
    /// worker enforces concurrency); restrictions are binding when `strict`
    /// or when the task does not allow other workers.
    pub(super) fn valid_worker(&self, id: TaskId, w: WorkerId, strict: bool) -> bool {
        let Some(wk) = self.workers.get(&w) else {
            return false;
        };
        if wk.paused {
            return false;
        }
        let t = &self.tasks[id];
        for &(r, amount) in self.requests[t.request as usize].iter() {
            if wk.resources.get(r.index()).copied().unwrap_or(0) < amount {
                return false;
            }
        }
        match &t.restrictions {
            Some(r) if strict || !r.allow_other => {
                r.workers.iter().any(|n| *n == wk.info.name || *n == wk.info.address)
            }
            _ => true,
        }
    }

    /// Seconds task `id` would wait on `w` for the resources it asks for:
    /// the requests queued there beyond the capacity, per unit of capacity,
    /// each taking about as long as this task is estimated to.
    fn resource_wait(&self, id: TaskId, w: WorkerId) -> f64 {
        let t = &self.tasks[id];
        if t.request == 0 {
            return 0.0;
        }
        let wk = &self.workers[&w];
        let mut ahead = 0.0f64;
        for &(r, amount) in self.requests[t.request as usize].iter() {
            let capacity = wk.resources.get(r.index()).copied().unwrap_or(0).max(1);
            let used = wk.used.get(r.index()).copied().unwrap_or(0);
            let over = (used + amount).saturating_sub(capacity);
            ahead = ahead.max(over as f64 / capacity as f64);
        }
        ahead * self.estimate(t.op)
    }

    /// Bytes of input `d` that a task of `est` seconds is charged for
    /// fetching it: all of them, except for an input that more tasks than
    /// there are workers still wait for, whose transfer their work
    /// outweighs (a broadcast): each worker fetches it once for its share
    /// of those tasks, so each task pays its share. Otherwise a burst of
    /// tasks on a large broadcast would all queue on its holder, every
    /// other worker looking a whole transfer away.
    fn charged_bytes(&self, d: TaskId, est: f64) -> f64 {
        let dt = &self.tasks[d];
        let bytes = dt.transfer_bytes() as f64;
        let (waiters, workers) = (f64::from(dt.waiters), self.workers.len() as f64);
        if waiters > workers && waiters * est > bytes / self.bandwidth {
            bytes * workers / waiters
        } else {
            bytes
        }
    }

    /// Seconds `w` would spend fetching the inputs of `id` it lacks: their
    /// charged bytes over the bandwidth, plus the fetch latency if it
    /// lacks any.
    fn fetch_time(&self, id: TaskId, w: WorkerId) -> f64 {
        let t = &self.tasks[id];
        let est = self.estimate(t.op);
        let (mut missing, mut bytes) = (false, 0.0);
        for &d in &t.deps {
            if !self.tasks[d].who_has.contains(&w) {
                missing = true;
                bytes += self.charged_bytes(d, est);
            }
        }
        if missing {
            bytes / self.bandwidth + self.config.fetch_latency
        } else {
            0.0
        }
    }

    /// Picks the worker for a ready task: the one minimising occupancy per
    /// thread plus the time to fetch missing inputs, among the workers that
    /// hold inputs and, when the best of them is busy, the less loaded of
    /// two others; else the allowed workers, else any (round robin over
    /// unsaturated workers first). `None` when no live worker may run it.
    pub(super) fn decide_worker(&mut self, id: TaskId) -> Option<WorkerId> {
        let bw = self.bandwidth;
        let est = self.estimate(self.tasks[id].op);
        let mut cand = std::mem::take(&mut self.cand);
        cand.clear();
        let mut total = 0.0;
        for &d in self.tasks[id].deps.iter() {
            let bytes = self.charged_bytes(d, est);
            total += bytes;
            for &w in &self.tasks[d].who_has {
                if let Some(e) = cand.iter_mut().find(|e| e.0 == w) {
                    e.1 += bytes;
                } else if cand.len() < MAX_CANDIDATES {
                    cand.push((w, bytes));
                }
            }
        }
        let mut best: Option<(f64, WorkerId)> = None;
        let consider = |cost: f64, w: WorkerId, best: &mut Option<(f64, WorkerId)>| {
            if best.is_none_or(|(c, bw_)| cost < c || (cost == c && w < bw_)) {
                *best = Some((cost, w));
            }
        };
        for &(w, local) in &cand {
            if self.valid_worker(id, w, true) {
                let cost = self.workers[&w].load() + (total - local) / bw + self.resource_wait(id, w);
                consider(cost, w, &mut best);
            }
        }
        self.cand = cand;
        if let Some((cost, holder)) = best {
            // The holders may be busy: the less loaded of two other workers
            // may start it sooner, inputs fetched. (Stealing would move such
            // a task only once its thief is idle, one per idle thread per
            // round, so a burst of tasks on one input would queue behind
            // its holder.)
            if cost > 0.0
                && let Some(w) = self.less_loaded_of_two()
                && w != holder
                && self.valid_worker(id, w, true)
            {
                let cost = self.workers[&w].load() + self.fetch_time(id, w) + self.resource_wait(id, w);
                consider(cost, w, &mut best);
            }
            return best.map(|(_, w)| w);
        }
        let t = &self.tasks[id];
        if let Some(r) = &t.restrictions {
            for name in &r.workers {
                if let Some(&w) = self.names.get(name)
                    && self.valid_worker(id, w, true)
                {
                    consider(self.workers[&w].load() + total / bw, w, &mut best);
                }
            }
            if let Some((_, w)) = best {
                return Some(w);
            }
            if !r.allow_other {
                return None;
            }
        }
        if t.request != 0 {
            for &w in &self.resource_workers {
                if self.valid_worker(id, w, false) {
                    let cost = self.workers[&w].load() + self.fetch_time(id, w) + self.resource_wait(id, w);
                    consider(cost, w, &mut best);
                }
            }
            return best.map(|(_, w)| w);
        }
        if let Some(w) = self.unsat.next() {
            return Some(w);
        }
        // Everyone is saturated (or paused).
        self.less_loaded_of_two()
    }

    /// The less loaded of the next two workers in round-robin order that
    /// are not paused.
    fn less_loaded_of_two(&mut self) -> Option<WorkerId> {
        let mut picks = [None, None];
        let mut found = 0;
        for _ in 0..self.all.len() {
            let w = self.all.next()?;
            if !self.workers[&w].paused {
                picks[found] = Some(w);
                found += 1;
                if found == 2 {
                    break;
                }
            }
        }
        let a = picks[0]?;
        let b = picks[1].unwrap_or(a);
        let la = self.workers[&a].load();
        let lb = self.workers[&b].load();
        Some(if lb < la { b } else { a })
    }

    /// The estimated run time of `id` and of the links sent ahead behind
    /// it, which move with it when it is stolen; `None` past
    /// [`STEAL_LINKS`] links (a long chain stays where it runs, and
    /// stealing does not walk it at every turn).
    fn chain_estimate(&self, id: TaskId) -> Option<f64> {
        let mut est = self.tasks[id].est as f64;
        for (n, link) in self.links_ahead(id).enumerate() {
            if n == STEAL_LINKS {
                return None;
            }
            est += self.tasks[link].est as f64;
        }
        Some(est)
    }

    /// Work stealing: moves tasks that have not started (with the links
    /// sent ahead behind them) from workers with more tasks than threads
    /// to workers with idle threads, when the move
    /// pays (the thief finishes it sooner, transfer included) and the
    /// transfer is cheap relative to the compute (`steal_ratio`). Each
    /// steal goes to the least loaded thief, and thieves take tasks until
    /// the estimated loads balance, not one per idle thread, so a backlog
    /// left on one worker spreads within a round. Sends
    /// [`ToWorker::Steal`]; the task moves on the victim's confirmation.
    pub(super) fn balance(&mut self, comm: &mut impl super::Comm) {
        if self.workers.len() < 2 {
            return;
        }
        // Thieves by load (non-negative, so its bits order as it does).
        let mut thieves = BinaryHeap::new();
        let mut victims = Vec::new();
        for &w in &self.all.items {
            let wk = &self.workers[&w];
            let n = wk.processing.len();
            let threads = wk.info.nthreads.max(1) as usize;
            if wk.has_idle_thread() && !wk.paused {
                thieves.push(Reverse((wk.load().to_bits(), w)));
            } else if n > threads {
                victims.push((wk.load(), w, n - threads));
            }
        }
        if thieves.is_empty() || victims.is_empty() {
            return;
        }
        victims.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));
        let ratio = self.config.steal_ratio;
        // Victims from most loaded; each gives to the least loaded thief
        // until none gains from its next task. A pass costs
        // O(workers + steals * log thieves + victims * STEAL_SCAN), plus
        // skipping a victim's tasks already asked for.
        for (mut victim_load, victim, mut spare) in victims {
            while spare > 0 {
                let Some(Reverse((bits, thief))) = thieves.pop() else {
                    return;
                };
                let thief_load = f64::from_bits(bits);
                let thief_threads = self.workers[&thief].info.nthreads.max(1) as f64;
                let vk = &self.workers[&victim];
                let victim_threads = vk.info.nthreads.max(1) as f64;
                let mut chosen = None;
                let not_asked = vk.processing.iter().rev().filter(|id| !self.stealing.contains_key(id));
                for &id in not_asked.take(STEAL_SCAN) {
                    // A link sent ahead waits here for its input.
                    if self.tasks[id].waiting_on > 0 || !self.valid_worker(id, thief, true) {
                        continue;
                    }
                    let Some(est) = self.chain_estimate(id) else {
                        continue;
                    };
                    let transfer = self.fetch_time(id, thief);
                    if transfer > est * ratio {
                        continue;
                    }
                    let after_victim = victim_load - est / victim_threads;
                    let after_thief = thief_load + (est + transfer) / thief_threads;
                    if after_thief < after_victim {
                        chosen = Some((id, est, after_thief));
                        break;
                    }
                }
                let Some((id, est, after_thief)) = chosen else {
                    // Nothing of this victim pays for the least loaded
                    // thief: on to the next victim.
                    thieves.push(Reverse((bits, thief)));
                    break;
                };
                debug_assert_eq!(self.tasks[id].state, TaskState::Processing(victim));
                self.stealing.insert(id, Some(thief));
                self.stats.steal_requests += 1;
                comm.to_worker(victim, ToWorker::Steal { task: id });
                victim_load -= est / victim_threads;
                spare -= 1;
                thieves.push(Reverse((after_thief.to_bits(), thief)));
            }
        }
    }
}
