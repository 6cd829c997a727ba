//! A worker's store of results, with its memory manager. Results live where
//! their op made them: device memory on a GPU worker, host memory on a CPU
//! worker. Past the target fraction of the device limit the least recently
//! used device results move to host memory; past the target fraction of
//! the host limit the least recently used host results go to disk. Both
//! moves happen on a spill thread, and results come back from disk off
//! the event loop when asked for.
//!
//! The thresholds follow Dask ([`MemoryConfig`]): spill past `target` of
//! the limit (managed memory) or `spill` (the process's memory), pause
//! taking new tasks past `pause`, give up past `terminate`. A write that
//! fails (full disk, unwritable directory, over the spill quota) leaves
//! the result in memory: nothing is lost by spilling.

pub mod allocator;
mod spill;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tracing::{debug, error, info};
use weft_transport::{Buffer, BufferPool};

pub use spill::{SpillDir, SpillFile};

use crate::ids::{FxHashMap, Key, TaskId};
use crate::protocol::{HeldResult, Tier};
use crate::value::Value;

/// Idle read buffers kept for results coming back from disk.
const UNSPILL_POOL_BYTES: usize = 256 << 20;

/// How a worker manages the memory of its results.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConfig {
    /// Host memory for this worker in bytes; 0 turns spilling and pausing
    /// off.
    pub limit: u64,
    /// Device memory for results in bytes (a GPU worker's default is 80%
    /// of its GPU); 0 for none.
    pub device_limit: u64,
    /// Spill least recently used results until managed memory is below
    /// this fraction of the limit (0.6).
    pub target: f64,
    /// Spill when the process's memory passes this fraction (0.7).
    pub spill: f64,
    /// Stop starting tasks past this fraction (0.8).
    pub pause: f64,
    /// The worker gives up past this fraction of process memory (0.95).
    pub terminate: f64,
    /// Parent of the worker's own spill directory.
    pub spill_dir: PathBuf,
    /// Most bytes kept on disk; 0 for no cap (Dask's `max-spill`).
    pub max_spill: u64,
    /// Whether the process's resident memory counts too: true for a worker
    /// that has its process to itself.
    pub watch_process: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            limit: 0,
            device_limit: 0,
            target: 0.6,
            spill: 0.7,
            pause: 0.8,
            terminate: 0.95,
            spill_dir: std::env::temp_dir(),
            max_spill: 0,
            watch_process: false,
        }
    }
}

impl MemoryConfig {
    fn bytes(&self, fraction: f64) -> u64 {
        (self.limit as f64 * fraction) as u64
    }

    /// Bytes a tier may hold before its results move down a tier.
    fn target_of(&self, tier: Tier) -> u64 {
        let limit = if tier == Tier::Device {
            self.device_limit
        } else {
            self.limit
        };
        (limit as f64 * self.target) as u64
    }
}

/// Counters of a worker's memory manager, shared with whoever watches it.
#[derive(Debug, Default)]
pub struct MemoryStats {
    on_device: AtomicU64,
    device_spilled: AtomicU64,
    device_spilled_bytes: AtomicU64,
    in_memory: AtomicU64,
    on_disk: AtomicU64,
    spilled: AtomicU64,
    spilled_bytes: AtomicU64,
    unspilled: AtomicU64,
    unspilled_bytes: AtomicU64,
    spill_errors: AtomicU64,
    pauses: AtomicU64,
}

/// A copy of [`MemoryStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemorySnapshot {
    /// Bytes of results in device memory.
    pub on_device: u64,
    /// Results moved from device to host memory so far.
    pub device_spilled: u64,
    /// Their bytes.
    pub device_spilled_bytes: u64,
    /// Bytes of results in host memory.
    pub in_memory: u64,
    /// Bytes of results on disk.
    pub on_disk: u64,
    /// Results written to disk so far.
    pub spilled: u64,
    /// Their bytes.
    pub spilled_bytes: u64,
    /// Results read back from disk so far.
    pub unspilled: u64,
    /// Their bytes.
    pub unspilled_bytes: u64,
    /// Spills that failed (the result stayed in memory).
    pub spill_errors: u64,
    /// Times the worker paused.
    pub pauses: u64,
}

impl std::iter::Sum for MemorySnapshot {
    /// Figures of several workers added up.
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(MemorySnapshot::default(), |a, b| MemorySnapshot {
            on_device: a.on_device + b.on_device,
            device_spilled: a.device_spilled + b.device_spilled,
            device_spilled_bytes: a.device_spilled_bytes + b.device_spilled_bytes,
            in_memory: a.in_memory + b.in_memory,
            on_disk: a.on_disk + b.on_disk,
            spilled: a.spilled + b.spilled,
            spilled_bytes: a.spilled_bytes + b.spilled_bytes,
            unspilled: a.unspilled + b.unspilled,
            unspilled_bytes: a.unspilled_bytes + b.unspilled_bytes,
            spill_errors: a.spill_errors + b.spill_errors,
            pauses: a.pauses + b.pauses,
        })
    }
}

impl MemoryStats {
    /// The counters now.
    pub fn snapshot(&self) -> MemorySnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MemorySnapshot {
            on_device: get(&self.on_device),
            device_spilled: get(&self.device_spilled),
            device_spilled_bytes: get(&self.device_spilled_bytes),
            in_memory: get(&self.in_memory),
            on_disk: get(&self.on_disk),
            spilled: get(&self.spilled),
            spilled_bytes: get(&self.spilled_bytes),
            unspilled: get(&self.unspilled),
            unspilled_bytes: get(&self.unspilled_bytes),
            spill_errors: get(&self.spill_errors),
            pauses: get(&self.pauses),
        }
    }

    /// Counts a pause.
    pub fn paused(&self) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
    }
}

/// What memory asks of the worker, from [`Store::pressure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// Below the pause threshold.
    Normal,
    /// Past the pause threshold: start no new tasks.
    Pause,
    /// Past the terminate threshold: the process must give up.
    Terminate,
}

/// A worker's results, by task.
pub struct Store {
    inner: Mutex<Inner>,
    config: MemoryConfig,
    dir: Arc<SpillDir>,
    stats: Arc<MemoryStats>,
    pool: BufferPool,
    /// Results for the spill thread (when there is a limit).
    spiller: Option<crossbeam_channel::Sender<(TaskId, Arc<Value>)>>,
    /// Told of every move between tiers.
    on_move: Box<dyn Fn(TaskId, Tier) + Send + Sync>,
    /// Woken at every adoption of a staged value.
    adopted: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    entries: FxHashMap<TaskId, Entry>,
    clock: u64,
    device: Level,
    host: Level,
    on_disk: u64,
    /// Values clients pushed (scatter) that the scheduler has not yet
    /// named a task for, with when they came; counted in host memory,
    /// never spilled.
    staged: FxHashMap<Key, (Instant, Arc<Value>)>,
    /// Results kept from a scheduler that went away, by key, under orphan
    /// ids (see [`Store::orphan`]) until the next one claims them.
    orphans: FxHashMap<Key, TaskId>,
    next_orphan: u32,
}

/// Results in one memory tier.
#[derive(Default)]
struct Level {
    /// By last use, oldest first (with a limit only).
    lru: BTreeMap<u64, TaskId>,
    /// Bytes held, including results on their way down a tier.
    bytes: u64,
    /// Of those, bytes on their way down.
    leaving: u64,
}

impl Inner {
    fn level(&mut self, tier: Tier) -> &mut Level {
        if tier == Tier::Device {
            &mut self.device
        } else {
            &mut self.host
        }
    }
}

struct Entry {
    nbytes: u64,
    /// Where the value in memory is: device or host.
    tier: Tier,
    /// Its place in the LRU order while in memory.
    used: u64,
    place: Place,
}

enum Place {
    Memory(Arc<Value>),
    /// In memory and on its way down a tier.
    Spilling(Arc<Value>),
    Disk(Arc<SpillFile>),
}

impl Store {
    /// A store managed by `config`, counting into `stats` and calling
    /// `on_move` (without blocking) whenever a result changes tier; spilled
    /// results go to a directory of their own under `config.spill_dir`,
    /// named after `worker`.
    pub fn new(
        config: MemoryConfig,
        worker: &str,
        stats: Arc<MemoryStats>,
        on_move: impl Fn(TaskId, Tier) + Send + Sync + 'static,
    ) -> Arc<Store> {
        let safe: String = worker
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let dir = SpillDir::new(config.spill_dir.join(format!(
            "weft-spill-{safe}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        )));
        Arc::new_cyclic(|store: &Weak<Store>| {
            let limited = config.limit > 0 || config.device_limit > 0;
            let spiller = limited.then(|| start_spill_thread(store.clone())).flatten();
            Store {
                inner: Mutex::default(),
                config,
                dir,
                stats,
                pool: BufferPool::new(UNSPILL_POOL_BYTES),
                spiller,
                on_move: Box::new(on_move),
                adopted: tokio::sync::Notify::new(),
            }
        })
    }

    /// A store without a limit (nothing is ever spilled).
    pub fn unlimited() -> Arc<Store> {
        Store::new(MemoryConfig::default(), "unlimited", Arc::default(), |_, _| {})
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below keeps the maps consistent before it can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where spilled results go.
    pub fn spill_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<MemoryStats> {
        &self.stats
    }

    /// Keeps a result (computed here, fetched from a peer or adopted from
    /// a client). May send older results down a tier.
    pub fn insert(&self, task: TaskId, value: Arc<Value>) {
        let mut inner = self.lock();
        let (nbytes, tier) = (value.nbytes(), value.tier());
        let used = self.touch(&mut inner, task, tier);
        inner.level(tier).bytes += nbytes;
        let entry = Entry {
            nbytes,
            tier,
            used,
            place: Place::Memory(value),
        };
        if let Some(old) = inner.entries.insert(task, entry) {
            debug!(%task, "result replaced");
            Self::forget(&mut inner, &old);
        }
        self.settle(&mut inner);
    }

    /// Drops a result, wherever it is.
    pub fn remove(&self, task: TaskId) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.remove(&task) {
            Self::forget(&mut inner, &entry);
            self.publish(&inner);
        }
    }

    /// Takes an entry's bytes out of the totals and the LRU order.
    fn forget(inner: &mut Inner, entry: &Entry) {
        let level = inner.level(entry.tier);
        match entry.place {
            Place::Memory(_) => level.bytes -= entry.nbytes,
            Place::Spilling(_) => {
                level.bytes -= entry.nbytes;
                level.leaving -= entry.nbytes;
            }
            Place::Disk(_) => inner.on_disk -= entry.nbytes,
        }
        inner.level(entry.tier).lru.remove(&entry.used);
    }

    /// A result by task if it is in memory (marking it used).
    pub fn get(&self, task: TaskId) -> Option<Arc<Value>> {
        let mut inner = self.lock();
        self.get_locked(&mut inner, task)
    }

    fn get_locked(&self, inner: &mut Inner, task: TaskId) -> Option<Arc<Value>> {
        let entry = inner.entries.get(&task)?;
        let (old, tier) = (entry.used, entry.tier);
        let value = match &entry.place {
            Place::Memory(v) | Place::Spilling(v) => v.clone(),
            Place::Disk(_) => return None,
        };
        if self.spiller.is_some() && inner.level(tier).lru.remove(&old).is_some() {
            let used = self.touch(inner, task, tier);
            if let Some(entry) = inner.entries.get_mut(&task) {
                entry.used = used;
            }
        }
        Some(value)
    }

    /// Keeps a value a client pushed under `key` until it is adopted or
    /// discarded.
    pub fn stage(&self, key: Key, value: Arc<Value>, now: Instant) {
        let mut inner = self.lock();
        inner.host.bytes += value.nbytes();
        if let Some((_, old)) = inner.staged.insert(key, (now, value)) {
            inner.host.bytes -= old.nbytes();
        }
        self.publish(&inner);
    }

    /// Makes the value staged or kept (an orphan) under `key` the result
    /// of `task`; false when nothing is held under it.
    pub fn adopt(&self, key: &Key, task: TaskId) -> bool {
        let value = {
            let mut inner = self.lock();
            if let Some(orphan) = inner.orphans.remove(key) {
                let found = self.rekey(&mut inner, orphan, task);
                drop(inner);
                self.adopted.notify_waiters();
                return found;
            }
            let Some((_, value)) = inner.staged.remove(key) else {
                return false;
            };
            inner.host.bytes -= value.nbytes();
            value
        };
        self.insert(task, value);
        self.adopted.notify_waiters();
        true
    }

    /// Drops staged values and orphans; returns how many there were.
    pub fn discard(&self, keys: &[Key]) -> usize {
        let mut inner = self.lock();
        let mut dropped = 0;
        for key in keys {
            if let Some((_, value)) = inner.staged.remove(key) {
                inner.host.bytes -= value.nbytes();
                dropped += 1;
            }
            if let Some(orphan) = inner.orphans.remove(key)
                && let Some(entry) = inner.entries.remove(&orphan)
            {
                Self::forget(&mut inner, &entry);
                dropped += 1;
            }
        }
        self.publish(&inner);
        dropped
    }

    /// The scheduler went away: keeps the results in `keep` (task and key),
    /// in whatever tier they are, as orphans filed by key until the next
    /// scheduler claims them ([`Store::adopt`]) or drops them
    /// ([`Store::discard`]); drops every other result and staged value.
    /// Returns every orphan, those kept from earlier schedulers included.
    pub fn orphan(&self, keep: Vec<(TaskId, Key)>) -> Vec<HeldResult> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for (task, key) in keep {
            if inner.orphans.contains_key(&key) {
                continue;
            }
            let orphan = TaskId::orphan(inner.next_orphan);
            if self.rekey(inner, task, orphan) {
                inner.next_orphan = inner.next_orphan.wrapping_add(1);
                inner.orphans.insert(key, orphan);
            }
        }
        let dropped: Vec<TaskId> = inner.entries.keys().filter(|t| !t.is_orphan()).copied().collect();
        for task in dropped {
            if let Some(entry) = inner.entries.remove(&task) {
                Self::forget(inner, &entry);
            }
        }
        for (_, (_, value)) in inner.staged.drain() {
            inner.host.bytes -= value.nbytes();
        }
        self.publish(inner);
        inner
            .orphans
            .iter()
            .filter_map(|(key, orphan)| {
                let entry = inner.entries.get(orphan)?;
                let tier = if matches!(entry.place, Place::Disk(_)) {
                    Tier::Disk
                } else {
                    entry.tier
                };
                Some(HeldResult {
                    key: key.clone(),
                    nbytes: entry.nbytes,
                    tier,
                })
            })
            .collect()
    }

    /// Files `from`'s result under `to`; false when there is none. A
    /// result on its way down a tier stays where it is: the mover finds
    /// nothing under `from` when it is done and drops what it made.
    fn rekey(&self, inner: &mut Inner, from: TaskId, to: TaskId) -> bool {
        let Some(mut entry) = inner.entries.remove(&from) else {
            return false;
        };
        let in_memory = match &entry.place {
            Place::Spilling(value) => {
                let value = value.clone();
                inner.level(entry.tier).leaving -= entry.nbytes;
                entry.place = Place::Memory(value);
                true
            }
            Place::Memory(_) => true,
            Place::Disk(_) => false,
        };
        if in_memory && self.spiller.is_some() {
            inner.level(entry.tier).lru.insert(entry.used, to);
        }
        if let Some(old) = inner.entries.insert(to, entry) {
            Self::forget(inner, &old);
        }
        true
    }

    /// Drops values staged before `now - ttl`: their scatter never
    /// completed (the client died between pushing and registering them).
    /// Returns how many.
    pub fn expire_staged(&self, now: Instant, ttl: Duration) -> usize {
        let mut inner = self.lock();
        let before = inner.staged.len();
        let mut freed = 0;
        inner.staged.retain(|_, (at, value)| {
            let keep = now.saturating_duration_since(*at) < ttl;
            if !keep {
                freed += value.nbytes();
            }
            keep
        });
        inner.host.bytes -= freed;
        self.publish(&inner);
        before - inner.staged.len()
    }

    /// Whether the store holds `task`'s result, in memory or on disk.
    pub fn contains(&self, task: TaskId) -> bool {
        self.lock().entries.contains_key(&task)
    }

    /// [`Store::load_all`], except that tasks not held while scattered
    /// values wait here for adoption are waited for, up to `patience`: the
    /// scheduler tells a client (or a peer) that a scattered value is here
    /// at the moment it sends this worker the `Adopt` that names it, so a
    /// request can overtake the adoption.
    pub async fn load_all_adopting(
        self: &Arc<Self>,
        tasks: Vec<TaskId>,
        patience: Duration,
    ) -> Vec<Option<Arc<Value>>> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut values = self.load_all(tasks.iter().copied()).await;
        // The usual case, everything held, costs no more than `load_all`.
        if values.iter().all(Option::is_some) {
            return values;
        }
        loop {
            // Listening before looking again, so that no adoption is missed.
            let adopted = self.adopted.notified();
            tokio::pin!(adopted);
            adopted.as_mut().enable();
            for (task, value) in tasks.iter().zip(values.iter_mut()) {
                if value.is_none() {
                    *value = self.load(*task).await;
                }
            }
            if values.iter().all(Option::is_some) || self.lock().staged.is_empty() {
                return values;
            }
            if tokio::time::timeout_at(deadline, adopted).await.is_err() {
                return values;
            }
        }
    }

    /// Results by task, in order, `None` for those not held; a result
    /// spilled to disk is read back first, off the caller's thread.
    pub async fn load_all(self: &Arc<Self>, tasks: impl IntoIterator<Item = TaskId>) -> Vec<Option<Arc<Value>>> {
        let mut values = Vec::new();
        for task in tasks {
            values.push(self.load(task).await);
        }
        values
    }

    /// One result, read back from disk if it was spilled; `None` when it is
    /// not held or cannot be read (the error is logged).
    pub async fn load(self: &Arc<Self>, task: TaskId) -> Option<Arc<Value>> {
        let file = {
            let mut inner = self.lock();
            if let Some(value) = self.get_locked(&mut inner, task) {
                return Some(value);
            }
            match &inner.entries.get(&task)?.place {
                Place::Disk(file) => file.clone(),
                Place::Memory(_) | Place::Spilling(_) => return None,
            }
        };
        let store = self.clone();
        let read = tokio::task::spawn_blocking(move || {
            let value = file.read(&store.pool).map(Arc::new);
            (store, file, value)
        })
        .await;
        let (store, file, value) = match read {
            Ok(done) => done,
            Err(e) => {
                error!(%task, error = %e, "reading a spilled result failed");
                return None;
            }
        };
        match value {
            Ok(value) => {
                store.unspilled(task, &file, value.clone());
                Some(value)
            }
            Err(e) => {
                error!(%task, dir = %store.spill_dir().display(), error = %e, "cannot read a spilled result back");
                None
            }
        }
    }

    /// Puts a result read from `file` back in memory, if it still is there.
    fn unspilled(&self, task: TaskId, file: &Arc<SpillFile>, value: Arc<Value>) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get(&task) else {
            return;
        };
        if !matches!(&entry.place, Place::Disk(f) if Arc::ptr_eq(f, file)) {
            return; // read twice at once, or replaced meanwhile
        }
        let nbytes = entry.nbytes;
        let used = self.touch(&mut inner, task, Tier::Host);
        if let Some(entry) = inner.entries.get_mut(&task) {
            entry.used = used;
            entry.place = Place::Memory(value);
        }
        inner.on_disk -= nbytes;
        inner.host.bytes += nbytes;
        (self.on_move)(task, Tier::Host);
        self.stats.unspilled.fetch_add(1, Ordering::Relaxed);
        self.stats.unspilled_bytes.fetch_add(nbytes, Ordering::Relaxed);
        // Keep the value just read: spill others first.
        self.settle(&mut inner);
    }

    /// Results held (staged values included) and the bytes of those in
    /// host memory.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.entries.len() + inner.staged.len(), inner.host.bytes)
    }

    /// What memory asks of the worker now. With `watch_process`, also
    /// spills when the process is past the spill threshold once the
    /// allocator has handed its free memory back.
    pub fn pressure(&self) -> Pressure {
        if self.config.limit == 0 {
            return Pressure::Normal;
        }
        let mut process = if self.config.watch_process { process_memory() } else { 0 };
        if process > self.config.bytes(self.config.spill) {
            // What the allocator keeps for reuse goes back first.
            allocator::release_freed_memory();
            process = process_memory();
        }
        let mut inner = self.lock();
        if process > self.config.bytes(self.config.spill) {
            // Memory the allocator holds is not ours to free: spill what
            // the process holds above the target, counted in results.
            let excess = process - self.config.bytes(self.config.target);
            let victims = self.spill(&mut inner, Tier::Host, excess);
            self.hand_to_spiller(victims);
        }
        let managed = inner.host.bytes - inner.host.leaving;
        if process > self.config.bytes(self.config.terminate) {
            Pressure::Terminate
        } else if managed.max(process) > self.config.bytes(self.config.pause) {
            Pressure::Pause
        } else {
            Pressure::Normal
        }
    }

    /// Moves device results to host memory on the calling thread until
    /// `bytes` are freed or none is left, and returns the bytes moved:
    /// what an allocation that found the device full asks before it tries
    /// again.
    pub fn free_device(&self, bytes: u64) -> u64 {
        let victims = self.spill(&mut self.lock(), Tier::Device, bytes);
        let mut freed = 0;
        for (task, value) in victims {
            freed += value.nbytes();
            let moved = to_host(&value);
            drop(value);
            self.moved(task, moved);
        }
        freed
    }

    fn touch(&self, inner: &mut Inner, task: TaskId, tier: Tier) -> u64 {
        inner.clock += 1;
        let used = inner.clock;
        if self.spiller.is_some() {
            inner.level(tier).lru.insert(used, task);
        }
        used
    }

    fn publish(&self, inner: &Inner) {
        self.stats.on_device.store(inner.device.bytes, Ordering::Relaxed);
        self.stats.in_memory.store(inner.host.bytes, Ordering::Relaxed);
        self.stats.on_disk.store(inner.on_disk, Ordering::Relaxed);
    }

    /// Sends results down a tier while a tier is past its target, then
    /// publishes the totals.
    fn settle(&self, inner: &mut Inner) {
        for tier in [Tier::Device, Tier::Host] {
            let victims = self.spill(inner, tier, 0);
            self.hand_to_spiller(victims);
        }
        self.publish(inner);
    }

    /// Gives results marked as leaving their tier to the spill thread.
    fn hand_to_spiller(&self, victims: Vec<(TaskId, Arc<Value>)>) {
        let Some(spiller) = &self.spiller else {
            return;
        };
        for job in victims {
            if spiller.send(job).is_err() {
                return; // the spill thread is gone with the store
            }
        }
    }

    /// Marks least recently used results of `tier` as leaving it until the
    /// tier is below its target and at least `excess` bytes are leaving;
    /// returns them for whoever moves them.
    fn spill(&self, inner: &mut Inner, tier: Tier, excess: u64) -> Vec<(TaskId, Arc<Value>)> {
        let mut victims = Vec::new();
        if self.spiller.is_none() {
            return victims;
        }
        let target = self.config.target_of(tier);
        let mut freed = 0;
        loop {
            let level = inner.level(tier);
            if level.bytes - level.leaving <= target && freed >= excess {
                break;
            }
            let Some((_, task)) = level.lru.pop_first() else {
                break;
            };
            let Some(entry) = inner.entries.get_mut(&task) else {
                continue;
            };
            let Place::Memory(value) = &entry.place else {
                continue;
            };
            let value = value.clone();
            entry.place = Place::Spilling(value.clone());
            let nbytes = entry.nbytes;
            inner.level(tier).leaving += nbytes;
            freed += nbytes;
            victims.push((task, value));
        }
        victims
    }

    /// A device result moved to host memory (or failed to).
    fn moved(&self, task: TaskId, moved: Result<Value, String>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(entry) = inner.entries.get_mut(&task) else {
            return;
        };
        let Place::Spilling(value) = &entry.place else {
            return;
        };
        let nbytes = entry.nbytes;
        inner.device.leaving -= nbytes;
        inner.device.bytes -= nbytes;
        inner.clock += 1;
        entry.used = inner.clock;
        match moved {
            Ok(host) => {
                entry.place = Place::Memory(Arc::new(host));
                entry.tier = Tier::Host;
                inner.host.bytes += nbytes;
                (self.on_move)(task, Tier::Host);
                self.stats.device_spilled.fetch_add(1, Ordering::Relaxed);
                self.stats.device_spilled_bytes.fetch_add(nbytes, Ordering::Relaxed);
            }
            Err(e) => {
                entry.place = Place::Memory(value.clone());
                inner.device.bytes += nbytes;
                self.spill_failed(task, &e);
            }
        }
        let (tier, used) = (entry.tier, entry.used);
        inner.level(tier).lru.insert(used, task);
        self.settle(inner);
    }

    /// The spill thread wrote `task` to disk (or failed to).
    fn spilled(&self, task: TaskId, written: std::io::Result<SpillFile>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(entry) = inner.entries.get_mut(&task) else {
            return; // released meanwhile; the file goes with `written`
        };
        let Place::Spilling(value) = &entry.place else {
            return;
        };
        let nbytes = entry.nbytes;
        inner.host.leaving -= nbytes;
        match written {
            Ok(file) => {
                entry.place = Place::Disk(Arc::new(file));
                inner.host.bytes -= nbytes;
                (self.on_move)(task, Tier::Disk);
                inner.on_disk += nbytes;
                self.stats.spilled.fetch_add(1, Ordering::Relaxed);
                self.stats.spilled_bytes.fetch_add(nbytes, Ordering::Relaxed);
            }
            Err(e) => {
                // Stays in memory, as the most recently used: trying it
                // again at once would fail the same way.
                entry.place = Place::Memory(value.clone());
                inner.clock += 1;
                entry.used = inner.clock;
                inner.host.lru.insert(inner.clock, task);
                self.spill_failed(task, &e.to_string());
            }
        }
        self.publish(inner);
    }

    fn spill_failed(&self, task: TaskId, reason: &str) {
        let errors = self.stats.spill_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if errors.is_power_of_two() {
            error!(%task, dir = %self.dir.path().display(), error = reason, errors,
                "cannot spill a result; it stays where it was");
        }
    }

    /// Whether `nbytes` more fit under the spill quota.
    fn quota_allows(&self, nbytes: u64) -> bool {
        let max = self.config.max_spill;
        max == 0 || self.stats.on_disk.load(Ordering::Relaxed) + nbytes <= max
    }
}

/// A copy of `value` in host memory.
fn to_host(value: &Value) -> Result<Value, String> {
    let frames = value
        .frames
        .iter()
        .map(|f| f.to_host().map(Buffer::host))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot copy a result off its device: {e}"))?;
    Ok(Value {
        header: value.header.clone(),
        frames,
    })
}

/// Starts the thread that moves results for `store`; `None` (logged) when
/// it cannot start, and results then stay where they are.
fn start_spill_thread(store: Weak<Store>) -> Option<crossbeam_channel::Sender<(TaskId, Arc<Value>)>> {
    let (jobs, queue) = crossbeam_channel::unbounded();
    let started = std::thread::Builder::new()
        .name("weft-spill".into())
        .spawn(move || spill_loop(&store, &queue));
    match started {
        Ok(_) => Some(jobs),
        Err(e) => {
            error!(error = %e, "cannot start the spill thread; results stay in memory");
            None
        }
    }
}

/// Writes results handed over by the store until it is dropped.
fn spill_loop(store: &Weak<Store>, queue: &crossbeam_channel::Receiver<(TaskId, Arc<Value>)>) {
    for (task, value) in queue {
        let Some(store) = store.upgrade() else {
            return;
        };
        if value.tier() == Tier::Device {
            let moved = to_host(&value);
            drop(value);
            store.moved(task, moved);
            continue;
        }
        let written = if store.quota_allows(value.nbytes()) {
            store.dir.write(&value)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("the spill quota of {} bytes is used up", store.config.max_spill),
            ))
        };
        drop(value);
        store.spilled(task, written);
    }
    info!("spill thread done");
}

/// Memory this machine (or the cgroup this process is confined to) has, in
/// bytes; 0 where unknown.
pub fn machine_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|m| m.trim().parse::<u64>().ok());
    match cgroup {
        Some(limit) if total == 0 || limit < total => limit,
        _ => total,
    }
}

/// Resident memory of this process in bytes (0 where unknown).
pub fn process_memory() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::STAGED_TTL;

    #[test]
    fn a_process_past_the_spill_fraction_sends_results_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB for a test process that holds far more: the process is past
        // every threshold while its results (100 KB) are below the target.
        let config = MemoryConfig {
            limit: 1 << 20,
            spill_dir: dir.path().into(),
            watch_process: true,
            ..MemoryConfig::default()
        };
        let stats = Arc::new(MemoryStats::default());
        let store = Store::new(config, "w", stats.clone(), |_, _| {});
        store.insert(TaskId::new(1), Arc::new(Value::encode(&vec![7u8; 100_000]).unwrap()));
        assert_eq!(stats.snapshot().spilled, 0, "below the target");
        assert_eq!(store.pressure(), Pressure::Terminate);
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.snapshot().spilled == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stats.snapshot().spilled, 1, "handed to the spill thread and written");
        assert_eq!(stats.snapshot().in_memory, 0);
    }

    #[tokio::test]
    async fn a_request_that_overtakes_an_adoption_waits_for_it() {
        let store = Store::unlimited();
        let value = Arc::new(Value::encode(&7u64).unwrap());
        let patience = Duration::from_secs(10);
        // Nothing staged: what is not held is answered missing at once.
        let started = Instant::now();
        assert!(store.load_all_adopting(vec![TaskId::new(1)], patience).await[0].is_none());
        assert!(started.elapsed() < patience);
        // Staged, its `Adopt` still on its way: the request waits for it.
        store.stage("s".into(), value.clone(), Instant::now());
        let adopter = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                assert!(store.adopt(&"s".into(), TaskId::new(1)));
            })
        };
        let got = store.load_all_adopting(vec![TaskId::new(1)], patience).await;
        assert_eq!(got[0], Some(value));
        adopter.await.unwrap();
        // Staged but never adopted under this task: missing after the wait.
        store.stage("t".into(), Arc::new(Value::encode(&8u64).unwrap()), Instant::now());
        let short = Duration::from_millis(30);
        assert!(store.load_all_adopting(vec![TaskId::new(2)], short).await[0].is_none());
    }

    #[test]
    fn staged_values_are_adopted_discarded_or_expire() {
        let store = Store::unlimited();
        let t0 = Instant::now();
        let value = |i: u64| Arc::new(Value::encode(&i).unwrap());
        let size = value(1).nbytes();
        store.stage("a".into(), value(1), t0);
        store.stage("b".into(), value(2), t0);
        store.stage("c".into(), value(3), t0 + Duration::from_secs(10));
        assert_eq!(store.usage(), (3, 3 * size));
        // Staged values are not results until adopted.
        assert!(store.get(TaskId::new(1)).is_none());
        assert!(store.adopt(&"a".into(), TaskId::new(1)));
        assert_eq!(store.get(TaskId::new(1)), Some(value(1)));
        assert!(!store.adopt(&"a".into(), TaskId::new(2)), "adopted once");
        assert_eq!(store.discard(&["b".into(), "zz".into()]), 1);
        assert_eq!(store.usage(), (2, 2 * size));
        // Only what waited longer than the TTL expires.
        assert_eq!(
            store.expire_staged(t0 + STAGED_TTL + Duration::from_secs(1), STAGED_TTL),
            0
        );
        assert_eq!(
            store.expire_staged(t0 + STAGED_TTL + Duration::from_secs(10), STAGED_TTL),
            1
        );
        assert!(!store.adopt(&"c".into(), TaskId::new(3)));
        assert_eq!(store.usage(), (1, size));
        store.remove(TaskId::new(1));
        assert_eq!(store.usage(), (0, 0));
    }
}
