//! Compute kernels over Arrow-layout columns.
//!
//! Each kernel has a CPU implementation (plain Rust, or a well-kept crate for
//! GEMM) and a CUDA C source in `kernels/cuda/*.cu`, and runs where its
//! inputs live: host columns on the CPU, device columns on their GPU. On a
//! CUDA device the source is compiled by NVRTC at run time (cached on disk
//! per source hash and architecture, see [`nvrtc`]); on an emulated device
//! the same source, compiled as C++ by the build script with `cuda/emu.h`,
//! runs block by block with one OS thread per CUDA thread.
#![warn(missing_docs)]

pub mod bench;
pub mod cast;
pub mod codec;
mod column;
pub mod concat;
pub mod cudalibs;
mod dispatch;
pub mod elementwise;
mod error;
pub mod filter;
pub mod frame_hash;
pub mod gemm;
pub mod generated;
pub mod hash;
pub mod join;
pub mod keys;
mod launch;
pub mod logic;
pub mod nvrtc;
pub mod reduce;
pub mod rows;
pub mod scan;
pub mod segment;
pub mod select;
pub mod sort;
pub mod strings;
pub mod take;

pub use column::{Column, DType, Native, bitmap_bytes};
pub use error::KernelError;
pub use launch::{LaunchRecord, record_launches};
pub use weft_gpu::Buffer;

/// Kernel sources, embedded by the build script.
pub mod sources {
    include!(concat!(env!("OUT_DIR"), "/sources.rs"));
}
