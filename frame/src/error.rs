//! The dataframe's errors: each names what it is about (the column and the
//! schema it was looked up in, both types of a mismatch, the file).

use arrow_schema::{ArrowError, DataType, Schema};

/// A dataframe error.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A column that the schema does not have.
    #[error("no column {name:?} in the schema [{}]", schema_names(.schema))]
    ColumnNotFound {
        /// The missing column.
        name: String,
        /// The schema it was looked up in.
        schema: Schema,
    },
    /// An operation applied to types it does not take.
    #[error("type mismatch in {op}: {left} and {right}")]
    TypeMismatch {
        /// The operation.
        op: String,
        /// Left (or only) operand type.
        left: DataType,
        /// Right operand type (or the type asked for).
        right: DataType,
    },
    /// An operation that does not apply to one type.
    #[error("{op} does not take {data_type}")]
    Unsupported {
        /// The operation.
        op: String,
        /// The type it was given.
        data_type: DataType,
    },
    /// A plan that cannot be built or run.
    #[error("invalid plan: {0}")]
    Plan(String),
    /// A file that cannot be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// An Arrow kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// A partition that cannot be decoded.
    #[error("bad partition: {0}")]
    Partition(String),
    /// The runtime failed (a task error carries the op's message).
    #[error(transparent)]
    Runtime(#[from] weft_runtime::RuntimeError),
}

fn schema_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Results of this crate.
pub type Result<T, E = FrameError> = std::result::Result<T, E>;

impl FrameError {
    /// A type error (mismatch or unsupported type) restated as arising in
    /// `expr`, so it names the columns involved; other errors unchanged.
    pub fn in_expr(self, expr: &dyn std::fmt::Display) -> Self {
        match self {
            FrameError::TypeMismatch { left, right, .. } => FrameError::TypeMismatch {
                op: expr.to_string(),
                left,
                right,
            },
            FrameError::Unsupported { data_type, .. } => FrameError::Unsupported {
                op: expr.to_string(),
                data_type,
            },
            other => other,
        }
    }

    /// A file error from anything displayable.
    pub fn file(path: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        FrameError::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
