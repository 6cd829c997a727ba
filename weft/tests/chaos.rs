//! Chaos: random graphs of tasks with 1-16 MiB results on a local cluster
//! of 4 worker processes; 2 workers are killed with SIGKILL at random
//! moments during the run (each replaced by a new worker), and 1 more after
//! the run, before the outputs are read. Every output must be read, one
//! `result()` at a time as a user would, with the right bytes: nothing may
//! be lost, only recomputed.
//!
//! This file is its own `main` (no test harness), because the cluster's
//! worker processes run this executable again and must reach
//! `worker_main` first. The seeds and the graph size come from the
//! environment, so the same binary is the soak benchmark:
//!
//! ```sh
//! WEFT_CHAOS_SEEDS=1-40 WEFT_CHAOS_TASKS=3000 cargo test --release -p weft --test chaos
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft::transport::Buffer;
use weft::{Graph, Key, LocalCluster, LocalOptions, Registry, TaskSpec, Value, worker_main};

/// Seeds run by default (CI).
const DEFAULT_SEEDS: &[u64] = &[1, 2, 3];
/// Tasks per graph by default (CI): about 2.5 GB of results per seed.
const DEFAULT_TASKS: usize = 260;
/// Worker processes.
const WORKERS: usize = 4;
/// Longest one seed may take, kills and reading included.
const SEED_LIMIT: Duration = Duration::from_secs(240);

fn main() {
    worker_main(registry());
    let seeds = std::env::var("WEFT_CHAOS_SEEDS").map_or_else(|_| DEFAULT_SEEDS.to_vec(), |s| parse_seeds(&s));
    let tasks = std::env::var("WEFT_CHAOS_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_TASKS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (mut passed, mut failed) = (0, 0);
    let started = Instant::now();
    for seed in seeds {
        match runtime.block_on(async { tokio::time::timeout(SEED_LIMIT, run(seed, tasks)).await }) {
            Ok(Ok(report)) => {
                passed += 1;
                println!("test chaos seed {seed} ... ok ({report})");
            }
            Ok(Err(error)) => {
                failed += 1;
                println!("test chaos seed {seed} ... FAILED: {error}");
            }
            Err(_) => {
                failed += 1;
                println!("test chaos seed {seed} ... FAILED: not done within {SEED_LIMIT:?}");
            }
        }
    }
    println!("chaos: {:.1} s in all", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// `1,2,5` or `1-40`.
fn parse_seeds(text: &str) -> Vec<u64> {
    text.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.trim().parse().expect("a seed"), b.trim().parse().expect("a seed"));
                (a..=b).collect::<Vec<u64>>()
            }
            None => vec![part.trim().parse().expect("a seed")],
        })
        .collect()
}

// ---- the op ---------------------------------------------------------------

/// The splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The digest of a task from its seed and its inputs' digests, in order.
fn digest(seed: u64, inputs: impl IntoIterator<Item = u64>) -> u64 {
    inputs
        .into_iter()
        .enumerate()
        .fold(mix(seed), |acc, (i, d)| mix(acc ^ d.wrapping_add(i as u64)))
}

/// Word `i` of a result with this digest.
fn word(digest: u64, i: usize) -> u64 {
    digest ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Arguments of the `blob` op.
#[derive(serde::Serialize, serde::Deserialize)]
struct Blob {
    seed: u64,
    /// Bytes of the result (a multiple of 8).
    nbytes: u32,
    /// How long the op works, in microseconds (besides writing).
    sleep_us: u32,
}

/// The digest a value carries, after checking every word of its frame.
fn check(value: &Value) -> Result<u64, String> {
    let (digest, nbytes): (u64, u32) = value.decode()?;
    let [frame] = &value.frames[..] else {
        return Err(format!("{} frames, not one", value.frames.len()));
    };
    let bytes = frame.as_host().ok_or("a device frame")?;
    if bytes.len() != nbytes as usize {
        return Err(format!("{} bytes, not {nbytes}", bytes.len()));
    }
    for (i, chunk) in bytes.chunks_exact(8).enumerate() {
        let got = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if got != word(digest, i) {
            return Err(format!("word {i} of digest {digest:#x} is {got:#x}"));
        }
    }
    Ok(digest)
}

/// `blob`: checks its inputs, then writes `nbytes` of words derived from
/// its digest.
fn blob(_: &weft::ops::OpContext, args: &[u8], inputs: &[Arc<Value>]) -> Result<Value, weft::OpError> {
    let args: Blob = weft::ops::decode_args(args)?;
    let digests = inputs.iter().map(|v| check(v)).collect::<Result<Vec<u64>, String>>()?;
    let d = digest(args.seed, digests);
    if args.sleep_us > 0 {
        std::thread::sleep(Duration::from_micros(args.sleep_us.into()));
    }
    let mut bytes = vec![0u8; args.nbytes as usize];
    for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&word(d, i).to_le_bytes());
    }
    let mut value = Value::encode(&(d, args.nbytes))?;
    value.frames.push(Buffer::host(bytes));
    Ok(value)
}

fn registry() -> Registry {
    let mut registry = Registry::builtin();
    registry.raw_op("blob", blob);
    registry
}

// ---- the graph -------------------------------------------------------------

/// A small seeded generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

/// A random graph: maps, tree reductions, random DAG layers, chains and
/// all-to-all layers of `blob` tasks; the outputs are every sink and a
/// third of the rest. Returns it with each output's expected digest.
fn random_graph(seed: u64, target: usize) -> (Graph, Vec<(Key, u64)>) {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut tasks: Vec<TaskSpec> = Vec::new();
    let mut digests: Vec<u64> = Vec::new();
    let mut used: Vec<bool> = Vec::new();
    let mut add = |rng: &mut Rng, deps: Vec<usize>, tasks: &mut Vec<TaskSpec>| -> usize {
        let i = tasks.len();
        let task_seed = rng.next();
        // 1-16 MiB, most of them small; one task in five works 1-5 ms.
        let mib = [1, 1, 1, 2, 2, 4, 8, 16][rng.below(8)];
        let nbytes = (mib << 20) - 8 * rng.below(64) as u32;
        let sleep_us = if rng.below(5) == 0 {
            rng.range(1_000, 5_000) as u32
        } else {
            0
        };
        let args = weft::ops::args(&Blob {
            seed: task_seed,
            nbytes,
            sleep_us,
        })
        .expect("serializable");
        let keys = deps.iter().map(|&d| tasks[d].key.clone()).collect();
        digests.push(digest(task_seed, deps.iter().map(|&d| digests[d])));
        for &d in &deps {
            used[d] = true;
        }
        used.push(false);
        tasks.push(TaskSpec::new(format!("chaos-{seed}-{i}"), "blob", args, keys));
        i
    };
    while tasks.len() < target {
        let n = tasks.len();
        match rng.below(5) {
            // A map over new roots.
            0 => {
                for _ in 0..rng.range(2, 8) {
                    let root = add(&mut rng, vec![], &mut tasks);
                    add(&mut rng, vec![root], &mut tasks);
                }
            }
            // A tree reduction over new leaves.
            1 => {
                let mut level: Vec<usize> = (0..rng.range(4, 12))
                    .map(|_| add(&mut rng, vec![], &mut tasks))
                    .collect();
                while level.len() > 1 {
                    let width = rng.range(2, 4);
                    level = level
                        .chunks(width)
                        .map(|c| add(&mut rng, c.to_vec(), &mut tasks))
                        .collect();
                }
            }
            // A layer over random earlier tasks.
            2 if n > 0 => {
                for _ in 0..rng.range(3, 10) {
                    let deps = (0..rng.range(1, 3)).map(|_| rng.below(n)).collect();
                    add(&mut rng, deps, &mut tasks);
                }
            }
            // A chain from a random earlier task (or a new root).
            3 => {
                let mut last = if n > 0 {
                    rng.below(n)
                } else {
                    add(&mut rng, vec![], &mut tasks)
                };
                for _ in 0..rng.range(3, 12) {
                    last = add(&mut rng, vec![last], &mut tasks);
                }
            }
            // An all-to-all layer over the last few tasks.
            _ if n >= 3 => {
                let from: Vec<usize> = (n - rng.range(2, 4).min(n)..n).collect();
                for _ in 0..rng.range(2, 4) {
                    add(&mut rng, from.clone(), &mut tasks);
                }
            }
            _ => {
                add(&mut rng, vec![], &mut tasks);
            }
        }
    }
    let outputs: Vec<(Key, u64)> = (0..tasks.len())
        .filter(|&i| !used[i] || rng.below(3) == 0)
        .map(|i| (tasks[i].key.clone(), digests[i]))
        .collect();
    let graph = Graph {
        tasks,
        outputs: outputs.iter().map(|(k, _)| k.clone()).collect(),
    };
    (graph, outputs)
}

// ---- one run ---------------------------------------------------------------

/// Runs one seed: the graph, 2 kills during the run (each replaced), 1
/// after it, then every output read and checked.
async fn run(seed: u64, target: usize) -> Result<String, String> {
    let (graph, expected) = random_graph(seed, target);
    let n_tasks = graph.tasks.len();
    let mut options = LocalOptions::for_this_machine();
    options.workers = WORKERS;
    options.nthreads = 1;
    options.memory.limit = weft::store::machine_memory() / (WORKERS as u64 + 1);
    let mut cluster = LocalCluster::start(options).await.map_err(|e| e.to_string())?;
    let client = cluster.client().await.map_err(|e| e.to_string())?;
    client.set_progress(false);
    let mut rng = Rng(seed ^ 0x5eed);
    let mut alive: Vec<usize> = (0..WORKERS).collect();

    let started = Instant::now();
    let futures = client.compute(graph).await.map_err(|e| e.to_string())?;
    // Two kills at random points of the run, counted in outputs done.
    let n = futures.len();
    let mut at = [rng.range(n / 20, n / 2), rng.range(n / 2, n * 9 / 10)];
    at.sort_unstable();
    let mut done = client.as_completed(futures.to_vec());
    let (mut finished, mut kills_during) = (0, 0);
    while finished < n {
        done.recv().await.ok_or("as_completed ended early")?;
        finished += 1;
        while kills_during < at.len() && finished >= at[kills_during] {
            let victim = alive.swap_remove(rng.below(alive.len()));
            cluster.kill_worker(victim).await.map_err(|e| e.to_string())?;
            alive.push(cluster.add_worker().await.map_err(|e| e.to_string())?);
            kills_during += 1;
        }
    }
    // Outputs lost by the second kill after they finished are recomputed.
    client.wait(&futures).await;
    let run_s = started.elapsed().as_secs_f64();
    // Every output read once as it is, then one more worker killed and
    // every output read again at once: the time of the second reading over
    // the first is what the kill costs.
    let read_s = read_all(&futures, &expected).await?;
    let victim = alive.swap_remove(rng.below(alive.len()));
    cluster.kill_worker(victim).await.map_err(|e| e.to_string())?;
    let reread_s = read_all(&futures, &expected).await?;
    drop(futures);
    cluster.stop().await;
    Ok(format!(
        "{n_tasks} tasks, {n} outputs right; run with 2 kills {run_s:.2} s; \
         outputs read in {read_s:.2} s, and in {reread_s:.2} s right after a kill"
    ))
}

/// Reads every output, one `result()` at a time, checks each, and
/// returns the seconds it took.
async fn read_all(futures: &[weft::TaskFuture], expected: &[(Key, u64)]) -> Result<f64, String> {
    let reading = Instant::now();
    for (future, (key, want)) in futures.iter().zip(expected) {
        let value = future.result().await.map_err(|e| format!("{key}: {e}"))?;
        let got = check(&value).map_err(|e| format!("{key}: {e}"))?;
        if got != *want {
            return Err(format!("{key}: digest {got:#x}, expected {want:#x}"));
        }
    }
    Ok(reading.elapsed().as_secs_f64())
}
