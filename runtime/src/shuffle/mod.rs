//! The P2P shuffle service: pieces of partitions move worker to worker
//! outside the task graph (Dask's P2P shuffle), so a shuffle of `n` inputs
//! into `m` outputs is `n + m + 2` tasks, not `n * m`.
//!
//! A `plan` task holds the shuffle's [`ShuffleSpec`] (its id, run and the
//! workers that own the outputs: output `j` belongs to `workers[j % len]`).
//! Each `transfer` task splits its input with a collection's op, cuts the
//! result into one piece per output with the collection's piece op and
//! pushes every piece to its owner through the data plane ([`Service`]);
//! it finishes once every push is acknowledged. A `barrier` task depends on
//! every transfer; each `unpack` task depends on the barrier, is pinned to
//! its output's owner and hands the pieces that arrived there, in input
//! order, to the collection's combine op. Received pieces live in the
//! worker's store, so they count against its memory and spill to disk.
//!
//! A shuffle whose owner is lost is restarted by whoever submitted it, as a
//! new run of the same id over the workers still there ([`owner_lost`]
//! says when); a worker drops the pieces of a run as soon as a newer run
//! of that shuffle reaches it, and refuses pushes of older runs.

mod graph;
mod ops;
mod restart;
mod service;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::SharedStr;

pub use graph::{ShuffleTasks, tasks};
pub use ops::{BARRIER_OP, OP_PREFIX, PLAN_OP, TRANSFER_OP, UNPACK_OP, register};
pub use restart::{MAX_RUNS, compute, owner_lost};
pub use service::{Push, PushReply, Service};

/// One shuffle run: what every transfer task reads from the plan task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuffleSpec {
    /// The shuffle, the same in every run of it.
    pub id: u64,
    /// The run: a restart has a larger one, and pieces of smaller runs are
    /// dropped.
    pub run: u64,
    /// Input partitions.
    pub inputs: u32,
    /// Output partitions.
    pub outputs: u32,
    /// Data addresses of the workers owning the outputs, round robin.
    pub workers: Vec<SharedStr>,
}

impl ShuffleSpec {
    /// The data address of the worker that owns `output`; `None` with no
    /// workers.
    pub fn owner(&self, output: u32) -> Option<&SharedStr> {
        match self.workers.len() {
            0 => None,
            n => self.workers.get(output as usize % n),
        }
    }
}

/// A collection's op and its serialized arguments (see
/// [`crate::ops::args`]), called by the shuffle's ops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The op's name in the registry.
    pub op: String,
    /// Its arguments.
    pub args: Bytes,
}
