//! The P2P shuffle service on in-process clusters: every piece arrives,
//! in input order, empty ones too, over many partitions; a worker lost
//! mid-shuffle restarts it and the answer stays right; pieces past the
//! memory limit spill.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weft_runtime::ops::{args, decode_args};
use weft_runtime::shuffle::{self, Call, ShuffleSpec};
use weft_runtime::store::MemoryConfig;
use weft_runtime::{Client, Graph, LocalCluster, Registry, SharedStr, TaskSpec, Value};
use weft_transport::Buffer;

/// The numbers input `i` holds: `len` of them, `i * 1_000_000 + k`.
fn numbers(i: u64, len: u64) -> Vec<u64> {
    (0..len).map(|k| i * 1_000_000 + k).collect()
}

/// Which output a number goes to: none reach output `m - 1` unless
/// `m == 1` (an empty piece from every input).
fn output_of(x: u64, m: u64) -> u64 {
    if m == 1 { 0 } else { (x % 1_000_000) % (m - 1) }
}

fn registry() -> Registry {
    let mut registry = Registry::builtin();
    registry
        // (input, len, padding bytes per number, delay ms): the numbers,
        // each with `padding` bytes as a frame, after sleeping.
        .raw_op("numbers", |_, a, _| {
            let (i, len, padding, ms): (u64, u64, u64, u64) = decode_args(a)?;
            std::thread::sleep(Duration::from_millis(ms));
            let mut value = Value::encode(&numbers(i, len))?;
            value.frames.push(Buffer::host(vec![i as u8; (len * padding) as usize]));
            Ok(value)
        })
        // Split into m buckets: (numbers, padding bytes) per bucket.
        .raw_op("split", |_, a, inputs| {
            let m: u64 = decode_args(a)?;
            let xs: Vec<u64> = inputs[0].decode().map_err(weft_runtime::ops::OpError::BadInput)?;
            let per = inputs[0].frames[0].len() / xs.len().max(1);
            let mut buckets = vec![Vec::new(); m as usize];
            for x in xs {
                buckets[output_of(x, m) as usize].push(x);
            }
            let sizes: Vec<usize> = buckets.iter().map(|b| b.len() * per).collect();
            let mut value = Value::encode(&buckets)?;
            value.frames = sizes.iter().map(|&n| Buffer::host(vec![7u8; n])).collect();
            Ok(value)
        })
        .raw_op("bucket", |_, a, inputs| {
            let j: u32 = decode_args(a)?;
            let buckets: Vec<Vec<u64>> = inputs[0].decode().map_err(weft_runtime::ops::OpError::BadInput)?;
            let mut value = Value::encode(&buckets[j as usize])?;
            value.frames.push(inputs[0].frames[j as usize].clone());
            Ok(value)
        })
        // The pieces as they came (numbers per input) and their padding bytes.
        .raw_op("collect", |_, _, inputs| {
            let pieces: Vec<Vec<u64>> = inputs
                .iter()
                .map(|v| v.decode())
                .collect::<Result<_, _>>()
                .map_err(weft_runtime::ops::OpError::BadInput)?;
            let bytes: u64 = inputs.iter().map(|v| v.frames[0].len() as u64).sum();
            Ok(Value::encode(&(pieces, bytes))?)
        });
    registry
}

async fn cluster(workers: usize, memory: MemoryConfig) -> LocalCluster {
    common::cluster(workers, memory, registry()).await
}

/// What one shuffle of `n` inputs into `m` outputs looks like.
#[derive(Clone, Copy)]
struct Shape {
    n: u64,
    m: u64,
    len: u64,
    padding: u64,
    delay_ms: u64,
}

/// The graph of `shape` as run `run` over `workers`.
fn graph(shape: Shape, workers: &[SharedStr], run: u64) -> Graph {
    let prefix = format!("s-r{run}");
    let mut tasks: Vec<TaskSpec> = (0..shape.n)
        .map(|i| {
            let a = args(&(i, shape.len, shape.padding, shape.delay_ms)).unwrap();
            TaskSpec::new(format!("{prefix}-in-{i}"), "numbers", a, vec![])
        })
        .collect();
    let spec = ShuffleSpec {
        id: 42,
        run,
        inputs: shape.n as u32,
        outputs: shape.m as u32,
        workers: workers.to_vec(),
    };
    let inputs = (0..shape.n)
        .map(|i| {
            let split = Call {
                op: "split".into(),
                args: args(&shape.m).unwrap(),
            };
            (split, vec![format!("{prefix}-in-{i}").into()])
        })
        .collect();
    let collect = |_| Call {
        op: "collect".into(),
        args: bytes::Bytes::new(),
    };
    let shuffled = shuffle::tasks(&prefix, &spec, inputs, "bucket", collect).unwrap();
    tasks.extend(shuffled.tasks);
    Graph {
        tasks,
        outputs: shuffled.outputs,
    }
}

/// Runs `shape` with restarts; checks every output and returns how many
/// runs it took.
async fn run_and_check(client: &Client, shape: Shape) -> u64 {
    let runs = AtomicU64::new(0);
    let futures = shuffle::compute(client, |workers, run| {
        runs.fetch_add(1, Ordering::Relaxed);
        Ok::<_, weft_runtime::RuntimeError>(graph(shape, workers, run))
    })
    .await
    .unwrap();
    let values = client.gather(&futures).await.unwrap();
    assert_eq!(values.len() as u64, shape.m);
    for (j, value) in values.iter().enumerate() {
        let (pieces, bytes): (Vec<Vec<u64>>, u64) = value.decode().unwrap();
        assert_eq!(pieces.len() as u64, shape.n, "output {j}: one piece per input");
        for (i, piece) in pieces.iter().enumerate() {
            let expected: Vec<u64> = numbers(i as u64, shape.len)
                .into_iter()
                .filter(|&x| output_of(x, shape.m) == j as u64)
                .collect();
            assert_eq!(piece, &expected, "output {j}, the piece of input {i}, in input order");
        }
        let rows: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        assert_eq!(bytes, rows * shape.padding, "output {j}: the pieces' frames came along");
    }
    runs.load(Ordering::Relaxed)
}

fn unlimited() -> MemoryConfig {
    MemoryConfig::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_arrive_in_input_order_empty_ones_too() {
    let cluster = cluster(3, unlimited()).await;
    let client = cluster.client().await.unwrap();
    for (n, m) in [(1, 1), (5, 4), (4, 9)] {
        let shape = Shape {
            n,
            m,
            len: 50,
            padding: 3,
            delay_ms: 0,
        };
        assert_eq!(run_and_check(&client, shape).await, 1);
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_partitions_shuffle_in_linear_tasks() {
    let cluster = cluster(3, unlimited()).await;
    let client = cluster.client().await.unwrap();
    let shape = Shape {
        n: 60,
        m: 50,
        len: 200,
        padding: 1,
        delay_ms: 0,
    };
    let workers: Vec<SharedStr> = client.workers().await.unwrap().into_iter().map(|w| w.address).collect();
    assert_eq!(graph(shape, &workers, 0).tasks.len() as u64, 2 * shape.n + shape.m + 2);
    assert_eq!(run_and_check(&client, shape).await, 1);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_past_the_memory_limit_spill_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    // Two workers of 4 MiB; 16 inputs of 1 MiB are twice both.
    let cluster = cluster(2, common::spill_to(4 << 20, dir.path().into())).await;
    let client = cluster.client().await.unwrap();
    let shape = Shape {
        n: 16,
        m: 8,
        len: 4096,
        padding: 256,
        delay_ms: 0,
    };
    assert_eq!(run_and_check(&client, shape).await, 1);
    let stats: weft_runtime::store::MemorySnapshot = cluster.memory().into_iter().sum();
    println!("{stats:?}");
    assert!(stats.spilled > 0, "pieces went to disk: {stats:?}");
    assert!(stats.unspilled > 0, "and came back: {stats:?}");
    assert_eq!(stats.spill_errors, 0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_mid_shuffle_restarts_it_and_the_answer_stays_right() {
    let mut cluster = cluster(3, unlimited()).await;
    let client = cluster.client().await.unwrap();
    // 30 inputs of 100 ms on 3 single-threaded workers: a second at least.
    let shape = Shape {
        n: 30,
        m: 12,
        len: 100,
        padding: 2,
        delay_ms: 100,
    };
    let (runs, killed) = tokio::join!(run_and_check(&client, shape), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill_worker(1).await
    });
    killed.unwrap();
    assert!(runs >= 2, "the shuffle restarted ({runs} runs)");
    cluster.stop().await;
}
