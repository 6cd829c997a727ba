// Segments of sorted rows, for sort-based group-by: the rows where any key
// column differs from the row before (a null equals a null; floats by their
// bits), where each segment starts, and sum/min/max/count/mean per segment
// (one thread per segment, rows in order, so float sums add in row order
// exactly as the CPU implementation does).

// flags[i] = 1 where row i starts a segment by this column (or by an earlier
// one when `first` is 0).
#define SEGMENT_FLAGS(T, SUF)                                                                   \
    WEFT_KERNEL(segment_flags_##SUF, const T *x, const u32 *xv, u64 n, u32 first, u32 *flags) { \
        for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {                         \
            u32 start = i == 0;                                                                 \
            if (i > 0) {                                                                        \
                bool a = weft_valid(xv, i - 1), b = weft_valid(xv, i);                          \
                T p = weft_load(&x[i - 1]), q = weft_load(&x[i]);                               \
                start = a != b || (a && b && !weft_same_##SUF(p, q));                           \
            }                                                                                   \
            weft_store(&flags[i], first ? start : (weft_load(&flags[i]) | start));              \
        }                                                                                       \
    }

__device__ __forceinline__ bool weft_same_i64(i64 a, i64 b) { return a == b; }
__device__ __forceinline__ bool weft_same_f64(double a, double b) {
    union { double d; u64 u; } x, y;
    x.d = a;
    y.d = b;
    return x.u == y.u;
}
SEGMENT_FLAGS(i64, i64)
SEGMENT_FLAGS(double, f64)

// After an exclusive scan of the flags (pos), segment pos[i] starts at row i
// wherever flags[i] was set; `was` holds the flags from before the scan.
WEFT_KERNEL(segment_starts, const u32 *was, const u32 *pos, u64 n, u32 *starts) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        if (weft_load(&was[i])) weft_store(&starts[pos[i]], (u32)i);
    }
}

// op: 0 sum (integers wrap), 1 min, 2 max, 3 count of valid rows, 4 rows,
// 5 mean (a double sum of the values over their count; out is double). The
// accumulator starts at a segment's first valid value, as on the CPU. A
// segment without valid values gives null (count and rows give 0); out_valid
// is zeroed by the caller.
__device__ __forceinline__ i64 weft_seg_add(i64 a, i64 b) { return (i64)((u64)a + (u64)b); }
__device__ __forceinline__ double weft_seg_add(double a, double b) { return a + b; }

#define SEGMENT_REDUCE(T, SUF, ACC)                                                                  \
    WEFT_KERNEL(segment_reduce_##SUF, const T *x, const u32 *xv, const u32 *starts, u64 segments,     \
                u64 n, u32 op, void *out, u32 *out_valid) {                                           \
        for (u64 g = weft_global_id(); g < segments; g += weft_grid_size()) {                        \
            u64 begin = starts[g], end = g + 1 < segments ? starts[g + 1] : n;                       \
            ACC acc = 0;                                                                              \
            double mean_sum = 0.0;                                                                    \
            u64 count = 0;                                                                            \
            for (u64 i = begin; i < end; ++i) {                                                       \
                if (!weft_valid(xv, i)) continue;                                                     \
                ACC v = (ACC)weft_load(&x[i]);                                                        \
                if (count == 0) acc = v;                                                              \
                else if (op == 1) acc = v < acc ? v : acc;                                            \
                else if (op == 2) acc = v > acc ? v : acc;                                            \
                else acc = weft_seg_add(acc, v);                                                      \
                mean_sum += (double)weft_load(&x[i]);                                                 \
                ++count;                                                                              \
            }                                                                                         \
            if (op == 3) ((i64 *)out)[g] = (i64)count;                                                \
            else if (op == 4) ((i64 *)out)[g] = (i64)(end - begin);                                   \
            else if (op == 5) ((double *)out)[g] = count ? mean_sum / (double)count : 0.0;            \
            else ((ACC *)out)[g] = acc;                                                               \
            if (op == 3 || op == 4 || count > 0) atomicOr(&out_valid[g >> 5], 1u << (u32)(g & 31));   \
        }                                                                                             \
    }
SEGMENT_REDUCE(i32, i32, i64)
SEGMENT_REDUCE(i64, i64, i64)
SEGMENT_REDUCE(double, f64, double)
