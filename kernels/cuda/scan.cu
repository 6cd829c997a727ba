// Exclusive prefix sum of u32 counts in place, by one block: each thread sums
// a contiguous segment, the block scans the segment sums, and each thread
// rewrites its segment. *total receives the sum of all counts. Used by
// filter (per-block counts) and the counting sorts (histograms).

WEFT_KERNEL(scan_exclusive_u32, u32 *data, u64 n, u32 *total) {
    __shared__ u32 sums[WEFT_BLOCK];
    u32 t = threadIdx.x;
    u64 seg = (n + blockDim.x - 1) / blockDim.x;
    u64 begin = t * seg < n ? t * seg : n;
    u64 end = begin + seg < n ? begin + seg : n;
    u32 s = 0;
    for (u64 i = begin; i < end; ++i) s += weft_load(&data[i]);
    sums[t] = s;
    __syncthreads();
    // Hillis-Steele inclusive scan of the segment sums.
    for (u32 off = 1; off < blockDim.x; off <<= 1) {
        u32 v = t >= off ? sums[t - off] : 0;
        __syncthreads();
        sums[t] += v;
        __syncthreads();
    }
    u32 run = t == 0 ? 0 : sums[t - 1];
    for (u64 i = begin; i < end; ++i) {
        u32 c = weft_load(&data[i]);
        weft_store(&data[i], run);
        run += c;
    }
    if (t == blockDim.x - 1) *total = sums[t];
}
