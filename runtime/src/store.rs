//! A worker's store of results, by task and by key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::debug;

use crate::ids::{Key, TaskId};
use crate::value::Value;

/// What to look a result up by.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Its task (peers fetching inputs).
    Task(TaskId),
    /// Its key (clients gathering).
    Key(Key),
}

/// A worker's results, by task and by key.
#[derive(Default)]
pub struct Store {
    inner: Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    values: HashMap<TaskId, (Option<Key>, Arc<Value>)>,
    by_key: HashMap<Key, TaskId>,
    bytes: u64,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        // Maps of shared values stay consistent across a panic elsewhere:
        // every update below is a single insert or remove pair.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a result; `key` indexes it for clients (replicas fetched
    /// from peers come without one).
    pub fn insert(&self, task: TaskId, key: Option<Key>, value: Arc<Value>) {
        let mut inner = self.lock();
        inner.bytes += value.nbytes();
        if let Some(key) = &key {
            inner.by_key.insert(key.clone(), task);
        }
        if let Some((_, old)) = inner.values.insert(task, (key, value)) {
            inner.bytes -= old.nbytes();
            debug!(%task, "result replaced");
        }
    }

    /// Drops a result.
    pub fn remove(&self, task: TaskId) {
        let mut inner = self.lock();
        if let Some((key, value)) = inner.values.remove(&task) {
            inner.bytes -= value.nbytes();
            if let Some(key) = key
                && inner.by_key.get(&key) == Some(&task)
            {
                inner.by_key.remove(&key);
            }
        }
    }

    /// A result by task.
    pub fn get(&self, task: TaskId) -> Option<Arc<Value>> {
        self.lock().values.get(&task).map(|(_, v)| v.clone())
    }

    /// A result by key.
    pub fn get_key(&self, key: &str) -> Option<Arc<Value>> {
        let inner = self.lock();
        let task = inner.by_key.get(key)?;
        inner.values.get(task).map(|(_, v)| v.clone())
    }

    /// Results by task or key, in order, `None` for those not held; a
    /// result spilled to disk is read back first, off the caller's thread.
    pub async fn load_all(&self, items: impl IntoIterator<Item = Lookup>) -> Vec<Option<Arc<Value>>> {
        items
            .into_iter()
            .map(|item| match item {
                Lookup::Task(task) => self.get(task),
                Lookup::Key(key) => self.get_key(&key),
            })
            .collect()
    }

    /// Drops everything (the scheduler that knew of it is gone).
    pub fn clear(&self) {
        *self.lock() = StoreInner::default();
    }

    /// Results held and their total size.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.values.len(), inner.bytes)
    }
}
