//! Errors of the runtime's reactors, client and local cluster.

use thiserror::Error;
use weft_transport::TransportError;

use crate::ids::Key;
use crate::protocol::TaskError;

/// What can go wrong outside the task graph's own failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// Connecting, listening or talking to a peer failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A peer sent something that does not decode, or breaks the protocol.
    #[error("protocol error with {peer}: {reason}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// The scheduler refused us.
    #[error("the scheduler at {scheduler} refused this {role}: {reason}")]
    Refused {
        /// Its address.
        scheduler: String,
        /// "worker" or "client".
        role: &'static str,
        /// Its reason.
        reason: String,
    },
    /// A shuffle could not finish (see [`crate::shuffle`]).
    #[error("{0}")]
    Shuffle(String),
    /// The graph was refused as a whole.
    #[error("graph rejected: {0}")]
    GraphRejected(String),
    /// A task failed; the error names the key, the op and the worker.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A future was cancelled before its result arrived.
    #[error("{key} was cancelled")]
    Cancelled {
        /// The key.
        key: Key,
    },
    /// The connection to the scheduler is gone.
    #[error("lost the connection to the scheduler at {scheduler}: {reason}")]
    SchedulerLost {
        /// Its address.
        scheduler: String,
        /// What happened.
        reason: String,
    },
    /// No worker could deliver a result that the scheduler said was in
    /// memory.
    #[error("could not gather {key}: {reason}")]
    Gather {
        /// The key.
        key: Key,
        /// What each holder said.
        reason: String,
    },
    /// A data server could not be reached a moment ago, so it is not
    /// tried again for a while (see `data::UNREACHABLE_FOR`): each dead
    /// worker costs one connect timeout, not one per key.
    #[error("worker at {peer} is unreachable (connecting failed {ago:?} ago: {reason})")]
    Unreachable {
        /// Its data address.
        peer: String,
        /// How long ago the connection failed.
        ago: std::time::Duration,
        /// Why it failed.
        reason: String,
    },
    /// Spawning or running a process (local cluster) failed.
    #[error("{what}: {source}")]
    Process {
        /// What was attempted.
        what: String,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The worker's process passed the terminate fraction of its memory
    /// limit (what spilling could not prevent).
    #[error(
        "worker {worker} stopped: its process used more than the terminate fraction of its {limit}-byte memory limit"
    )]
    OutOfMemory {
        /// The worker.
        worker: String,
        /// Its limit in bytes.
        limit: u64,
    },
    /// The worker's GPU can no longer be used (a CUDA sticky error, such
    /// as an illegal address, leaves it so until the process exits).
    #[error("worker {worker} stopped: its GPU {device} cannot be used any more ({reason}); its tasks run elsewhere")]
    GpuLost {
        /// The worker.
        worker: String,
        /// The GPU.
        device: String,
        /// What the device reported.
        reason: String,
    },
    /// Scattering values to workers failed; none of them were kept.
    #[error("could not scatter to worker {worker}: {reason}")]
    Scatter {
        /// The worker (its name; or its scheduler id when only that is known).
        worker: String,
        /// What went wrong.
        reason: String,
    },
    /// A blocking call was made on a thread that runs an async runtime,
    /// which it would stall (or deadlock).
    #[error(
        "blocking {call} called from inside an async runtime, which it would stall; \
         use the async weft_runtime::Client there"
    )]
    InsideRuntime {
        /// The call.
        call: &'static str,
    },
    /// Invalid settings.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl RuntimeError {
    /// A protocol error with `peer`.
    pub fn protocol(peer: &str, reason: impl Into<String>) -> Self {
        RuntimeError::Protocol {
            peer: peer.to_string(),
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of this crate's reactors.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
