//! `ucx://HOST:PORT`: connections over UCX (shared memory, TCP, and with a
//! suitable UCX build InfiniBand, NVLink and GPU memory), behind the `ucx`
//! feature. Without it this module still compiles and reports
//! [`crate::TransportError::Unsupported`], so the rest of the crate never
//! needs a `cfg`.
//!
//! Design, in short (details in each submodule):
//!
//! - One UCP context per process, created on first use from the `UCX_*`
//!   environment (`UCX_TLS` chooses the transports); one UCP worker per
//!   connection and per listener. A worker per connection keeps tag
//!   matching private to the connection and lets each connection be
//!   progressed, timed out and torn down on its own.
//! - UCP tagged messages, one tag: a message is its head (prelude, frame
//!   table, small header) and a datagram per large header and non-empty
//!   frame, the datagram form of [`crate::wire`]. Large parts go by UCX's
//!   rendezvous protocol, straight from the sender's frame into the
//!   receiver's pooled, 64-byte aligned buffer.
//! - Progress is event-driven: a driver task per worker waits on the
//!   worker's event fd through tokio's `AsyncFd` (`ucp_worker_arm` before
//!   each wait) and wakes the sends and receives of that connection.
//! - The same handshake, busy refusal, limits and timeouts as `tcp://`. A
//!   peer that closes or vanishes is reported by the endpoint's error
//!   callback (fed by the socket of UCX's connection manager), which ends
//!   a message in progress as truncated and a connection between messages
//!   as closed. Endpoints do not ask for `UCP_ERR_HANDLING_MODE_PEER`:
//!   UCX 1.13 then leaves shared memory out of them.
//! - Workarounds for UCX 1.13: nothing is sent before the endpoint is
//!   wired up (sends queued during wire-up can be replayed with a protocol
//!   the final shared-memory lanes refuse), and a worker is never destroyed
//!   while one of its endpoints has a flush pending (UCX aborts the
//!   process); such a worker is leaked instead.
//! - A known UCX 1.13 limit: with shared memory, an endpoint starts on a
//!   TCP lane and moves to shared memory once wired up. If one side gives
//!   up (a handshake timeout) and destroys its worker while the other
//!   side's TCP lane is still connecting to it, UCX on the other side can
//!   abort the process (`uct_tcp_ep_pending_purge`, seen in CI with 200
//!   connections at once under load and 5 s handshake timeouts). Keep
//!   handshake timeouts at their defaults or longer under such loads.
//! - Bounds: a sender waits until UCX is done with each message (for large
//!   parts, until the receiver fetched them), so a well-behaved peer has at
//!   most one message's small parts queued at the receiver. UCX itself,
//!   unlike a TCP window, buffers eager datagrams that arrive before they
//!   are received without limit, so a hostile peer could make a receiver
//!   buffer more: use `tls://` with peers you do not trust.
//! - Sending: a CUDA device frame is handed to UCX as it is when this
//!   process's UCX context reports CUDA memory support (UCX finds the
//!   pointer's memory type itself; see `message::parts` and the README);
//!   otherwise, and for emulated GPUs, it is staged through host memory.
//!   The head's frame table says which frames the sender held on a GPU.
//!   Receiving: a frame the sender held on a GPU, at a receiver whose GPU
//!   ([`crate::Config::gpu`]) is a CUDA GPU and whose UCX handles CUDA
//!   memory, is received straight into a free buffer of that GPU's pool
//!   (UCX picks `cuda_ipc`, `cuda_copy` or the network, with no host hop;
//!   a receive never spills other results to make room). Every
//!   other datagram lands in host memory (the pool's buffers), and a device
//!   frame then moves up to the receiver's GPU when it has one (one
//!   host-to-device copy), else stays there; so does a frame the device
//!   has no room for.
//! - Closing: once both halves are gone, datagrams that arrived with no
//!   one to receive them (typically the peer's close crossing ours) are
//!   received into scratch and dropped, up to the worker's destruction;
//!   UCX 1.13 otherwise warns `unexpected tag-receive descriptor ... was
//!   not matched` for each.

#[cfg(feature = "ucx")]
mod context;
#[cfg(not(feature = "ucx"))]
mod disabled;
#[cfg(feature = "ucx")]
mod link;
#[cfg(feature = "ucx")]
mod listener;
#[cfg(feature = "ucx")]
mod message;
#[cfg(feature = "ucx")]
mod raw;

#[cfg(not(feature = "ucx"))]
pub use disabled::RawPeer;
#[cfg(not(feature = "ucx"))]
pub(crate) use disabled::{UcxReceiver, UcxWriter, bind, connect};
#[cfg(feature = "ucx")]
pub(crate) use listener::{bind, connect};
#[cfg(feature = "ucx")]
pub(crate) use message::{UcxReceiver, UcxWriter};
#[cfg(feature = "ucx")]
pub use raw::RawPeer;
