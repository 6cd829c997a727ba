//! The proof without a GPU: on the emulated device every launch is counted
//! with the global-memory bytes it read and wrote, and each kernel is held to
//! an upper bound on launches and on bytes moved per row. A change that adds
//! a pass, or re-reads through a permutation, fails here even where CI has
//! no GPU.
#![allow(clippy::unwrap_used)]

mod common;

use weft_kernels::{Column, LaunchRecord, filter, hash, record_launches, reduce, scan, sort};

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
        // Kernel names are exact; prefixes name a family.
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

/// Rows of the traffic tests: ten of the GPU's 4096-row sort tiles, so the
/// per-tile costs (look-back status words, bin starts) weigh as on a GPU.
const N: usize = 40_960;

/// Bytes per row a histogram may move besides reading the keys: each block
/// adds its shared counts (8 x 256 of them) to the global ones atomically.
const HIST_OVERHEAD: f64 = 2.0;

/// Bytes per row a onesweep pass may move besides its (key, row) pairs:
/// per 4096-row tile, 256 status words written twice and read by the next
/// tile, 256 bin starts and the tile counter (about 1.8 bytes per row).
const TILE_OVERHEAD: f64 = 3.0;

/// A sort or partition: one histogram launch, then onesweep passes only,
/// each within `pass_bytes` per row (its pairs plus the tile overhead).
fn check_passes(t: &Traffic, what: &str, max_passes: usize, hist_bytes: f64, pass_bytes: f64) {
    let hist = t.count("radix_histogram") + t.count("partition_histogram");
    let passes = t.count("onesweep_pass_16");
    assert_eq!(hist, 1, "{what}: one histogram launch");
    // A partition into at most 256 parts scans its counts on the device.
    let scans = t.count("partition_starts");
    assert!(scans <= 1, "{what}: {scans} scans");
    assert_eq!(
        t.launches.len(),
        1 + scans + passes,
        "{what}: nothing but the histogram, the scan and the passes"
    );
    assert!((1..=max_passes).contains(&passes), "{what}: {passes} passes");
    let per_row = |l: &LaunchRecord| (l.bytes_read.unwrap() + l.bytes_written.unwrap()) as f64 / t.rows as f64;
    let h = per_row(&t.launches[0]);
    assert!(h <= hist_bytes, "{what}: histogram moves {h:.2} bytes/row");
    for l in &t.launches[1..] {
        let b = per_row(l);
        assert!(b <= pass_bytes, "{what}: a pass moves {b:.2} bytes/row");
    }
}

#[test]
fn argsort_i64_traffic() {
    let gpu = common::emulated();
    let x = Column::from_vec(random_i64(N, 1)).to_device(&gpu).unwrap();
    let t = Traffic::of(N, || {
        sort::argsort(&x).unwrap();
    });
    t.report("argsort i64, no nulls");
    // The histogram reads each key once (8 bytes); a pass reads and writes
    // (key, row) = 12 bytes each way, the last one writes no keys.
    check_passes(&t, "argsort i64", 8, 8.0 + HIST_OVERHEAD, 24.0 + TILE_OVERHEAD);
    assert_eq!(t.count("onesweep_pass_16"), 8, "random keys differ in every byte");
    assert!(t.bytes_per_row() <= 8.0 + HIST_OVERHEAD + 8.0 * (24.0 + TILE_OVERHEAD));

    let opts: Vec<Option<i64>> = random_i64(N, 2)
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i % 7 != 0).then_some(v))
        .collect();
    let x = Column::from_options(&opts).to_device(&gpu).unwrap();
    let t = Traffic::of(N, || {
        sort::argsort(&x).unwrap();
    });
    t.report("argsort i64, 1/7 null");
    // Plus the null pass: rows (4 bytes) in and out.
    check_passes(
        &t,
        "argsort i64 with nulls",
        9,
        8.0 + HIST_OVERHEAD,
        24.0 + TILE_OVERHEAD,
    );
    let null_pass = t.launches.last().unwrap();
    let b = (null_pass.bytes_read.unwrap() + null_pass.bytes_written.unwrap()) as f64 / N as f64;
    assert!(b <= 8.0 + TILE_OVERHEAD, "the null pass moves {b:.2} bytes/row");

    let small: Vec<i64> = random_i64(N, 3).into_iter().map(|v| v & 0xffff).collect();
    let x = Column::from_vec(small).to_device(&gpu).unwrap();
    let t = Traffic::of(N, || {
        sort::argsort(&x).unwrap();
    });
    t.report("argsort i64 in [0, 65536)");
    check_passes(
        &t,
        "argsort of 16-bit keys",
        2,
        8.0 + HIST_OVERHEAD,
        24.0 + TILE_OVERHEAD,
    );
    assert_eq!(t.count("onesweep_pass_16"), 2, "six digit positions are skipped");
}

#[test]
fn partition_traffic() {
    let gpu = common::emulated();
    let x = Column::from_vec(random_i64(N, 4)).to_device(&gpu).unwrap();
    let t = Traffic::of(N, || {
        hash::hash_partition(&x, 64, 7).unwrap();
    });
    t.report("hash_partition i64 into 64");
    // Hash, id and count in one read (8 in, 4 out), then one pass that
    // reads the id and writes the row number once (4 in, 4 out).
    check_passes(&t, "partition into 64", 1, 12.0 + HIST_OVERHEAD, 8.0 + TILE_OVERHEAD);
    assert!(t.bytes_per_row() <= 24.0);

    let t = Traffic::of(N, || {
        hash::hash_partition(&x, 1000, 7).unwrap();
    });
    t.report("hash_partition i64 into 1000");
    // Past 256 parts, two passes: the first carries the id as a key.
    check_passes(&t, "partition into 1000", 2, 12.0 + HIST_OVERHEAD, 24.0 + TILE_OVERHEAD);
    assert_eq!(t.count("onesweep_pass_16"), 2);
}

#[test]
fn sum_traffic() {
    let gpu = common::emulated();
    let x = Column::from_vec((0..N).map(|i| i as f64).collect::<Vec<_>>())
        .to_device(&gpu)
        .unwrap();
    let t = Traffic::of(N, || {
        reduce::sum(&x).unwrap();
    });
    t.report("sum f64");
    assert!(t.launches.len() <= 2, "partials, then one block combining them");
    assert!(t.bytes_per_row() <= 8.0 + 0.1, "each value read once");
}

#[test]
fn filter_traffic() {
    let gpu = common::emulated();
    let x = Column::from_vec(random_i64(N, 5)).to_device(&gpu).unwrap();
    let keep: Vec<bool> = (0..N).map(|i| (i * 7919) % 3 != 0).collect();
    let kept = keep.iter().filter(|k| **k).count();
    let mask = Column::from_arrow(&arrow_array::BooleanArray::from(keep))
        .unwrap()
        .to_device(&gpu)
        .unwrap();
    let t = Traffic::of(N, || {
        filter::filter(&x, &mask).unwrap();
    });
    t.report("filter i64, 2/3 kept");
    // Count, scan of the per-block counts, write; values are read only
    // where selected and written once (the mask's bits are not counted).
    assert_eq!(t.launches.len(), 3);
    let moved = (16 * kept) as f64 / N as f64;
    assert!(t.bytes_per_row() <= moved + 0.1, "{:.2} bytes/row", t.bytes_per_row());
}

#[test]
fn scan_traffic() {
    let gpu = common::emulated();
    let x = Column::from_vec((0..N as u32).map(|i| i % 5).collect::<Vec<_>>())
        .to_device(&gpu)
        .unwrap();
    let t = Traffic::of(N, || {
        scan::exclusive_sum(&x).unwrap();
    });
    t.report("exclusive scan u32");
    // One pass: each count read once and each sum written once (4 + 4
    // bytes), plus per 2048-count tile a status word written twice and
    // read by the tiles after it, and the tile counter.
    assert_eq!(t.count("scan_exclusive_u32_8"), 1);
    assert_eq!(t.launches.len(), 1, "one launch");
    assert!(t.bytes_per_row() <= 8.0 + 0.1, "{:.2} bytes/row", t.bytes_per_row());
}

/// The scan's share of a call: one launch, moving about 8 bytes per count.
fn check_one_scan(t: &Traffic, what: &str, counts: usize) {
    let scans: Vec<&LaunchRecord> = t
        .launches
        .iter()
        .filter(|l| l.kernel.starts_with("scan_exclusive_u32"))
        .collect();
    assert_eq!(scans.len(), 1, "{what}: one scan launch");
    let moved = scans[0].bytes_read.unwrap() + scans[0].bytes_written.unwrap();
    assert!(
        moved as f64 <= 8.1 * counts as f64,
        "{what}: the scan moves {moved} bytes for {counts} counts"
    );
}

#[test]
fn segments_joins_and_utf8_gathers_scan_in_one_pass() {
    let gpu = common::emulated();
    let sorted: Vec<i64> = (0..N as i64).map(|i| i / 3).collect();
    let keys = Column::from_vec(sorted).to_device(&gpu).unwrap();
    let t = Traffic::of(N, || {
        weft_kernels::segment::segments(&[&keys]).unwrap();
    });
    t.report("segments of one int64 key");
    // Flags (two keys read, a flag written), the scan, the starts.
    assert_eq!(t.launches.len(), 3);
    check_one_scan(&t, "segments", N);
    assert!(t.bytes_per_row() <= 16.0 + 4.0 + 8.1 + 8.0 + 4.0 / 3.0 + 0.1);

    let build = Column::from_vec((0..N as i64 / 4).collect::<Vec<_>>())
        .to_device(&gpu)
        .unwrap();
    let probe = Column::from_vec(random_i64(N, 6).into_iter().map(|v| v & 0x3fff).collect::<Vec<_>>())
        .to_device(&gpu)
        .unwrap();
    let t = Traffic::of(N, || {
        weft_kernels::join::pairs(&build, &probe, true).unwrap();
    });
    t.report("join pairs, left");
    check_one_scan(&t, "join pairs", N);

    let words = arrow_array::StringArray::from_iter_values((0..N).map(|i| format!("w{}", i % 97)));
    let utf8 = Column::from_arrow(&words).unwrap().to_device(&gpu).unwrap();
    let idx = Column::from_vec((0..N as u32).rev().collect::<Vec<_>>())
        .to_device(&gpu)
        .unwrap();
    let t = Traffic::of(N, || {
        weft_kernels::rows::gather(&utf8, &idx).unwrap();
    });
    t.report("utf8 gather");
    // Lengths, the scan into offsets, the bytes.
    assert_eq!(t.launches.len(), 3);
    check_one_scan(&t, "utf8 gather", N);
}

#[test]
fn a_kernel_call_queues_its_work_and_returns_without_waiting() {
    // On an asynchronous emulated device queued work runs only when the
    // stream is synchronised, as a GPU runs it after the launch returns.
    let gpu = common::emulated_async();
    let keys = random_i64(N, 3);
    let x = Column::from_vec(keys.clone()).to_device(&gpu).unwrap();
    let (rows, launches) = record_launches(|| sort::argsort(&x).unwrap());
    // Only the histogram has run (its counts choose the passes); the
    // passes are queued, and the temporaries they read wait for them.
    let ran: Vec<&str> = launches.iter().map(|l| l.kernel.as_str()).collect();
    assert_eq!(ran, ["radix_histogram"], "ran before the call returned");
    assert!(gpu.pool_stats().deferred > 0, "{:?}", gpu.pool_stats());
    // Reading the result waits for the queued passes (same thread, same stream).
    let got: Vec<u32> = rows.to_host().unwrap().host_values::<u32>().unwrap().to_vec();
    let mut want: Vec<u32> = (0..N as u32).collect();
    want.sort_by_key(|&i| keys[i as usize]);
    assert_eq!(got, want);
    assert_eq!(gpu.pool_stats().deferred, 0, "the temporaries went back to the pool");
}

#[test]
fn a_thread_that_exits_with_queued_kernels_runs_them_and_frees_their_memory() {
    // Its stream drains as the thread's streams drop: no abort at exit, no
    // block left deferred.
    let gpu = weft_gpu::Gpu::emulated_asynchronous(7, 64 << 20);
    let rows = 4096;
    let x = Column::from_vec(random_i64(rows, 4)).to_device(&gpu).unwrap();
    std::thread::scope(|t| {
        t.spawn(|| drop(sort::argsort(&x).unwrap())).join().unwrap();
    });
    let stats = gpu.pool_stats();
    assert_eq!(stats.deferred, 0, "{stats:?}");
    assert_eq!(
        stats.in_use,
        weft_gpu::pool::size_class(rows * 8),
        "only the keys are held: {stats:?}"
    );
}
