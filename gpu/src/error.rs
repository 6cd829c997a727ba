//! The error type of `weft-gpu`.

use crate::Device;

/// Errors from devices, pools, streams and copies.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The device could not satisfy an allocation, even after the pool gave
    /// back its cached blocks. Callers react to this (by spilling, say).
    #[error("out of memory on {device}: requested {requested} bytes, {in_use} in use of {capacity} bytes")]
    OutOfMemory {
        /// The device that ran out.
        device: Device,
        /// Bytes asked for.
        requested: usize,
        /// Bytes handed out by the pool at the time.
        in_use: usize,
        /// Capacity of the device (or of its pool limit).
        capacity: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error on {device} during {op}: {source}")]
    Driver {
        /// The device the call was made for.
        device: Device,
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: cudarc::driver::DriverError,
    },
    /// A buffer or stream was used with a device it does not belong to.
    #[error("{what} lives on {found}, expected {expected}")]
    WrongDevice {
        /// What was misplaced.
        what: &'static str,
        /// The device it should be on.
        expected: Device,
        /// The device it is on.
        found: Device,
    },
    /// Source and destination of a copy differ in length.
    #[error("copy length mismatch: source {src} bytes, destination {dst} bytes")]
    LengthMismatch {
        /// Source length in bytes.
        src: usize,
        /// Destination length in bytes.
        dst: usize,
    },
    /// Device memory could not be shared with, or opened from, another
    /// process (see [`crate::IpcHandle`]).
    #[error("device IPC on {device}: {reason}")]
    Ipc {
        /// The device that shares or opens.
        device: Device,
        /// Why it failed.
        reason: String,
    },
    /// Work queued on a stream failed (an emulated kernel, reported when the
    /// stream was synchronised).
    #[error("work queued on {device} failed: {message}")]
    Queued {
        /// The device the stream runs on.
        device: Device,
        /// What went wrong.
        message: String,
    },
    /// No such device was opened.
    #[error("no device {0}")]
    NoSuchDevice(Device),
    /// A GPU index past the GPUs this machine has.
    #[error("there is no GPU {index}: {found} found{}", cuda.as_deref().map_or_else(String::new, |why| format!(" (CUDA: {why})")))]
    NoSuchGpu {
        /// The index asked for (CUDA GPUs first, then emulated ones).
        index: u32,
        /// How many GPUs there are.
        found: u32,
        /// Why CUDA found none, when it did not.
        cuda: Option<String>,
    },
    /// A configuration value could not be parsed.
    #[error("bad configuration {name}={value:?}: {reason}")]
    Config {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
}
