//! The CUDA backend: the driver API through cudarc, loaded at run time.
//!
//! cudarc panics when asked for a driver function and `libcuda.so` is
//! missing, so [`probe_cuda`] checks for the library before touching it.

use std::sync::Arc;

use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaContext, DriverError, result, sys};

use crate::buffer::PinnedBuffer;
use crate::device::Geometry;
use crate::{Device, GpuError, Result};

/// How many CUDA GPUs there are, or why there are none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaProbe {
    /// Number of usable CUDA devices.
    pub count: u32,
    /// Why `count` is zero, when it is.
    pub reason: Option<String>,
}

impl CudaProbe {
    pub(crate) fn none(reason: impl Into<String>) -> Self {
        CudaProbe {
            count: 0,
            reason: Some(reason.into()),
        }
    }
}

/// Looks for CUDA GPUs without ever panicking.
pub fn probe_cuda() -> CudaProbe {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return CudaProbe::none("CUDA driver library (libcuda.so) not found");
    }
    if let Err(e) = result::init() {
        return CudaProbe::none(format!("cuInit failed: {e}"));
    }
    match result::device::get_count() {
        Ok(0) => CudaProbe::none("the CUDA driver reports no devices"),
        Ok(n) => CudaProbe {
            count: u32::try_from(n).unwrap_or(0),
            reason: None,
        },
        Err(e) => CudaProbe::none(format!("cuDeviceGetCount failed: {e}")),
    }
}

/// An opened CUDA device: its primary context.
#[derive(Debug)]
pub struct CudaGpu {
    ctx: Arc<CudaContext>,
    total: usize,
    geometry: Geometry,
}

/// A driver error of `op` on `device`.
pub(crate) fn driver(device: Device, op: &'static str) -> impl FnOnce(DriverError) -> GpuError {
    move |source| GpuError::Driver { device, op, source }
}

/// The device a cudarc context belongs to.
pub(crate) fn cuda_device(ctx: &CudaContext) -> Device {
    Device::Cuda(u32::try_from(ctx.ordinal()).unwrap_or(u32::MAX))
}

/// The start and size of the allocation holding `ptr`, a device address
/// of the current context.
pub(crate) fn address_range(ptr: u64) -> std::result::Result<(u64, usize), DriverError> {
    let (mut base, mut size) = (0, 0);
    // SAFETY: out-pointers are writable; the driver checks `ptr`.
    unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, ptr) }.result()?;
    Ok((base, size))
}

/// Logs and clears the error cudarc keeps for `ctx` from a call that had no
/// caller to tell (a failed free in a destructor). cudarc returns that
/// error from whichever call next binds the context, on any thread,
/// *instead of* doing the call: a synchronisation would then return
/// without waiting. Every binding and every cudarc call that binds goes
/// through here first, so a stale error is logged once and never skips
/// work or fails an unrelated op.
pub fn clear_stored_error(ctx: &CudaContext, device: Device) {
    if let Err(error) = ctx.check_err() {
        tracing::warn!(%device, %error, "an earlier CUDA call failed where no caller could be told");
    }
}

/// Makes `ctx` current on the calling thread (see [`clear_stored_error`]).
pub fn bind_context(ctx: &CudaContext, device: Device) -> Result<()> {
    clear_stored_error(ctx, device);
    ctx.bind_to_thread().map_err(driver(device, "bind context"))
}

/// Logs the failure of a call made where no error can be returned (a
/// destructor).
pub(crate) fn log_failure(device: Device, op: &'static str, result: std::result::Result<(), DriverError>) {
    if let Err(error) = result {
        tracing::warn!(%device, %error, "{op} failed");
    }
}

impl CudaGpu {
    pub(crate) fn open(ordinal: u32) -> Result<Self> {
        let device = Device::Cuda(ordinal);
        let ctx = CudaContext::new(ordinal as usize).map_err(driver(device, "open context"))?;
        let total = ctx.total_mem().map_err(driver(device, "query memory"))?;
        let attr = |a| ctx.attribute(a).map_err(driver(device, "cuDeviceGetAttribute"));
        let geometry = Geometry {
            multiprocessors: u32::try_from(attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?)
                .unwrap_or(1)
                .max(1),
            max_threads_per_multiprocessor: u32::try_from(attr(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR,
            )?)
            .unwrap_or(1024)
            .max(32),
        };
        Ok(CudaGpu { ctx, total, geometry })
    }

    /// The cudarc context, for kernel launchers and cuBLAS.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub(crate) fn total_memory(&self) -> usize {
        self.total
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub(crate) fn raw_alloc(&self, device: Device, bytes: usize) -> Result<u64> {
        bind_context(&self.ctx, device)?;
        // SAFETY: the context is current; the pool owns the block and frees it
        // exactly once through `raw_free`.
        match unsafe { result::malloc_sync(bytes) } {
            Ok(ptr) => Ok(ptr),
            Err(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)) => Err(GpuError::OutOfMemory {
                device,
                requested: bytes,
                in_use: 0,
                capacity: self.total,
            }),
            Err(e) => Err(driver(device, "cuMemAlloc")(e)),
        }
    }

    pub(crate) fn raw_free(&self, ptr: u64) {
        let device = cuda_device(&self.ctx);
        if let Err(error) = bind_context(&self.ctx, device) {
            tracing::warn!(%error, "freeing device memory anyway");
        }
        // SAFETY: `ptr` came from `raw_alloc` on this context and the pool
        // frees each block once.
        log_failure(device, "cuMemFree", unsafe { result::free_sync(ptr) });
    }

    pub(crate) fn alloc_pinned(&self, device: Device, len: usize) -> Result<PinnedBuffer> {
        bind_context(&self.ctx, device)?;
        // SAFETY: the context is current; the buffer frees it with cuMemFreeHost.
        let ptr = unsafe { result::malloc_host(len.max(1), sys::CU_MEMHOSTALLOC_PORTABLE) }
            .map_err(driver(device, "cuMemHostAlloc"))?;
        // SAFETY: `ptr` is a fresh pinned allocation of at least `len` bytes.
        Ok(unsafe { PinnedBuffer::from_cuda(self.ctx.clone(), ptr.cast(), len) })
    }

    /// Why the context can no longer be used, if it cannot: the error a
    /// synchronisation of the whole context returns. Launches report only
    /// bad arguments themselves; a fault while running (an illegal address,
    /// a failed launch) is sticky and returned by every synchronisation
    /// until the process exits.
    pub(crate) fn lost(&self) -> Option<String> {
        if let Err(error) = bind_context(&self.ctx, cuda_device(&self.ctx)) {
            return Some(error.to_string());
        }
        result::ctx::synchronize().err().map(|error| error.to_string())
    }

    /// Lets this context read and write `other`'s memory directly, where
    /// the hardware allows. Returns whether peer access is on.
    pub(crate) fn enable_peer_access(&self, other: &CudaGpu) -> bool {
        if !self.can_access_peer(other) || bind_context(&self.ctx, cuda_device(&self.ctx)).is_err() {
            return false;
        }
        // SAFETY: this context is current and `other`'s context is live.
        let r = unsafe { sys::cuCtxEnablePeerAccess(other.ctx.cu_ctx(), 0) };
        matches!(
            r,
            CUresult::CUDA_SUCCESS | CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED
        )
    }

    pub(crate) fn can_access_peer(&self, other: &CudaGpu) -> bool {
        let mut can = 0;
        // SAFETY: both devices are valid handles from opened contexts.
        let r = unsafe { sys::cuDeviceCanAccessPeer(&mut can, self.ctx.cu_device(), other.ctx.cu_device()) };
        r == CUresult::CUDA_SUCCESS && can != 0
    }
}
