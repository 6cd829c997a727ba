//! Reductions: sum, min, max, count and mean of a column (nulls skipped),
//! and the same along an axis of a row-major 2-D block.
//!
//! Integer sums wrap in 64 bits; float sums accumulate in f64, so CPU and
//! GPU sums of floats agree up to rounding (their orders differ), while
//! axis reductions walk each line in order on both and agree exactly.

use weft_gpu::Buffer;

use crate::dispatch::{Target, target, with_numeric};
use crate::launch::{Arg, BLOCK, opt_ptr, ptr};
use crate::{Column, DType, KernelError, Native};

/// A reduced value: 64-bit integer for integer columns, f64 for floats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// From an integer column.
    Int(i64),
    /// From a float column.
    Float(f64),
}

impl Scalar {
    /// The value as f64.
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Int(v) => v as f64,
            Scalar::Float(v) => v,
        }
    }
}

/// Sum, min, max and count of the valid rows of a column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Valid rows.
    pub count: u64,
    /// Sum of the valid rows (0 when there are none).
    pub sum: Scalar,
    /// Smallest valid row (None when there are none).
    pub min: Option<Scalar>,
    /// Largest valid row.
    pub max: Option<Scalar>,
}

impl Stats {
    /// Mean of the valid rows.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.as_f64() / self.count as f64)
    }
}

/// The accumulator of a column type (i64 for integers, f64 for floats).
pub trait Accumulate: Native {
    /// Widens a value.
    fn widen(self) -> Scalar;
}
impl Accumulate for i32 {
    fn widen(self) -> Scalar {
        Scalar::Int(i64::from(self))
    }
}
impl Accumulate for i64 {
    fn widen(self) -> Scalar {
        Scalar::Int(self)
    }
}
impl Accumulate for f32 {
    fn widen(self) -> Scalar {
        Scalar::Float(f64::from(self))
    }
}
impl Accumulate for f64 {
    fn widen(self) -> Scalar {
        Scalar::Float(self)
    }
}

fn combine(acc: Scalar, v: Scalar, op: AxisOp) -> Scalar {
    match (acc, v) {
        (Scalar::Int(a), Scalar::Int(b)) => Scalar::Int(match op {
            AxisOp::Min => a.min(b),
            AxisOp::Max => a.max(b),
            AxisOp::Sum | AxisOp::Mean => a.wrapping_add(b),
        }),
        (a, b) => {
            let (a, b) = (a.as_f64(), b.as_f64());
            Scalar::Float(match op {
                AxisOp::Min => a.min(b),
                AxisOp::Max => a.max(b),
                AxisOp::Sum | AxisOp::Mean => a + b,
            })
        }
    }
}

fn cpu_stats<T: Accumulate>(x: &Column) -> Result<Stats, KernelError> {
    let vals = x.host_values::<T>()?;
    let valid = x.host_validity()?;
    let zero = T::default().widen();
    let mut s = Stats {
        count: 0,
        sum: zero,
        min: None,
        max: None,
    };
    for (i, v) in vals.iter().enumerate() {
        if valid.is_some_and(|b| !arrow_buffer::bit_util::get_bit(b, i)) {
            continue;
        }
        let v = v.widen();
        s.count += 1;
        s.sum = combine(s.sum, v, AxisOp::Sum);
        s.min = Some(s.min.map_or(v, |m| combine(m, v, AxisOp::Min)));
        s.max = Some(s.max.map_or(v, |m| combine(m, v, AxisOp::Max)));
    }
    Ok(s)
}

/// Sum, min, max and count of the valid rows of a numeric column.
pub fn reduce(x: &Column) -> Result<Stats, KernelError> {
    match target("reduce", &[x])? {
        Target::Cpu => with_numeric!("reduce", x.dtype(), |T| cpu_stats::<T>(x)),
        Target::Gpu(exec) => with_numeric!("reduce", x.dtype(), |T| {
            let n = x.len();
            let is_int = matches!(x.dtype(), DType::I32 | DType::I64);
            let grid = exec.grid(n as u64);
            let g = grid as usize;
            let (psum, pmin, pmax, pcount) = (
                exec.alloc(g * 8)?,
                exec.alloc(g * 8)?,
                exec.alloc(g * 8)?,
                exec.alloc(g * 8)?,
            );
            exec.launch1(
                "reduce",
                &format!("reduce_{}", T::SUFFIX),
                grid,
                &[
                    opt_ptr(Some(x.values()))?,
                    opt_ptr(x.validity())?,
                    Arg::U64(n as u64),
                    ptr(&psum),
                    ptr(&pmin),
                    ptr(&pmax),
                    ptr(&pcount),
                ],
            )?;
            let out = exec.alloc(32)?;
            let at = |i: u64| Arg::Ptr(out.device_ptr() + 8 * i);
            exec.launch1(
                "reduce",
                if is_int {
                    "reduce_final_int"
                } else {
                    "reduce_final_float"
                },
                1,
                &[
                    ptr(&psum),
                    ptr(&pmin),
                    ptr(&pmax),
                    ptr(&pcount),
                    Arg::U64(g as u64),
                    at(0),
                    at(1),
                    at(2),
                    at(3),
                ],
            )?;
            let r: Vec<u64> = exec.download(&out, 4)?;
            let scalar = |bits: u64| {
                if is_int {
                    Scalar::Int(bits as i64)
                } else {
                    Scalar::Float(f64::from_bits(bits))
                }
            };
            let count = r[3];
            Ok(Stats {
                count,
                sum: scalar(r[0]),
                min: (count > 0).then(|| scalar(r[1])),
                max: (count > 0).then(|| scalar(r[2])),
            })
        }),
    }
}

/// Sum of the valid rows. On the CPU, columns without nulls take a
/// vectorised path (eight running sums), which is what bounds its speed by
/// memory bandwidth.
pub fn sum(x: &Column) -> Result<Scalar, KernelError> {
    if x.device() == weft_gpu::Device::Cpu && x.validity().is_none() {
        match x.dtype() {
            DType::F64 => return Ok(Scalar::Float(sum_f64(x.host_values::<f64>()?))),
            DType::I64 => {
                let v = x.host_values::<i64>()?;
                return Ok(Scalar::Int(v.iter().fold(0i64, |a, b| a.wrapping_add(*b))));
            }
            _ => {}
        }
    }
    Ok(reduce(x)?.sum)
}

/// Sum of f64 values with eight independent accumulators.
pub fn sum_f64(v: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    let mut total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for x in rest {
        total += x;
    }
    total
}

/// Operations along an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AxisOp {
    /// Sum (i64 for integer blocks, f64 for floats).
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Mean, always f64.
    Mean,
}

impl AxisOp {
    fn code(self) -> u32 {
        match self {
            AxisOp::Sum => 0,
            AxisOp::Min => 1,
            AxisOp::Max => 2,
            AxisOp::Mean => 3,
        }
    }
}

/// Reduces a row-major `rows x cols` block (a column without nulls) along
/// `axis`: 0 gives one value per column, 1 one per row. Integer blocks give
/// I64 for sum/min/max; everything else gives F64.
pub fn reduce_axis(x: &Column, rows: usize, cols: usize, axis: usize, op: AxisOp) -> Result<Column, KernelError> {
    let bad = |reason: String| KernelError::InvalidArgument {
        kernel: "reduce_axis",
        reason,
    };
    if rows.checked_mul(cols) != Some(x.len()) {
        return Err(bad(format!("{rows} x {cols} block from {} rows", x.len())));
    }
    if axis > 1 {
        return Err(bad(format!("axis {axis} of a 2-D block")));
    }
    if x.validity().is_some() {
        return Err(bad("2-D blocks have no nulls".into()));
    }
    let is_int = matches!(x.dtype(), DType::I32 | DType::I64);
    let out_type = if is_int && op != AxisOp::Mean {
        DType::I64
    } else {
        DType::F64
    };
    let (outputs, len, stride) = if axis == 0 { (cols, rows, cols) } else { (rows, cols, 1) };
    match target("reduce_axis", &[x])? {
        Target::Cpu => with_numeric!("reduce_axis", x.dtype(), |T| {
            let v = x.host_values::<T>()?;
            let mut ints = Vec::new();
            let mut floats = Vec::new();
            for j in 0..outputs {
                let base = if axis == 0 { j } else { j * cols };
                let mut acc = match (op, is_int) {
                    (AxisOp::Min, true) => Scalar::Int(i64::MAX),
                    (AxisOp::Max, true) => Scalar::Int(i64::MIN),
                    (AxisOp::Min, false) => Scalar::Float(f64::INFINITY),
                    (AxisOp::Max, false) => Scalar::Float(f64::NEG_INFINITY),
                    (_, true) => Scalar::Int(0),
                    (_, false) => Scalar::Float(0.0),
                };
                for i in 0..len {
                    acc = combine(acc, v[base + i * stride].widen(), op);
                }
                match (op, acc) {
                    (AxisOp::Mean, a) => floats.push(a.as_f64() / len as f64),
                    (_, Scalar::Int(a)) => ints.push(a),
                    (_, Scalar::Float(a)) => floats.push(a),
                }
            }
            let values = if out_type == DType::I64 {
                Buffer::from_vec(ints)
            } else {
                Buffer::from_vec(floats)
            };
            Column::new(out_type, outputs, values, None, None)
        }),
        Target::Gpu(exec) => with_numeric!("reduce_axis", x.dtype(), |T| {
            let out = exec.alloc(outputs * 8)?;
            exec.launch1(
                "reduce",
                &format!("reduce_axis_{}", T::SUFFIX),
                exec.grid(outputs as u64),
                &[
                    opt_ptr(Some(x.values()))?,
                    Arg::U64(rows as u64),
                    Arg::U64(cols as u64),
                    Arg::U32(axis as u32),
                    Arg::U32(op.code()),
                    ptr(&out),
                ],
            )?;
            Column::new(out_type, outputs, Buffer::device(out), None, None)
        }),
    }
}

// The CUDA reductions assume this block size for their shared arrays.
const _: () = assert!(BLOCK == 256);
