//! Equi-join of int64 keys by sorted search: the build keys sorted (stable,
//! nulls last), each probe row's run of equal build keys found by binary
//! search, and the matches emitted as (probe row, build row) pairs in probe
//! order, build rows ascending within one probe row. A left join keeps a
//! probe row without matches with [`NO_ROW`] for its build row, which
//! [`take_or_null`] turns into nulls. Null keys never match. [`counts`]
//! gives semi and anti joins their masks.

use weft_gpu::Buffer;

use crate::column::bitmap_bytes;
use crate::dispatch::{Target, target};
use crate::launch::{Arg, Exec, opt_ptr, ptr};
use crate::{Column, DType, KernelError, sort, take};

/// The build row of an unmatched probe row in a left join.
pub const NO_ROW: u32 = u32::MAX;

fn check_keys(build: &Column, probe: &Column) -> Result<(), KernelError> {
    for c in [build, probe] {
        if c.dtype() != DType::I64 {
            return Err(KernelError::UnsupportedType {
                kernel: "join",
                dtype: c.dtype(),
            });
        }
    }
    Ok(())
}

/// For each probe row, the build rows with its key (host columns), in
/// ascending row order.
fn cpu_matches(build: &Column, probe: &Column) -> Result<Vec<Vec<u32>>, KernelError> {
    let b = build.host_values::<i64>()?;
    let mut table: std::collections::HashMap<i64, Vec<u32>> = std::collections::HashMap::new();
    for (row, k) in b.iter().enumerate() {
        if build.is_valid(row)? {
            table.entry(*k).or_default().push(row as u32);
        }
    }
    let p = probe.host_values::<i64>()?;
    (0..probe.len())
        .map(|i| {
            Ok(if probe.is_valid(i)? {
                table.get(&p[i]).cloned().unwrap_or_default()
            } else {
                Vec::new()
            })
        })
        .collect()
}

/// The sorted build keys, their order, and per probe row where its run
/// starts and its (scanned) count, all on the device.
struct Ranges {
    perm: Column,
    sorted: Column,
    lo: weft_gpu::DeviceBuffer,
    counts: weft_gpu::DeviceBuffer,
}

fn gpu_ranges(exec: &Exec, build: &Column, probe: &Column, at_least_one: bool) -> Result<Ranges, KernelError> {
    let perm = sort::argsort(build)?;
    let sorted = take::take(build, &perm)?;
    let np = probe.len();
    let lo = exec.alloc(np.max(1) * 4)?;
    let counts = exec.alloc(np.max(1) * 4)?;
    exec.launch1(
        "join",
        "join_ranges",
        exec.grid(np as u64),
        &[
            opt_ptr(Some(sorted.values()))?,
            opt_ptr(sorted.validity())?,
            Arg::U64(build.len() as u64),
            opt_ptr(Some(probe.values()))?,
            opt_ptr(probe.validity())?,
            Arg::U64(np as u64),
            Arg::U32(u32::from(at_least_one)),
            ptr(&lo),
            ptr(&counts),
        ],
    )?;
    Ok(Ranges {
        perm,
        sorted,
        lo,
        counts,
    })
}

/// How many build rows match each probe row (a U32 column).
pub fn counts(build: &Column, probe: &Column) -> Result<Column, KernelError> {
    check_keys(build, probe)?;
    match target("join", &[build, probe])? {
        Target::Cpu => Ok(Column::from_vec(
            cpu_matches(build, probe)?
                .iter()
                .map(|m| m.len() as u32)
                .collect::<Vec<_>>(),
        )),
        Target::Gpu(exec) => {
            let r = gpu_ranges(&exec, build, probe, false)?;
            Column::new(DType::U32, probe.len(), Buffer::device(r.counts), None, None)
        }
    }
}

/// The matching (probe row, build row) pairs as two U32 columns; with
/// `keep_unmatched` (a left join) a probe row without matches appears once
/// with [`NO_ROW`].
pub fn pairs(build: &Column, probe: &Column, keep_unmatched: bool) -> Result<(Column, Column), KernelError> {
    check_keys(build, probe)?;
    match target("join", &[build, probe])? {
        Target::Cpu => {
            let (mut p, mut b) = (Vec::new(), Vec::new());
            for (i, m) in cpu_matches(build, probe)?.into_iter().enumerate() {
                if m.is_empty() && keep_unmatched {
                    p.push(i as u32);
                    b.push(NO_ROW);
                }
                for row in m {
                    p.push(i as u32);
                    b.push(row);
                }
            }
            Ok((Column::from_vec(p), Column::from_vec(b)))
        }
        Target::Gpu(exec) => {
            let np = probe.len();
            let r = gpu_ranges(&exec, build, probe, keep_unmatched)?;
            let offsets = exec.alloc(np.max(1) * 4)?;
            let total = exec.zeroed(4)?;
            crate::scan::exclusive_sum_u32(&exec, ptr(&r.counts), ptr(&offsets), np, ptr(&total))?;
            let m = if np == 0 {
                0
            } else {
                exec.download::<u32>(&total, 1)?[0] as usize
            };
            let (out_p, out_b) = (exec.alloc(m.max(1) * 4)?, exec.alloc(m.max(1) * 4)?);
            exec.launch1(
                "join",
                "join_emit",
                exec.grid(np as u64),
                &[
                    ptr(&r.lo),
                    ptr(&r.counts),
                    ptr(&offsets),
                    opt_ptr(Some(r.perm.values()))?,
                    opt_ptr(Some(r.sorted.values()))?,
                    opt_ptr(r.sorted.validity())?,
                    Arg::U64(build.len() as u64),
                    opt_ptr(Some(probe.values()))?,
                    opt_ptr(probe.validity())?,
                    Arg::U64(np as u64),
                    ptr(&out_p),
                    ptr(&out_b),
                ],
            )?;
            Ok((
                Column::new(DType::U32, m, Buffer::device(out_p), None, None)?,
                Column::new(DType::U32, m, Buffer::device(out_b), None, None)?,
            ))
        }
    }
}

/// Gathers the fixed-width column `x` at `idx` (U32, no nulls), null where
/// an index is [`NO_ROW`]; the result always has a validity bitmap.
pub fn take_or_null(x: &Column, idx: &Column) -> Result<Column, KernelError> {
    if idx.dtype() != DType::U32 || idx.validity().is_some() {
        return Err(KernelError::InvalidArgument {
            kernel: "take_or_null",
            reason: "indices must be a U32 column without nulls".into(),
        });
    }
    let width = match x.dtype() {
        DType::Bool | DType::Utf8 => None,
        t => t.width(),
    }
    .ok_or(KernelError::UnsupportedType {
        kernel: "take_or_null",
        dtype: x.dtype(),
    })?;
    let n = idx.len();
    match target("take_or_null", &[x, idx])? {
        Target::Cpu => {
            let rows = idx.host_values::<u32>()?;
            let src = crate::column::Place::host(x.values())?;
            let mut out = vec![0u8; n * width];
            let mut valid = vec![0u8; bitmap_bytes(n)];
            for (i, &r) in rows.iter().enumerate() {
                if r != NO_ROW && x.is_valid(r as usize)? {
                    let at = r as usize * width;
                    out[i * width..(i + 1) * width].copy_from_slice(&src[at..at + width]);
                    arrow_buffer::bit_util::set_bit(&mut valid, i);
                }
            }
            Column::new(x.dtype(), n, Buffer::host(out), Some(Buffer::from_vec(valid)), None)
        }
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * width)?;
            let valid = exec.alloc(n.div_ceil(32).max(1) * 4)?;
            exec.launch1(
                "join",
                if width == 4 {
                    "take_or_null_32"
                } else {
                    "take_or_null_64"
                },
                exec.grid(n.div_ceil(32) as u64),
                &[
                    opt_ptr(Some(x.values()))?,
                    opt_ptr(x.validity())?,
                    opt_ptr(Some(idx.values()))?,
                    Arg::U64(n as u64),
                    ptr(&out),
                    ptr(&valid),
                ],
            )?;
            Column::new(x.dtype(), n, Buffer::device(out), Some(Buffer::device(valid)), None)
        }
    }
}
