// Elementwise kernels: unary and binary arithmetic, comparisons.
// Binary kernels give each thread one 32-row word, so it can write the output
// validity (and comparison bits) as whole words without atomics.

// Integer arithmetic wraps (done in unsigned); division and remainder by
// zero give null. A float remainder is fmod (Rust's %).
#define WEFT_INT_BINARY(T, U, SUF)                                                    \
    __device__ __forceinline__ T weft_add_##SUF(T a, T b) { return (T)((U)a + (U)b); } \
    __device__ __forceinline__ T weft_sub_##SUF(T a, T b) { return (T)((U)a - (U)b); } \
    __device__ __forceinline__ T weft_mul_##SUF(T a, T b) { return (T)((U)a * (U)b); } \
    __device__ __forceinline__ T weft_div_##SUF(T a, T b, bool *ok) {                 \
        if (b == 0) { *ok = false; return 0; }                                        \
        if (b == (T)-1) return (T)((U)0 - (U)a);                                      \
        return a / b;                                                                 \
    }                                                                                 \
    __device__ __forceinline__ T weft_rem_##SUF(T a, T b, bool *ok) {                 \
        if (b == 0) { *ok = false; return 0; }                                        \
        if (b == (T)-1) return 0;                                                     \
        return a % b;                                                                 \
    }                                                                                 \
    __device__ __forceinline__ T weft_neg_##SUF(T a) { return (T)((U)0 - (U)a); }    \
    __device__ __forceinline__ T weft_abs_##SUF(T a) { return a < 0 ? (T)((U)0 - (U)a) : a; }

#define WEFT_FLOAT_BINARY(T, SUF)                                                      \
    __device__ __forceinline__ T weft_add_##SUF(T a, T b) { return a + b; }            \
    __device__ __forceinline__ T weft_sub_##SUF(T a, T b) { return a - b; }            \
    __device__ __forceinline__ T weft_mul_##SUF(T a, T b) { return a * b; }            \
    __device__ __forceinline__ T weft_div_##SUF(T a, T b, bool *ok) { return a / b; }  \
    __device__ __forceinline__ T weft_rem_##SUF(T a, T b, bool *ok) { return fmod(a, b); } \
    __device__ __forceinline__ T weft_neg_##SUF(T a) { return -a; }                    \
    __device__ __forceinline__ T weft_abs_##SUF(T a) { return a < 0 ? -a : a; }

WEFT_INT_BINARY(i32, u32, i32)
WEFT_INT_BINARY(i64, u64, i64)
WEFT_FLOAT_BINARY(float, f32)
WEFT_FLOAT_BINARY(double, f64)

// min/max: for floats a NaN operand loses to a number (as fmin/fmax).
#define WEFT_MINMAX(T, SUF)                                                                  \
    __device__ __forceinline__ T weft_min_##SUF(T a, T b) { return (b < a || a != a) ? b : a; } \
    __device__ __forceinline__ T weft_max_##SUF(T a, T b) { return (b > a || a != a) ? b : a; }
WEFT_MINMAX(i32, i32)
WEFT_MINMAX(i64, i64)
WEFT_MINMAX(float, f32)
WEFT_MINMAX(double, f64)

#define WEFT_UNARY(T, SUF, OP, EXPR)                                                  \
    WEFT_KERNEL(unary_##OP##_##SUF, const T *x, T *out, u64 n) {                      \
        for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {               \
            T a = x[i];                                                               \
            out[i] = EXPR;                                                            \
        }                                                                             \
    }

#define WEFT_UNARY_ALL(T, SUF)              \
    WEFT_UNARY(T, SUF, neg, weft_neg_##SUF(a)) \
    WEFT_UNARY(T, SUF, abs, weft_abs_##SUF(a))

WEFT_UNARY_ALL(i32, i32)
WEFT_UNARY_ALL(i64, i64)
WEFT_UNARY_ALL(float, f32)
WEFT_UNARY_ALL(double, f64)
WEFT_UNARY(float, f32, sqrt, sqrtf(a))
WEFT_UNARY(double, f64, sqrt, sqrt(a))

// out_valid may be null when neither input has nulls and the op makes none.
#define WEFT_BINARY(T, SUF, OP, EXPR)                                                          \
    WEFT_KERNEL(binary_##OP##_##SUF, const T *a, const u32 *av, const T *b, const u32 *bv,     \
                T *out, u32 *out_valid, u64 n) {                                               \
        u64 words = (n + 31) / 32;                                                             \
        for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {                    \
            u32 valid = weft_word(av, w) & weft_word(bv, w) & weft_tail_mask(n, w);            \
            u64 end = w * 32 + 32 < n ? w * 32 + 32 : n;                                      \
            for (u64 i = w * 32; i < end; ++i) {                                              \
                bool ok = true;                                                                \
                T x = a[i], y = b[i];                                                          \
                out[i] = EXPR;                                                                 \
                if (!ok) valid &= ~(1u << (u32)(i - w * 32));                                  \
            }                                                                                  \
            if (out_valid) out_valid[w] = valid;                                               \
        }                                                                                      \
    }

#define WEFT_BINARY_ALL(T, SUF)                              \
    WEFT_BINARY(T, SUF, add, weft_add_##SUF(x, y))           \
    WEFT_BINARY(T, SUF, sub, weft_sub_##SUF(x, y))           \
    WEFT_BINARY(T, SUF, mul, weft_mul_##SUF(x, y))           \
    WEFT_BINARY(T, SUF, div, weft_div_##SUF(x, y, &ok))      \
    WEFT_BINARY(T, SUF, rem, weft_rem_##SUF(x, y, &ok))      \
    WEFT_BINARY(T, SUF, min, weft_min_##SUF(x, y))           \
    WEFT_BINARY(T, SUF, max, weft_max_##SUF(x, y))

WEFT_BINARY_ALL(i32, i32)
WEFT_BINARY_ALL(i64, i64)
WEFT_BINARY_ALL(float, f32)
WEFT_BINARY_ALL(double, f64)

// Comparisons write Arrow boolean bits; null where either input is null.
#define WEFT_CMP(T, SUF, OP, EXPR)                                                             \
    WEFT_KERNEL(cmp_##OP##_##SUF, const T *a, const u32 *av, const T *b, const u32 *bv,        \
                u32 *out_bits, u32 *out_valid, u64 n) {                                        \
        u64 words = (n + 31) / 32;                                                             \
        for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {                    \
            u32 bits = 0;                                                                      \
            u64 end = w * 32 + 32 < n ? w * 32 + 32 : n;                                      \
            for (u64 i = w * 32; i < end; ++i) {                                              \
                T x = a[i], y = b[i];                                                          \
                if (EXPR) bits |= 1u << (u32)(i - w * 32);                                     \
            }                                                                                  \
            out_bits[w] = bits;                                                                \
            if (out_valid) out_valid[w] = weft_word(av, w) & weft_word(bv, w) & weft_tail_mask(n, w); \
        }                                                                                      \
    }

#define WEFT_CMP_ALL(T, SUF)           \
    WEFT_CMP(T, SUF, eq, x == y)       \
    WEFT_CMP(T, SUF, ne, x != y)       \
    WEFT_CMP(T, SUF, lt, x < y)        \
    WEFT_CMP(T, SUF, le, x <= y)       \
    WEFT_CMP(T, SUF, gt, x > y)        \
    WEFT_CMP(T, SUF, ge, x >= y)

WEFT_CMP_ALL(i32, i32)
WEFT_CMP_ALL(i64, i64)
WEFT_CMP_ALL(float, f32)
WEFT_CMP_ALL(double, f64)
