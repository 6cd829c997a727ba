//! Large host buffers: staging, pooled receive buffers and kernel outputs.

/// Asks the kernel to back a fresh, untouched host buffer with transparent
/// huge pages where it gives them only on request
/// (`transparent_hugepage=madvise`): a 40 MiB buffer then takes 20 page
/// faults instead of 10,240 on first use, misses the TLB less, and is
/// cheaper to pin when UCX copies between processes. Only the 2 MiB-aligned
/// interior is advised; small buffers and failures are left alone (the
/// advice never changes contents). A no-op off Linux.
pub fn advise_huge_pages<T>(buf: &[T]) {
    advise_range(buf.as_ptr() as usize, std::mem::size_of_val(buf));
}

fn advise_range(start: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let end = start + len;
        let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if hi > lo {
            // SAFETY: the range lies inside `buf`; MADV_HUGEPAGE only
            // changes how the kernel backs it, never what it holds.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, len);
}

/// `words` zeroed u64s in fresh memory whose pages are first touched by
/// several threads at once: a copy from the device into fresh pageable
/// memory is bound by page faults, which one thread takes one at a time
/// (the standard allocator zeroes over-aligned memory on one thread).
pub fn zeroed_words(words: usize) -> Vec<u64> {
    const PER_THREAD: usize = 1 << 18;
    let mut v: Vec<u64> = Vec::with_capacity(words);
    let spare = &mut v.spare_capacity_mut()[..words];
    advise_range(spare.as_ptr() as usize, words * 8);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(words.div_ceil(PER_THREAD))
        .max(1);
    let part = words.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for chunk in spare.chunks_mut(part) {
            scope.spawn(move || chunk.iter_mut().for_each(|w| _ = w.write(0)));
        }
    });
    // SAFETY: every one of the `words` elements was written above.
    unsafe { v.set_len(words) };
    v
}
