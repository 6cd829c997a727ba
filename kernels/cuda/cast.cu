// Numeric casts the dataframe's expressions need: int32 to int64, and
// int32, int64 (or decimal's unscaled int64 over 10^scale) to float64,
// converting then dividing exactly as the CPU implementation does.

WEFT_KERNEL(cast_i32_i64, const i32 *x, u64 n, i64 *out) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) weft_store(&out[i], (i64)weft_load(&x[i]));
}

// div == 1.0 for plain integers (the division is then exact).
#define CAST_TO_F64(T, SUF)                                                                  \
    WEFT_KERNEL(cast_##SUF##_f64, const T *x, u64 n, double div, double *out) {              \
        for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {                      \
            weft_store(&out[i], (double)weft_load(&x[i]) / div);                            \
        }                                                                                    \
    }
CAST_TO_F64(i32, i32)
CAST_TO_F64(i64, i64)

// int64 to int32 where every valid value fits (min and max of int32 or
// date values come back as int64): *overflow is set where one does not.
WEFT_KERNEL(cast_i64_i32, const i64 *x, const u32 *xv, u64 n, i32 *out, u32 *overflow) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        i64 v = weft_load(&x[i]);
        weft_store(&out[i], (i32)v);
        if (weft_valid(xv, i) && v != (i64)(i32)v) atomicOr(overflow, 1u);
    }
}
