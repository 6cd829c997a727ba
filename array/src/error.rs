//! The crate's error type: every message names the operation and the
//! shapes, axes or dtypes involved.

use crate::dtype::DType;

/// What can go wrong building or computing an array.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    /// Shapes that do not fit together.
    #[error("{op}: shapes {left:?} and {right:?} do not fit")]
    Shape {
        /// The operation.
        op: &'static str,
        /// The first shape.
        left: Vec<usize>,
        /// The second shape.
        right: Vec<usize>,
    },
    /// An axis out of range.
    #[error("{op}: axis {axis} is out of range for an array of {ndim} dimensions")]
    Axis {
        /// The operation.
        op: &'static str,
        /// The axis asked for.
        axis: isize,
        /// The array's number of dimensions.
        ndim: usize,
    },
    /// A dtype the operation does not take.
    #[error("{op}: not defined for {dtype}")]
    DType {
        /// The operation.
        op: &'static str,
        /// The offending type.
        dtype: DType,
    },
    /// Chunk grids that do not line up.
    #[error("{op}: chunks {left:?} and {right:?} do not line up (rechunk one of them)")]
    Chunks {
        /// The operation.
        op: &'static str,
        /// The first array's chunks along the axis.
        left: Vec<usize>,
        /// The second array's chunks along the axis.
        right: Vec<usize>,
    },
    /// An index outside the array.
    #[error("{op}: index {index} is out of bounds for axis {axis} of an array of shape {shape:?}")]
    Index {
        /// The operation.
        op: &'static str,
        /// The index.
        index: isize,
        /// The axis.
        axis: usize,
        /// The array's shape.
        shape: Vec<usize>,
    },
    /// Another bad argument.
    #[error("{0}")]
    Invalid(String),
    /// A chunk's bytes do not match its header, or an op failed on a worker.
    #[error("{0}")]
    Data(String),
    /// The cluster failed to compute the graph.
    #[error(transparent)]
    Runtime(#[from] weft_runtime::RuntimeError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = ArrayError> = std::result::Result<T, E>;
