//! What the frame's integration tests share.

use std::sync::Arc;

pub mod peers;

use weft_frame::Frames;
use weft_runtime::{LocalCluster, LocalOptions, Registry, WorkerMode};

/// Two single-threaded in-process workers with the frame's ops, and frames
/// over a client of theirs (progress bars off).
pub async fn cluster() -> (LocalCluster, Frames) {
    cluster_on(Vec::new()).await
}

/// [`cluster`] with one worker per GPU of `gpus` (when there are any).
pub async fn cluster_on(gpus: Vec<Arc<weft_gpu::Gpu>>) -> (LocalCluster, Frames) {
    let mut options = LocalOptions::for_this_machine();
    options.workers = if gpus.is_empty() { 2 } else { gpus.len() };
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    options.in_process_gpus = gpus;
    let mut registry = Registry::builtin();
    weft_frame::register(&mut registry);
    options.registry = Arc::new(registry);
    let cluster = LocalCluster::start(options).await.expect("a local cluster");
    let client = cluster.client().await.expect("a client");
    client.set_progress(false);
    (cluster, Frames::new(client))
}
