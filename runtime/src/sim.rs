//! A simulator for the scheduler: virtual workers on a logical clock, one
//! virtual client, message latency, fault injection (kill, add, pause and
//! resume workers at chosen or seeded-random moments) and invariant checks.
//!
//! Virtual workers run the sim ops below for real on `u64` values, so the
//! outputs can be checked against a reference evaluation of the graph:
//!
//! - args are 16 bytes: `seed: u64`, `duration_us: u32`, `nbytes: u32`;
//! - a task's value is `mix(seed ^ fold(inputs))` (see [`value_of`]);
//! - op `fail` always fails, `flaky` fails on its first run only, `crash`
//!   kills the worker that starts it; any other op name computes the value.
//!
//! Checks ([`CheckMode`]): after every scheduler event the tasks it touched
//! ([`Scheduler::take_touched`]) are checked against their neighbours
//! (incremental, O(degree) each), and every `full_every` events the whole
//! state is swept ([`Scheduler::check_all`], O(tasks + edges)). Independently
//! of the scheduler's own books, the simulator checks that no message goes to
//! a worker the scheduler was told is dead, that every gathered output has
//! the reference value, and at the end that every output ended in memory or
//! erred for a legitimate reason and, once the client released everything,
//! that neither the scheduler nor any worker holds anything.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bytes::Bytes;

use crate::graph::{Annotations, Graph, TaskSpec};
use crate::ids::{ClientId, FxHashMap, Key, SharedStr, TaskId, WorkerId};
use crate::protocol::Tier;
use crate::protocol::{
    ComputeRequest, FromClient, FromWorker, Priority, ResourceAmount, TaskError, ToClient, ToWorker, WorkerInfo,
};
use crate::scheduler::{Command, Config, Event, Scheduler, TaskState};

/// The splitmix64 finalizer: the sim's value mixer.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The value a sim task computes from its seed and its inputs' values.
pub fn value_of(seed: u64, inputs: impl IntoIterator<Item = u64>) -> u64 {
    let mut acc = seed;
    for (i, v) in inputs.into_iter().enumerate() {
        acc = mix(acc ^ v.wrapping_add(i as u64));
    }
    mix(acc)
}

/// Sim task arguments.
pub fn sim_args(seed: u64, duration_us: u32, nbytes: u32) -> Bytes {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&seed.to_le_bytes());
    b.extend_from_slice(&duration_us.to_le_bytes());
    b.extend_from_slice(&nbytes.to_le_bytes());
    Bytes::from(b)
}

fn parse_args(args: &[u8]) -> Option<(u64, u32, u32)> {
    let seed = u64::from_le_bytes(args.get(0..8)?.try_into().ok()?);
    let dur = u32::from_le_bytes(args.get(8..12)?.try_into().ok()?);
    let nbytes = u32::from_le_bytes(args.get(12..16)?.try_into().ok()?);
    Some((seed, dur, nbytes))
}

/// A small seeded generator (splitmix64), so the crate needs no RNG
/// dependency and runs are reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }
}

/// What an output should end as, from a reference evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// In memory with this value.
    Value(u64),
    /// Erred, because a `fail` task is in its lineage.
    Error,
}

/// A graph plus the reference outcome of each output.
#[derive(Clone, Debug, Default)]
pub struct SimGraph {
    /// The graph to submit.
    pub graph: Graph,
    /// Reference outcome per output key.
    pub expected: FxHashMap<Key, Expected>,
}

/// A task added to a [`GraphBuilder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node(u32);

/// Incrementally builds a [`SimGraph`] in topological order, evaluating the
/// reference as it goes.
#[derive(Default)]
pub struct GraphBuilder {
    g: SimGraph,
    /// Reference outcome per node (`None` = erred).
    values: Vec<Option<u64>>,
}

impl GraphBuilder {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    // The arguments are the sim's task fields one for one; a struct would
    // only rename them.
    #[allow(clippy::too_many_arguments)]
    /// Adds a task whose inputs were added before.
    pub fn task(
        &mut self,
        key: impl Into<Key>,
        op: &str,
        seed: u64,
        duration_us: u32,
        nbytes: u32,
        deps: &[Node],
        annotations: Annotations,
    ) -> Node {
        let mut inputs = Vec::with_capacity(deps.len());
        let mut ok = true;
        for d in deps {
            match self.values[d.0 as usize] {
                Some(v) => inputs.push(v),
                None => ok = false,
            }
        }
        let value = (ok && op != "fail").then(|| value_of(seed, inputs));
        self.values.push(value);
        let tasks = &self.g.graph.tasks;
        let deps = deps.iter().map(|d| tasks[d.0 as usize].key.clone()).collect();
        self.g.graph.tasks.push(TaskSpec {
            key: key.into(),
            op: op.into(),
            args: sim_args(seed, duration_us, nbytes),
            deps,
            annotations,
        });
        Node((self.values.len() - 1) as u32)
    }

    /// Marks a node as an output.
    pub fn output(&mut self, node: Node) {
        let v = self.values[node.0 as usize];
        let key = self.g.graph.tasks[node.0 as usize].key.clone();
        self.g.graph.outputs.push(key.clone());
        self.g.expected.insert(key, v.map_or(Expected::Error, Expected::Value));
    }

    /// True when the reference says the node computes (no failing task in
    /// its lineage).
    pub fn computes(&self, node: Node) -> bool {
        self.values[node.0 as usize].is_some()
    }

    /// Tasks added so far.
    pub fn len(&self) -> usize {
        self.g.graph.tasks.len()
    }

    /// True when no task was added.
    pub fn is_empty(&self) -> bool {
        self.g.graph.tasks.is_empty()
    }

    /// The graph.
    pub fn finish(self) -> SimGraph {
        self.g
    }
}

/// Mix of shapes and annotations for [`random_graph`].
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Stop adding shapes once this many tasks exist.
    pub target_tasks: usize,
    /// Seed.
    pub seed: u64,
    /// Fraction of tasks that always fail.
    pub fail_fraction: f64,
    /// Fraction of tasks that fail once and have one retry.
    pub flaky_fraction: f64,
    /// Fraction of tasks whose op kills the worker that runs it (they end
    /// in a KilledWorkers error, and take some bystanders with them).
    pub crash_fraction: f64,
    /// Fraction of tasks that need `gpu = 1`.
    pub gpu_fraction: f64,
    /// Fraction of tasks restricted to a named worker (with
    /// allow_other_workers, since named workers may die).
    pub restrict_fraction: f64,
    /// Names usable in restrictions.
    pub worker_names: Vec<SharedStr>,
}

impl GenConfig {
    /// A mix with a little of everything.
    pub fn new(target_tasks: usize, seed: u64) -> Self {
        Self {
            target_tasks,
            seed,
            fail_fraction: 0.0005,
            flaky_fraction: 0.002,
            crash_fraction: 0.0,
            gpu_fraction: 0.002,
            restrict_fraction: 0.001,
            worker_names: Vec::new(),
        }
    }
}

/// A random DAG of maps, tree reductions, all-to-all shuffles and chains;
/// some shapes start from outputs of earlier ones.
pub fn random_graph(cfg: &GenConfig) -> SimGraph {
    let mut rng = Rng::new(cfg.seed);
    let mut b = GraphBuilder::new();
    // Keys a later shape may take as inputs.
    let mut pool: Vec<Node> = Vec::new();
    let mut comp = 0u64;
    while b.len() < cfg.target_tasks {
        comp += 1;
        let left = cfg.target_tasks - b.len();
        let ann = |rng: &mut Rng| {
            let mut a = Annotations::default();
            let op = if rng.chance(cfg.fail_fraction) {
                "fail"
            } else if rng.chance(cfg.crash_fraction) {
                "crash"
            } else if rng.chance(cfg.flaky_fraction) {
                a.retries = 1;
                "flaky"
            } else {
                "f"
            };
            if rng.chance(cfg.gpu_fraction) {
                a.resources.push(ResourceAmount {
                    name: "gpu".into(),
                    amount: 1,
                });
            }
            if !cfg.worker_names.is_empty() && rng.chance(cfg.restrict_fraction) {
                let n = cfg.worker_names[rng.below(cfg.worker_names.len() as u64) as usize].clone();
                a.workers.push(n);
                a.allow_other_workers = true;
            }
            if rng.chance(0.01) {
                a.priority = rng.range(0, 3) as i32;
            }
            (op, a)
        };
        let source = |rng: &mut Rng, pool: &Vec<Node>| -> Vec<Node> {
            if !pool.is_empty() && rng.chance(0.3) {
                vec![pool[rng.below(pool.len() as u64) as usize]]
            } else {
                Vec::new()
            }
        };
        let dur = |rng: &mut Rng| rng.range(200, 5_000) as u32;
        let size = |rng: &mut Rng| rng.range(8, 1 << 20) as u32;
        match rng.below(4) {
            0 => {
                // map
                let n = rng.range(10, 2_000).min(left.div_ceil(2) as u64 + 1);
                for i in 0..n {
                    let deps = source(&mut rng, &pool);
                    let (d, s) = (dur(&mut rng), size(&mut rng));
                    let x = b.task(
                        format!("src{comp}-{i}"),
                        "f",
                        rng.next_u64(),
                        d,
                        s,
                        &deps,
                        Annotations::default(),
                    );
                    let (op, a) = ann(&mut rng);
                    let (d, s) = (dur(&mut rng), size(&mut rng));
                    let y = b.task(format!("map{comp}-{i}"), op, rng.next_u64(), d, s, &[x], a);
                    b.output(y);
                    if rng.chance(0.05) && b.computes(y) {
                        pool.push(y);
                    }
                }
            }
            1 => {
                // tree reduction
                let leaves = rng.range(2, 4_096).min(left as u64 / 2 + 2);
                let fanin = rng.range(2, 8) as usize;
                let mut level: Vec<Node> = Vec::new();
                for i in 0..leaves {
                    let deps = source(&mut rng, &pool);
                    let (d, s) = (dur(&mut rng), size(&mut rng));
                    level.push(b.task(
                        format!("leaf{comp}-{i}"),
                        "f",
                        rng.next_u64(),
                        d,
                        s,
                        &deps,
                        Annotations::default(),
                    ));
                }
                let mut depth = 0;
                while level.len() > 1 {
                    depth += 1;
                    let mut next = Vec::new();
                    for (i, group) in level.chunks(fanin).enumerate() {
                        let (op, a) = ann(&mut rng);
                        let (d, s) = (dur(&mut rng), size(&mut rng));
                        next.push(b.task(format!("red{comp}-{depth}-{i}"), op, rng.next_u64(), d, s, group, a));
                    }
                    level = next;
                }
                b.output(level[0]);
                if b.computes(level[0]) {
                    pool.push(level[0]);
                }
            }
            2 => {
                // shuffle-like all-to-all
                let n = rng.range(2, 48);
                let inputs: Vec<Node> = (0..n)
                    .map(|i| {
                        let deps = source(&mut rng, &pool);
                        let (d, s) = (dur(&mut rng), size(&mut rng));
                        b.task(
                            format!("sin{comp}-{i}"),
                            "f",
                            rng.next_u64(),
                            d,
                            s,
                            &deps,
                            Annotations::default(),
                        )
                    })
                    .collect();
                for j in 0..n {
                    let (op, a) = ann(&mut rng);
                    let (d, s) = (dur(&mut rng), size(&mut rng) / 16 + 8);
                    let y = b.task(format!("sout{comp}-{j}"), op, rng.next_u64(), d, s, &inputs, a);
                    b.output(y);
                    if rng.chance(0.1) && b.computes(y) {
                        pool.push(y);
                    }
                }
            }
            _ => {
                // chains
                let chains = rng.range(1, 50);
                let len = rng.range(2, 200);
                for c in 0..chains {
                    let mut prev = source(&mut rng, &pool);
                    let mut last = None;
                    for i in 0..len {
                        let (op, a) = ann(&mut rng);
                        let (d, s) = (dur(&mut rng), size(&mut rng));
                        let k = b.task(format!("chain{comp}-{c}-{i}"), op, rng.next_u64(), d, s, &prev, a);
                        prev = vec![k];
                        last = Some(k);
                    }
                    if let Some(k) = last {
                        b.output(k);
                        if b.computes(k) {
                            pool.push(k);
                        }
                    }
                }
            }
        }
        if pool.len() > 1_000 {
            pool.drain(..500);
        }
    }
    b.finish()
}

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
    /// Period of [`Event::Balance`], microseconds (0: never).
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

#[derive(Debug)]
enum SimEvent {
    ToWorker(WorkerId, ToWorker),
    ToScheduler(WorkerId, FromWorker),
    FromClient(FromClient),
    Done {
        worker: WorkerId,
        task: TaskId,
        token: u64,
    },
    Kill(WorkerId),
    /// The scheduler learns that a killed worker is gone.
    LossDetected(WorkerId),
    /// The client reads an output it holds, from the holders it was told.
    Gather(Key, Vec<WorkerId>),
    KillRandom,
    TogglePauseRandom,
    Add(WorkerSpec),
    Balance,
}

struct Pending {
    req: Box<ComputeRequest>,
    /// Set while running: the token of its `Done` event.
    running: Option<u64>,
    /// Inputs still being computed on this worker (a chain link sent
    /// ahead); the task is ready when this is zero.
    local_inputs: u32,
}

struct VWorker {
    alive: bool,
    paused: bool,
    free_threads: u32,
    gpus: u32,
    free_gpus: u32,
    pending: FxHashMap<TaskId, Pending>,
    ready: BinaryHeap<Reverse<(Priority, TaskId)>>,
    store: FxHashMap<TaskId, u64>,
    /// Tasks waiting for a task pending here, by that task.
    local_waiters: FxHashMap<TaskId, Vec<TaskId>>,
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
    flaky_runs: FxHashMap<TaskId, u32>,
    rng: Rng,
    out: Vec<Command>,
    touched: Vec<TaskId>,
    marks: Vec<(u64, TaskId)>,
    epoch: u64,
    token: u64,
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
            flaky_runs: FxHashMap::default(),
            out: Vec::new(),
            touched: Vec::new(),
            marks: Vec::new(),
            epoch: 0,
            token: 0,
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
        self.workers.push(VWorker {
            alive: true,
            paused: false,
            free_threads: spec.nthreads,
            gpus: spec.gpus,
            free_gpus: spec.gpus,
            pending: FxHashMap::default(),
            local_waiters: FxHashMap::default(),
            ready: BinaryHeap::new(),
            store: FxHashMap::default(),
        });
        self.sched_alive.push(true);
        self.n_alive += 1;
        self.stats.adds += 1;
        let mut resources = Vec::new();
        if spec.gpus > 0 {
            resources.push(ResourceAmount {
                name: "gpu".into(),
                amount: spec.gpus,
            });
        }
        let info = WorkerInfo {
            name: format!("w{id}").into(),
            address: format!("sim://w{id}").into(),
            nthreads: spec.nthreads,
            memory_limit: 0,
            resources,
        };
        self.sched_event(Event::WorkerJoined { worker: id, info })?;
        Ok(id)
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
        vw.alive = false;
        vw.pending.clear();
        vw.ready.clear();
        vw.store.clear();
        vw.local_waiters.clear();
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

    /// Schedules a random live worker to pause, or resume if paused, at
    /// time `at` (it tells the scheduler like a real worker would; it keeps
    /// running the tasks it has).
    pub fn toggle_pause_random_at(&mut self, at: u64) {
        self.push(at, SimEvent::TogglePauseRandom);
    }

    /// Schedules a new worker at time `at`.
    pub fn add_at(&mut self, at: u64, spec: WorkerSpec) {
        self.push(at, SimEvent::Add(spec));
    }

    /// Submits a graph from the client now.
    pub fn submit(&mut self, g: SimGraph) -> Result<(), SimError> {
        self.expected.extend(g.expected);
        self.sched_event(Event::Client {
            client: self.client,
            msg: FromClient::SubmitGraph(g.graph),
        })
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
                    self.push(self.now + lat, SimEvent::ToWorker(w, msg));
                }
                Command::ToClient(_, msg) => self.client_receive(msg)?,
            }
        }
        Ok(())
    }

    fn client_receive(&mut self, msg: ToClient) -> Result<(), SimError> {
        match msg {
            ToClient::GraphAccepted { .. } => {}
            ToClient::GraphRejected { reason } => {
                return self.err(format!("graph rejected: {reason}"));
            }
            ToClient::ScatterRejected { reason, .. } => {
                return self.err(format!("scatter rejected: {reason}"));
            }
            // Answers to queries the virtual client never makes.
            ToClient::Workers { .. } | ToClient::WhoHas { .. } => {}
            // Gathered before, now being recomputed: wanted again (unless
            // the client released it already, its release in flight).
            ToClient::Lost { key } => {
                if !self.cfg.release_on_receipt {
                    self.outcomes.remove(&key);
                    self.stats.outputs_lost += 1;
                }
            }
            ToClient::InMemory { key, who_has, .. } => {
                let holders: Vec<WorkerId> = who_has.iter().map(|p| p.worker).collect();
                self.gather(key, &holders, true)?;
            }
            ToClient::Erred { key, error } => {
                match (self.expected.get(&key), error.root_cause()) {
                    (Some(Expected::Error), TaskError::OpFailed { error, .. })
                        if error.to_string() == "sim op fail failed" =>
                    {
                        self.stats.outputs_erred += 1
                    }
                    (Some(_), TaskError::KilledWorkers { .. }) => self.stats.outputs_killed += 1,
                    (e, _) => {
                        return self.err(format!("{key} erred ({error}) but expected {e:?}"));
                    }
                }
                self.outcomes.insert(key.clone(), Err(error));
                if self.cfg.release_on_receipt {
                    self.push(
                        self.now + self.cfg.latency_us,
                        SimEvent::FromClient(FromClient::Release { keys: vec![key] }),
                    );
                }
            }
        }
        Ok(())
    }

    /// The client reads `key` from `holders`: a live one that has it gives
    /// the value, checked against the reference (`reported`: on an
    /// `InMemory`, counted, released or read again later); with none, the
    /// client reports missing data, as the real one does, and waits.
    fn gather(&mut self, key: Key, holders: &[WorkerId], reported: bool) -> Result<(), SimError> {
        let Some(id) = self.sched.task_id(&key) else {
            return self.err(format!("{key} reported in memory but unknown"));
        };
        let value = holders.iter().find_map(|w| {
            let vw = &self.workers[w.index()];
            if vw.alive { vw.store.get(&id).copied() } else { None }
        });
        let Some(value) = value else {
            self.stats.outputs_missing += 1;
            self.outcomes.remove(&key);
            let keys = vec![(key, holders.to_vec())];
            self.push(
                self.now + self.cfg.latency_us,
                SimEvent::FromClient(FromClient::MissingData { keys }),
            );
            return Ok(());
        };
        match self.expected.get(&key) {
            Some(Expected::Value(v)) if *v == value => {}
            e => return self.err(format!("{key}: gathered {value:#x}, expected {e:?}")),
        }
        if !reported {
            return Ok(());
        }
        self.stats.outputs_ok += 1;
        self.outcomes.insert(key.clone(), Ok(value));
        if self.cfg.release_on_receipt {
            let release = FromClient::Release { keys: vec![key] };
            self.push(self.now + self.cfg.latency_us, SimEvent::FromClient(release));
        } else {
            let later = self.now + self.rng.range(1, 50) * self.cfg.latency_us.max(1);
            self.push(later, SimEvent::Gather(key, holders.to_vec()));
        }
        Ok(())
    }

    fn send_to_sched(&mut self, w: WorkerId, msg: FromWorker) {
        self.push(self.now + self.cfg.latency_us, SimEvent::ToScheduler(w, msg));
    }

    fn worker_receive(&mut self, w: WorkerId, msg: ToWorker) -> Result<(), SimError> {
        let vw = &mut self.workers[w.index()];
        if !vw.alive {
            return Ok(()); // the connection is gone
        }
        match msg {
            ToWorker::Registered { .. } | ToWorker::Rejected { .. } => {}
            ToWorker::Compute(req) => {
                let id = req.task;
                if vw.pending.contains_key(&id) {
                    return self.err(format!("{} sent twice to {w}", req.key));
                }
                if vw.store.contains_key(&id) {
                    // Computed here before (then cancelled, then wanted
                    // again): the result is at hand.
                    let (_, dur, nbytes) = parse_args(&req.args).unwrap_or_default();
                    self.send_to_sched(
                        w,
                        FromWorker::Finished {
                            task: id,
                            nbytes: nbytes as u64,
                            compute_us: dur as u64,
                            tier: Tier::Host,
                        },
                    );
                    return Ok(());
                }
                let mut local_inputs = 0;
                for dep in &req.deps {
                    if !vw.store.contains_key(&dep.task) && vw.pending.contains_key(&dep.task) {
                        local_inputs += 1;
                        vw.local_waiters.entry(dep.task).or_default().push(id);
                    }
                }
                if local_inputs == 0 {
                    vw.ready.push(Reverse((req.priority, id)));
                }
                vw.pending.insert(
                    id,
                    Pending {
                        req,
                        running: None,
                        local_inputs,
                    },
                );
                self.try_start(w)?;
            }
            ToWorker::Free { task } => {
                vw.store.remove(&task);
            }
            ToWorker::Adopt { task, nbytes, .. } => {
                // A virtual client's scatter: the value is there already.
                vw.store.insert(task, nbytes);
            }
            ToWorker::Cancel { task } => {
                // A running task's result is discarded when it ends; tasks
                // that waited on it here are cancelled too.
                vw.local_waiters.remove(&task);
                if let Some(p) = vw.pending.remove(&task)
                    && p.running.is_some()
                {
                    vw.free_threads += 1;
                    vw.free_gpus += gpus_of(&p.req);
                    self.try_start(w)?;
                }
            }
            ToWorker::Steal { task } => {
                let stolen = match vw.pending.get(&task) {
                    Some(p) if p.running.is_none() => {
                        vw.pending.remove(&task);
                        true
                    }
                    _ => false,
                };
                self.send_to_sched(w, FromWorker::StealResponse { task, stolen });
            }
        }
        Ok(())
    }

    fn try_start(&mut self, w: WorkerId) -> Result<(), SimError> {
        let mut blocked = Vec::new();
        loop {
            let vw = &mut self.workers[w.index()];
            if !vw.alive || vw.free_threads == 0 {
                break;
            }
            let Some(Reverse((prio, id))) = vw.ready.pop() else {
                break;
            };
            let Some(p) = vw.pending.get(&id) else {
                continue; // cancelled or stolen
            };
            if p.running.is_some() {
                continue;
            }
            let gpus = gpus_of(&p.req);
            if gpus > vw.gpus {
                let msg = format!("{} (gpu={gpus}) placed on {w} with {} gpus", p.req.key, vw.gpus);
                return self.err(msg);
            }
            if gpus > vw.free_gpus {
                blocked.push(Reverse((prio, id)));
                continue;
            }
            self.start(w, id)?;
        }
        let vw = &mut self.workers[w.index()];
        vw.ready.extend(blocked);
        Ok(())
    }

    /// Fetches inputs and starts a task (or reports missing data).
    fn start(&mut self, w: WorkerId, id: TaskId) -> Result<(), SimError> {
        self.stats.runs += 1;
        // Taken out while its inputs are fetched, put back when it runs.
        let Some(mut p) = self.workers[w.index()].pending.remove(&id) else {
            return Ok(());
        };
        let req = &p.req;
        let mut fetched = 0u64;
        for dep in &req.deps {
            if self.workers[w.index()].store.contains_key(&dep.task) {
                continue;
            }
            let found = dep.who_has.iter().find_map(|p| {
                let pw = &self.workers[p.worker.index()];
                if pw.alive {
                    pw.store.get(&dep.task).copied()
                } else {
                    None
                }
            });
            match found {
                Some(v) => {
                    fetched += dep.nbytes;
                    self.workers[w.index()].store.insert(dep.task, v);
                    self.send_to_sched(
                        w,
                        FromWorker::Acquired {
                            task: dep.task,
                            nbytes: dep.nbytes,
                        },
                    );
                }
                None => {
                    let tried = dep.who_has.iter().map(|p| p.worker).collect();
                    self.send_to_sched(
                        w,
                        FromWorker::MissingData {
                            task: id,
                            dep: dep.task,
                            tried,
                        },
                    );
                    return Ok(());
                }
            }
        }
        let Some((_, dur, _)) = parse_args(&req.args) else {
            return self.err(format!("{}: bad sim args", req.key));
        };
        if req.op.as_str() == "crash" {
            self.stats.crashes += 1;
            self.push(self.now, SimEvent::Kill(w));
        }
        let jitter = self.rng.range(0, dur as u64 / 4 + 1);
        let at = self.now + dur as u64 + jitter + fetched / self.cfg.bytes_per_us.max(1);
        self.token += 1;
        let token = self.token;
        let vw = &mut self.workers[w.index()];
        vw.free_threads -= 1;
        vw.free_gpus -= gpus_of(req);
        p.running = Some(token);
        vw.pending.insert(id, p);
        self.push(
            at,
            SimEvent::Done {
                worker: w,
                task: id,
                token,
            },
        );
        Ok(())
    }

    fn done(&mut self, w: WorkerId, id: TaskId, token: u64) -> Result<(), SimError> {
        let vw = &mut self.workers[w.index()];
        if !vw.alive {
            return Ok(());
        }
        let Some(p) = vw.pending.get(&id) else {
            return Ok(()); // cancelled
        };
        if p.running != Some(token) {
            return Ok(());
        }
        let p = vw.pending.remove(&id).expect("checked above");
        vw.free_threads += 1;
        vw.free_gpus += gpus_of(&p.req);
        let (seed, dur, nbytes) = parse_args(&p.req.args).unwrap_or_default();
        let fail = match p.req.op.as_str() {
            "fail" => true,
            "flaky" => {
                let runs = self.flaky_runs.entry(id).or_default();
                *runs += 1;
                *runs == 1
            }
            _ => false,
        };
        let msg = if fail {
            // The scheduler cancels what waited on it here.
            vw.local_waiters.remove(&id);
            FromWorker::Failed {
                task: id,
                error: format!("sim op {} failed", p.req.op).into(),
            }
        } else {
            // Inputs are in the store (fetched at start, and the scheduler
            // keeps them while this task needs them).
            let mut inputs = Vec::with_capacity(p.req.deps.len());
            for d in &p.req.deps {
                match vw.store.get(&d.task) {
                    Some(&v) => inputs.push(v),
                    None => {
                        return self.err(format!("{}: input {:?} freed while running", p.req.key, d.task));
                    }
                }
            }
            let vw = &mut self.workers[w.index()];
            vw.store.insert(id, value_of(seed, inputs));
            for waiter in vw.local_waiters.remove(&id).unwrap_or_default() {
                if let Some(p) = vw.pending.get_mut(&waiter) {
                    p.local_inputs -= 1;
                    if p.local_inputs == 0 && p.running.is_none() {
                        vw.ready.push(Reverse((p.req.priority, waiter)));
                    }
                }
            }
            FromWorker::Finished {
                task: id,
                nbytes: nbytes as u64,
                compute_us: dur as u64,
                tier: Tier::Host,
            }
        };
        self.send_to_sched(w, msg);
        self.try_start(w)
    }

    /// Runs until nothing is left to do, checking as configured; then checks
    /// the outcome of every output.
    pub fn run(&mut self) -> Result<(), SimError> {
        if self.cfg.balance_every_us > 0 && !self.balance_armed {
            self.balance_armed = true;
            self.push(self.now + self.cfg.balance_every_us, SimEvent::Balance);
        }
        while let Some(Reverse((at, _, idx))) = self.queue.pop() {
            self.now = at;
            self.stats.sim_events += 1;
            let ev = self.events[idx as usize]
                .take()
                .expect("internal error: queued event present");
            self.free_events.push(idx);
            match ev {
                SimEvent::ToWorker(w, msg) => self.worker_receive(w, msg)?,
                SimEvent::ToScheduler(w, msg) => {
                    if !self.workers[w.index()].alive {
                        if !self.cfg.deliver_from_dead {
                            continue;
                        }
                        self.stats.from_dead += 1;
                    }
                    self.sched_event(Event::Worker { worker: w, msg })?;
                }
                SimEvent::FromClient(msg) => {
                    self.sched_event(Event::Client {
                        client: self.client,
                        msg,
                    })?;
                }
                SimEvent::Done { worker, task, token } => self.done(worker, task, token)?,
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
                SimEvent::TogglePauseRandom => {
                    let alive: Vec<usize> = (0..self.workers.len()).filter(|&i| self.workers[i].alive).collect();
                    if !alive.is_empty() {
                        let i = alive[self.rng.below(alive.len() as u64) as usize];
                        let vw = &mut self.workers[i];
                        vw.paused = !vw.paused;
                        let paused = vw.paused;
                        self.send_to_sched(WorkerId::new(i as u32), FromWorker::Paused { paused });
                    }
                }
                SimEvent::Add(spec) => {
                    self.add_worker(spec)?;
                }
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
        self.finish_checks()
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
                    vw.alive && vw.store.get(&self.sched.task_id(key).expect("held")) == Some(value)
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
            let held: usize = self.workers.iter().map(|w| w.store.len()).sum();
            if held != 0 {
                return self.err(format!("workers still hold {held} results after release"));
            }
        }
        Ok(())
    }
}

fn gpus_of(req: &ComputeRequest) -> u32 {
    req.resources
        .iter()
        .filter(|r| r.name.as_str() == "gpu")
        .map(|r| r.amount)
        .sum()
}
