//! filter: the rows of a column where a boolean mask is true (a null mask
//! row counts as false). On the GPU, stream compaction via a prefix sum.

use arrow_buffer::bit_util::{get_bit, set_bit};
use weft_gpu::Buffer;

use crate::column::{Place, bitmap_bytes};
use crate::dispatch::{Target, same_len, target, with_numeric};
use crate::launch::{Arg, opt_ptr, ptr};
use crate::{Column, DType, KernelError, Native};

fn cpu_filter<T: Native>(x: &Column, mask: &Column) -> Result<Column, KernelError> {
    let vals = x.host_values::<T>()?;
    let bits = mask.values().host()?;
    let mvalid = mask.host_validity()?;
    let xvalid = x.host_validity()?;
    let mut out = Vec::new();
    let mut keep_valid = Vec::new();
    for (i, v) in vals.iter().enumerate() {
        if get_bit(bits, i) && mvalid.is_none_or(|m| get_bit(m, i)) {
            out.push(*v);
            keep_valid.push(xvalid.is_none_or(|b| get_bit(b, i)));
        }
    }
    let validity = xvalid.map(|_| {
        let mut b = vec![0u8; bitmap_bytes(out.len())];
        for (i, ok) in keep_valid.iter().enumerate() {
            if *ok {
                set_bit(&mut b, i);
            }
        }
        Buffer::from_vec(b)
    });
    Column::new(T::DTYPE, out.len(), Buffer::from_vec(out), validity, None)
}

/// Keeps the rows of `x` where `mask` (a boolean column of the same length) is true.
pub fn filter(x: &Column, mask: &Column) -> Result<Column, KernelError> {
    if mask.dtype() != DType::Bool {
        return Err(KernelError::UnsupportedType {
            kernel: "filter mask",
            dtype: mask.dtype(),
        });
    }
    same_len("filter", x.len(), mask.len())?;
    let n = x.len();
    match target("filter", &[x, mask])? {
        Target::Cpu => with_numeric!("filter", x.dtype(), |T| cpu_filter::<T>(x, mask)),
        Target::Gpu(exec) => with_numeric!("filter", x.dtype(), |T| {
            let words = n.div_ceil(32) as u64;
            let blocks = exec.grid(words);
            let words_per_block = words.div_ceil(u64::from(blocks)).max(1);
            let counts = exec.alloc(blocks as usize * 4)?;
            let (m, mv) = (opt_ptr(Some(mask.values()))?, opt_ptr(mask.validity())?);
            exec.launch1(
                "filter",
                "filter_count",
                blocks,
                &[m, mv, Arg::U64(n as u64), Arg::U64(words_per_block), ptr(&counts)],
            )?;
            let total = exec.zeroed(4)?;
            crate::scan::exclusive_sum_u32(&exec, ptr(&counts), ptr(&counts), blocks as usize, ptr(&total))?;
            let kept = exec.download::<u32>(&total, 1)?[0] as usize;
            let out = exec.alloc(kept * std::mem::size_of::<T>())?;
            let out_valid = x.validity().map(|_| exec.zeroed(kept.div_ceil(32) * 4)).transpose()?;
            exec.launch1(
                "filter",
                &format!("filter_{}", T::SUFFIX),
                blocks,
                &[
                    opt_ptr(Some(x.values()))?,
                    opt_ptr(x.validity())?,
                    m,
                    mv,
                    Arg::U64(n as u64),
                    Arg::U64(words_per_block),
                    ptr(&counts),
                    ptr(&out),
                    Arg::Ptr(out_valid.as_ref().map_or(0, |v| v.device_ptr())),
                ],
            )?;
            Column::new(
                x.dtype(),
                kept,
                Buffer::device(out),
                out_valid.map(Buffer::device),
                None,
            )
        }),
    }
}
