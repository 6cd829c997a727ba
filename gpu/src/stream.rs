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

enum Inner {
    Cuda(Arc<CudaStream>),
    Emulated,
}

/// An ordered queue of work on one device.
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

impl Stream {
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
        check("copy destination", self.device(), dst.device())?;
        fits(src.len(), dst.len())?;
        match &self.inner {
            Inner::Cuda(s) => {
                s.context().bind_to_thread().map_err(self.driver("bind context"))?;
                // SAFETY: `dst` holds at least `src.len()` bytes on this
                // device; the stream is synchronised before `src`'s borrow ends.
                unsafe { result::memcpy_htod_async(dst.device_ptr(), src, s.cu_stream()) }
                    .map_err(self.driver("cuMemcpyHtoDAsync"))?;
                s.synchronize().map_err(self.driver("stream synchronize"))?;
            }
            Inner::Emulated => {
                // SAFETY: `dst` is a live emulated allocation of at least
                // `src.len()` bytes, distinct from host memory in `src`.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.device_ptr() as *mut u8, src.len()) };
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
