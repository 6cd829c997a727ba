//! A pool of receive buffers, so large frames land in memory that is
//! already faulted in.
//!
//! Writing into freshly mapped pages costs about eight times a warm
//! memcpy on our machines, so a receiver takes its frame buffers from here
//! and a buffer comes back to the pool when the last [`bytes::Bytes`] that
//! shares it is dropped. Buffers are 64-byte aligned, so a received frame
//! can be cast to a slice of any primitive type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytemuck::{Pod, Zeroable};
use bytes::Bytes;

/// Buffers smaller than this are left to the system allocator, which
/// already recycles small blocks well.
const MIN_POOLED: usize = 64 << 10;

/// One cache line: the unit buffers are made of, for alignment.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A shared pool of 64-byte aligned buffers in size classes.
///
/// Cloning is cheap and shares the pool. Size classes are four steps per
/// power of two, so a buffer wastes at most a fifth of its size.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

struct Inner {
    max_cached_bytes: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    free: HashMap<usize, Vec<Vec<Line>>>,
    stats: PoolStats,
}

/// Counters of a [`BufferPool`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers handed out from the cache.
    pub hits: u64,
    /// Buffers that had to be allocated.
    pub misses: u64,
    /// Bytes held in the cache, ready for reuse.
    pub cached_bytes: usize,
    /// Bytes of pooled buffers currently handed out.
    pub outstanding_bytes: usize,
    /// Largest buffer ever allocated by the pool.
    pub largest_allocation: usize,
}

impl BufferPool {
    /// A pool that keeps at most `max_cached_bytes` of idle buffers.
    pub fn new(max_cached_bytes: usize) -> Self {
        BufferPool {
            inner: Arc::new(Inner {
                max_cached_bytes,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> PoolStats {
        self.inner.lock().stats
    }

    /// A zero-length-or-more buffer of exactly `len` bytes to fill. Its
    /// contents are unspecified (a reused buffer keeps old bytes) until
    /// written.
    pub fn take(&self, len: usize) -> PooledBuf {
        let class = size_class(len);
        let lines = if class == 0 {
            vec![Line::zeroed(); len.div_ceil(64)]
        } else {
            let mut state = self.inner.lock();
            let reused = state.free.get_mut(&class).and_then(Vec::pop);
            match reused {
                Some(lines) => {
                    state.stats.hits += 1;
                    state.stats.cached_bytes -= class;
                    state.stats.outstanding_bytes += class;
                    lines
                }
                None => {
                    state.stats.misses += 1;
                    state.stats.outstanding_bytes += class;
                    state.stats.largest_allocation = state.stats.largest_allocation.max(class);
                    drop(state);
                    let lines = vec![Line::zeroed(); class / 64];
                    weft_gpu::advise_huge_pages(&lines);
                    lines
                }
            }
        };
        PooledBuf {
            lines,
            len,
            pool: (class != 0).then(|| self.clone()),
        }
    }

    fn give_back(&self, lines: Vec<Line>) {
        let class = lines.len() * 64;
        let mut state = self.inner.lock();
        state.stats.outstanding_bytes -= class;
        if state.stats.cached_bytes + class <= self.inner.max_cached_bytes {
            state.stats.cached_bytes += class;
            state.free.entry(class).or_default().push(lines);
        }
    }
}

impl Default for BufferPool {
    /// A pool caching up to 1 GiB of idle buffers.
    fn default() -> Self {
        BufferPool::new(1 << 30)
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool").field("stats", &self.stats()).finish()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain counters and lists, valid after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The class a request of `len` bytes is served from, or 0 for buffers the
/// pool leaves to the allocator.
fn size_class(len: usize) -> usize {
    if len < MIN_POOLED {
        return 0;
    }
    // Four classes per power of two: 1, 1.25, 1.5 and 1.75 times 2^k.
    let k = usize::BITS - 1 - len.leading_zeros();
    let step = 1usize << (k - 2);
    len.div_ceil(step) * step
}

/// A buffer from a [`BufferPool`], returned to it on drop.
pub struct PooledBuf {
    lines: Vec<Line>,
    len: usize,
    pool: Option<BufferPool>,
}

impl PooledBuf {
    /// The buffer's bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..len]
    }

    /// Turns the filled buffer into shared bytes without copying; the
    /// memory goes back to the pool when the last clone is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.lines));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_by_at_most_a_quarter() {
        assert_eq!(size_class(100), 0);
        assert_eq!(size_class(64 << 10), 64 << 10);
        assert_eq!(size_class((64 << 10) + 1), 80 << 10);
        assert_eq!(size_class(64 << 20), 64 << 20);
        for len in [MIN_POOLED, 100_000, 1 << 20, 3_000_001, 1 << 30] {
            let class = size_class(len);
            assert!(class >= len && class <= len + len / 4, "{len} -> {class}");
            assert_eq!(class % 64, 0);
        }
    }

    #[test]
    fn buffers_are_reused_and_aligned() {
        let pool = BufferPool::new(1 << 30);
        let mut buf = pool.take(1 << 20);
        buf.as_mut_slice().fill(7);
        let bytes = buf.freeze();
        assert_eq!(bytes.as_ptr() as usize % 64, 0);
        assert_eq!(bytes.len(), 1 << 20);
        let first = bytes.as_ptr();
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.stats().cached_bytes, 0, "a clone still holds it");
        drop(clone);
        assert_eq!(pool.stats().cached_bytes, 1 << 20);
        let again = pool.take((1 << 20) - 5);
        assert_eq!(again.as_ref().as_ptr(), first);
        let stats = pool.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
        assert_eq!(stats.outstanding_bytes, 1 << 20);
    }

    #[test]
    fn cache_is_bounded() {
        let pool = BufferPool::new(1 << 20);
        let a = pool.take(1 << 20);
        let b = pool.take(1 << 20);
        drop(a);
        drop(b);
        assert_eq!(pool.stats().cached_bytes, 1 << 20);
        assert_eq!(pool.stats().outstanding_bytes, 0);
    }

    #[test]
    fn small_buffers_bypass_the_pool() {
        let pool = BufferPool::default();
        let buf = pool.take(10);
        assert_eq!(buf.as_ref().len(), 10);
        drop(buf);
        assert_eq!(pool.stats(), PoolStats::default());
    }
}
