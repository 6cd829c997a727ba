//! A worker's store of results, with its memory manager: results live in
//! memory until the worker's host memory passes the target fraction of its
//! limit, then the least recently used ones are written to disk on a
//! spill thread and read back, off the event loop, when asked for.
//!
//! The thresholds follow Dask ([`MemoryConfig`]): spill past `target` of
//! the limit (managed memory) or `spill` (the process's memory), pause
//! taking new tasks past `pause`, give up past `terminate`. A write that
//! fails (full disk, unwritable directory, over the spill quota) leaves
//! the result in memory: nothing is lost by spilling.

mod spill;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tracing::{debug, error, info};
use weft_transport::BufferPool;

pub use spill::{SpillDir, SpillFile};

use crate::ids::{Key, TaskId};
use crate::value::Value;

/// Idle read buffers kept for results coming back from disk.
const UNSPILL_POOL_BYTES: usize = 256 << 20;

/// How a worker manages the memory of its results.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConfig {
    /// Host memory for this worker in bytes; 0 turns spilling and pausing
    /// off.
    pub limit: u64,
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
}

/// Counters of a worker's memory manager, shared with whoever watches it.
#[derive(Debug, Default)]
pub struct MemoryStats {
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySnapshot {
    /// Bytes of results in memory.
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

impl MemoryStats {
    /// The counters now.
    pub fn snapshot(&self) -> MemorySnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MemorySnapshot {
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

/// What to look a result up by.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Its task (peers fetching inputs).
    Task(TaskId),
    /// Its key (clients gathering).
    Key(Key),
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

/// A worker's results, by task and by key.
pub struct Store {
    inner: Mutex<Inner>,
    config: MemoryConfig,
    dir: Arc<SpillDir>,
    stats: Arc<MemoryStats>,
    pool: BufferPool,
    /// Results for the spill thread (when there is a limit).
    spiller: Option<crossbeam_channel::Sender<(TaskId, Arc<Value>)>>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<TaskId, Entry>,
    by_key: HashMap<Key, TaskId>,
    /// Results in memory by last use, oldest first (with a limit only).
    lru: BTreeMap<u64, TaskId>,
    clock: u64,
    /// Bytes in memory, including results being written out.
    in_memory: u64,
    /// Of those, bytes being written out.
    spilling: u64,
    on_disk: u64,
}

struct Entry {
    key: Option<Key>,
    nbytes: u64,
    /// Its place in the LRU order while in memory.
    used: u64,
    place: Place,
}

enum Place {
    Memory(Arc<Value>),
    /// In memory and being written to disk.
    Spilling(Arc<Value>),
    Disk(Arc<SpillFile>),
}

impl Store {
    /// A store managed by `config`, counting into `stats`; spilled results
    /// go to a directory of their own under `config.spill_dir`, named after
    /// `worker`.
    pub fn new(config: MemoryConfig, worker: &str, stats: Arc<MemoryStats>) -> Arc<Store> {
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
            let spiller = (config.limit > 0).then(|| {
                let (jobs, queue) = crossbeam_channel::unbounded();
                let store = store.clone();
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
            });
            Store {
                inner: Mutex::default(),
                config,
                dir,
                stats,
                pool: BufferPool::new(UNSPILL_POOL_BYTES),
                spiller: spiller.flatten(),
            }
        })
    }

    /// A store without a limit (nothing is ever spilled).
    pub fn unlimited() -> Arc<Store> {
        Store::new(MemoryConfig::default(), "unlimited", Arc::default())
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

    /// Keeps a result; `key` indexes it for clients (replicas fetched
    /// from peers come without one). May send older results to disk.
    pub fn insert(&self, task: TaskId, key: Option<Key>, value: Arc<Value>) {
        let mut inner = self.lock();
        let nbytes = value.nbytes();
        if let Some(key) = &key {
            inner.by_key.insert(key.clone(), task);
        }
        let used = self.touch(&mut inner, task);
        inner.in_memory += nbytes;
        let old = inner.entries.insert(
            task,
            Entry {
                key,
                nbytes,
                used,
                place: Place::Memory(value),
            },
        );
        if let Some(old) = old {
            debug!(%task, "result replaced");
            Self::forget(&mut inner, &old);
        }
        self.publish(&inner);
        self.spill_excess(&mut inner, 0);
    }

    /// Drops a result, wherever it is.
    pub fn remove(&self, task: TaskId) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.remove(&task) {
            Self::forget(&mut inner, &entry);
            if let Some(key) = &entry.key
                && inner.by_key.get(key) == Some(&task)
            {
                inner.by_key.remove(key);
            }
            self.publish(&inner);
        }
    }

    /// Takes an entry's bytes out of the totals and the LRU order.
    fn forget(inner: &mut Inner, entry: &Entry) {
        match entry.place {
            Place::Memory(_) => inner.in_memory -= entry.nbytes,
            Place::Spilling(_) => {
                inner.in_memory -= entry.nbytes;
                inner.spilling -= entry.nbytes;
            }
            Place::Disk(_) => inner.on_disk -= entry.nbytes,
        }
        inner.lru.remove(&entry.used);
    }

    /// A result by task if it is in memory (marking it used).
    pub fn get(&self, task: TaskId) -> Option<Arc<Value>> {
        let mut inner = self.lock();
        self.get_locked(&mut inner, task)
    }

    /// A result by key if it is in memory.
    pub fn get_key(&self, key: &str) -> Option<Arc<Value>> {
        let mut inner = self.lock();
        let task = *inner.by_key.get(key)?;
        self.get_locked(&mut inner, task)
    }

    fn get_locked(&self, inner: &mut Inner, task: TaskId) -> Option<Arc<Value>> {
        let old = inner.entries.get(&task)?.used;
        let value = match &inner.entries.get(&task)?.place {
            Place::Memory(v) | Place::Spilling(v) => v.clone(),
            Place::Disk(_) => return None,
        };
        if self.spiller.is_some() && inner.lru.remove(&old).is_some() {
            let used = self.touch(inner, task);
            if let Some(entry) = inner.entries.get_mut(&task) {
                entry.used = used;
            }
        }
        Some(value)
    }

    /// Whether the store holds `task`'s result, in memory or on disk.
    pub fn contains(&self, task: TaskId) -> bool {
        self.lock().entries.contains_key(&task)
    }

    /// Results by task or key, in order, `None` for those not held; a
    /// result spilled to disk is read back first, off the caller's thread.
    pub async fn load_all(self: &Arc<Self>, items: impl IntoIterator<Item = Lookup>) -> Vec<Option<Arc<Value>>> {
        let mut values = Vec::new();
        for item in items {
            let task = match item {
                Lookup::Task(task) => Some(task),
                Lookup::Key(key) => self.lock().by_key.get(&key).copied(),
            };
            values.push(match task {
                Some(task) => self.load(task).await,
                None => None,
            });
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
        let used = self.touch(&mut inner, task);
        if let Some(entry) = inner.entries.get_mut(&task) {
            entry.used = used;
            entry.place = Place::Memory(value);
        }
        inner.on_disk -= nbytes;
        inner.in_memory += nbytes;
        self.stats.unspilled.fetch_add(1, Ordering::Relaxed);
        self.stats.unspilled_bytes.fetch_add(nbytes, Ordering::Relaxed);
        self.publish(&inner);
        // Keep the value just read: spill others first.
        self.spill_excess(&mut inner, 0);
    }

    /// Drops everything (the scheduler that knew of it is gone).
    pub fn clear(&self) {
        let mut inner = self.lock();
        *inner = Inner::default();
        self.publish(&inner);
    }

    /// Results held and the bytes of those in memory.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.entries.len(), inner.in_memory)
    }

    /// What memory asks of the worker now. With `watch_process`, also
    /// spills when the process is past the spill threshold.
    pub fn pressure(&self) -> Pressure {
        if self.config.limit == 0 {
            return Pressure::Normal;
        }
        let mut inner = self.lock();
        let process = if self.config.watch_process { process_memory() } else { 0 };
        if process > self.config.bytes(self.config.spill) {
            // Memory the allocator holds is not ours to free: spill what
            // the process holds above the target, counted in results.
            let excess = process - self.config.bytes(self.config.target);
            self.spill_excess(&mut inner, excess);
        }
        let managed = inner.in_memory - inner.spilling;
        if process > self.config.bytes(self.config.terminate) {
            Pressure::Terminate
        } else if managed.max(process) > self.config.bytes(self.config.pause) {
            Pressure::Pause
        } else {
            Pressure::Normal
        }
    }

    fn touch(&self, inner: &mut Inner, task: TaskId) -> u64 {
        inner.clock += 1;
        if self.spiller.is_some() {
            inner.lru.insert(inner.clock, task);
        }
        inner.clock
    }

    fn publish(&self, inner: &Inner) {
        self.stats.in_memory.store(inner.in_memory, Ordering::Relaxed);
        self.stats.on_disk.store(inner.on_disk, Ordering::Relaxed);
    }

    /// Sends least recently used results to the spill thread until managed
    /// memory is below the target, or at least `excess` bytes are on
    /// their way out.
    fn spill_excess(&self, inner: &mut Inner, excess: u64) {
        let Some(spiller) = &self.spiller else {
            return;
        };
        let target = self.config.bytes(self.config.target);
        let mut freed = 0;
        while inner.in_memory - inner.spilling > target || freed < excess {
            let Some((_, task)) = inner.lru.pop_first() else {
                return;
            };
            let Some(entry) = inner.entries.get_mut(&task) else {
                continue;
            };
            let Place::Memory(value) = &entry.place else {
                continue;
            };
            let value = value.clone();
            entry.place = Place::Spilling(value.clone());
            inner.spilling += entry.nbytes;
            freed += entry.nbytes;
            if spiller.send((task, value)).is_err() {
                return; // the spill thread is gone with the store
            }
        }
    }

    /// The spill thread wrote `task` (or failed to).
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
        inner.spilling -= nbytes;
        match written {
            Ok(file) => {
                entry.place = Place::Disk(Arc::new(file));
                inner.in_memory -= nbytes;
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
                inner.lru.insert(inner.clock, task);
                let errors = self.stats.spill_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if errors.is_power_of_two() {
                    error!(%task, dir = %self.dir.path().display(), error = %e, errors,
                        "cannot spill a result to disk; it stays in memory");
                }
            }
        }
        self.publish(inner);
    }

    /// Whether `nbytes` more fit under the spill quota.
    fn quota_allows(&self, nbytes: u64) -> bool {
        let max = self.config.max_spill;
        max == 0 || self.stats.on_disk.load(Ordering::Relaxed) + nbytes <= max
    }
}

/// Writes results handed over by the store until it is dropped.
fn spill_loop(store: &Weak<Store>, queue: &crossbeam_channel::Receiver<(TaskId, Arc<Value>)>) {
    for (task, value) in queue {
        let Some(store) = store.upgrade() else {
            return;
        };
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
