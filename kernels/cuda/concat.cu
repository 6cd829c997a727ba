// Concatenation of columns, one input column per launch written at its
// place in the output: bytes (fixed-width values, utf8 data) copied; bits
// (validity, booleans) shifted to their row offset and OR-ed into the
// zeroed output words; utf8 offsets rebased onto the output's bytes.

WEFT_KERNEL(concat_bytes, const unsigned char *src, unsigned char *dst, u64 n) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) weft_store(&dst[i], weft_load(&src[i]));
}

// Rows [0, n) of src (null: all set) to rows [at, at + n) of dst.
WEFT_KERNEL(concat_bits, const u32 *src, u64 n, u32 *dst, u64 at) {
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        u32 bits = weft_word(src, w) & weft_tail_mask(n, w);
        if (bits == 0) continue;
        u64 row = at + w * 32;
        u32 shift = (u32)(row & 31);
        atomicOr(&dst[row >> 5], bits << shift);
        if (shift != 0) {
            u32 high = bits >> (32 - shift);
            if (high != 0) atomicOr(&dst[(row >> 5) + 1], high);
        }
    }
}

// Offsets [0, n] of src, rebased to start at `base`, to [at, at + n] of dst.
WEFT_KERNEL(concat_offsets, const i32 *src, u64 n, i32 *dst, u64 at, i32 base) {
    i32 first = src[0];
    for (u64 i = weft_global_id(); i <= n; i += weft_grid_size()) {
        weft_store(&dst[at + i], weft_load(&src[i]) - first + base);
    }
}
