//! Weft's transport: endpoints that exchange messages of a small control
//! header plus zero-copy data frames.
//!
//! Addresses are URLs: `inproc://NAME` (same process; frames passed by
//! reference), `tcp://HOST:PORT` and `tls://HOST:PORT` (rustls, optionally
//! mutual), and `ucx://HOST:PORT` (UCX: shared memory, TCP, InfiniBand;
//! behind the `ucx` feature, see [`ucx`]). [`Listener`] and [`Receiver`]
//! dispatch over a backend enum, and the sending half ([`Sender`]) over a
//! writer enum.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weft_transport::TransportError> {
//! use weft_transport::{Config, Buffer, Message, connect, listen};
//! let config = Config::default();
//! let mut listener = listen("tcp://127.0.0.1:0", &config).await?;
//! let addr = listener.local_addr().to_string();
//! let client = connect(&addr, &config).await?;
//! let mut server = listener.accept().await?;
//! client.send(Message::new(&b"hello"[..], vec![Buffer::host(vec![0u8; 1 << 20])])).await?;
//! let message = server.recv().await?.expect("a message");
//! assert_eq!(message.frames[0].len(), 1 << 20);
//! # Ok(()) }
//! ```
//!
//! # Wire format
//!
//! Stream backends open with a handshake (magic `WEFT`, protocol version,
//! optional shared-secret token, peer names), then carry messages as
//! little-endian fixed-width lengths followed by the bytes; [`wire`]
//! documents the layout field by field. Writes are vectored straight from
//! the frames; reads land in 64-byte aligned buffers from a reusable
//! [`BufferPool`]. Every length is checked against [`Limits`] before
//! anything of that size is allocated, and a peer that breaks the format
//! or the limits has its connection closed with a typed error naming it,
//! while the listener goes on serving others.
//!
//! # Bounds
//!
//! A listener serves at most [`Config::max_connections`] connections and
//! refuses more as busy (clients retry); each connection has at most one
//! message in flight per direction on streams, and a bounded queue in
//! messages and bytes in process; a connection that makes no progress
//! mid-message for [`Config::io_timeout`] fails instead of hanging.

#![warn(missing_docs)]

mod addr;
mod config;
mod connection;
mod error;
mod inproc;
mod landing;
mod message;
mod pool;
mod sender;
pub mod shm;
mod stream;
mod tcp;
mod tls;
pub mod ucx;
pub mod wire;

pub use addr::{Address, Scheme};
pub use config::Config;
pub use connection::{Connection, Listener, Peer, Receiver, connect, listen};
pub use error::{Result, TransportError};
pub use message::Message;
pub use pool::{BufferPool, PoolStats, PooledBuf};
pub use sender::Sender;
pub use tls::{TlsConfig, TlsFiles};
pub use weft_gpu::Buffer;
pub use wire::{Limits, WireError};
