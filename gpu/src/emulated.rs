//! Emulated GPUs: host memory posing as device memory, for CI.
//!
//! Each emulated GPU keeps its own allocations (its address space), enforces
//! its capacity, and counts the copies into, out of and between devices so
//! tests can check that data moved the way it should.

use std::alloc::Layout;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Device, GpuError, Result};

/// Device blocks are aligned like `cudaMalloc`'s.
const ALIGN: usize = 256;

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
}

/// An emulated GPU.
#[derive(Debug)]
pub struct EmulatedGpu {
    ordinal: u32,
    capacity: usize,
    peer_access: bool,
    blocks: Mutex<Blocks>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Blocks {
    used: usize,
    live: HashMap<u64, usize>,
}

impl EmulatedGpu {
    pub(crate) fn new(ordinal: u32, capacity: usize, peer_access: bool) -> Self {
        EmulatedGpu {
            ordinal,
            capacity,
            peer_access,
            blocks: Mutex::new(Blocks::default()),
            counters: Counters::default(),
        }
    }

    /// The ordinal among emulated GPUs.
    pub fn ordinal(&self) -> u32 {
        self.ordinal
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
        if blocks.used.saturating_add(bytes) > self.capacity {
            return Err(GpuError::OutOfMemory {
                device,
                requested: bytes,
                in_use: blocks.used,
                capacity: self.capacity,
            });
        }
        let layout = Layout::from_size_align(bytes.max(1), ALIGN).map_err(|_| GpuError::OutOfMemory {
            device,
            requested: bytes,
            in_use: blocks.used,
            capacity: self.capacity,
        })?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(GpuError::OutOfMemory {
                device,
                requested: bytes,
                in_use: blocks.used,
                capacity: self.capacity,
            });
        }
        blocks.used += bytes;
        blocks.live.insert(ptr as u64, bytes);
        Ok(ptr as u64)
    }

    pub(crate) fn raw_free(&self, ptr: u64) {
        let mut blocks = self.lock();
        // A pointer this device did not hand out is ignored rather than freed:
        // a drop handler must not panic, and freeing it would be unsound.
        if let Some(size) = blocks.live.remove(&ptr) {
            blocks.used -= size;
            if let Ok(layout) = Layout::from_size_align(size.max(1), ALIGN) {
                // SAFETY: `ptr` was allocated by `raw_alloc` with this layout
                // and was live until just now.
                unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
            }
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
            bytes: c.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for EmulatedGpu {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut *self.lock());
        for (ptr, size) in blocks.live {
            if let Ok(layout) = Layout::from_size_align(size.max(1), ALIGN) {
                // SAFETY: every live block was allocated with this layout.
                unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
            }
        }
    }
}
