//! `weft-array`: a lazy, chunked n-dimensional array over Weft's runtime,
//! in the manner of Dask Array.
//!
//! An [`Array`] has a dtype, a shape and a chunk grid ([`Chunks`]); every
//! chunk is one task's result, a [`weft_runtime::Value`] whose frame holds
//! the elements (see [`block`]). Operations build a plan: elementwise
//! operations (with NumPy broadcasting and promotion), transposes and the
//! reduction after them fuse into one task per chunk ([`fuse`], [`expr`]),
//! reductions finish in a tree ([`tree`]), and `matmul` is blocked
//! ([`matmul`]). Workers need the ops of [`ops::register`]. On a worker
//! with a GPU, chunks live in device memory and a fused task is one
//! generated kernel per chunk ([`grid`] lowers it, [`cuda`] prints its
//! source for NVRTC, [`emulate`] runs it on emulated GPUs).
//!
//! ```no_run
//! # async fn demo(client: &weft_runtime::Client) -> weft_array::Result<()> {
//! use weft_array::{random, Array};
//! let x = random::random(42, &[4000, 4000], &[1000, 1000])?;
//! let total = (&x + &x.t())?.sum(None)?; // one task per chunk, then a tree
//! let host = total.to_host(client).await?;
//! println!("{}", host.to_f64()[0]);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod array;
pub mod bench;
pub mod block;
pub mod chunks;
pub mod create;
pub mod cuda;
mod device;
pub mod dtype;
pub mod emulate;
pub mod error;
pub mod expr;
pub mod fuse;
pub mod grid;
pub mod index;
pub mod join;
mod local;
pub mod matmul;
pub mod npy;
mod operators;
pub mod ops;
pub mod p2p;
pub mod rechunk;
pub mod reduce;
pub mod reshape;
pub mod scatter;
pub mod tree;

pub use array::{Array, HostArray};
pub use chunks::Chunks;
pub use create::{arange, from_slice, full, linspace, ones, random, zeros};
pub use dtype::{DType, Element, Scalar};
pub use error::{ArrayError, Result};
pub use expr::{BinaryOp, UnaryOp};
pub use index::Ix;
pub use join::{concatenate, stack};
pub use npy::{from_npy, from_npy_dir};
pub use ops::{register, registry};
pub use rechunk::RechunkOptions;
pub use reduce::ReduceOp;
pub use scatter::scatter;
