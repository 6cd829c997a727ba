//! Sorting int64 and f64 keys into a permutation: stable, ascending, nulls
//! last, floats in `f64::total_cmp` order. Both radix sort 8-bit digits of
//! order-preserving u64 keys. The CPU splits by the top byte in one pass over
//! memory and finishes each bucket in cache (see [`radix_argsort`]); the GPU
//! runs an LSD radix sort in the style of CUB's onesweep (see
//! `cuda/sort.cu`): one histogram of every digit in a single read of the
//! keys, then one pass per digit position that moves (key, row) pairs
//! together, each tile finding its place by decoupled look-back. Hash
//! partitioning is one such pass, on the partition id.

use weft_gpu::Buffer;
use weft_gpu::DeviceBuffer;

use crate::dispatch::{Target, target};
use crate::launch::{Arg, BLOCK, Exec, ptr};
use crate::{Column, DType, KernelError};

/// Order-preserving key of an int64.
pub fn key_i64(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// Order-preserving key of an f64 (the order of `f64::total_cmp`).
pub fn key_f64(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// Stable radix sort of `keys`, returning the permutation `rows` put in key
/// order (`rows[k]` is the row with the k-th smallest key).
pub fn radix_argsort(keys: &[u64], rows: Vec<u32>) -> Vec<u32> {
    debug_assert_eq!(keys.len(), rows.len());
    msd_then_lsd(keys.len(), |i| keys[i], |i| rows[i])
}

/// The sort behind [`radix_argsort`]: one pass over memory splits the rows
/// by the top byte of their key; each of those 256 buckets is then small
/// enough to finish in cache with an LSD sort of the other seven bytes, the
/// buckets shared among the cores. Both steps are stable, so the sort is.
fn msd_then_lsd(n: usize, key: impl Fn(usize) -> u64 + Sync, row: impl Fn(usize) -> u32 + Sync) -> Vec<u32> {
    if n <= 1 {
        return (0..n).map(&row).collect();
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, 8)
        .min(n.div_ceil(1 << 16));
    // Each thread histograms, then scatters, its own contiguous share of the
    // input; within a bucket, thread t's rows go after thread t-1's, so the
    // split is stable.
    let share = n.div_ceil(threads);
    let ranges: Vec<(usize, usize)> = (0..threads).map(|t| (t * share, ((t + 1) * share).min(n))).collect();
    let hists: Vec<[usize; 256]> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(lo, hi)| {
                let key = &key;
                scope.spawn(move || {
                    let mut h = [0usize; 256];
                    for i in lo..hi {
                        h[(key(i) >> 56) as usize] += 1;
                    }
                    h
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut starts = [0usize; 257];
    let mut next: Vec<[usize; 256]> = vec![[0; 256]; threads];
    let mut run = 0;
    for d in 0..256 {
        starts[d] = run;
        for t in 0..threads {
            next[t][d] = run;
            run += hists[t][d];
        }
    }
    starts[256] = run;
    let mut scratch = KeyScratch::take(n);
    let k1 = scratch.slice(n);
    let mut r1 = vec![0u32; n];
    // The permutation is returned, so it is fresh memory every time.
    weft_gpu::advise_huge_pages(&r1);
    let (kp, rp) = (SharedOut(k1.as_mut_ptr()), SharedOut(r1.as_mut_ptr()));
    std::thread::scope(|scope| {
        for (&(lo, hi), mut next) in ranges.iter().zip(next) {
            let (key, row, kp, rp) = (&key, &row, &kp, &rp);
            scope.spawn(move || {
                for i in lo..hi {
                    let k = key(i);
                    let d = (k >> 56) as usize;
                    let slot = next[d];
                    next[d] += 1;
                    // SAFETY: thread t's slots for bucket d run from its
                    // offset up to the next thread's (or bucket's) start,
                    // one per key it counted, so every slot is below `n`
                    // and written by exactly one thread; k1 and r1 outlive
                    // the scope.
                    unsafe {
                        *kp.0.add(slot) = k;
                        *rp.0.add(slot) = row(i);
                    }
                }
            });
        }
    });
    // Split the buckets into one contiguous run per thread of about equal size.
    let mut bounds = vec![0usize];
    for t in 1..threads {
        let target = n * t / threads;
        let b = starts.iter().copied().find(|s| *s >= target).unwrap_or(n);
        if b > *bounds.last().unwrap_or(&0) && b < n {
            bounds.push(b);
        }
    }
    bounds.push(n);
    let sort_run = |base: usize, k: &mut [u64], r: &mut [u32]| {
        let end = base + k.len();
        let mut scratch = BucketScratch::default();
        for d in 0..256 {
            let (s, e) = (starts[d].max(base) - base, starts[d + 1].min(end).saturating_sub(base));
            if e > s + 1 {
                sort_bucket(&mut k[s..e], &mut r[s..e], 7, &mut scratch);
            }
        }
    };
    std::thread::scope(|scope| {
        let (mut k_rest, mut r_rest) = (&mut k1[..], &mut r1[..]);
        for w in bounds.windows(2) {
            let len = w[1] - w[0];
            let (k, kr) = std::mem::take(&mut k_rest).split_at_mut(len);
            let (r, rr) = std::mem::take(&mut r_rest).split_at_mut(len);
            (k_rest, r_rest) = (kr, rr);
            let base = w[0];
            let sort_run = &sort_run;
            if w[1] == n {
                sort_run(base, k, r);
            } else {
                scope.spawn(move || sort_run(base, k, r));
            }
        }
    });
    drop(scratch);
    r1
}

/// Keys of the largest sorts kept for the next one: writing into freshly
/// mapped pages costs several times a warm write, and the keys are 8 of
/// the 12 bytes a sort moves per row.
static KEY_SCRATCH: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

/// Most key scratch kept between sorts, in keys (512 MiB).
const MAX_KEPT_KEYS: usize = 64 << 20;

/// Key scratch taken from [`KEY_SCRATCH`] (or made) and returned on drop.
struct KeyScratch(Vec<u64>);

impl KeyScratch {
    fn take(n: usize) -> Self {
        let kept = std::mem::take(&mut *KEY_SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut keys = if kept.len() >= n { kept } else { Vec::new() };
        if keys.len() < n {
            keys.resize(n, 0);
        }
        KeyScratch(keys)
    }

    fn slice(&mut self, n: usize) -> &mut [u64] {
        &mut self.0[..n]
    }
}

impl Drop for KeyScratch {
    fn drop(&mut self) {
        if self.0.len() <= MAX_KEPT_KEYS {
            let mut kept = KEY_SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if kept.len() < self.0.len() {
                *kept = std::mem::take(&mut self.0);
            }
        }
    }
}

/// Output slices written from several threads at disjoint indices.
struct SharedOut<T>(*mut T);
// SAFETY: only used inside a thread scope while the owning Vec is alive and
// not otherwise accessed; each index is written by one thread.
unsafe impl<T: Send> Sync for SharedOut<T> {}

/// Most rows [`lsd_packed`] sorts at once: a row's index among them fits 16 bits.
const PACKED_ROWS: usize = 1 << 16;

/// Scratch of one thread's bucket sorts, grown to the largest bucket.
#[derive(Default)]
struct BucketScratch {
    rows: Vec<u32>,
    a: Vec<u64>,
    b: Vec<u64>,
}

/// Stable sort of the rows `r` by the low `bytes` bytes of their keys `k`
/// (left scrambled). Buckets too big for [`lsd_packed`] are split by their
/// highest remaining byte first.
fn sort_bucket(k: &mut [u64], r: &mut [u32], bytes: usize, scratch: &mut BucketScratch) {
    let n = k.len();
    if n <= 1 || bytes == 0 {
        return;
    }
    if n <= PACKED_ROWS {
        return lsd_packed(k, r, bytes, scratch);
    }
    let shift = 8 * (bytes - 1);
    let mut starts = [0usize; 257];
    for key in k.iter() {
        starts[((key >> shift) & 0xff) as usize + 1] += 1;
    }
    for d in 0..256 {
        starts[d + 1] += starts[d];
    }
    let (ks, rs) = (k.to_vec(), r.to_vec());
    let mut next = starts;
    for (key, row) in ks.into_iter().zip(rs) {
        let d = ((key >> shift) & 0xff) as usize;
        k[next[d]] = key;
        r[next[d]] = row;
        next[d] += 1;
    }
    for d in 0..256 {
        sort_bucket(
            &mut k[starts[d]..starts[d + 1]],
            &mut r[starts[d]..starts[d + 1]],
            bytes - 1,
            scratch,
        );
    }
}

/// Stable LSD sort of at most [`PACKED_ROWS`] rows `r` by the low `bytes`
/// bytes of their keys `k`. The first pass sorts by byte 0 and packs bytes
/// 1 to 6 with the row's index among these rows into one u64, so the passes
/// after it move 8 bytes a row instead of 12; the last pass writes the rows
/// those indices name. Passes where every key has the same digit are skipped.
fn lsd_packed(k: &[u64], r: &mut [u32], bytes: usize, scratch: &mut BucketScratch) {
    let n = k.len();
    debug_assert!(n <= PACKED_ROWS && (1..=7).contains(&bytes));
    let mut hist = [[0u32; 256]; 7];
    for key in k {
        for (p, h) in hist.iter_mut().enumerate().take(bytes) {
            h[((key >> (8 * p)) & 0xff) as usize] += 1;
        }
    }
    let offsets = |h: &[u32; 256]| {
        let mut off = [0u32; 256];
        let mut run = 0;
        for (o, c) in off.iter_mut().zip(h) {
            *o = run;
            run += c;
        }
        off
    };
    if scratch.a.len() < n {
        scratch.a.resize(n, 0);
        scratch.b.resize(n, 0);
        scratch.rows.resize(n, 0);
    }
    let (mut src, mut dst) = (&mut scratch.a[..n], &mut scratch.b[..n]);
    let rows = &mut scratch.rows[..n];
    rows.copy_from_slice(r);
    let mut off = offsets(&hist[0]);
    for (i, key) in k.iter().enumerate() {
        let d = (key & 0xff) as usize;
        // SAFETY: `off` holds the prefix sums of these keys' byte-0 counts,
        // so every slot is below n, the length of `src`.
        unsafe { *src.get_unchecked_mut(off[d] as usize) = ((key >> 8) << 16) | i as u64 };
        off[d] += 1;
    }
    let passes: Vec<usize> = (1..bytes)
        .filter(|p| hist[*p].iter().all(|c| (*c as usize) < n))
        .collect();
    let Some((&last, middle)) = passes.split_last() else {
        for (row, packed) in r.iter_mut().zip(src.iter()) {
            *row = rows[(packed & 0xffff) as usize];
        }
        return;
    };
    for &p in middle {
        let (shift, mut off) = (8 * p + 8, offsets(&hist[p]));
        for packed in src.iter() {
            let d = ((packed >> shift) & 0xff) as usize;
            // SAFETY: as above, for this pass's digit counts.
            unsafe { *dst.get_unchecked_mut(off[d] as usize) = *packed };
            off[d] += 1;
        }
        std::mem::swap(&mut src, &mut dst);
    }
    let (shift, mut off) = (8 * last + 8, offsets(&hist[last]));
    for packed in src.iter() {
        let d = ((packed >> shift) & 0xff) as usize;
        // SAFETY: as above; the index in the low 16 bits is below n.
        unsafe { *r.get_unchecked_mut(off[d] as usize) = *rows.get_unchecked((packed & 0xffff) as usize) };
        off[d] += 1;
    }
}

fn cpu_argsort(x: &Column) -> Result<Vec<u32>, KernelError> {
    let n = x.len();
    // Without nulls the keys are made on the fly from the values.
    match (x.dtype(), x.host_validity()?) {
        (DType::I64, None) => {
            let v = x.host_values::<i64>()?;
            return Ok(msd_then_lsd(n, |i| key_i64(v[i]), |i| i as u32));
        }
        (DType::F64, None) => {
            let v = x.host_values::<f64>()?;
            return Ok(msd_then_lsd(n, |i| key_f64(v[i]), |i| i as u32));
        }
        _ => {}
    }
    let valid = x.host_validity()?;
    let is_valid = |i: usize| valid.is_none_or(|b| arrow_buffer::bit_util::get_bit(b, i));
    let (mut keys, mut rows, mut nulls) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
    let mut push = |i: usize, key: u64| {
        if is_valid(i) {
            keys.push(key);
            rows.push(i as u32);
        } else {
            nulls.push(i as u32);
        }
    };
    match x.dtype() {
        DType::I64 => x
            .host_values::<i64>()?
            .iter()
            .enumerate()
            .for_each(|(i, v)| push(i, key_i64(*v))),
        DType::F64 => x
            .host_values::<f64>()?
            .iter()
            .enumerate()
            .for_each(|(i, v)| push(i, key_f64(*v))),
        other => {
            return Err(KernelError::UnsupportedType {
                kernel: "argsort",
                dtype: other,
            });
        }
    }
    let mut perm = radix_argsort(&keys, rows);
    perm.extend(nulls);
    Ok(perm)
}

/// Where a onesweep pass reads its keys (`KEY_*` in cuda/sort.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// u64 keys written by the previous pass.
    Buffer = 0,
    /// An int64 column (the first pass).
    I64 = 1,
    /// A float64 column (the first pass).
    F64 = 2,
    /// u32 values (partition ids).
    U32 = 3,
    /// 0 for a valid row, 1 for a null one: the last pass of a sort with nulls.
    Nulls = 4,
}

/// Digits per key position, and the positions of a u64 key.
const RADIX: usize = 256;
const KEY_DIGITS: usize = 8;

/// Rows per thread of a onesweep tile: 16 on a GPU (the tile is 4096 rows);
/// on an emulated device 2 for small inputs, so the tests' sizes span many
/// tiles and the look-back between them, and 16 past 8192 rows, so the GPU's
/// tile runs in the emulation too.
fn tile_items(exec: &Exec, n: usize) -> u32 {
    match exec.gpu.backend() {
        weft_gpu::GpuBackend::Emulated(_) if n < 8192 => 2,
        _ => 16,
    }
}

/// Exclusive prefix sums of digit counts: where each digit's bin starts.
fn bin_starts(counts: &[u32]) -> Vec<u32> {
    let mut run = 0u32;
    counts
        .iter()
        .map(|c| {
            let s = run;
            run = run.wrapping_add(*c);
            s
        })
        .collect()
}

/// One pass of a [`Onesweep`] sort.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass {
    /// Where the keys come from.
    pub(crate) source: KeySource,
    /// The digit is `(key >> shift) & 0xff`.
    pub(crate) shift: u32,
    /// Where each digit's bin starts in the output (256 entries).
    pub(crate) starts: Starts,
}

/// The bin starts of a pass: computed on the host, or already on the device.
/// (A sort holds at most nine, so the array's size does not matter.)
#[derive(Clone, Copy, Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Starts {
    /// Uploaded with the other passes' starts.
    Host([u32; RADIX]),
    /// A device pointer to 256 u32 (kept alive by the caller).
    Device(u64),
}

/// The onesweep passes of one sort over `n` rows: each moves (key, row)
/// pairs into stable order by one digit, the first reading keys from
/// `first_src` (a column, or the u32 ids of a partition), the rest from the
/// keys the pass before wrote. Returns the rows in their final order.
pub(crate) fn onesweep(
    exec: &Exec,
    n: usize,
    first_src: Arg,
    validity: Arg,
    passes: &[Pass],
) -> Result<DeviceBuffer, KernelError> {
    if passes.is_empty() || n == 0 {
        let out = exec.alloc(n * 4)?;
        if n > 0 {
            exec.launch1(
                "sort",
                "sort_iota",
                exec.grid(n as u64),
                &[Arg::U64(n as u64), ptr(&out)],
            )?;
        }
        return Ok(out);
    }
    let items = tile_items(exec, n);
    let tile = BLOCK as usize * items as usize;
    let kernel = format!("onesweep_pass_{items}");
    let tiles = n.div_ceil(tile);
    let tiles_u32 = u32::try_from(tiles).map_err(|_| KernelError::InvalidArgument {
        kernel: "argsort",
        reason: format!("{n} rows is too many tiles"),
    })?;
    // Status words of every tile and digit, then one tile counter per pass.
    let status_bytes = tiles * RADIX * 8;
    let status = exec.zeroed(status_bytes + passes.len() * 4)?;
    let host_starts: Vec<u32> = passes
        .iter()
        .flat_map(|p| match p.starts {
            Starts::Host(s) => s,
            Starts::Device(_) => [0; RADIX],
        })
        .collect();
    let uploaded = exec.upload(&host_starts)?;
    // Only the passes followed by a digit pass of the keys write keys.
    let needs_keys = |k: usize| passes.get(k + 1).is_some_and(|p| p.source == KeySource::Buffer);
    let key_bufs = if (0..passes.len()).any(needs_keys) {
        Some([exec.alloc(n * 8)?, exec.alloc(n * 8)?])
    } else {
        None
    };
    let rows = [exec.alloc(n * 4)?, exec.alloc(n * 4)?];
    for (k, pass) in passes.iter().enumerate() {
        let (src, rows_in) = if k == 0 {
            (first_src, Arg::Ptr(0))
        } else {
            let src = match (pass.source, &key_bufs) {
                (KeySource::Buffer, Some(b)) => ptr(&b[(k - 1) % 2]),
                _ => first_src,
            };
            (src, ptr(&rows[(k - 1) % 2]))
        };
        let keys_out = match (&key_bufs, needs_keys(k)) {
            (Some(b), true) => ptr(&b[k % 2]),
            _ => Arg::Ptr(0),
        };
        exec.launch1(
            "sort",
            &kernel,
            tiles_u32,
            &[
                Arg::U32(pass.source as u32),
                src,
                validity,
                rows_in,
                Arg::U64(n as u64),
                Arg::U32(pass.shift),
                Arg::Ptr(match pass.starts {
                    Starts::Host(_) => uploaded.device_ptr() + (k * RADIX * 4) as u64,
                    Starts::Device(p) => p,
                }),
                ptr(&status),
                Arg::Ptr(status.device_ptr() + (status_bytes + k * 4) as u64),
                Arg::U32(k as u32 + 1),
                keys_out,
                ptr(&rows[k % 2]),
            ],
        )?;
    }
    // Everything above is queued on one stream; the buffers it reads are
    // dropped on this thread, so the stream keeps them until it has run.
    let [a, b] = rows;
    Ok(if passes.len() % 2 == 1 { a } else { b })
}

/// The GPU argsort: one histogram of all eight digits, then one onesweep
/// pass per digit position where the keys differ, then the null pass.
fn gpu_argsort(exec: &Exec, x: &Column) -> Result<DeviceBuffer, KernelError> {
    let n = x.len();
    let source = match x.dtype() {
        DType::I64 => KeySource::I64,
        DType::F64 => KeySource::F64,
        other => {
            return Err(KernelError::UnsupportedType {
                kernel: "argsort",
                dtype: other,
            });
        }
    };
    if u32::try_from(n).is_err() {
        return Err(KernelError::InvalidArgument {
            kernel: "argsort",
            reason: format!("{n} rows do not fit u32 row numbers"),
        });
    }
    if n == 0 {
        return onesweep(exec, 0, Arg::Ptr(0), Arg::Ptr(0), &[]);
    }
    let x_ptr = crate::launch::opt_ptr(Some(x.values()))?;
    let validity = crate::launch::opt_ptr(x.validity())?;
    let hist = exec.zeroed((KEY_DIGITS * RADIX + 1) * 4)?;
    exec.launch1(
        "sort",
        "radix_histogram",
        exec.grid(n as u64),
        &[
            Arg::U32(source as u32),
            x_ptr,
            validity,
            Arg::U64(n as u64),
            Arg::U32(KEY_DIGITS as u32),
            ptr(&hist),
        ],
    )?;
    let counts: Vec<u32> = exec.download(&hist, KEY_DIGITS * RADIX + 1)?;
    let nulls = counts[KEY_DIGITS * RADIX] as usize;
    let mut passes = Vec::new();
    for p in 0..KEY_DIGITS {
        let c = &counts[p * RADIX..(p + 1) * RADIX];
        // A digit every row shares leaves the order as it is.
        if c.iter().any(|c| *c as usize == n) {
            continue;
        }
        let mut starts = [0u32; RADIX];
        starts.copy_from_slice(&bin_starts(c));
        let source = if passes.is_empty() { source } else { KeySource::Buffer };
        passes.push(Pass {
            source,
            shift: 8 * p as u32,
            starts: Starts::Host(starts),
        });
    }
    if nulls > 0 && nulls < n {
        let mut starts = [n as u32; RADIX];
        starts[0] = 0;
        starts[1] = (n - nulls) as u32;
        passes.push(Pass {
            source: KeySource::Nulls,
            shift: 0,
            starts: Starts::Host(starts),
        });
    }
    onesweep(exec, n, x_ptr, validity, &passes)
}

/// The permutation that sorts an int64 or f64 column: stable, ascending,
/// nulls last (a U32 column).
pub fn argsort(x: &Column) -> Result<Column, KernelError> {
    let n = x.len();
    match target("argsort", &[x])? {
        Target::Cpu => {
            let perm = cpu_argsort(x)?;
            Column::new(DType::U32, n, Buffer::from_vec(perm), None, None)
        }
        Target::Gpu(exec) => {
            let perm = gpu_argsort(&exec, x)?;
            Column::new(DType::U32, n, Buffer::device(perm), None, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(keys: &[u64]) {
        let perm = radix_argsort(keys, (0..keys.len() as u32).collect());
        let mut want: Vec<u32> = (0..keys.len() as u32).collect();
        want.sort_by_key(|i| keys[*i as usize]);
        assert_eq!(perm, want);
    }

    #[test]
    fn large_inputs_split_across_threads_stay_stable() {
        let mut x = 7u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let random: Vec<u64> = (0..200_000).map(|_| next()).collect();
        check(&random);
        // Few distinct values: long runs of equal keys test stability.
        check(&random.iter().map(|k| k % 5).collect::<Vec<_>>());
        // One top byte holds everything: a single bucket, one thread.
        check(&random.iter().map(|k| k >> 8).collect::<Vec<_>>());
        // Skewed: half the keys in one bucket.
        check(
            &random
                .iter()
                .enumerate()
                .map(|(i, k)| if i % 2 == 0 { *k } else { k >> 8 })
                .collect::<Vec<_>>(),
        );
        assert!(key_i64(-1) < key_i64(0) && key_i64(i64::MAX) > key_i64(i64::MIN));
        assert!(key_f64(-0.0) < key_f64(0.0) && key_f64(f64::NEG_INFINITY) < key_f64(-1e300));
    }
}
