//! Buffers: device memory (pooled, knowing its device), pinned host
//! memory, and [`Buffer`], which holds either, or ordinary host bytes.

use std::alloc::Layout;
use std::sync::Arc;

use bytes::Bytes;
use cudarc::driver::{CudaContext, result};

use crate::cuda::{bind_context, cuda_device, log_failure};
use crate::{Device, Gpu, Result};

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

    /// The first `len` bytes, copied into fresh pageable host memory on
    /// the calling thread's stream, after the work queued there; large
    /// copies go through the device's pinned staging chunks, so no pinned
    /// memory of the buffer's size is made or kept.
    pub fn download(&self, len: usize) -> Result<Bytes> {
        let mut words = crate::zeroed_words(len.div_ceil(8));
        let out = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len];
        self.gpu().thread_stream()?.copy_d2h(self, out)?;
        Ok(Bytes::from_owner(PodVec(words)).slice(..len))
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
                let device = cuda_device(ctx);
                if let Err(error) = bind_context(ctx, device) {
                    tracing::warn!(%error, "freeing pinned memory anyway");
                }
                // SAFETY: `ptr` came from cuMemHostAlloc and is freed once.
                log_failure(device, "cuMemFreeHost", unsafe { result::free_host(self.ptr.cast()) });
            }
            // SAFETY: allocated in `host` with this layout.
            PinnedKind::Host(layout) => unsafe { std::alloc::dealloc(self.ptr, *layout) },
        }
    }
}

impl AsRef<[u8]> for PinnedBuffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Bytes in host memory (ordinary or pinned) or in a device's memory: the
/// one buffer type that transport frames, kernel columns and the store
/// hold. Cloning shares the memory; nothing is copied unless a method
/// says so.
///
/// ```
/// use weft_gpu::{Buffer, Device};
///
/// let b = Buffer::from_vec(vec![1.5f64, 2.5]);
/// assert_eq!((b.len(), b.location()), (16, Device::Cpu));
/// let arrow = b.to_arrow().unwrap(); // the same memory, as an arrow buffer
/// assert_eq!(arrow.typed_data::<f64>(), &[1.5, 2.5]);
/// ```
#[derive(Clone)]
pub struct Buffer {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Host { bytes: Bytes, pinned: bool },
    Device(DeviceBuffer),
}

/// Keeps a vector of plain values alive behind a [`Bytes`].
struct PodVec<T>(Vec<T>);

impl<T: bytemuck::Pod> AsRef<[u8]> for PodVec<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Keeps an arrow buffer alive behind a [`Bytes`].
struct ArrowOwner(arrow_buffer::Buffer);

impl AsRef<[u8]> for ArrowOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Alignment a host buffer must have to be read as any arrow type in place
/// (`i128` and the 128-bit decimals need 16 bytes).
pub const HOST_ALIGN: usize = 16;

impl Buffer {
    /// Ordinary host memory.
    pub fn host(bytes: impl Into<Bytes>) -> Self {
        Buffer {
            repr: Repr::Host {
                bytes: bytes.into(),
                pinned: false,
            },
        }
    }

    /// Page-locked host memory (stays pinned while any clone lives).
    pub fn pinned(buffer: PinnedBuffer) -> Self {
        let pinned = buffer.is_pinned();
        Buffer {
            repr: Repr::Host {
                bytes: Bytes::from_owner(buffer),
                pinned,
            },
        }
    }

    /// Device memory.
    pub fn device(buffer: DeviceBuffer) -> Self {
        Buffer {
            repr: Repr::Device(buffer),
        }
    }

    /// Host memory taking over a vector of plain values (no copy; aligned
    /// for `T`).
    pub fn from_vec<T: bytemuck::Pod + Send>(values: Vec<T>) -> Self {
        Buffer::host(Bytes::from_owner(PodVec(values)))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Host { bytes, .. } => bytes.len(),
            Repr::Device(buffer) => buffer.len(),
        }
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the bytes live: [`Device::Cpu`] for host memory.
    pub fn location(&self) -> Device {
        match &self.repr {
            Repr::Host { .. } => Device::Cpu,
            Repr::Device(buffer) => buffer.device(),
        }
    }

    /// True for page-locked host memory.
    pub fn is_pinned(&self) -> bool {
        matches!(self.repr, Repr::Host { pinned: true, .. })
    }

    /// The bytes, if they are in host memory.
    pub fn as_host(&self) -> Option<&Bytes> {
        match &self.repr {
            Repr::Host { bytes, .. } => Some(bytes),
            Repr::Device(_) => None,
        }
    }

    /// The device memory, if the bytes are on a device.
    pub fn as_device(&self) -> Option<&DeviceBuffer> {
        match &self.repr {
            Repr::Host { .. } => None,
            Repr::Device(buffer) => Some(buffer),
        }
    }

    /// The bytes in host memory: shared for host memory, downloaded for
    /// device memory ([`DeviceBuffer::download`]).
    pub fn to_host(&self) -> Result<Bytes> {
        match &self.repr {
            Repr::Host { bytes, .. } => Ok(bytes.clone()),
            Repr::Device(buffer) => buffer.download(buffer.len()),
        }
    }

    /// The host bytes as an arrow buffer: the same memory when it is
    /// aligned to [`HOST_ALIGN`] (as memory from an allocator is), one
    /// aligned copy when not (bytes received at an odd offset), so arrow
    /// can read any type from it in place. `None` for device memory.
    pub fn to_arrow(&self) -> Option<arrow_buffer::Buffer> {
        let bytes = self.as_host()?;
        if (bytes.as_ptr() as usize).is_multiple_of(HOST_ALIGN) {
            return Some(arrow_buffer::Buffer::from(bytes.clone()));
        }
        // `u128` words are 16-byte aligned; a vector of them holds the copy.
        let mut words = vec![0u128; bytes.len().div_ceil(16)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Some(arrow_buffer::Buffer::from_vec(words).slice_with_length(0, bytes.len()))
    }
}

impl From<arrow_buffer::Buffer> for Buffer {
    /// Host memory shared with arrow (no copy).
    fn from(buffer: arrow_buffer::Buffer) -> Self {
        Buffer::host(Bytes::from_owner(ArrowOwner(buffer)))
    }
}

impl From<Bytes> for Buffer {
    fn from(bytes: Bytes) -> Self {
        Buffer::host(bytes)
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(bytes: Vec<u8>) -> Self {
        Buffer::host(bytes)
    }
}

impl PartialEq for Buffer {
    /// Host buffers compare by content, device buffers by identity (the
    /// same device memory).
    fn eq(&self, other: &Self) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Host { bytes: a, .. }, Repr::Host { bytes: b, .. }) => a == b,
            (Repr::Device(a), Repr::Device(b)) => {
                a.device() == b.device() && a.device_ptr() == b.device_ptr() && a.len() == b.len()
            }
            _ => false,
        }
    }
}

impl Eq for Buffer {}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pinned = if self.is_pinned() { ", pinned" } else { "" };
        write!(f, "Buffer({:?}{pinned}, {} bytes)", self.location(), self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_is_shared_with_arrow_both_ways() {
        let b = Buffer::from_vec(vec![7i64, 8, 9]);
        let arrow = b.to_arrow().expect("host");
        assert_eq!(arrow.as_ptr(), b.as_host().expect("host").as_ptr());
        let back = Buffer::from(arrow.clone());
        assert_eq!(back.as_host().expect("host").as_ptr(), arrow.as_ptr());
        assert_eq!(back, b);
    }

    #[test]
    fn misaligned_host_bytes_are_copied_once_into_aligned_memory() {
        let whole = Buffer::from_vec(vec![0u64; 5]);
        let odd = Buffer::host(whole.as_host().expect("host").slice(1..33));
        let arrow = odd.to_arrow().expect("host");
        assert!((arrow.as_ptr() as usize).is_multiple_of(HOST_ALIGN));
        assert_eq!(arrow.as_slice(), &odd.as_host().expect("host")[..]);
    }

    #[test]
    fn pinned_memory_says_so_only_when_the_driver_locked_it() {
        let b = Buffer::pinned(PinnedBuffer::host(64));
        assert_eq!((b.len(), b.is_pinned(), b.location()), (64, false, Device::Cpu));
    }
}
