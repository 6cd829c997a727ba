//! Weft's distributed dataframe: a lazy, Polars-style API over Arrow
//! partitions that live on the workers.
//!
//! A [`LazyFrame`] builds a [`plan::LogicalPlan`]; an action (`collect`,
//! `count`, `write_parquet`, `persist`) runs the [`optimize`] passes
//! (constant folding, filter and projection pushdown into scans with
//! row-group pruning), chooses each group-by's strategy from the sizes of
//! its partial results and each join's from the size of a side it could
//! broadcast ([`adaptive`]), lowers the plan to one graph
//! ([`physical`]) and submits it in one message. Workers run the ops of
//! [`register`]: fused per-partition steps ([`ops`]) on arrow-rs compute,
//! with our own hash group-by ([`groupby`]), hash join ([`join`]), hash
//! partitioning ([`shuffle`]) and the range partitioning of sorts
//! ([`range`]); partitions travel as [`partition`] values.
//!
//! ```rust,no_run
//! # async fn example(client: weft_runtime::Client) -> weft_frame::Result<()> {
//! use weft_frame::{Frames, col, lit, lit_date};
//! let frames = Frames::new(client); // workers registered weft_frame::register
//! let lineitem = frames.read_parquet("tpch/sf1/lineitem/*.parquet")?;
//! let q = lineitem
//!     .filter(col("l_shipdate").lt_eq(lit_date("1998-09-02")?))
//!     .group_by([col("l_returnflag")])
//!     .agg([col("l_quantity").sum().alias("qty"), (col("l_extendedprice") * (lit(1) - col("l_discount"))).sum().alias("rev")])
//!     .sort([col("l_returnflag")], &[false]);
//! println!("{}", q.explain()?);
//! let batch = q.collect().await?;
//! # let _ = batch; Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod adaptive;
pub mod bench;
pub mod broadcast;
pub mod device;
pub mod eager;
pub mod error;
pub mod eval;
pub mod expr;
mod fixed;
pub mod groupby;
pub mod io;
pub mod join;
pub mod ops;
pub mod optimize;
pub mod partition;
pub mod physical;
pub mod plan;
pub mod range;
pub mod shuffle;
pub mod tpch;

pub use error::{FrameError, Result};
pub mod frame;

pub use expr::{AggFunc, Expr, Scalar, col, len, lit, lit_date, when};
pub use frame::{Frames, GroupBy, LazyFrame};
pub use join::JoinType;
pub use ops::register;
pub use physical::PlanOptions;
