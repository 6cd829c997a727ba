//! Weft's runtime core: the graph model, the protocol messages, the sans-IO
//! scheduler and worker state machines (driven by the reactors here and by
//! the simulator in `weft-sim`).
//!
//! - [`graph`]: tasks, annotations, graphs, and the `dask.order`-style ordering.
//! - [`layer`]: compact graphs for collections: layers of tasks keyed
//!   `name-i`, made by dependency patterns.
//! - [`protocol`]: scheduler<->worker and scheduler<->client messages (serde).
//! - [`scheduler`]: the state machine; a reactor feeds it [`scheduler::Event`]s
//!   and carries out what it writes into a [`scheduler::Comm`].
//!
//! - [`worker`], [`server`], [`client`], [`local`]: the reactors around the
//!   state machines, over `weft-transport`; [`ops`] and [`value`]: what
//!   workers run and what tasks produce; [`blocking`]: the client for code
//!   without an async runtime; `progress`: progress bars of long calls (feature
//!   `progress-bar`); [`observe`]: snapshots
//!   and events of a running scheduler for dashboards; [`recording`]: a client's
//!   recording of them over a block of work; [`shuffle`]: the P2P shuffle
//!   service collections use to move pieces of partitions worker to worker. Large host buffers live in shared memory
//!   (`weft_transport::shm`), which a worker on the same host maps instead of copying.
//!
//! The state machines do no I/O, read no clock and spawn no thread.

#![warn(missing_docs)]

pub mod graph;
pub mod ids;
pub mod layer;
pub mod protocol;
pub mod scheduler;

pub use graph::{Annotations, Graph, TaskSpec};
pub use ids::{ClientId, Key, OpId, ResourceId, SharedStr, TaskId, WorkerId};
pub use protocol::{
    FromClient, FromWorker, HeldResult, OpError, Peer, TaskError, Tier, ToClient, ToWorker, Vitals, WorkerInfo,
    WorkerStatus,
};
pub use scheduler::{Comm, Command, Config, Event, Scheduler, TaskState};

// The reactors around the core: they own sockets, clocks and threads.
pub mod blocking;
pub mod client;
pub mod codec;
pub(crate) mod contact;
pub(crate) mod data;
pub(crate) mod device;
pub mod error;
pub(crate) mod executor;
pub mod graphs;
pub mod local;
pub mod observe;
pub mod ops;
#[cfg(feature = "progress-bar")]
pub(crate) mod progress;
pub mod recording;
pub mod server;
pub mod shuffle;
pub mod store;
pub mod value;
pub mod worker;

pub use client::{Client, ClientOptions, TaskFuture};
pub use error::RuntimeError;
pub use local::{LocalCluster, LocalOptions, WorkerMode, worker_main};
pub use ops::Registry;
pub use recording::{Recorded, Recording};
pub use server::{SchedulerHandle, SchedulerOptions, start_scheduler};
pub use value::Value;
pub use worker::{WorkerOptions, run_worker};
