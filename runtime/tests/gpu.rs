//! Results on emulated GPUs: they stay in device memory where their op
//! made them, move device to device between GPU workers of one process,
//! and spill device -> host -> disk when device memory is the bottleneck.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use weft_gpu::Buffer;
use weft_gpu::{CopyCounters, Gpu, GpuBackend};
use weft_runtime::ops::{args, decode_args};
use weft_runtime::store::{MemoryConfig, MemorySnapshot};
use weft_runtime::{
    Graph, LocalCluster, LocalOptions, OpError, Registry, RuntimeError, TaskError, TaskSpec, Tier, Value, WorkerMode,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn byte(seed: u64, i: usize) -> u8 {
    (i as u64).wrapping_mul(13).wrapping_add(seed) as u8
}

/// `gpu_fill (seed, len)`: a device buffer made on the worker's GPU.
/// `gpu_copy`: its input copied into a new buffer on this worker's GPU.
/// `gpu_half_zero (seed, len)`: like `gpu_fill`, then its first half zeroed
/// by a memset left queued on the op's stream when the op returns.
/// `gpu_sum`: the sum of every byte of its inputs, wherever they are.
/// `gpu_sum_breaking_gpu_0`: the sum of its input's bytes, except on
/// emulated GPU 0, which it breaks (the device reports itself lost).
fn registry() -> Registry {
    let mut registry = Registry::builtin();
    registry
        .raw_op("gpu_fill", |ctx, a, _| {
            let (seed, len): (u64, usize) = decode_args(a)?;
            let host: Vec<u8> = (0..len).map(|i| byte(seed, i)).collect();
            let buffer = ctx.alloc(len)?;
            let stream = ctx.stream()?;
            stream.copy_h2d(&host, &buffer)?;
            stream.synchronize()?;
            Ok(Value {
                header: Default::default(),
                frames: vec![Buffer::device(buffer)],
            })
        })
        .raw_op("gpu_half_zero", |ctx, a, _| {
            let (seed, len): (u64, usize) = decode_args(a)?;
            let host: Vec<u8> = (0..len).map(|i| byte(seed, i)).collect();
            let stream = ctx.stream()?;
            let buffer = stream.upload(&host)?;
            stream.memset_zero(&buffer, len / 2)?;
            Ok(Value {
                header: Default::default(),
                frames: vec![Buffer::device(buffer)],
            })
        })
        .raw_op("gpu_copy", |ctx, _, inputs| {
            let src = ctx.to_device(&inputs[0].frames[0])?;
            let dst = ctx.alloc(src.len())?;
            let stream = ctx.stream()?;
            stream.copy_d2d(&src, &dst)?;
            stream.synchronize()?;
            Ok(Value {
                header: Default::default(),
                frames: vec![Buffer::device(dst)],
            })
        })
        .raw_op("gpu_sum_breaking_gpu_0", |ctx, _, inputs| {
            // On emulated GPU 0: a fault that leaves the device unusable,
            // as an illegal address leaves a CUDA context.
            if let Some(GpuBackend::Emulated(gpu)) = ctx.gpu().map(|g| g.backend())
                && gpu.ordinal() == 0
            {
                gpu.lose("an illegal memory access was encountered (injected)");
                return Err(OpError::Failed("the kernel faulted".into()));
            }
            let bytes = ctx.to_device(&inputs[0].frames[0])?;
            let host = ctx.stream()?.download(&bytes)?;
            Ok(Value::encode(&host.iter().map(|&b| u64::from(b)).sum::<u64>())?)
        })
        .raw_op("gpu_sum", |_, _, inputs| {
            let mut sum = 0u64;
            for frame in inputs.iter().flat_map(|v| v.frames.iter()) {
                let bytes = frame.to_host()?;
                sum += bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
            }
            Ok(Value::encode(&sum)?)
        });
    registry
}

fn sum_of(seed: u64, len: usize) -> u64 {
    (0..len).map(|i| u64::from(byte(seed, i))).sum()
}

async fn cluster(gpus: &[Arc<Gpu>], memory: MemoryConfig) -> LocalCluster {
    let mut options = LocalOptions::for_this_machine();
    options.workers = gpus.len();
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    options.registry = Arc::new(registry());
    options.in_process_gpus = gpus.to_vec();
    options.worker_listen = "inproc://".into();
    options.memory = memory;
    LocalCluster::start(options).await.unwrap()
}

fn copies(gpus: &[Arc<Gpu>]) -> Vec<CopyCounters> {
    gpus.iter()
        .map(|g| match g.backend() {
            GpuBackend::Emulated(e) => e.copies(),
            GpuBackend::Cuda(_) => unreachable!("emulated GPUs only"),
        })
        .collect()
}

fn on(worker: usize, mut task: TaskSpec) -> TaskSpec {
    task.annotations.workers = vec![format!("local-{worker}").into()];
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_gpu_tasks_moves_device_to_device_between_workers() {
    let gpus: Vec<Arc<Gpu>> = (0..4).map(|i| Gpu::emulated(i, 64 << 20, true)).collect();
    let cluster = cluster(&gpus, MemoryConfig::default()).await;
    let client = cluster.client().await.unwrap();
    let len = MIB;
    let mut tasks = vec![on(
        0,
        TaskSpec::new("link-0", "gpu_fill", args(&(5u64, len)).unwrap(), vec![]),
    )];
    for i in 1..8 {
        let dep = format!("link-{}", i - 1);
        tasks.push(on(
            i % 4,
            TaskSpec::new(format!("link-{i}"), "gpu_copy", args(&()).unwrap(), vec![dep.into()]),
        ));
    }
    let graph = Graph {
        tasks,
        outputs: vec!["link-7".into()],
    };
    let last = client.compute(graph).await.unwrap().pop().unwrap();
    let value = last.result().await.unwrap();
    // In process, the client gets the device buffer itself, on GPU 3.
    assert_eq!(value.tier(), Tier::Device);
    assert_eq!(value.frames[0].location(), gpus[3].device());
    let bytes = value.frames[0].to_host().unwrap();
    assert!(bytes.iter().enumerate().all(|(i, &b)| b == byte(5, i)));
    let counts = copies(&gpus);
    let total = |f: fn(&CopyCounters) -> u64| counts.iter().map(f).sum::<u64>();
    println!("{counts:?}");
    assert_eq!(total(|c| c.peer), 7, "each hop is one peer copy");
    assert_eq!(total(|c| c.staged), 0, "no hop went through host memory");
    assert_eq!(total(|c| c.h2d), 1, "only the fill came from the host");
    assert_eq!(total(|c| c.d2h), 1, "only the final read went to the host");
    assert_eq!(total(|c| c.d2d), 7, "each copy op ran on its own device");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_memory_as_the_bottleneck_spills_to_host_and_disk() {
    // Two GPUs of 4 MiB (device limit 80%: 3.2 MiB), 4 MiB of host memory
    // each; 24 results of 512 KiB are 12 MiB, three times the device
    // memory and more than host and device together.
    let gpus: Vec<Arc<Gpu>> = (0..2).map(|i| Gpu::emulated(i, 4 * MIB, true)).collect();
    let dir = tempfile::tempdir().unwrap();
    let memory = MemoryConfig {
        limit: 4 * MIB as u64,
        spill_dir: dir.path().into(),
        ..MemoryConfig::default()
    };
    let cluster = cluster(&gpus, memory).await;
    let client = cluster.client().await.unwrap();
    let (n, len) = (24u64, 512 * KIB);
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| {
            on(
                i as usize % 2,
                TaskSpec::new(format!("b-{i}"), "gpu_fill", args(&(i, len)).unwrap(), vec![]),
            )
        })
        .collect();
    let keys: Vec<_> = tasks.iter().map(|t| t.key.clone()).collect();
    let blobs = client
        .compute(Graph {
            tasks,
            outputs: keys.clone(),
        })
        .await
        .unwrap();
    client.wait(&blobs).await;
    let sum = client
        .submit(TaskSpec::new("sum", "gpu_sum", args(&()).unwrap(), keys))
        .await
        .unwrap();
    let expected: u64 = (0..n).map(|i| sum_of(i, len)).sum();
    assert_eq!(sum.result().await.unwrap().decode::<u64>().unwrap(), expected);
    let stats: MemorySnapshot = cluster.memory().into_iter().sum();
    println!("{stats:?}");
    assert!(stats.device_spilled > 0, "device results moved to the host: {stats:?}");
    assert!(stats.spilled > 0, "and on to disk: {stats:?}");
    for gpu in &gpus {
        assert!(gpu.pool_stats().in_use as u64 <= 4 * MIB as u64);
    }
    drop(blobs);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_out_of_device_memory_spills_and_retries_once() {
    // A 4 MiB GPU and no device limit below it: nothing moves off the
    // device until an allocation fails.
    let gpus = vec![Gpu::emulated(0, 4 * MIB, true)];
    let memory = MemoryConfig {
        device_limit: u64::MAX / 2,
        limit: 1 << 30,
        ..MemoryConfig::default()
    };
    let cluster = cluster(&gpus, memory).await;
    let client = cluster.client().await.unwrap();
    let (n, len) = (12u64, 512 * KIB);
    let mut blobs = Vec::new();
    for i in 0..n {
        let task = TaskSpec::new(format!("b-{i}"), "gpu_fill", args(&(i, len)).unwrap(), vec![]);
        let blob = client.submit(task).await.unwrap();
        blob.wait().await.unwrap();
        blobs.push(blob);
    }
    let stats: MemorySnapshot = cluster.memory().into_iter().sum();
    assert!(
        stats.device_spilled > 0,
        "full device: results moved to the host: {stats:?}"
    );
    for (i, value) in client.gather(&blobs).await.unwrap().iter().enumerate() {
        let bytes = value.frames[0].to_host().unwrap();
        assert!(
            bytes.iter().enumerate().all(|(j, &b)| b == byte(i as u64, j)),
            "blob {i}"
        );
    }
    // Larger than the device: the retry fails too, and the task says why.
    let huge = client
        .submit(TaskSpec::new(
            "huge",
            "gpu_fill",
            args(&(0u64, 8 * MIB)).unwrap(),
            vec![],
        ))
        .await
        .unwrap();
    let err = huge.result().await.unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::Task(TaskError::OpFailed {
                error: OpError::OutOfMemory(_),
                ..
            })
        ),
        "{err}"
    );
    drop(blobs);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ops_queued_work_is_done_before_its_result_leaves_the_worker() {
    // Asynchronous emulated GPUs run queued work only when its stream is
    // synchronised: without the worker's synchronisation at the op's end,
    // the consumer on the other GPU and the client would read the bytes
    // from before the memset.
    let gpus: Vec<Arc<Gpu>> = (0..2).map(|i| Gpu::emulated_asynchronous(i, 64 << 20)).collect();
    let cluster = cluster(&gpus, MemoryConfig::default()).await;
    let client = cluster.client().await.unwrap();
    let len = 256 * KIB;
    let graph = Graph {
        tasks: vec![
            on(
                0,
                TaskSpec::new("half", "gpu_half_zero", args(&(3u64, len)).unwrap(), vec![]),
            ),
            on(
                1,
                TaskSpec::new("copy", "gpu_copy", args(&()).unwrap(), vec!["half".into()]),
            ),
        ],
        outputs: vec!["half".into(), "copy".into()],
    };
    let futures = client.compute(graph).await.unwrap();
    for future in &futures {
        let value = future.result().await.unwrap();
        let bytes = value.frames[0].to_host().unwrap();
        let (zeroed, kept) = bytes.split_at(len / 2);
        assert!(zeroed.iter().all(|&b| b == 0), "the memset ran first");
        assert!(kept.iter().enumerate().all(|(i, &b)| b == byte(3, len / 2 + i)));
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_gpu_is_lost_stops_and_its_work_is_done_elsewhere() {
    let gpus: Vec<Arc<Gpu>> = (0..2).map(|i| Gpu::emulated_asynchronous(i, 64 << 20)).collect();
    let cluster = cluster(&gpus, MemoryConfig::default()).await;
    let client = cluster.client().await.unwrap();
    let len = 64 * KIB;
    let loose = |worker, task| {
        let mut task = on(worker, task);
        task.annotations.allow_other_workers = true;
        task
    };
    // A result held only on GPU 0's worker.
    let made = client
        .compute(Graph {
            tasks: vec![loose(
                0,
                TaskSpec::new("made", "gpu_fill", args(&(5u64, len)).unwrap(), vec![]),
            )],
            outputs: vec!["made".into()],
        })
        .await
        .unwrap();
    made[0].result().await.unwrap();
    // Its consumer breaks GPU 0: the worker stops instead of failing the
    // task (and every later one); the result it held is made again on the
    // other worker, where the consumer runs too.
    let summed = client
        .compute(Graph {
            tasks: vec![loose(
                0,
                TaskSpec::new(
                    "summed",
                    "gpu_sum_breaking_gpu_0",
                    args(&()).unwrap(),
                    vec!["made".into()],
                ),
            )],
            outputs: vec!["summed".into()],
        })
        .await
        .unwrap();
    let sum: u64 = summed[0].result().await.unwrap().decode().unwrap();
    assert_eq!(sum, sum_of(5, len));
    assert!(gpus[0].lost().is_some() && gpus[1].lost().is_none());
    let workers = client.workers().await.unwrap();
    let names: Vec<&str> = workers.iter().map(|w| &*w.name).collect();
    assert_eq!(names, ["local-1"], "the broken GPU's worker left");
    // The first result is still there, made again where it could be.
    let bytes = made[0].result().await.unwrap().frames[0].to_host().unwrap();
    assert_eq!(bytes.iter().map(|&b| u64::from(b)).sum::<u64>(), sum_of(5, len));
    cluster.stop().await;
}
