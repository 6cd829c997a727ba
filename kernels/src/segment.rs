//! Segments of sorted rows, the device half of a sort-based group-by: where
//! each run of equal key tuples starts ([`segments`]; a null equals a null,
//! floats compare by their bits), and one value per run ([`segment_reduce`]:
//! sum, min, max, count, rows, mean). Values are added in row order, from a
//! run's first valid value, so float sums match a sequential CPU loop bit
//! for bit.

use arrow_buffer::bit_util::set_bit;
use weft_gpu::Buffer;

use crate::column::bitmap_bytes;
use crate::dispatch::{Target, same_len, target};
use crate::launch::{Arg, opt_ptr, ptr};
use crate::{Column, DType, KernelError};

/// What [`segment_reduce`] computes per segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentOp {
    /// Sum of the valid values (integers wrap, as int64).
    Sum,
    /// Smallest valid value.
    Min,
    /// Largest valid value.
    Max,
    /// Number of valid values.
    Count,
    /// Number of rows.
    Rows,
    /// Mean of the valid values as float64.
    Mean,
}

impl SegmentOp {
    fn code(self) -> u32 {
        self as u32
    }

    /// The result type for values of `dtype`.
    pub fn output(self, dtype: DType) -> Result<DType, KernelError> {
        Ok(match (self, dtype) {
            (SegmentOp::Count | SegmentOp::Rows, _) => DType::I64,
            (SegmentOp::Mean, DType::I32 | DType::I64 | DType::F64) => DType::F64,
            (_, DType::I32 | DType::I64) => DType::I64,
            (_, DType::F64) => DType::F64,
            (_, other) => {
                return Err(KernelError::UnsupportedType {
                    kernel: "segment_reduce",
                    dtype: other,
                });
            }
        })
    }
}

fn key_suffix(c: &Column) -> Result<&'static str, KernelError> {
    match c.dtype() {
        DType::I64 => Ok("i64"),
        DType::F64 => Ok("f64"),
        other => Err(KernelError::UnsupportedType {
            kernel: "segments",
            dtype: other,
        }),
    }
}

/// Whether host rows `i - 1` and `i` of a key column differ.
fn cpu_differs(c: &Column, i: usize) -> Result<bool, KernelError> {
    let (a, b) = (c.is_valid(i - 1)?, c.is_valid(i)?);
    Ok(a != b
        || a && match c.dtype() {
            DType::I64 => c.host_values::<i64>()?[i - 1] != c.host_values::<i64>()?[i],
            _ => c.host_values::<f64>()?[i - 1].to_bits() != c.host_values::<f64>()?[i].to_bits(),
        })
}

/// The first row of each run of equal tuples in `sorted` (int64 or float64
/// key columns of one length, rows sorted by them), as a U32 column.
pub fn segments(sorted: &[&Column]) -> Result<Column, KernelError> {
    let first = sorted.first().ok_or(KernelError::InvalidArgument {
        kernel: "segments",
        reason: "no key columns".into(),
    })?;
    let n = first.len();
    for k in sorted {
        key_suffix(k)?;
        same_len("segments", n, k.len())?;
    }
    match target("segments", sorted)? {
        Target::Cpu => {
            let mut starts = Vec::new();
            for i in 0..n {
                let mut start = i == 0;
                for k in sorted {
                    start = start || cpu_differs(k, i)?;
                }
                if start {
                    starts.push(i as u32);
                }
            }
            Ok(Column::from_vec(starts))
        }
        Target::Gpu(exec) => {
            let flags = exec.alloc(n.max(1) * 4)?;
            for (j, k) in sorted.iter().enumerate() {
                exec.launch1(
                    "segment",
                    &format!("segment_flags_{}", key_suffix(k)?),
                    exec.grid(n as u64),
                    &[
                        opt_ptr(Some(k.values()))?,
                        opt_ptr(k.validity())?,
                        Arg::U64(n as u64),
                        Arg::U32(u32::from(j == 0)),
                        ptr(&flags),
                    ],
                )?;
            }
            let pos = exec.alloc(n.max(1) * 4)?;
            let total = exec.zeroed(4)?;
            crate::scan::exclusive_sum_u32(&exec, ptr(&flags), ptr(&pos), n, ptr(&total))?;
            let groups = if n == 0 {
                0
            } else {
                exec.download::<u32>(&total, 1)?[0] as usize
            };
            let starts = exec.alloc(groups.max(1) * 4)?;
            exec.launch1(
                "segment",
                "segment_starts",
                exec.grid(n as u64),
                &[ptr(&flags), ptr(&pos), Arg::U64(n as u64), ptr(&starts)],
            )?;
            Column::new(DType::U32, groups, Buffer::device(starts), None, None)
        }
    }
}

fn cpu_reduce<T: crate::Native>(
    x: &Column,
    starts: &[u32],
    op: SegmentOp,
    wide: impl Fn(T) -> Acc,
) -> Result<Column, KernelError> {
    let vals = x.host_values::<T>()?;
    let n = x.len();
    let g = starts.len();
    let mut out = Vec::with_capacity(g);
    let mut valid = vec![0u8; bitmap_bytes(g)];
    for (s, &begin) in starts.iter().enumerate() {
        let end = starts.get(s + 1).map_or(n, |e| *e as usize);
        let mut acc: Option<Acc> = None;
        let (mut sum, mut count) = (0f64, 0u64);
        for (i, &value) in vals.iter().enumerate().take(end).skip(begin as usize) {
            if !x.is_valid(i)? {
                continue;
            }
            let v = wide(value);
            acc = Some(match acc {
                None => v,
                Some(a) => a.fold(v, op),
            });
            sum += v.float();
            count += 1;
        }
        let value = match op {
            SegmentOp::Count => Some(Acc::I(count as i64)),
            SegmentOp::Rows => Some(Acc::I((end - begin as usize) as i64)),
            SegmentOp::Mean => (count > 0).then(|| Acc::F(sum / count as f64)),
            _ => acc,
        };
        if value.is_some() {
            set_bit(&mut valid, s);
        }
        out.push(value.unwrap_or(Acc::I(0)));
    }
    let validity = Some(Buffer::from_vec(valid));
    match op.output(x.dtype())? {
        DType::I64 => {
            let v: Vec<i64> = out.iter().map(|a| a.int()).collect();
            Column::new(DType::I64, g, Buffer::from_vec(v), validity, None)
        }
        _ => {
            let v: Vec<f64> = out.iter().map(|a| a.float()).collect();
            Column::new(DType::F64, g, Buffer::from_vec(v), validity, None)
        }
    }
}

/// An accumulator of the CPU implementation: int64 or float64.
#[derive(Clone, Copy)]
enum Acc {
    I(i64),
    F(f64),
}

impl Acc {
    fn fold(self, v: Acc, op: SegmentOp) -> Acc {
        match (self, v) {
            (Acc::I(a), Acc::I(b)) => Acc::I(match op {
                SegmentOp::Min => a.min(b),
                SegmentOp::Max => a.max(b),
                _ => a.wrapping_add(b),
            }),
            (a, b) => {
                let (a, b) = (a.float(), b.float());
                Acc::F(match op {
                    SegmentOp::Min if b < a => b,
                    SegmentOp::Max if b > a => b,
                    SegmentOp::Min | SegmentOp::Max => a,
                    _ => a + b,
                })
            }
        }
    }

    fn int(self) -> i64 {
        match self {
            Acc::I(v) => v,
            Acc::F(v) => v as i64,
        }
    }

    fn float(self) -> f64 {
        match self {
            Acc::I(v) => v as f64,
            Acc::F(v) => v,
        }
    }
}

/// One value per segment of `x` (segments start at the rows `starts`, a
/// U32 column from [`segments`], and end at the next start): nullable,
/// null where a segment has no valid values (count and rows: 0).
pub fn segment_reduce(x: &Column, starts: &Column, op: SegmentOp) -> Result<Column, KernelError> {
    if starts.dtype() != DType::U32 {
        return Err(KernelError::InvalidArgument {
            kernel: "segment_reduce",
            reason: "segment starts must be a U32 column".into(),
        });
    }
    let out_type = op.output(x.dtype())?;
    let g = starts.len();
    match target("segment_reduce", &[x, starts])? {
        Target::Cpu => {
            let s = starts.host_values::<u32>()?;
            match x.dtype() {
                DType::I32 => cpu_reduce::<i32>(x, s, op, |v| Acc::I(i64::from(v))),
                DType::I64 => cpu_reduce::<i64>(x, s, op, Acc::I),
                _ => cpu_reduce::<f64>(x, s, op, Acc::F),
            }
        }
        Target::Gpu(exec) => {
            let suffix = match x.dtype() {
                DType::I32 => "i32",
                DType::I64 => "i64",
                _ => "f64",
            };
            let out = exec.alloc(g.max(1) * 8)?;
            let valid = exec.zeroed(g.div_ceil(32).max(1) * 4)?;
            exec.launch1(
                "segment",
                &format!("segment_reduce_{suffix}"),
                exec.grid(g as u64),
                &[
                    opt_ptr(Some(x.values()))?,
                    opt_ptr(x.validity())?,
                    opt_ptr(Some(starts.values()))?,
                    Arg::U64(g as u64),
                    Arg::U64(x.len() as u64),
                    Arg::U32(op.code()),
                    ptr(&out),
                    ptr(&valid),
                ],
            )?;
            Column::new(out_type, g, Buffer::device(out), Some(Buffer::device(valid)), None)
        }
    }
}
