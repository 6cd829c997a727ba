//! Device buffers (pooled, knowing their device) and pinned host buffers.

use std::alloc::Layout;
use std::sync::Arc;

use cudarc::driver::{CudaContext, result};

use crate::{Device, Gpu};

struct Allocation {
    gpu: Arc<Gpu>,
    ptr: u64,
    len: usize,
    class: usize,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.gpu.release(self.ptr, self.class, self.len);
    }
}

/// Device memory from a device's pool. Cloning shares the same memory; the
/// block goes back to the pool when the last clone is dropped (events of
/// pending copies hold a clone, so memory is not reused under a copy).
#[derive(Clone)]
pub struct DeviceBuffer {
    alloc: Arc<Allocation>,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("device", &self.device())
            .field("ptr", &format_args!("{:#x}", self.alloc.ptr))
            .field("len", &self.alloc.len)
            .finish()
    }
}

impl DeviceBuffer {
    pub(crate) fn new(gpu: Arc<Gpu>, ptr: u64, len: usize, class: usize) -> Self {
        DeviceBuffer {
            alloc: Arc::new(Allocation { gpu, ptr, len, class }),
        }
    }

    /// The device the memory is on.
    pub fn device(&self) -> Device {
        self.alloc.gpu.device()
    }

    /// The opened GPU the memory is on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.alloc.gpu
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.alloc.len
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.alloc.len == 0
    }

    /// Bytes reserved behind this buffer (its size class); kernels may touch
    /// up to this many, which lets them work in whole words past `len`.
    pub fn capacity(&self) -> usize {
        self.alloc.class
    }

    /// The device address: a `CUdeviceptr` on CUDA, a host address in the
    /// emulated device's own allocations on emulated GPUs.
    pub fn device_ptr(&self) -> u64 {
        self.alloc.ptr
    }
}

enum PinnedKind {
    Cuda(Arc<CudaContext>),
    Host(Layout),
}

/// Page-locked host memory for staging copies (ordinary host memory when no
/// CUDA device owns it).
pub struct PinnedBuffer {
    ptr: *mut u8,
    len: usize,
    kind: PinnedKind,
}

// SAFETY: the buffer owns its memory exclusively; access goes through `&`/`&mut`.
unsafe impl Send for PinnedBuffer {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for PinnedBuffer {}

impl std::fmt::Debug for PinnedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedBuffer")
            .field("len", &self.len)
            .field("cuda", &matches!(self.kind, PinnedKind::Cuda(_)))
            .finish()
    }
}

impl PinnedBuffer {
    /// Zeroed host memory standing in for pinned memory.
    pub fn host(len: usize) -> Self {
        // 4 KiB alignment like page-locked memory; size at least 1 for the allocator.
        let layout = Layout::from_size_align(len.max(1), 4096).unwrap_or_else(|_| Layout::new::<u8>());
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        PinnedBuffer {
            ptr,
            len,
            kind: PinnedKind::Host(layout),
        }
    }

    /// # Safety
    /// `ptr` must come from `cuMemHostAlloc` in `ctx` with at least `len` bytes.
    pub(crate) unsafe fn from_cuda(ctx: Arc<CudaContext>, ptr: *mut u8, len: usize) -> Self {
        // SAFETY: the caller guarantees `len` bytes at `ptr`; zero them so
        // reads before the first copy see defined bytes.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        PinnedBuffer {
            ptr,
            len,
            kind: PinnedKind::Cuda(ctx),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the memory is page-locked by the CUDA driver.
    pub fn is_pinned(&self) -> bool {
        matches!(self.kind, PinnedKind::Cuda(_))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` holds `len` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        match &self.kind {
            PinnedKind::Cuda(ctx) => {
                ctx.record_err(ctx.bind_to_thread());
                // SAFETY: `ptr` came from cuMemHostAlloc and is freed once.
                ctx.record_err(unsafe { result::free_host(self.ptr.cast()) });
            }
            // SAFETY: allocated in `host` with this layout.
            PinnedKind::Host(layout) => unsafe { std::alloc::dealloc(self.ptr, *layout) },
        }
    }
}
