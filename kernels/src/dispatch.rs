//! Choosing where a kernel runs: on the device its inputs live on.

use weft_gpu::Device;

use crate::column::Place;
use crate::launch::Exec;
use crate::{Column, KernelError};

/// Where a kernel call runs.
pub(crate) enum Target {
    /// The CPU implementation.
    Cpu,
    /// The CUDA source, on a real or emulated GPU.
    Gpu(Exec),
}

/// The common device of `cols`, or an error naming the two that differ.
pub(crate) fn target(kernel: &'static str, cols: &[&Column]) -> Result<Target, KernelError> {
    let first = cols.first().ok_or(KernelError::InvalidArgument {
        kernel,
        reason: "no inputs".into(),
    })?;
    let device = first.device();
    for c in cols {
        if c.device() != device {
            return Err(KernelError::DeviceMismatch {
                kernel,
                a: device,
                b: c.device(),
            });
        }
    }
    match device {
        Device::Cpu => Ok(Target::Cpu),
        _ => Ok(Target::Gpu(Exec::new(first.values().dev()?.gpu())?)),
    }
}

pub(crate) fn same_len(kernel: &'static str, a: usize, b: usize) -> Result<(), KernelError> {
    if a == b {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch { kernel, a, b })
    }
}

/// Runs `$body` with `$T` bound to the Rust type of a numeric `$dtype`.
macro_rules! with_numeric {
    ($kernel:expr, $dtype:expr, |$T:ident| $body:expr) => {
        match $dtype {
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            other => Err($crate::KernelError::UnsupportedType {
                kernel: $kernel,
                dtype: other,
            }),
        }
    };
}
pub(crate) use with_numeric;

/// AND of two optional host bitmaps over `len` rows.
pub(crate) fn and_validity(a: Option<&[u8]>, b: Option<&[u8]>, len: usize) -> Option<Vec<u8>> {
    let bytes = crate::column::bitmap_bytes(len);
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x[..bytes].to_vec()),
        (Some(x), Some(y)) => Some(x[..bytes].iter().zip(&y[..bytes]).map(|(p, q)| p & q).collect()),
    }
}
