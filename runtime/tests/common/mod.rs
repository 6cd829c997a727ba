//! What the runtime's cluster tests share.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use weft_runtime::store::MemoryConfig;
use weft_runtime::{LocalCluster, LocalOptions, Registry, WorkerMode};

/// `workers` single-threaded in-process workers with `memory` each and
/// the ops of `registry`.
pub async fn cluster(workers: usize, memory: MemoryConfig, registry: Registry) -> LocalCluster {
    let mut options = LocalOptions::for_this_machine();
    options.workers = workers;
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    options.registry = Arc::new(registry);
    options.memory = memory;
    LocalCluster::start(options).await.unwrap()
}

/// A memory limit of `limit` bytes, spilling under `spill_dir`.
pub fn spill_to(limit: u64, spill_dir: PathBuf) -> MemoryConfig {
    MemoryConfig {
        limit,
        spill_dir,
        ..MemoryConfig::default()
    }
}
