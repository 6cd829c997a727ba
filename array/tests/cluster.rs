//! End to end on a local cluster (in-process workers over TCP): creation,
//! fused elementwise chains and reductions, matmul and gathering, with the
//! same answers as computing in this process, whatever the number of
//! workers, and whether they compute on the CPU or on (emulated) GPUs.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use weft_array::{Array, Chunks, DType, RechunkOptions, arange, from_slice, random, registry};
use weft_gpu::Gpu;
use weft_runtime::store::{MemoryConfig, MemorySnapshot};
use weft_runtime::{LocalCluster, LocalOptions, WorkerMode};

/// `workers` CPU workers, or with `gpus` one worker per emulated GPU.
async fn cluster(workers: usize, gpus: bool) -> LocalCluster {
    let mut options = LocalOptions::for_this_machine();
    options.workers = workers;
    if gpus {
        options.in_process_gpus = (0..workers as u32).map(|i| Gpu::emulated(i, 256 << 20, true)).collect();
    }
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    options.registry = Arc::new(registry());
    LocalCluster::start(options).await.unwrap()
}

fn pipeline() -> Vec<Array> {
    let x = random::random(11, &[60, 60], &[16, 25]).unwrap();
    let xt = x.t();
    let y = (&(&x + &xt).unwrap() * 0.5).unwrap();
    let z = random::normal(12, &[60, 60], &[16, 25], 0.0, 1.0).unwrap();
    let i = arange(0i64, 60i64, 1i64, 25).unwrap().astype(DType::F64);
    vec![
        y.sum(None).unwrap(),
        y.mean(Some(&[1])).unwrap(),
        (&y - &z).unwrap().std(Some(&[0]), 1).unwrap(),
        (&z * &i).unwrap().max(Some(&[0])).unwrap(),
        z.argmin(None).unwrap(),
        y.matmul(&z.t()).unwrap(),
        x.clone(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_gives_the_same_answers_on_any_cluster() {
    let local: Vec<Vec<f64>> = pipeline()
        .iter()
        .map(|a| a.compute_local(&registry()).unwrap().to_f64())
        .collect();
    for (workers, gpus) in [(1, false), (3, false), (2, true)] {
        let cluster = cluster(workers, gpus).await;
        let client = cluster.client().await.unwrap();
        for (i, a) in pipeline().iter().enumerate() {
            let host = a.to_host(&client).await.unwrap();
            assert_eq!(host.shape, a.shape());
            let got = host.to_f64();
            for (x, y) in got.iter().zip(&local[i]) {
                assert!(
                    (x - y).abs() <= 1e-9 * (1.0 + y.abs()),
                    "result {i} on {workers} workers (GPUs: {gpus}): {x} vs {y}"
                );
            }
        }
        drop(client);
        cluster.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_plus_x_t_sum_runs_as_one_task_per_chunk_plus_the_tree() {
    let cluster = cluster(2, false).await;
    let client = cluster.client().await.unwrap();
    let n = 40;
    let values: Vec<f64> = (0..n * n).map(|i| i as f64).collect();
    let x = from_slice(&values, &[n, n], &[10, 10]).unwrap();
    let s = (&x + &x.t()).unwrap().sum(None).unwrap();
    let graph = s.graph();
    // 16 input chunks, 16 fused tasks, combines 16 -> 2 -> 1.
    assert_eq!(graph.tasks.len(), 16 + 16 + 3);
    assert_eq!(graph.tasks.iter().filter(|t| &*t.op == "array.fused").count(), 16);
    let host = s.to_host(&client).await.unwrap();
    assert_eq!(host.to_f64(), vec![2.0 * values.iter().sum::<f64>()]);
    drop(client);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scattered_buffer_is_chunks_in_the_workers_memory() {
    let cluster = cluster(2, false).await;
    let client = cluster.client().await.unwrap();
    let values: Vec<f32> = (0..30 * 20).map(|i| i as f32 * 0.5).collect();
    let x = weft_array::scatter(&client, &values, &[30, 20], &[8, 7]).await.unwrap();
    assert_eq!(x.chunks().nblocks(), 4 * 3);
    // No task makes them: they are on the workers already, spread over both.
    let graph = x.graph();
    assert!(graph.tasks.is_empty());
    let holders: std::collections::BTreeSet<_> = client
        .who_has(&graph.outputs)
        .await
        .unwrap()
        .into_iter()
        .map(|peers| peers[0].worker)
        .collect();
    assert_eq!(holders.len(), 2);
    // Gathered back as they were, and read by tasks like any chunk.
    assert_eq!(x.to_host(&client).await.unwrap().into_vec::<f32>().unwrap(), values);
    let total = (&x + &x.t().t()).unwrap().sum(None).unwrap();
    let want: f64 = values.iter().map(|&v| 2.0 * f64::from(v)).sum();
    assert_eq!(total.to_host(&client).await.unwrap().to_f64(), vec![want]);
    // The data must fit the shape.
    let err = weft_array::scatter(&client, &values, &[30, 21], &[8, 7])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("[30, 21]"), "{err}");
    drop(client);
    cluster.stop().await;
}

/// Two single-threaded workers with a 4 MiB memory limit each, spilling.
async fn small_cluster(dir: &std::path::Path) -> LocalCluster {
    let mut options = LocalOptions::for_this_machine();
    options.workers = 2;
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    options.registry = Arc::new(registry());
    options.memory = MemoryConfig {
        limit: 4 << 20,
        spill_dir: dir.into(),
        ..MemoryConfig::default()
    };
    LocalCluster::start(options).await.unwrap()
}

/// Rechunks 1024 x 1024 float64s (8 MiB: twice one worker's 4 MiB limit,
/// as much as both hold, before counting the column blocks being built)
/// from row blocks to column blocks with `options`; asserts it spilled.
async fn rechunk_past_the_memory_limit(options: RechunkOptions, explained: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = small_cluster(dir.path()).await;
    let client = cluster.client().await.unwrap();
    let x = random::random(21, &[1024, 1024], &[64, 1024]).unwrap();
    let y = x
        .rechunk_to(Chunks::regular(&[1024, 1024], &[1024, 64]).unwrap(), &options)
        .unwrap();
    assert_eq!(y.chunks().0, vec![vec![1024], vec![64; 16]]);
    assert!(y.explain().contains(explained), "{}", y.explain());
    let got = y.to_host(&client).await.unwrap();
    assert_eq!(got.to_f64(), x.compute_local(&registry()).unwrap().to_f64());
    let stats: MemorySnapshot = cluster.memory().into_iter().sum();
    assert!(stats.spilled > 0 && stats.spilled_bytes >= 4 << 20, "{stats:?}");
    drop(client);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rechunk_larger_than_a_workers_memory_spills_and_completes() {
    let assemble = RechunkOptions {
        p2p_min_pieces: usize::MAX,
        ..RechunkOptions::default()
    };
    rechunk_past_the_memory_limit(assemble, "layer rechunk-assemble").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2p_rechunk_larger_than_a_workers_memory_spills_and_completes() {
    let p2p = RechunkOptions {
        p2p_min_pieces: 0,
        ..RechunkOptions::default()
    };
    rechunk_past_the_memory_limit(p2p, "p2p rechunk: 16 transfers push 256 pieces").await;
}

/// Random chunk lengths of `shape`: regular, with a ragged last chunk.
fn chunking(rng: &mut fastrand::Rng, shape: &[usize]) -> Vec<usize> {
    shape.iter().map(|&n| rng.usize(1..=n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2p_rechunk_gives_the_assemble_paths_values_on_cpus_and_gpus() {
    let p2p = RechunkOptions {
        p2p_min_pieces: 0,
        ..RechunkOptions::default()
    };
    let assemble = RechunkOptions {
        p2p_min_pieces: usize::MAX,
        ..RechunkOptions::default()
    };
    // Row blocks to column blocks, then random 2-d and 3-d chunkings.
    let mut cases = vec![(vec![37, 29], vec![4, 29], vec![37, 5])];
    let mut rng = fastrand::Rng::with_seed(5);
    while cases.len() < 7 {
        let nd = 2 + cases.len() % 2;
        let shape: Vec<usize> = (0..nd)
            .map(|_| rng.usize(1..=(if nd == 2 { 40 } else { 12 })))
            .collect();
        let (from, to) = (chunking(&mut rng, &shape), chunking(&mut rng, &shape));
        if Chunks::regular(&shape, &from).unwrap() != Chunks::regular(&shape, &to).unwrap() {
            cases.push((shape, from, to));
        }
    }
    for gpus in [false, true] {
        let cluster = cluster(2, gpus).await;
        let client = cluster.client().await.unwrap();
        for (i, (shape, from, to)) in cases.iter().enumerate() {
            let x = random::random(30 + i as u64, shape, from).unwrap();
            // An integer array too, for one case.
            let x = if i == 1 {
                (&x * 100.0).unwrap().astype(DType::I32)
            } else {
                x
            };
            let chunks = Chunks::regular(shape, to).unwrap();
            let y = x.rechunk_to(chunks.clone(), &p2p).unwrap();
            assert!(y.explain().contains("p2p rechunk"), "{}", y.explain());
            let z = x.rechunk_to(chunks, &assemble).unwrap();
            let (got, want) = (y.to_host(&client).await.unwrap(), z.to_host(&client).await.unwrap());
            let what = format!("{shape:?} in {from:?} to {to:?} (GPUs: {gpus})");
            assert_eq!(got.dtype(), x.dtype(), "{what}");
            assert_eq!(got.to_f64(), want.to_f64(), "{what}");
            assert_eq!(got.to_f64(), x.to_host(&client).await.unwrap().to_f64(), "{what}");
        }
        drop(client);
        cluster.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_mid_p2p_rechunk_restarts_it_and_the_values_stay_right() {
    let mut registry = registry();
    // The chunk, after 100 ms: slow inputs, so that a worker is lost while
    // the shuffle runs.
    registry.raw_op("slowly", |_, _, inputs| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        Ok((*inputs[0]).clone())
    });
    let mut options = LocalOptions::for_this_machine();
    options.workers = 3;
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    options.registry = Arc::new(registry);
    let mut cluster = LocalCluster::start(options).await.unwrap();
    let client = cluster.client().await.unwrap();
    let values: Vec<f64> = (0..60 * 48).map(f64::from).collect();
    // 30 row blocks of 100 ms on 3 workers: a second at least.
    let x = from_slice(&values, &[60, 48], &[2, 48])
        .unwrap()
        .map_blocks("slowly", Default::default(), DType::F64);
    let p2p = RechunkOptions {
        p2p_min_pieces: 0,
        ..RechunkOptions::default()
    };
    let y = x
        .rechunk_to(Chunks::regular(&[60, 48], &[60, 4]).unwrap(), &p2p)
        .unwrap();
    let runs = std::sync::atomic::AtomicU64::new(0);
    let (computed, killed) = tokio::join!(
        weft_runtime::shuffle::compute(&client, |workers, run| {
            runs.store(run + 1, std::sync::atomic::Ordering::Relaxed);
            y.graph_on(workers, run)
        }),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            cluster.kill_worker(1).await
        }
    );
    killed.unwrap();
    let values_back = client.gather(&computed.unwrap()).await.unwrap();
    assert_eq!(y.assemble(&values_back).unwrap().to_f64(), values);
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    assert!(runs >= 2, "the rechunk restarted ({runs} runs)");
    drop(client);
    cluster.stop().await;
}
