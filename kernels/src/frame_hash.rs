//! The dataframe's shuffle hash: each row's hash over several key columns
//! and its partition among `parts`, bit for bit as `weft-frame`'s CPU
//! shuffle computes them (splitmix64's finaliser folded column by column;
//! integers, dates and booleans as int64, floats as float64 bits with -0.0
//! as 0.0, utf8 by its bytes, a null as 0), so GPU and CPU workers of one
//! cluster send equal keys to the same partition. (The kernels' own
//! [`crate::hash`] is a different, murmur-based function.)

use arrow_buffer::bit_util::get_bit;
use weft_gpu::Buffer;

use crate::column::Place;
use crate::dispatch::{Target, same_len, target};
use crate::launch::{Arg, opt_ptr, ptr};
use crate::{Column, DType, KernelError};

/// splitmix64's finaliser (`frame_mix` in frame_hash.cu).
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Folds one row's value word into its running hash.
pub fn combine(h: u64, v: u64) -> u64 {
    mix(h ^ v).wrapping_add(0x9e37_79b9)
}

/// The value word of a byte string: its little-endian 8-byte words (the
/// last zero-padded) mixed into the golden ratio xor its length.
pub fn bytes_word(bytes: &[u8]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ bytes.len() as u64;
    for c in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    h
}

/// The value word of a float: its float64 bits, -0.0 as 0.0.
pub fn float_word(v: f64) -> u64 {
    (v + 0.0).to_bits()
}

/// Partition of a row hash among `parts`.
pub fn bucket(h: u64, parts: u32) -> u32 {
    ((h >> 16) % u64::from(parts.max(1))) as u32
}

fn cpu_words(x: &Column) -> Result<Vec<u64>, KernelError> {
    let n = x.len();
    let valid = |i: usize| x.is_valid(i);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let v = if !valid(i)? {
            0
        } else {
            match x.dtype() {
                DType::I32 => i64::from(x.host_values::<i32>()?[i]) as u64,
                DType::I64 => x.host_values::<i64>()?[i] as u64,
                DType::F32 => float_word(f64::from(x.host_values::<f32>()?[i])),
                DType::F64 => float_word(x.host_values::<f64>()?[i]),
                DType::Bool => u64::from(get_bit(x.values().host()?, i)),
                DType::Utf8 => {
                    let offsets = x
                        .offsets()
                        .ok_or(KernelError::InvalidArgument {
                            kernel: "frame_hash",
                            reason: "utf8 column without offsets".into(),
                        })?
                        .typed::<i32>()?;
                    let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
                    bytes_word(&x.values().host()?[a..b])
                }
                other => {
                    return Err(KernelError::UnsupportedType {
                        kernel: "frame_hash",
                        dtype: other,
                    });
                }
            }
        };
        out.push(v);
    }
    Ok(out)
}

/// Each row's hash over `keys` (at least one column, all of one length and
/// on one device), as a U64 column.
pub fn row_hash(keys: &[&Column]) -> Result<Column, KernelError> {
    let first = keys.first().ok_or(KernelError::InvalidArgument {
        kernel: "frame_hash",
        reason: "no key columns".into(),
    })?;
    let n = first.len();
    for k in keys {
        same_len("frame_hash", n, k.len())?;
    }
    match target("frame_hash", keys)? {
        Target::Cpu => {
            let mut h = vec![0u64; n];
            for k in keys {
                for (h, v) in h.iter_mut().zip(cpu_words(k)?) {
                    *h = combine(*h, v);
                }
            }
            Ok(Column::from_vec(h))
        }
        Target::Gpu(exec) => {
            let h = exec.zeroed(n.max(1) * 8)?;
            for k in keys {
                let kernel = match k.dtype() {
                    DType::I32 => "frame_hash_i32",
                    DType::I64 => "frame_hash_i64",
                    DType::F32 => "frame_hash_f32",
                    DType::F64 => "frame_hash_f64",
                    DType::Bool => "frame_hash_bool",
                    DType::Utf8 => "frame_hash_utf8",
                    other => {
                        return Err(KernelError::UnsupportedType {
                            kernel: "frame_hash",
                            dtype: other,
                        });
                    }
                };
                let mut args = match k.dtype() {
                    DType::Utf8 => vec![opt_ptr(k.offsets())?, opt_ptr(Some(k.values()))?],
                    _ => vec![opt_ptr(Some(k.values()))?],
                };
                args.extend([opt_ptr(k.validity())?, Arg::U64(n as u64), ptr(&h)]);
                exec.launch1("frame_hash", kernel, exec.grid(n as u64), &args)?;
            }
            Column::new(DType::U64, n, Buffer::device(h), None, None)
        }
    }
}

/// The value word of a decimal's unscaled value: its 128-bit value's low
/// 64 bits mixed, xor its high 64 bits (as the CPU shuffle hashes decimals).
pub fn decimal_word(v: i128) -> u64 {
    let v = v as u128;
    mix(v as u64) ^ (v >> 64) as u64
}

/// Decimal128 values held as unscaled int64 (`x`), as the int64 column of
/// their value words ([`decimal_word`], nulls kept), so that [`row_hash`]
/// of it folds each decimal as the CPU does.
pub fn decimal_words(x: &Column) -> Result<Column, KernelError> {
    if x.dtype() != DType::I64 {
        return Err(KernelError::UnsupportedType {
            kernel: "frame_decimal_word",
            dtype: x.dtype(),
        });
    }
    let n = x.len();
    match target("frame_decimal_word", &[x])? {
        Target::Cpu => {
            let words: Vec<i64> = x
                .host_values::<i64>()?
                .iter()
                .map(|v| decimal_word(i128::from(*v)) as i64)
                .collect();
            Column::new(DType::I64, n, Buffer::from_vec(words), x.validity().cloned(), None)
        }
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * 8)?;
            exec.launch1(
                "frame_hash",
                "frame_decimal_word",
                exec.grid(n as u64),
                &[opt_ptr(Some(x.values()))?, Arg::U64(n as u64), ptr(&out)],
            )?;
            Column::new(DType::I64, n, Buffer::device(out), x.validity().cloned(), None)
        }
    }
}

/// Each hash's partition among `parts` (a U32 column).
pub fn buckets(hashes: &Column, parts: u32) -> Result<Column, KernelError> {
    if hashes.dtype() != DType::U64 {
        return Err(KernelError::UnsupportedType {
            kernel: "frame_bucket",
            dtype: hashes.dtype(),
        });
    }
    let n = hashes.len();
    let parts = parts.max(1);
    match target("frame_bucket", &[hashes])? {
        Target::Cpu => Ok(Column::from_vec(
            hashes
                .host_values::<u64>()?
                .iter()
                .map(|h| bucket(*h, parts))
                .collect::<Vec<u32>>(),
        )),
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * 4)?;
            exec.launch1(
                "frame_hash",
                "frame_bucket",
                exec.grid(n as u64),
                &[
                    opt_ptr(Some(hashes.values()))?,
                    Arg::U32(parts),
                    Arg::U64(n as u64),
                    ptr(&out),
                ],
            )?;
            Column::new(DType::U32, n, Buffer::device(out), None, None)
        }
    }
}
