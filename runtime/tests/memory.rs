//! The memory manager on in-process clusters: working sets larger than the
//! workers' memory complete by spilling to disk and reading back, a spill
//! target that fills up loses nothing, and a worker out of memory pauses
//! and resumes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use weft_runtime::ops::{args, decode_args};
use weft_runtime::store::{MemoryConfig, MemorySnapshot};
use weft_runtime::{Graph, LocalCluster, Registry, TaskFuture, TaskSpec, Value};
use weft_transport::Buffer;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Byte `i` of blob `seed`.
fn byte(seed: u64, i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(7))) as u8
}

fn checksum(seed: u64, len: u64) -> u64 {
    (0..len).map(|i| u64::from(byte(seed, i))).sum()
}

fn registry() -> Registry {
    let mut registry = Registry::builtin();
    registry.raw_op("blob", |_, a, _| {
        let (seed, len): (u64, u64) = decode_args(a)?;
        let data: Vec<u8> = (0..len).map(|i| byte(seed, i)).collect();
        Ok(Value {
            header: Default::default(),
            frames: vec![Buffer::host(data)],
        })
    });
    registry.raw_op("checksum", |_, _, inputs| {
        let sum: u64 = inputs
            .iter()
            .flat_map(|v| v.frames.iter())
            .map(|f| f.as_host().map_or(0, |b| b.iter().map(|&x| u64::from(x)).sum::<u64>()))
            .sum();
        Ok(Value::encode(&sum)?)
    });
    registry
}

async fn cluster(workers: usize, memory: MemoryConfig) -> LocalCluster {
    common::cluster(workers, memory, registry()).await
}

fn blobs(n: u64, len: u64) -> Graph {
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| TaskSpec::new(format!("blob-{i}"), "blob", args(&(i, len)).unwrap(), vec![]))
        .collect();
    let outputs = tasks.iter().map(|t| t.key.clone()).collect();
    Graph { tasks, outputs }
}

/// Gathers every blob and checks its bytes.
async fn check_blobs(client: &weft_runtime::Client, futures: &[TaskFuture], len: u64) {
    let values = client.gather(futures).await.unwrap();
    for (i, value) in values.iter().enumerate() {
        let bytes = value.frames[0].as_host().unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert!(
            bytes.iter().enumerate().all(|(j, &b)| b == byte(i as u64, j as u64)),
            "blob {i}"
        );
    }
}

fn total(cluster: &LocalCluster) -> MemorySnapshot {
    cluster.memory().into_iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_set_three_times_the_memory_spills_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    // Two workers of 4 MiB; 48 blobs of 512 KiB are 24 MiB, three times both.
    let (n, len) = (48, 512 * KIB);
    let cluster = cluster(2, common::spill_to(4 * MIB, dir.path().into())).await;
    let client = cluster.client().await.unwrap();
    let futures = client.compute(blobs(n, len)).await.unwrap();
    client.wait(&futures).await;
    let sum = TaskSpec::new(
        "sum",
        "checksum",
        args(&()).unwrap(),
        (0..n).map(|i| format!("blob-{i}").into()).collect(),
    );
    let sum = client.submit(sum).await.unwrap();
    let expected: u64 = (0..n).map(|i| checksum(i, len)).sum();
    assert_eq!(sum.result().await.unwrap().decode::<u64>().unwrap(), expected);
    check_blobs(&client, &futures, len).await;
    let stats = total(&cluster);
    println!("{stats:?}");
    assert!(stats.spilled >= n / 2, "most blobs went to disk: {stats:?}");
    assert!(stats.unspilled > 0, "and came back: {stats:?}");
    assert_eq!(stats.spill_errors, 0);
    drop((futures, sum));
    cluster.stop().await;
}

/// A 1 MiB tmpfs to spill into, where this process may mount one; else a
/// directory with a 1 MiB spill quota, which fails writes the same way.
struct SmallDisk {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl SmallDisk {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            println!("cannot mount a tmpfs here; a 1 MiB spill quota stands in for a full disk");
        }
        SmallDisk { dir, mounted }
    }

    fn memory(&self, limit: u64) -> MemoryConfig {
        MemoryConfig {
            max_spill: if self.mounted { 0 } else { MIB },
            ..common::spill_to(limit, self.dir.path().into())
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spill_disk_loses_nothing() {
    let disk = SmallDisk::new();
    // 12 MiB of results on a worker of 16 MiB: past the 60% target, under
    // the 80% pause; only 1 MiB fits on disk.
    let (n, len) = (24, 512 * KIB);
    let cluster = cluster(1, disk.memory(16 * MIB)).await;
    let client = cluster.client().await.unwrap();
    let futures = client.compute(blobs(n, len)).await.unwrap();
    client.wait(&futures).await;
    check_blobs(&client, &futures, len).await;
    let stats = total(&cluster);
    println!("{stats:?}");
    assert!(stats.spill_errors > 0, "the disk filled up: {stats:?}");
    assert!(stats.on_disk <= MIB, "{stats:?}");
    drop(futures);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_out_of_memory_pauses_and_resumes_when_memory_falls() {
    let root = tempfile::tempdir().unwrap();
    let blocker = root.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    // Spilling cannot help (the directory cannot be made), so 4 MiB of
    // results on a 4 MiB worker pass the pause threshold and stay there.
    let cluster = cluster(1, common::spill_to(4 * MIB, blocker.join("spill"))).await;
    let client = cluster.client().await.unwrap();
    let held = client.compute(blobs(8, 512 * KIB)).await.unwrap();
    client.wait(&held).await;
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while total(&cluster).pauses == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    waited.await.expect("the worker paused");
    let later = client
        .submit(TaskSpec::new("later", "const", args(&7i64).unwrap(), vec![]))
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), later.wait()).await;
    assert!(early.is_err(), "a paused worker starts nothing");
    // Releasing the results frees the memory; the worker resumes.
    drop(held);
    let value = tokio::time::timeout(Duration::from_secs(10), later.result()).await;
    assert_eq!(value.expect("resumed").unwrap().decode::<i64>().unwrap(), 7);
    let stats = total(&cluster);
    assert!(stats.spill_errors > 0, "{stats:?}");
    cluster.stop().await;
}
