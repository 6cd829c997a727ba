//! The scheduler's record of one task, its states, and the slot table that
//! holds them (ids carry a generation, so stale ids are detected, not aliased)
//! and finds them by key.

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use hashbrown::HashTable;

use crate::ids::{ClientId, FxHasher, Key, OpId, SharedStr, TaskId, WorkerId};
use crate::protocol::{Priority, Tier};

/// Where a task is in its life. A task is in exactly one state; the variant
/// is the only place that says so.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Known (definition kept for lineage) but not needed, or lost.
    Released,
    /// Needed; some inputs are not in memory yet.
    Waiting,
    /// Ready, but held back by the scheduler: a root task while every worker
    /// is saturated, or a task no current worker can run (Dask's `no-worker`).
    Queued,
    /// Sent to a worker.
    Processing(WorkerId),
    /// The result is held by at least one worker.
    Memory,
    /// Failed for good; the error is kept for clients.
    Erred,
    /// Gone from the scheduler. Never stored: it is what lookups of a dropped
    /// id or key report.
    Forgotten,
}

impl TaskState {
    /// Waiting, queued or processing: the task still needs its inputs.
    #[inline]
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Waiting | TaskState::Queued | TaskState::Processing(_))
    }
}

/// Why a task is `Queued`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum QueueKind {
    None,
    /// In the root-task queue.
    Root,
    /// In the no-worker list.
    Unrunnable,
}

/// Worker restrictions of a task (rare, so boxed).
#[derive(Clone, Debug)]
pub(crate) struct Restrictions {
    pub workers: Vec<SharedStr>,
    pub allow_other: bool,
}

/// The scheduler's record of a task. Kept small: it is the per-task memory.
#[derive(Debug)]
pub(crate) struct Task {
    pub id: TaskId,
    pub key: Key,
    /// [`key_hash`] of `key`, for the key index.
    pub key_hash: u64,
    pub args: Bytes,
    pub deps: Box<[TaskId]>,
    /// Tasks that depend on this one; may hold ids of forgotten tasks, which
    /// are skipped and compacted away (see `live_dependents`).
    pub dependents: Vec<TaskId>,
    /// Workers holding the result (Memory only).
    pub who_has: Vec<WorkerId>,
    /// Clients holding a future on this key.
    pub who_wants: Vec<ClientId>,
    pub restrictions: Option<Box<Restrictions>>,
    pub priority: Priority,
    pub nbytes: u64,
    pub state: TaskState,
    pub op: OpId,
    /// Interned resource request (0 = none).
    pub request: u32,
    /// Inputs not in memory (meaningful while active).
    pub waiting_on: u32,
    /// Dependents that are active, that is, still need this result.
    pub waiters: u32,
    /// Dependents not forgotten.
    pub live_dependents: u32,
    /// Position in the worker's processing list (Processing only).
    pub proc_idx: u32,
    /// Duration estimate in seconds charged to the worker's occupancy.
    pub est: f32,
    pub retries_left: u8,
    /// Workers that died while running this task.
    pub deaths: u8,
    pub queue: QueueKind,
    /// Put in memory by a client (scatter): no lineage.
    pub scattered: bool,
    /// A link sent ahead behind a root task, waiting for it: it takes no
    /// root-task slot on its worker (see [`super::worker::Worker::ahead`]).
    pub ahead: bool,
    /// Where the result lives (Memory only).
    pub tier: Tier,
}

// The per-task memory budget rests on this; grow it only on purpose.
const _: () = assert!(std::mem::size_of::<Task>() == 240);

impl Task {
    #[inline]
    pub fn wanted(&self) -> bool {
        !self.who_wants.is_empty()
    }

    /// Bytes that moving the result to another worker costs: a result on
    /// disk is read on its holder before it is sent, so it counts twice.
    pub fn transfer_bytes(&self) -> u64 {
        if self.tier == Tier::Disk {
            self.nbytes.saturating_mul(2)
        } else {
            self.nbytes
        }
    }
}

struct Slot {
    generation: u32,
    task: Option<Task>,
}

/// The key hash of the live task `id`, for rehashing the key index.
fn hash_of(slots: &[Slot], id: TaskId) -> u64 {
    slots[id.slot() as usize]
        .task
        .as_ref()
        .expect("internal error: the key index holds a dead task")
        .key_hash
}

/// The hash of a task key in the key index.
#[inline]
pub(crate) fn key_hash(key: &str) -> u64 {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    // FxHash ends on a multiply, so its low bits (the table's bucket) mix
    // poorly: keys like `x-1`, `x-2` probed long runs of one another's
    // buckets. The splitmix64 finalizer spreads every bit.
    let mut z = h.finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Slot table of tasks. Slots are reused; each reuse bumps the generation.
/// Live tasks are also found by key.
#[derive(Default)]
pub(crate) struct Tasks {
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
    /// Ids of the live tasks, hashed by `Task::key_hash`: 8 bytes a task,
    /// the key itself stays in the task, and removing a task compares ids,
    /// not strings.
    by_key: HashTable<TaskId>,
}

impl Tasks {
    /// A fresh id for `insert`. Repeated calls hand out distinct ids.
    pub fn reserve(&mut self) -> TaskId {
        if let Some(slot) = self.free.pop() {
            let s = &mut self.slots[slot as usize];
            TaskId::from_parts(slot, s.generation)
        } else {
            let slot = self.slots.len() as u32;
            self.slots.push(Slot {
                generation: 0,
                task: None,
            });
            TaskId::from_parts(slot, 0)
        }
    }

    /// Makes room for `n` more tasks.
    pub fn reserve_capacity(&mut self, n: usize) {
        self.slots.reserve(n.saturating_sub(self.free.len()));
        let slots = &self.slots;
        self.by_key.reserve(n, |&id| hash_of(slots, id));
    }

    /// Fills a reserved slot. The caller makes sure no live task has the
    /// same key.
    pub fn insert(&mut self, task: Task) {
        let (id, hash) = (task.id, task.key_hash);
        debug_assert!(self.find(&task.key).is_none(), "duplicate key {}", task.key);
        let s = &mut self.slots[id.slot() as usize];
        debug_assert!(s.task.is_none() && s.generation == id.generation());
        s.task = Some(task);
        self.len += 1;
        let slots = &self.slots;
        self.by_key.insert_unique(hash, id, |&id| hash_of(slots, id));
    }

    pub fn remove(&mut self, id: TaskId) -> Option<Task> {
        let s = self.slots.get_mut(id.slot() as usize)?;
        if s.generation != id.generation() {
            return None;
        }
        let t = s.task.take()?;
        // The last generations are the workers' (orphans and pieces).
        s.generation = match s.generation + 1 {
            next if next >= TaskId::PIECE_GENERATION => 0,
            next => next,
        };
        self.free.push(id.slot());
        self.len -= 1;
        if let Ok(entry) = self.by_key.find_entry(t.key_hash, |&x| x == id) {
            entry.remove();
        }
        Some(t)
    }

    /// The live task with this key.
    pub fn find(&self, key: &str) -> Option<TaskId> {
        self.find_hashed(key, key_hash(key))
    }

    /// [`Tasks::find`] with the key's [`key_hash`] already computed.
    #[inline]
    pub fn find_hashed(&self, key: &str, hash: u64) -> Option<TaskId> {
        if self.len == 0 {
            return None;
        }
        self.by_key.find(hash, |&id| self[id].key.as_str() == key).copied()
    }

    /// Entries of the key index (equal to `len` unless it is corrupt).
    pub fn n_keys(&self) -> usize {
        self.by_key.len()
    }

    #[inline]
    pub fn get(&self, id: TaskId) -> Option<&Task> {
        let s = self.slots.get(id.slot() as usize)?;
        if s.generation != id.generation() {
            return None;
        }
        s.task.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, id: TaskId) -> Option<&mut Task> {
        let s = self.slots.get_mut(id.slot() as usize)?;
        if s.generation != id.generation() {
            return None;
        }
        s.task.as_mut()
    }

    #[inline]
    pub fn contains(&self, id: TaskId) -> bool {
        self.get(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.slots.iter().filter_map(|s| s.task.as_ref())
    }
}

impl std::ops::Index<TaskId> for Tasks {
    type Output = Task;
    #[inline]
    fn index(&self, id: TaskId) -> &Task {
        match self.get(id) {
            Some(t) => t,
            None => panic!("internal error: {id:?} is not a live task"),
        }
    }
}

impl std::ops::IndexMut<TaskId> for Tasks {
    #[inline]
    fn index_mut(&mut self, id: TaskId) -> &mut Task {
        match self.get_mut(id) {
            Some(t) => t,
            None => panic!("internal error: {id:?} is not a live task"),
        }
    }
}
