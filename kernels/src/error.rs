//! The error type of `weft-kernels`.

use weft_gpu::{Device, GpuError};

use crate::DType;

/// Errors from kernels: bad inputs, devices, compilation and launches.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A device operation (allocation, copy) failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// Inputs of one kernel live on different devices.
    #[error("{kernel}: inputs on different devices ({a} and {b})")]
    DeviceMismatch {
        /// The kernel.
        kernel: &'static str,
        /// Device of the first input.
        a: Device,
        /// Device of the other input.
        b: Device,
    },
    /// Inputs of one kernel differ in length or shape.
    #[error("{kernel}: length mismatch ({a} and {b})")]
    LengthMismatch {
        /// The kernel.
        kernel: &'static str,
        /// The first length.
        a: usize,
        /// The other length.
        b: usize,
    },
    /// The kernel does not support this type (or the input types differ).
    #[error("{kernel}: unsupported type {dtype:?}")]
    UnsupportedType {
        /// The kernel.
        kernel: &'static str,
        /// The type given.
        dtype: DType,
    },
    /// An index of take/gather was out of bounds.
    #[error("take: index out of bounds for a column of {len} rows")]
    IndexOutOfBounds {
        /// Rows in the column indexed.
        len: usize,
    },
    /// A bad argument (shape, partition count, ...).
    #[error("{kernel}: {reason}")]
    InvalidArgument {
        /// The kernel.
        kernel: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A host column was asked for on a device, or the reverse.
    #[error("{what}: column is on {device}")]
    WrongPlace {
        /// What was attempted.
        what: &'static str,
        /// Where the column is.
        device: Device,
    },
    /// Arrow refused a conversion.
    #[error("arrow conversion: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// NVRTC is not installed or failed to compile a source.
    #[error("NVRTC compile of {file}.cu for compute_{arch}: {log}")]
    Nvrtc {
        /// The source file stem.
        file: String,
        /// The target architecture (80 for sm_80).
        arch: u32,
        /// NVRTC's log or why it could not run.
        log: String,
    },
    /// A CUDA driver call made by a kernel launcher failed.
    #[error("CUDA {op} for {kernel} on {device}: {source}")]
    Driver {
        /// The kernel.
        kernel: String,
        /// The device.
        device: Device,
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: cudarc::driver::DriverError,
    },
    /// cuBLAS failed.
    #[error("cuBLAS on {device}: {reason}")]
    Cublas {
        /// The device.
        device: Device,
        /// What failed.
        reason: String,
    },
    /// The CPU emulation has no kernel of that name.
    #[error("emulated launch: no kernel named {0}")]
    NoSuchKernel(String),
}
