//! Weft's distributed dataframe.
#![warn(missing_docs)]

pub mod bench;
pub mod error;
pub mod eval;
pub mod expr;
pub mod groupby;
pub mod io;
pub mod join;
pub mod ops;
pub mod optimize;
pub mod partition;
pub mod physical;
pub mod plan;
pub mod shuffle;
pub mod tpch;

pub use error::{FrameError, Result};
pub mod frame;

pub use expr::{AggFunc, Expr, Scalar, col, len, lit, lit_date, when};
pub use frame::{Frames, GroupBy, LazyFrame};
pub use join::JoinType;
pub use ops::register;
pub use physical::PlanOptions;
