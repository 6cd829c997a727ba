// The dataframe's shuffle hash (weft-frame's shuffle.rs, splitmix64-based),
// so a GPU worker routes rows to the same partitions as a CPU worker.
// `h` holds each row's running hash; each key column folds into it.

// splitmix64's finaliser (weft-frame's shuffle::mix).
__device__ __forceinline__ u64 frame_mix(u64 x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Folds one row's value word into its running hash; a null row folds 0.
__device__ __forceinline__ void frame_combine(u64 *h, u64 v) {
    u64 x = weft_load(h);
    weft_store(h, frame_mix(x ^ v) + 0x9e3779b9ULL);
}

// Integers, dates and booleans hash as int64.
#define FRAME_HASH_INT(T, SUF)                                                         \
    WEFT_KERNEL(frame_hash_##SUF, const T *x, const u32 *xv, u64 n, u64 *h) {         \
        for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {                \
            frame_combine(&h[i], weft_valid(xv, i) ? (u64)(i64)weft_load(&x[i]) : 0); \
        }                                                                              \
    }
FRAME_HASH_INT(i32, i32)
FRAME_HASH_INT(i64, i64)

// Floats hash as the bits of the float64 value, -0.0 as 0.0.
#define FRAME_HASH_FLOAT(T, SUF)                                                  \
    WEFT_KERNEL(frame_hash_##SUF, const T *x, const u32 *xv, u64 n, u64 *h) {    \
        for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {           \
            u64 bits = 0;                                                         \
            if (weft_valid(xv, i)) {                                              \
                union { double d; u64 u; } pun;                                  \
                pun.d = (double)weft_load(&x[i]) + 0.0;                           \
                bits = pun.u;                                                     \
            }                                                                     \
            frame_combine(&h[i], bits);                                           \
        }                                                                         \
    }
FRAME_HASH_FLOAT(float, f32)
FRAME_HASH_FLOAT(double, f64)

WEFT_KERNEL(frame_hash_bool, const u32 *x, const u32 *xv, u64 n, u64 *h) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        frame_combine(&h[i], weft_valid(xv, i) ? (u64)((x[i >> 5] >> (i & 31)) & 1u) : 0);
    }
}

// The bytes in little-endian 8-byte words (the last zero-padded), each
// mixed into a seed of the golden ratio xor the length.
WEFT_KERNEL(frame_hash_utf8, const i32 *offsets, const unsigned char *data, const u32 *xv, u64 n, u64 *h) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        u64 v = 0;
        if (weft_valid(xv, i)) {
            i32 start = offsets[i];
            u64 len = (u64)(offsets[i + 1] - start);
            const unsigned char *p = data + start;
            v = 0x9e3779b97f4a7c15ULL ^ len;
            for (u64 at = 0; at < len; at += 8) {
                u64 word = 0;
                u64 end = at + 8 < len ? at + 8 : len;
                for (u64 b = end; b > at; --b) word = (word << 8) | p[b - 1];
                v = frame_mix(v ^ word);
            }
        }
        frame_combine(&h[i], v);
    }
}

// Decimals (held as unscaled int64) hash by their 128-bit value: the word
// is mix(low 64 bits) ^ high 64 bits (the sign extension). Written as an
// int64 column, frame_hash_i64 folds it as the CPU folds the decimal (a
// null row, whose validity the caller keeps, folds 0 either way).
WEFT_KERNEL(frame_decimal_word, const i64 *x, u64 n, i64 *out) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        i64 v = weft_load(&x[i]);
        weft_store(&out[i], (i64)(frame_mix((u64)v) ^ (v < 0 ? ~0ULL : 0ULL)));
    }
}

// Partition of each hash among `parts`: (h >> 16) % parts.
WEFT_KERNEL(frame_bucket, const u64 *h, u32 parts, u64 n, u32 *out) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        weft_store(&out[i], (u32)((weft_load(&h[i]) >> 16) % (u64)parts));
    }
}
