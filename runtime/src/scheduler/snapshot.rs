//! Read-only views of the scheduler for dashboards and metrics.
//!
//! [`Scheduler::snapshot`] walks the task table once (O(tasks + edges))
//! and aggregates what a dashboard shows: tasks by state, by group (key
//! prefix and op) with the dependencies between groups, workers with their
//! memory by tier, and the erred tasks with their messages. Nothing is
//! kept per task for it, so the hot path pays nothing; the reactor decides
//! how often to take one (see `observe`). [`Scheduler::task_view`] is the
//! O(1) look-up the reactor uses to describe a worker's report before the
//! scheduler handles it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::ids::{FxHashMap, FxHasher, Key, SharedStr, TaskId, WorkerId};
use crate::protocol::Tier;

use super::{Scheduler, Stats, TaskState};

type FxHashSet<T> = HashSet<T, BuildHasherDefault<FxHasher>>;

/// Erred tasks listed with their messages, at most (the count is exact).
pub const MAX_ERRED_LISTED: usize = 100;

/// Task groups listed at most; past `MAX_GROUPS - 1` distinct groups, the
/// rest are counted in one group named [`OTHER_GROUP`].
pub const MAX_GROUPS: usize = 500;

/// The group that collects tasks past [`MAX_GROUPS`].
pub const OTHER_GROUP: &str = "(other)";

/// Tasks per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Known but not needed (or lost).
    pub released: u64,
    /// Needed, inputs missing.
    pub waiting: u64,
    /// Ready but held in the scheduler.
    pub queued: u64,
    /// Sent to a worker.
    pub processing: u64,
    /// Result held by a worker.
    pub memory: u64,
    /// Failed for good.
    pub erred: u64,
}

impl StateCounts {
    /// Counts one more task in `state` (forgotten tasks are not counted).
    pub fn add(&mut self, state: TaskState) {
        match state {
            TaskState::Released => self.released += 1,
            TaskState::Waiting => self.waiting += 1,
            TaskState::Queued => self.queued += 1,
            TaskState::Processing(_) => self.processing += 1,
            TaskState::Memory => self.memory += 1,
            TaskState::Erred => self.erred += 1,
            TaskState::Forgotten => {}
        }
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &StateCounts) {
        self.released += other.released;
        self.waiting += other.waiting;
        self.queued += other.queued;
        self.processing += other.processing;
        self.memory += other.memory;
        self.erred += other.erred;
    }

    /// All tasks counted.
    pub fn total(&self) -> u64 {
        self.released + self.waiting + self.queued + self.processing + self.memory + self.erred
    }

    /// `(state name, count)` pairs, in life order.
    pub fn pairs(&self) -> [(&'static str, u64); 6] {
        [
            ("released", self.released),
            ("waiting", self.waiting),
            ("queued", self.queued),
            ("processing", self.processing),
            ("memory", self.memory),
            ("erred", self.erred),
        ]
    }
}

/// Bytes per memory tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierBytes {
    /// GPU memory.
    pub device: u64,
    /// Host memory.
    pub host: u64,
    /// Disk.
    pub disk: u64,
}

impl TierBytes {
    /// Adds `nbytes` to `tier`.
    pub fn add(&mut self, tier: Tier, nbytes: u64) {
        match tier {
            Tier::Device => self.device += nbytes,
            Tier::Host => self.host += nbytes,
            Tier::Disk => self.disk += nbytes,
        }
    }

    /// The sum over the tiers.
    pub fn total(&self) -> u64 {
        self.device + self.host + self.disk
    }
}

/// One live worker.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerSnapshot {
    /// The scheduler's id for it.
    pub id: WorkerId,
    /// Its unique name.
    pub name: SharedStr,
    /// Its data address.
    pub address: SharedStr,
    /// Compute threads.
    pub nthreads: u32,
    /// Memory limit in bytes (0: none).
    pub memory_limit: u64,
    /// Resources it offers, as `name=amount`.
    pub resources: Vec<String>,
    /// Tasks processing there.
    pub processing: u64,
    /// Results it holds.
    pub held: u64,
    /// Their bytes by the tier the scheduler was told last.
    pub memory: TierBytes,
    /// Paused for memory pressure.
    pub paused: bool,
    /// The URL of its own status page, if it serves one.
    pub dashboard: Option<SharedStr>,
}

/// Tasks that share a key prefix and an op (Dask's task prefix).
#[derive(Clone, Debug, Serialize)]
pub struct GroupSnapshot {
    /// The key prefix (see [`key_prefix`]).
    pub name: String,
    /// The op its tasks run.
    pub op: SharedStr,
    /// Its tasks by state.
    pub states: StateCounts,
    /// Bytes of its results in memory.
    pub nbytes: u64,
}

/// An erred task and why.
#[derive(Clone, Debug, Serialize)]
pub struct ErredTask {
    /// The key.
    pub key: Key,
    /// Its op.
    pub op: SharedStr,
    /// The error as the client sees it.
    pub message: String,
}

/// Finished-task figures of an op, from the scheduler's estimates.
#[derive(Clone, Debug, Serialize)]
pub struct OpSnapshot {
    /// The op.
    pub name: SharedStr,
    /// Tasks of it that finished.
    pub finished: u64,
    /// The scheduler's moving average of its durations, seconds.
    pub avg_duration_s: f64,
}

/// The scheduler's state at one moment, aggregated.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Live workers, by id.
    pub workers: Vec<WorkerSnapshot>,
    /// Connected clients.
    pub clients: u64,
    /// Tasks by state.
    pub tasks: StateCounts,
    /// Tasks by group, largest first.
    pub groups: Vec<GroupSnapshot>,
    /// Dependencies between groups: `(from, to)` indices into `groups`,
    /// the group of an input first.
    pub group_edges: Vec<(u32, u32)>,
    /// Erred tasks (at most [`MAX_ERRED_LISTED`]).
    pub erred: Vec<ErredTask>,
    /// Ops seen.
    pub ops: Vec<OpSnapshot>,
    /// The scheduler's counters.
    pub stats: StatsSnapshot,
}

/// [`Stats`], serializable.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatsSnapshot {
    /// Task state transitions so far.
    pub transitions: u64,
    /// Events handled.
    pub events: u64,
    /// Messages ignored as malformed, stale or out of order.
    pub ignored: u64,
    /// Steals that moved a task.
    pub steals: u64,
    /// Results recomputed after they were lost.
    pub recomputed: u64,
}

impl From<&Stats> for StatsSnapshot {
    fn from(s: &Stats) -> Self {
        StatsSnapshot {
            transitions: s.transitions,
            events: s.events,
            ignored: s.ignored,
            steals: s.steals,
            recomputed: s.recomputed,
        }
    }
}

/// What a reactor needs to know of one task to describe a report about
/// it (borrowed; O(1) to get).
#[derive(Debug)]
pub struct TaskView<'a> {
    /// The key.
    pub key: &'a Key,
    /// The op's name.
    pub op: &'a SharedStr,
    /// The op's index (dense, stable for the scheduler's life).
    pub op_index: usize,
    /// The state.
    pub state: TaskState,
    /// Result size (as reported).
    pub nbytes: u64,
    /// Result tier (Memory only).
    pub tier: Tier,
    /// Holders of the result.
    pub who_has: &'a [WorkerId],
}

/// The group name of a key, Dask's `key_split` made to fit Weft's keys:
/// the words of the key (split at `-`) that are alphabetic, skipping
/// numbers, hex tokens and indices. `map-0a1b2c3d4e5f6789-17` is `map`,
/// `tree-rep0-…-leaf-3` is `tree-leaf`; a key with no such word is its
/// first word. Borrowed when the words kept lead the key (the common
/// case), so grouping allocates nothing per task.
pub fn key_prefix(key: &str) -> Cow<'_, str> {
    let keep = keep_word;
    let mut end = 0;
    let mut skipped = false;
    for (i, word) in key.split('-').enumerate() {
        if !keep(word) {
            skipped = true;
        } else if skipped {
            let words: Vec<&str> = key.split('-').filter(|w| keep(w)).collect();
            return Cow::Owned(words.join("-"));
        } else {
            end = if i == 0 { word.len() } else { end + 1 + word.len() };
        }
    }
    if end == 0 {
        Cow::Borrowed(key.split('-').next().unwrap_or(key))
    } else {
        Cow::Borrowed(&key[..end])
    }
}

/// A hash of [`key_prefix`], computed without building it.
fn prefix_hash(key: &str) -> u64 {
    let mut h = FxHasher::default();
    let mut any = false;
    for word in key.split('-') {
        if keep_word(word) {
            h.write(word.as_bytes());
            h.write_u8(b'-');
            any = true;
        }
    }
    if !any {
        h.write(key.split('-').next().unwrap_or(key).as_bytes());
    }
    h.finish()
}

/// Whether [`key_prefix`] keeps a word: alphabetic, not a hex token.
fn keep_word(w: &str) -> bool {
    !w.is_empty()
        && w.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
        && !(w.len() >= 8 && w.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What [`Scheduler::snapshot_with`] keeps between snapshots: each task's
/// group by slot (with the task's id, so a reused slot is noticed), the
/// groups seen and the edges between them.
#[derive(Default)]
pub struct SnapshotCache {
    by_slot: Vec<(TaskId, u32)>,
    ids: FxHashMap<(u32, u64), u32>,
    names: Vec<(String, SharedStr)>,
    edges: FxHashSet<(u32, u32)>,
    other: Option<u32>,
}

impl SnapshotCache {
    fn group_of(&mut self, op: u32, key: &str, op_name: &SharedStr) -> u32 {
        let hash = prefix_hash(key);
        if let Some(&g) = self.ids.get(&(op, hash)) {
            return g;
        }
        if self.names.len() + 1 >= MAX_GROUPS {
            let names = &mut self.names;
            return *self.other.get_or_insert_with(|| {
                names.push((OTHER_GROUP.to_string(), "".into()));
                (names.len() - 1) as u32
            });
        }
        let g = self.names.len() as u32;
        self.names.push((key_prefix(key).into_owned(), op_name.clone()));
        self.ids.insert((op, hash), g);
        g
    }
}

impl Scheduler {
    /// The scheduler's state, aggregated. O(tasks + edges + workers); the
    /// reactor takes one at most every few hundred milliseconds, and only
    /// while someone looks.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(&mut SnapshotCache::default())
    }

    /// [`Scheduler::snapshot`] remembering each task's group in `cache`
    /// between calls, so that only tasks new since the last call are
    /// grouped by key (a slot check for the others) and only their
    /// dependencies are looked at for the edges between groups.
    pub fn snapshot_with(&self, cache: &mut SnapshotCache) -> Snapshot {
        let mut workers: Vec<WorkerSnapshot> = self
            .workers
            .values()
            .map(|wk| WorkerSnapshot {
                id: wk.id,
                name: wk.info.name.clone(),
                address: wk.info.address.clone(),
                nthreads: wk.info.nthreads,
                memory_limit: wk.info.memory_limit,
                resources: wk
                    .info
                    .resources
                    .iter()
                    .map(|r| format!("{}={}", r.name, r.amount))
                    .collect(),
                processing: wk.processing.len() as u64,
                held: wk.n_held as u64,
                memory: TierBytes::default(),
                paused: wk.paused,
                dashboard: wk.info.dashboard.clone(),
            })
            .collect();
        workers.sort_unstable_by_key(|w| w.id);
        let worker_index: FxHashMap<WorkerId, usize> = workers.iter().enumerate().map(|(i, w)| (w.id, i)).collect();

        if cache.names.len() >= MAX_GROUPS {
            // Groups of graphs long gone fill the table: start afresh.
            *cache = SnapshotCache::default();
        }
        let mut states: Vec<(StateCounts, u64)> = vec![(StateCounts::default(), 0); cache.names.len()];
        let mut fresh: Vec<(u32, &[TaskId])> = Vec::new();
        // The last holder looked up: runs of results sit on one worker.
        let mut holder: Option<(WorkerId, Option<usize>)> = None;
        for t in self.tasks.iter() {
            let slot = t.id.slot() as usize;
            if cache.by_slot.len() <= slot {
                cache
                    .by_slot
                    .resize(slot + 1, (TaskId::from_parts(u32::MAX, u32::MAX), 0));
            }
            let g = match cache.by_slot[slot] {
                (id, g) if id == t.id => g,
                _ => {
                    // First seen: find its group by key prefix and op.
                    let g = cache.group_of(t.op.as_num(), &t.key, &self.ops[t.op.index()].name);
                    cache.by_slot[slot] = (t.id, g);
                    if !t.deps.is_empty() {
                        fresh.push((g, &t.deps));
                    }
                    g
                }
            };
            if states.len() <= g as usize {
                states.resize(g as usize + 1, (StateCounts::default(), 0));
            }
            let group = &mut states[g as usize];
            group.0.add(t.state);
            if t.state == TaskState::Memory {
                group.1 += t.nbytes;
                for &w in &t.who_has {
                    let i = match holder {
                        Some((h, i)) if h == w => i,
                        _ => {
                            let i = worker_index.get(&w).copied();
                            holder = Some((w, i));
                            i
                        }
                    };
                    if let Some(i) = i {
                        workers[i].memory.add(t.tier, t.nbytes);
                    }
                }
            }
        }
        // Edges of the tasks first seen now; older ones are in the cache.
        let mut last = (u32::MAX, u32::MAX);
        for (to, deps) in fresh {
            for d in deps {
                let from = match cache.by_slot.get(d.slot() as usize) {
                    Some(&(id, g)) if id == *d => g,
                    _ => continue,
                };
                if from != to && (from, to) != last {
                    cache.edges.insert((from, to));
                    last = (from, to);
                }
            }
        }

        // Tasks by state: the sum over the groups (one count a task).
        let mut tasks = StateCounts::default();
        for (group, _) in &states {
            tasks.merge(group);
        }

        // Groups with tasks, largest first, with the edges renumbered.
        let mut order: Vec<u32> = (0..states.len() as u32)
            .filter(|&g| states[g as usize].0.total() > 0)
            .collect();
        order.sort_by_key(|&g| std::cmp::Reverse(states[g as usize].0.total()));
        let mut rank = vec![u32::MAX; states.len()];
        for (new, &old) in order.iter().enumerate() {
            rank[old as usize] = new as u32;
        }
        let groups: Vec<GroupSnapshot> = order
            .iter()
            .map(|&g| {
                let (name, op) = &cache.names[g as usize];
                let (states, nbytes) = states[g as usize];
                GroupSnapshot {
                    name: name.clone(),
                    op: op.clone(),
                    states,
                    nbytes,
                }
            })
            .collect();
        let rank_of = |g: u32| rank.get(g as usize).copied().unwrap_or(u32::MAX);
        let mut group_edges: Vec<(u32, u32)> = cache
            .edges
            .iter()
            .map(|&(a, b)| (rank_of(a), rank_of(b)))
            .filter(|&(a, b)| a != u32::MAX && b != u32::MAX)
            .collect();
        group_edges.sort_unstable();

        let mut erred: Vec<ErredTask> = self
            .errors
            .iter()
            .filter_map(|(id, error)| {
                let t = self.tasks.get(*id)?;
                Some(ErredTask {
                    key: t.key.clone(),
                    op: self.ops[t.op.index()].name.clone(),
                    message: error.to_string(),
                })
            })
            .collect();
        // Root causes first (a dependency's failure names its cause), then by key.
        erred.sort_by(|a, b| {
            let dep = |e: &ErredTask| e.message.contains("its dependency failed");
            dep(a).cmp(&dep(b)).then_with(|| a.key.cmp(&b.key))
        });
        erred.truncate(MAX_ERRED_LISTED);

        let ops = self
            .ops
            .iter()
            .map(|s| OpSnapshot {
                name: s.name.clone(),
                finished: s.count,
                avg_duration_s: s.avg,
            })
            .collect();
        Snapshot {
            workers,
            clients: self.clients.len() as u64,
            tasks,
            groups,
            group_edges,
            erred,
            ops,
            stats: StatsSnapshot::from(&self.stats),
        }
    }

    /// What a reactor needs of one task (None for stale ids).
    pub fn task_view(&self, id: TaskId) -> Option<TaskView<'_>> {
        let t = self.tasks.get(id)?;
        Some(TaskView {
            key: &t.key,
            op: &self.ops[t.op.index()].name,
            op_index: t.op.index(),
            state: t.state,
            nbytes: t.nbytes,
            tier: t.tier,
            who_has: &t.who_has,
        })
    }

    /// Erred tasks in all (not only those listed in a snapshot).
    pub fn n_erred(&self) -> usize {
        self.errors.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::graph::{Graph, TaskSpec};
    use crate::ids::ClientId;
    use crate::protocol::{FromClient, FromWorker, ToWorker, WorkerInfo};
    use crate::scheduler::{Command, Event};

    pub(super) fn info(name: &str) -> WorkerInfo {
        WorkerInfo {
            name: name.into(),
            address: format!("tcp://{name}:1").into(),
            nthreads: 1,
            memory_limit: 1000,
            resources: Vec::new(),
            dashboard: None,
            held: Vec::new(),
        }
    }

    fn computes(out: &[Command]) -> Vec<(WorkerId, TaskId)> {
        out.iter()
            .filter_map(|c| match c {
                Command::ToWorker(w, ToWorker::Compute(r)) => Some((*w, r.task)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn key_prefixes_follow_key_split() {
        assert_eq!(key_prefix("map-0a1b2c3d4e5f6789-17"), "map");
        assert_eq!(key_prefix("tree-rep0-0a1b2c3d4e5f6789-3-leaf-4"), "tree-leaf");
        assert_eq!(key_prefix("tree-sum-2-7"), "tree-sum");
        assert_eq!(key_prefix("x"), "x");
        assert_eq!(key_prefix("17-3"), "17");
        assert_eq!(key_prefix("deadbeef-load"), "load");
    }

    /// Two workers, a chain a -> b and a failing c: the snapshot's counts
    /// match the scheduler's own accessors at each step.
    #[test]
    fn snapshot_matches_the_scheduler() {
        let mut s = Scheduler::default();
        let client = ClientId::new(0);
        s.handle_to_vec(Event::ClientConnected { client });
        for i in 0..2 {
            s.handle_to_vec(Event::WorkerJoined {
                worker: WorkerId::new(i),
                info: info(&format!("w{i}")),
            });
        }
        let graph = Graph {
            tasks: vec![
                TaskSpec::new("load-1", "load", Bytes::new(), vec![]),
                TaskSpec::new("sum-1", "sum", Bytes::new(), vec!["load-1".into()]),
                TaskSpec::new("boom-1", "boom", Bytes::new(), vec![]),
            ],
            outputs: vec!["sum-1".into(), "boom-1".into()],
        };
        let out = s.handle_to_vec(Event::Client {
            client,
            msg: FromClient::SubmitGraph(graph),
        });
        let snap = s.snapshot();
        assert_eq!(snap.tasks.total() as usize, s.n_tasks());
        assert_eq!(
            (snap.tasks.processing + snap.tasks.waiting + snap.tasks.queued) as usize,
            s.count_active()
        );
        assert_eq!(snap.workers.len(), 2);
        assert_eq!(snap.clients, 1);
        let names: Vec<&str> = snap.groups.iter().map(|g| g.name.as_str()).collect();
        assert!(names.contains(&"load") && names.contains(&"sum") && names.contains(&"boom"));
        let load = snap.groups.iter().position(|g| g.name == "load").expect("load group");
        let sum = snap.groups.iter().position(|g| g.name == "sum").expect("sum group");
        assert_eq!(snap.group_edges, vec![(load as u32, sum as u32)]);

        let mut sent = computes(&out);
        // `sum-1` may be pipelined behind `load-1`; finish `load-1`, fail `boom-1`.
        let load_id = s.task_id("load-1").expect("load-1");
        let boom_id = s.task_id("boom-1").expect("boom-1");
        let (lw, _) = *sent.iter().find(|(_, t)| *t == load_id).expect("load sent");
        let (bw, _) = *sent.iter().find(|(_, t)| *t == boom_id).expect("boom sent");
        let view = s.task_view(load_id).expect("view");
        assert_eq!(view.op.as_str(), "load");
        assert_eq!(view.state, TaskState::Processing(lw));
        let out = s.handle_to_vec(Event::Worker {
            worker: lw,
            msg: FromWorker::Finished {
                task: load_id,
                nbytes: 100,
                compute_us: 10,
                tier: Tier::Device,
            },
        });
        sent.extend(computes(&out));
        s.handle_to_vec(Event::Worker {
            worker: bw,
            msg: FromWorker::Failed {
                task: boom_id,
                error: "no such file: input.parquet".into(),
            },
        });
        let snap = s.snapshot();
        assert_eq!(snap.tasks.memory, 1);
        assert_eq!(snap.tasks.erred, 1);
        assert_eq!(snap.erred.len(), 1);
        assert_eq!(snap.erred[0].key.as_str(), "boom-1");
        assert!(
            snap.erred[0].message.contains("no such file: input.parquet"),
            "{:?}",
            snap.erred
        );
        let holder = snap.workers.iter().find(|w| w.id == lw).expect("holder");
        assert_eq!(
            holder.memory,
            TierBytes {
                device: 100,
                host: 0,
                disk: 0
            }
        );
        assert_eq!(holder.held, 1);
        let load = snap.groups.iter().find(|g| g.name == "load").expect("load group");
        assert_eq!((load.states.memory, load.nbytes), (1, 100));
        let op = snap.ops.iter().find(|o| o.name.as_str() == "load").expect("load op");
        assert_eq!(op.finished, 1);
        assert_eq!(snap.stats.transitions, s.stats().transitions);
    }

    /// Groups past the cap fold into one, and every task is still counted.
    #[test]
    fn groups_are_capped() {
        let mut s = Scheduler::default();
        let client = ClientId::new(0);
        s.handle_to_vec(Event::ClientConnected { client });
        let n = MAX_GROUPS + 20;
        let tasks: Vec<TaskSpec> = (0..n)
            .map(|i| {
                // Distinct alphabetic names: hex digits spelt with the letters g..v.
                let name: String = format!("{i:x}")
                    .chars()
                    .map(|c| char::from(b'g' + c.to_digit(16).unwrap_or(0) as u8))
                    .collect();
                TaskSpec::new(format!("{name}-1"), "op", Bytes::new(), vec![])
            })
            .collect();
        let outputs = tasks.iter().map(|t| t.key.clone()).collect();
        let graph = Graph { tasks, outputs };
        s.handle_to_vec(Event::Client {
            client,
            msg: FromClient::SubmitGraph(graph),
        });
        let snap = s.snapshot();
        assert_eq!(snap.groups.len(), MAX_GROUPS);
        assert_eq!(snap.groups.iter().map(|g| g.states.total()).sum::<u64>(), n as u64);
        assert_eq!(snap.groups[0].name, OTHER_GROUP);
    }
}

#[cfg(test)]
mod cost {
    use super::tests::info;
    use super::*;
    use crate::graphs;
    use crate::ids::ClientId;
    use crate::protocol::{FromClient, FromWorker, ToWorker};
    use crate::scheduler::{Command, Event};

    /// How long a snapshot of 10^5 tasks takes: a map whose results sit
    /// on two workers (as in `weft bench noop`), then a waiting tree (run
    /// with `--release --ignored --nocapture`).
    #[test]
    #[ignore]
    fn snapshot_cost() {
        let mut s = Scheduler::default();
        let client = ClientId::new(0);
        s.handle_to_vec(Event::ClientConnected { client });
        for i in 0..2 {
            s.handle_to_vec(Event::WorkerJoined {
                worker: WorkerId::new(i),
                info: info(&format!("w{i}")),
            });
        }
        let mut out = s.handle_to_vec(Event::Client {
            client,
            msg: FromClient::SubmitGraph(graphs::map("map-0a1b2c3d4e5f6789", 100_000)),
        });
        while !out.is_empty() {
            let mut next = Vec::new();
            for c in out {
                if let Command::ToWorker(worker, ToWorker::Compute(r)) = c {
                    let msg = FromWorker::Finished {
                        task: r.task,
                        nbytes: 8,
                        compute_us: 1,
                        tier: Tier::Host,
                    };
                    next.extend(s.handle_to_vec(Event::Worker { worker, msg }));
                }
            }
            out = next;
        }
        let mut cache = SnapshotCache::default();
        let mut measure = |s: &Scheduler, what: &str| {
            for round in ["first", "cached", "cached"] {
                let started = std::time::Instant::now();
                let snap = s.snapshot_with(&mut cache);
                println!(
                    "{what}, {round} snapshot of {} tasks: {:?}",
                    snap.tasks.total(),
                    started.elapsed()
                );
            }
        };
        measure(&s, "map in memory");
        assert_eq!(s.snapshot().tasks.memory, 100_000);
        s.handle_to_vec(Event::Client {
            client,
            msg: FromClient::SubmitGraph(graphs::tree("tree-0a1b2c3d4e5f6789-1", 50_000)),
        });
        measure(&s, "and a tree");
        let snap = s.snapshot_with(&mut cache);
        let tree: Vec<&str> = snap.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(snap.groups.len(), 3, "{tree:?}");
    }
}
