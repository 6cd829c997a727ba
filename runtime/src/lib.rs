//! Weft's runtime core: the graph model, the protocol messages, the sans-IO
//! scheduler and a simulator to drive it.
//!
//! - [`graph`]: tasks, annotations, graphs, and the `dask.order`-style ordering.
//! - [`protocol`]: scheduler<->worker and scheduler<->client messages (serde).
//! - [`scheduler`]: the state machine; a reactor feeds it [`scheduler::Event`]s
//!   and carries out what it writes into a [`scheduler::Comm`].
//! - [`sim`]: virtual workers on a logical clock with fault injection, used by
//!   the tests and the benchmark.
//!
//! Nothing here does I/O, reads a clock or spawns a thread.

#![warn(missing_docs)]

pub mod graph;
pub mod ids;
pub mod protocol;
pub mod scheduler;
pub mod sim;

pub use graph::{Annotations, Graph, TaskSpec};
pub use ids::{ClientId, Key, OpId, ResourceId, SharedStr, TaskId, WorkerId};
pub use protocol::{FromClient, FromWorker, TaskError, Tier, ToClient, ToWorker, WorkerInfo};
pub use scheduler::{Comm, Command, Config, Event, Scheduler, TaskState};
