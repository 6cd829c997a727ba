//! One UCX connection: a worker of its own, one endpoint, and a driver
//! task that progresses the worker whenever its event fd fires.
//!
//! Everything on a connection travels as datagrams (UCP tagged messages)
//! under one tag: the worker serves no other endpoint, so tag matching is
//! only ever about order, which UCP keeps per endpoint. Receives probe the
//! next datagram's length first, so it is checked against the limits
//! before a buffer is taken for it.
//!
//! The driver is the only task that waits on the event fd (`AsyncFd`):
//! it progresses, re-arms the fd with `ucp_worker_arm`, and wakes the
//! sends and receives waiting on this connection, which then check their
//! own requests. They post requests themselves under the worker's lock
//! and signal the driver when one is left in flight. A dedicated progress
//! thread would cost a thread per connection and two hand-overs per
//! message; busy polling would burn a core per connection. Here an idle
//! connection costs nothing, and a 64 MiB frame costs a few wake-ups.

use std::ffi::c_void;
use std::io;
use std::pin::pin;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicI8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;
use ucx_sys as sys;

use super::context::{Armed, EventFd, Worker, io_error, status_error, wait_for_events};
use crate::error::{Result, TransportError};
use crate::pool::{BufferPool, PooledBuf};

/// The one tag of every datagram ("WEFT" and a format number).
const TAG: sys::ucp_tag_t = 0x5745_4654_0000_0001;
/// Tags must match exactly.
const TAG_MASK: sys::ucp_tag_t = u64::MAX;
/// How long closing an endpoint may wait for its last sends to flush.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the memory of abandoned sends outlives their connection.
const ABANDONED_GRACE: Duration = Duration::from_secs(30);
/// Bytes of scratch a datagram nobody will read is received into.
const DISCARD_SCRATCH: usize = 64;

/// A connection's worker and endpoint, shared by its halves and its driver.
pub(crate) struct Link {
    state: Mutex<State>,
    /// Woken after each round of progress.
    progressed: Notify,
    /// Told when the last handle is gone.
    shutdown: Notify,
    failure: Arc<Failure>,
    /// The peer's address, for errors.
    pub(crate) addr: String,
}

/// What the lock guards: every UCX call on this worker is made under it.
pub(crate) struct State {
    worker: Option<Worker>,
    ep: sys::ucp_ep_h,
    /// Requests whose owner gave up on them, with the memory they use.
    parked: Vec<Op>,
    /// A send was abandoned half-way: close without flushing.
    torn: bool,
    /// The endpoint's close, while it is under way.
    closing: Option<Request>,
    /// The endpoint finished wiring up (see [`Link::wired_up`]).
    wired: bool,
    /// Memory of sends abandoned half-way. Over shared memory the peer may
    /// still copy a large part straight out of it (CMA) after this side
    /// has closed, so it is freed only [`ABANDONED_GRACE`] after the worker
    /// is gone, never while the peer could read it as a message. Device
    /// memory of receives left unfinished waits here too (see `Drop`).
    abandoned: Vec<Keep>,
}

// SAFETY: the endpoint handle is only used under the lock, with its worker.
unsafe impl Send for State {}

/// The status the endpoint failed with, set by UCX's error callback.
struct Failure(AtomicI8);

/// The halves' share of a link: when the last is dropped, the driver
/// closes the endpoint and destroys the worker.
pub(crate) struct Handle(Arc<Link>);

impl std::ops::Deref for Handle {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.shutdown.notify_one();
    }
}

/// What became of a receive.
pub(crate) enum Datagram {
    /// It arrived whole, in this buffer.
    Got(PooledBuf),
    /// It arrived whole, in this device memory (asked for by passing a GPU
    /// to [`State::next_datagram`]).
    GotDevice(weft_gpu::DeviceBuffer),
    /// It is longer than allowed (this long) and was left unreceived.
    TooLong(usize),
    /// The endpoint failed (the peer closed or vanished) with nothing more
    /// to receive.
    Gone,
}

/// A UCX request in flight.
struct Request(NonNull<c_void>);

// SAFETY: a request is only touched under its worker's lock.
unsafe impl Send for Request {}
// SAFETY: a shared `&Request` gives access to nothing; every use of the
// handle goes through the worker's lock.
unsafe impl Sync for Request {}

/// What must stay alive while a request uses it.
pub(crate) enum Keep {
    /// A receive buffer.
    Buf(PooledBuf),
    /// Bytes being sent.
    Bytes(#[expect(dead_code, reason = "held, not read: UCX reads it")] Bytes),
    /// An encoded head or handshake being sent.
    Vec(#[expect(dead_code, reason = "held, not read: UCX reads it")] Vec<u8>),
    /// Device memory being sent or received by a UCX that handles CUDA
    /// memory.
    Device(weft_gpu::DeviceBuffer),
}

/// Parameters of a send or receive of memory `keep` owns: contiguous
/// bytes, no callback, and for device memory its type, so that UCX need
/// not detect it (its memory-type cache can take GPU memory for host
/// memory, UCX's FAQ warns).
fn request_params(keep: &Keep) -> sys::ucp_request_param_t {
    // SAFETY: all-zero parameters (no callback, contiguous bytes) are valid.
    let mut param: sys::ucp_request_param_t = unsafe { std::mem::zeroed() };
    if matches!(keep, Keep::Device(_)) {
        param.op_attr_mask |= sys::UCP_OP_ATTR_FIELD_MEMORY_TYPE;
        param.memory_type = sys::UCS_MEMORY_TYPE_CUDA;
    }
    param
}

/// A send or receive, finished or in flight, with its memory.
pub(crate) struct Op {
    request: Option<Request>,
    keep: Keep,
    /// An endpoint flush: its endpoint cannot be destroyed while it is
    /// pending (see `State::drop`).
    flush: bool,
}

impl Op {
    /// What was received, once the receive finished.
    pub(crate) fn into_received(self) -> Option<Datagram> {
        match (self.request, self.keep) {
            (None, Keep::Buf(buf)) => Some(Datagram::Got(buf)),
            (None, Keep::Device(buffer)) => Some(Datagram::GotDevice(buffer)),
            _ => None,
        }
    }
}

/// Runs as the endpoint's error handler, inside `ucp_worker_progress`.
///
/// # Safety
///
/// `arg` must point to a live `Failure`: UCX passes back the argument
/// `Link::open` registered, which the link keeps alive.
unsafe extern "C" fn on_error(arg: *mut c_void, _ep: sys::ucp_ep_h, status: sys::ucs_status_t) {
    // SAFETY: `arg` is the `Failure` the link keeps alive (in an `Arc` its
    // state outlives) until the endpoint is closed.
    let failure = unsafe { &*arg.cast::<Failure>() };
    let _ = failure
        .0
        .compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire);
}

impl Link {
    /// Creates the endpoint on `worker` (`configure` adds the address or
    /// the connection request) and starts the driver.
    pub(crate) fn open(
        worker: Worker,
        addr: String,
        configure: impl FnOnce(&mut sys::ucp_ep_params_t),
    ) -> Result<Arc<Handle>> {
        let failure = Arc::new(Failure(AtomicI8::new(0)));
        // SAFETY: all-zero parameters are valid; the mask names what is set.
        let mut params: sys::ucp_ep_params_t = unsafe { std::mem::zeroed() };
        params.field_mask = (sys::UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | sys::UCP_EP_PARAM_FIELD_ERR_HANDLER) as u64;
        // Not UCP_ERR_HANDLING_MODE_PEER: UCX 1.13 leaves shared memory out
        // of endpoints that ask for it (only TCP and the like remain). A
        // peer that closes or dies is still reported to `on_error`, by the
        // connection manager whose socket the client-server setup keeps.
        params.err_mode = sys::UCP_ERR_HANDLING_MODE_NONE;
        params.err_handler = sys::ucp_err_handler_t {
            cb: Some(on_error),
            arg: Arc::as_ptr(&failure).cast_mut().cast(),
        };
        configure(&mut params);
        let mut ep = ptr::null_mut();
        // SAFETY: a live worker, parameters whose pointers (address, error
        // argument) outlive the call or, for the error argument, the
        // endpoint; a writable out-pointer.
        let status = unsafe { sys::ucp_ep_create(worker.handle, &params, &mut ep) };
        if status != sys::UCS_OK {
            return Err(io_error(&addr, status_error(status)));
        }
        // SAFETY: the `Driver` holding the fd drops it before its link,
        // whose state owns the worker.
        let fd = unsafe { worker.watch() };
        let state = State {
            worker: Some(worker),
            ep,
            parked: Vec::new(),
            torn: false,
            closing: None,
            wired: false,
            abandoned: Vec::new(),
        };
        let fd = fd.map_err(|source| io_error(&addr, source))?;
        let link = Arc::new(Link {
            state: Mutex::new(state),
            progressed: Notify::new(),
            shutdown: Notify::new(),
            failure,
            addr,
        });
        tokio::spawn(drive(Driver { fd, link: link.clone() }));
        Ok(Arc::new(Handle(link)))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // The state is handles and lists, valid after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The status the endpoint failed with, if it did (the peer closed,
    /// vanished or could not be reached).
    pub(crate) fn failure(&self) -> Option<io::Error> {
        match self.failure.0.load(Ordering::Acquire) {
            0 => None,
            status => Some(status_error(status)),
        }
    }

    /// Waits until `poll` is ready, checking it after each round of
    /// progress; `Err` when `deadline` passes first.
    pub(crate) async fn wait<T>(
        &self,
        deadline: Option<Instant>,
        mut poll: impl FnMut(&mut State) -> Poll<T>,
    ) -> Result<T, tokio::time::error::Elapsed> {
        loop {
            let mut notified = pin!(self.progressed.notified());
            notified.as_mut().enable();
            if let Poll::Ready(value) = poll(&mut self.lock()) {
                return Ok(value);
            }
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, notified).await?,
                None => notified.await,
            }
        }
    }

    /// Waits until the endpoint is wired up: UCX 1.13 replays sends that
    /// were queued during wire-up with the protocol chosen for the lanes
    /// of before (TCP), which the final lanes (shared memory) may refuse
    /// ("Invalid am_short length"). Flushing completes once the endpoint
    /// is connected, so nothing is sent before that.
    pub(crate) async fn wired_up(&self, timeout: Duration, during: &'static str) -> Result<()> {
        let op = {
            let mut state = self.lock();
            state.flush().map_err(|e| io_error(&self.addr, e))?
        };
        Ops::new(self, vec![op]).finish(timeout, &self.addr, during).await?;
        self.lock().wired = true;
        Ok(())
    }

    /// The error for a peer that went away during a handshake or message:
    /// refused (never there), or the exchange was cut short.
    pub(crate) fn gone(&self, during: &'static str) -> TransportError {
        match self.failure() {
            Some(source) if source.kind() == io::ErrorKind::ConnectionRefused => io_error(&self.addr, source),
            _ => TransportError::Truncated {
                peer: self.addr.clone(),
                during,
            },
        }
    }

    /// Sends one datagram and waits until it is out (`io_timeout` without
    /// completion fails it).
    pub(crate) async fn send_datagram(&self, bytes: Vec<u8>, timeout: Duration, during: &'static str) -> Result<()> {
        let op = {
            let mut state = self.lock();
            let (ptr, len) = (bytes.as_ptr(), bytes.len());
            state
                .send(ptr, len, Keep::Vec(bytes))
                .map_err(|e| io_error(&self.addr, e))?
        };
        Ops::new(self, vec![op]).finish(timeout, &self.addr, during).await
    }

    /// Receives the next datagram, of at most `max` bytes; see
    /// [`State::next_datagram`]. `Err` when `deadline` passes first.
    pub(crate) async fn recv_datagram(
        &self,
        max: usize,
        pool: &BufferPool,
        deadline: Option<Instant>,
    ) -> Result<Datagram, tokio::time::error::Elapsed> {
        let mut op = None;
        let result = self
            .wait(deadline, |state| {
                state.next_datagram(&mut op, max, pool, None, self.failure().is_some())
            })
            .await;
        if let Some(op) = op {
            self.park(op, true);
        }
        result
    }

    /// Hands an unfinished operation to the link, which frees it (and the
    /// memory it uses) once UCX is done with it; receives are cancelled.
    pub(crate) fn park(&self, op: Op, cancel: bool) {
        let mut state = self.lock();
        state.park(op, cancel);
    }
}

impl State {
    fn worker(&mut self) -> io::Result<&mut Worker> {
        self.worker.as_mut().ok_or_else(|| status_error(sys::UCS_ERR_CANCELED))
    }

    /// Starts sending `len` bytes at `ptr`, which `keep` holds alive:
    /// host memory, or CUDA device memory when the context reports CUDA
    /// support.
    pub(crate) fn send(&mut self, ptr: *const u8, len: usize, keep: Keep) -> io::Result<Op> {
        self.worker()?;
        if self.ep.is_null() {
            return Err(status_error(sys::UCS_ERR_CANCELED));
        }
        let param = request_params(&keep);
        // SAFETY: a live endpoint under the lock; `ptr..ptr+len` is owned by
        // `keep`, which lives until the request completes (in the returned
        // `Op`, or parked with the link until then).
        let request = unsafe { sys::ucp_tag_send_nbx(self.ep, ptr.cast(), len, TAG, &param) };
        self.started(request, keep)
    }

    /// Starts flushing the endpoint.
    fn flush(&mut self) -> io::Result<Op> {
        self.worker()?;
        if self.ep.is_null() {
            return Err(status_error(sys::UCS_ERR_CANCELED));
        }
        // SAFETY: all-zero parameters are valid.
        let param: sys::ucp_request_param_t = unsafe { std::mem::zeroed() };
        // SAFETY: a live endpoint under the lock.
        let request = unsafe { sys::ucp_ep_flush_nbx(self.ep, &param) };
        let mut op = self.started(request, Keep::Vec(Vec::new()))?;
        op.flush = true;
        Ok(op)
    }

    /// The length of the next datagram, if one has arrived.
    fn probe(&mut self) -> Option<usize> {
        let worker = self.worker().ok()?;
        // SAFETY: an all-zero info block is valid.
        let mut info: sys::ucp_tag_recv_info_t = unsafe { std::mem::zeroed() };
        // SAFETY: a live worker under the lock; `remove = 0` leaves the
        // message queued for the receive that follows.
        let message = unsafe { sys::ucp_tag_probe_nb(worker.handle, TAG, TAG_MASK, 0, &mut info) };
        (!message.is_null()).then_some(info.length)
    }

    /// Starts receiving the next datagram into `buf`, which is exactly as
    /// long as [`State::probe`] said: the receive matches the datagram
    /// probed, the first in line, since the lock is held in between.
    fn recv(&mut self, mut buf: PooledBuf) -> io::Result<Op> {
        let slice = buf.as_mut_slice();
        let (ptr, len) = (slice.as_mut_ptr(), slice.len());
        self.post_recv(ptr, len, Keep::Buf(buf))
    }

    /// Starts receiving the next datagram into `len` bytes at `ptr`, which
    /// `keep` owns.
    fn post_recv(&mut self, ptr: *mut u8, len: usize, keep: Keep) -> io::Result<Op> {
        let worker = self.worker()?.handle;
        let param = request_params(&keep);
        // SAFETY: a live worker under the lock; the memory is owned by
        // `keep`, in the returned `Op` (or parked with the link) until the
        // request is done, and UCX writes into it only while this worker
        // progresses.
        let request = unsafe { sys::ucp_tag_recv_nbx(worker, ptr.cast(), len, TAG, TAG_MASK, &param) };
        self.started(request, keep)
    }

    /// Receives and drops every datagram that arrived with no one left to
    /// receive it (the peer's close datagram crossing ours, say): UCX 1.13
    /// warns `unexpected tag-receive descriptor ... was not matched` for
    /// each one still queued when the worker is destroyed. Only called
    /// once both halves are gone. Each lands in a few bytes of scratch; a
    /// longer one completes truncated, which frees it as well.
    fn discard_unexpected(&mut self) {
        while self.probe().is_some() {
            let mut scratch = vec![0u8; DISCARD_SCRATCH];
            let ptr = scratch.as_mut_ptr();
            match self.post_recv(ptr, DISCARD_SCRATCH, Keep::Vec(scratch)) {
                Ok(op) => self.parked.push(op),
                Err(_) => return,
            }
        }
    }

    /// One step of receiving the next datagram of at most `max` bytes into
    /// `op` (which keeps the receive in flight between steps, so waiting
    /// for it can be cancelled and resumed): into memory of `device` when
    /// given and it has room (for a UCX that handles CUDA memory), else of
    /// `pool`. `failed`: the endpoint failed.
    pub(crate) fn next_datagram(
        &mut self,
        op: &mut Option<Op>,
        max: usize,
        pool: &BufferPool,
        device: Option<&Arc<weft_gpu::Gpu>>,
        failed: bool,
    ) -> Poll<Datagram> {
        let current = match op {
            Some(current) => current,
            None => match self.probe() {
                None if failed => return Poll::Ready(Datagram::Gone),
                None => return Poll::Pending,
                Some(len) if len > max => return Poll::Ready(Datagram::TooLong(len)),
                Some(len) => {
                    let posted = match device.and_then(|gpu| gpu.alloc_if_free(len).ok()) {
                        Some(buffer) => {
                            let ptr = buffer.device_ptr() as *mut u8;
                            self.post_recv(ptr, len, Keep::Device(buffer))
                        }
                        None => self.recv(pool.take(len)),
                    };
                    match posted {
                        Ok(started) => op.insert(started),
                        Err(_) => return Poll::Ready(Datagram::Gone),
                    }
                }
            },
        };
        match self.poll(current) {
            Poll::Pending if failed => Poll::Ready(Datagram::Gone),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Datagram::Gone),
            Poll::Ready(Ok(())) => Poll::Ready(op.take().and_then(Op::into_received).unwrap_or(Datagram::Gone)),
        }
    }

    fn started(&mut self, request: sys::ucs_status_ptr_t, keep: Keep) -> io::Result<Op> {
        match sys::ucs_ptr_status(request) {
            sys::UCS_OK => Ok(Op {
                request: None,
                keep,
                flush: false,
            }),
            sys::UCS_INPROGRESS => {
                // The driver progresses what is left; wake it, since posting
                // need not have made the event fd readable.
                if let Some(worker) = self.worker.as_mut() {
                    worker.signal();
                }
                Ok(Op {
                    request: NonNull::new(request).map(Request),
                    keep,
                    flush: false,
                })
            }
            status => Err(status_error(status)),
        }
    }

    /// Whether `op` is done: `Ok` when it succeeded.
    pub(crate) fn poll(&mut self, op: &mut Op) -> Poll<io::Result<()>> {
        poll_op(op)
    }

    pub(crate) fn park(&mut self, mut op: Op, cancel: bool) {
        if self.poll(&mut op).is_ready() {
            return;
        }
        if cancel && let (Some(worker), Some(request)) = (&self.worker, &op.request) {
            // SAFETY: a live request of this live worker, under the lock.
            unsafe { sys::ucp_request_cancel(worker.handle, request.0.as_ptr()) };
        } else if !op.flush {
            // An abandoned send: its memory outlives the request (see
            // `abandoned`).
            self.torn = true;
            self.abandoned
                .push(std::mem::replace(&mut op.keep, Keep::Vec(Vec::new())));
        }
        self.parked.push(op);
    }

    /// Progresses, frees parked requests that finished, and re-arms the
    /// event fd: `false` when there is more to do at once.
    fn progress_and_arm(&mut self) -> Armed {
        let Some(worker) = self.worker.as_mut() else {
            return Armed::Yes;
        };
        worker.progress();
        self.parked.retain_mut(|op| poll_op(op).is_pending());
        self.worker.as_mut().map_or(Armed::Yes, Worker::arm)
    }

    /// Starts closing the endpoint: flushing what was sent, or at once when
    /// a send was abandoned half-way (the peer must not see half a message
    /// complete).
    ///
    /// An endpoint that never finished wiring up, or whose peer is gone, is
    /// closed at once too: a flush could only wait for a peer that will not
    /// answer, and UCX 1.13 aborts the process if a worker is destroyed
    /// while such a flush is pending.
    fn start_close(&mut self, failed: bool) {
        if self.ep.is_null() {
            return;
        }
        // SAFETY: all-zero parameters are valid.
        let mut param: sys::ucp_request_param_t = unsafe { std::mem::zeroed() };
        if self.torn || failed || !self.wired {
            param.op_attr_mask = sys::UCP_OP_ATTR_FIELD_FLAGS;
            param.flags = sys::UCP_EP_CLOSE_FLAG_FORCE;
        }
        // SAFETY: a live endpoint, closed once (the handle is cleared).
        let request = unsafe { sys::ucp_ep_close_nbx(self.ep, &param) };
        self.ep = ptr::null_mut();
        if sys::ucs_ptr_status(request) == sys::UCS_INPROGRESS {
            self.closing = NonNull::new(request).map(Request);
        }
    }

    /// Whether the close started by [`State::start_close`] is over; frees
    /// its request when it is.
    fn close_done(&mut self) -> bool {
        let Some(request) = &self.closing else {
            return true;
        };
        // SAFETY: a live request of this worker, under the lock.
        if unsafe { sys::ucp_request_check_status(request.0.as_ptr()) } == sys::UCS_INPROGRESS {
            return false;
        }
        // SAFETY: a completed request, freed once (it is taken out).
        unsafe { sys::ucp_request_free(request.0.as_ptr()) };
        self.closing = None;
        true
    }
}

impl Drop for State {
    /// Closes the endpoint by force if the driver did not finish closing
    /// it (a runtime shutting down drops drivers), and destroys the worker
    /// before the memory of parked requests is freed.
    fn drop(&mut self) {
        if self.worker.is_none() {
            return;
        }
        self.start_close(true);
        self.discard_unexpected();
        // The worker stays in `self` until the end, so that datagrams
        // arriving while it progresses are discarded too.
        let Some(handle) = self.worker.as_ref().map(|w| w.handle) else {
            return;
        };
        for op in &self.parked {
            if let Some(request) = &op.request {
                // SAFETY: a live request of this worker; cancelling a send
                // is a no-op (the forced close fails it).
                unsafe { sys::ucp_request_cancel(handle, request.0.as_ptr()) };
            }
        }
        // Bounded: this runs in a drop.
        let deadline = std::time::Instant::now() + Duration::from_millis(200);
        loop {
            if let Some(worker) = self.worker.as_mut() {
                worker.progress();
            }
            self.discard_unexpected();
            self.parked.retain_mut(|op| poll_op(op).is_pending());
            let closing = self.closing.as_ref().is_some_and(|request| {
                // SAFETY: a live request of this worker.
                unsafe { sys::ucp_request_check_status(request.0.as_ptr()) == sys::UCS_INPROGRESS }
            });
            if !closing && self.parked.is_empty() {
                break;
            }
            if std::time::Instant::now() < deadline {
                continue;
            }
            if closing || self.parked.iter().any(|op| op.flush) {
                // UCX 1.13 aborts the process when a worker is destroyed
                // with an endpoint's flush pending (`ucp_ep_flush_progress_
                // pending ... should have been flushed`), and UCX may still
                // use the parked buffers: leak both rather than crash.
                debug!(
                    closing,
                    parked = self.parked.len(),
                    "UCX endpoint did not close in time; leaking its worker"
                );
                std::mem::forget(self.worker.take());
                std::mem::forget(std::mem::take(&mut self.parked));
                std::mem::forget(std::mem::take(&mut self.abandoned));
                self.closing = None;
                return;
            }
            // The endpoint is gone; requests left over die with the worker.
            break;
        }
        let requests = self
            .closing
            .take()
            .into_iter()
            .chain(self.parked.iter_mut().filter_map(|op| op.request.take()));
        for request in requests {
            // SAFETY: freed once; UCX releases one still in flight when it
            // completes or with the worker.
            unsafe { sys::ucp_request_free(request.0.as_ptr()) };
        }
        drop(self.worker.take());
        // Only now, with the worker gone, can nothing use these; except
        // device memory, which a copy UCX queued on its own CUDA streams
        // (not waited for when they are destroyed) or a peer's `cuda_ipc`
        // put may still write: it waits with the abandoned sends' memory.
        for op in std::mem::take(&mut self.parked) {
            if let Keep::Device(_) = op.keep {
                self.abandoned.push(op.keep);
            }
        }
        let abandoned = std::mem::take(&mut self.abandoned);
        if !abandoned.is_empty() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        tokio::time::sleep(ABANDONED_GRACE).await;
                        drop(abandoned);
                    });
                }
                // No runtime to time it: keep it for good.
                Err(_) => std::mem::forget(abandoned),
            }
        }
    }
}

/// Whether `op` is done: `Ok` when it succeeded. Its request is freed
/// once done. Call it under the lock of the op's worker.
fn poll_op(op: &mut Op) -> Poll<io::Result<()>> {
    let Some(request) = &op.request else {
        return Poll::Ready(Ok(()));
    };
    // SAFETY: a live request of this worker, under the lock.
    let status = unsafe { sys::ucp_request_check_status(request.0.as_ptr()) };
    if status == sys::UCS_INPROGRESS {
        return Poll::Pending;
    }
    // SAFETY: a completed request, freed once (it is taken out).
    unsafe { sys::ucp_request_free(request.0.as_ptr()) };
    op.request = None;
    Poll::Ready(if status == sys::UCS_OK {
        Ok(())
    } else {
        Err(status_error(status))
    })
}

/// The driver's own: the event fd is deregistered (dropped first) before
/// the link, and so the worker that owns the fd, can go.
struct Driver {
    fd: AsyncFd<EventFd>,
    link: Arc<Link>,
}

/// Progresses the worker whenever its event fd fires, until the last
/// handle is dropped; then closes the endpoint.
async fn drive(driver: Driver) {
    let Driver { fd, link } = &driver;
    loop {
        let armed = link.lock().progress_and_arm();
        link.progressed.notify_waiters();
        tokio::select! {
            biased;
            () = link.shutdown.notified() => break,
            woke = wait_for_events(fd, armed) => if let Err(error) = woke {
                debug!(addr = link.addr, %error, "UCX event fd failed");
                break;
            },
        }
    }
    let failed = link.failure().is_some();
    {
        let mut state = link.lock();
        state.discard_unexpected();
        state.start_close(failed);
    }
    // Closing is driven by progress callbacks as much as by events, so poll
    // (briefly: a close takes a round trip, or nothing when forced).
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    loop {
        let done = {
            let mut state = link.lock();
            state.progress_and_arm();
            state.discard_unexpected();
            state.close_done()
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A close still under way is finished, or its worker leaked, when the
    // link drops.
}

/// Operations of one send, parked with the link if the send is dropped
/// before they finish.
pub(crate) struct Ops<'a> {
    link: &'a Link,
    pending: Vec<Op>,
}

impl<'a> Ops<'a> {
    pub(crate) fn new(link: &'a Link, pending: Vec<Op>) -> Self {
        Ops { link, pending }
    }

    pub(crate) fn push(&mut self, op: Op) {
        self.pending.push(op);
    }

    /// Waits for every operation; fails after `timeout` without any of
    /// them finishing, or when one fails.
    pub(crate) async fn finish(&mut self, timeout: Duration, peer: &str, during: &'static str) -> Result<()> {
        let mut deadline = Instant::now() + timeout;
        while !self.pending.is_empty() {
            let before = self.pending.len();
            let link = self.link;
            let pending = &mut self.pending;
            let step = link
                .wait(Some(deadline), |state| {
                    let mut failed = None;
                    pending.retain_mut(|op| match state.poll(op) {
                        Poll::Pending => true,
                        Poll::Ready(Ok(())) => false,
                        Poll::Ready(Err(error)) => {
                            failed.get_or_insert(error);
                            false
                        }
                    });
                    if let Some(error) = failed {
                        Poll::Ready(Err(error))
                    } else if pending.len() < before || pending.is_empty() {
                        Poll::Ready(Ok(()))
                    } else if let Some(error) = link.failure() {
                        Poll::Ready(Err(error))
                    } else {
                        Poll::Pending
                    }
                })
                .await;
            match step {
                Ok(Ok(())) => deadline = Instant::now() + timeout,
                Ok(Err(source)) => return Err(io_error(peer, source)),
                Err(_) => {
                    return Err(TransportError::Timeout {
                        peer: peer.to_string(),
                        after: timeout,
                        during,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Drop for Ops<'_> {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut state = self.link.lock();
        for op in self.pending.drain(..) {
            state.park(op, false);
        }
    }
}
