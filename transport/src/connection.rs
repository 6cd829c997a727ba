//! Connections and listeners: the API every backend shares.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use crate::addr::{Address, Scheme};
use crate::config::Config;
use crate::error::{Result, TransportError};
use crate::inproc::{self, InprocListener, InprocRx};
use crate::message::Message;
use crate::sender::{Sender, Shared};
use crate::stream::StreamReceiver;
use crate::tcp::{self, AcceptQueue};
use crate::ucx::{self, UcxReceiver};

/// Who is at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The name it gave in the handshake.
    pub name: String,
    /// Its address: `IP:PORT` for sockets, the listener's URL in process.
    pub addr: String,
}

impl Peer {
    pub(crate) fn new(name: String, addr: String) -> Self {
        Peer { name, addr }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.addr)
    }
}

/// An open connection to one peer: send and receive whole messages.
pub struct Connection {
    sender: Sender,
    receiver: Receiver,
}

impl Connection {
    pub(crate) fn new(sender: Sender, receiver: Receiver) -> Self {
        Connection { sender, receiver }
    }

    /// The peer.
    pub fn peer(&self) -> &Peer {
        self.sender.peer()
    }

    /// Sends one message; see [`Sender::send`].
    pub async fn send(&self, message: Message) -> Result<()> {
        self.sender.send(message).await
    }

    /// Receives one message; see [`Receiver::recv`].
    pub async fn recv(&mut self) -> Result<Option<Message>> {
        self.receiver.recv().await
    }

    /// Closes gracefully; see [`Sender::close`].
    pub async fn close(&self) -> Result<()> {
        self.sender.close().await
    }

    /// Separates the halves, to send and receive from different tasks.
    pub fn split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }
}

/// Receives messages from one peer.
pub struct Receiver {
    backend: RecvBackend,
    /// The sending half, aborted when receiving fails so that the whole
    /// connection closes.
    shared: Arc<Shared>,
    failed: bool,
}

enum RecvBackend {
    Stream(Box<StreamReceiver>),
    Inproc(InprocRx),
    // Only UCX builds make one.
    #[cfg_attr(not(feature = "ucx"), allow(dead_code))]
    Ucx(Box<UcxReceiver>),
}

impl Receiver {
    pub(crate) fn stream(receiver: StreamReceiver, sender: &Sender) -> Self {
        Self::with(RecvBackend::Stream(Box::new(receiver)), sender)
    }

    pub(crate) fn inproc(receiver: InprocRx, sender: &Sender) -> Self {
        Self::with(RecvBackend::Inproc(receiver), sender)
    }

    #[cfg_attr(not(feature = "ucx"), allow(dead_code))]
    pub(crate) fn ucx(receiver: UcxReceiver, sender: &Sender) -> Self {
        Self::with(RecvBackend::Ucx(Box::new(receiver)), sender)
    }

    fn with(backend: RecvBackend, sender: &Sender) -> Self {
        Receiver {
            backend,
            shared: sender.shared(),
            failed: false,
        }
    }

    /// The peer.
    pub fn peer(&self) -> &Peer {
        &self.shared.peer
    }

    /// The next message, or `Ok(None)` once the peer closed the connection
    /// cleanly. An error (malformed input, a peer gone mid-message, a
    /// stall) closes the whole connection: later calls return
    /// [`TransportError::Closed`] and sends are aborted.
    ///
    /// Cancel-safe: dropping the future loses nothing, and the next call
    /// goes on with the same message.
    pub async fn recv(&mut self) -> Result<Option<Message>> {
        if self.failed {
            return Err(TransportError::Closed {
                peer: self.peer().to_string(),
            });
        }
        let result = match &mut self.backend {
            RecvBackend::Stream(stream) => stream.recv(&self.shared.peer).await,
            RecvBackend::Inproc(inproc) => Ok(inproc.recv().await),
            RecvBackend::Ucx(ucx) => ucx.recv(&self.shared.peer).await,
        };
        if let Err(error) = &result {
            warn!(peer = %self.shared.peer, %error, "closing connection");
            self.failed = true;
            self.shared.abort();
        }
        result
    }
}

/// Accepts connections on one address.
pub struct Listener {
    backend: ListenBackend,
}

enum ListenBackend {
    /// TCP, TLS and UCX: an accept task feeding a queue.
    Queue(AcceptQueue),
    Inproc(Box<InprocListener>),
}

impl Listener {
    /// The address clients connect to, with the port the system chose
    /// when listening on port 0.
    pub fn local_addr(&self) -> Address {
        match &self.backend {
            ListenBackend::Queue(listener) => listener.addr().clone(),
            ListenBackend::Inproc(listener) => Address::inproc(listener.name()),
        }
    }

    /// The next connection. A client that failed its handshake (bad magic,
    /// version or token, a stall) yields its typed error here, and the
    /// listener goes on serving: call `accept` again. Only
    /// [`TransportError::ListenerClosed`] means no more connections.
    pub async fn accept(&mut self) -> Result<Connection> {
        match &mut self.backend {
            ListenBackend::Queue(listener) => listener.accept().await,
            ListenBackend::Inproc(listener) => listener.accept().await,
        }
    }
}

/// Listens on `addr` (`inproc://NAME`, `tcp://HOST:PORT`, `tls://HOST:PORT`,
/// `ucx://HOST:PORT` with the `ucx` feature; port 0 picks a free one). Stops listening when the listener is dropped.
pub async fn listen(addr: &str, config: &Config) -> Result<Listener> {
    let addr: Address = addr.parse()?;
    let backend = match addr.scheme() {
        Scheme::Inproc => ListenBackend::Inproc(Box::new(InprocListener::bind(addr.location(), config)?)),
        Scheme::Tcp | Scheme::Tls => ListenBackend::Queue(tcp::bind(&addr, config).await?),
        Scheme::Ucx => ListenBackend::Queue(ucx::bind(&addr, config).await?),
    };
    Ok(Listener { backend })
}

/// Connects to `addr`, retrying with jittered exponential back-off while
/// the peer is not there yet or busy, until `config.connect_timeout`.
/// A peer that refuses us (token, version, TLS) fails at once.
pub async fn connect(addr: &str, config: &Config) -> Result<Connection> {
    let address: Address = addr.parse()?;
    let start = Instant::now();
    let deadline = start + config.connect_timeout;
    let mut delay = config.initial_backoff;
    let mut attempts = 0;
    let mut previous: Option<TransportError> = None;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(remaining, connect_once(&address, config)).await;
        let error = match attempt {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(error)) if !error.is_retryable() => return Err(error),
            Ok(Err(error)) => error,
            // An attempt cut short by the deadline says less than the one
            // before it (the peer was busy, say).
            Err(_) => previous.take().unwrap_or_else(|| TransportError::Timeout {
                peer: address.to_string(),
                after: remaining,
                during: "connection attempt",
            }),
        };
        let pause = delay.mul_f64(0.5 + fastrand::f64());
        if Instant::now() + pause >= deadline {
            return Err(TransportError::Connect {
                addr: address.to_string(),
                attempts,
                waited: start.elapsed(),
                last: Box::new(error),
            });
        }
        debug!(addr = %address, %error, ?pause, "connect failed; retrying");
        previous = Some(error);
        tokio::time::sleep(pause).await;
        delay = (delay * 2).min(config.max_backoff);
    }
}

async fn connect_once(addr: &Address, config: &Config) -> Result<Connection> {
    match addr.scheme() {
        Scheme::Inproc => inproc::connect(addr.location(), config).await,
        Scheme::Tcp | Scheme::Tls => tcp::connect(addr, config).await,
        Scheme::Ucx => ucx::connect(addr, config).await,
    }
}
