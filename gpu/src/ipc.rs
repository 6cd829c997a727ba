//! Device memory read by another process on this node (device IPC).
//!
//! A producer describes a device buffer with [`DeviceBuffer::ipc_handle`]:
//! a CUDA IPC handle (`cuIpcGetMemHandle`) of the allocation holding it, or
//! for an emulated GPU the memfd its block lives in (see
//! [`crate::EmulatedGpu`]), plus the buffer's offset and length there. A
//! consumer on the same node calls [`Gpu::ipc_copy`]: it opens the
//! producer's memory (`cuIpcOpenMemHandle`, or `/proc/PID/fd/FD` and a
//! read-only mapping), copies the bytes device to device into a buffer of
//! its own GPU's pool, and closes the mapping at once. The consumer thus
//! never keeps the producer's memory mapped; the producer only has to keep
//! the buffer alive (not freed, not reused by its pool) until the consumer
//! says it has copied it, which the runtime's data plane does by holding a
//! clone of the buffer until then. Everything that can fail here (another
//! node or pid namespace, a producer gone, a handle of another kind) is an
//! error the caller answers by having the bytes sent over its socket.

use std::sync::Arc;

use cudarc::driver::sys as cu;
use serde::{Deserialize, Serialize};

use crate::buffer::DeviceBuffer;
use crate::cuda::{address_range, bind_context, driver};
use crate::device::{Gpu, GpuBackend};
use crate::emulated::CopyKind;
use crate::{Device, GpuError, Result};

/// A device buffer of another process, as its producer describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcHandle {
    /// The producer's process id.
    pub pid: u32,
    /// The producer's device.
    pub device: Device,
    /// The allocation, by backend.
    pub memory: IpcMemory,
    /// Where the buffer starts in the allocation.
    pub offset: u64,
    /// The buffer's length in bytes.
    pub len: u64,
}

/// How the consumer opens the producer's allocation: the backend seam of
/// device IPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpcMemory {
    /// The 64 bytes of a `CUipcMemHandle`.
    Cuda(Vec<u8>),
    /// An emulated GPU's memfd block: the producer's descriptor, the
    /// memfd's inode (checked after opening, since descriptor numbers are
    /// reused) and the block's size.
    Emulated {
        /// Descriptor number in the producer.
        fd: i32,
        /// Inode of the memfd.
        ino: u64,
        /// Bytes of the block.
        size: u64,
    },
}

impl DeviceBuffer {
    /// Describes this buffer so that another process on this node can copy
    /// it with [`Gpu::ipc_copy`]. The buffer must stay alive until it has.
    /// Fails for an emulated block too small to live in a memfd (below
    /// [`crate::IPC_MIN`] bytes once rounded to its pool size class) and
    /// where the driver refuses.
    pub fn ipc_handle(&self) -> Result<IpcHandle> {
        let device = self.device();
        let refused = |reason: String| GpuError::Ipc { device, reason };
        let (memory, offset) = match self.gpu().backend() {
            GpuBackend::Emulated(gpu) => {
                let (fd, ino, size) = gpu
                    .shared_block(self.device_ptr())
                    .ok_or_else(|| refused(format!("a block of {} bytes is not in shared memory", self.len())))?;
                (
                    IpcMemory::Emulated {
                        fd,
                        ino,
                        size: size as u64,
                    },
                    0,
                )
            }
            GpuBackend::Cuda(gpu) => {
                bind_context(gpu.context(), device)?;
                let (base, _) = address_range(self.device_ptr()).map_err(driver(device, "cuMemGetAddressRange"))?;
                // SAFETY: an all-zero handle is a valid out-value.
                let mut handle: cu::CUipcMemHandle = unsafe { std::mem::zeroed() };
                // SAFETY: `base` is a live allocation of this context.
                unsafe { cu::cuIpcGetMemHandle(&mut handle, base) }
                    .result()
                    .map_err(driver(device, "cuIpcGetMemHandle"))?;
                let bytes = handle.reserved.iter().map(|&b| b as u8).collect();
                (IpcMemory::Cuda(bytes), self.device_ptr() - base)
            }
        };
        Ok(IpcHandle {
            pid: std::process::id(),
            device,
            memory,
            offset,
            len: self.len() as u64,
        })
    }
}

impl Gpu {
    /// Copies the buffer `handle` describes, device to device, into a new
    /// buffer of this GPU's pool, and lets go of the producer's memory.
    /// Fails when the handle is of another backend or of this process
    /// (CUDA cannot open its own handles), or its memory cannot be opened.
    pub fn ipc_copy(self: &Arc<Self>, handle: &IpcHandle) -> Result<DeviceBuffer> {
        let device = self.device();
        let refused = |reason: String| GpuError::Ipc { device, reason };
        if handle.pid == std::process::id() {
            return Err(refused("the handle is this process's own".into()));
        }
        let len = usize::try_from(handle.len).map_err(|e| refused(e.to_string()))?;
        let copied = self.copy_in(handle, len)?;
        self.count_ipc_copy();
        Ok(copied)
    }

    fn copy_in(self: &Arc<Self>, handle: &IpcHandle, len: usize) -> Result<DeviceBuffer> {
        let device = self.device();
        let refused = |reason: String| GpuError::Ipc { device, reason };
        match (self.backend(), &handle.memory) {
            (GpuBackend::Emulated(gpu), IpcMemory::Emulated { fd, ino, size }) => {
                let end = handle.offset.checked_add(handle.len);
                if end.is_none_or(|end| end > *size) {
                    return Err(refused(format!("{len} bytes at {} overrun the block", handle.offset)));
                }
                let map = sys::Remote::open(handle.pid, *fd, *ino, *size).map_err(refused)?;
                let dst = self.alloc(len)?;
                let src = &map.bytes()[handle.offset as usize..][..len];
                // SAFETY: `dst` is a live emulated block of at least `len`
                // bytes, distinct from the producer's mapping.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.device_ptr() as *mut u8, len) };
                gpu.count(CopyKind::Ipc, len);
                Ok(dst)
            }
            (GpuBackend::Cuda(gpu), IpcMemory::Cuda(bytes)) => {
                // SAFETY: an all-zero handle is valid to fill.
                let mut raw: cu::CUipcMemHandle = unsafe { std::mem::zeroed() };
                if bytes.len() != raw.reserved.len() {
                    return Err(refused(format!("a CUDA IPC handle of {} bytes", bytes.len())));
                }
                for (to, from) in raw.reserved.iter_mut().zip(bytes) {
                    *to = *from as _;
                }
                let ctx = gpu.context();
                bind_context(ctx, device)?;
                let mut base = 0;
                // SAFETY: the context is current; `base` is writable.
                unsafe {
                    cu::cuIpcOpenMemHandle_v2(
                        &mut base,
                        raw,
                        cu::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32,
                    )
                }
                .result()
                .map_err(|e| refused(format!("cuIpcOpenMemHandle: {e}")))?;
                let copied = address_range(base)
                    .map_err(driver(device, "cuMemGetAddressRange"))
                    .and_then(|(_, size)| {
                        // The offset and length came over the wire: a copy past
                        // the mapping would fault the copy engine and leave
                        // this context unusable.
                        let end = handle.offset.checked_add(handle.len);
                        if end.is_none_or(|end| end > size as u64) {
                            return Err(refused(format!(
                                "{len} bytes at {} overrun the mapped allocation of {size} bytes",
                                handle.offset
                            )));
                        }
                        let dst = self.alloc(len)?;
                        let stream = self.thread_stream()?;
                        let s = stream.cuda_stream().ok_or_else(|| refused("no CUDA stream".into()))?;
                        bind_context(ctx, device)?;
                        // SAFETY: `base + offset` holds `len` bytes of the
                        // producer's allocation (checked above), mapped until
                        // the close below; `dst` holds `len` bytes; the stream
                        // is synchronised before the mapping is closed.
                        unsafe {
                            cudarc::driver::result::memcpy_dtod_async(
                                dst.device_ptr(),
                                base + handle.offset,
                                len,
                                s.cu_stream(),
                            )
                        }
                        .map_err(driver(device, "cuMemcpyDtoDAsync"))?;
                        stream.synchronize()?;
                        Ok(dst)
                    });
                // The producer frees its block once told the copy is done:
                // the mapping must be closed by then (and in this context,
                // which an allocation's reclaim may have unbound).
                let closed = bind_context(ctx, device).and_then(|()| {
                    // SAFETY: `base` was opened above and is closed once.
                    unsafe { cu::cuIpcCloseMemHandle(base) }
                        .result()
                        .map_err(driver(device, "cuIpcCloseMemHandle"))
                });
                copied.and_then(|dst| closed.map(|()| dst))
            }
            _ => Err(refused(format!(
                "a handle to {} memory cannot be opened on {device}",
                handle.device
            ))),
        }
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod sys {
    //! Memfd blocks of emulated GPUs, and opening another process's.

    use std::fs::File;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::MetadataExt;

    use crate::emulated::SharedBlock;

    /// A fresh memfd of `size` bytes mapped read-write (zeroed, as the
    /// kernel hands out pages): its address and the block.
    pub(crate) fn shared_block(size: usize) -> std::io::Result<(u64, SharedBlock)> {
        // SAFETY: a static name; flags are valid.
        let fd = unsafe { libc::memfd_create(c"weft-emulated-gpu".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own from here on.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size as u64)?;
        let ino = file.metadata()?.ino();
        let ptr = map(&file, size, true)?;
        Ok((ptr as u64, SharedBlock { file, ino, size }))
    }

    fn map(file: &File, size: usize, write: bool) -> std::io::Result<*mut u8> {
        let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
        // SAFETY: maps `size` bytes of an open file; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size.max(1),
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ptr.cast())
    }

    /// Unmaps a block from [`shared_block`] (its file closes with it).
    pub(crate) fn unmap(ptr: u64, size: usize) {
        // SAFETY: `ptr..ptr+size` is a mapping made by `map`, unmapped once.
        unsafe { libc::munmap(ptr as *mut libc::c_void, size.max(1)) };
    }

    pub(crate) fn raw_fd(file: &File) -> i32 {
        file.as_raw_fd()
    }

    /// Another process's block, mapped read-only here until dropped.
    pub(crate) struct Remote {
        ptr: *mut u8,
        size: usize,
    }

    impl Remote {
        /// Opens `/proc/PID/fd/FD`, checks that it is still the memfd
        /// described, and maps it.
        pub(crate) fn open(pid: u32, fd: i32, ino: u64, size: u64) -> Result<Remote, String> {
            let path = format!("/proc/{pid}/fd/{fd}");
            let file = File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
            let meta = file.metadata().map_err(|e| format!("cannot stat {path}: {e}"))?;
            if meta.ino() != ino || meta.len() != size {
                return Err(format!("{path} is no longer the block described"));
            }
            let size = usize::try_from(size).map_err(|e| e.to_string())?;
            let ptr = map(&file, size, false).map_err(|e| format!("cannot map {path}: {e}"))?;
            Ok(Remote { ptr, size })
        }

        pub(crate) fn bytes(&self) -> &[u8] {
            // SAFETY: the mapping covers `size` readable bytes while `self` lives.
            unsafe { std::slice::from_raw_parts(self.ptr, self.size) }
        }
    }

    impl Drop for Remote {
        fn drop(&mut self) {
            unmap(self.ptr as u64, self.size);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) mod sys {
    //! No memfds off Linux: emulated blocks stay private.

    use crate::emulated::SharedBlock;

    fn unsupported() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::Unsupported, "device IPC needs Linux")
    }

    pub(crate) fn shared_block(_: usize) -> std::io::Result<(u64, SharedBlock)> {
        Err(unsupported())
    }

    pub(crate) fn unmap(_: u64, _: usize) {}

    pub(crate) fn raw_fd(_: &std::fs::File) -> i32 {
        -1
    }

    pub(crate) struct Remote;

    impl Remote {
        pub(crate) fn open(_: u32, _: i32, _: u64, _: u64) -> Result<Remote, String> {
            Err(unsupported().to_string())
        }

        pub(crate) fn bytes(&self) -> &[u8] {
            &[]
        }
    }
}
