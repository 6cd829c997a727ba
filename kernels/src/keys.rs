//! Order keys: the columns a dataframe sorts or groups by (int32, int64,
//! float64, utf8; ascending or descending) as int64 columns whose
//! ascending [`crate::sort::argsort`] order is the column's order, nulls
//! kept as nulls. A utf8 column gives one key per 7 bytes of its longest
//! value ([`utf8_chunks`]); stable argsorts of the keys, least significant
//! first, sort by all of them, and runs of equal keys
//! ([`crate::segment::segments`]) are its groups. See `cuda/keys.cu`.

use weft_gpu::Buffer;

use crate::column::Place;
use crate::dispatch::{Target, target};
use crate::launch::{Arg, opt_ptr, ptr};
use crate::{Column, DType, KernelError, reduce, sort};

/// Bytes of a utf8 value per order key.
const CHUNK: usize = 7;

/// The order-preserving u64 of chunk `chunk` of a utf8 value: its bytes
/// `7 * chunk ..` (7 of them, zero padded, big-endian) above how many there
/// were (8 when the value goes on), 0 past the value's end.
pub fn utf8_chunk_key(value: &[u8], chunk: usize) -> u64 {
    let from = chunk * CHUNK;
    if value.len() <= from {
        return 0;
    }
    let left = &value[from..];
    let mut k = 0u64;
    for b in 0..CHUNK {
        k = (k << 8) | u64::from(left.get(b).copied().unwrap_or(0));
    }
    (k << 8) | left.len().min(CHUNK + 1) as u64
}

fn mode(x: &Column) -> Result<u32, KernelError> {
    Ok(match x.dtype() {
        DType::I32 => 0,
        DType::I64 => 1,
        DType::F64 => 2,
        DType::Utf8 => 3,
        other => {
            return Err(KernelError::UnsupportedType {
                kernel: "order_key",
                dtype: other,
            });
        }
    })
}

/// How many order keys a utf8 column needs: chunks of its longest value
/// (at least one).
pub fn utf8_chunks(x: &Column) -> Result<usize, KernelError> {
    if x.dtype() != DType::Utf8 {
        return Err(KernelError::UnsupportedType {
            kernel: "utf8_chunks",
            dtype: x.dtype(),
        });
    }
    let n = x.len();
    let lengths = match target("utf8_chunks", &[x])? {
        Target::Cpu => {
            let o = x.offsets().map(|o| o.typed::<i32>()).transpose()?.unwrap_or(&[]);
            Column::from_vec(o.windows(2).map(|w| w[1] - w[0]).collect::<Vec<i32>>())
        }
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * 4)?;
            exec.launch1(
                "keys",
                "utf8_value_lengths",
                exec.grid(n as u64),
                &[opt_ptr(x.offsets())?, Arg::U64(n as u64), ptr(&out)],
            )?;
            Column::new(DType::I32, n, Buffer::device(out), None, None)?
        }
    };
    let longest = match reduce::reduce(&lengths)?.max {
        Some(reduce::Scalar::Int(m)) => m.max(0) as usize,
        _ => 0,
    };
    Ok(longest.div_ceil(CHUNK).max(1))
}

/// The order key of `x` (chunk `chunk` of a utf8 column; 0 otherwise),
/// reversed when `descending`: an I64 column with `x`'s validity.
pub fn order_key(x: &Column, chunk: usize, descending: bool) -> Result<Column, KernelError> {
    let mode = mode(x)?;
    let n = x.len();
    let flip = if descending { u64::MAX } else { 0 };
    let chunk32 = u32::try_from(chunk).map_err(|_| KernelError::InvalidArgument {
        kernel: "order_key",
        reason: format!("chunk {chunk}"),
    })?;
    let validity = x.validity().cloned();
    match target("order_key", &[x])? {
        Target::Cpu => {
            let key = |i: usize| -> Result<u64, KernelError> {
                Ok(match x.dtype() {
                    DType::I32 => sort::key_i64(i64::from(x.host_values::<i32>()?[i])),
                    DType::I64 => sort::key_i64(x.host_values::<i64>()?[i]),
                    DType::F64 => sort::key_f64(x.host_values::<f64>()?[i]),
                    _ => {
                        let o = x.offsets().map(|o| o.typed::<i32>()).transpose()?.unwrap_or(&[]);
                        let data = x.values().host()?;
                        utf8_chunk_key(&data[o[i] as usize..o[i + 1] as usize], chunk)
                    }
                })
            };
            let keys = (0..n)
                .map(|i| {
                    let k = if x.is_valid(i)? { key(i)? ^ flip } else { 0 };
                    Ok((k ^ (1 << 63)) as i64)
                })
                .collect::<Result<Vec<i64>, KernelError>>()?;
            Column::new(DType::I64, n, Buffer::from_vec(keys), validity, None)
        }
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * 8)?;
            exec.launch1(
                "keys",
                "order_key",
                exec.grid(n as u64),
                &[
                    Arg::U32(mode),
                    opt_ptr(Some(x.values()))?,
                    opt_ptr(x.offsets())?,
                    opt_ptr(x.validity())?,
                    Arg::U64(n as u64),
                    Arg::U32(chunk32),
                    Arg::U64(flip),
                    ptr(&out),
                ],
            )?;
            Column::new(DType::I64, n, Buffer::device(out), validity, None)
        }
    }
}
