// Equi-join of int64 keys by sorted search: the build side's keys sorted
// (stable, nulls last), each probe row's run of equal build keys found by
// binary search, runs counted, scanned into output offsets, and emitted as
// (probe row, build row) pairs; a left join emits one pair with no build
// row (0xffffffff) for a probe row without matches. Null keys never match.

// lo[i], counts[i]: where probe row i's matches start among the sorted
// build keys and how many there are (at least 1 when at_least_one).
WEFT_KERNEL(join_ranges, const i64 *sorted, const u32 *sv, u64 nb, const i64 *probe, const u32 *pv,
            u64 np, u32 at_least_one, u32 *lo, u32 *counts) {
    for (u64 i = weft_global_id(); i < np; i += weft_grid_size()) {
        u32 first = 0, count = 0;
        if (weft_valid(pv, i)) {
            i64 key = weft_load(&probe[i]);
            // A null build key sorts after every value.
            u64 a = 0, b = nb;
            while (a < b) {
                u64 m = (a + b) / 2;
                if (weft_valid(sv, m) && weft_load(&sorted[m]) < key) a = m + 1; else b = m;
            }
            u64 c = a, d = nb;
            while (c < d) {
                u64 m = (c + d) / 2;
                if (weft_valid(sv, m) && weft_load(&sorted[m]) <= key) c = m + 1; else d = m;
            }
            first = (u32)a;
            count = (u32)(c - a);
        }
        lo[i] = first;
        counts[i] = count == 0 && at_least_one ? 1 : count;
    }
}

// Writes probe row i's pairs at offsets[i]: build rows perm[lo[i] ..] (the
// sorted order's original rows), or one 0xffffffff where it had none.
WEFT_KERNEL(join_emit, const u32 *lo, const u32 *counts, const u32 *offsets, const u32 *perm,
            const i64 *sorted, const u32 *sv, u64 nb, const i64 *probe, const u32 *pv, u64 np,
            u32 *out_probe, u32 *out_build) {
    for (u64 i = weft_global_id(); i < np; i += weft_grid_size()) {
        u32 at = offsets[i], first = lo[i], count = counts[i];
        bool hit = weft_valid(pv, i) && first < nb && weft_valid(sv, first) &&
                   weft_load(&sorted[first]) == weft_load(&probe[i]);
        for (u32 j = 0; j < count; ++j) {
            weft_store(&out_probe[at + j], (u32)i);
            weft_store(&out_build[at + j], hit ? perm[first + j] : 0xffffffffu);
        }
    }
}

// Gathers x at idx, null where idx is 0xffffffff (a left join's missing
// build row) or x is null; one thread per 32-row word of the output.
#define TAKE_OR_NULL(T, SUF)                                                                        \
    WEFT_KERNEL(take_or_null_##SUF, const T *x, const u32 *xv, const u32 *idx, u64 n, T *out,       \
                u32 *out_valid) {                                                                   \
        u64 words = (n + 31) / 32;                                                                  \
        for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {                         \
            u32 valid = 0;                                                                          \
            u64 end = w * 32 + 32 < n ? w * 32 + 32 : n;                                           \
            for (u64 i = w * 32; i < end; ++i) {                                                    \
                u32 r = weft_load(&idx[i]);                                                         \
                bool ok = r != 0xffffffffu && weft_valid(xv, r);                                    \
                weft_store(&out[i], ok ? weft_load(&x[r]) : (T)0);                                  \
                if (ok) valid |= 1u << (u32)(i - w * 32);                                           \
            }                                                                                       \
            out_valid[w] = valid;                                                                   \
        }                                                                                           \
    }
TAKE_OR_NULL(u32, 32)
TAKE_OR_NULL(u64, 64)
