//! `inproc://NAME`: endpoints in one process, passing messages by
//! reference through bounded channels.
//!
//! Frames are reference-counted, so nothing is copied. The handshake checks
//! the same version and token as the stream backends, and each direction
//! is bounded both in messages and in payload bytes.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::warn;

use crate::config::Config;
use crate::connection::{Connection, Peer, Receiver};
use crate::error::{Result, TransportError};
use crate::frame::Message;
use crate::sender::{Sender, Writer};
use crate::stream::{check_hello, reject_ack};
use crate::wire::{self, Hello};

/// Dials waiting for a listener's `accept`.
const BACKLOG: usize = 128;

/// Listeners of this process by name.
static LISTENERS: LazyLock<Mutex<HashMap<String, mpsc::Sender<Dial>>>> =
    LazyLock::new(Default::default);

fn listeners() -> std::sync::MutexGuard<'static, HashMap<String, mpsc::Sender<Dial>>> {
    // A map of channel handles stays valid after a panic elsewhere.
    LISTENERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A client's request to connect.
struct Dial {
    hello: Hello,
    reply: oneshot::Sender<Result<Connection>>,
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
        let closed = || TransportError::Closed {
            peer: peer.to_string(),
        };
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
    let max_credit = config
        .inproc_max_in_flight_bytes
        .clamp(1, u32::MAX as usize);
    let tx = InprocTx {
        tx,
        credit: Arc::new(Semaphore::new(max_credit)),
        max_credit,
    };
    (tx, InprocRx { rx })
}

fn endpoint(
    peer: Peer,
    tx: InprocTx,
    rx: InprocRx,
    permit: Option<OwnedSemaphorePermit>,
) -> Connection {
    let sender = Sender::new(Arc::new(peer), Writer::Inproc(Some(tx)), permit);
    let receiver = Receiver::inproc(rx, &sender);
    Connection::new(sender, receiver)
}

/// Accepts `inproc://` connections under one name; the name is free again
/// when this is dropped.
pub(crate) struct InprocListener {
    name: String,
    dials: mpsc::Receiver<Dial>,
    registered: mpsc::Sender<Dial>,
    permits: Arc<Semaphore>,
    config: Config,
}

impl InprocListener {
    pub(crate) fn bind(name: &str, config: &Config) -> Result<Self> {
        let mut listeners = listeners();
        if listeners.get(name).is_some_and(|tx| !tx.is_closed()) {
            return Err(TransportError::AddrInUse {
                addr: format!("inproc://{name}"),
            });
        }
        let (registered, dials) = mpsc::channel(BACKLOG);
        listeners.insert(name.to_string(), registered.clone());
        Ok(InprocListener {
            name: name.to_string(),
            dials,
            registered,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            config: config.clone(),
        })
    }

    /// The next connection, or the typed reason a client was refused.
    pub(crate) async fn accept(&mut self) -> Result<Connection> {
        loop {
            let Some(dial) = self.dials.recv().await else {
                return Err(TransportError::ListenerClosed {
                    addr: format!("inproc://{}", self.name),
                });
            };
            let client = dial.hello.name.clone();
            if let Err(source) = check_hello(&dial.hello, self.config.token_bytes()) {
                let reason = reject_ack(&source).map_or_else(|| source.to_string(), |ack| ack.text);
                let _ = dial.reply.send(Err(TransportError::Rejected {
                    peer: format!("inproc://{}", self.name),
                    reason,
                    retryable: false,
                }));
                return Err(TransportError::Handshake {
                    peer: client,
                    source,
                });
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                warn!(listener = %self.name, client, "refusing inproc connection: at the connection limit");
                let _ = dial.reply.send(Err(TransportError::Rejected {
                    peer: format!("inproc://{}", self.name),
                    reason: format!(
                        "busy: at the limit of {} connections",
                        self.config.max_connections
                    ),
                    retryable: true,
                }));
                continue;
            };
            let (to_client, from_server) = channel(&self.config);
            let (to_server, from_client) = channel(&self.config);
            let ours = endpoint(
                Peer::new(client.clone(), format!("inproc://{}", self.name)),
                to_client,
                from_client,
                Some(permit),
            );
            let theirs = endpoint(
                Peer::new(self.config.name.clone(), format!("inproc://{}", self.name)),
                to_server,
                from_server,
                None,
            );
            // A client that gave up in the meantime is simply not served.
            if dial.reply.send(Ok(theirs)).is_ok() {
                return Ok(ours);
            }
        }
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
            .is_some_and(|tx| tx.same_channel(&self.registered))
        {
            listeners.remove(&self.name);
        }
    }
}

/// Connects to the listener registered under `name`.
pub(crate) async fn connect(name: &str, config: &Config) -> Result<Connection> {
    let addr = format!("inproc://{name}");
    let dials = listeners().get(name).cloned();
    let refused = || TransportError::Io {
        peer: addr.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "no listener by this name",
        ),
    };
    let dials = dials.ok_or_else(refused)?;
    let (reply, answer) = oneshot::channel();
    let hello = Hello {
        version: wire::PROTOCOL_VERSION,
        token: config.token_bytes().to_vec(),
        name: config.name.clone(),
    };
    dials
        .send(Dial { hello, reply })
        .await
        .map_err(|_| refused())?;
    answer.await.map_err(|_| refused())?
}
