//! Large host buffers: staging, pooled receive buffers and kernel outputs.

/// Asks the kernel to back a fresh, untouched host buffer with transparent
/// huge pages where it gives them only on request
/// (`transparent_hugepage=madvise`): a 40 MiB buffer then takes 20 page
/// faults instead of 10,240 on first use, misses the TLB less, and is
/// cheaper to pin when UCX copies between processes. Only the 2 MiB-aligned
/// interior is advised; small buffers and failures are left alone (the
/// advice never changes contents). A no-op off Linux.
pub fn advise_huge_pages<T>(buf: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if hi > lo {
            // SAFETY: the range lies inside `buf`; MADV_HUGEPAGE only
            // changes how the kernel backs it, never what it holds.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}
