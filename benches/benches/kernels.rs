//! Kernel micro-benchmarks against baselines measured in the same run:
//! - sum of 100M f64 vs a memcpy of the same 800 MB (memory-bandwidth bound);
//! - hash partition of 10M int64 into 64 parts vs ahash (the hasher arrow-rs
//!   and DataFusion's `create_hashes` use) and vs a naive SipHash loop;
//! - argsort of 10M int64 (radix) vs `slice::sort_unstable`;
//! - f64 GEMM 2048 x 2048 (compare with `benches/numpy_gemm.sh`).
//!
//! All on host columns (CPU kernels); nothing to synchronise.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use weft_kernels::{Column, gemm, hash, reduce, sort};

fn keys(n: usize, seed: u64) -> Vec<i64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            // splitmix64: fast, reproducible, full 64-bit keys.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as i64
        })
        .collect()
}

fn sum_vs_memcpy(c: &mut Criterion) {
    const N: usize = 100_000_000;
    let values: Vec<f64> = (0..N).map(|i| (i % 1000) as f64 * 0.5).collect();
    let col = Column::from_vec(values.clone());
    let mut dst = vec![0f64; N];
    let mut g = c.benchmark_group("sum_100M_f64");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Bytes((N * 8) as u64));
    g.bench_function("weft_sum", |b| {
        b.iter(|| black_box(reduce::sum(black_box(&col)).expect("kernel")))
    });
    g.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(black_box(&values))));
    g.finish();
}

/// Partition ids, offsets and grouped rows with any per-key hash.
fn partition_with(keys: &[i64], parts: u64, h: impl Fn(i64) -> u64) -> (Vec<u32>, Vec<u32>) {
    let ids: Vec<u32> = keys.iter().map(|k| (h(*k) % parts) as u32).collect();
    let mut offsets = vec![0u32; parts as usize + 1];
    for id in &ids {
        offsets[*id as usize + 1] += 1;
    }
    for p in 0..parts as usize {
        offsets[p + 1] += offsets[p];
    }
    let mut next = offsets.clone();
    let mut rows = vec![0u32; ids.len()];
    for (i, id) in ids.iter().enumerate() {
        rows[next[*id as usize] as usize] = i as u32;
        next[*id as usize] += 1;
    }
    (offsets, rows)
}

fn hash_partition(c: &mut Criterion) {
    const N: usize = 10_000_000;
    let k = keys(N, 1);
    let col = Column::from_vec(k.clone());
    let mut g = c.benchmark_group("hash_partition_10M_i64_64");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("weft", |b| {
        b.iter(|| black_box(hash::hash_partition(black_box(&col), 64, 0).expect("kernel")))
    });
    let state = ahash::RandomState::with_seeds(1, 2, 3, 4);
    g.bench_function("ahash_arrow_style", |b| {
        b.iter(|| black_box(partition_with(black_box(&k), 64, |v| state.hash_one(v))))
    });
    g.bench_function("naive_siphash_vecs", |b| {
        b.iter(|| {
            // What one writes first: std's hasher and a Vec per partition.
            let mut parts: Vec<Vec<u32>> = vec![Vec::new(); 64];
            for (i, v) in black_box(&k).iter().enumerate() {
                let mut h = DefaultHasher::new();
                v.hash(&mut h);
                parts[(h.finish() % 64) as usize].push(i as u32);
            }
            black_box(parts)
        })
    });
    g.finish();
}

fn sort_keys(c: &mut Criterion) {
    const N: usize = 10_000_000;
    let k = keys(N, 2);
    let col = Column::from_vec(k.clone());
    let mut g = c.benchmark_group("sort_10M_i64");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("weft_radix_argsort", |b| {
        b.iter(|| black_box(sort::argsort(black_box(&col)).expect("kernel")))
    });
    g.bench_function("slice_sort_unstable", |b| {
        b.iter_batched_ref(|| k.clone(), |v| v.sort_unstable(), BatchSize::LargeInput)
    });
    // The like-for-like baseline: a permutation, as argsort returns.
    g.bench_function("argsort_by_sort_unstable_by_key", |b| {
        b.iter(|| {
            let mut perm: Vec<u32> = (0..N as u32).collect();
            perm.sort_unstable_by_key(|i| (k[*i as usize], *i));
            black_box(perm)
        })
    });
    g.finish();
}

fn gemm_2048(c: &mut Criterion) {
    const N: usize = 2048;
    let a: Vec<f64> = keys(N * N, 3).iter().map(|v| (*v % 1000) as f64 / 1000.0).collect();
    let b: Vec<f64> = keys(N * N, 4).iter().map(|v| (*v % 1000) as f64 / 1000.0).collect();
    let (ca, cb) = (Column::from_vec(a), Column::from_vec(b));
    let mut g = c.benchmark_group("gemm_f64_2048");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements((2 * N * N * N) as u64));
    g.bench_function("weft_gemm", |bch| {
        bch.iter(|| black_box(gemm::gemm(&ca, &cb, N, N, N).expect("kernel")))
    });
    g.finish();
}

criterion_group!(kernels, sum_vs_memcpy, hash_partition, sort_keys, gemm_2048);
criterion_main!(kernels);
