//! Settings shared by listeners and connections.

use std::sync::Arc;
use std::time::Duration;

use weft_gpu::Gpu;

use crate::pool::BufferPool;
use crate::tls::TlsConfig;
use crate::wire::{Hello, Limits, PROTOCOL_VERSION};

/// How an endpoint listens, connects and bounds what it accepts.
///
/// The defaults suit a cluster on one trusted network; set `token` (or
/// TLS with client certificates) anywhere else.
#[derive(Clone)]
pub struct Config {
    /// Our name in handshakes, shown in the peer's logs and errors.
    pub name: String,
    /// Shared secret a client must present; `None` accepts any client
    /// and sends no token.
    pub token: Option<Vec<u8>>,
    /// Largest header, frame and message accepted.
    pub limits: Limits,
    /// Connections (including handshakes in progress) a listener serves
    /// at once; further clients are refused as busy and retry.
    pub max_connections: usize,
    /// How long `connect` keeps retrying before it gives up.
    pub connect_timeout: Duration,
    /// First retry delay of `connect`; it doubles up to `max_backoff`,
    /// each delay jittered by up to ±50%.
    pub initial_backoff: Duration,
    /// Longest delay between two connection attempts.
    pub max_backoff: Duration,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// How long a connection may make no progress in the middle of a
    /// message, sending or receiving, before it is failed. Idle time
    /// between messages is not limited here; liveness between messages is
    /// the runtime's heartbeat. Over `ucx://`, where a frame arrives whole
    /// or not at all, progress is counted in whole parts (head, frames).
    pub io_timeout: Duration,
    /// Messages an `inproc://` connection buffers in each direction.
    pub inproc_queue: usize,
    /// Payload bytes an `inproc://` connection buffers in each direction.
    pub inproc_max_in_flight_bytes: usize,
    /// Certificates for `tls://`.
    pub tls: Option<TlsConfig>,
    /// Where received frames are allocated.
    pub pool: BufferPool,
    /// The GPU that frames a peer sent from device memory are received
    /// into (a GPU worker's own); `None` receives them into host memory.
    /// Host frames always land in host memory.
    pub gpu: Option<Arc<Gpu>>,
    /// Whether peers on this host exchange large host frames through
    /// shared memory (mapped, not copied) instead of the socket.
    pub shared_memory: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: format!("weft-{}", std::process::id()),
            token: None,
            limits: Limits::default(),
            max_connections: 4096,
            connect_timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
            inproc_queue: 1024,
            inproc_max_in_flight_bytes: 1 << 30,
            tls: None,
            pool: BufferPool::default(),
            gpu: None,
            shared_memory: true,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Everything but the secret, which must not reach logs.
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("tls", &self.tls)
            .field("gpu", &self.gpu.as_ref().map(|g| g.device()))
            .field("shared_memory", &self.shared_memory)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The token bytes to send and expect (empty when there is none).
    pub(crate) fn token_bytes(&self) -> &[u8] {
        self.token.as_deref().unwrap_or_default()
    }

    /// The hello a client with these settings says.
    pub(crate) fn hello(&self) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            token: self.token_bytes().to_vec(),
            name: self.name.clone(),
        }
    }
}
