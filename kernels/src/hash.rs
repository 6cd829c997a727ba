//! Row hashes of int64 and utf8 columns, identical on CPU and GPU, and hash
//! partitioning into P parts (partition ids, offsets, and the rows grouped
//! by partition in their original order).

use weft_gpu::Buffer;

use crate::column::Place;
use crate::dispatch::{Target, target};
use weft_gpu::DeviceBuffer;

use crate::launch::{Arg, Exec, opt_ptr, ptr};
use crate::sort::{KeySource, Pass, Starts};
use crate::{Column, DType, KernelError};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const NULL_SALT: u64 = 0xA5A5_A5A5_A5A5_A5A5;

/// murmur3's 64-bit finaliser (`weft_fmix64` in common.cuh).
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Hash of one int64 (`weft_hash_i64`).
pub fn hash_i64(v: i64, seed: u64) -> u64 {
    fmix64((v as u64) ^ seed.wrapping_mul(GOLDEN))
}

/// Hash of a null row (`weft_hash_null`).
pub fn hash_null(seed: u64) -> u64 {
    fmix64(seed ^ NULL_SALT)
}

/// Hash of a byte string (`weft_hash_bytes`).
pub fn hash_bytes(p: &[u8], seed: u64) -> u64 {
    let len = p.len() as u64;
    let mut h = seed.wrapping_mul(GOLDEN) ^ len.wrapping_mul(0xff51_afd7_ed55_8ccd);
    let mut step = |chunk: u64| {
        h = (h ^ fmix64(chunk)).wrapping_mul(GOLDEN);
        h ^= h >> 29;
    };
    let chunks = p.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        step(u64::from_le_bytes(b));
    }
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        step(u64::from_le_bytes(b));
    }
    fmix64(h ^ len)
}

/// Partition of a hash (`weft_bucket`): the high half of `h * parts`.
pub fn bucket(h: u64, parts: u32) -> u32 {
    ((u128::from(h) * u128::from(parts)) >> 64) as u32
}

fn cpu_hashes(x: &Column, seed: u64) -> Result<Vec<u64>, KernelError> {
    let valid = x.host_validity()?;
    let is_valid = |i: usize| valid.is_none_or(|b| arrow_buffer::bit_util::get_bit(b, i));
    match x.dtype() {
        DType::I64 => Ok(x
            .host_values::<i64>()?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if is_valid(i) {
                    hash_i64(*v, seed)
                } else {
                    hash_null(seed)
                }
            })
            .collect()),
        DType::Utf8 => {
            let offsets = x
                .offsets()
                .ok_or(KernelError::InvalidArgument {
                    kernel: "hash",
                    reason: "utf8 without offsets".into(),
                })?
                .typed::<i32>()?;
            let data = x.values().host()?;
            Ok((0..x.len())
                .map(|i| {
                    if is_valid(i) {
                        hash_bytes(&data[offsets[i] as usize..offsets[i + 1] as usize], seed)
                    } else {
                        hash_null(seed)
                    }
                })
                .collect())
        }
        other => Err(KernelError::UnsupportedType {
            kernel: "hash",
            dtype: other,
        }),
    }
}

fn gpu_hashes(exec: &Exec, x: &Column, seed: u64) -> Result<weft_gpu::DeviceBuffer, KernelError> {
    let n = x.len();
    let out = exec.alloc(n * 8)?;
    let grid = exec.grid(n as u64);
    match x.dtype() {
        DType::I64 => exec.launch1(
            "hash",
            "hash_i64",
            grid,
            &[
                opt_ptr(Some(x.values()))?,
                opt_ptr(x.validity())?,
                Arg::U64(n as u64),
                Arg::U64(seed),
                ptr(&out),
            ],
        )?,
        DType::Utf8 => exec.launch1(
            "hash",
            "hash_utf8",
            grid,
            &[
                opt_ptr(x.offsets())?,
                opt_ptr(Some(x.values()))?,
                opt_ptr(x.validity())?,
                Arg::U64(n as u64),
                Arg::U64(seed),
                ptr(&out),
            ],
        )?,
        other => {
            return Err(KernelError::UnsupportedType {
                kernel: "hash",
                dtype: other,
            });
        }
    }
    Ok(out)
}

/// Hashes every row of an int64 or utf8 column (nulls hash to a constant of
/// the seed). The result is a U64 column without nulls.
pub fn hash(x: &Column, seed: u64) -> Result<Column, KernelError> {
    match target("hash", &[x])? {
        Target::Cpu => {
            let h = cpu_hashes(x, seed)?;
            Column::new(DType::U64, x.len(), Buffer::from_vec(h), None, None)
        }
        Target::Gpu(exec) => {
            let out = gpu_hashes(&exec, x, seed)?;
            Column::new(DType::U64, x.len(), Buffer::device(out), None, None)
        }
    }
}

/// Rows split into partitions by hash.
#[derive(Clone, Debug)]
pub struct Partitioned {
    /// Partition of each row (U32).
    pub ids: Column,
    /// `parts + 1` offsets into `rows` (U32): partition p is
    /// `rows[offsets[p]..offsets[p + 1]]`.
    pub offsets: Column,
    /// Row numbers grouped by partition, in their original order within each (U32).
    pub rows: Column,
}

/// Most partitions a single call makes (bounds the GPU histogram).
pub const MAX_PARTS: u32 = 1 << 16;

/// Splits the rows of an int64 or utf8 column into `parts` partitions by hash.
pub fn hash_partition(x: &Column, parts: u32, seed: u64) -> Result<Partitioned, KernelError> {
    if parts == 0 || parts > MAX_PARTS {
        return Err(KernelError::InvalidArgument {
            kernel: "hash_partition",
            reason: format!("{parts} parts (1 to {MAX_PARTS})"),
        });
    }
    let n = x.len();
    let u32col = |len: usize, d: Buffer| Column::new(DType::U32, len, d, None, None);
    match target("hash_partition", &[x])? {
        Target::Cpu => {
            let (ids, offsets, rows) = match (x.dtype(), x.validity()) {
                // The common case in one pass: hash, bucket and count together.
                (DType::I64, None) => partition_ids(
                    x.host_values::<i64>()?
                        .iter()
                        .map(|v| bucket(hash_i64(*v, seed), parts)),
                    n,
                    parts,
                ),
                _ => cpu_partition(&cpu_hashes(x, seed)?, parts),
            };
            Ok(Partitioned {
                ids: u32col(n, Buffer::from_vec(ids))?,
                offsets: u32col(parts as usize + 1, Buffer::from_vec(offsets))?,
                rows: u32col(n, Buffer::from_vec(rows))?,
            })
        }
        Target::Gpu(exec) => {
            let (ids, offsets, rows) = gpu_partition(&exec, x, parts, seed)?;
            Ok(Partitioned {
                ids: u32col(n, Buffer::device(ids))?,
                offsets: u32col(parts as usize + 1, Buffer::device(offsets))?,
                rows: u32col(n, Buffer::device(rows))?,
            })
        }
    }
}

/// Hash partitioning on the GPU: one kernel hashes each row, writes its
/// partition id and counts the partitions; a one-block kernel scans the
/// counts into offsets; then one onesweep pass on the id writes each row
/// number once into its place. Past 256 parts the host scans the counts
/// and two passes (low byte, then high byte of the id) move the rows.
fn gpu_partition(
    exec: &Exec,
    x: &Column,
    parts: u32,
    seed: u64,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer), KernelError> {
    let n = x.len();
    if u32::try_from(n).is_err() {
        return Err(KernelError::InvalidArgument {
            kernel: "hash_partition",
            reason: format!("{n} rows do not fit u32 row numbers"),
        });
    }
    let ids = exec.alloc(n * 4)?;
    let hist = exec.zeroed(parts as usize * 4)?;
    let (mode, src, xv, _hashes) = match x.dtype() {
        DType::I64 => (0u32, opt_ptr(Some(x.values()))?, opt_ptr(x.validity())?, None),
        DType::Utf8 => {
            let h = gpu_hashes(exec, x, seed)?;
            (1, ptr(&h), Arg::Ptr(0), Some(h))
        }
        other => {
            return Err(KernelError::UnsupportedType {
                kernel: "hash",
                dtype: other,
            });
        }
    };
    if n > 0 {
        exec.launch1(
            "sort",
            "partition_histogram",
            exec.grid(n as u64),
            &[
                Arg::U32(mode),
                src,
                xv,
                Arg::U64(n as u64),
                Arg::U64(seed),
                Arg::U32(parts),
                ptr(&ids),
                ptr(&hist),
            ],
        )?;
    }
    // Up to 256 parts, one pass whose bin starts (and the offsets) are
    // scanned on the device: nothing waits for the counts.
    if parts <= 256 {
        let offsets = exec.alloc((parts as usize + 1) * 4)?;
        let starts = exec.alloc(256 * 4)?;
        exec.launch1(
            "sort",
            "partition_starts",
            1,
            &[
                ptr(&hist),
                Arg::U32(parts),
                Arg::U64(n as u64),
                ptr(&starts),
                ptr(&offsets),
            ],
        )?;
        let pass = Pass {
            source: KeySource::U32,
            shift: 0,
            starts: Starts::Device(starts.device_ptr()),
        };
        let passes: &[Pass] = if parts > 1 { &[pass] } else { &[] };
        let rows = crate::sort::onesweep(exec, n, ptr(&ids), Arg::Ptr(0), passes)?;
        return Ok((ids, offsets, rows));
    }
    let counts: Vec<u32> = exec.download(&hist, parts as usize)?;
    let mut offsets = Vec::with_capacity(parts as usize + 1);
    let mut run = 0u32;
    for c in &counts {
        offsets.push(run);
        run += c;
    }
    offsets.push(run);
    // The id's two digits, low byte first; a digit all rows share is skipped.
    let mut passes = Vec::new();
    for shift in [0u32, 8] {
        let mut digit_counts = [0u32; 256];
        for (id, c) in counts.iter().enumerate() {
            digit_counts[(id >> shift) & 0xff] += c;
        }
        if digit_counts.iter().any(|c| *c as usize == n) {
            continue;
        }
        let mut starts = [0u32; 256];
        let mut run = 0u32;
        for (s, c) in starts.iter_mut().zip(digit_counts) {
            *s = run;
            run += c;
        }
        let source = if passes.is_empty() {
            KeySource::U32
        } else {
            KeySource::Buffer
        };
        passes.push(Pass {
            source,
            shift,
            starts: Starts::Host(starts),
        });
    }
    let rows = crate::sort::onesweep(exec, n, ptr(&ids), Arg::Ptr(0), &passes)?;
    let offsets = exec.upload(&offsets)?;
    Ok((ids, offsets, rows))
}

/// Partition ids, offsets and grouped rows of precomputed hashes.
pub fn cpu_partition(hashes: &[u64], parts: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    partition_ids(hashes.iter().map(|h| bucket(*h, parts)), hashes.len(), parts)
}

/// Collects `n` partition ids while counting them, then groups the rows.
fn partition_ids(ids: impl Iterator<Item = u32>, n: usize, parts: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; parts as usize + 1];
    let ids: Vec<u32> = ids.inspect(|id| offsets[*id as usize + 1] += 1).collect();
    debug_assert_eq!(ids.len(), n);
    for p in 0..parts as usize {
        offsets[p + 1] += offsets[p];
    }
    let mut next = offsets[..parts as usize].to_vec();
    let mut rows = vec![0u32; n];
    for (i, id) in ids.iter().enumerate() {
        let slot = &mut next[*id as usize];
        rows[*slot as usize] = i as u32;
        *slot += 1;
    }
    (ids, offsets, rows)
}
