//! Sorting int64 and f64 keys into a permutation: stable, ascending, nulls
//! last, floats in `f64::total_cmp` order. Both CPU and GPU run an LSD radix
//! sort over 8-bit digits of order-preserving u64 keys; the GPU does one
//! stable counting-sort pass per digit (shared with hash partitioning).

use arrow_buffer::Buffer;
use weft_gpu::DeviceBuffer;

use crate::column::Data;
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

/// Stable LSD radix sort of `keys`, returning the permutation `rows` put in
/// key order (`rows[k]` is the row with the k-th smallest key).
pub fn radix_argsort(keys: &[u64], rows: Vec<u32>) -> Vec<u32> {
    let n = keys.len();
    debug_assert_eq!(n, rows.len());
    // All eight histograms in one read; passes where every key has the same
    // digit move nothing and are skipped.
    let mut hist = vec![[0u32; 256]; 8];
    for k in keys {
        for (p, h) in hist.iter_mut().enumerate() {
            h[((k >> (8 * p)) & 0xff) as usize] += 1;
        }
    }
    let mut k = keys.to_vec();
    let mut ix = rows;
    let mut k2 = vec![0u64; n];
    let mut ix2 = vec![0u32; n];
    for (p, h) in hist.iter().enumerate() {
        if h.iter().any(|c| *c as usize == n) {
            continue;
        }
        let mut off = [0u32; 256];
        let mut run = 0;
        for (o, c) in off.iter_mut().zip(h) {
            *o = run;
            run += c;
        }
        let shift = 8 * p;
        for (key, row) in k.iter().zip(&ix) {
            let d = ((key >> shift) & 0xff) as usize;
            let slot = off[d] as usize;
            off[d] += 1;
            k2[slot] = *key;
            ix2[slot] = *row;
        }
        std::mem::swap(&mut k, &mut k2);
        std::mem::swap(&mut ix, &mut ix2);
    }
    ix
}

fn cpu_argsort(x: &Column) -> Result<Vec<u32>, KernelError> {
    let valid = x.host_validity()?;
    let is_valid = |i: usize| valid.is_none_or(|b| arrow_buffer::bit_util::get_bit(b, i));
    let (mut keys, mut rows, mut nulls) = (
        Vec::with_capacity(x.len()),
        Vec::with_capacity(x.len()),
        Vec::new(),
    );
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

/// One stable counting-sort pass on the GPU, after its histogram and scan.
pub(crate) struct CountingPass<'a> {
    digits: &'a DeviceBuffer,
    perm_in: Option<&'a DeviceBuffer>,
    n: usize,
    chunk: u64,
    grid: u32,
    /// The exclusive scan of the digit-major histogram.
    pub(crate) scanned: DeviceBuffer,
}

/// Histogram and scan of `digits` (each below `radix`) for a counting pass
/// over the rows in order `perm_in` (identity when None).
pub(crate) fn counting_pass<'a>(
    exec: &Exec,
    digits: &'a DeviceBuffer,
    perm_in: Option<&'a DeviceBuffer>,
    n: usize,
    radix: u32,
    grid: u32,
) -> Result<CountingPass<'a>, KernelError> {
    let threads = u64::from(grid) * u64::from(BLOCK);
    let chunk = (n as u64).div_ceil(threads).max(1);
    let entries = u64::from(radix) * threads;
    let hist = exec.alloc(entries as usize * 4)?;
    exec.launch1(
        "sort",
        "count_hist",
        grid,
        &[
            ptr(digits),
            Arg::U64(n as u64),
            Arg::U32(radix),
            Arg::U64(chunk),
            ptr(&hist),
        ],
    )?;
    let total = exec.alloc(4)?;
    exec.launch1(
        "scan",
        "scan_exclusive_u32",
        1,
        &[ptr(&hist), Arg::U64(entries), ptr(&total)],
    )?;
    Ok(CountingPass {
        digits,
        perm_in,
        n,
        chunk,
        grid,
        scanned: hist,
    })
}

impl CountingPass<'_> {
    /// Scatters the rows into their stable sorted order.
    pub(crate) fn scatter(self, exec: &Exec) -> Result<DeviceBuffer, KernelError> {
        let out = exec.alloc(self.n * 4)?;
        exec.launch1(
            "sort",
            "count_scatter",
            self.grid,
            &[
                ptr(self.digits),
                Arg::Ptr(self.perm_in.map_or(0, |p| p.device_ptr())),
                Arg::U64(self.n as u64),
                Arg::U64(self.chunk),
                ptr(&self.scanned),
                ptr(&out),
            ],
        )?;
        Ok(out)
    }
}

/// The permutation that sorts an int64 or f64 column: stable, ascending,
/// nulls last (a U32 column).
pub fn argsort(x: &Column) -> Result<Column, KernelError> {
    let n = x.len();
    match target("argsort", &[x])? {
        Target::Cpu => {
            let perm = cpu_argsort(x)?;
            Column::new(
                DType::U32,
                n,
                Data::Host(Buffer::from_vec(perm)),
                None,
                None,
            )
        }
        Target::Gpu(exec) => {
            let keys_kernel = match x.dtype() {
                DType::I64 => "radix_keys_i64",
                DType::F64 => "radix_keys_f64",
                other => {
                    return Err(KernelError::UnsupportedType {
                        kernel: "argsort",
                        dtype: other,
                    });
                }
            };
            let grid = exec.grid(n as u64).min(16);
            let keys = exec.alloc(n * 8)?;
            let x_ptr = crate::launch::opt_ptr(Some(x.values()))?;
            exec.launch1(
                "sort",
                keys_kernel,
                exec.grid(n as u64),
                &[x_ptr, Arg::U64(n as u64), ptr(&keys)],
            )?;
            let digits = exec.alloc(n * 4)?;
            let mut perm: Option<DeviceBuffer> = None;
            for shift in (0..64).step_by(8) {
                exec.launch1(
                    "sort",
                    "radix_digits",
                    exec.grid(n as u64),
                    &[
                        ptr(&keys),
                        Arg::Ptr(perm.as_ref().map_or(0, |p| p.device_ptr())),
                        Arg::U64(n as u64),
                        Arg::U32(shift),
                        ptr(&digits),
                    ],
                )?;
                let next =
                    counting_pass(&exec, &digits, perm.as_ref(), n, 256, grid)?.scatter(&exec)?;
                perm = Some(next);
            }
            let mut perm = perm.ok_or(KernelError::InvalidArgument {
                kernel: "argsort",
                reason: "no radix pass ran".into(),
            })?;
            if let Some(v) = x.validity() {
                exec.launch1(
                    "sort",
                    "radix_null_digits",
                    exec.grid(n as u64),
                    &[
                        crate::launch::opt_ptr(Some(v))?,
                        ptr(&perm),
                        Arg::U64(n as u64),
                        ptr(&digits),
                    ],
                )?;
                perm = counting_pass(&exec, &digits, Some(&perm), n, 2, grid)?.scatter(&exec)?;
            }
            exec.finish()?;
            Column::new(DType::U32, n, Data::Device(perm), None, None)
        }
    }
}
