//! Devices, pooled device memory, streams and copies for Weft.
//!
//! A [`Device`] names where data lives: the host CPU, a real CUDA GPU, or an
//! emulated GPU (host memory posing as a separate device, for CI). A [`Gpu`]
//! is an opened device; its memory comes from a per-device [`pool`], host
//! buffers for staging copies from a pool of pinned memory beside it, and its
//! [`Stream`]s carry copies between host, device and peer devices. The CUDA
//! driver is loaded at run time: without it, [`probe_cuda`] reports zero GPUs
//! and a reason, and everything still works on the CPU and emulated devices.
//! Another process on the node reads a device buffer through an
//! [`IpcHandle`] (CUDA IPC, or memfd-backed blocks on emulated GPUs).

#![warn(missing_docs)]

mod buffer;
mod cuda;
mod device;
mod emulated;
mod error;
mod host;
mod ipc;
pub mod pool;
mod staging;
mod stream;
pub mod testing;
pub mod units;

pub use buffer::{Buffer, DeviceBuffer, HOST_ALIGN, PinnedBuffer};
pub use cuda::{CudaGpu, CudaProbe, bind_context, clear_stored_error, probe_cuda};
pub use device::{Device, DeviceConfig, Devices, Geometry, Gpu, GpuBackend, sync_thread_streams};
pub use emulated::{CopyCounters, EmulatedGpu, IPC_MIN};
pub use error::GpuError;
pub use host::{advise_huge_pages, zeroed_words};
pub use ipc::{IpcHandle, IpcMemory};
pub use pool::PoolStats;
pub use staging::{StagingBuffer, StagingStats};
pub use stream::{Event, Stream};

/// Result type of this crate.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;
