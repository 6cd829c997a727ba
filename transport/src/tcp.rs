//! `tcp://` and `tls://`: sockets, the accept loop and dialing.
//!
//! The accept loop runs as its own task and hands each connection to a
//! handshake task, so a slow or hostile client never holds up the others;
//! `Listener::accept` then yields finished connections and failed
//! handshakes in the order they complete.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, warn};

use crate::addr::{Address, Scheme};
use crate::config::Config;
use crate::connection::{Connection, Peer, Receiver};
use crate::error::{Result, TransportError};
use crate::sender::{Sender, Writer};
use crate::stream::{self, StreamReceiver};
use crate::tls::TlsConfig;

/// Finished handshakes waiting for `accept` (every socket-like listener).
pub(crate) const ACCEPTED_QUEUE: usize = 64;
/// Handshakes (and busy refusals) in progress at once; beyond that, new
/// clients are turned away unanswered so a flood cannot exhaust memory.
pub(crate) const MAX_HANDSHAKES: usize = 256;

/// Connections a listener's accept task has handed over, waiting for
/// `accept`; the task stops when this is dropped. TCP, TLS and UCX
/// listeners are each one of these around their own accept loop.
pub(crate) struct AcceptQueue {
    accepted: mpsc::Receiver<Result<Connection>>,
    task: JoinHandle<()>,
    addr: Address,
}

impl AcceptQueue {
    /// Spawns `accept_loop`, which hands connections to the sender it is
    /// given, for the listener bound at `addr`.
    pub(crate) fn spawn<F>(addr: Address, accept_loop: impl FnOnce(mpsc::Sender<Result<Connection>>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let task = tokio::spawn(accept_loop(tx));
        AcceptQueue { accepted, task, addr }
    }

    pub(crate) async fn accept(&mut self) -> Result<Connection> {
        self.accepted.recv().await.unwrap_or_else(|| {
            Err(TransportError::ListenerClosed {
                addr: self.addr.to_string(),
            })
        })
    }

    pub(crate) fn addr(&self) -> &Address {
        &self.addr
    }
}

impl Drop for AcceptQueue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on a `tcp://` or `tls://` address.
pub(crate) async fn bind(addr: &Address, config: &Config) -> Result<AcceptQueue> {
    let acceptor = match addr.scheme() {
        Scheme::Tls => Some(tls_acceptor(config)?),
        _ => None,
    };
    let socket = TcpListener::bind(addr.location()).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            TransportError::AddrInUse { addr: addr.to_string() }
        } else {
            TransportError::Listen {
                addr: addr.to_string(),
                source,
            }
        }
    })?;
    let local = socket.local_addr().map_err(|source| TransportError::Listen {
        addr: addr.to_string(),
        source,
    })?;
    let addr = addr.with_location(local.to_string());
    let config = config.clone();
    Ok(AcceptQueue::spawn(addr, |tx| accept_loop(socket, acceptor, config, tx)))
}

fn tls_acceptor(config: &Config) -> Result<TlsAcceptor> {
    let server = config.tls.as_ref().and_then(|tls| tls.server.clone());
    let server = server.ok_or_else(|| {
        TransportError::TlsConfig("listening on tls:// needs a certificate and its key (TlsFiles::cert, key)".into())
    })?;
    Ok(TlsAcceptor::from(server))
}

async fn accept_loop(
    socket: TcpListener,
    acceptor: Option<TlsAcceptor>,
    config: Config,
    accepted: mpsc::Sender<Result<Connection>>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let config = Arc::new(config);
    loop {
        let (stream, remote) = match socket.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = handshakes.clone().try_acquire_owned() else {
            warn!(%remote, "dropping a connection: {MAX_HANDSHAKES} handshakes already in progress");
            continue;
        };
        tune(&stream);
        let (acceptor, permits) = (acceptor.clone(), permits.clone());
        let (config, accepted) = (config.clone(), accepted.clone());
        hand_over(remote.to_string(), slot, accepted, async move {
            serve(stream, remote, acceptor, &config, permits).await
        });
    }
}

/// Runs a client's handshake on a task of its own and queues the
/// connection (or the reason it was refused) for `accept`; `Ok(None)`: the
/// client was told the listener is busy. `slot` is a handshake slot, held
/// until the handshake is over.
pub(crate) fn hand_over(
    remote: String,
    slot: OwnedSemaphorePermit,
    accepted: mpsc::Sender<Result<Connection>>,
    handshake: impl Future<Output = Result<Option<Connection>>> + Send + 'static,
) {
    tokio::spawn(async move {
        let result = handshake.await;
        drop(slot);
        if let Err(error) = &result {
            warn!(%remote, %error, "refused a connection");
        }
        if let Some(result) = result.transpose() {
            // Nobody listening any more: the connection is dropped.
            let _ = accepted.send(result).await;
        }
    });
}

/// Handshakes an accepted socket, with TLS first when configured.
/// `Ok(None)`: the listener was full and told the client so.
async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    config: &Config,
    permits: Arc<Semaphore>,
) -> Result<Option<Connection>> {
    let addr = remote.to_string();
    match acceptor {
        None => admit(stream, &addr, config, permits).await,
        Some(acceptor) => {
            let tls = tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream))
                .await
                .map_err(|_| TransportError::Timeout {
                    peer: addr.clone(),
                    after: config.handshake_timeout,
                    during: "TLS handshake",
                })?
                .map_err(|source| TransportError::Tls {
                    peer: addr.clone(),
                    source,
                })?;
            admit(tls, &addr, config, permits).await
        }
    }
}

/// Takes a connection slot and handshakes, or refuses the client as busy.
async fn admit<S>(mut stream: S, addr: &str, config: &Config, permits: Arc<Semaphore>) -> Result<Option<Connection>>
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
{
    match permits.try_acquire_owned() {
        Ok(permit) => finish(stream, addr, config, Some(permit), Side::Server).await.map(Some),
        Err(_) => {
            warn!(
                addr,
                limit = config.max_connections,
                "refusing a connection: at the connection limit"
            );
            stream::refuse_busy(&mut stream, addr, config.max_connections).await;
            Ok(None)
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

/// Runs our handshake on a connected stream and splits it into halves.
async fn finish<S>(
    mut stream: S,
    addr: &str,
    config: &Config,
    permit: Option<OwnedSemaphorePermit>,
    side: Side,
) -> Result<Connection>
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
{
    let name = match side {
        Side::Client => stream::client_handshake(&mut stream, config, addr).await?,
        Side::Server => stream::server_handshake(&mut stream, config, addr).await?,
    };
    debug!(peer = name, addr, "connected");
    let (read, write) = tokio::io::split(stream);
    let peer = Arc::new(Peer::new(name, addr.to_string()));
    let sender = Sender::new(peer, Writer::Stream(Box::new(write), config.io_timeout), permit);
    let receiver = Receiver::stream(StreamReceiver::new(Box::new(read), config), &sender);
    Ok(Connection::new(sender, receiver))
}

/// Dials once: TCP connect, TLS if asked, then our handshake.
pub(crate) async fn connect(addr: &Address, config: &Config) -> Result<Connection> {
    let peer = addr.to_string();
    let stream = TcpStream::connect(addr.location())
        .await
        .map_err(|source| TransportError::Io {
            peer: peer.clone(),
            source,
        })?;
    tune(&stream);
    match addr.scheme() {
        Scheme::Tls => {
            let tls = config
                .tls
                .as_ref()
                .ok_or_else(|| TransportError::TlsConfig("connecting to tls:// needs a TLS configuration".into()))?;
            let connector = TlsConnector::from(tls.client.clone());
            let server_name = TlsConfig::server_name(addr.host())?;
            let stream = connector
                .connect(server_name, stream)
                .await
                .map_err(|source| TransportError::Tls {
                    peer: peer.clone(),
                    source,
                })?;
            // TLS 1.3 reports a refused client certificate only after the
            // handshake, as an alert our first read receives.
            finish(stream, &peer, config, None, Side::Client)
                .await
                .map_err(|error| match error {
                    TransportError::Io { peer, source } if source.kind() == std::io::ErrorKind::InvalidData => {
                        TransportError::Tls { peer, source }
                    }
                    other => other,
                })
        }
        _ => finish(stream, &peer, config, None, Side::Client).await,
    }
}

/// How long a connection lives with nothing heard from its peer: keepalive
/// probes start after half of it, and data left unacknowledged for all of
/// it closes the connection.
const SILENT_PEER: Duration = Duration::from_secs(60);

/// No Nagle delay for small control messages; keepalive probes so a peer
/// whose host vanished is noticed between messages, and a user timeout so
/// it is noticed while a message to it goes unacknowledged (without one, a
/// request sent to a peer cut off the network waits for the kernel's
/// retransmissions to give up, about 15 minutes, and a reply never comes).
fn tune(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "cannot set TCP_NODELAY");
    }
    let keepalive = TcpKeepalive::new()
        .with_time(SILENT_PEER / 2)
        .with_interval(SILENT_PEER / 6)
        .with_retries(3);
    let socket = SockRef::from(stream);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
        debug!(%error, "cannot enable TCP keepalive");
    }
    #[cfg(target_os = "linux")]
    if let Err(error) = socket.set_tcp_user_timeout(Some(SILENT_PEER)) {
        debug!(%error, "cannot set TCP_USER_TIMEOUT");
    }
}
