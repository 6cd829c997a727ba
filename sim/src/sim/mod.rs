//! The simulator: one real scheduler, virtual workers that are the real
//! worker state machine (`crate::worker`), one virtual client (`client`),
//! all on a logical clock, with message latency, fault injection (kill, add
//! and pause workers at chosen or seeded-random moments; crash and restart
//! the scheduler, after which workers register again with the results they
//! kept and the client resubmits its graphs, as the real ones do) and
//! invariant checks. Workers' effects and message delivery are in `effects`; every
//! message crosses the production codec (`crate::wire`).
//!
//! Checks ([`crate::CheckMode`]): after every scheduler event the tasks it touched
//! ([`Scheduler::take_touched`]) are checked against their neighbours
//! (incremental, O(degree) each), and every `full_every` events the whole
//! state is swept ([`Scheduler::check_all`], O(tasks + edges)). Independently
//! of the scheduler's own books, the simulator checks that no message goes to
//! a worker the scheduler was told is dead, that every gathered output has
//! the reference value, and at the end that every output ended in memory or
//! erred for a legitimate reason, that no message was left undelivered, that
//! live workers hold no task, and, once the client released everything,
//! that neither the scheduler nor any worker holds anything.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use weft_runtime::graph::Graph;
use weft_runtime::ids::{ClientId, FxHashMap, Key, TaskId, WorkerId};
use weft_runtime::protocol::{HeldResult, TaskError, ToWorker, WorkerInfo};
use weft_runtime::scheduler::{Command, Config, Event, Scheduler, TaskState};
use weft_runtime::worker::{WorkerCommand, WorkerEvent};

use crate::config::{SimConfig, SimError, SimStats, WorkerSpec};
use crate::reference::Expected;
use crate::rng::Rng;
use crate::wire::{Link, Wire, batch_by_worker};
use crate::worker::{Effect, VWorker, resources};

mod client;
mod effects;

#[derive(Debug)]
enum SimEvent {
    /// The oldest message on a link arrives.
    Deliver(Link),
    /// An op or a fetch a worker started (in this session) has ended.
    Effect(WorkerId, u64, Effect),
    Kill(WorkerId),
    /// The scheduler learns that a killed worker is gone.
    LossDetected(WorkerId),
    /// The client reads an output it holds, from the holders it was told.
    Gather(Key, Vec<WorkerId>),
    KillRandom,
    PauseRandom,
    /// A paused worker has memory again.
    Resume(WorkerId),
    Add(WorkerSpec),
    Balance,
    /// The scheduler crashes and restarts at once; `late` random workers
    /// register again only after the client has resubmitted.
    CrashScheduler {
        late: u32,
    },
    /// A worker registers with the restarted scheduler.
    Rejoin(WorkerId),
    /// The client resubmits what it still waits for.
    Resubmit,
}

/// The simulator. See the module docs.
pub struct Sim {
    /// The scheduler under test.
    pub sched: Scheduler,
    cfg: SimConfig,
    now: u64,
    seq: u64,
    /// Pending events by (time, sequence), pointing into `events`: the heap
    /// moves small entries, the events stay put.
    queue: BinaryHeap<Reverse<(u64, u64, u32)>>,
    events: Vec<Option<SimEvent>>,
    free_events: Vec<u32>,
    workers: Vec<VWorker>,
    /// The scheduler's view: joined and not yet reported lost.
    sched_alive: Vec<bool>,
    n_alive: usize,
    client: ClientId,
    expected: FxHashMap<Key, Expected>,
    outcomes: FxHashMap<Key, Result<u64, TaskError>>,
    /// When the client last gathered each output.
    arrivals: FxHashMap<Key, u64>,
    flaky_runs: FxHashMap<TaskId, u32>,
    /// The graphs the client submitted, for resubmission.
    graphs: Vec<Graph>,
    /// Keys kept by workers that registered before the resubmission after
    /// the last scheduler crash: running one again is a recomputation.
    kept: HashSet<Key>,
    rng: Rng,
    out: Vec<Command>,
    worker_out: Vec<WorkerCommand>,
    wire: Wire,
    touched: Vec<TaskId>,
    marks: Vec<(u64, TaskId)>,
    epoch: u64,
    balance_armed: bool,
    recorded: Vec<Event>,
    /// Counters.
    pub stats: SimStats,
}

impl Sim {
    /// A simulator around a fresh scheduler (touched-task recording is
    /// switched on when incremental checks are).
    pub fn new(mut sched_config: Config, cfg: SimConfig) -> Self {
        sched_config.record_touched = cfg.check.incremental;
        let mut sim = Self {
            sched: Scheduler::new(sched_config),
            rng: Rng::new(cfg.seed ^ 0x5eed),
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free_events: Vec::new(),
            workers: Vec::new(),
            sched_alive: Vec::new(),
            n_alive: 0,
            client: ClientId::new(0),
            expected: FxHashMap::default(),
            outcomes: FxHashMap::default(),
            arrivals: FxHashMap::default(),
            flaky_runs: FxHashMap::default(),
            graphs: Vec::new(),
            kept: Default::default(),
            out: Vec::new(),
            worker_out: Vec::new(),
            wire: Wire::default(),
            touched: Vec::new(),
            marks: Vec::new(),
            epoch: 0,
            balance_armed: false,
            recorded: Vec::new(),
            stats: SimStats::default(),
        };
        let client = sim.client;
        sim.sched_event(Event::ClientConnected { client })
            .expect("fresh scheduler accepts a client");
        sim
    }

    /// Logical time, microseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The events fed to the scheduler so far (with
    /// [`SimConfig::record_events`]).
    pub fn take_recorded(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.recorded)
    }

    /// Results kept across scheduler crashes and claimed by the next
    /// scheduler, over the whole run.
    pub fn reclaimed(&self) -> u64 {
        self.stats.reclaimed + self.sched.stats().reclaimed
    }

    /// Outcomes gathered by the client so far.
    pub fn outcomes(&self) -> &FxHashMap<Key, Result<u64, TaskError>> {
        &self.outcomes
    }

    fn push(&mut self, at: u64, ev: SimEvent) {
        self.seq += 1;
        let idx = match self.free_events.pop() {
            Some(i) => {
                self.events[i as usize] = Some(ev);
                i
            }
            None => {
                self.events.push(Some(ev));
                (self.events.len() - 1) as u32
            }
        };
        self.queue.push(Reverse((at, self.seq, idx)));
    }

    fn err<T>(&self, message: String) -> Result<T, SimError> {
        Err(SimError {
            at_us: self.now,
            events: self.sched.stats().events,
            message,
        })
    }

    /// Adds a worker now.
    pub fn add_worker(&mut self, spec: WorkerSpec) -> Result<WorkerId, SimError> {
        let id = WorkerId::new(self.workers.len() as u32);
        self.workers.push(VWorker::new(&spec));
        self.sched_alive.push(true);
        self.n_alive += 1;
        self.stats.adds += 1;
        self.join(id, Vec::new())?;
        Ok(id)
    }

    /// Worker `w` registers, holding `held` from an earlier scheduler.
    fn join(&mut self, w: WorkerId, held: Vec<HeldResult>) -> Result<(), SimError> {
        let spec = self.workers[w.index()].spec();
        let info = WorkerInfo {
            name: format!("w{w}").into(),
            address: format!("sim://w{w}").into(),
            nthreads: spec.nthreads,
            memory_limit: 0,
            resources: resources(spec),
            dashboard: None,
            held,
        };
        self.sched_alive[w.index()] = true;
        self.sched_event(Event::WorkerJoined { worker: w, info })
    }

    /// Schedules a crash of the scheduler at time `at`: a fresh one takes
    /// its place at once, every connection breaks (messages on the wire
    /// are lost), workers keep the results they made and register again
    /// one latency later (`late` of them, at random, three latencies
    /// later, after the client resubmitted), and the client resubmits what
    /// it still waits for two latencies later.
    pub fn crash_scheduler_at(&mut self, at: u64, late: u32) {
        self.push(at, SimEvent::CrashScheduler { late });
    }

    fn crash_scheduler(&mut self, late: u32) -> Result<(), SimError> {
        self.stats.scheduler_crashes += 1;
        self.stats.reclaimed += self.sched.stats().reclaimed;
        self.sched = Scheduler::new(self.sched.config().clone());
        self.wire.cut();
        self.sched_alive.iter_mut().for_each(|known| *known = false);
        if !self.cfg.release_on_receipt {
            // Held outputs come back through the resubmission.
            self.outcomes.clear();
        }
        let client = self.client;
        self.sched_event(Event::ClientConnected { client })?;
        let mut alive: Vec<usize> = (0..self.workers.len()).filter(|&i| self.workers[i].alive).collect();
        let lat = self.cfg.latency_us.max(1);
        self.kept.clear();
        for n in 0..alive.len() {
            let i = alive.swap_remove(self.rng.below(alive.len() as u64) as usize);
            let held = self.workers[i].orphan();
            let at = if (n as u32) < late {
                self.now + 3 * lat
            } else {
                self.kept.extend(held.into_iter().map(|h| h.key));
                self.now + lat
            };
            self.push(at, SimEvent::Rejoin(WorkerId::new(i as u32)));
        }
        self.push(self.now + 2 * lat, SimEvent::Resubmit);
        Ok(())
    }

    /// Kills a worker now: its store and queue vanish and the scheduler is
    /// told at once. Messages it already sent are still delivered when
    /// `deliver_from_dead` is set.
    pub fn kill_worker(&mut self, w: WorkerId) -> Result<(), SimError> {
        let Some(vw) = self.workers.get_mut(w.index()) else {
            return Ok(());
        };
        if !vw.alive {
            return Ok(());
        }
        vw.kill();
        self.n_alive -= 1;
        self.stats.kills += 1;
        if self.cfg.detect_loss_us > 0 {
            self.push(self.now + self.cfg.detect_loss_us, SimEvent::LossDetected(w));
            return Ok(());
        }
        self.loss_detected(w)
    }

    fn loss_detected(&mut self, w: WorkerId) -> Result<(), SimError> {
        self.sched_alive[w.index()] = false;
        self.sched_event(Event::WorkerLost { worker: w })
    }

    /// Schedules a kill of `w` at time `at`.
    pub fn kill_at(&mut self, at: u64, w: WorkerId) {
        self.push(at, SimEvent::Kill(w));
    }

    /// Schedules a kill of a random live worker at time `at` (skipped if it
    /// would leave no worker).
    pub fn kill_random_at(&mut self, at: u64) {
        self.push(at, SimEvent::KillRandom);
    }

    /// Schedules a random live worker to pause at time `at`, as when its
    /// memory is short, for [`SimConfig::pause_us`]: it tells the scheduler,
    /// finishes the ops it runs and starts no others until it resumes.
    pub fn pause_random_at(&mut self, at: u64) {
        self.push(at, SimEvent::PauseRandom);
    }

    /// Schedules a new worker at time `at`.
    pub fn add_at(&mut self, at: u64, spec: WorkerSpec) {
        self.push(at, SimEvent::Add(spec));
    }

    /// Feeds the scheduler one event, routes its output and checks.
    fn sched_event(&mut self, event: Event) -> Result<(), SimError> {
        let mut out = std::mem::take(&mut self.out);
        if self.cfg.record_events {
            self.recorded.push(event.clone());
        }
        self.sched.handle(event, &mut out);
        let r = self.route(&mut out);
        out.clear();
        self.out = out;
        r?;
        if self.cfg.check.incremental {
            let mut touched = std::mem::take(&mut self.touched);
            touched.clear();
            self.sched.take_touched(&mut touched);
            // Dedup by slot with an epoch mark (cheaper than sorting).
            self.epoch += 1;
            let epoch = self.epoch;
            let marks = &mut self.marks;
            touched.retain(|id| {
                let slot = id.slot() as usize;
                if marks.len() <= slot {
                    marks.resize(slot + 1, (0, TaskId::default()));
                }
                let m = &mut marks[slot];
                if m.0 == epoch && m.1 == *id {
                    false
                } else {
                    *m = (epoch, *id);
                    true
                }
            });
            self.stats.task_checks += touched.len() as u64;
            let r = self.sched.check_tasks(&touched);
            self.touched = touched;
            if let Err(e) = r {
                return self.err(e.to_string());
            }
        }
        let every = self.cfg.check.full_every;
        if every > 0 && self.sched.stats().events.is_multiple_of(every) {
            self.full_check()?;
        }
        Ok(())
    }

    /// Sweeps all scheduler invariants now.
    pub fn full_check(&mut self) -> Result<(), SimError> {
        self.stats.full_checks += 1;
        if let Err(e) = self.sched.check_all() {
            return self.err(e.to_string());
        }
        Ok(())
    }

    fn route(&mut self, out: &mut Vec<Command>) -> Result<(), SimError> {
        let lat = self.cfg.latency_us;
        let cancelled: Vec<(WorkerId, TaskId)> = out
            .iter()
            .filter_map(|c| match c {
                Command::ToWorker(w, ToWorker::Cancel { task }) => Some((*w, *task)),
                _ => None,
            })
            .collect();
        let (mut to_workers, mut to_client) = (Vec::new(), Vec::new());
        for cmd in out.drain(..) {
            match cmd {
                Command::ToWorker(w, msg) => {
                    let known = self.sched_alive.get(w.index()).copied().unwrap_or(false);
                    if !known && !matches!(msg, ToWorker::Rejected { .. }) {
                        return self.err(format!("scheduler sent {msg:?} to dead worker {w}"));
                    }
                    if let ToWorker::Compute(req) = &msg {
                        match self.sched.state_of(req.task) {
                            TaskState::Processing(p) if p == w => {}
                            // Placed and taken back within one event.
                            _ if cancelled.contains(&(w, req.task)) => {}
                            s => {
                                return self.err(format!("compute of {} sent to {w} while {s:?}", req.key));
                            }
                        }
                    }
                    to_workers.push((w, msg));
                }
                Command::ToClient(_, msg) => to_client.push(msg),
            }
        }
        for (w, batch) in batch_by_worker(to_workers) {
            self.wire.post_down(w, &batch).or_else(|e| self.err(e))?;
            self.push(self.now + lat, SimEvent::Deliver(Link::Down(w)));
        }
        if !to_client.is_empty() {
            let batch = self.wire.round_trip_client_down(&to_client).or_else(|e| self.err(e))?;
            for msg in batch {
                self.client_receive(msg)?;
            }
        }
        Ok(())
    }

    /// Runs until nothing is left to do, checking as configured; then checks
    /// the outcome of every output.
    pub fn run(&mut self) -> Result<(), SimError> {
        self.run_until(u64::MAX)?;
        self.finish_checks()
    }

    /// Runs the events up to time `until` (checking as configured), then
    /// sets the clock there.
    pub fn run_until(&mut self, until: u64) -> Result<(), SimError> {
        if self.cfg.balance_every_us > 0 && !self.balance_armed {
            self.balance_armed = true;
            self.push(self.now + self.cfg.balance_every_us, SimEvent::Balance);
        }
        while let Some(&Reverse((at, _, idx))) = self.queue.peek()
            && at <= until
        {
            self.queue.pop();
            self.now = at;
            self.stats.sim_events += 1;
            let ev = self.events[idx as usize]
                .take()
                .expect("internal error: queued event present");
            self.free_events.push(idx);
            match ev {
                SimEvent::Deliver(link) => self.deliver(link)?,
                SimEvent::Effect(w, session, effect) => {
                    let vw = &mut self.workers[w.index()];
                    if vw.alive && vw.session == session {
                        let event = vw.complete(effect);
                        self.worker_event(w, event)?;
                    }
                }
                SimEvent::Kill(w) => self.kill_worker(w)?,
                SimEvent::LossDetected(w) => self.loss_detected(w)?,
                SimEvent::Gather(key, holders) => {
                    // Read again later: only while it is still held.
                    if self.outcomes.get(&key).is_some_and(Result::is_ok) {
                        self.gather(key, &holders, false)?;
                    }
                }
                SimEvent::KillRandom => {
                    if self.n_alive > 1 {
                        let alive: Vec<usize> = (0..self.workers.len()).filter(|&i| self.workers[i].alive).collect();
                        let i = alive[self.rng.below(alive.len() as u64) as usize];
                        self.kill_worker(WorkerId::new(i as u32))?;
                    }
                }
                SimEvent::PauseRandom => {
                    let running: Vec<usize> = (0..self.workers.len())
                        .filter(|&i| self.workers[i].alive && !self.workers[i].state.paused())
                        .collect();
                    if !running.is_empty() {
                        let w = WorkerId::new(running[self.rng.below(running.len() as u64) as usize] as u32);
                        self.worker_event(w, WorkerEvent::Paused(true))?;
                        self.push(self.now + self.cfg.pause_us, SimEvent::Resume(w));
                    }
                }
                SimEvent::Resume(w) => {
                    if self.workers[w.index()].alive {
                        self.worker_event(w, WorkerEvent::Paused(false))?;
                    }
                }
                SimEvent::Add(spec) => {
                    self.add_worker(spec)?;
                }
                SimEvent::CrashScheduler { late } => self.crash_scheduler(late)?,
                SimEvent::Rejoin(w) => {
                    let vw = &self.workers[w.index()];
                    if vw.alive {
                        let held = vw.held();
                        self.join(w, held)?;
                    }
                }
                SimEvent::Resubmit => self.resubmit()?,
                SimEvent::Balance => {
                    self.sched_event(Event::Balance)?;
                    if !self.queue.is_empty() {
                        self.push(self.now + self.cfg.balance_every_us, SimEvent::Balance);
                    } else {
                        self.balance_armed = false;
                    }
                }
            }
        }
        if until != u64::MAX {
            self.now = self.now.max(until);
        }
        Ok(())
    }

    fn finish_checks(&mut self) -> Result<(), SimError> {
        self.full_check()?;
        let mut missing = 0;
        let mut example = None;
        for key in self.expected.keys() {
            if !self.outcomes.contains_key(key) {
                missing += 1;
                example.get_or_insert_with(|| self.sched.explain(key));
            }
        }
        if missing > 0 {
            return self.err(format!(
                "{missing} outputs never finished (e.g. {example:?}); {} workers alive",
                self.n_alive
            ));
        }
        // Outputs the client still holds are in memory on a live worker.
        if !self.cfg.release_on_receipt {
            for (key, outcome) in &self.outcomes {
                let Ok(value) = outcome else { continue };
                let held = self.sched.who_has(key).iter().any(|w| {
                    let vw = &self.workers[w.index()];
                    let stored = self.sched.task_id(key).and_then(|id| vw.store.get(&id));
                    vw.alive && stored.map(|s| s.value) == Some(*value)
                });
                if !held {
                    return self.err(format!("{key} is held by the client but by no live worker"));
                }
            }
        }
        // Nothing may be left half done: every task that was needed ended in
        // memory or erred (and was then released, or kept as lineage).
        let stuck = self.sched.count_active();
        if stuck != 0 {
            return self.err(format!("{stuck} tasks still waiting, queued or processing"));
        }
        if self.cfg.release_on_receipt {
            if self.sched.n_tasks() != 0 {
                return self.err(format!(
                    "client released everything but the scheduler still holds {} tasks",
                    self.sched.n_tasks()
                ));
            }
            let held: usize = self.workers.iter().map(|w| w.store.len() + w.state.n_results()).sum();
            if held != 0 {
                let example = self.workers.iter().enumerate().find_map(|(i, w)| {
                    let task = w.store.keys().next()?;
                    Some(format!("w{i} holds {task:?}, {:?}", self.sched.key_of(*task)))
                });
                return self.err(format!("workers still hold {held} results after release ({example:?})"));
            }
        }
        self.workers_idle()?;
        let (left, link) = self.wire.leftover();
        if left != 0 {
            return self.err(format!("{left} messages never consumed (first on {link:?})"));
        }
        Ok(())
    }

    /// Live workers end with no task and a store that matches their
    /// state's books.
    fn workers_idle(&self) -> Result<(), SimError> {
        for (i, vw) in self.workers.iter().enumerate().filter(|(_, w)| w.alive) {
            let (tasks, running) = (vw.state.n_tasks(), vw.state.running());
            if tasks != 0 || running != 0 {
                return self.err(format!("w{i} still has {tasks} tasks, {running} running"));
            }
            if vw.store.len() != vw.state.n_results() {
                let (store, books) = (vw.store.len(), vw.state.n_results());
                return self.err(format!("w{i} stores {store} results but its state counts {books}"));
            }
        }
        Ok(())
    }
}
