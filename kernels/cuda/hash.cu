// Row hashes of int64 and utf8 columns (hash partitioning hashes inline, in
// sort.cu's partition_histogram).
// The hash functions live in common.cuh and are mirrored bit for bit by the
// CPU implementation.

WEFT_KERNEL(hash_i64, const i64 *x, const u32 *xv, u64 n, u64 seed, u64 *out) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        weft_store(&out[i], weft_valid(xv, i) ? weft_hash_i64(weft_load(&x[i]), seed) : weft_hash_null(seed));
    }
}

// Arrow utf8: row i is data[offsets[i] .. offsets[i + 1]].
WEFT_KERNEL(hash_utf8, const i32 *offsets, const unsigned char *data, const u32 *xv, u64 n,
            u64 seed, u64 *out) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        if (weft_valid(xv, i)) {
            i32 start = offsets[i];
            out[i] = weft_hash_bytes(data + start, (u64)(offsets[i + 1] - start), seed);
        } else {
            out[i] = weft_hash_null(seed);
        }
    }
}
