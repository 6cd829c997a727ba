// Stable counting-sort passes, the building block of the LSD radix sort
// (8-bit digits of order-preserving u64 keys, plus a last pass that moves
// nulls to the end) and of hash partitioning (digit = partition id).
//
// Each global thread owns a contiguous chunk of positions. count_hist builds
// a digit-major histogram hist[digit * threads + thread]; after an exclusive
// scan, hist[d * threads + t] is where thread t writes its first row of digit
// d, so count_scatter, walking its chunk in order, is stable.

// Order-preserving keys: flip the sign bit of integers; for doubles flip all
// bits of negatives and the sign bit of the rest (this is f64::total_cmp).
WEFT_KERNEL(radix_keys_i64, const i64 *x, u64 n, u64 *keys) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) weft_store(&keys[i], (u64)weft_load(&x[i]) ^ 0x8000000000000000ULL);
}

WEFT_KERNEL(radix_keys_f64, const double *x, u64 n, u64 *keys) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        u64 b = (u64)__double_as_longlong(weft_load(&x[i]));
        weft_store(&keys[i], (b >> 63) ? ~b : (b | 0x8000000000000000ULL));
    }
}

// Digit of the row at position i of the current order `perm` (null: identity).
WEFT_KERNEL(radix_digits, const u64 *keys, const u32 *perm, u64 n, u32 shift, u32 *digits) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) weft_store(&digits[i], (u32)(weft_load(&keys[perm ? weft_load(&perm[i]) : i]) >> shift) & 0xffu);
}

// The null pass: digit 0 for valid rows, 1 for nulls.
WEFT_KERNEL(radix_null_digits, const u32 *validity, const u32 *perm, u64 n, u32 *digits) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) weft_store(&digits[i], weft_valid(validity, perm ? weft_load(&perm[i]) : i) ? 0u : 1u);
}

WEFT_KERNEL(count_hist, const u32 *digits, u64 n, u32 radix, u64 chunk, u32 *hist) {
    u64 threads = weft_grid_size();
    u64 t = weft_global_id();
    for (u32 d = 0; d < radix; ++d) weft_store(&hist[(u64)d * threads + t], 0u);
    u64 begin = t * chunk < n ? t * chunk : n;
    u64 end = begin + chunk < n ? begin + chunk : n;
    for (u64 i = begin; i < end; ++i) { u32 *h = &hist[(u64)weft_load(&digits[i]) * threads + t]; weft_store(h, weft_load(h) + 1); }
}

// perm_in null means the identity order.
WEFT_KERNEL(count_scatter, const u32 *digits, const u32 *perm_in, u64 n, u64 chunk, u32 *hist,
            u32 *perm_out) {
    u64 threads = weft_grid_size();
    u64 t = weft_global_id();
    u64 begin = t * chunk < n ? t * chunk : n;
    u64 end = begin + chunk < n ? begin + chunk : n;
    for (u64 i = begin; i < end; ++i) {
        u32 *slot = &hist[(u64)weft_load(&digits[i]) * threads + t];
        u32 s = weft_load(slot);
        weft_store(&perm_out[s], perm_in ? weft_load(&perm_in[i]) : (u32)i);
        weft_store(slot, s + 1);
    }
}

// Partition offsets from a scanned histogram (before count_scatter advanced
// it): offsets[p] = hist[p * threads], offsets[parts] = n.
WEFT_KERNEL(partition_offsets, const u32 *hist, u32 parts, u64 threads, u64 n, u32 *offsets) {
    for (u64 p = weft_global_id(); p <= parts; p += weft_grid_size()) {
        offsets[p] = p == parts ? (u32)n : hist[p * threads];
    }
}
