// Boolean-column kernels for dataframe predicates: Kleene and/or, not,
// is_null, row masks (the first k rows; rows whose u32 id equals j), and
// columns of one repeated value (literals).
// The bit kernels give each thread one 32-row word.

// Kleene and: false wins over null; null where neither side decides.
WEFT_KERNEL(logic_and, const u32 *a, const u32 *av, const u32 *b, const u32 *bv, u32 *out,
            u32 *out_valid, u64 n) {
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        u32 x = a[w], y = b[w], xv = weft_word(av, w), yv = weft_word(bv, w);
        out[w] = x & y;
        if (out_valid) out_valid[w] = ((xv & yv) | (xv & ~x) | (yv & ~y)) & weft_tail_mask(n, w);
    }
}

// Kleene or: true wins over null.
WEFT_KERNEL(logic_or, const u32 *a, const u32 *av, const u32 *b, const u32 *bv, u32 *out,
            u32 *out_valid, u64 n) {
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        u32 x = a[w], y = b[w], xv = weft_word(av, w), yv = weft_word(bv, w);
        out[w] = x | y;
        if (out_valid) out_valid[w] = ((xv & yv) | (xv & x) | (yv & y)) & weft_tail_mask(n, w);
    }
}

// Not: the validity is the input's (the caller keeps it).
WEFT_KERNEL(logic_not, const u32 *a, u32 *out, u64 n) {
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        out[w] = ~a[w] & weft_tail_mask(n, w);
    }
}

// is_null (negate = 0) or is_not_null (negate = 1) of a validity bitmap
// (null pointer: no nulls); the result has no nulls.
WEFT_KERNEL(logic_is_null, const u32 *xv, u32 negate, u32 *out, u64 n) {
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        u32 valid = weft_word(xv, w);
        out[w] = (negate ? valid : ~valid) & weft_tail_mask(n, w);
    }
}

// True for the first k of n rows.
WEFT_KERNEL(mask_prefix, u64 k, u32 *out, u64 n) {
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        out[w] = weft_tail_mask(k < n ? k : n, w);
    }
}

// True where ids[i] == j.
WEFT_KERNEL(mask_eq_u32, const u32 *ids, u32 j, u32 *out, u64 n) {
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        u32 bits = 0;
        u64 end = w * 32 + 32 < n ? w * 32 + 32 : n;
        for (u64 i = w * 32; i < end; ++i) {
            if (weft_load(&ids[i]) == j) bits |= 1u << (u32)(i - w * 32);
        }
        out[w] = bits;
    }
}


// Every row of a 32- or 64-bit column set to the same bits (a literal).
WEFT_KERNEL(fill_32, u32 value, u32 *out, u64 n) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) weft_store(&out[i], value);
}

WEFT_KERNEL(fill_64, u64 value, u64 *out, u64 n) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) weft_store(&out[i], value);
}

// 0, 1, ..., n - 1 (row numbers, for gathers).
WEFT_KERNEL(iota_32, u32 *out, u64 n) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) weft_store(&out[i], (u32)i);
}

// Bits of src (null: all set) at rows idx, one thread per 32-row word.
WEFT_KERNEL(take_bits, const u32 *src, const u32 *idx, u64 n, u32 *out) {
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        u32 bits = 0;
        u64 end = w * 32 + 32 < n ? w * 32 + 32 : n;
        for (u64 i = w * 32; i < end; ++i) {
            if (weft_valid(src, weft_load(&idx[i]))) bits |= 1u << (u32)(i - w * 32);
        }
        out[w] = bits;
    }
}
