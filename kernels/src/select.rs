//! `when/then/otherwise` on columns: [`select`] takes each row from one of
//! two columns by a boolean mask, with the validity of the side taken (a
//! null mask row takes the second), as arrow's `zip`. See `cuda/select.cu`.

use arrow_buffer::bit_util::{get_bit, set_bit};
use weft_gpu::Buffer;

use crate::column::{Place, bitmap_bytes};
use crate::dispatch::{Target, same_len, target};
use crate::launch::{Arg, opt_ptr, ptr};
use crate::{Column, DType, KernelError};

/// Row `i` of `a` where `mask` is true, of `b` where it is false or null.
/// `a` and `b` share a type: fixed-width or boolean.
pub fn select(mask: &Column, a: &Column, b: &Column) -> Result<Column, KernelError> {
    if mask.dtype() != DType::Bool {
        return Err(KernelError::UnsupportedType {
            kernel: "select mask",
            dtype: mask.dtype(),
        });
    }
    if a.dtype() != b.dtype() || a.dtype() == DType::Utf8 {
        return Err(KernelError::InvalidArgument {
            kernel: "select",
            reason: format!("{:?} and {:?} values", a.dtype(), b.dtype()),
        });
    }
    let n = mask.len();
    same_len("select", n, a.len())?;
    same_len("select", n, b.len())?;
    let dtype = a.dtype();
    let has_nulls = a.validity().is_some() || b.validity().is_some();
    match target("select", &[mask, a, b])? {
        Target::Cpu => {
            let bits = mask.values().host()?;
            let take_a = |i: usize| -> Result<bool, KernelError> { Ok(get_bit(bits, i) && mask.is_valid(i)?) };
            let mut valid = vec![0u8; bitmap_bytes(n)];
            let values = match dtype.width() {
                Some(width) => {
                    let (x, y) = (a.values().host()?, b.values().host()?);
                    let mut out = vec![0u8; n * width];
                    for i in 0..n {
                        let (src, side) = if take_a(i)? { (x, a) } else { (y, b) };
                        out[i * width..(i + 1) * width].copy_from_slice(&src[i * width..(i + 1) * width]);
                        if side.is_valid(i)? {
                            set_bit(&mut valid, i);
                        }
                    }
                    Buffer::host(out)
                }
                None => {
                    let (x, y) = (a.values().host()?, b.values().host()?);
                    let mut out = vec![0u8; bitmap_bytes(n)];
                    for i in 0..n {
                        let (src, side) = if take_a(i)? { (x, a) } else { (y, b) };
                        if get_bit(src, i) {
                            set_bit(&mut out, i);
                        }
                        if side.is_valid(i)? {
                            set_bit(&mut valid, i);
                        }
                    }
                    Buffer::from_vec(out)
                }
            };
            Column::new(dtype, n, values, has_nulls.then(|| Buffer::from_vec(valid)), None)
        }
        Target::Gpu(exec) => {
            let words = n.div_ceil(32).max(1);
            let (kernel, bytes) = match dtype.width() {
                Some(4) => ("select_32", n * 4),
                Some(_) => ("select_64", n * 8),
                None => ("select_bits", words * 4),
            };
            let out = exec.alloc(bytes.max(4))?;
            let out_valid = has_nulls.then(|| exec.alloc(words * 4)).transpose()?;
            exec.launch1(
                "select",
                kernel,
                exec.grid(n.div_ceil(32) as u64),
                &[
                    opt_ptr(Some(mask.values()))?,
                    opt_ptr(mask.validity())?,
                    opt_ptr(Some(a.values()))?,
                    opt_ptr(a.validity())?,
                    opt_ptr(Some(b.values()))?,
                    opt_ptr(b.validity())?,
                    Arg::U64(n as u64),
                    ptr(&out),
                    Arg::Ptr(out_valid.as_ref().map_or(0, |v| v.device_ptr())),
                ],
            )?;
            Column::new(dtype, n, Buffer::device(out), out_valid.map(Buffer::device), None)
        }
    }
}
