//! `inproc://NAME`: endpoints in one process, passing messages by
//! reference through bounded channels.
//!
//! Frames are reference-counted, so nothing is copied. The handshake checks
//! the same version and token as the stream backends, and each direction
//! is bounded both in messages and in payload bytes.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::warn;

use crate::config::Config;
use crate::connection::{Connection, Peer, Receiver};
use crate::error::{Result, TransportError};
use crate::message::Message;
use crate::sender::{Sender, Writer};
use crate::stream::{check_hello, reject_ack};

/// Connections waiting for a listener's `accept`.
const BACKLOG: usize = 128;

/// Listeners of this process by name.
static LISTENERS: LazyLock<Mutex<HashMap<String, Arc<Entry>>>> = LazyLock::new(Default::default);

fn listeners() -> std::sync::MutexGuard<'static, HashMap<String, Arc<Entry>>> {
    // A map of handles stays valid after a panic elsewhere.
    LISTENERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a client needs to connect without waiting for `accept`, as a
/// kernel's listen backlog allows for sockets.
struct Entry {
    arrivals: mpsc::Sender<Result<Connection>>,
    permits: Arc<Semaphore>,
    config: Config,
}

/// A message and the byte credit it holds until the peer takes it.
type Envelope = (Message, OwnedSemaphorePermit);

/// The sending side of one direction.
pub(crate) struct InprocTx {
    tx: mpsc::Sender<Envelope>,
    credit: Arc<Semaphore>,
    max_credit: usize,
}

impl InprocTx {
    /// Waits for byte credit and queue room, then hands the message over.
    pub(crate) async fn send(&self, message: Message, peer: &Peer) -> Result<()> {
        let closed = || TransportError::Closed { peer: peer.to_string() };
        // A message larger than the whole budget waits for all of it.
        let cost = message.payload_len().min(self.max_credit);
        let permit = self
            .credit
            .clone()
            .acquire_many_owned(cost as u32)
            .await
            .map_err(|_| closed())?;
        self.tx.send((message, permit)).await.map_err(|_| closed())
    }
}

/// The receiving side of one direction.
pub(crate) struct InprocRx {
    rx: mpsc::Receiver<Envelope>,
}

impl InprocRx {
    /// The next message, `None` once the peer closed or went away.
    pub(crate) async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await.map(|(message, _credit)| message)
    }
}

fn channel(config: &Config) -> (InprocTx, InprocRx) {
    let (tx, rx) = mpsc::channel(config.inproc_queue.max(1));
    let max_credit = config.inproc_max_in_flight_bytes.clamp(1, u32::MAX as usize);
    let tx = InprocTx {
        tx,
        credit: Arc::new(Semaphore::new(max_credit)),
        max_credit,
    };
    (tx, InprocRx { rx })
}

fn endpoint(peer: Peer, tx: InprocTx, rx: InprocRx, permit: Option<OwnedSemaphorePermit>) -> Connection {
    let sender = Sender::new(Arc::new(peer), Writer::Inproc(Some(tx)), permit);
    let receiver = Receiver::inproc(rx, &sender);
    Connection::new(sender, receiver)
}

/// Accepts `inproc://` connections under one name; the name is free again
/// when this is dropped.
pub(crate) struct InprocListener {
    name: String,
    entry: Arc<Entry>,
    arrivals: mpsc::Receiver<Result<Connection>>,
}

impl InprocListener {
    pub(crate) fn bind(name: &str, config: &Config) -> Result<Self> {
        let mut listeners = listeners();
        if listeners.contains_key(name) {
            return Err(TransportError::AddrInUse {
                addr: format!("inproc://{name}"),
            });
        }
        let (tx, arrivals) = mpsc::channel(BACKLOG);
        let entry = Arc::new(Entry {
            arrivals: tx,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            config: config.clone(),
        });
        listeners.insert(name.to_string(), entry.clone());
        Ok(InprocListener {
            name: name.to_string(),
            entry,
            arrivals,
        })
    }

    /// The next connection, or the typed reason a client was refused.
    pub(crate) async fn accept(&mut self) -> Result<Connection> {
        self.arrivals.recv().await.unwrap_or_else(|| {
            Err(TransportError::ListenerClosed {
                addr: format!("inproc://{}", self.name),
            })
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for InprocListener {
    fn drop(&mut self) {
        let mut listeners = listeners();
        if listeners
            .get(&self.name)
            .is_some_and(|entry| Arc::ptr_eq(entry, &self.entry))
        {
            listeners.remove(&self.name);
        }
    }
}

/// Connects to the listener registered under `name`: checks the hello
/// against the listener's settings and queues the server's end for its
/// `accept`.
pub(crate) async fn connect(name: &str, config: &Config) -> Result<Connection> {
    let addr = format!("inproc://{name}");
    let refused = || TransportError::Io {
        peer: addr.clone(),
        source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no listener by this name"),
    };
    let entry = listeners().get(name).cloned().ok_or_else(refused)?;
    let server = &entry.config;
    let hello = config.hello();
    if let Err(source) = check_hello(&hello, server.token_bytes()) {
        let reason = reject_ack(&source).map_or_else(|| source.to_string(), |ack| ack.text);
        // The listener hears of it too, as a socket listener would.
        let _ = entry.arrivals.try_send(Err(TransportError::Handshake {
            peer: hello.name,
            source,
        }));
        return Err(TransportError::Rejected {
            peer: addr,
            reason,
            retryable: false,
        });
    }
    let Ok(permit) = entry.permits.clone().try_acquire_owned() else {
        warn!(
            listener = name,
            client = hello.name,
            "refusing inproc connection: at the connection limit"
        );
        return Err(TransportError::Rejected {
            peer: addr,
            reason: format!("busy: at the limit of {} connections", server.max_connections),
            retryable: true,
        });
    };
    let (to_client, from_server) = channel(server);
    let (to_server, from_client) = channel(config);
    let ours = endpoint(
        Peer::new(server.name.clone(), addr.clone()),
        to_server,
        from_server,
        None,
    );
    let theirs = endpoint(
        Peer::new(hello.name, addr.clone()),
        to_client,
        from_client,
        Some(permit),
    );
    entry.arrivals.send(Ok(theirs)).await.map_err(|_| refused())?;
    Ok(ours)
}
