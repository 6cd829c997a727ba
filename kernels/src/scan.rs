//! Exclusive prefix sums of u32 counts: where each row's share of an output
//! starts (filter's per-block counts, segment flags, a join's pairs per
//! probe row, utf8 lengths into offsets). On the GPU one pass by decoupled
//! look-back (`cuda/scan.cu`), over a grid sized from the device, reading
//! each count once and writing each sum once.

use weft_gpu::{Buffer, DeviceBuffer, GpuBackend};

use crate::dispatch::{Target, target};
use crate::launch::{Arg, BLOCK, Exec, ptr};
use crate::{Column, DType, KernelError};

/// Counts per thread of a tile: 8 on a GPU; on an emulated device 1 for
/// small inputs, so the tests' sizes span many tiles and the look-back
/// between them.
fn tile_items(exec: &Exec, n: usize) -> u32 {
    match exec.gpu.backend() {
        GpuBackend::Emulated(_) if n < 8192 => 1,
        _ => 8,
    }
}

/// Writes the exclusive prefix sums of the `n` u32 counts at `input` to
/// `output` (the same buffer is allowed) and their sum to `total` (a
/// device pointer to one u32; untouched when `n` is 0). Queued on `exec`'s
/// stream; the caller keeps the buffers alive until it has run.
pub(crate) fn exclusive_sum_u32(exec: &Exec, input: Arg, output: Arg, n: usize, total: Arg) -> Result<(), KernelError> {
    if n == 0 {
        return Ok(());
    }
    let items = tile_items(exec, n);
    let tiles = n.div_ceil(BLOCK as usize * items as usize);
    if u32::try_from(tiles).is_err() {
        return Err(KernelError::InvalidArgument {
            kernel: "scan",
            reason: format!("{n} counts is too many tiles"),
        });
    }
    // One status word per tile, then the tile counter.
    let status = exec.zeroed(tiles * 8 + 4)?;
    let counter = Arg::Ptr(status.device_ptr() + (tiles * 8) as u64);
    exec.launch1(
        "scan",
        &format!("scan_exclusive_u32_{items}"),
        exec.grid(n as u64).min(tiles as u32),
        &[input, output, Arg::U64(n as u64), ptr(&status), counter, total],
    )?;
    Ok(())
}

/// The exclusive prefix sums of a U32 column without nulls (wrapping), and
/// the sum of all of it.
pub fn exclusive_sum(x: &Column) -> Result<(Column, u32), KernelError> {
    if x.dtype() != DType::U32 || x.validity().is_some() {
        return Err(KernelError::InvalidArgument {
            kernel: "scan",
            reason: format!(
                "counts must be a U32 column without nulls, not {:?}{}",
                x.dtype(),
                if x.validity().is_some() { " with nulls" } else { "" }
            ),
        });
    }
    let n = x.len();
    match target("scan", &[x])? {
        Target::Cpu => {
            let mut run = 0u32;
            let sums: Vec<u32> = x
                .host_values::<u32>()?
                .iter()
                .map(|c| {
                    let s = run;
                    run = run.wrapping_add(*c);
                    s
                })
                .collect();
            Ok((Column::from_vec(sums), run))
        }
        Target::Gpu(exec) => {
            let out: DeviceBuffer = exec.alloc(n.max(1) * 4)?;
            let total = exec.zeroed(4)?;
            exclusive_sum_u32(
                &exec,
                crate::launch::opt_ptr(Some(x.values()))?,
                ptr(&out),
                n,
                ptr(&total),
            )?;
            let sum = exec.download::<u32>(&total, 1)?[0];
            Ok((Column::new(DType::U32, n, Buffer::device(out), None, None)?, sum))
        }
    }
}
