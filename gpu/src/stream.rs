//! Streams and events: ordered queues of copies (and kernels, launched by
//! `weft-kernels`) on one device.
//!
//! CUDA streams are the driver's. Emulated streams carry out each operation
//! when it is enqueued, which is one valid schedule of an in-order stream; an
//! emulated event is therefore complete as soon as it is recorded.
//!
//! Copies that touch caller-owned host slices complete before they return
//! (the slice's borrow ends there). Device-to-device and peer copies are
//! asynchronous: they return an [`Event`] that keeps both buffers alive until
//! the copy has finished.

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaStream, DriverError, result};

use crate::device::GpuBackend;
use crate::emulated::CopyKind;
use crate::{Device, DeviceBuffer, Gpu, GpuError, Result};

#[derive(Clone)]
enum Inner {
    Cuda(Arc<CudaStream>),
    Emulated,
}

/// An ordered queue of work on one device. Clones are the same queue.
#[derive(Clone)]
pub struct Stream {
    gpu: Arc<Gpu>,
    inner: Inner,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("device", &self.gpu.device()).finish()
    }
}

enum EventInner {
    Cuda(CudaEvent),
    Done,
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
            EventInner::Cuda(e) => e.synchronize().map_err(|source| GpuError::Driver {
                device: Device::Cuda(e.context().ordinal() as u32),
                op: "event synchronize",
                source,
            }),
            EventInner::Done => Ok(()),
        }
    }

    /// True when the work before the event is done.
    pub fn is_complete(&self) -> bool {
        match &self.inner {
            EventInner::Cuda(e) => e.is_complete(),
            EventInner::Done => true,
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if let EventInner::Cuda(e) = &self.inner
            && !self.keep_alive.is_empty()
        {
            e.context().record_err(e.synchronize());
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
        s.context().bind_to_thread().map_err(self.driver("bind context"))?;
        let mut bufs = [self.gpu.staging(STAGE_CHUNK)?, self.gpu.staging(STAGE_CHUNK)?];
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
        s.synchronize().map_err(self.driver("stream synchronize"))
    }

    /// A large device-to-host copy through two pinned staging buffers: while
    /// the DMA fills one, the host empties the other. Done on return.
    fn d2h_staged(&self, s: &Arc<CudaStream>, src: u64, dst: &mut [u8]) -> Result<()> {
        s.context().bind_to_thread().map_err(self.driver("bind context"))?;
        let mut bufs = [self.gpu.staging(STAGE_CHUNK)?, self.gpu.staging(STAGE_CHUNK)?];
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
        s.synchronize().map_err(self.driver("stream synchronize"))
    }

    pub(crate) fn new(gpu: Arc<Gpu>) -> Result<Self> {
        let inner = match gpu.backend() {
            GpuBackend::Cuda(c) => Inner::Cuda(c.context().new_stream().map_err(|source| GpuError::Driver {
                device: gpu.device(),
                op: "create stream",
                source,
            })?),
            GpuBackend::Emulated(_) => Inner::Emulated,
        };
        Ok(Stream { gpu, inner })
    }

    /// The device the stream runs on.
    pub fn device(&self) -> Device {
        self.gpu.device()
    }

    /// The opened GPU the stream runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The cudarc stream, for kernel launches on CUDA devices.
    pub fn cuda_stream(&self) -> Option<&Arc<CudaStream>> {
        match &self.inner {
            Inner::Cuda(s) => Some(s),
            Inner::Emulated => None,
        }
    }

    fn driver(&self, op: &'static str) -> impl FnOnce(DriverError) -> GpuError + use<> {
        let device = self.device();
        move |source| GpuError::Driver { device, op, source }
    }

    fn count(&self, kind: CopyKind, bytes: usize) {
        if let GpuBackend::Emulated(e) = self.gpu.backend() {
            e.count(kind, bytes);
        }
    }

    /// Blocks until all work queued on the stream is done.
    pub fn synchronize(&self) -> Result<()> {
        match &self.inner {
            Inner::Cuda(s) => s.synchronize().map_err(self.driver("stream synchronize")),
            Inner::Emulated => Ok(()),
        }
    }

    /// Records an event after the work queued so far.
    pub fn record(&self) -> Result<Event> {
        self.record_guarding(Vec::new())
    }

    fn record_guarding(&self, keep_alive: Vec<DeviceBuffer>) -> Result<Event> {
        let inner = match &self.inner {
            Inner::Cuda(s) => EventInner::Cuda(s.record_event(None).map_err(self.driver("record event"))?),
            Inner::Emulated => EventInner::Done,
        };
        Ok(Event { inner, keep_alive })
    }

    /// Makes later work on this stream wait for `event` (from any stream).
    pub fn wait(&self, event: &Event) -> Result<()> {
        match (&self.inner, &event.inner) {
            (Inner::Cuda(s), EventInner::Cuda(e)) => s.wait(e).map_err(self.driver("wait event")),
            // Emulated events are complete when recorded; a CUDA event seen
            // from an emulated stream is waited for on the host.
            (Inner::Emulated, _) | (_, EventInner::Done) => event.synchronize(),
        }
    }

    /// Allocates `src.len()` bytes on this device and copies `src` there.
    pub fn upload(&self, src: &[u8]) -> Result<DeviceBuffer> {
        let dst = self.gpu.alloc(src.len())?;
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
        match &self.inner {
            Inner::Cuda(s) if src.len() >= STAGED_MIN => self.h2d_staged(s, src, to)?,
            Inner::Cuda(s) => {
                s.context().bind_to_thread().map_err(self.driver("bind context"))?;
                // SAFETY: `dst` holds at least `offset + src.len()` bytes on
                // this device; the stream is synchronised before `src`'s
                // borrow ends.
                unsafe { result::memcpy_htod_async(to, src, s.cu_stream()) }
                    .map_err(self.driver("cuMemcpyHtoDAsync"))?;
                s.synchronize().map_err(self.driver("stream synchronize"))?;
            }
            Inner::Emulated => {
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
        check("copy source", self.device(), src.device())?;
        fits(dst.len(), src.len())?;
        match &self.inner {
            Inner::Cuda(s) if dst.len() >= STAGED_MIN => self.d2h_staged(s, src.device_ptr(), dst)?,
            Inner::Cuda(s) => {
                s.context().bind_to_thread().map_err(self.driver("bind context"))?;
                // SAFETY: `src` holds at least `dst.len()` bytes on this
                // device; the stream is synchronised before `dst`'s borrow ends.
                unsafe { result::memcpy_dtoh_async(dst, src.device_ptr(), s.cu_stream()) }
                    .map_err(self.driver("cuMemcpyDtoHAsync"))?;
                s.synchronize().map_err(self.driver("stream synchronize"))?;
            }
            Inner::Emulated => {
                // SAFETY: `src` is a live emulated allocation of at least
                // `dst.len()` bytes, distinct from `dst`.
                unsafe { std::ptr::copy_nonoverlapping(src.device_ptr() as *const u8, dst.as_mut_ptr(), dst.len()) };
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
        match &self.inner {
            Inner::Cuda(s) => {
                s.context().bind_to_thread().map_err(self.driver("bind context"))?;
                // SAFETY: `dst` holds at least `len` bytes on this device and
                // stays allocated: pool reuse happens only after the buffer is
                // dropped, and callers synchronise before dropping.
                unsafe { result::memset_d8_async(dst.device_ptr(), 0, len, s.cu_stream()) }
                    .map_err(self.driver("cuMemsetD8Async"))
            }
            Inner::Emulated => {
                // SAFETY: `dst` is a live emulated allocation of at least `len` bytes.
                unsafe { std::ptr::write_bytes(dst.device_ptr() as *mut u8, 0, len) };
                Ok(())
            }
        }
    }

    /// Copies `src` to the start of `dst`, both on this device; asynchronous.
    pub fn copy_d2d(&self, src: &DeviceBuffer, dst: &DeviceBuffer) -> Result<Event> {
        check("copy source", self.device(), src.device())?;
        check("copy destination", self.device(), dst.device())?;
        fits(src.len(), dst.len())?;
        match &self.inner {
            Inner::Cuda(s) => {
                s.context().bind_to_thread().map_err(self.driver("bind context"))?;
                // SAFETY: both buffers are on this device and big enough; the
                // returned event keeps them alive until the copy is done.
                unsafe { result::memcpy_dtod_async(dst.device_ptr(), src.device_ptr(), src.len(), s.cu_stream()) }
                    .map_err(self.driver("cuMemcpyDtoDAsync"))?;
            }
            Inner::Emulated => {
                // SAFETY: both are live allocations of this device, big
                // enough; `copy` allows them to be the same buffer.
                unsafe { std::ptr::copy(src.device_ptr() as *const u8, dst.device_ptr() as *mut u8, src.len()) };
            }
        }
        self.count(CopyKind::D2d, src.len());
        self.record_guarding(vec![src.clone(), dst.clone()])
    }

    /// Copies `src` (on this stream's device) to the start of `dst` on another
    /// device: directly where the two devices have peer access, otherwise
    /// staged through pinned host memory.
    pub fn copy_peer(&self, src: &DeviceBuffer, dst: &DeviceBuffer) -> Result<Event> {
        check("copy source", self.device(), src.device())?;
        fits(src.len(), dst.len())?;
        if dst.device() == self.device() {
            return self.copy_d2d(src, dst);
        }
        let peer = self.gpu.can_access_peer(dst.gpu());
        match (&self.inner, dst.gpu().backend(), peer) {
            (Inner::Cuda(s), GpuBackend::Cuda(d), true) => {
                s.context().bind_to_thread().map_err(self.driver("bind context"))?;
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
                self.record_guarding(vec![src.clone(), dst.clone()])
            }
            (Inner::Emulated, GpuBackend::Emulated(_), true) => {
                // SAFETY: distinct live allocations of two emulated devices,
                // both at least `src.len()` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.device_ptr() as *const u8, dst.device_ptr() as *mut u8, src.len())
                };
                self.count(CopyKind::Peer, src.len());
                self.record()
            }
            _ => {
                let mut staging = self.gpu.staging(src.len())?;
                self.copy_d2h(src, staging.as_mut_slice())?;
                let dst_stream = dst.gpu().stream()?;
                dst_stream.copy_h2d(staging.as_slice(), dst)?;
                self.count(CopyKind::Staged, src.len());
                self.record()
            }
        }
    }
}
