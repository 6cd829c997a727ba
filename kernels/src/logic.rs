//! Boolean-column kernels for dataframe predicates: Kleene `and`/`or`,
//! `not`, `is_null`/`is_not_null`, and row masks (the first `k` rows, the
//! rows whose u32 id equals `j`) that [`crate::filter`] turns into slices
//! and hash-split pieces, and literal columns ([`fill`]). Bits are Arrow's
//! (LSB first); a result's bits past its length are zero.

use arrow_buffer::bit_util::{get_bit, set_bit};
use weft_gpu::Buffer;

use crate::column::{Place, bitmap_bytes};
use crate::dispatch::{Target, same_len, target};
use crate::launch::{Arg, Exec, binary_args, opt_ptr, ptr};
use crate::{Column, DType, KernelError};

fn check_bool(kernel: &'static str, c: &Column) -> Result<(), KernelError> {
    if c.dtype() == DType::Bool {
        Ok(())
    } else {
        Err(KernelError::UnsupportedType {
            kernel,
            dtype: c.dtype(),
        })
    }
}

fn host_bit(bits: &[u8], i: usize) -> bool {
    get_bit(bits, i)
}

/// A host boolean column of `n` rows from a function of the row.
fn host_bits(n: usize, f: impl Fn(usize) -> bool) -> Buffer {
    let mut bits = vec![0u8; bitmap_bytes(n)];
    for i in (0..n).filter(|i| f(*i)) {
        set_bit(&mut bits, i);
    }
    Buffer::from_vec(bits)
}

/// A device bitmap of `n` rows, as whole 32-bit words.
fn words(exec: &Exec, n: usize) -> Result<weft_gpu::DeviceBuffer, KernelError> {
    exec.alloc(n.div_ceil(32).max(1) * 4)
}

/// Whether `and` (true) or `or` (false) decides: the Kleene rules.
fn kleene(a: &Column, b: &Column, is_and: bool) -> Result<Column, KernelError> {
    let kernel = if is_and { "logic_and" } else { "logic_or" };
    check_bool(kernel, a)?;
    check_bool(kernel, b)?;
    same_len(kernel, a.len(), b.len())?;
    let n = a.len();
    let has_nulls = a.validity().is_some() || b.validity().is_some();
    match target(kernel, &[a, b])? {
        Target::Cpu => {
            let (x, y) = (a.values().host()?, b.values().host()?);
            let (xv, yv) = (a.host_validity()?, b.host_validity()?);
            let known =
                |bits: &[u8], v: Option<&[u8]>, i: usize| v.is_none_or(|v| host_bit(v, i)).then(|| host_bit(bits, i));
            let value = |i: usize| -> Option<bool> {
                match (known(x, xv, i), known(y, yv, i)) {
                    (Some(p), Some(q)) => Some(if is_and { p && q } else { p || q }),
                    (Some(p), None) | (None, Some(p)) if p != is_and => Some(p),
                    _ => None,
                }
            };
            let values = host_bits(n, |i| value(i) == Some(true));
            let validity = has_nulls.then(|| host_bits(n, |i| value(i).is_some()));
            Column::new(DType::Bool, n, values, validity, None)
        }
        Target::Gpu(exec) => {
            let out = words(&exec, n)?;
            let out_valid = has_nulls.then(|| words(&exec, n)).transpose()?;
            exec.launch1(
                "logic",
                kernel,
                exec.grid(n.div_ceil(32) as u64),
                &binary_args(a, b, &out, out_valid.as_ref(), n)?,
            )?;
            Column::new(DType::Bool, n, Buffer::device(out), out_valid.map(Buffer::device), None)
        }
    }
}

/// Kleene `a and b`: false where either is false, null where neither
/// decides and one is null.
pub fn and(a: &Column, b: &Column) -> Result<Column, KernelError> {
    kleene(a, b, true)
}

/// Kleene `a or b`: true where either is true, null where neither decides
/// and one is null.
pub fn or(a: &Column, b: &Column) -> Result<Column, KernelError> {
    kleene(a, b, false)
}

/// `not a` (null stays null).
pub fn not(a: &Column) -> Result<Column, KernelError> {
    check_bool("logic_not", a)?;
    let n = a.len();
    match target("logic_not", &[a])? {
        Target::Cpu => {
            let x = a.values().host()?;
            Column::new(
                DType::Bool,
                n,
                host_bits(n, |i| !host_bit(x, i)),
                a.validity().cloned(),
                None,
            )
        }
        Target::Gpu(exec) => {
            let out = words(&exec, n)?;
            exec.launch1(
                "logic",
                "logic_not",
                exec.grid(n.div_ceil(32) as u64),
                &[opt_ptr(Some(a.values()))?, ptr(&out), Arg::U64(n as u64)],
            )?;
            Column::new(DType::Bool, n, Buffer::device(out), a.validity().cloned(), None)
        }
    }
}

/// True where `x` is null (or, with `negate`, where it is not); no nulls.
pub fn is_null(x: &Column, negate: bool) -> Result<Column, KernelError> {
    let n = x.len();
    match target("logic_is_null", &[x])? {
        Target::Cpu => {
            let v = x.host_validity()?;
            let values = host_bits(n, |i| v.is_none_or(|v| host_bit(v, i)) == negate);
            Column::new(DType::Bool, n, values, None, None)
        }
        Target::Gpu(exec) => {
            let out = words(&exec, n)?;
            exec.launch1(
                "logic",
                "logic_is_null",
                exec.grid(n.div_ceil(32) as u64),
                &[
                    opt_ptr(x.validity())?,
                    Arg::U32(u32::from(negate)),
                    ptr(&out),
                    Arg::U64(n as u64),
                ],
            )?;
            Column::new(DType::Bool, n, Buffer::device(out), None, None)
        }
    }
}

/// A mask of `like`'s length, on its device, true for the first `k` rows.
pub fn prefix_mask(like: &Column, k: usize) -> Result<Column, KernelError> {
    let n = like.len();
    match target("mask_prefix", &[like])? {
        Target::Cpu => Column::new(DType::Bool, n, host_bits(n, |i| i < k), None, None),
        Target::Gpu(exec) => {
            let out = words(&exec, n)?;
            exec.launch1(
                "logic",
                "mask_prefix",
                exec.grid(n.div_ceil(32) as u64),
                &[Arg::U64(k as u64), ptr(&out), Arg::U64(n as u64)],
            )?;
            Column::new(DType::Bool, n, Buffer::device(out), None, None)
        }
    }
}

/// True where the u32 column `ids` (no nulls) equals `j`.
pub fn eq_mask(ids: &Column, j: u32) -> Result<Column, KernelError> {
    if ids.dtype() != DType::U32 || ids.validity().is_some() {
        return Err(KernelError::InvalidArgument {
            kernel: "mask_eq_u32",
            reason: "ids must be a U32 column without nulls".into(),
        });
    }
    let n = ids.len();
    match target("mask_eq_u32", &[ids])? {
        Target::Cpu => {
            let v = ids.host_values::<u32>()?;
            Column::new(DType::Bool, n, host_bits(n, |i| v[i] == j), None, None)
        }
        Target::Gpu(exec) => {
            let out = words(&exec, n)?;
            exec.launch1(
                "logic",
                "mask_eq_u32",
                exec.grid(n.div_ceil(32) as u64),
                &[opt_ptr(Some(ids.values()))?, Arg::U32(j), ptr(&out), Arg::U64(n as u64)],
            )?;
            Column::new(DType::Bool, n, Buffer::device(out), None, None)
        }
    }
}

/// A column of `like`'s length and device with every row `value` (a
/// literal): `value` holds the bits of one I32, I64, F32, F64, U32 or U64.
pub fn fill(like: &Column, dtype: DType, value: u64) -> Result<Column, KernelError> {
    let n = like.len();
    let width = dtype
        .width()
        .ok_or(KernelError::UnsupportedType { kernel: "fill", dtype })?;
    match target("fill", &[like])? {
        Target::Cpu => {
            let bytes = if width == 4 {
                bytemuck::cast_slice(&vec![value as u32; n]).to_vec()
            } else {
                bytemuck::cast_slice(&vec![value; n]).to_vec()
            };
            Column::new(dtype, n, Buffer::host(bytes), None, None)
        }
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * width)?;
            let (kernel, arg) = if width == 4 {
                ("fill_32", Arg::U32(value as u32))
            } else {
                ("fill_64", Arg::U64(value))
            };
            exec.launch1(
                "logic",
                kernel,
                exec.grid(n as u64),
                &[arg, ptr(&out), Arg::U64(n as u64)],
            )?;
            Column::new(dtype, n, Buffer::device(out), None, None)
        }
    }
}

/// Row numbers `0..n` as a U32 column on `like`'s device.
pub fn iota(like: &Column, n: usize) -> Result<Column, KernelError> {
    match target("iota_32", &[like])? {
        Target::Cpu => Ok(Column::from_vec((0..n as u32).collect::<Vec<u32>>())),
        Target::Gpu(exec) => {
            let out = exec.alloc(n.max(1) * 4)?;
            exec.launch1(
                "logic",
                "iota_32",
                exec.grid(n as u64),
                &[ptr(&out), Arg::U64(n as u64)],
            )?;
            Column::new(DType::U32, n, Buffer::device(out), None, None)
        }
    }
}

/// The bits of `bits` (a bitmap over `like`'s rows; none: all set) at the
/// rows `idx` (U32, no nulls), as a bitmap buffer of `idx.len()` rows.
pub fn take_bits(like: &Column, bits: Option<&Buffer>, idx: &Column) -> Result<Buffer, KernelError> {
    let n = idx.len();
    match target("take_bits", &[like, idx])? {
        Target::Cpu => {
            let src = bits.map(|b| b.host()).transpose()?;
            let rows = idx.host_values::<u32>()?;
            Ok(host_bits(n, |i| src.is_none_or(|s| host_bit(s, rows[i] as usize))))
        }
        Target::Gpu(exec) => {
            let out = words(&exec, n)?;
            exec.launch1(
                "logic",
                "take_bits",
                exec.grid(n.div_ceil(32) as u64),
                &[
                    opt_ptr(bits)?,
                    opt_ptr(Some(idx.values()))?,
                    Arg::U64(n as u64),
                    ptr(&out),
                ],
            )?;
            Ok(Buffer::device(out))
        }
    }
}
