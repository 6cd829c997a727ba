//! Weft's cluster simulator: the real scheduler ([`weft_runtime::scheduler`])
//! and real worker state machines ([`weft_runtime::worker::WorkerState`]) on
//! a logical clock, with only op execution and data transfers faked, every
//! message round-tripped through the production codec, fault injection and
//! invariant checks. What it shows holds for the product.
//!
//! - [`rng`]: the seeded generator the runs are reproducible from.
//! - [`reference`]: sim tasks (seed, duration, size) and the reference value
//!   of every output; [`GraphBuilder`] builds a graph and evaluates it.
//! - [`generate`]: random graphs of maps, trees, shuffles and chains.
//! - [`config`]: run settings, counters and the error a failed check gives.
//! - `worker`: a virtual worker, the product's state machine plus faked
//!   effects; `wire`: the codec and the mailboxes; [`sim`]: the event loop.

#![warn(missing_docs)]

pub mod config;
pub mod generate;
pub mod reference;
pub mod rng;
pub mod sim;
mod wire;
mod worker;

pub use config::{CheckMode, SimConfig, SimError, SimStats, WorkerSpec};
pub use generate::{GenConfig, random_graph};
pub use reference::{Expected, GraphBuilder, Node, SimGraph, sim_args, value_of};
pub use rng::{Rng, mix};
pub use sim::Sim;
