//! take / gather: `out[i] = x[indices[i]]`, nulls following their rows.

use arrow_buffer::bit_util::{get_bit, set_bit};
use weft_gpu::Buffer;

use crate::column::bitmap_bytes;
use crate::dispatch::{Target, target};
use crate::launch::{Arg, opt_ptr, ptr};
use crate::{Column, DType, KernelError, Native};

fn cpu_take<T: Native>(x: &Column, idx: &[u32]) -> Result<Column, KernelError> {
    let vals = x.host_values::<T>()?;
    let valid = x.host_validity()?;
    let mut out = Vec::with_capacity(idx.len());
    let mut bits = valid.map(|_| vec![0u8; bitmap_bytes(idx.len())]);
    for (i, j) in idx.iter().enumerate() {
        let j = *j as usize;
        let v = *vals.get(j).ok_or(KernelError::IndexOutOfBounds { len: x.len() })?;
        out.push(v);
        if let (Some(valid), Some(bits)) = (valid, bits.as_mut())
            && get_bit(valid, j)
        {
            set_bit(bits, i);
        }
    }
    Column::new(
        T::DTYPE,
        idx.len(),
        Buffer::from_vec(out),
        bits.map(Buffer::from_vec),
        None,
    )
}

/// Gathers the rows of a fixed-width column `x` at `indices` (a U32 column
/// without nulls). An index past the end is an error.
pub fn take(x: &Column, indices: &Column) -> Result<Column, KernelError> {
    if indices.dtype() != DType::U32 || indices.validity().is_some() {
        return Err(KernelError::InvalidArgument {
            kernel: "take",
            reason: "indices must be a U32 column without nulls".into(),
        });
    }
    let n = indices.len();
    match target("take", &[x, indices])? {
        Target::Cpu => {
            let idx = indices.host_values::<u32>()?;
            match x.dtype() {
                DType::I32 => cpu_take::<i32>(x, idx),
                DType::I64 => cpu_take::<i64>(x, idx),
                DType::F32 => cpu_take::<f32>(x, idx),
                DType::F64 => cpu_take::<f64>(x, idx),
                DType::U32 => cpu_take::<u32>(x, idx),
                DType::U64 => cpu_take::<u64>(x, idx),
                other => Err(KernelError::UnsupportedType {
                    kernel: "take",
                    dtype: other,
                }),
            }
        }
        Target::Gpu(exec) => {
            let (suffix, width) = match x.dtype() {
                DType::I32 => ("i32", 4),
                DType::I64 => ("i64", 8),
                DType::F32 => ("f32", 4),
                DType::F64 => ("f64", 8),
                DType::U32 => ("u32", 4),
                DType::U64 => ("u64", 8),
                other => {
                    return Err(KernelError::UnsupportedType {
                        kernel: "take",
                        dtype: other,
                    });
                }
            };
            let out = exec.alloc(n * width)?;
            let out_valid = exec.alloc(n.div_ceil(32) * 4)?;
            let oob = exec.zeroed(4)?;
            exec.launch1(
                "gather",
                &format!("take_{suffix}"),
                exec.grid(n.div_ceil(32) as u64),
                &[
                    opt_ptr(Some(x.values()))?,
                    opt_ptr(x.validity())?,
                    Arg::U64(x.len() as u64),
                    opt_ptr(Some(indices.values()))?,
                    Arg::U64(n as u64),
                    ptr(&out),
                    ptr(&out_valid),
                    ptr(&oob),
                ],
            )?;
            if exec.download::<u32>(&oob, 1)?[0] != 0 {
                return Err(KernelError::IndexOutOfBounds { len: x.len() });
            }
            // The kernel always writes validity; keep it only if x had nulls.
            let validity = x.validity().map(|_| Buffer::device(out_valid));
            Column::new(x.dtype(), n, Buffer::device(out), validity, None)
        }
    }
}
