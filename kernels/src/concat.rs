//! Concatenation of columns of one type (a task's input pieces into one
//! partition): on the host through arrow's `MutableArrayData`; on a device
//! one launch per input column, each writing its rows at their place.

use arrow_array::make_array;
use arrow_data::transform::MutableArrayData;
use weft_gpu::Buffer;

use crate::column::Place;
use crate::dispatch::{Target, target};
use crate::launch::{Arg, Exec, opt_ptr, ptr};
use crate::{Column, DType, KernelError};

fn cpu_concat(columns: &[&Column]) -> Result<Column, KernelError> {
    let arrays = columns.iter().map(|c| c.to_arrow()).collect::<Result<Vec<_>, _>>()?;
    let data: Vec<_> = arrays.iter().map(|a| a.to_data()).collect();
    let refs: Vec<_> = data.iter().collect();
    let total = data.iter().map(|d| d.len()).sum();
    let mut out = MutableArrayData::new(refs, columns.iter().any(|c| c.validity().is_some()), total);
    for (i, d) in data.iter().enumerate() {
        out.try_extend(i, 0, d.len())?;
    }
    Column::from_arrow(make_array(out.freeze()).as_ref())
}

/// The first and one-past-last byte of a utf8 device column's data.
fn byte_range(exec: &Exec, c: &Column) -> Result<(i32, i32), KernelError> {
    let offsets = c.offsets().ok_or(KernelError::InvalidArgument {
        kernel: "concat",
        reason: "utf8 column without offsets".into(),
    })?;
    let offsets = offsets.dev()?;
    let first = exec.download_at::<i32>(offsets, 0, 1)?[0];
    let end = exec.download_at::<i32>(offsets, c.len(), 1)?[0];
    Ok((first, end))
}

/// `columns` (at least one, one type, on one device) one after another.
pub fn concat(columns: &[&Column]) -> Result<Column, KernelError> {
    let first = columns.first().ok_or(KernelError::InvalidArgument {
        kernel: "concat",
        reason: "no columns".into(),
    })?;
    let dtype = first.dtype();
    if let Some(c) = columns.iter().find(|c| c.dtype() != dtype) {
        return Err(KernelError::UnsupportedType {
            kernel: "concat",
            dtype: c.dtype(),
        });
    }
    let n: usize = columns.iter().map(|c| c.len()).sum();
    match target("concat", columns)? {
        Target::Cpu => cpu_concat(columns),
        Target::Gpu(exec) => {
            let with_nulls = columns.iter().any(|c| c.validity().is_some());
            let validity = with_nulls.then(|| exec.zeroed(n.div_ceil(32).max(1) * 4)).transpose()?;
            let (values, offsets) = match dtype {
                DType::Bool => (exec.zeroed(n.div_ceil(32).max(1) * 4)?, None),
                DType::Utf8 => {
                    let ranges = columns
                        .iter()
                        .map(|c| byte_range(&exec, c))
                        .collect::<Result<Vec<_>, _>>()?;
                    let bytes: usize = ranges.iter().map(|(a, b)| (b - a) as usize).sum();
                    let offsets = exec.alloc((n + 1) * 4)?;
                    // No bytes: one zeroed byte, as arrow checks the whole buffer is UTF-8.
                    let data = if bytes == 0 {
                        exec.zeroed(1)?
                    } else {
                        exec.alloc(bytes)?
                    };
                    (data, Some((offsets, ranges)))
                }
                _ => (exec.alloc(n.max(1) * dtype.width().unwrap_or(1))?, None),
            };
            let (mut row, mut byte) = (0usize, 0usize);
            for (i, c) in columns.iter().enumerate() {
                let len = c.len();
                if let Some(v) = &validity {
                    exec.launch1(
                        "concat",
                        "concat_bits",
                        exec.grid(len.div_ceil(32) as u64),
                        &[
                            opt_ptr(c.validity())?,
                            Arg::U64(len as u64),
                            ptr(v),
                            Arg::U64(row as u64),
                        ],
                    )?;
                }
                match (&offsets, dtype) {
                    (_, DType::Bool) => exec.launch1(
                        "concat",
                        "concat_bits",
                        exec.grid(len.div_ceil(32) as u64),
                        &[
                            opt_ptr(Some(c.values()))?,
                            Arg::U64(len as u64),
                            ptr(&values),
                            Arg::U64(row as u64),
                        ],
                    )?,
                    (Some((out_offsets, ranges)), _) => {
                        let (lo, hi) = ranges[i];
                        let src = c.values().dev()?.device_ptr() + lo as u64;
                        let size = (hi - lo) as usize;
                        exec.launch1(
                            "concat",
                            "concat_bytes",
                            exec.grid(size as u64),
                            &[
                                Arg::Ptr(src),
                                Arg::Ptr(values.device_ptr() + byte as u64),
                                Arg::U64(size as u64),
                            ],
                        )?;
                        exec.launch1(
                            "concat",
                            "concat_offsets",
                            exec.grid(len as u64 + 1),
                            &[
                                opt_ptr(c.offsets())?,
                                Arg::U64(len as u64),
                                ptr(out_offsets),
                                Arg::U64(row as u64),
                                Arg::U32(byte as u32),
                            ],
                        )?;
                        byte += size;
                    }
                    _ => {
                        let size = len * dtype.width().unwrap_or(1);
                        exec.launch1(
                            "concat",
                            "concat_bytes",
                            exec.grid(size as u64),
                            &[
                                opt_ptr(Some(c.values()))?,
                                Arg::Ptr(values.device_ptr() + (row * dtype.width().unwrap_or(1)) as u64),
                                Arg::U64(size as u64),
                            ],
                        )?;
                    }
                }
                row += len;
            }
            let offsets = offsets.map(|(o, _)| Buffer::device(o));
            Column::new(dtype, n, Buffer::device(values), validity.map(Buffer::device), offsets)
        }
    }
}
