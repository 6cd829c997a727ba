//! The per-device memory pool.
//!
//! Requests are rounded up to a size class (256-byte granules below 1 KiB,
//! then four classes per power of two, so at most 25% is lost to rounding).
//! Freed blocks are kept on a free list per class and handed out again before
//! the device is asked for more. When the device is full the pool gives its
//! cached blocks back and retries once; if that fails too the caller gets
//! [`GpuError::OutOfMemory`](crate::GpuError::OutOfMemory).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::device::GpuBackend;
use crate::{Device, GpuError, Result};

/// Smallest block and granule of every class.
pub const GRANULE: usize = 256;

/// The size class a request of `bytes` is served from.
pub fn size_class(bytes: usize) -> usize {
    if bytes <= 4 * GRANULE {
        return bytes.max(1).div_ceil(GRANULE) * GRANULE;
    }
    // Four classes per power of two: step is a quarter of the power below.
    let pow = 1usize << (usize::BITS - 1 - bytes.leading_zeros());
    let step = pow / 4;
    // Saturating: a length past every device (off the wire) fails as out of memory.
    bytes.div_ceil(step).saturating_mul(step)
}

/// What a pool holds and has handed out.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolStats {
    /// Bytes of blocks handed out (rounded to their classes).
    pub in_use: usize,
    /// Bytes the callers asked for, of the blocks handed out.
    pub requested: usize,
    /// Bytes of `in_use` that were dropped while their stream still had
    /// work queued: reused by that stream, back on the free lists once it
    /// is synchronised.
    pub deferred: usize,
    /// Highest `in_use` seen.
    pub peak_in_use: usize,
    /// Bytes taken from the device: handed out plus cached.
    pub reserved: usize,
    /// Bytes cached on free lists, ready for reuse.
    pub free: usize,
    /// Largest cached block.
    pub largest_free: usize,
    /// Share of cached bytes that the largest request served from the cache
    /// could not use: `1 - largest_free / free` (0 when nothing is cached).
    pub fragmentation: f64,
    /// Allocations served from a free list.
    pub reused: u64,
    /// Allocations that went to the device.
    pub device_allocs: u64,
    /// Blocks given back to the device by trimming.
    pub device_frees: u64,
}

#[derive(Debug, Default)]
struct State {
    free: BTreeMap<usize, Vec<u64>>,
    stats: PoolStats,
}

/// A size-class caching pool in front of one device.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    state: Mutex<State>,
}

impl Pool {
    pub(crate) fn new() -> Self {
        Pool::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the device pointer and the class size of a block of at least `len` bytes.
    pub(crate) fn alloc(&self, backend: &GpuBackend, device: Device, len: usize) -> Result<(u64, usize)> {
        let class = size_class(len);
        let mut st = self.lock();
        let cached = st.free.get_mut(&class).and_then(|list| list.pop());
        let ptr = match cached {
            Some(ptr) => {
                st.stats.free -= class;
                st.stats.reused += 1;
                ptr
            }
            None => {
                let ptr = match backend.raw_alloc(device, class) {
                    Ok(ptr) => ptr,
                    Err(GpuError::OutOfMemory { .. }) => {
                        // Give the cache back and try once more.
                        Self::trim_locked(&mut st, backend);
                        backend.raw_alloc(device, class).map_err(|e| match e {
                            GpuError::OutOfMemory { .. } => GpuError::OutOfMemory {
                                device,
                                requested: len,
                                in_use: st.stats.in_use,
                                capacity: backend.capacity(),
                            },
                            other => other,
                        })?
                    }
                    Err(e) => return Err(e),
                };
                st.stats.reserved += class;
                st.stats.device_allocs += 1;
                ptr
            }
        };
        st.stats.in_use += class;
        st.stats.requested += len;
        st.stats.peak_in_use = st.stats.peak_in_use.max(st.stats.in_use);
        Ok((ptr, class))
    }

    /// Puts a block back on its free list.
    pub(crate) fn release(&self, ptr: u64, class: usize, len: usize) {
        let mut st = self.lock();
        st.stats.in_use -= class;
        st.stats.requested -= len;
        st.stats.free += class;
        st.free.entry(class).or_default().push(ptr);
    }

    /// Counts a block dropped while its stream had work pending (it stays
    /// in use until [`Pool::release_deferred`]).
    pub(crate) fn defer(&self, class: usize) {
        self.lock().stats.deferred += class;
    }

    /// A deferred block handed out again by its stream for `len` bytes.
    pub(crate) fn reuse_deferred(&self, class: usize, old_len: usize, len: usize) {
        let mut st = self.lock();
        st.stats.deferred -= class;
        st.stats.requested = st.stats.requested - old_len + len;
        st.stats.reused += 1;
    }

    /// A deferred block back on its free list, its stream's work done.
    pub(crate) fn release_deferred(&self, ptr: u64, class: usize, len: usize) {
        self.lock().stats.deferred -= class;
        self.release(ptr, class, len);
    }

    /// Gives every cached block back to the device.
    pub(crate) fn trim(&self, backend: &GpuBackend) {
        let mut st = self.lock();
        Self::trim_locked(&mut st, backend);
    }

    fn trim_locked(st: &mut State, backend: &GpuBackend) {
        for (class, list) in std::mem::take(&mut st.free) {
            for ptr in list {
                backend.raw_free(ptr);
                st.stats.reserved -= class;
                st.stats.free -= class;
                st.stats.device_frees += 1;
            }
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let st = self.lock();
        let mut stats = st.stats;
        stats.largest_free = st
            .free
            .iter()
            .rev()
            .find(|(_, list)| !list.is_empty())
            .map_or(0, |(class, _)| *class);
        stats.fragmentation = if stats.free == 0 {
            0.0
        } else {
            1.0 - stats.largest_free as f64 / stats.free as f64
        };
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classes_are_granular_and_monotone() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(257), 512);
        assert_eq!(size_class(1024), 1024);
        assert_eq!(size_class(1025), 1280);
        assert_eq!(size_class(1 << 20), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), (1 << 20) + (1 << 18));
        // A length off the wire past any device does not overflow.
        assert_eq!(size_class(usize::MAX - 1), usize::MAX);
    }

    proptest! {
        #[test]
        fn class_fits_with_bounded_waste(len in 0usize..1 << 40) {
            let c = size_class(len);
            prop_assert!(c >= len);
            prop_assert_eq!(c % GRANULE, 0);
            prop_assert!(c <= len.max(1024) + len.max(1024) / 4);
            prop_assert!(size_class(len + 1) >= c);
        }
    }
}
