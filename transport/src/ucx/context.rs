//! The process's UCP context, workers, and UCX statuses as errors.
//!
//! One context per process, created on first use from the `UCX_*`
//! environment (`UCX_TLS` and the like) and kept until exit; a worker per
//! connection and per listener, each with its own event fd.

use std::ffi::CStr;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::OnceLock;
use std::time::Duration;

use socket2::SockAddr;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use ucx_sys as sys;

use crate::error::TransportError;

/// The process-wide UCP context, and whether its UCX can read CUDA device
/// memory (a UCX built with CUDA support, such as the libucx-cu12 wheel's).
pub(crate) struct Context(sys::ucp_context_h, bool);

// SAFETY: the context is created with `mt_workers_shared`, which makes UCX
// guard it with its own lock, so workers may be created and destroyed from
// any thread.
unsafe impl Send for Context {}
// SAFETY: as for `Send`.
unsafe impl Sync for Context {}

static CONTEXT: OnceLock<Result<Context, String>> = OnceLock::new();

/// The context, created on first use; an error (kept for later calls) if
/// UCX cannot start, e.g. when `UCX_TLS` names no usable transport.
pub(crate) fn context(addr: &str) -> Result<&'static Context, TransportError> {
    CONTEXT
        .get_or_init(Context::create)
        .as_ref()
        .map_err(|reason| TransportError::Io {
            peer: addr.to_string(),
            source: io::Error::other(format!("cannot initialise UCX: {reason}")),
        })
}

impl Context {
    fn create() -> Result<Context, String> {
        let mut config = ptr::null_mut();
        // SAFETY: null prefix and file read the `UCX_*` environment; `config`
        // is a valid out-pointer.
        let status = unsafe { sys::ucp_config_read(ptr::null(), ptr::null(), &mut config) };
        check(status).map_err(|e| e.to_string())?;
        // SAFETY: an all-zero parameter block is valid; the mask names the
        // fields set below.
        let mut params: sys::ucp_params_t = unsafe { std::mem::zeroed() };
        params.field_mask = (sys::UCP_PARAM_FIELD_FEATURES | sys::UCP_PARAM_FIELD_MT_WORKERS_SHARED) as u64;
        params.features = (sys::UCP_FEATURE_TAG | sys::UCP_FEATURE_WAKEUP) as u64;
        params.mt_workers_shared = 1;
        let mut context = ptr::null_mut();
        // SAFETY: `params` and `config` are valid, `context` is writable.
        let status = unsafe { sys::ucp_init(&params, config, &mut context) };
        // SAFETY: `config` came from `ucp_config_read` and is released once.
        unsafe { sys::ucp_config_release(config) };
        check(status).map_err(|e| e.to_string())?;
        // SAFETY: all-zero attributes with the mask naming what to fill.
        let mut attr: sys::ucp_context_attr_t = unsafe { std::mem::zeroed() };
        attr.field_mask = sys::UCP_ATTR_FIELD_MEMORY_TYPES as u64;
        // SAFETY: a live context and a writable attribute block.
        let reads_cuda = check(unsafe { sys::ucp_context_query(context, &mut attr) }).is_ok()
            && attr.memory_types & (1 << sys::UCS_MEMORY_TYPE_CUDA) != 0;
        let (mut major, mut minor, mut release) = (0, 0, 0);
        // SAFETY: three writable integers.
        unsafe { sys::ucp_get_version(&mut major, &mut minor, &mut release) };
        // Before 1.19 UCX's CUDA transports use the CUDA context current on
        // the thread that posts or progresses (and fail without one), and
        // that is any tokio thread here: device frames then go through host
        // memory. 1.19 and later make the device's primary context current
        // themselves.
        let cuda = reads_cuda && (major, minor) >= (1, 19);
        if reads_cuda && !cuda {
            tracing::info!(
                "UCX {major}.{minor}.{release} reads CUDA memory but needs a current CUDA context on the \
                 thread that progresses it (UCX 1.19 makes its own): device frames go through host memory"
            );
        }
        Ok(Context(context, cuda))
    }

    /// Whether UCX here moves CUDA device memory itself.
    pub(crate) fn cuda(&self) -> bool {
        self.1
    }
}

/// A UCP worker, accessed by one thread at a time (its owner holds it
/// behind a lock or in one task).
pub(crate) struct Worker {
    pub(crate) handle: sys::ucp_worker_h,
    efd: RawFd,
    /// Arming failed once (and was logged).
    arm_failed: bool,
}

/// What arming a worker's event fd found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Armed {
    /// The fd signals the next event.
    Yes,
    /// Events are pending: progress again.
    Busy,
    /// Arming failed (an interface that cannot signal, such as a CUDA one
    /// whose host callback failed): progress on a timer as well.
    Failed,
}

/// How often a worker whose event fd cannot be armed is progressed.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Waits until the worker may have work after arming found `armed`: at
/// once when busy, on the event fd when armed, else on the fd or
/// [`POLL_INTERVAL`], whichever comes first. Err when the fd fails.
pub(crate) async fn wait_for_events(fd: &AsyncFd<EventFd>, armed: Armed) -> io::Result<()> {
    match armed {
        Armed::Busy => tokio::task::yield_now().await,
        Armed::Yes => fd.readable().await?.clear_ready(),
        Armed::Failed => tokio::select! {
            ready = fd.readable() => ready?.clear_ready(),
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        },
    }
    Ok(())
}

// SAFETY: the worker is created in `UCS_THREAD_MODE_SERIALIZED`: any thread
// may use it as long as calls do not overlap, which its owners ensure.
unsafe impl Send for Worker {}

impl Worker {
    pub(crate) fn new(addr: &str) -> Result<Worker, TransportError> {
        let context = context(addr)?;
        // SAFETY: all-zero parameters are valid; the mask names what is set.
        let mut params: sys::ucp_worker_params_t = unsafe { std::mem::zeroed() };
        params.field_mask = sys::UCP_WORKER_PARAM_FIELD_THREAD_MODE as u64;
        params.thread_mode = sys::UCS_THREAD_MODE_SERIALIZED;
        let mut handle = ptr::null_mut();
        // SAFETY: a live context, valid parameters, a writable out-pointer.
        let status = unsafe { sys::ucp_worker_create(context.0, &params, &mut handle) };
        check(status).map_err(|source| io_error(addr, source))?;
        let mut efd = -1;
        // SAFETY: `handle` is the worker just created; `efd` is writable.
        let status = unsafe { sys::ucp_worker_get_efd(handle, &mut efd) };
        let worker = Worker {
            handle,
            efd,
            arm_failed: false,
        };
        check(status).map_err(|source| io_error(addr, source))?;
        Ok(worker)
    }

    /// Progresses until nothing is left to do; returns whether anything was.
    pub(crate) fn progress(&mut self) -> bool {
        let mut any = false;
        // SAFETY: a live worker, used by one thread at a time (`&mut self`).
        while unsafe { sys::ucp_worker_progress(self.handle) } != 0 {
            any = true;
        }
        any
    }

    /// Arms the event fd (see [`Armed`]).
    pub(crate) fn arm(&mut self) -> Armed {
        // SAFETY: a live worker, used by one thread at a time.
        match unsafe { sys::ucp_worker_arm(self.handle) } {
            sys::UCS_OK => Armed::Yes,
            sys::UCS_ERR_BUSY => Armed::Busy,
            status => {
                if !self.arm_failed {
                    self.arm_failed = true;
                    tracing::warn!(
                        error = %status_error(status),
                        "cannot arm a UCX worker's event fd; progressing it every {POLL_INTERVAL:?} instead"
                    );
                }
                Armed::Failed
            }
        }
    }

    /// Makes the event fd readable, so that whoever waits on it progresses.
    pub(crate) fn signal(&mut self) {
        // SAFETY: a live worker; `ucp_worker_signal` is thread safe anyway.
        unsafe { sys::ucp_worker_signal(self.handle) };
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: the worker is live and destroyed once; its endpoints and
        // listener were closed before (or are released with it).
        unsafe { sys::ucp_worker_destroy(self.handle) };
    }
}

/// The worker's event fd, for `AsyncFd`; UCX owns and closes it.
pub(crate) struct EventFd(pub(crate) RawFd);

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Worker {
    /// Registers the worker's event fd with tokio.
    ///
    /// # Safety
    ///
    /// The `AsyncFd` must be dropped before the worker, which owns and
    /// closes the fd.
    pub(crate) unsafe fn watch(&self) -> io::Result<AsyncFd<EventFd>> {
        // SAFETY: the fd is open while the worker lives, and the caller
        // drops the `AsyncFd` first.
        unsafe { AsyncFd::register_with_interest(EventFd(self.efd), Interest::READABLE) }.map_err(io::Error::from)
    }
}

/// `UCS_OK` as `Ok`, anything else as an I/O error naming the status.
pub(crate) fn check(status: sys::ucs_status_t) -> io::Result<()> {
    if status == sys::UCS_OK {
        Ok(())
    } else {
        Err(status_error(status))
    }
}

/// A UCX status as an I/O error of the nearest kind, with UCX's text.
pub(crate) fn status_error(status: sys::ucs_status_t) -> io::Error {
    let kind = match status {
        sys::UCS_ERR_UNREACHABLE | sys::UCS_ERR_REJECTED => io::ErrorKind::ConnectionRefused,
        sys::UCS_ERR_CONNECTION_RESET | sys::UCS_ERR_ENDPOINT_TIMEOUT => io::ErrorKind::ConnectionReset,
        sys::UCS_ERR_TIMED_OUT => io::ErrorKind::TimedOut,
        sys::UCS_ERR_BUSY => io::ErrorKind::AddrInUse,
        sys::UCS_ERR_NO_MEMORY => io::ErrorKind::OutOfMemory,
        sys::UCS_ERR_CANCELED => io::ErrorKind::Interrupted,
        sys::UCS_ERR_INVALID_ADDR | sys::UCS_ERR_INVALID_PARAM => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    // SAFETY: `ucs_status_string` returns a static C string for any code.
    let text = unsafe { CStr::from_ptr(sys::ucs_status_string(status)) };
    io::Error::new(kind, format!("UCX: {} ({status})", text.to_string_lossy()))
}

pub(crate) fn io_error(peer: &str, source: io::Error) -> TransportError {
    TransportError::Io {
        peer: peer.to_string(),
        source,
    }
}

/// A socket address as UCX takes it; the `SockAddr` must outlive its use.
pub(crate) fn ucs_sock_addr(addr: &SockAddr) -> sys::ucs_sock_addr_t {
    sys::ucs_sock_addr_t {
        addr: addr.as_ptr().cast(),
        addrlen: addr.len(),
    }
}

/// An address UCX reported in a `sockaddr_storage`.
pub(crate) fn socket_addr(storage: &sys::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the closure fills the zeroed storage with at most its size of
    // bytes copied from a `sockaddr_storage` of the same size.
    let (_, addr) = unsafe {
        SockAddr::try_init(|out, len| {
            let size = size_of::<sys::sockaddr_storage>().min(size_of_val(&*out));
            ptr::copy_nonoverlapping(ptr::from_ref(storage).cast::<u8>(), out.cast::<u8>(), size);
            *len = size as _;
            Ok(())
        })
    }
    .ok()?;
    addr.as_socket()
}
