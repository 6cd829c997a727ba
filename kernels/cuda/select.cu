// when/then/otherwise: out[i] = a[i] where the mask is true (and valid),
// b[i] otherwise (false or null), with the validity of the side taken, as
// arrow's zip. One thread per 32-row word; values of 4 or 8 bytes, or bits
// (booleans). out_valid may be null when neither side has nulls.

__device__ __forceinline__ u32 select_word(const u32 *mask, const u32 *mv, u64 n, u64 w) {
    return weft_load(&mask[w]) & weft_word(mv, w) & weft_tail_mask(n, w);
}

#define SELECT_KERNEL(T, SUF)                                                                            \
    WEFT_KERNEL(select_##SUF, const u32 *mask, const u32 *mv, const T *a, const u32 *av, const T *b,     \
                const u32 *bv, u64 n, T *out, u32 *out_valid) {                                          \
        u64 words = (n + 31) / 32;                                                                       \
        for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {                              \
            u32 m = select_word(mask, mv, n, w);                                                         \
            u64 end = w * 32 + 32 < n ? w * 32 + 32 : n;                                                 \
            for (u64 i = w * 32; i < end; ++i) {                                                         \
                bool take_a = (m >> (u32)(i - w * 32)) & 1u;                                             \
                weft_store(&out[i], take_a ? weft_load(&a[i]) : weft_load(&b[i]));                       \
            }                                                                                            \
            if (out_valid) {                                                                             \
                u32 valid = (m & weft_word(av, w)) | (~m & weft_word(bv, w));                            \
                weft_store(&out_valid[w], valid & weft_tail_mask(n, w));                                 \
            }                                                                                            \
        }                                                                                                \
    }
SELECT_KERNEL(u32, 32)
SELECT_KERNEL(u64, 64)

WEFT_KERNEL(select_bits, const u32 *mask, const u32 *mv, const u32 *a, const u32 *av, const u32 *b,
            const u32 *bv, u64 n, u32 *out, u32 *out_valid) {
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        u32 m = select_word(mask, mv, n, w);
        weft_store(&out[w], ((m & weft_load(&a[w])) | (~m & weft_load(&b[w]))) & weft_tail_mask(n, w));
        if (out_valid) {
            u32 valid = (m & weft_word(av, w)) | (~m & weft_word(bv, w));
            weft_store(&out_valid[w], valid & weft_tail_mask(n, w));
        }
    }
}
