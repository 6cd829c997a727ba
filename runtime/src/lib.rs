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
//! - [`worker`], [`server`], [`client`], [`local`]: the reactors around the
//!   state machines, over `weft-transport`; [`ops`] and [`value`]: what
//!   workers run and what tasks produce; [`blocking`]: the client for code
//!   without an async runtime; [`progress`]: progress bars of long calls; [`shm`]: large host buffers in
//!   shared memory, which a worker on the same host maps instead of copying; [`observe`]: snapshots
//!   and events of a running scheduler for dashboards.
//!
//! The state machines do no I/O, read no clock and spawn no thread.

#![warn(missing_docs)]

pub mod graph;
pub mod ids;
pub mod protocol;
pub mod scheduler;
pub mod sim;

pub use graph::{Annotations, Graph, TaskSpec};
pub use ids::{ClientId, Key, OpId, ResourceId, SharedStr, TaskId, WorkerId};
pub use protocol::{
    FromClient, FromWorker, OpError, Peer, TaskError, Tier, ToClient, ToWorker, WorkerInfo, WorkerStatus,
};
pub use scheduler::{Comm, Command, Config, Event, Scheduler, TaskState};

// The reactors around the core: they own sockets, clocks and threads.
pub mod blocking;
pub mod client;
pub mod codec;
pub mod contact;
pub mod data;
pub mod device;
pub mod error;
pub mod executor;
pub mod graphs;
pub mod local;
pub mod observe;
pub mod ops;
pub mod progress;
pub mod server;
pub mod shm;
pub mod store;
pub mod value;
pub mod worker;

pub use client::{Client, ClientOptions, TaskFuture};
pub use error::RuntimeError;
pub use local::{LocalCluster, LocalOptions, WorkerMode, worker_main};
pub use ops::Registry;
pub use server::{SchedulerHandle, SchedulerOptions, start_scheduler};
pub use value::Value;
pub use worker::{WorkerOptions, run_worker};
