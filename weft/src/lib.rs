//! Weft: distributed execution for GPU clusters.
//!
//! This facade re-exports what a program needs: a [`Client`] to submit
//! graphs and scatter data (or [`blocking::Client`] for code without an
//! async runtime), a [`LocalCluster`], the [`Registry`] of ops, and
//! [`worker_main`], which a program that spawns local workers calls first
//! thing in `main`, plain or async (this example runs as a doc test, its
//! workers being the test's own executable run again):
//!
//! ```rust,standalone_crate
//! use weft::{LocalCluster, LocalOptions, Registry, worker_main};
//!
//! weft::define_ops! {
//!     /// Registers this program's ops.
//!     fn register_ops;
//!
//!     /// `x * x`, as the op `square`.
//!     fn square(x: i64, _inputs: Vec<()>) -> Result<i64, String> {
//!         Ok(x * x)
//!     }
//! }
//!
//! fn registry() -> Registry {
//!     let mut registry = Registry::builtin();
//!     register_ops(&mut registry);
//!     registry
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), weft::RuntimeError> {
//!     worker_main(registry()); // returns at once unless this process is a worker
//!     let cluster = LocalCluster::start(LocalOptions::for_this_machine()).await?;
//!     let client = cluster.client().await?;
//!     let squares = client.map("square", (0..10i64).map(|i| weft::ops::args(&i).unwrap())).await?;
//!     let values = client.gather(&squares).await?;
//!     println!("{:?}", values.iter().map(|v| v.decode::<i64>()).collect::<Vec<_>>());
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeExamples;

pub use weft_array as array;
pub use weft_dashboard as dashboard;
/// `client.performance_report(path)`: a report of a block of work (see
/// [`dashboard::PerformanceReports`]).
pub use weft_dashboard::PerformanceReports;
pub use weft_frame as frame;
pub use weft_gpu as gpu;
pub use weft_runtime::protocol::ResourceAmount;
pub use weft_runtime::{
    Annotations, Client, ClientOptions, Graph, Key, LocalCluster, LocalOptions, OpError, Peer, Registry, RuntimeError,
    SchedulerOptions, TaskError, TaskFuture, TaskSpec, Tier, Value, WorkerMode, WorkerOptions, WorkerStatus, blocking,
    define_ops, graphs, layer, ops, store,
};
pub use weft_transport as transport;

pub mod logging;

/// Call first thing in `main` of any program that starts a local cluster
/// of processes: in a process the cluster spawned as a worker, this logs to
/// stderr (filtered by `WEFT_LOG`, warnings by default), runs the worker
/// with `registry` (serving its own status page and metrics on a free
/// port, which the scheduler's dashboard links) and exits; anywhere else it
/// returns at once. It may be
/// called from a plain `main` or from an async one (`#[tokio::main]`).
pub fn worker_main(registry: Registry) {
    if weft_runtime::local::is_worker_process() {
        // The worker's logs go to the stderr it shares with the program
        // that started the cluster; a bad WEFT_LOG falls back to warnings.
        let filter = logging::filter_from_env("warn");
        if let Err(error) = logging::install(&filter, logging::Format::Text) {
            eprintln!("weft worker: {error}; logging warnings only");
            let _ = logging::install("warn", logging::Format::Text);
        }
    }
    weft_runtime::local::worker_main_with(registry, Some(weft_dashboard::worker_dashboard(None)));
}

/// Every op Weft ships: the built-in ones, the dataframe's
/// ([`frame::register`]) and the array's ([`array::register`]). `weft
/// worker`, `weft local` and their worker processes all run with it; a
/// program with its own ops adds them to it before `worker_main`.
pub fn registry() -> Registry {
    let mut registry = Registry::builtin();
    weft_frame::register(&mut registry);
    weft_array::register(&mut registry);
    registry
}
