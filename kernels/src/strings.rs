//! Utf8 columns and dates: gathering utf8 rows ([`take_utf8`]), predicates
//! of a utf8 column against one pattern ([`matches()`]: equals, starts with,
//! ends with, contains, ordering; byte-wise, so equal to arrow-rs on valid
//! UTF-8),
//! and the year of Date32 days ([`year`]).

use weft_gpu::Buffer;

use crate::column::{Place, bitmap_bytes};
use crate::dispatch::{Target, target};
use crate::launch::{Arg, opt_ptr, ptr};
use crate::{Column, DType, KernelError, logic};

/// A string predicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrOp {
    /// The value equals the pattern.
    Eq,
    /// The value starts with the pattern.
    StartsWith,
    /// The value ends with the pattern.
    EndsWith,
    /// The value contains the pattern.
    Contains,
    /// The value sorts before the pattern (byte-wise, as `str`'s order).
    Lt,
    /// The value sorts before the pattern or equals it.
    Le,
    /// The value sorts after the pattern.
    Gt,
    /// The value sorts after the pattern or equals it.
    Ge,
}

fn check(kernel: &'static str, x: &Column, dtype: DType) -> Result<(), KernelError> {
    if x.dtype() == dtype {
        Ok(())
    } else {
        Err(KernelError::UnsupportedType {
            kernel,
            dtype: x.dtype(),
        })
    }
}

fn host_offsets(x: &Column) -> Result<&[i32], KernelError> {
    x.offsets()
        .ok_or(KernelError::InvalidArgument {
            kernel: "utf8",
            reason: "utf8 column without offsets".into(),
        })?
        .typed::<i32>()
}

/// The rows `idx` (U32, no nulls) of the utf8 column `x`.
pub fn take_utf8(x: &Column, idx: &Column) -> Result<Column, KernelError> {
    check("take_utf8", x, DType::Utf8)?;
    let n = idx.len();
    let validity = x.validity().map(|v| logic::take_bits(x, Some(v), idx)).transpose()?;
    match target("take_utf8", &[x, idx])? {
        Target::Cpu => {
            let (offsets, data, rows) = (host_offsets(x)?, x.values().host()?, idx.host_values::<u32>()?);
            let mut out_offsets = Vec::with_capacity(n + 1);
            let mut out = Vec::new();
            out_offsets.push(0i32);
            for &r in rows {
                let (a, b) = (offsets[r as usize] as usize, offsets[r as usize + 1] as usize);
                out.extend_from_slice(&data[a..b]);
                out_offsets.push(out.len() as i32);
            }
            Column::new(
                DType::Utf8,
                n,
                Buffer::host(out),
                validity,
                Some(Buffer::from_vec(out_offsets)),
            )
        }
        Target::Gpu(exec) => {
            // Zeroed when empty: the scan leaves the total of no rows unwritten.
            let offsets = if n == 0 {
                exec.zeroed(4)?
            } else {
                exec.alloc((n + 1) * 4)?
            };
            exec.launch1(
                "strings",
                "utf8_lengths",
                exec.grid(n as u64),
                &[
                    opt_ptr(x.offsets())?,
                    opt_ptr(Some(idx.values()))?,
                    Arg::U64(n as u64),
                    ptr(&offsets),
                ],
            )?;
            // The exclusive scan leaves the total in the last offset.
            let total = Arg::Ptr(offsets.device_ptr() + (n * 4) as u64);
            crate::scan::exclusive_sum_u32(&exec, ptr(&offsets), ptr(&offsets), n, total)?;
            let bytes = exec.download_at::<u32>(&offsets, n, 1)?[0] as usize;
            // An empty column still has a byte of data, zeroed: arrow checks
            // that the whole buffer is UTF-8.
            let data = if bytes == 0 {
                exec.zeroed(1)?
            } else {
                exec.alloc(bytes)?
            };
            exec.launch1(
                "strings",
                "utf8_gather",
                exec.grid(n as u64),
                &[
                    opt_ptr(x.offsets())?,
                    opt_ptr(Some(x.values()))?,
                    opt_ptr(Some(idx.values()))?,
                    Arg::U64(n as u64),
                    ptr(&offsets),
                    ptr(&data),
                ],
            )?;
            Column::new(
                DType::Utf8,
                n,
                Buffer::device(data),
                validity,
                Some(Buffer::device(offsets)),
            )
        }
    }
}

/// Whether each row of the utf8 column `x` matches `pattern` by `op`
/// (null where `x` is null).
pub fn matches(x: &Column, op: StrOp, pattern: &str) -> Result<Column, KernelError> {
    check("utf8_match", x, DType::Utf8)?;
    let n = x.len();
    let p = pattern.as_bytes();
    match target("utf8_match", &[x])? {
        Target::Cpu => {
            let (offsets, data) = (host_offsets(x)?, x.values().host()?);
            let mut bits = vec![0u8; bitmap_bytes(n)];
            for i in 0..n {
                let s = &data[offsets[i] as usize..offsets[i + 1] as usize];
                let hit = match op {
                    StrOp::Eq => s == p,
                    StrOp::StartsWith => s.starts_with(p),
                    StrOp::EndsWith => s.ends_with(p),
                    StrOp::Contains => p.is_empty() || s.windows(p.len()).any(|w| w == p),
                    StrOp::Lt => s < p,
                    StrOp::Le => s <= p,
                    StrOp::Gt => s > p,
                    StrOp::Ge => s >= p,
                };
                if hit {
                    arrow_buffer::bit_util::set_bit(&mut bits, i);
                }
            }
            Column::new(DType::Bool, n, Buffer::from_vec(bits), x.validity().cloned(), None)
        }
        Target::Gpu(exec) => {
            let pattern = exec.upload(p)?;
            let out = exec.alloc(n.div_ceil(32).max(1) * 4)?;
            let code = match op {
                StrOp::Eq => 0,
                StrOp::StartsWith => 1,
                StrOp::EndsWith => 2,
                StrOp::Contains => 3,
                StrOp::Lt => 4,
                StrOp::Le => 5,
                StrOp::Gt => 6,
                StrOp::Ge => 7,
            };
            exec.launch1(
                "strings",
                "utf8_match",
                exec.grid(n.div_ceil(32) as u64),
                &[
                    opt_ptr(x.offsets())?,
                    opt_ptr(Some(x.values()))?,
                    Arg::U64(n as u64),
                    ptr(&pattern),
                    Arg::U64(p.len() as u64),
                    Arg::U32(code),
                    ptr(&out),
                ],
            )?;
            Column::new(DType::Bool, n, Buffer::device(out), x.validity().cloned(), None)
        }
    }
}

/// The year of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_year(days: i32) -> i32 {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2)) as i32
}

/// The year of each day count (an I32 column of Date32 days).
pub fn year(days: &Column) -> Result<Column, KernelError> {
    check("date_year", days, DType::I32)?;
    let n = days.len();
    match target("date_year", &[days])? {
        Target::Cpu => {
            let v: Vec<i32> = days.host_values::<i32>()?.iter().map(|d| civil_year(*d)).collect();
            Column::new(DType::I32, n, Buffer::from_vec(v), days.validity().cloned(), None)
        }
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * 4)?;
            exec.launch1(
                "strings",
                "date_year",
                exec.grid(n as u64),
                &[opt_ptr(Some(days.values()))?, Arg::U64(n as u64), ptr(&out)],
            )?;
            Column::new(DType::I32, n, Buffer::device(out), days.validity().cloned(), None)
        }
    }
}
