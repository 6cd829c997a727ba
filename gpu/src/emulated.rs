//! Emulated GPUs: host memory posing as device memory, for CI.
//!
//! Each emulated GPU keeps its own allocations (its address space), enforces
//! its capacity, and counts the copies into, out of and between devices so
//! tests can check that data moved the way it should.
//!
//! Blocks of [`IPC_MIN`] bytes or more live in a Linux memfd of their own,
//! as CUDA allocations live in memory the driver can share: another process
//! on this host then reads them through `/proc/PID/fd/FD` (see
//! [`crate::ipc`]), which exercises the device IPC protocol without a GPU.

use std::alloc::Layout;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Device, GpuError, Result};

/// Device blocks are aligned like `cudaMalloc`'s.
const ALIGN: usize = 256;

/// Blocks from this size up live in a memfd, readable by other processes.
pub const IPC_MIN: usize = 1 << 20;

/// Copies counted on one emulated device (as source for device-to-host and
/// peer copies, as destination for host-to-device copies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyCounters {
    /// Host-to-device copies into this device.
    pub h2d: u64,
    /// Device-to-host copies out of this device.
    pub d2h: u64,
    /// Copies within this device.
    pub d2d: u64,
    /// Direct peer copies out of this device.
    pub peer: u64,
    /// Peer copies out of this device staged through pinned host memory.
    pub staged: u64,
    /// Copies into this device out of another process's device memory
    /// (device IPC, see [`crate::ipc`]).
    pub ipc: u64,
    /// Bytes moved by all of the above.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    h2d: AtomicU64,
    d2h: AtomicU64,
    d2d: AtomicU64,
    peer: AtomicU64,
    staged: AtomicU64,
    ipc: AtomicU64,
    bytes: AtomicU64,
}

/// The kinds of copy an emulated device counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CopyKind {
    H2d,
    D2h,
    D2d,
    Peer,
    Staged,
    Ipc,
}

/// An emulated GPU.
#[derive(Debug)]
pub struct EmulatedGpu {
    ordinal: u32,
    capacity: usize,
    peer_access: bool,
    asynchronous: bool,
    blocks: Mutex<Blocks>,
    counters: Counters,
    /// Why the device was lost ([`EmulatedGpu::lose`]).
    lost: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Blocks {
    used: usize,
    live: HashMap<u64, Block>,
}

/// One allocation: heap memory, or a memfd mapping from [`IPC_MIN`] bytes up.
#[derive(Debug)]
enum Block {
    Heap(usize),
    Shared(SharedBlock),
}

impl Block {
    fn size(&self) -> usize {
        match self {
            Block::Heap(size) => *size,
            Block::Shared(shared) => shared.size,
        }
    }

    /// Gives the memory back.
    fn free(self, ptr: u64) {
        match self {
            Block::Heap(size) => {
                if let Ok(layout) = Layout::from_size_align(size.max(1), ALIGN) {
                    // SAFETY: `ptr` was allocated by `raw_alloc` with this
                    // layout and is freed once (its entry was taken out).
                    unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
                }
            }
            Block::Shared(shared) => crate::ipc::sys::unmap(ptr, shared.size),
        }
    }
}

/// A block in a memfd of its own, mapped read-write here.
#[derive(Debug)]
pub(crate) struct SharedBlock {
    pub(crate) file: std::fs::File,
    pub(crate) ino: u64,
    pub(crate) size: usize,
}

impl EmulatedGpu {
    pub(crate) fn new(ordinal: u32, capacity: usize, peer_access: bool, asynchronous: bool) -> Self {
        EmulatedGpu {
            ordinal,
            capacity,
            peer_access,
            asynchronous,
            blocks: Mutex::new(Blocks::default()),
            counters: Counters::default(),
            lost: Mutex::new(None),
        }
    }

    /// Fault injection: from now on the device reports itself lost (see
    /// [`crate::Gpu::lost`]), as a CUDA device does after a sticky error
    /// (an illegal address, a failed launch) until its process exits.
    pub fn lose(&self, reason: impl Into<String>) {
        *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.into());
    }

    pub(crate) fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The ordinal among emulated GPUs.
    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    /// Whether its streams queue kernels, memsets and device copies until
    /// they are synchronised (see [`crate::Stream`]) instead of running them
    /// at once.
    pub fn asynchronous(&self) -> bool {
        self.asynchronous
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn peer_access(&self) -> bool {
        self.peer_access
    }

    /// Bytes currently taken from this device (by its pool, cached blocks included).
    pub fn used(&self) -> usize {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn raw_alloc(&self, device: Device, bytes: usize) -> Result<u64> {
        let mut blocks = self.lock();
        let out_of_memory = |in_use| GpuError::OutOfMemory {
            device,
            requested: bytes,
            in_use,
            capacity: self.capacity,
        };
        if blocks.used.saturating_add(bytes) > self.capacity {
            return Err(out_of_memory(blocks.used));
        }
        // Large blocks in a memfd, so that other processes can read them;
        // where memfds fail, on the heap (they are then not shareable).
        let shared = (bytes >= IPC_MIN)
            .then(|| crate::ipc::sys::shared_block(bytes))
            .and_then(std::result::Result::ok);
        let (ptr, block) = match shared {
            Some((ptr, shared)) => (ptr, Block::Shared(shared)),
            None => {
                let layout = Layout::from_size_align(bytes.max(1), ALIGN).map_err(|_| out_of_memory(blocks.used))?;
                // SAFETY: the layout has a non-zero size.
                let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
                if ptr.is_null() {
                    return Err(out_of_memory(blocks.used));
                }
                (ptr as u64, Block::Heap(bytes))
            }
        };
        blocks.used += bytes;
        blocks.live.insert(ptr, block);
        Ok(ptr)
    }

    pub(crate) fn raw_free(&self, ptr: u64) {
        let mut blocks = self.lock();
        // A pointer this device did not hand out is ignored rather than freed:
        // a drop handler must not panic, and freeing it would be unsound.
        if let Some(block) = blocks.live.remove(&ptr) {
            blocks.used -= block.size();
            block.free(ptr);
        }
    }

    /// What another process needs to read the block at `ptr` (the start of
    /// a block, as device buffers are): its memfd and inode and its size.
    pub(crate) fn shared_block(&self, ptr: u64) -> Option<(i32, u64, usize)> {
        match self.lock().live.get(&ptr)? {
            Block::Shared(shared) => Some((crate::ipc::sys::raw_fd(&shared.file), shared.ino, shared.size)),
            Block::Heap(_) => None,
        }
    }

    pub(crate) fn count(&self, kind: CopyKind, bytes: usize) {
        let c = &self.counters;
        let counter = match kind {
            CopyKind::H2d => &c.h2d,
            CopyKind::D2h => &c.d2h,
            CopyKind::D2d => &c.d2d,
            CopyKind::Peer => &c.peer,
            CopyKind::Staged => &c.staged,
            CopyKind::Ipc => &c.ipc,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The copies counted so far.
    pub fn copies(&self) -> CopyCounters {
        let c = &self.counters;
        CopyCounters {
            h2d: c.h2d.load(Ordering::Relaxed),
            d2h: c.d2h.load(Ordering::Relaxed),
            d2d: c.d2d.load(Ordering::Relaxed),
            peer: c.peer.load(Ordering::Relaxed),
            staged: c.staged.load(Ordering::Relaxed),
            ipc: c.ipc.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for EmulatedGpu {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut *self.lock());
        for (ptr, block) in blocks.live {
            block.free(ptr);
        }
    }
}
