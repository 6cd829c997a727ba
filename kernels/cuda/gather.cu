// take / gather: out[i] = x[idx[i]]. One thread per 32-row output word so
// the output validity is written whole. An index out of bounds gives a null
// row and raises *oob (the host turns that into an error).

#define GATHER_KERNEL(T, SUF)                                                                  \
    WEFT_KERNEL(take_##SUF, const T *x, const u32 *xv, u64 xn, const u32 *idx, u64 n, T *out,  \
                u32 *out_valid, u32 *oob) {                                                    \
        u64 words = (n + 31) / 32;                                                             \
        for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {                    \
            u32 valid = 0;                                                                     \
            u64 end = w * 32 + 32 < n ? w * 32 + 32 : n;                                      \
            for (u64 i = w * 32; i < end; ++i) {                                              \
                u64 j = idx[i];                                                                \
                if (j >= xn) {                                                                 \
                    atomicExch(oob, 1u);                                                       \
                    out[i] = 0;                                                                \
                    continue;                                                                  \
                }                                                                              \
                out[i] = x[j];                                                                 \
                if (weft_valid(xv, j)) valid |= 1u << (u32)(i - w * 32);                       \
            }                                                                                  \
            out_valid[w] = valid;                                                              \
        }                                                                                      \
    }

GATHER_KERNEL(i32, i32)
GATHER_KERNEL(i64, i64)
GATHER_KERNEL(float, f32)
GATHER_KERNEL(double, f64)
GATHER_KERNEL(u32, u32)
GATHER_KERNEL(u64, u64)
