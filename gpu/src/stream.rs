//! Streams and events: ordered queues of copies (and kernels, launched by
//! `weft-kernels`) on one device.
//!
//! CUDA streams are the driver's. Emulated streams carry out each operation
//! when it is enqueued, which is one valid schedule of an in-order stream,
//! unless the device is *asynchronous* ([`Gpu::emulated_asynchronous`],
//! `WEFT_EMULATED_ASYNC=1`): then kernels, memsets and device-to-device
//! copies wait in the stream's queue until something synchronises it, so
//! code that reads a result without synchronising, or reuses memory that
//! queued work still reads, gets wrong answers in CI as it would on a GPU.
//!
//! Copies that touch caller-owned host slices complete before they return
//! (the slice's borrow ends there). Device-to-device and peer copies are
//! asynchronous: they return an [`Event`] that keeps both buffers alive until
//! the copy has finished.
//!
//! **Stream-ordered frees.** A kernel's temporaries may be dropped while the
//! kernel is still queued: a block dropped on a thread whose
//! [thread stream](Gpu::thread_stream) has pending work is kept on that
//! stream's list of freed blocks. [`Stream::alloc`] hands those out again
//! at once (later work on the same stream runs after the work that read
//! them); the pool gets them back, for every other user, when the stream
//! is next synchronised. Work queued on a thread stream may therefore
//! reference only buffers that are dropped on that thread, or after the
//! stream is synchronised; a worker synchronises it when each op ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaEvent, CudaStream, DriverError, result};

use crate::cuda::{bind_context, clear_stored_error, cuda_device};
use crate::device::GpuBackend;
use crate::emulated::CopyKind;
use crate::pool::size_class;
use crate::{Device, DeviceBuffer, Gpu, GpuError, Result};

enum Inner {
    Cuda(Arc<CudaStream>),
    Emulated,
}

/// Work queued on an asynchronous emulated stream. Its error is kept and
/// returned by the next synchronisation, as CUDA reports a failed launch.
type Work = Box<dyn FnOnce() -> std::result::Result<(), String> + Send>;

/// A block dropped while its stream had work pending.
struct Freed {
    ptr: u64,
    class: usize,
    len: usize,
}

/// What the clones of a stream share.
struct Shared {
    gpu: Arc<Gpu>,
    inner: Inner,
    /// Work was queued that may not be done yet; cleared by a synchronisation.
    pending: AtomicBool,
    /// Deferred work of an asynchronous emulated device.
    queue: Mutex<Vec<Work>>,
    /// Held while deferred work runs, so that two threads draining one
    /// stream run its work in order, not side by side.
    running: Mutex<()>,
    /// Blocks dropped while work was pending (see the module's doc).
    freed: Mutex<Vec<Freed>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.drain();
        for f in std::mem::take(self.freed.get_mut().unwrap_or_else(|e| e.into_inner())) {
            self.gpu.pool().release_deferred(f.ptr, f.class, f.len);
        }
    }
}

impl Shared {
    /// Blocks until every queued operation is done, running the deferred
    /// work of an asynchronous emulated device.
    fn drain(&self) -> Result<()> {
        match &self.inner {
            Inner::Cuda(s) => {
                clear_stored_error(s.context(), self.gpu.device());
                s.synchronize().map_err(|source| GpuError::Driver {
                    device: self.gpu.device(),
                    op: "stream synchronize",
                    source,
                })
            }
            Inner::Emulated => {
                let _running = lock(&self.running);
                let mut failed = None;
                loop {
                    let work = std::mem::take(&mut *lock(&self.queue));
                    if work.is_empty() {
                        break;
                    }
                    for w in work {
                        if let Err(e) = w() {
                            failed.get_or_insert(e);
                        }
                    }
                }
                match failed {
                    Some(message) => Err(GpuError::Queued {
                        device: self.gpu.device(),
                        message,
                    }),
                    None => Ok(()),
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An ordered queue of work on one device. Clones are the same queue.
#[derive(Clone)]
pub struct Stream {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("device", &self.device()).finish()
    }
}

enum EventInner {
    Cuda(CudaEvent),
    Done,
    /// On an asynchronous emulated device: done once its stream is drained.
    Queued(Stream),
}

/// A point in a stream's work. Dropping an event that guards buffers waits
/// for it first, so the buffers are not reused under a running copy.
pub struct Event {
    inner: EventInner,
    keep_alive: Vec<DeviceBuffer>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("cuda", &matches!(self.inner, EventInner::Cuda(_)))
            .finish()
    }
}

impl Event {
    /// Blocks until the work before the event is done.
    pub fn synchronize(&self) -> Result<()> {
        match &self.inner {
            EventInner::Cuda(e) => {
                let device = cuda_device(e.context());
                clear_stored_error(e.context(), device);
                e.synchronize().map_err(|source| GpuError::Driver {
                    device,
                    op: "event synchronize",
                    source,
                })
            }
            EventInner::Done => Ok(()),
            EventInner::Queued(s) => s.synchronize(),
        }
    }

    /// True when the work before the event is done, or failed
    /// ([`Event::synchronize`] says how): a poller never spins on an error.
    pub fn is_complete(&self) -> bool {
        match &self.inner {
            EventInner::Cuda(e) => e.try_is_complete().unwrap_or(true),
            EventInner::Done => true,
            EventInner::Queued(s) => !s.shared.pending.load(Ordering::Acquire),
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if self.keep_alive.is_empty() {
            return;
        }
        match &self.inner {
            EventInner::Cuda(_) => {
                if let Err(error) = self.synchronize() {
                    tracing::warn!(%error, "waiting for a copy before freeing its buffers");
                }
            }
            // An error here is the stream's, reported by its own next
            // synchronisation too.
            EventInner::Queued(s) => drop(s.synchronize()),
            EventInner::Done => {}
        }
    }
}

fn check(what: &'static str, expected: Device, found: Device) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(GpuError::WrongDevice { what, expected, found })
    }
}

fn fits(src: usize, dst: usize) -> Result<()> {
    if src <= dst {
        Ok(())
    } else {
        Err(GpuError::LengthMismatch { src, dst })
    }
}

/// Host copies at least this large go through pinned staging buffers.
const STAGED_MIN: usize = 8 << 20;

/// Bytes per staged chunk: large enough that each DMA runs near full
/// speed, small enough that two of them stay in the staging pool.
const STAGE_CHUNK: usize = 16 << 20;

/// Copies `src` into `dst` (same length) on several threads: the copy
/// between pageable and pinned memory is the host half of a staged copy,
/// and one core cannot keep up with the DMA (nor fault fresh pages in fast
/// enough).
fn parallel_copy(dst: &mut [u8], src: &[u8]) {
    const PER_THREAD: usize = 2 << 20;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(src.len().div_ceil(PER_THREAD));
    if threads <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    let part = src.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (d, s) in dst.chunks_mut(part).zip(src.chunks(part)) {
            scope.spawn(move || d.copy_from_slice(s));
        }
    });
}

impl Stream {
    /// A large host-to-device copy through two pinned staging buffers: while
    /// the DMA of one chunk runs, the host fills the other. Done on return.
    fn h2d_staged(&self, s: &Arc<CudaStream>, src: &[u8], dst: u64) -> Result<()> {
        bind_context(s.context(), self.device())?;
        let mut bufs = [
            self.shared.gpu.staging(STAGE_CHUNK)?,
            self.shared.gpu.staging(STAGE_CHUNK)?,
        ];
        let mut copy = || -> Result<()> {
            let mut in_flight: [Option<Event>; 2] = [None, None];
            for (k, chunk) in src.chunks(STAGE_CHUNK).enumerate() {
                let b = k % 2;
                // The DMA that last read this buffer must be done before it is refilled.
                if let Some(e) = in_flight[b].take() {
                    e.synchronize()?;
                }
                let staged = &mut bufs[b].as_mut_slice()[..chunk.len()];
                parallel_copy(staged, chunk);
                // SAFETY: the device range lies inside the destination (the
                // caller checked the lengths); the pinned chunk is not written
                // again before the event recorded after this copy completes,
                // and the stream is synchronised before the buffers drop.
                unsafe { result::memcpy_htod_async(dst + (k * STAGE_CHUNK) as u64, &*staged, s.cu_stream()) }
                    .map_err(self.driver("cuMemcpyHtoDAsync"))?;
                in_flight[b] = Some(self.record()?);
            }
            Ok(())
        };
        let copied = copy();
        // Also after a failure: a DMA may still read a staging buffer, which
        // goes back to the shared staging pool when it drops.
        let synced = self.synchronize();
        copied.and(synced)
    }

    /// A large device-to-host copy through two pinned staging buffers: while
    /// the DMA fills one, the host empties the other. Done on return.
    fn d2h_staged(&self, s: &Arc<CudaStream>, src: u64, dst: &mut [u8]) -> Result<()> {
        bind_context(s.context(), self.device())?;
        let mut bufs = [
            self.shared.gpu.staging(STAGE_CHUNK)?,
            self.shared.gpu.staging(STAGE_CHUNK)?,
        ];
        let mut copy = || -> Result<()> {
            let mut pending: Option<(Event, usize, usize)> = None;
            let chunks = dst.len().div_ceil(STAGE_CHUNK);
            for k in 0..=chunks {
                if k < chunks {
                    let (off, len) = (k * STAGE_CHUNK, STAGE_CHUNK.min(dst.len() - k * STAGE_CHUNK));
                    let staged = &mut bufs[k % 2].as_mut_slice()[..len];
                    // SAFETY: the source range lies inside the source buffer;
                    // the host reads this chunk only after the event recorded
                    // after the copy, and writes the buffer again only after
                    // emptying it, so the DMA never races the host.
                    unsafe { result::memcpy_dtoh_async(staged, src + off as u64, s.cu_stream()) }
                        .map_err(self.driver("cuMemcpyDtoHAsync"))?;
                    let done = self.record()?;
                    if let Some((e, prev, plen)) = pending.replace((done, k, len)) {
                        e.synchronize()?;
                        let from = &bufs[prev % 2].as_slice()[..plen];
                        parallel_copy(&mut dst[prev * STAGE_CHUNK..prev * STAGE_CHUNK + plen], from);
                    }
                } else if let Some((e, prev, plen)) = pending.take() {
                    e.synchronize()?;
                    let from = &bufs[prev % 2].as_slice()[..plen];
                    parallel_copy(&mut dst[prev * STAGE_CHUNK..prev * STAGE_CHUNK + plen], from);
                }
            }
            Ok(())
        };
        let copied = copy();
        // As in `h2d_staged`: no staging buffer returns under a running DMA.
        let synced = self.synchronize();
        copied.and(synced)
    }

    pub(crate) fn new(gpu: Arc<Gpu>) -> Result<Self> {
        let inner = match gpu.backend() {
            GpuBackend::Cuda(c) => {
                clear_stored_error(c.context(), gpu.device());
                Inner::Cuda(c.context().new_stream().map_err(|source| GpuError::Driver {
                    device: gpu.device(),
                    op: "create stream",
                    source,
                })?)
            }
            GpuBackend::Emulated(_) => Inner::Emulated,
        };
        Ok(Stream {
            shared: Arc::new(Shared {
                gpu,
                inner,
                pending: AtomicBool::new(false),
                queue: Mutex::default(),
                running: Mutex::default(),
                freed: Mutex::default(),
            }),
        })
    }

    /// The device the stream runs on.
    pub fn device(&self) -> Device {
        self.shared.gpu.device()
    }

    /// The opened GPU the stream runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.shared.gpu
    }

    /// The cudarc stream, for kernel launches on CUDA devices.
    pub fn cuda_stream(&self) -> Option<&Arc<CudaStream>> {
        match &self.shared.inner {
            Inner::Cuda(s) => Some(s),
            Inner::Emulated => None,
        }
    }

    fn driver(&self, op: &'static str) -> impl FnOnce(DriverError) -> GpuError + use<> {
        let device = self.device();
        move |source| GpuError::Driver { device, op, source }
    }

    fn count(&self, kind: CopyKind, bytes: usize) {
        if let GpuBackend::Emulated(e) = self.shared.gpu.backend() {
            e.count(kind, bytes);
        }
    }

    /// Blocks until all work queued on the stream is done, and gives the
    /// blocks freed meanwhile back to the pool. An error is the first that
    /// queued work met (on CUDA, the context's sticky error).
    pub fn synchronize(&self) -> Result<()> {
        let shared = &self.shared;
        // Cleared before draining: work queued meanwhile sets it again.
        shared.pending.store(false, Ordering::Release);
        let freed = std::mem::take(&mut *lock(&shared.freed));
        let drained = shared.drain();
        for f in freed {
            shared.gpu.pool().release_deferred(f.ptr, f.class, f.len);
        }
        drained
    }

    /// Runs `work` in this stream's order: at once, or, on an asynchronous
    /// emulated device, when the stream is next synchronised (which then
    /// returns its error). Kernel launchers run emulated kernels through
    /// it; on a CUDA stream the work runs on the host after the stream.
    pub fn emulate(&self, work: impl FnOnce() -> std::result::Result<(), String> + Send + 'static) -> Result<()> {
        let device = self.device();
        match self.shared.gpu.backend() {
            GpuBackend::Emulated(e) if e.asynchronous() => {
                lock(&self.shared.queue).push(Box::new(work));
                self.shared.pending.store(true, Ordering::Release);
                Ok(())
            }
            _ => {
                self.synchronize()?;
                work().map_err(|message| GpuError::Queued { device, message })
            }
        }
    }

    /// Notes that work was queued on the CUDA stream behind this type's
    /// back (a kernel launched through cudarc), so that buffers dropped on
    /// this thread wait for it before the pool hands them to others.
    pub fn mark_pending(&self) {
        self.shared.pending.store(true, Ordering::Release);
    }

    /// `len` bytes of this device's memory for work on this stream: a block
    /// dropped while this stream's work was pending when one of its size
    /// class is there (stream order makes that safe), else from the pool.
    pub fn alloc(&self, len: usize) -> Result<DeviceBuffer> {
        let class = size_class(len);
        let reused = {
            let mut freed = lock(&self.shared.freed);
            freed
                .iter()
                .rposition(|f| f.class == class)
                .map(|i| freed.swap_remove(i))
        };
        let gpu = &self.shared.gpu;
        match reused {
            Some(f) => {
                gpu.pool().reuse_deferred(class, f.len, len);
                Ok(DeviceBuffer::new(gpu.clone(), f.ptr, len, class))
            }
            None => gpu.alloc(len),
        }
    }

    /// Keeps a block dropped on this stream's thread until the stream's
    /// pending work is done; false when nothing is pending (the caller
    /// gives it back to the pool at once).
    pub(crate) fn defer_free(&self, ptr: u64, class: usize, len: usize) -> bool {
        if !self.shared.pending.load(Ordering::Acquire) {
            return false;
        }
        lock(&self.shared.freed).push(Freed { ptr, class, len });
        self.shared.gpu.pool().defer(class);
        true
    }

    /// Whether work may be pending or freed blocks wait for it.
    pub(crate) fn is_busy(&self) -> bool {
        self.shared.pending.load(Ordering::Acquire) || !lock(&self.shared.freed).is_empty()
    }

    /// Records an event after the work queued so far.
    pub fn record(&self) -> Result<Event> {
        self.record_guarding(Vec::new())
    }

    fn record_guarding(&self, keep_alive: Vec<DeviceBuffer>) -> Result<Event> {
        let inner = match &self.shared.inner {
            Inner::Cuda(s) => {
                clear_stored_error(s.context(), self.device());
                EventInner::Cuda(s.record_event(None).map_err(self.driver("record event"))?)
            }
            Inner::Emulated if self.shared.pending.load(Ordering::Acquire) => EventInner::Queued(self.clone()),
            Inner::Emulated => EventInner::Done,
        };
        Ok(Event { inner, keep_alive })
    }

    /// Makes later work on this stream wait for `event` (from any stream).
    pub fn wait(&self, event: &Event) -> Result<()> {
        match (&self.shared.inner, &event.inner) {
            (Inner::Cuda(s), EventInner::Cuda(e)) => s.wait(e).map_err(self.driver("wait event")),
            // An emulated event is waited for on the host (its stream
            // drained), as is a CUDA event seen from an emulated stream.
            (Inner::Emulated, _) | (_, EventInner::Done | EventInner::Queued(_)) => event.synchronize(),
        }
    }

    /// Allocates `src.len()` bytes on this device and copies `src` there.
    pub fn upload(&self, src: &[u8]) -> Result<DeviceBuffer> {
        let dst = self.alloc(src.len())?;
        self.copy_h2d(src, &dst)?;
        Ok(dst)
    }

    /// Copies `src` to the start of `dst`; done when this returns.
    pub fn copy_h2d(&self, src: &[u8], dst: &DeviceBuffer) -> Result<()> {
        self.copy_h2d_at(src, dst, 0)
    }

    /// Copies `src` into `dst` from byte `offset` on (a frame filled piece
    /// by piece); done when this returns.
    pub fn copy_h2d_at(&self, src: &[u8], dst: &DeviceBuffer, offset: usize) -> Result<()> {
        check("copy destination", self.device(), dst.device())?;
        fits(offset.saturating_add(src.len()), dst.len())?;
        let to = dst.device_ptr() + offset as u64;
        match &self.shared.inner {
            Inner::Cuda(s) if src.len() >= STAGED_MIN => self.h2d_staged(s, src, to)?,
            Inner::Cuda(s) => {
                bind_context(s.context(), self.device())?;
                // SAFETY: `dst` holds at least `offset + src.len()` bytes on
                // this device; the stream is synchronised before `src`'s
                // borrow ends.
                unsafe { result::memcpy_htod_async(to, src, s.cu_stream()) }
                    .map_err(self.driver("cuMemcpyHtoDAsync"))?;
                self.synchronize()?;
            }
            Inner::Emulated => {
                // Stream order: what was queued before runs first.
                self.synchronize()?;
                // SAFETY: `dst` is a live emulated allocation of at least
                // `offset + src.len()` bytes, distinct from host memory in `src`.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), to as *mut u8, src.len()) };
            }
        }
        self.count(CopyKind::H2d, src.len());
        Ok(())
    }

    /// Fills `dst` from the start of `src`; done when this returns.
    pub fn copy_d2h(&self, src: &DeviceBuffer, dst: &mut [u8]) -> Result<()> {
        self.copy_d2h_at(src, 0, dst)
    }

    /// Fills `dst` from byte `offset` of `src` on (a frame sent piece by
    /// piece); done when this returns.
    pub fn copy_d2h_at(&self, src: &DeviceBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        check("copy source", self.device(), src.device())?;
        fits(offset.saturating_add(dst.len()), src.len())?;
        let from = src.device_ptr() + offset as u64;
        match &self.shared.inner {
            Inner::Cuda(s) if dst.len() >= STAGED_MIN => self.d2h_staged(s, from, dst)?,
            Inner::Cuda(s) => {
                bind_context(s.context(), self.device())?;
                // SAFETY: `src` holds at least `offset + dst.len()` bytes on
                // this device; the stream is synchronised before `dst`'s
                // borrow ends.
                unsafe { result::memcpy_dtoh_async(dst, from, s.cu_stream()) }
                    .map_err(self.driver("cuMemcpyDtoHAsync"))?;
                self.synchronize()?;
            }
            Inner::Emulated => {
                self.synchronize()?;
                // SAFETY: `src` is a live emulated allocation of at least
                // `offset + dst.len()` bytes, distinct from `dst`.
                unsafe { std::ptr::copy_nonoverlapping(from as *const u8, dst.as_mut_ptr(), dst.len()) };
            }
        }
        self.count(CopyKind::D2h, dst.len());
        Ok(())
    }

    /// Downloads the whole of `src` into a new host vector.
    pub fn download(&self, src: &DeviceBuffer) -> Result<Vec<u8>> {
        let mut out = vec![0u8; src.len()];
        self.copy_d2h(src, &mut out)?;
        Ok(out)
    }

    /// Sets the first `len` bytes of `dst` to zero (in stream order).
    pub fn memset_zero(&self, dst: &DeviceBuffer, len: usize) -> Result<()> {
        check("memset destination", self.device(), dst.device())?;
        fits(len, dst.len())?;
        match &self.shared.inner {
            Inner::Cuda(s) => {
                bind_context(s.context(), self.device())?;
                // SAFETY: `dst` holds at least `len` bytes on this device and
                // stays allocated: dropped on this thread, it waits for the
                // stream (stream-ordered frees); elsewhere, only after the
                // stream is synchronised.
                unsafe { result::memset_d8_async(dst.device_ptr(), 0, len, s.cu_stream()) }
                    .map_err(self.driver("cuMemsetD8Async"))?;
                self.mark_pending();
                Ok(())
            }
            Inner::Emulated => {
                let ptr = dst.device_ptr();
                self.emulate(move || {
                    // SAFETY: `dst` was a live emulated allocation of at
                    // least `len` bytes, kept until this runs (as above).
                    unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, len) };
                    Ok(())
                })
            }
        }
    }

    /// Copies `src` to the start of `dst`, both on this device; asynchronous.
    pub fn copy_d2d(&self, src: &DeviceBuffer, dst: &DeviceBuffer) -> Result<Event> {
        check("copy source", self.device(), src.device())?;
        check("copy destination", self.device(), dst.device())?;
        fits(src.len(), dst.len())?;
        match &self.shared.inner {
            Inner::Cuda(s) => {
                bind_context(s.context(), self.device())?;
                // SAFETY: both buffers are on this device and big enough; the
                // returned event keeps them alive until the copy is done.
                unsafe { result::memcpy_dtod_async(dst.device_ptr(), src.device_ptr(), src.len(), s.cu_stream()) }
                    .map_err(self.driver("cuMemcpyDtoDAsync"))?;
                self.mark_pending();
            }
            Inner::Emulated => {
                let (from, to, len) = (src.device_ptr(), dst.device_ptr(), src.len());
                self.emulate(move || {
                    // SAFETY: both are live allocations of this device, big
                    // enough, kept alive by the returned event until this
                    // has run; `copy` allows them to be the same buffer.
                    unsafe { std::ptr::copy(from as *const u8, to as *mut u8, len) };
                    Ok(())
                })?;
            }
        }
        self.count(CopyKind::D2d, src.len());
        self.record_guarding(vec![src.clone(), dst.clone()])
    }

    /// Copies `src` (on this stream's device) to the start of `dst` on another
    /// device: between CUDA GPUs with `cuMemcpyPeerAsync` (device to device
    /// where they have peer access; the driver stages it otherwise), between
    /// emulated GPUs directly where they have peer access, otherwise staged
    /// through pinned host memory.
    pub fn copy_peer(&self, src: &DeviceBuffer, dst: &DeviceBuffer) -> Result<Event> {
        check("copy source", self.device(), src.device())?;
        fits(src.len(), dst.len())?;
        if dst.device() == self.device() {
            return self.copy_d2d(src, dst);
        }
        match (&self.shared.inner, dst.gpu().backend()) {
            (Inner::Cuda(s), GpuBackend::Cuda(d)) => {
                bind_context(s.context(), self.device())?;
                // SAFETY: both buffers are live on their devices, big enough;
                // the event keeps them alive until the copy is done.
                unsafe {
                    result::memcpy_peer_async(
                        d.context().cu_ctx(),
                        dst.device_ptr(),
                        s.context().cu_ctx(),
                        src.device_ptr(),
                        src.len(),
                        s.cu_stream(),
                    )
                }
                .map_err(self.driver("cuMemcpyPeerAsync"))?;
                self.mark_pending();
                self.record_guarding(vec![src.clone(), dst.clone()])
            }
            (Inner::Emulated, GpuBackend::Emulated(_)) if self.shared.gpu.can_access_peer(dst.gpu()) => {
                self.synchronize()?;
                // SAFETY: distinct live allocations of two emulated devices,
                // both at least `src.len()` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.device_ptr() as *const u8, dst.device_ptr() as *mut u8, src.len())
                };
                self.count(CopyKind::Peer, src.len());
                self.record()
            }
            _ => {
                let mut staging = self.shared.gpu.staging(src.len())?;
                self.copy_d2h(src, staging.as_mut_slice())?;
                let dst_stream = dst.gpu().thread_stream()?;
                dst_stream.copy_h2d(staging.as_slice(), dst)?;
                self.count(CopyKind::Staged, src.len());
                self.record()
            }
        }
    }
}
