//! Pooled pinned host buffers for staging copies between a device and the
//! host: device frames on their way to a socket, device results spilled to
//! host memory, peer copies without peer access.
//!
//! Page-locking memory (`cuMemHostAlloc`) costs far more than a copy, and
//! fresh pages fault in slowly, so buffers go back to a free list per size
//! class (the classes of [`pool`](crate::pool)) when dropped. The list keeps
//! at most [`MAX_CACHED`] bytes per device; beyond that, returned buffers
//! are freed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::Result;
use crate::buffer::PinnedBuffer;
use crate::device::Gpu;
use crate::pool::size_class;

/// Bytes of free staging buffers a device keeps for reuse.
pub(crate) const MAX_CACHED: usize = 256 << 20;

/// Counters of a device's staging pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StagingStats {
    /// Buffers handed out from the free lists.
    pub reused: u64,
    /// Buffers newly allocated (page-locked on CUDA devices).
    pub allocated: u64,
    /// Bytes of buffers handed out and not yet returned.
    pub in_use: usize,
    /// Bytes on the free lists.
    pub cached: usize,
}

#[derive(Debug, Default)]
struct State {
    free: BTreeMap<usize, Vec<PinnedBuffer>>,
    stats: StagingStats,
}

/// The free lists of one device's staging buffers.
#[derive(Debug, Default)]
pub(crate) struct StagingPool {
    state: Mutex<State>,
}

impl StagingPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> StagingStats {
        self.lock().stats
    }

    /// A buffer of `len` bytes from `gpu`'s pool, allocated when none of its
    /// class is free.
    pub(crate) fn take(gpu: &Arc<Gpu>, len: usize) -> Result<StagingBuffer> {
        let class = size_class(len);
        let pool = gpu.staging_pool();
        let cached = {
            let mut st = pool.lock();
            let cached = st.free.get_mut(&class).and_then(Vec::pop);
            if cached.is_some() {
                st.stats.reused += 1;
                st.stats.cached -= class;
            }
            cached
        };
        let buffer = match cached {
            Some(buffer) => buffer,
            None => {
                let buffer = gpu.alloc_pinned(class)?;
                pool.lock().stats.allocated += 1;
                buffer
            }
        };
        pool.lock().stats.in_use += class;
        Ok(StagingBuffer {
            buffer: Some(buffer),
            len,
            class,
            gpu: gpu.clone(),
        })
    }

    fn put(&self, class: usize, buffer: PinnedBuffer) {
        let mut st = self.lock();
        st.stats.in_use -= class;
        if st.stats.cached + class <= MAX_CACHED {
            st.stats.cached += class;
            st.free.entry(class).or_default().push(buffer);
        }
        // Otherwise `buffer` drops here and frees its memory.
    }
}

/// A pinned host buffer of a device's staging pool; back to the pool when
/// dropped. Its bytes read as `len` bytes (the buffer under it may be larger).
pub struct StagingBuffer {
    /// Always `Some` until dropped.
    buffer: Option<PinnedBuffer>,
    len: usize,
    class: usize,
    gpu: Arc<Gpu>,
}

impl StagingBuffer {
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
        self.buffer.as_ref().is_some_and(PinnedBuffer::is_pinned)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.buffer.as_ref().map_or(&[], |b| &b.as_slice()[..self.len])
    }

    /// The bytes, mutably (to copy into).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.buffer {
            Some(buffer) => &mut buffer.as_mut_slice()[..self.len],
            None => &mut [],
        }
    }
}

impl AsRef<[u8]> for StagingBuffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for StagingBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingBuffer")
            .field("len", &self.len)
            .field("device", &self.gpu.device())
            .finish()
    }
}

impl Drop for StagingBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.gpu.staging_pool().put(self.class, buffer);
        }
    }
}
