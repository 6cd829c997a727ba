//! Hash shuffles through the runtime's P2P shuffle service: the same
//! answers as the task shuffle, `explain` shows them, and a shuffle of
//! twice the workers' memory completes by spilling.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use weft_frame::{Frames, JoinType, LazyFrame, PlanOptions, col, len};
use weft_runtime::store::{MemoryConfig, MemorySnapshot};
use weft_runtime::{LocalCluster, LocalOptions, Registry, WorkerMode};

/// Two single-threaded in-process workers with `memory`, and frames that
/// shuffle through the P2P service whatever the size.
async fn cluster(memory: MemoryConfig) -> (LocalCluster, Frames) {
    let mut options = LocalOptions::for_this_machine();
    options.workers = 2;
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    options.memory = memory;
    let mut registry = Registry::builtin();
    weft_frame::register(&mut registry);
    options.registry = Arc::new(registry);
    let cluster = LocalCluster::start(options).await.unwrap();
    let client = cluster.client().await.unwrap();
    client.set_progress(false);
    let frames = Frames::new(client).with_options(PlanOptions {
        p2p_min_pieces: 1,
        ..PlanOptions::default()
    });
    (cluster, frames)
}

/// The same frames shuffling as tasks.
fn task_shuffles(frames: &Frames) -> Frames {
    frames.clone().with_options(PlanOptions {
        p2p_min_pieces: usize::MAX,
        ..PlanOptions::default()
    })
}

/// Rows and value sums per key, by key.
async fn per_key(frame: &LazyFrame) -> (Vec<i64>, Vec<i64>, Vec<f64>) {
    let batch: RecordBatch = frame
        .group_by([col("key")])
        .agg([len().alias("n"), col("value").sum().alias("s")])
        .sort([col("key")], &[false])
        .collect()
        .await
        .unwrap();
    (
        batch.column(0).as_primitive::<Int64Type>().values().to_vec(),
        batch.column(1).as_primitive::<Int64Type>().values().to_vec(),
        batch.column(2).as_primitive::<Float64Type>().values().to_vec(),
    )
}

fn assert_same(p2p: &(Vec<i64>, Vec<i64>, Vec<f64>), tasks: &(Vec<i64>, Vec<i64>, Vec<f64>)) {
    assert_eq!(p2p.0, tasks.0, "keys");
    assert_eq!(p2p.1, tasks.1, "rows per key");
    for (a, b) in p2p.2.iter().zip(&tasks.2) {
        assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{a} {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_shuffles_and_joins_answer_as_the_task_shuffle_does() {
    let (cluster, frames) = cluster(MemoryConfig::default()).await;
    let tasks = task_shuffles(&frames);
    let shuffled = |f: &Frames| f.random(20_000, 8, 300).shuffle([col("key")], 6);
    let explained = shuffled(&frames).explain().unwrap();
    assert!(explained.contains("p2p shuffle of 8 inputs"), "{explained}");
    assert!(
        !task_shuffles(&frames)
            .random(20_000, 8, 300)
            .shuffle([col("key")], 6)
            .explain()
            .unwrap()
            .contains("p2p")
    );
    assert_same(&per_key(&shuffled(&frames)).await, &per_key(&shuffled(&tasks)).await);
    // A join that shuffles both sides, and a group-by split over outputs.
    let joined = |f: &Frames| {
        let f = f.clone().with_options(PlanOptions {
            broadcast_rows: 0,
            ..f.options().clone()
        });
        let left = f.random(6_000, 5, 200);
        let right = f
            .random(4_000, 7, 200)
            .select([col("key").alias("k"), col("value").alias("v")]);
        left.join(&right, &["key"], &["k"], JoinType::Inner)
    };
    let explained = joined(&frames).explain().unwrap();
    assert!(explained.contains("join-left-pieces: p2p shuffle"), "{explained}");
    assert_eq!(
        joined(&frames).count().await.unwrap(),
        joined(&tasks).count().await.unwrap()
    );
    let split = |f: &Frames| {
        f.random(20_000, 8, 5_000)
            .group_by([col("key")])
            .split_out(5)
            .agg([len().alias("n"), col("value").sum().alias("value")])
    };
    assert_same(&per_key(&split(&frames)).await, &per_key(&split(&tasks)).await);
    drop((frames, tasks));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shuffle_of_twice_the_memory_limit_spills_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    // Two workers of 4 MiB; 10^6 rows of 16 bytes are twice both, and
    // every row is kept twice on the way (piece and output).
    let memory = MemoryConfig {
        limit: 4 << 20,
        spill_dir: dir.path().into(),
        ..MemoryConfig::default()
    };
    let (cluster, frames) = cluster(memory).await;
    let rows = 1_000_000;
    let input = frames.random(rows, 16, 1_000);
    let key_sum = |f: &LazyFrame| {
        let f = f.select([col("key").sum()]);
        async move {
            f.collect()
                .await
                .unwrap()
                .column(0)
                .as_primitive::<Int64Type>()
                .value(0)
        }
    };
    let expected = key_sum(&input).await;
    let shuffled = input.shuffle([col("key")], 16).persist().await.unwrap();
    assert_eq!(shuffled.count().await.unwrap(), rows);
    assert_eq!(key_sum(&shuffled).await, expected);
    let stats: MemorySnapshot = cluster.memory().into_iter().sum();
    println!("{stats:?}");
    assert!(stats.spilled > 0, "pieces and outputs went to disk: {stats:?}");
    assert_eq!(stats.spill_errors, 0);
    drop((shuffled, input, frames));
    cluster.stop().await;
}
