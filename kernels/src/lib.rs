//! Compute kernels over Arrow-layout columns.
#![warn(missing_docs)]

mod error;
pub mod nvrtc;

pub use error::KernelError;

/// Kernel sources, embedded by the build script.
pub mod sources {
    include!(concat!(env!("OUT_DIR"), "/sources.rs"));
}

/// Placeholder until columns land.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// i32
    I32,
}
