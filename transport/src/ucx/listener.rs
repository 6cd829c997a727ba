//! `ucx://` listening and dialing: a `ucp_listener` on HOST:PORT, an
//! endpoint (on a worker of its own) per connection request, and the same
//! handshake, busy refusal and connection limit as `tcp://`.

use std::ffi::c_void;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::SockAddr;
use tokio::io::unix::AsyncFd;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};
use ucx_sys as sys;

use super::context::{EventFd, Worker, io_error, socket_addr, status_error, ucs_sock_addr, wait_for_events};
use super::link::{Datagram, Handle, Link};
use super::message::{UcxReceiver, UcxWriter};
use crate::addr::Address;
use crate::config::Config;
use crate::connection::{Connection, Peer, Receiver};
use crate::error::{Result, TransportError};
use crate::sender::{Sender, Writer};
use crate::stream::{ack_verdict, answer, busy_ack, check_hello, handshake_error, with_timeout};
use crate::tcp::{AcceptQueue, MAX_HANDSHAKES, hand_over};
use crate::wire::{self, Part, WireError};

/// Connection requests that the listener's callback queued during progress.
type Requests = Mutex<Vec<ConnRequest>>;

struct ConnRequest(sys::ucp_conn_request_h);

// SAFETY: a connection request is a plain handle, used by the listener's
// task only.
unsafe impl Send for ConnRequest {}

/// The listener's worker and `ucp_listener`, owned by its accept task.
struct Listening {
    /// Deregistered before the worker that owns the fd goes.
    fd: AsyncFd<EventFd>,
    listener: sys::ucp_listener_h,
    requests: Arc<Requests>,
    worker: Worker,
}

// SAFETY: the handles are used by the accept task alone.
unsafe impl Send for Listening {}

impl Drop for Listening {
    fn drop(&mut self) {
        let pending = std::mem::take(&mut *lock(&self.requests));
        for request in pending {
            // SAFETY: a request of this live listener, answered once.
            unsafe { sys::ucp_listener_reject(self.listener, request.0) };
        }
        // SAFETY: the listener is live and destroyed once, before its worker.
        unsafe { sys::ucp_listener_destroy(self.listener) };
    }
}

fn lock(requests: &Requests) -> std::sync::MutexGuard<'_, Vec<ConnRequest>> {
    requests.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs inside the listener worker's progress when a client connects.
///
/// # Safety
///
/// `arg` must point to a live `Requests` queue: UCX passes back the
/// argument `UcxListener::bind` registered, which `Listening` keeps alive.
unsafe extern "C" fn on_conn_request(request: sys::ucp_conn_request_h, arg: *mut c_void) {
    // SAFETY: `arg` is the queue the `Listening` keeps alive (an `Arc`)
    // as long as the listener exists.
    let requests = unsafe { &*arg.cast::<Requests>() };
    lock(requests).push(ConnRequest(request));
}

/// Listens on a `ucx://` address.
pub(crate) async fn bind(addr: &Address, config: &Config) -> Result<AcceptQueue> {
    let local = resolve(addr).await?;
    let worker = Worker::new(&addr.to_string())?;
    let requests = Arc::new(Requests::default());
    let sockaddr = SockAddr::from(local);
    // SAFETY: all-zero parameters are valid; the mask names what is set.
    let mut params: sys::ucp_listener_params_t = unsafe { std::mem::zeroed() };
    params.field_mask = (sys::UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | sys::UCP_LISTENER_PARAM_FIELD_CONN_HANDLER) as u64;
    params.sockaddr = ucs_sock_addr(&sockaddr);
    params.conn_handler = sys::ucp_listener_conn_handler_t {
        cb: Some(on_conn_request),
        arg: Arc::as_ptr(&requests).cast_mut().cast(),
    };
    let mut listener = std::ptr::null_mut();
    // SAFETY: a live worker; the address outlives the call, the queue
    // the listener (see `Listening`); a writable out-pointer.
    let status = unsafe { sys::ucp_listener_create(worker.handle, &params, &mut listener) };
    match status {
        sys::UCS_OK => {}
        sys::UCS_ERR_BUSY => return Err(TransportError::AddrInUse { addr: addr.to_string() }),
        status => {
            return Err(TransportError::Listen {
                addr: addr.to_string(),
                source: status_error(status),
            });
        }
    }
    // SAFETY: `Listening` drops the fd (its first field) before the
    // worker (its last).
    let fd = match unsafe { worker.watch() } {
        Ok(fd) => fd,
        Err(source) => {
            // SAFETY: the listener just created, destroyed once.
            unsafe { sys::ucp_listener_destroy(listener) };
            return Err(TransportError::Listen {
                addr: addr.to_string(),
                source,
            });
        }
    };
    let listening = Listening {
        fd,
        listener,
        requests,
        worker,
    };
    let bound = listening.local_addr().unwrap_or(local);
    let addr = addr.with_location(bound.to_string());
    let config = config.clone();
    Ok(AcceptQueue::spawn(addr, |tx| accept_loop(listening, config, tx)))
}

impl Listening {
    /// The address bound, with the port chosen for port 0.
    fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: an all-zero attribute block is valid.
        let mut attr: sys::ucp_listener_attr_t = unsafe { std::mem::zeroed() };
        attr.field_mask = sys::UCP_LISTENER_ATTR_FIELD_SOCKADDR as u64;
        // SAFETY: a live listener and a writable attribute block.
        let status = unsafe { sys::ucp_listener_query(self.listener, &mut attr) };
        (status == sys::UCS_OK).then(|| socket_addr(&attr.sockaddr)).flatten()
    }

    /// Progresses until a connection request is queued; `None` if the event
    /// fd fails.
    async fn next_requests(&mut self) -> Option<Vec<ConnRequest>> {
        loop {
            self.worker.progress();
            let requests = std::mem::take(&mut *lock(&self.requests));
            if !requests.is_empty() {
                return Some(requests);
            }
            let armed = self.worker.arm();
            if let Err(error) = wait_for_events(&self.fd, armed).await {
                warn!(%error, "UCX listener event fd failed");
                return None;
            }
        }
    }

    /// The client's address, as UCX saw it.
    fn client_addr(request: &ConnRequest) -> String {
        // SAFETY: an all-zero attribute block is valid.
        let mut attr: sys::ucp_conn_request_attr_t = unsafe { std::mem::zeroed() };
        attr.field_mask = sys::UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR as u64;
        // SAFETY: a request not yet accepted or rejected, and a writable block.
        let status = unsafe { sys::ucp_conn_request_query(request.0, &mut attr) };
        let addr = (status == sys::UCS_OK)
            .then(|| socket_addr(&attr.client_address))
            .flatten();
        addr.map_or_else(|| "unknown UCX client".to_string(), |addr| addr.to_string())
    }

    fn reject(&self, request: ConnRequest) {
        // SAFETY: a request of this live listener, answered once.
        unsafe { sys::ucp_listener_reject(self.listener, request.0) };
    }
}

async fn accept_loop(mut listening: Listening, config: Config, accepted: mpsc::Sender<Result<Connection>>) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let config = Arc::new(config);
    while let Some(requests) = listening.next_requests().await {
        for request in requests {
            let remote = Listening::client_addr(&request);
            let Ok(slot) = handshakes.clone().try_acquire_owned() else {
                warn!(%remote, "rejecting a connection: {MAX_HANDSHAKES} handshakes already in progress");
                listening.reject(request);
                continue;
            };
            // Accepted here, on a worker of its own, while the request is
            // still this task's; the handshake then runs on its own task.
            let link = match Worker::new(&remote).and_then(|worker| {
                Link::open(worker, remote.clone(), |params| {
                    params.field_mask |= sys::UCP_EP_PARAM_FIELD_CONN_REQUEST as u64;
                    params.conn_request = request.0;
                })
            }) {
                Ok(link) => link,
                Err(error) => {
                    warn!(%remote, %error, "cannot accept a UCX connection");
                    continue;
                }
            };
            let (permits, config) = (permits.clone(), config.clone());
            hand_over(remote.clone(), slot, accepted.clone(), async move {
                admit(link, &remote, &config, permits).await
            });
        }
    }
}

/// Takes a connection slot and handshakes, or refuses the client as busy.
async fn admit(link: Arc<Handle>, addr: &str, config: &Config, permits: Arc<Semaphore>) -> Result<Option<Connection>> {
    match permits.try_acquire_owned() {
        Ok(permit) => {
            let name = with_timeout(
                config.handshake_timeout,
                addr,
                "handshake",
                server_handshake(&link, config, addr),
            );
            let name = name.await?;
            Ok(Some(connection(link, name, addr, config, Some(permit))))
        }
        Err(_) => {
            warn!(
                addr,
                limit = config.max_connections,
                "refusing a connection: at the connection limit"
            );
            let refuse = async {
                recv_handshake(&link, config, wire::MAX_HELLO_LEN, Part::Hello, addr).await?;
                let mut out = Vec::new();
                wire::encode_ack(&busy_ack(config.max_connections), &mut out);
                link.send_datagram(out, config.handshake_timeout, "handshake").await
            };
            let _ = with_timeout(Duration::from_secs(1), addr, "handshake", refuse).await;
            Ok(None)
        }
    }
}

/// Server side: reads the hello, checks it, answers; the client's name.
async fn server_handshake(link: &Link, config: &Config, addr: &str) -> Result<String> {
    // A client that leaves before saying anything cut its handshake short.
    link.wired_up(config.handshake_timeout, "handshake")
        .await
        .map_err(|error| match error {
            TransportError::Io { .. } => link.gone("handshake"),
            other => other,
        })?;
    let bytes = recv_handshake(link, config, wire::MAX_HELLO_LEN, Part::Hello, addr).await?;
    let verdict = wire::decode_hello_datagram(&bytes)
        .and_then(|hello| check_hello(&hello, config.token_bytes()).map(|()| hello.name))
        .map_err(|source| handshake_error(addr, source));
    if let Some(ack) = answer(&verdict, config) {
        let mut out = Vec::new();
        wire::encode_ack(&ack, &mut out);
        link.send_datagram(out, config.handshake_timeout, "handshake").await?;
    }
    verdict
}

/// Client side: says hello, reads the ack; the server's name.
async fn client_handshake(link: &Link, config: &Config, addr: &str) -> Result<String> {
    let mut hello = Vec::new();
    wire::encode_hello(&config.hello(), &mut hello).map_err(|source| handshake_error(addr, source))?;
    link.wired_up(config.handshake_timeout, "handshake").await?;
    link.send_datagram(hello, config.handshake_timeout, "handshake").await?;
    let bytes = recv_handshake(link, config, wire::MAX_ACK_LEN, Part::Ack, addr).await?;
    let ack = wire::decode_ack_datagram(&bytes).map_err(|source| handshake_error(addr, source))?;
    ack_verdict(ack, addr)
}

/// One handshake datagram of at most `max` bytes.
async fn recv_handshake(link: &Link, config: &Config, max: usize, part: Part, addr: &str) -> Result<Vec<u8>> {
    let deadline = Instant::now() + config.handshake_timeout;
    match link.recv_datagram(max, &config.pool, Some(deadline)).await {
        Ok(Datagram::Got(buf)) => Ok(buf.as_ref().to_vec()),
        Ok(Datagram::TooLong(len)) => Err(handshake_error(
            addr,
            WireError::PartLength {
                part,
                found: len as u64,
                min: 0,
                max: max as u64,
            },
        )),
        // Handshakes are received into host memory, never a device's.
        Ok(Datagram::Gone | Datagram::GotDevice(_)) => Err(link.gone("handshake")),
        Err(_) => Err(TransportError::Timeout {
            peer: addr.to_string(),
            after: config.handshake_timeout,
            during: "handshake",
        }),
    }
}

fn connection(
    link: Arc<Handle>,
    name: String,
    addr: &str,
    config: &Config,
    permit: Option<OwnedSemaphorePermit>,
) -> Connection {
    debug!(peer = name, addr, "connected over UCX");
    let peer = Arc::new(Peer::new(name, addr.to_string()));
    let sender = Sender::new(peer, Writer::Ucx(UcxWriter::new(link.clone(), config)), permit);
    let receiver = Receiver::ucx(UcxReceiver::new(link, config), &sender);
    Connection::new(sender, receiver)
}

/// The socket address of `HOST:PORT`.
pub(crate) async fn resolve(addr: &Address) -> Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host(addr.location())
        .await
        .map_err(|source| io_error(&addr.to_string(), source))?;
    addrs.next().ok_or_else(|| TransportError::InvalidAddress {
        addr: addr.to_string(),
        reason: "the host resolves to no address".into(),
    })
}

/// Creates an endpoint to `addr` on a worker of its own, without a
/// handshake.
pub(crate) async fn dial(addr: &Address) -> Result<Arc<Handle>> {
    let target = SockAddr::from(resolve(addr).await?);
    let peer = addr.to_string();
    let worker = Worker::new(&peer)?;
    Link::open(worker, peer, |params| {
        params.field_mask |= (sys::UCP_EP_PARAM_FIELD_FLAGS | sys::UCP_EP_PARAM_FIELD_SOCK_ADDR) as u64;
        params.flags = sys::UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        params.sockaddr = ucs_sock_addr(&target);
    })
}

/// Dials once and handshakes.
pub(crate) async fn connect(addr: &Address, config: &Config) -> Result<Connection> {
    let link = dial(addr).await?;
    let peer = addr.to_string();
    let name = with_timeout(
        config.handshake_timeout,
        &peer,
        "handshake",
        client_handshake(&link, config, &peer),
    )
    .await?;
    Ok(connection(link, name, &peer, config, None))
}
