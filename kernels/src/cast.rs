//! Numeric casts for dataframe expressions: int32 to int64 ([`widen`])
//! and back where the values fit ([`narrow`]),
//! and int32 or int64 to float64 divided by a power of ten ([`to_f64`]; 1
//! for integers, `10^scale` for a decimal's unscaled values), converting
//! then dividing as the CPU's decimal cast does.

use weft_gpu::Buffer;

use crate::dispatch::{Target, target};
use crate::launch::{Arg, opt_ptr, ptr};
use crate::{Column, DType, KernelError};

/// An int32 column as int64.
pub fn widen(x: &Column) -> Result<Column, KernelError> {
    if x.dtype() != DType::I32 {
        return Err(KernelError::UnsupportedType {
            kernel: "cast_i32_i64",
            dtype: x.dtype(),
        });
    }
    let n = x.len();
    match target("cast_i32_i64", &[x])? {
        Target::Cpu => {
            let v: Vec<i64> = x.host_values::<i32>()?.iter().map(|v| i64::from(*v)).collect();
            Column::new(DType::I64, n, Buffer::from_vec(v), x.validity().cloned(), None)
        }
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * 8)?;
            exec.launch1(
                "cast",
                "cast_i32_i64",
                exec.grid(n as u64),
                &[opt_ptr(Some(x.values()))?, Arg::U64(n as u64), ptr(&out)],
            )?;
            Column::new(DType::I64, n, Buffer::device(out), x.validity().cloned(), None)
        }
    }
}

/// An int64 column as int32: an error naming the first value that does
/// not fit, where one does (nulls are not looked at).
pub fn narrow(x: &Column) -> Result<Column, KernelError> {
    if x.dtype() != DType::I64 {
        return Err(KernelError::UnsupportedType {
            kernel: "cast_i64_i32",
            dtype: x.dtype(),
        });
    }
    let n = x.len();
    let too_wide = |v: String| KernelError::InvalidArgument {
        kernel: "cast_i64_i32",
        reason: format!("{v} does not fit int32"),
    };
    match target("cast_i64_i32", &[x])? {
        Target::Cpu => {
            let mut v = Vec::with_capacity(n);
            for (i, w) in x.host_values::<i64>()?.iter().enumerate() {
                match i32::try_from(*w) {
                    Ok(w) => v.push(w),
                    Err(_) if !x.is_valid(i)? => v.push(0),
                    Err(_) => return Err(too_wide(w.to_string())),
                }
            }
            Column::new(DType::I32, n, Buffer::from_vec(v), x.validity().cloned(), None)
        }
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * 4)?;
            let overflow = exec.zeroed(4)?;
            exec.launch1(
                "cast",
                "cast_i64_i32",
                exec.grid(n as u64),
                &[
                    opt_ptr(Some(x.values()))?,
                    opt_ptr(x.validity())?,
                    Arg::U64(n as u64),
                    ptr(&out),
                    ptr(&overflow),
                ],
            )?;
            if exec.download::<u32>(&overflow, 1)?[0] != 0 {
                return Err(too_wide("a value".into()));
            }
            Column::new(DType::I32, n, Buffer::device(out), x.validity().cloned(), None)
        }
    }
}

/// An int32 or int64 column as float64, each value divided by `div`.
pub fn to_f64(x: &Column, div: f64) -> Result<Column, KernelError> {
    let n = x.len();
    let suffix = match x.dtype() {
        DType::I32 => "i32",
        DType::I64 => "i64",
        other => {
            return Err(KernelError::UnsupportedType {
                kernel: "cast_to_f64",
                dtype: other,
            });
        }
    };
    match target("cast_to_f64", &[x])? {
        Target::Cpu => {
            let v: Vec<f64> = match x.dtype() {
                DType::I32 => x.host_values::<i32>()?.iter().map(|v| f64::from(*v) / div).collect(),
                _ => x.host_values::<i64>()?.iter().map(|v| *v as f64 / div).collect(),
            };
            Column::new(DType::F64, n, Buffer::from_vec(v), x.validity().cloned(), None)
        }
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * 8)?;
            exec.launch1(
                "cast",
                &format!("cast_{suffix}_f64"),
                exec.grid(n as u64),
                &[
                    opt_ptr(Some(x.values()))?,
                    Arg::U64(n as u64),
                    Arg::U64(div.to_bits()),
                    ptr(&out),
                ],
            )?;
            Column::new(DType::F64, n, Buffer::device(out), x.validity().cloned(), None)
        }
    }
}
