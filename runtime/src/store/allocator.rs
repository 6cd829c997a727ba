//! The C allocator of a worker process (glibc's malloc): freed memory kept
//! for reuse, and handed back to the kernel under memory pressure.
//!
//! By default glibc maps every allocation from 128 KiB up (the threshold
//! rises to at most 32 MiB as such blocks are freed) afresh and unmaps it
//! when freed, and gives back the top of its heap past 128 KiB; a worker
//! whose ops make and drop column buffers of tens of megabytes then pays
//! a page fault per 4 KiB, and the kernel's accounting, on every task:
//! a third of the CPU of a TPC-H q1 run at SF1. Workers keep blocks of up to
//! [`KEPT_BLOCK`] in the heap and up to [`KEPT_FREE`] of free heap memory;
//! the store's memory check returns what is free to the kernel before it
//! spills results (see `Store::pressure`). Elsewhere (other C libraries)
//! both are no-ops.

/// Allocations up to this size come from the heap and are reused.
pub const KEPT_BLOCK: usize = 64 << 20;

/// Free memory kept at the top of a heap before it is given back.
pub const KEPT_FREE: usize = 256 << 20;

/// Sets the allocator of this process to keep freed memory for reuse (a
/// worker process calls it first thing).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; both values fit in
    // an int.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEPT_BLOCK as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEPT_FREE as libc::c_int);
    }
}

/// Gives the allocator's free memory back to the kernel.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}
